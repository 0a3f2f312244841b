//! Guards idleness end to end, where lateness stops being deterministic: a
//! rate-limited generator with `idle_timeout_ms = 1` makes partitions (and the plays
//! side of a partition that is busy with impressions) go idle and resume all the
//! time, so the engine watermark jumps ahead of them and some resumed rows are late
//! at their shard (docs/SEMANTICS.md). Whatever rows end up late, the contract still
//! fixes everything else:
//! - every row the source decides is late (deterministic) is among the late rows;
//! - no row vanishes: rows in = late rows + rows joined;
//! - the output is exactly the nested-loop join of the input minus the late rows
//!   (every pair of non-late matching rows meets; outer rows only for rows that
//!   really matched nothing).
//!
//! The generator's rows are the files `weft gen` writes for the same parameters.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::job::JobToml;
use common::model::{self, Input, Params, Row};
use weft::config::{Format, JobConfig, JoinKind};

const SEED: u64 = 5;
const B_MS: i64 = 100;

fn config() -> String {
    JobToml::generated(&format!(
        "seed = {SEED}, events = 1500, keys = 20, titles = 2, match_rate = 0.6, disorder_ms = 150, \
         late_fraction = 0.02, late_max_ms = 1000, play_window_ms = 400, event_time_rate = 20.0, rate_limit = 1000.0, \
         partitions = 2"
    ))
    .kind("full")
    .window(-50, 400)
    .max_out_of_orderness_ms(B_MS)
    .allowed_lateness_ms(0)
    .idle_timeout_ms(1)
    .shards(2)
    .engine("state_bucket_ms = 20\nbatch_events = 8")
    .render()
}

/// Lines of a generator file (minus header) as rows of integers.
fn read_partition(p: &Path) -> (Vec<String>, Vec<Row>) {
    let text = std::fs::read_to_string(p).unwrap();
    let lines: Vec<String> = text.lines().skip(1).map(str::to_string).collect();
    let rows = lines
        .iter()
        .map(|l| l.split(',').map(|c| if c.is_empty() { None } else { Some(c.parse::<i64>().unwrap()) }).collect())
        .collect();
    (lines, rows)
}

/// Removes each line of `late` once from `rows` (as a multiset); panics if absent.
fn minus(parts: &[(Vec<String>, Vec<Row>)], late: &[String], what: &str) -> Vec<Row> {
    let mut want: HashMap<&str, usize> = HashMap::new();
    for l in late {
        *want.entry(l.as_str()).or_default() += 1;
    }
    let mut kept = Vec::new();
    for (lines, rows) in parts {
        for (line, row) in lines.iter().zip(rows) {
            match want.get_mut(line.as_str()) {
                Some(n) if *n > 0 => *n -= 1,
                _ => kept.push(row.clone()),
            }
        }
    }
    let left_over: Vec<_> = want.into_iter().filter(|(_, n)| *n > 0).collect();
    assert!(left_over.is_empty(), "seed {SEED}: late {what} rows that are not in the input: {left_over:?}");
    kept
}

fn contains_multiset(big: &[String], small: &[String]) -> Result<(), String> {
    let mut count: HashMap<&str, i64> = HashMap::new();
    for b in big {
        *count.entry(b).or_default() += 1;
    }
    for s in small {
        let n = count.entry(s).or_default();
        *n -= 1;
        if *n < 0 {
            return Err(s.clone());
        }
    }
    Ok(())
}

#[test]
fn output_is_the_join_of_the_rows_that_were_not_late() {
    let tmp = tempfile::tempdir().unwrap();
    let text = config();
    let job = common::job_from_toml(&text, tmp.path()).unwrap();
    // The rate limit only paces rows, it does not change them (and `gen::write`
    // does not support it: see tests/generator.rs).
    let params = weft::config::GenParams { rate_limit: 0.0, ..job.generator.clone().unwrap() };
    let gen_dir = tmp.path().join("gen");
    weft::loadgen::write(&gen_dir, &params, Format::Csv, JobConfig::builtin()).unwrap();
    let read = |side: &str| -> Vec<(Vec<String>, Vec<Row>)> {
        (0..2).map(|p| read_partition(&gen_dir.join(format!("{side}-{p}.csv")))).collect()
    };
    let (imp, plays) = (read("left"), read("right"));

    let rep = common::run(&text, tmp.path());
    let out = tmp.path().join("out");
    let late = [
        common::late_rows(&out, "impressions", "profile_id,title_id,ts,row,col"),
        common::late_rows(&out, "plays", "profile_id,title_id,ts,duration_ms"),
    ];
    let n_rows = |parts: &[(Vec<String>, Vec<Row>)]| parts.iter().map(|p| p.0.len() as u64).sum::<u64>();
    assert_eq!((rep.left.rows_in, rep.right.rows_in), (n_rows(&imp), n_rows(&plays)), "seed {SEED}: rows in");
    assert_eq!((rep.left.late, rep.right.late), (late[0].len() as u64, late[1].len() as u64), "seed {SEED}: late");

    // The source's deterministic late rows are all among the late rows.
    let p = Params {
        kind: JoinKind::Full,
        lower_ms: -50,
        upper_ms: 400,
        max_out_of_orderness_ms: B_MS,
        allowed_lateness_ms: 0,
    };
    let input = |width: usize, parts: Vec<Vec<Row>>| Input { width, key: vec![0, 1], time: 2, partitions: parts };
    let rows_of = |parts: &[(Vec<String>, Vec<Row>)]| parts.iter().map(|p| p.1.clone()).collect::<Vec<_>>();
    let deterministic = model::join(&input(5, rows_of(&imp)), &input(4, rows_of(&plays)), &p).late;
    for i in 0..2 {
        if let Err(row) = contains_multiset(&late[i], &deterministic[i]) {
            panic!("seed {SEED}: row {row} is late at its source but not in late/ (side {i})");
        }
    }
    let at_shard = late[0].len() + late[1].len() - deterministic[0].len() - deterministic[1].len();
    eprintln!(
        "seed {SEED}: {} + {} late at the source, {at_shard} more late at a shard after idling",
        deterministic[0].len(),
        deterministic[1].len()
    );

    // The output is the join of everything else, with nothing late any more.
    let on_time = |parts: &[(Vec<String>, Vec<Row>)], late: &[String], w: usize, what: &str| {
        input(w, vec![minus(parts, late, what)])
    };
    let no_lateness = Params { max_out_of_orderness_ms: i64::MAX / 4, ..p };
    let want =
        model::join(&on_time(&imp, &late[0], 5, "impressions"), &on_time(&plays, &late[1], 4, "plays"), &no_lateness);
    assert_eq!(want.late_count, [0, 0]);
    let header = "impressions.profile_id,impressions.title_id,impressions.ts,impressions.row,impressions.col,\
                  plays.profile_id,plays.title_id,plays.ts,plays.duration_ms";
    common::assert_same_rows(
        &format!("seed {SEED}: output vs join of the non-late rows"),
        &common::output_rows(&out, header),
        &want.output,
        &text,
    );
    assert!(want.pairs > 20, "seed {SEED}: workload too tame: {} pairs", want.pairs);
}

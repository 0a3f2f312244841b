//! Guards shard independence: the same generator workload (partitions fixed, so the
//! inputs and therefore the late rows are identical) run with 1, 2 and 3 shards gives
//! the same output multiset, the same late rows and the same report counts. Routing
//! keys to shards, the rings between them and the per-shard watermarks must not
//! change the answer.

mod common;

use std::path::Path;

use common::job::JobToml;
use weft::metrics::Report;

const SEED: u64 = 7;

fn config(out: &str, shards: u32) -> String {
    JobToml::generated(&format!(
        "seed = {SEED}, events = 30000, keys = 500, titles = 20, match_rate = 0.5, disorder_ms = 2000, \
         late_fraction = 0.01, late_max_ms = 60000, play_window_ms = 600000, event_time_rate = 200.0, partitions = 2"
    ))
    .kind("full")
    .window(-1000, 600000)
    .max_out_of_orderness_ms(1000)
    .allowed_lateness_ms(500)
    .output(out)
    .shards(shards)
    .engine("state_bucket_ms = 5000\nbatch_events = 256")
    .render()
}

struct Run {
    report: Report,
    output: Vec<String>,
    late: [Vec<String>; 2],
}

fn run(base: &Path, shards: u32) -> Run {
    let out = format!("out-{shards}");
    let report = common::run(&config(&out, shards), base);
    let dir = base.join(&out);
    let header = "impressions.profile_id,impressions.title_id,impressions.ts,impressions.row,impressions.col,\
                  plays.profile_id,plays.title_id,plays.ts,plays.duration_ms";
    Run {
        output: common::output_rows(&dir, header),
        late: [
            common::late_rows(&dir, "impressions", "profile_id,title_id,ts,row,col"),
            common::late_rows(&dir, "plays", "profile_id,title_id,ts,duration_ms"),
        ],
        report,
    }
}

type Counts = [u64; 12];

fn counts(r: &Report) -> Counts {
    let (l, p) = (&r.left, &r.right);
    [
        l.rows_in,
        p.rows_in,
        l.late,
        p.late,
        l.dead_letters + p.dead_letters,
        r.matched_pairs,
        l.unmatched,
        p.unmatched,
        l.unmatched_emitted,
        p.unmatched_emitted,
        r.output_rows,
        r.events,
    ]
}

#[test]
fn one_two_and_three_shards_give_the_same_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let one = run(tmp.path(), 1);
    // The workload must exercise what it claims to: matches, outer rows on both
    // sides and late rows on both sides.
    let c = counts(&one.report);
    // A partition may stop a little early when no play is pending.
    assert!((29_000..=30_000).contains(&(c[0] + c[1])), "seed {SEED}: events read: {c:?}");
    assert!(c[5] > 1000 && c[8] > 1000 && c[9] > 0, "seed {SEED}: workload too tame: {c:?}");
    assert!(c[2] > 10 && c[3] > 10, "seed {SEED}: too few late rows: {c:?}");
    assert_eq!(one.output.len() as u64, one.report.output_rows, "seed {SEED}: output rows on disk vs report");
    assert_eq!(
        [one.late[0].len() as u64, one.late[1].len() as u64],
        [c[2], c[3]],
        "seed {SEED}: late rows on disk vs report"
    );
    for shards in [2, 3] {
        let other = run(tmp.path(), shards);
        let what = format!("seed {SEED}, {shards} shards vs 1");
        common::assert_same_rows(&format!("{what}: output"), &other.output, &one.output, "");
        common::assert_same_rows(&format!("{what}: late impressions"), &other.late[0], &one.late[0], "");
        common::assert_same_rows(&format!("{what}: late plays"), &other.late[1], &one.late[1], "");
        assert_eq!(
            counts(&other.report),
            c,
            "{what}: report counts [rows in L R, late L R, dead, pairs, unmatched L R, emitted L R, output, events]"
        );
    }
}

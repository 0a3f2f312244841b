//! Guards end of input and empty partitions: a partition that has ended (here: a
//! file with only a header, or an empty JSONL file) counts as +infinity for the
//! engine watermark, so it neither blocks the job nor holds state back; the job
//! finishes and emits the outer rows at end of input. Also: shards that read no
//! partition at all (more shards than files) do not keep the job from finishing.

mod common;

use std::path::Path;

use common::job::{InputToml, JobToml};
use common::model::{self, Input, Params, Row};
use weft::config::JoinKind;

fn csv(rows: &[Row]) -> String {
    let mut s = String::from("k,ts,v\n");
    for r in rows {
        s += &model::csv_line(r.iter());
        s += "\n";
    }
    s
}

fn rows(v: &[(i64, i64, i64)]) -> Vec<Row> {
    v.iter().map(|&(k, t, x)| vec![Some(k), Some(t), Some(x)]).collect()
}

/// Writes each partition as a file and returns the config. `None` = a JSONL file of
/// 0 bytes; an input with a `None` is a JSONL input, so all its partitions must be.
fn job(
    dir: &Path,
    kind: &str,
    left: &[Option<Vec<Row>>],
    right: &[Option<Vec<Row>>],
    shards: u32,
    extra: &str,
) -> String {
    let mut paths = [Vec::new(), Vec::new()];
    let mut formats = ["csv", "csv"];
    for (side, parts) in [left, right].into_iter().enumerate() {
        for (i, p) in parts.iter().enumerate() {
            paths[side].push(match p {
                Some(rows) => {
                    assert!(parts.iter().all(Option::is_some), "test bug: an input is CSV or JSONL");
                    common::write(dir, &format!("{side}-{i}.csv"), csv(rows))
                }
                None => {
                    formats[side] = "jsonl";
                    common::write(dir, &format!("{side}-{i}.jsonl"), "")
                }
            });
        }
    }
    let fields = [("k", "i64"), ("ts", "i64"), ("v", "i64")];
    let left = InputToml::files("l", &paths[0], &fields).format(formats[0]);
    let right = InputToml::files("r", &paths[1], &fields).format(formats[1]);
    let job = JobToml::new(left, right).kind(kind).window(0, 10).shards(shards);
    job.engine("state_bucket_ms = 5").engine(extra).render()
}

fn expected(kind: JoinKind, left: &[Vec<Row>], right: &[Vec<Row>]) -> Vec<String> {
    let input = |p: &[Vec<Row>]| Input { width: 3, key: vec![0], time: 1, partitions: p.to_vec() };
    let p = Params { kind, lower_ms: 0, upper_ms: 10, max_out_of_orderness_ms: 0, allowed_lateness_ms: 0 };
    model::join(&input(left), &input(right), &p).output
}

const HEADER: &str = "l.k,l.ts,l.v,r.k,r.ts,r.v";

#[test]
fn a_header_only_partition_does_not_block_outer_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let l = rows(&[(1, 100, 1), (2, 105, 2), (3, 300, 3)]);
    let r = rows(&[(1, 104, 10), (4, 200, 11)]);
    let text = job(tmp.path(), "full", &[Some(vec![]), Some(l.clone())], &[Some(r.clone()), Some(vec![])], 2, "");
    let rep = common::run(&text, tmp.path());
    let want = expected(JoinKind::Full, &[vec![], l], &[r, vec![]]);
    assert_eq!(want.len(), 4, "test bug: 1 pair + 2 left + 1 right outer rows");
    common::assert_same_rows("output", &common::output_rows(&tmp.path().join("out"), HEADER), &want, &text);
    assert_eq!((rep.left.unmatched_emitted, rep.right.unmatched_emitted, rep.matched_pairs), (2, 1, 1));
}

#[test]
fn an_input_with_only_empty_partitions_emits_every_outer_row() {
    let tmp = tempfile::tempdir().unwrap();
    let l = rows(&[(2, 50, 2), (1, 100, 1), (1, 100, 1)]);
    for right in [vec![Some(vec![]), Some(vec![])], vec![None]] {
        let text = job(tmp.path(), "left", &[Some(l.clone())], &right, 3, "");
        let opts = weft::engine::RunOptions { force: true, ..Default::default() };
        let rep = common::try_run(&text, tmp.path(), &opts).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let got = common::output_rows(&tmp.path().join("out"), HEADER);
        assert_eq!(got, ["1,100,1,,,", "1,100,1,,,", "2,50,2,,,"], "{text}");
        assert_eq!((rep.left.rows_in, rep.right.rows_in, rep.output_rows), (3, 0, 3), "{text}");
    }
}

#[test]
fn all_partitions_empty_finishes_with_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let text = job(tmp.path(), "full", &[Some(vec![]), Some(vec![])], &[None], 2, "");
    let rep = common::run(&text, tmp.path());
    assert!(common::output_rows(&tmp.path().join("out"), HEADER).is_empty());
    assert_eq!((rep.events, rep.output_rows), (0, 0));
}

/// 2000 rows per side, 10 ms apart, window 10 ms, B = A = 0, small batches, one
/// shard reading both data partitions and three empty ones. If ended partitions
/// count as +infinity the watermark follows the data and state stays tiny; if they
/// held it back, every row would stay in state until the end. (One shard, so that
/// the peak does not depend on how fast the other shards' executors start.)
#[test]
fn ended_partitions_do_not_hold_state() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 2000i64;
    let l: Vec<Row> = rows(&(0..n).map(|i| (i % 7, i * 10, i)).collect::<Vec<_>>());
    let r: Vec<Row> = rows(&(0..n).map(|i| (i % 7, i * 10 + 5, i)).collect::<Vec<_>>());
    let (e, le, re) = (Some(vec![]), Some(l.clone()), Some(r.clone()));
    let text = job(tmp.path(), "full", &[le, e.clone()], &[e.clone(), e, re], 1, "batch_events = 16\n");
    let rep = common::run(&text, tmp.path());
    let want = expected(JoinKind::Full, &[l, vec![]], &[vec![], vec![], r]);
    common::assert_same_rows("output", &common::output_rows(&tmp.path().join("out"), HEADER), &want, &text);
    let peak = rep.left.state_rows_peak + rep.right.state_rows_peak;
    assert!(peak < 100, "state rows peak {peak} for 4000 rows: the watermark did not follow the data");
}

/// More shards than partitions: shards 1 and 2 read nothing and must not hold the
/// job (or its outer rows) back.
#[test]
fn shards_without_partitions_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let l = rows(&[(1, 100, 1), (2, 105, 2), (3, 300, 3), (5, 301, 4)]);
    let r = rows(&[(1, 104, 10), (4, 200, 11), (5, 311, 12)]);
    let text = job(tmp.path(), "full", &[Some(l.clone())], &[Some(r.clone())], 3, "");
    // Runs in milliseconds when it works; a shard that reads nothing once hung the job.
    let limit = std::time::Duration::from_secs(30);
    common::try_run_within(&text, tmp.path(), &Default::default(), limit).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let want = expected(JoinKind::Full, &[l], &[r]);
    common::assert_same_rows("output", &common::output_rows(&tmp.path().join("out"), HEADER), &want, &text);
}

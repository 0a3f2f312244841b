//! Guards the join contract end to end: the streaming engine, run in process over
//! files, produces exactly the output multiset, late rows and report counts of the
//! nested-loop model (`common/model.rs`) of docs/SEMANTICS.md.
//!
//! The property test draws small inputs (1-3 partitions per side, 0-40 rows each,
//! keys from a tiny domain with NULLs, disorder, late jumps, duplicates), bounds
//! (negative, zero-width, asymmetric), B and A, every join kind, 1-3 shards, tiny
//! state buckets (expiry), tiny batches and rings (many watermark marks,
//! backpressure), CSV or JSONL inputs with columns in another order than the schema.
//! With file inputs no partition ever idles, so lateness is fully deterministic.
//! A failure prints the seed (`PROPTEST_RNG_SEED=...` replays it), the shrunk case
//! and the job's config. Also here: hand-checked examples of the model itself, and
//! timestamps at the ends of the i64 range.

mod common;

use std::path::{Path, PathBuf};

use common::job::{InputToml, JobToml};
use common::model::{self, Input, Params, Row};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use weft::config::JoinKind;

/// Schema order of the left input's fields (all i64).
const LEFT_FIELDS: [&str; 4] = ["k", "ts", "v", "k2"];
/// Schema order of the right input's fields (all i64).
const RIGHT_FIELDS: [&str; 4] = ["k2", "ts", "w", "k"];
/// Column order of the right CSV files: not the schema's, plus an ignored column.
const RIGHT_FILE_COLUMNS: [&str; 5] = ["k", "note", "w", "ts", "k2"];
const CASES_DEFAULT: u32 = 48;
/// A case runs in milliseconds; longer is a hang (and fails the case).
const RUN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// One generated scenario. Rows are in schema order (see the `*_FIELDS`).
#[derive(Clone, Debug)]
struct Case {
    kind: JoinKind,
    lower_ms: i64,
    upper_ms: i64,
    b_ms: i64,
    a_ms: i64,
    /// Key (k, k2) instead of (k).
    two_keys: bool,
    shards: u32,
    bucket_ms: i64,
    batch_events: u32,
    ring_slots: u32,
    /// JSONL instead of CSV, per side.
    jsonl: [bool; 2],
    /// JSONL output instead of CSV.
    jsonl_out: bool,
    /// Join state: 0 = heap, 1 = mmap'd arena files, 2 = arena with a 1 MiB budget.
    state: u8,
    left: Vec<Vec<Row>>,
    right: Vec<Vec<Row>>,
}

impl Case {
    fn params(&self) -> Params {
        Params {
            kind: self.kind,
            lower_ms: self.lower_ms,
            upper_ms: self.upper_ms,
            max_out_of_orderness_ms: self.b_ms,
            allowed_lateness_ms: self.a_ms,
        }
    }

    fn inputs(&self) -> (Input, Input) {
        let (lk, rk) = if self.two_keys { (vec![0, 3], vec![3, 0]) } else { (vec![0], vec![3]) };
        (
            Input { width: 4, key: lk, time: 1, partitions: self.left.clone() },
            Input { width: 4, key: rk, time: 1, partitions: self.right.clone() },
        )
    }
}

/// (k, k2, payload, ts) of one row, before it is laid out for its side.
type Cells = (Option<i64>, Option<i64>, Option<i64>, i64);

fn partition() -> impl Strategy<Value = Vec<Cells>> {
    let key = prop_oneof![1 => Just(None), 8 => (0i64..4).prop_map(Some)];
    let key2 = prop_oneof![1 => Just(None), 8 => (0i64..2).prop_map(Some)];
    let payload = prop_oneof![1 => Just(None), 4 => (-3i64..1000).prop_map(Some)];
    let step = (0u8..100, -12i64..=15, key, key2, payload);
    (-40i64..40, prop::collection::vec(step, 0..=40)).prop_map(|(base, steps)| {
        // `t` walks forward with disorder; some rows jump back (often late), some
        // spike ahead without moving `t` (so the rows after them are often late),
        // some repeat the previous row exactly.
        let mut t = base;
        let mut rows: Vec<Cells> = Vec::new();
        for (sel, d, k, k2, v) in steps {
            match sel {
                0..=7 if !rows.is_empty() => {
                    let last = *rows.last().unwrap();
                    rows.push(last);
                }
                8..=15 => rows.push((k, k2, v, t - 25 - d.abs())),
                16..=21 => rows.push((k, k2, v, t + 30 + 2 * d.abs())),
                _ => {
                    t += d;
                    rows.push((k, k2, v, t));
                }
            }
        }
        rows
    })
}

fn left_row((k, k2, v, ts): Cells) -> Row {
    vec![k, Some(ts), v, k2]
}

fn right_row((k, k2, w, ts): Cells) -> Row {
    vec![k2, Some(ts), w, k]
}

fn case() -> impl Strategy<Value = Case> {
    let kind = prop_oneof![Just(JoinKind::Inner), Just(JoinKind::Left), Just(JoinKind::Right), Just(JoinKind::Full)];
    let bounds = (-30i64..=30, prop_oneof![1 => Just(0i64), 4 => 0i64..=40]).prop_map(|(lo, w)| (lo, lo + w));
    let engine = (
        1u32..=3,
        1i64..50,
        prop::sample::select(vec![1u32, 3, 16, 1024]),
        prop::sample::select(vec![2u32, 64]),
        0u8..3,
    );
    let inputs = (prop::collection::vec(partition(), 1..=3), prop::collection::vec(partition(), 1..=3));
    (kind, bounds, (0i64..20, 0i64..20), any::<bool>(), engine, any::<[bool; 3]>(), inputs).prop_map(
        |(
            kind,
            (lower_ms, upper_ms),
            (b_ms, a_ms),
            two_keys,
            (shards, bucket_ms, batch_events, ring_slots, state),
            jsonl,
            (l, r),
        )| {
            Case {
                kind,
                lower_ms,
                upper_ms,
                b_ms,
                a_ms,
                two_keys,
                shards,
                bucket_ms,
                batch_events,
                ring_slots,
                jsonl: [jsonl[0], jsonl[1]],
                jsonl_out: jsonl[2],
                state,
                left: l.into_iter().map(|p| p.into_iter().map(left_row).collect()).collect(),
                right: r.into_iter().map(|p| p.into_iter().map(right_row).collect()).collect(),
            }
        },
    )
}

fn cell(v: Option<i64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// Writes one partition as CSV with the given file column order (`None` = a column
/// not in the schema) and returns the path.
fn write_csv(dir: &Path, name: &str, columns: &[&str], schema: &[&str], rows: &[Row]) -> PathBuf {
    let mut s = columns.join(",") + "\n";
    for r in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match schema.iter().position(|f| f == c) {
                Some(i) => cell(r[i]),
                None => "x".into(),
            })
            .collect();
        s += &cells.join(",");
        s += "\n";
    }
    common::write(dir, name, s)
}

/// Writes one partition as JSON lines; a NULL is written as `null` or left out.
fn write_jsonl(dir: &Path, name: &str, schema: &[&str], rows: &[Row]) -> PathBuf {
    let mut s = String::new();
    for (n, r) in rows.iter().enumerate() {
        let mut m = serde_json::Map::new();
        for (i, f) in schema.iter().enumerate().rev() {
            match r[i] {
                Some(x) => {
                    m.insert(f.to_string(), x.into());
                }
                None if (n + i) % 2 == 0 => {
                    m.insert(f.to_string(), serde_json::Value::Null);
                }
                None => {}
            }
        }
        s += &serde_json::Value::Object(m).to_string();
        s += "\n";
    }
    common::write(dir, name, s)
}

fn kind_name(k: JoinKind) -> &'static str {
    match k {
        JoinKind::Inner => "inner",
        JoinKind::Left => "left",
        JoinKind::Right => "right",
        JoinKind::Full => "full",
    }
}

/// Writes the case's files into `dir` and returns the job config.
fn write_case(c: &Case, dir: &Path) -> String {
    let mut paths = [Vec::new(), Vec::new()];
    for (i, p) in c.left.iter().enumerate() {
        paths[0].push(if c.jsonl[0] {
            write_jsonl(dir, &format!("l{i}.jsonl"), &LEFT_FIELDS, p)
        } else {
            write_csv(dir, &format!("l{i}.csv"), &LEFT_FIELDS, &LEFT_FIELDS, p)
        });
    }
    for (i, p) in c.right.iter().enumerate() {
        paths[1].push(if c.jsonl[1] {
            write_jsonl(dir, &format!("r{i}.jsonl"), &RIGHT_FIELDS, p)
        } else {
            write_csv(dir, &format!("r{i}.csv"), &RIGHT_FILE_COLUMNS, &RIGHT_FIELDS, p)
        });
    }
    let key: &[&str] = if c.two_keys { &["k", "k2"] } else { &["k"] };
    let fmt = |j: bool| if j { "jsonl" } else { "csv" };
    let input = |name: &str, paths: &[PathBuf], fields: &[&str], jsonl: bool| {
        let fields: Vec<(&str, &str)> = fields.iter().map(|&f| (f, "i64")).collect();
        InputToml::files(name, paths, &fields).format(fmt(jsonl)).key(key)
    };
    JobToml::new(input("l", &paths[0], &LEFT_FIELDS, c.jsonl[0]), input("r", &paths[1], &RIGHT_FIELDS, c.jsonl[1]))
        .kind(kind_name(c.kind))
        .window(c.lower_ms, c.upper_ms)
        .max_out_of_orderness_ms(c.b_ms)
        .allowed_lateness_ms(c.a_ms)
        .output_format(fmt(c.jsonl_out))
        .shards(c.shards)
        .engine(&format!(
            "state_bucket_ms = {}\nbatch_events = {}\nring_slots = {}",
            c.bucket_ms, c.batch_events, c.ring_slots
        ))
        .engine(match c.state {
            0 => "",
            1 => "state_dir = \"state\"",
            _ => "state_dir = \"state\"\nstate_memory_mb = 1",
        })
        .render()
}

fn output_columns() -> Vec<String> {
    let l = LEFT_FIELDS.iter().map(|f| format!("l.{f}"));
    let r = RIGHT_FIELDS.iter().map(|f| format!("r.{f}"));
    l.chain(r).collect()
}

/// Runs the case through the engine and compares everything with the model.
fn check(c: &Case) -> Result<(), String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let config = write_case(c, tmp.path());
    let ctx = format!("--- config ---\n{config}");
    let report = common::try_run_within(&config, tmp.path(), &Default::default(), RUN_TIMEOUT)
        .map_err(|e| format!("job failed: {e}\n{ctx}"))?;
    let (left, right) = c.inputs();
    let want = model::join(&left, &right, &c.params());
    let out = tmp.path().join("out");

    let got = if c.jsonl_out {
        common::output_rows_jsonl(&out, &output_columns())
    } else {
        common::output_rows(&out, &output_columns().join(","))
    };
    if got != want.output {
        return Err(format!("output differs:\n{}{ctx}", common::multiset_diff(&got, &want.output)));
    }
    for (i, (name, fields)) in [("l", &LEFT_FIELDS), ("r", &RIGHT_FIELDS)].into_iter().enumerate() {
        let got = if c.jsonl[i] {
            common::late_rows_jsonl(&out, name, fields)
        } else {
            common::late_rows(&out, name, &fields.join(","))
        };
        if got != want.late[i] {
            return Err(format!("late rows of `{name}` differ:\n{}{ctx}", common::multiset_diff(&got, &want.late[i])));
        }
    }
    if c.state != 0 {
        let files = files_under(&tmp.path().join("state"));
        if !files.is_empty() {
            return Err(format!("arena files left after the run: {files:?}\n{ctx}"));
        }
    }
    let dead = common::dead_letters(&out);
    if !dead.is_empty() {
        return Err(format!("unexpected dead letters {dead:?}\n{ctx}"));
    }
    let counts = |r: &weft::metrics::InputReport| (r.rows_in, r.late, r.dead_letters, r.unmatched, r.unmatched_emitted);
    let w = &want;
    let got_counts = (counts(&report.left), counts(&report.right), report.matched_pairs, report.output_rows);
    let want_counts = (
        (w.rows_in[0], w.late_count[0], 0, w.unmatched[0], w.unmatched_emitted[0]),
        (w.rows_in[1], w.late_count[1], 0, w.unmatched[1], w.unmatched_emitted[1]),
        w.pairs,
        w.output.len() as u64,
    );
    if got_counts != want_counts {
        return Err(format!(
            "report counts ((rows_in, late, dead, unmatched, unmatched_emitted) per side, pairs, output rows):\n  engine {got_counts:?}\n  model  {want_counts:?}\n{ctx}"
        ));
    }
    Ok(())
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                v.extend(files_under(&p));
            } else {
                v.push(p);
            }
        }
    }
    v
}

fn seed() -> u64 {
    match std::env::var("PROPTEST_RNG_SEED") {
        Ok(s) => s.parse().expect("PROPTEST_RNG_SEED is a u64"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    }
}

#[test]
fn engine_matches_nested_loop_model() {
    let seed = seed();
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(CASES_DEFAULT);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 1024,
        // Bounds shrinking when cases hang (each then costs RUN_TIMEOUT).
        max_shrink_time: 180_000,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    });
    if let Err(e) = runner.run(&case(), |c| check(&c).map_err(TestCaseError::fail)) {
        panic!("{e}\nreplay with PROPTEST_RNG_SEED={seed}");
    }
}

// ---- the model itself, on cases worked out by hand ----

fn params(kind: JoinKind, lower_ms: i64, upper_ms: i64, b: i64, a: i64) -> Params {
    Params { kind, lower_ms, upper_ms, max_out_of_orderness_ms: b, allowed_lateness_ms: a }
}

/// Rows of (key, time, payload); key and time at 0 and 1.
fn input(parts: &[&[(Option<i64>, i64, i64)]]) -> Input {
    Input {
        width: 3,
        key: vec![0],
        time: 1,
        partitions: parts.iter().map(|p| p.iter().map(|&(k, t, v)| vec![k, Some(t), Some(v)]).collect()).collect(),
    }
}

fn lines(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn model_bounds_are_inclusive_and_null_keys_never_match() {
    let l = input(&[&[(Some(1), 100, 1), (None, 100, 2)]]);
    let r = input(&[&[(Some(1), 95, 10), (Some(1), 105, 11), (Some(1), 106, 12), (None, 100, 13), (Some(2), 100, 14)]]);
    let e = model::join(&l, &r, &params(JoinKind::Full, -5, 5, 1000, 0));
    assert_eq!(
        e.output,
        lines(&["1,100,1,1,95,10", "1,100,1,1,105,11", ",100,2,,,", ",,,1,106,12", ",,,,100,13", ",,,2,100,14",])
    );
    assert_eq!((e.pairs, e.unmatched, e.unmatched_emitted), (2, [1, 3], [1, 3]));
    let inner = model::join(&l, &r, &params(JoinKind::Inner, -5, 5, 1000, 0));
    assert_eq!((inner.output.len(), inner.unmatched, inner.unmatched_emitted), (2, [1, 3], [0, 0]));
}

#[test]
fn model_lateness_is_per_partition_and_strict() {
    // B = 10, A = 5: late when t < max before - 15.
    let l = input(&[&[(Some(1), 100, 1), (Some(1), 85, 2), (Some(1), 84, 3), (Some(1), 200, 4)], &[(Some(1), 84, 5)]]);
    let r = input(&[&[]]);
    let e = model::join(&l, &r, &params(JoinKind::Left, 0, 0, 10, 5));
    assert_eq!(e.late[0], lines(&["1,84,3"]));
    assert_eq!(e.late_count, [1, 0]);
    assert_eq!(e.rows_in, [5, 0]);
    assert_eq!(e.output, lines(&["1,100,1,,,", "1,85,2,,,", "1,200,4,,,", "1,84,5,,,"]));
}

#[test]
fn model_duplicates_multiply() {
    let l = input(&[&[(Some(1), 10, 1), (Some(1), 10, 1)]]);
    let r = input(&[&[(Some(1), 10, 2)], &[(Some(1), 12, 2), (Some(1), 12, 2)]]);
    let e = model::join(&l, &r, &params(JoinKind::Inner, 0, 2, 0, 0));
    assert_eq!(
        e.output,
        lines(&["1,10,1,1,10,2", "1,10,1,1,10,2", "1,10,1,1,12,2", "1,10,1,1,12,2", "1,10,1,1,12,2", "1,10,1,1,12,2"])
    );
}

// ---- fixed scenarios through the engine ----

fn fixed_case(kind: JoinKind, lower_ms: i64, upper_ms: i64, left: Vec<Vec<Cells>>, right: Vec<Vec<Cells>>) -> Case {
    Case {
        kind,
        lower_ms,
        upper_ms,
        b_ms: 0,
        a_ms: 0,
        two_keys: false,
        shards: 2,
        bucket_ms: 7,
        batch_events: 1,
        ring_slots: 2,
        jsonl: [false, false],
        jsonl_out: false,
        state: 0,
        left: left.into_iter().map(|p| p.into_iter().map(left_row).collect()).collect(),
        right: right.into_iter().map(|p| p.into_iter().map(right_row).collect()).collect(),
    }
}

#[test]
fn timestamps_at_the_ends_of_i64() {
    let (min, max) = (i64::MIN, i64::MAX);
    let l = vec![vec![
        (Some(1), None, Some(1), min),
        (Some(1), None, Some(2), min + 1),
        (Some(2), None, Some(3), max - 1),
        (Some(2), None, Some(4), max),
    ]];
    let r = vec![vec![
        (Some(1), None, Some(5), min),
        (Some(1), None, Some(6), max),
        (Some(2), None, Some(7), max),
        (Some(2), None, Some(8), min),
    ]];
    for (lower, upper) in [(min, max), (0, max), (min, 0), (0, 0), (-1, 1), (max - 1, max), (min, min + 1)] {
        for kind in [JoinKind::Inner, JoinKind::Full] {
            let mut c = fixed_case(kind, lower, upper, l.clone(), r.clone());
            c.b_ms = max;
            c.a_ms = max;
            if let Err(e) = check(&c) {
                panic!("lower {lower}, upper {upper}, {kind:?}: {e}");
            }
            c.b_ms = 0;
            c.a_ms = 0;
            if let Err(e) = check(&c) {
                panic!("B = A = 0, lower {lower}, upper {upper}, {kind:?}: {e}");
            }
        }
    }
}

#[test]
fn rows_far_apart_expire_and_emit_outer_rows() {
    // Tiny buckets, B = A = 0, single-row batches: state is expired many times; rows
    // just inside and outside the bounds on both sides.
    let mut l = Vec::new();
    let mut r = Vec::new();
    for i in 0..60i64 {
        l.push((Some(i % 3), None, Some(i), i * 10));
        r.push((Some(i % 3), None, Some(100 + i), i * 10 + 25));
    }
    for (lower, upper) in [(25, 25), (-5, 24), (26, 40), (-30, -25)] {
        for kind in [JoinKind::Left, JoinKind::Right, JoinKind::Full] {
            let c = fixed_case(kind, lower, upper, vec![l.clone()], vec![r.clone()]);
            if let Err(e) = check(&c) {
                panic!("lower {lower}, upper {upper}, {kind:?}: {e}");
            }
        }
    }
}

//! Schema evolution across a restart from a checkpoint (#13, items 2, 3 and 5):
//!
//! - a full cycle: a job checkpointed under schema v1, killed (-9) mid-run, finished
//!   under v2 (a field widened, one dropped, fields reordered) commits exactly the
//!   batch answer of v2 over the same inputs. Output epochs committed before the change
//!   keep the v1 columns (compared after mapping them to v2's), those after carry v2's;
//! - every incompatible change (key type, key fields, a dropped key, time type, a
//!   narrowing, i64 -> f64, another type change) is refused with exit 2 and a message
//!   naming input, field, types and rule, and leaves the checkpoint and output
//!   directories byte-identical (compared by a hash of every file's name and bytes);
//!   join bounds stay refused as a job-shape change;
//! - the same across a field added with a default (and one without), a rename through
//!   `aliases` and a widening: rows in state at the change carry the default;
//! - `weft schema check` says the same, with exit 0 / 1, and changes nothing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::crash::{attempt, Attempt, KillAt};

/// The generated inputs' fields (as `weft gen` writes them).
const V1_LEFT: &[(&str, &str)] =
    &[("profile_id", "u64"), ("title_id", "u32"), ("ts", "i64"), ("row", "u32"), ("col", "u32")];
const V1_RIGHT: &[(&str, &str)] = &[("profile_id", "u64"), ("title_id", "u32"), ("ts", "i64"), ("duration_ms", "u32")];

/// v2: left reordered (time first), `row` widened u32 -> u64, `col` dropped; right
/// `duration_ms` widened u32 -> i64.
const V2_LEFT: &[(&str, &str)] = &[("ts", "i64"), ("title_id", "u32"), ("profile_id", "u64"), ("row", "u64")];
const V2_RIGHT: &[(&str, &str)] = &[("profile_id", "u64"), ("title_id", "u32"), ("ts", "i64"), ("duration_ms", "i64")];

fn gen(dir: &Path) {
    let args = ["--events", "600000", "--keys", "30000", "--partitions", "2", "--kind", "left", "--seed", "5"];
    common::crash::weft_gen(dir, &args);
}

/// v3 of the full cycle with new fields: left gains `device` (default "tv") and `note`
/// (no default: NULL), `row` widened; right's `duration_ms` renamed `watched_ms` (the old
/// name its alias) and widened u32 -> i64.
const V3_LEFT: &[(&str, &str)] = &[
    ("profile_id", "u64"),
    ("title_id", "u32"),
    ("ts", "i64"),
    ("row", "u64"),
    ("col", "u32"),
    ("device", "string"),
    ("note", "string"),
];
const V3_RIGHT: &[(&str, &str)] = &[("profile_id", "u64"), ("title_id", "u32"), ("ts", "i64"), ("watched_ms", "i64")];
const V3_ATTRS: &[(&str, &str)] = &[("device", "default = \"tv\""), ("watched_ms", "aliases = [\"duration_ms\"]")];

/// The TOML list of `fields`, with the further keys `attrs` gives a field (by name).
fn fields_toml(fields: &[(&str, &str)], attrs: &[(&str, &str)]) -> String {
    let more = |n: &str| -> String { attrs.iter().filter(|(a, _)| *a == n).map(|(_, v)| format!(", {v}")).collect() };
    let f: Vec<String> =
        fields.iter().map(|(n, t)| format!("{{ name = \"{n}\", type = \"{t}\"{} }}", more(n))).collect();
    format!("[{}]", f.join(", "))
}

/// A job over the generated files with these schemas (key profile_id,title_id; time
/// ts unless `left_extra` says otherwise), writing to `out`, checkpointing to `ckpt`
/// when `checkpoints`.
struct Job<'a> {
    left: &'a [(&'a str, &'a str)],
    right: &'a [(&'a str, &'a str)],
    left_key: &'a str,
    right_key: &'a str,
    upper_ms: i64,
    /// Further keys of fields' inline tables, by field name (`default`, `aliases`).
    attrs: &'a [(&'a str, &'a str)],
}

impl<'a> Job<'a> {
    fn new(left: &'a [(&'a str, &'a str)], right: &'a [(&'a str, &'a str)]) -> Self {
        Job {
            left,
            right,
            left_key: "[\"profile_id\", \"title_id\"]",
            right_key: "[\"profile_id\", \"title_id\"]",
            upper_ms: 3_600_000,
            attrs: &[],
        }
    }

    /// Files are read whole (`file_split_kib = 0`): the test kills at the second
    /// checkpoint and needs committed output by then, and a split file's rows go out
    /// only once its first chunk is parsed (tests/split_files.rs covers split reads).
    fn write(&self, dir: &Path, name: &str, out: &str, checkpoints: bool) -> PathBuf {
        let engine = if checkpoints {
            "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 20\ncheckpoints_retained = 3\n"
        } else {
            ""
        };
        let text = format!(
            "[left]\nname = \"impressions\"\nformat = \"csv\"\npaths = [\"left-0.csv\", \"left-1.csv\"]\n\
             key = {}\ntime = \"ts\"\nfields = {}\n\n\
             [right]\nname = \"plays\"\nformat = \"csv\"\npaths = [\"right-0.csv\", \"right-1.csv\"]\n\
             key = {}\ntime = \"ts\"\nfields = {}\n\n\
             [join]\nkind = \"left\"\nlower_ms = 0\nupper_ms = {}\nmax_out_of_orderness_ms = 5000\n\
             allowed_lateness_ms = 0\nidle_timeout_ms = 10000\n\n\
             [output]\npath = \"{out}\"\nformat = \"csv\"\n\n\
             [engine]\nshards = 2\npin_cores = false\nfile_split_kib = 0\n{engine}",
            self.left_key,
            fields_toml(self.left, self.attrs),
            self.right_key,
            fields_toml(self.right, self.attrs),
            self.upper_ms
        );
        common::write(dir, name, text)
    }
}

fn run(cfg: &Path, kill_at_checkpoint: Option<u32>) -> Attempt {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(["run", "--quiet", "--log-level", "debug", "--config", cfg.to_str().unwrap()]);
    let kill = kill_at_checkpoint.map(|n| KillAt { line: Some(("complete at".into(), n)), delay: Duration::ZERO });
    attempt(cmd, kill.as_ref(), common::timeout())
}

/// Runs `cfg` from scratch (no `ckpt`, no `out`) until its second checkpoint and kills
/// it; retried when the job ends first.
fn checkpointed_and_killed(dir: &Path, cfg: &Path) {
    for _ in 0..4 {
        let _ = std::fs::remove_dir_all(dir.join("ckpt"));
        let _ = std::fs::remove_dir_all(dir.join("out"));
        let a = run(cfg, Some(2));
        if a.killed {
            return;
        }
        assert!(a.status.success(), "{}", a.stderr);
    }
    panic!("the job always ended before its second checkpoint: the input is too small for this host");
}

/// How a file of an older version maps to the current columns: `renamed` gives the
/// former name of a column, `missing` the value of a column the file lacks (its
/// default, or "" for NULL).
#[derive(Default)]
struct Older {
    renamed: BTreeMap<String, String>,
    missing: BTreeMap<String, String>,
}

/// Every committed CSV file `prefix*.csv` under `dir`, its rows mapped to `columns`:
/// a column is taken from the file's column of the same name, or else from the column
/// `older` says it was renamed from, or else is `older`'s value for a missing one.
fn rows_as(dir: &Path, prefix: &str, columns: &[String], older: &Older) -> Vec<String> {
    let mut rows = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".csv")
        })
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let mut lines = text.lines();
        let Some(header) = lines.next() else { continue };
        let header: Vec<&str> = header.split(',').collect();
        let at: Vec<Result<usize, &String>> = columns
            .iter()
            .map(|c| {
                let from = older.renamed.get(c).unwrap_or(c);
                match header.iter().position(|h| h == c || h == from) {
                    Some(i) => Ok(i),
                    None => Err(older
                        .missing
                        .get(c)
                        .unwrap_or_else(|| panic!("{}: no column {c} (or {from}) in {header:?}", f.display()))),
                }
            })
            .collect();
        for line in lines {
            let cells: Vec<&str> = line.split(',').collect();
            rows.push(at.iter().map(|a| a.map_or_else(|v| v.as_str(), |i| cells[i])).collect::<Vec<_>>().join(","));
        }
    }
    rows.sort();
    rows
}

fn columns(left: &[(&str, &str)], right: &[(&str, &str)]) -> Vec<String> {
    let l = left.iter().map(|(n, _)| format!("impressions.{n}"));
    l.chain(right.iter().map(|(n, _)| format!("plays.{n}"))).collect()
}

/// The header of each committed `part-*.csv` of `dir`.
fn headers(dir: &Path) -> Vec<String> {
    let mut v: Vec<(PathBuf, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .map(|p| {
            let h = std::fs::read_to_string(&p).unwrap().lines().next().unwrap_or("").to_string();
            (p, h)
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, h)| h).collect()
}

/// Every regular file under `dir` (hidden ones too), relative path -> FNV-1a of its bytes.
fn digest(dir: &Path) -> BTreeMap<String, (u64, u64)> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, (u64, u64)>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).unwrap();
                let mut h: u64 = 0xcbf29ce484222325;
                for b in &bytes {
                    h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
                }
                out.insert(p.strip_prefix(root).unwrap().display().to_string(), (bytes.len() as u64, h));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn schema_check(cfg: &Path) -> (Option<i32>, String, String) {
    let o = common::weft_out(&["schema", "check", "--config", cfg.to_str().unwrap()]);
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn widened_dropped_and_reordered_fields_across_kill_9_give_the_batch_answer_of_v2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen(dir);
    let v1 = Job::new(V1_LEFT, V1_RIGHT).write(dir, "v1.toml", "out", true);
    let v2 = Job::new(V2_LEFT, V2_RIGHT).write(dir, "v2.toml", "out", true);
    checkpointed_and_killed(dir, &v1);
    let before = headers(&dir.join("out"));
    let v1_header = columns(V1_LEFT, V1_RIGHT).join(",");
    assert!(!before.is_empty() && before.iter().all(|h| *h == v1_header), "{before:?}");

    let (code, stdout, stderr) = schema_check(&v2);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for line in [
        "input `impressions` (schema version 1 -> 2)",
        "row         widened u32 -> u64",
        "col         dropped (was u32)",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    assert!(stdout.contains("duration_ms  widened u32 -> i64"), "{stdout}");
    assert!(stdout.contains("every stored row is rewritten"), "{stdout}");

    let last = run(&v2, None);
    assert!(last.status.success(), "{}", last.stderr);
    assert!(last.stderr.contains("input impressions has a new schema (version 2)"), "{}", last.stderr);
    assert!(last.stderr.contains("`row` widened u32 -> u64"), "{}", last.stderr);

    // Epochs committed before the change kept their columns; the rest have v2's.
    let after = headers(&dir.join("out"));
    let v2_header = columns(V2_LEFT, V2_RIGHT).join(",");
    assert!(after.contains(&v2_header), "no file with the v2 columns: {after:?}");
    assert!(after.iter().all(|h| *h == v1_header || *h == v2_header), "{after:?}");
    // (A kill right after a manifest leaves its epoch for the restart to commit.)
    assert!(after.iter().filter(|h| **h == v1_header).count() >= before.len(), "{after:?}");

    let batch = Job::new(V2_LEFT, V2_RIGHT).write(dir, "v2-batch.toml", "out-batch", false);
    let b = common::weft_out(&[
        "batch",
        "--config",
        batch.to_str().unwrap(),
        "--output",
        dir.join("out-batch").to_str().unwrap(),
    ]);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let cols = columns(V2_LEFT, V2_RIGHT);
    let want = rows_as(&dir.join("out-batch"), "part-", &cols, &Older::default());
    let got = rows_as(&dir.join("out"), "part-", &cols, &Older::default());
    assert!(want.len() > 50_000, "{}", want.len());
    common::assert_same_rows("joined rows across the schema change", &got, &want, "");
    let late_cols: Vec<String> = V2_LEFT.iter().map(|(n, _)| n.to_string()).collect();
    let want_late = rows_as(&dir.join("out-batch").join("late"), "impressions-", &late_cols, &Older::default());
    let got_late = rows_as(&dir.join("out").join("late"), "impressions-", &late_cols, &Older::default());
    assert!(!want_late.is_empty());
    common::assert_same_rows("late rows across the schema change", &got_late, &want_late, "");
}

/// The full cycle of the issue: v1 checkpointed and killed (-9) mid-run, finished
/// under v3 (a field added with a default, one without, a type widened, a field renamed
/// through an alias). The input files are still v1's, so `weft batch` under v3 reads
/// every row with `device` = "tv" and `note` NULL: the committed output equals it only
/// if the rows that were in state at the change were migrated to carry the default too.
#[test]
fn added_renamed_and_widened_fields_across_kill_9_give_the_batch_answer_of_v3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen(dir);
    let v1 = Job::new(V1_LEFT, V1_RIGHT).write(dir, "v1.toml", "out", true);
    let v3 = Job { attrs: V3_ATTRS, ..Job::new(V3_LEFT, V3_RIGHT) }.write(dir, "v3.toml", "out", true);
    checkpointed_and_killed(dir, &v1);

    let (code, stdout, stderr) = schema_check(&v3);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for line in [
        "device      added: rows in state take the default \"tv\"",
        "note        added: rows in state hold NULL (no default)",
        "row         widened u32 -> u64",
        "watched_ms  renamed from `duration_ms` (alias), widened u32 -> i64",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }

    let last = run(&v3, None);
    assert!(last.status.success(), "{}", last.stderr);
    let v3_header = columns(V3_LEFT, V3_RIGHT).join(",");
    assert!(headers(&dir.join("out")).contains(&v3_header), "no file with the v3 columns");

    let batch = Job { attrs: V3_ATTRS, ..Job::new(V3_LEFT, V3_RIGHT) }.write(dir, "v3-batch.toml", "out-batch", false);
    let b = common::weft_out(&[
        "batch",
        "--config",
        batch.to_str().unwrap(),
        "--output",
        dir.join("out-batch").to_str().unwrap(),
    ]);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    // Files of epochs before the change have v1's columns: `plays.duration_ms` is
    // `plays.watched_ms`, and the added fields are what v3 gives a row without them.
    let older = |prefix: &str| Older {
        renamed: [(format!("{prefix}watched_ms"), format!("{prefix}duration_ms"))].into_iter().collect(),
        missing: [(format!("{prefix}device"), "tv".to_string()), (format!("{prefix}note"), String::new())]
            .into_iter()
            .collect(),
    };
    let cols = columns(V3_LEFT, V3_RIGHT);
    let out_older = Older { renamed: older("plays.").renamed, missing: older("impressions.").missing };
    let want = rows_as(&dir.join("out-batch"), "part-", &cols, &Older::default());
    let got = rows_as(&dir.join("out"), "part-", &cols, &out_older);
    assert!(want.len() > 50_000, "{}", want.len());
    assert!(want.iter().all(|r| r.split(',').nth(5) == Some("tv")), "batch rows carry the default");
    common::assert_same_rows("joined rows across the change", &got, &want, "");
    let late_cols: Vec<String> = V3_LEFT.iter().map(|(n, _)| n.to_string()).collect();
    let want_late = rows_as(&dir.join("out-batch").join("late"), "impressions-", &late_cols, &Older::default());
    let got_late = rows_as(&dir.join("out").join("late"), "impressions-", &late_cols, &older(""));
    assert!(!want_late.is_empty());
    common::assert_same_rows("late rows across the change", &got_late, &want_late, "");
}

/// v1 with one field of `side` (0 left, 1 right) changed to `to`.
fn changed(
    fields: &[(&'static str, &'static str)],
    name: &str,
    to: (&'static str, &'static str),
) -> Vec<(&'static str, &'static str)> {
    let mut v = fields.to_vec();
    let i = v.iter().position(|(n, _)| *n == name).unwrap();
    v[i] = to;
    v
}

#[test]
fn every_incompatible_change_is_refused_and_leaves_both_directories_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen(dir);
    let v1 = Job::new(V1_LEFT, V1_RIGHT).write(dir, "v1.toml", "out", true);
    checkpointed_and_killed(dir, &v1);

    let key_type = changed(V1_LEFT, "title_id", ("title_id", "u64"));
    let key_type_right = changed(V1_RIGHT, "title_id", ("title_id", "u64"));
    let time_type = changed(V1_LEFT, "ts", ("ts", "u64"));
    let narrowed = changed(V1_LEFT, "profile_id", ("profile_id", "u32"));
    let narrowed_right = changed(V1_RIGHT, "profile_id", ("profile_id", "u32"));
    let narrowed_value = changed(V1_RIGHT, "duration_ms", ("duration_ms", "i32"));
    let to_string = changed(V1_LEFT, "row", ("row", "string"));
    let dropped_key: Vec<(&str, &str)> = V1_LEFT.iter().copied().filter(|(n, _)| *n != "title_id").collect();
    let cases: Vec<(&str, Job, &[&str])> = vec![
        (
            "key type",
            Job::new(&key_type, &key_type_right),
            &["input impressions, field `profile_id,title_id`", "a change to the key fields or their types"],
        ),
        (
            "key fields",
            Job {
                left_key: "[\"title_id\", \"profile_id\"]",
                right_key: "[\"title_id\", \"profile_id\"]",
                ..Job::new(V1_LEFT, V1_RIGHT)
            },
            &["input impressions", "key (`profile_id` u64, `title_id` u32) -> key (`title_id` u32, `profile_id` u64)"],
        ),
        (
            "dropped key",
            Job { left_key: "[\"profile_id\"]", right_key: "[\"profile_id\"]", ..Job::new(&dropped_key, V1_RIGHT) },
            &["input impressions, field `title_id`: `title_id` u32 -> absent", "a key field cannot be dropped"],
        ),
        ("time type", Job::new(&time_type, V1_RIGHT), &["field `ts`", "a change to the time field or its type"]),
        ("narrowing key", Job::new(&narrowed, &narrowed_right), &["field `profile_id,title_id`", "key fields"]),
        (
            "narrowing",
            Job::new(V1_LEFT, &narrowed_value),
            &[
                "input plays, field `duration_ms`: `duration_ms` u32 -> `duration_ms` i32",
                "a narrowing or other type change",
            ],
        ),
        (
            "other type change",
            Job::new(&to_string, V1_RIGHT),
            &["field `row`: `row` u32 -> `row` string", "a narrowing or other type change"],
        ),
        (
            "join bounds",
            Job { upper_ms: 7_200_000, ..Job::new(V1_LEFT, V1_RIGHT) },
            &["upper_ms was 3600000, is now 7200000"],
        ),
    ];
    let ckpt = digest(&dir.join("ckpt"));
    let out = digest(&dir.join("out"));
    assert!(!ckpt.is_empty() && !out.is_empty());
    for (what, job, says) in cases {
        let cfg = job.write(dir, "v2.toml", "out", true);
        let (code, stdout, stderr) = schema_check(&cfg);
        assert_eq!(code, Some(1), "{what}: schema check: {stdout}{stderr}");
        assert!(stdout.contains("incompatible with checkpoint"), "{what}: {stdout}");
        let r = run(&cfg, None);
        assert_eq!(r.status.code(), Some(2), "{what}: {}", r.stderr);
        for s in says {
            assert!(r.stderr.contains(s), "{what}: no {s:?} in {}", r.stderr);
            assert!(stdout.contains(s), "{what}: schema check: no {s:?} in {stdout}");
        }
        assert!(digest(&dir.join("ckpt")) == ckpt, "{what}: the checkpoint directory changed");
        assert!(digest(&dir.join("out")) == out, "{what}: the output directory changed");
    }
    // After all the refusals, v1 still finishes the job.
    let r = run(&v1, None);
    assert!(r.status.success(), "{}", r.stderr);
}

#[test]
fn i64_to_f64_is_refused_as_inexact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen(dir);
    let v1 = Job::new(V1_LEFT, V1_RIGHT).write(dir, "v1.toml", "out", true);
    // First widened u32 -> i64 (compatible) and checkpointed so, then i64 -> f64 (not).
    let i64s = changed(V1_RIGHT, "duration_ms", ("duration_ms", "i64"));
    let v2 = Job::new(V1_LEFT, &i64s).write(dir, "v2.toml", "out", true);
    let mut mid_run = false;
    for _ in 0..4 {
        checkpointed_and_killed(dir, &v1);
        let a = run(&v2, Some(1));
        if a.killed {
            mid_run = true;
            break;
        }
        assert!(a.status.success(), "{}", a.stderr);
    }
    assert!(mid_run, "v2 always ran to its end before its first checkpoint");
    let f64s = changed(V1_RIGHT, "duration_ms", ("duration_ms", "f64"));
    let v3 = Job::new(V1_LEFT, &f64s).write(dir, "v3.toml", "out", true);
    let ckpt = digest(&dir.join("ckpt"));
    let out = digest(&dir.join("out"));
    let r = run(&v3, None);
    assert_eq!(r.status.code(), Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("input plays, field `duration_ms`: `duration_ms` i64 -> `duration_ms` f64"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("i64 -> f64 is not exact"), "{}", r.stderr);
    assert!(digest(&dir.join("ckpt")) == ckpt, "the checkpoint directory changed");
    assert!(digest(&dir.join("out")) == out, "the output directory changed");
    // u32 -> f64 from v1 would have been fine; from the i64 checkpoint v2 resumes.
    let r = run(&v2, None);
    assert!(r.status.success(), "{}", r.stderr);
}

#[test]
fn schema_check_without_a_checkpoint_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen(dir);
    let v1 = Job::new(V1_LEFT, V1_RIGHT).write(dir, "v1.toml", "out", true);
    let (code, stdout, stderr) = schema_check(&v1);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stderr.contains("ckpt") && stderr.contains("no such checkpoint directory"), "{stderr}");
    assert!(!dir.join("ckpt").exists(), "schema check created the checkpoint directory");
    let nock = Job::new(V1_LEFT, V1_RIGHT).write(dir, "plain.toml", "out", false);
    let (code, _, stderr) = schema_check(&nock);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--checkpoint DIR"), "{stderr}");
}

//! Inputs of several schema versions at once (#13, item 4): CSV files whose headers
//! differ and JSON lines with missing or extra keys are mapped by name and alias to the
//! current schema, by `weft run` and `weft batch` alike. One test per rule:
//!
//! - columns in another order are matched by name;
//! - a field a file lacks takes its `default`, else NULL;
//! - a field renamed since the file was written is read through its `aliases`;
//! - extra columns and unknown JSON keys are ignored and counted (`extra_fields`);
//! - the rows of a CSV file with no column for a key or the time field are dead letters
//!   with the reason (and a warning names file and column); a JSON line without its
//!   time field is a dead letter; one without its key field has a NULL key (a missing
//!   JSON key is NULL, SEMANTICS.md), as with `"k": null`;
//! - a header with a column for a field under both its name and an alias fails the
//!   file naming both; a JSON line with both is a dead letter;
//! - files of two versions in one input join exactly as the batch join reads them.
//!
//! The schema: `plays` (CSV) k i64, ts i64, device string (default "tv"),
//! watched_ms i64 (alias duration_ms), note string; `imps` (JSON lines) k i64, ts i64.
//! A left join, lower 0, upper 10.

mod common;

use std::path::Path;

use common::job::{InputToml, JobToml};
use weft::metrics::Report;
use weft::oracle::batch;

const HEADER: &str = "plays.k,plays.ts,plays.device,plays.watched_ms,plays.note,imps.k,imps.ts";
const IMPS: &str = "{\"k\":1,\"ts\":100}\n{\"k\":2,\"ts\":200}\n";

/// The job over left files `plays` (name, bytes) and right JSON lines `imps`.
fn job(dir: &Path, plays: &[(&str, &[u8])], imps: &str, shards: u32) -> String {
    for (name, bytes) in plays {
        common::write(dir, name, bytes);
    }
    common::write(dir, "imps.jsonl", imps);
    let names: Vec<&str> = plays.iter().map(|(n, _)| *n).collect();
    let fields = [("k", "i64"), ("ts", "i64"), ("device", "string"), ("watched_ms", "i64"), ("note", "string")];
    let left = InputToml::files("plays", &names, &fields)
        .field_attr("device", "default = \"tv\"")
        .field_attr("watched_ms", "aliases = [\"duration_ms\"]");
    let right = InputToml::k_ts("imps", &["imps.jsonl"]).format("jsonl");
    JobToml::new(left, right).kind("left").window(0, 10).shards(shards).render()
}

/// Runs the job streaming (into `out`) and as a batch (into `out-batch`); asserts both
/// commit the same rows and counts, and returns the rows and the streaming report.
fn run_both(dir: &Path, text: &str) -> (Vec<String>, Report, batch::BatchReport) {
    let rep = common::run(text, dir);
    let job = common::job_from_toml(text, dir).unwrap();
    let b = batch::run(&job, &dir.join("out-batch"), true, 2).unwrap();
    let rows = common::output_rows(&dir.join("out"), HEADER);
    assert_eq!(rows, common::output_rows(&dir.join("out-batch"), HEADER), "weft run vs weft batch");
    // The batch join's parallel CSV reader (used for large files) reads them the same.
    let opts = batch::BatchOptions { parallel_csv_bytes_min: 0 };
    let p = batch::run_with(&job, &dir.join("out-batch-parallel"), true, 3, opts).unwrap();
    assert_eq!(rows, common::output_rows(&dir.join("out-batch-parallel"), HEADER), "parallel batch reader");
    assert_eq!(
        (p.left.dead_rows, p.left.extra_fields),
        (b.left.dead_rows, b.left.extra_fields),
        "parallel batch reader"
    );
    for (s, bs) in [(&rep.left, &b.left), (&rep.right, &b.right)] {
        assert_eq!(
            (s.rows_in, s.dead_letters, s.extra_fields),
            (bs.rows_in, bs.dead_rows, bs.extra_fields),
            "{}: rows in, dead letters, extra fields (run vs batch)",
            s.name
        );
    }
    (rows, rep, b)
}

/// A dead letter's (input, line, reason).
type Letter = (String, u64, String);

/// (input, line, reason) of every dead letter of a run's `out` and of the batch's
/// `out-batch` (which names its files by partition), each sorted.
fn dead(dir: &Path) -> (Vec<Letter>, Vec<Letter>) {
    let key = |d: &serde_json::Value| {
        (
            d["input"].as_str().unwrap().to_string(),
            d["line"].as_u64().unwrap(),
            d["reason"].as_str().unwrap().to_string(),
        )
    };
    let mut run: Vec<_> = common::dead_letters(&dir.join("out")).iter().map(key).collect();
    let mut batch = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("out-batch").join("dead")) {
        for f in rd.flatten() {
            for line in std::fs::read_to_string(f.path()).unwrap().lines() {
                batch.push(key(&serde_json::from_str(line).unwrap()));
            }
        }
    }
    run.sort();
    batch.sort();
    (run, batch)
}

fn sorted(rows: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = rows.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn columns_in_another_order_are_matched_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let plays: &[u8] = b"note,watched_ms,ts,device,k\na,5,100,phone,1\nb,6,205,tablet,2\n";
    let (rows, rep, _) = run_both(tmp.path(), &job(tmp.path(), &[("p.csv", plays)], IMPS, 1));
    assert_eq!(rows, sorted(&["1,100,phone,5,a,1,100", "2,205,tablet,6,b,,"]));
    assert_eq!((rep.left.dead_letters, rep.left.extra_fields), (0, 0));
}

#[test]
fn a_field_the_file_lacks_takes_its_default_or_null() {
    let tmp = tempfile::tempdir().unwrap();
    // No `device` (default "tv") and no `note` (no default: NULL).
    let plays: &[u8] = b"k,ts,watched_ms\n1,100,5\n2,205,6\n";
    let (rows, _, _) = run_both(tmp.path(), &job(tmp.path(), &[("p.csv", plays)], IMPS, 1));
    assert_eq!(rows, sorted(&["1,100,tv,5,,1,100", "2,205,tv,6,,,"]));
    // JSON lines alike: a missing key takes the default, `null` stays NULL.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let imps = "{\"k\":1,\"ts\":100}\n";
    let text = job(dir, &[("p.csv", b"k,ts,device,watched_ms,note\n1,100,,5,x\n")], imps, 1)
        .replace("paths = [\"p.csv\"]", "format = \"jsonl\"\npaths = [\"p.jsonl\"]");
    common::write(
        dir,
        "p.jsonl",
        "{\"k\":1,\"ts\":100,\"watched_ms\":5}\n{\"k\":1,\"ts\":101,\"device\":null,\"note\":\"n\"}\n",
    );
    let (rows, _, _) = run_both(dir, &text);
    assert_eq!(rows, sorted(&["1,100,tv,5,,1,100", "1,101,,,n,,"]));
}

#[test]
fn a_renamed_field_is_read_through_its_alias() {
    let tmp = tempfile::tempdir().unwrap();
    let plays: &[u8] = b"k,ts,device,duration_ms,note\n1,100,phone,5,a\n";
    let (rows, _, _) = run_both(tmp.path(), &job(tmp.path(), &[("p.csv", plays)], IMPS, 1));
    assert_eq!(rows, sorted(&["1,100,phone,5,a,1,100"]));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = job(dir, &[("p.csv", b"k,ts\n")], IMPS, 1)
        .replace("paths = [\"p.csv\"]", "format = \"jsonl\"\npaths = [\"p.jsonl\"]");
    common::write(dir, "p.jsonl", "{\"duration_ms\":7,\"k\":1,\"ts\":100}\n");
    let (rows, _, _) = run_both(dir, &text);
    assert_eq!(rows, sorted(&["1,100,tv,7,,1,100"]));
}

#[test]
fn extra_columns_and_unknown_keys_are_ignored_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    // Two extra columns, three rows: 6 values ignored.
    let plays: &[u8] =
        b"k,region,ts,device,watched_ms,note,ab\n1,eu,100,phone,5,a,x\n2,us,205,tv,6,b,y\n3,eu,306,tv,7,c,z\n";
    let imps = "{\"k\":1,\"ts\":100,\"src\":\"web\",\"v\":2}\n{\"k\":2,\"ts\":200}\n";
    let (rows, rep, b) = run_both(tmp.path(), &job(tmp.path(), &[("p.csv", plays)], imps, 2));
    assert_eq!(rows, sorted(&["1,100,phone,5,a,1,100", "2,205,tv,6,b,,", "3,306,tv,7,c,,"]));
    assert_eq!((rep.left.extra_fields, rep.right.extra_fields), (6, 2), "extra fields ignored");
    assert_eq!((b.left.extra_fields, b.right.extra_fields), (6, 2));
    assert_eq!(rep.left.dead_letters + rep.right.dead_letters, 0);
    // The text report and the JSON report say it too.
    let json = serde_json::to_value(&rep).unwrap();
    assert_eq!(json["left"]["extra_fields"], 6, "{json}");
    assert!(rep.table().contains("extra fields ignored"), "{}", rep.table());
}

#[test]
fn rows_without_a_key_or_time_column_are_dead_letters_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // File a has no key column, file b no time column, file c is whole: each row of a and
    // b is a dead letter; c's rows join.
    let a: &[u8] = b"ts,device,watched_ms,note\n100,phone,5,a\n101,tv,6,b\n";
    let b: &[u8] = b"k,device,watched_ms,note\n1,phone,5,a\n";
    let c: &[u8] = b"k,ts,device,watched_ms,note\n1,100,phone,5,a\n";
    // JSON: a line without `k` is a NULL key, as `"k": null` is (SEMANTICS.md: a
    // missing JSON key is NULL): unmatched, not dead; a line without `ts` is dead.
    let imps = "{\"ts\":100}\n{\"k\":null,\"ts\":100}\n{\"k\":1}\n{\"k\":1,\"ts\":100}\n";
    let (rows, rep, _) = run_both(dir, &job(dir, &[("a.csv", a), ("b.csv", b), ("c.csv", c)], imps, 2));
    assert_eq!(rows, sorted(&["1,100,phone,5,a,1,100"]));
    assert_eq!((rep.left.rows_in, rep.left.dead_letters), (1, 3));
    assert_eq!((rep.right.rows_in, rep.right.dead_letters, rep.right.unmatched), (3, 1, 2));
    let (run, batch) = dead(dir);
    // Lines count from 1, the CSV header being line 1.
    let letter = |input: &str, line: u64, reason: &str| (input.to_string(), line, reason.to_string());
    let mut want = vec![
        letter("imps", 3, "no key `ts`, the time field of input `imps`"),
        letter("plays", 2, "the file has no column `k`, the key field of input `plays`"),
        letter("plays", 3, "the file has no column `k`, the key field of input `plays`"),
        letter("plays", 2, "the file has no column `ts`, the time field of input `plays`"),
    ];
    want.sort();
    assert_eq!(run, want, "dead letters of weft run");
    assert_eq!(batch, want, "dead letters of weft batch");

    // The operator is told at once, naming the file and the column.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::write(tmp.path(), "job.toml", job(tmp.path(), &[("a.csv", a)], IMPS, 1));
    let o = common::weft_run(&cfg, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "a.csv: header has no column `k`, the key field of input `plays`: every row of the file is a dead letter"
        ),
        "{stderr}"
    );
}

#[test]
fn a_field_answered_by_its_name_and_an_alias_is_ambiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let plays: &[u8] = b"k,ts,watched_ms,duration_ms\n1,100,5,6\n";
    let cfg = common::write(tmp.path(), "job.toml", job(tmp.path(), &[("p.csv", plays)], IMPS, 1));
    let o = common::weft_run(&cfg, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("p.csv")
            && stderr.contains("two columns for field `watched_ms` (columns 3 `watched_ms` and 4 `duration_ms`"),
        "{stderr}"
    );
    let o = common::weft_out(&[
        "batch",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        tmp.path().join("b").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("two columns for field `watched_ms`"));

    // A JSON line with both keys: that line is a dead letter, the others are read.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let text = job(dir, &[("p.csv", b"k,ts\n")], IMPS, 1)
        .replace("paths = [\"p.csv\"]", "format = \"jsonl\"\npaths = [\"p.jsonl\"]");
    common::write(
        dir,
        "p.jsonl",
        "{\"k\":1,\"ts\":100,\"watched_ms\":5,\"duration_ms\":6}\n{\"k\":1,\"ts\":100,\"duration_ms\":6}\n",
    );
    let (rows, rep, _) = run_both(dir, &text);
    assert_eq!(rows, sorted(&["1,100,tv,6,,1,100"]));
    assert_eq!(rep.left.dead_letters, 1);
    let (run, _) = dead(dir);
    assert_eq!(run[0].2, "keys `watched_ms` and `duration_ms` both answer to field `watched_ms`", "{run:?}");
}

#[test]
fn files_of_two_versions_in_one_input_join_as_the_batch_does() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // v1: before `device` and `note` existed, `watched_ms` still called `duration_ms`.
    let mut v1 = b"k,ts,duration_ms\n".to_vec();
    // v2: reordered, with an extra column a v3 producer added.
    let mut v2 = b"note,device,k,watched_ms,ts,region\n".to_vec();
    let mut imps = String::new();
    let mut want = Vec::new();
    for i in 0..400i64 {
        let (k, ts) = (i % 37, 1000 + i * 10);
        if i % 2 == 0 {
            v1.extend_from_slice(format!("{k},{ts},{i}\n").as_bytes());
        } else {
            v2.extend_from_slice(format!("n{i},phone,{k},{i},{ts},eu\n").as_bytes());
        }
        if i % 3 == 0 {
            imps.push_str(&format!("{{\"k\":{k},\"ts\":{}}}\n", ts + 5));
        }
    }
    let text = job(dir, &[("v1.csv", &v1), ("v2.csv", &v2)], &imps, 2);
    let (rows, rep, _) = run_both(dir, &text);
    // Every left row matches exactly the imps row 5 ms after it written for i % 3 == 0
    // (same key and time, i.e. the same i: keys repeat every 37, times every 10 ms).
    for i in 0..400i64 {
        let (k, ts) = (i % 37, 1000 + i * 10);
        let (device, note) = if i % 2 == 0 { ("tv", String::new()) } else { ("phone", format!("n{i}")) };
        let right = if i % 3 == 0 { format!("{k},{}", ts + 5) } else { ",".to_string() };
        want.push(format!("{k},{ts},{device},{i},{note},{right}"));
    }
    want.sort();
    common::assert_same_rows("two schema versions in one input", &rows, &want, "");
    assert_eq!((rep.left.rows_in, rep.left.dead_letters, rep.left.extra_fields), (400, 0, 200));
}

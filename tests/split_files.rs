//! Guards split files (src/source/split.rs): a CSV or JSON-lines file that every shard
//! reads in chunks gives exactly the answer of the batch join, which reads each file
//! start to end: the same joined rows, the same late rows (lateness is decided in
//! file order across chunk boundaries) and the same dead letters with the same line
//! numbers. Chunks of 1 KiB make hundreds of boundaries; the data put late rows,
//! an event-time jump, malformed rows, blank lines and quoted cells with line breaks
//! (records that span a chunk boundary) right next to them. Also: a split job
//! killed (-9) under 2 shards and resumed under 3 and then 1 still gives the answer.

mod common;

use common::job::{InputToml, JobToml};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt::Write as _;
use std::path::Path;

/// The validate report as JSON, for a failure message.
fn shown(v: &weft::oracle::diff::ValidateReport) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

const FIELDS: &[(&str, &str)] = &[("k", "i64"), ("ts", "i64"), ("s", "string")];

/// A text cell, now and then with a comma, a quote or a line break in it.
fn text(rng: &mut SmallRng, i: usize) -> String {
    match rng.gen_range(0..10) {
        0 => format!("a,b{i}"),
        1 => format!("line\nbreak {i}"),
        2 => format!("q\"{i}\"\n\nz"),
        _ => format!("t{i}"),
    }
}

/// `n` rows of one input, CSV or JSON lines, with disorder, late rows, a jump of the
/// event time half-way (everything just after it is late) and bad lines.
fn input(seed: u64, n: usize, jsonl: bool) -> String {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = String::new();
    if !jsonl {
        out.push_str("k,ts,s\n");
    }
    for i in 0..n {
        let mut ts = (i as i64) * 10 + rng.gen_range(0..200);
        if rng.gen_range(0..25) == 0 {
            ts -= rng.gen_range(200..3000); // late, or nearly
        }
        if i == n / 2 {
            ts += 50_000; // the rows after it are late until the file catches up
        }
        let k = rng.gen_range(0..40);
        let s = text(&mut rng, i);
        match rng.gen_range(0..60) {
            0 => out.push_str(if jsonl { "{\"k\": 1, \"ts\": \"nope\"}\n" } else { "1,nope,x\n" }),
            1 => out.push('\n'),
            _ => {}
        }
        if jsonl {
            let _ = writeln!(out, "{}", serde_json::json!({ "k": k, "ts": ts, "s": s }));
        } else {
            let _ = writeln!(out, "{k},{ts},\"{}\"", s.replace('"', "\"\""));
        }
    }
    out
}

fn job(format: &str, shards: u32, out: &str, engine: &str) -> JobToml {
    let ext = if format == "jsonl" { "jsonl" } else { "csv" };
    let l = InputToml::files("l", &[format!("l.{ext}")], FIELDS).format(format);
    let r = InputToml::files("r", &[format!("r.{ext}"), format!("r2.{ext}")], FIELDS).format(format);
    JobToml::new(l, r)
        .kind("full")
        .window(-300, 500)
        .max_out_of_orderness_ms(300)
        .allowed_lateness_ms(100)
        .output(out)
        .shards(shards)
        .engine(&format!("file_split_kib = 1\nbatch_events = 64\nstate_bucket_ms = 500\n{engine}"))
}

fn write_inputs(dir: &Path, format: &str, n: usize) {
    let jsonl = format == "jsonl";
    let ext = if jsonl { "jsonl" } else { "csv" };
    common::write(dir, &format!("l.{ext}"), input(1, n, jsonl));
    common::write(dir, &format!("r.{ext}"), input(2, n, jsonl));
    common::write(dir, &format!("r2.{ext}"), input(3, n / 50, jsonl)); // below a chunk: read whole
}

/// Runs the job and validates its output against the batch join of the same files.
fn assert_matches_batch(dir: &Path, text: &str, out: &str) {
    let report = common::run(text, dir);
    assert!(
        report.left.late > 0 && report.right.late > 0 && report.left.dead_letters > 0,
        "the data must have late and dead rows"
    );
    let job = common::job_from_toml(text, dir).unwrap();
    let v = weft::oracle::diff::validate_job(&job, &dir.join(out), 10).unwrap();
    assert!(v.is_equal(), "split read differs from the batch answer:\n{}\n--- config ---\n{text}", shown(&v));
}

#[test]
fn split_csv_equals_the_batch_answer_on_2_and_3_shards() {
    let t = tempfile::tempdir().unwrap();
    write_inputs(t.path(), "csv", 3000);
    for shards in [2, 3] {
        let out = format!("out-{shards}");
        assert_matches_batch(t.path(), &job("csv", shards, &out, "").render(), &out);
    }
}

#[test]
fn split_jsonl_equals_the_batch_answer() {
    let t = tempfile::tempdir().unwrap();
    write_inputs(t.path(), "jsonl", 3000);
    assert_matches_batch(t.path(), &job("jsonl", 2, "out", "").render(), "out");
}

#[test]
fn a_split_file_of_one_chunk_per_shard_or_less_still_equals_the_batch_answer() {
    // Few, large chunks: a shard may get no chunk of a file at all.
    let t = tempfile::tempdir().unwrap();
    write_inputs(t.path(), "csv", 40);
    let text = job("csv", 3, "out", "").render().replace("file_split_kib = 1", "file_split_kib = 2");
    let report = common::run(&text, t.path());
    let job = common::job_from_toml(&text, t.path()).unwrap();
    let v = weft::oracle::diff::validate_job(&job, &t.path().join("out"), 10).unwrap();
    assert!(v.is_equal(), "{}\nrows in: {}", shown(&v), report.left.rows_in);
}

#[test]
fn a_split_job_killed_and_resumed_under_other_shard_counts_equals_the_batch_answer() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    write_inputs(dir, "csv", 200_000);
    let ck = "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 10\ncheckpoints_retained = 3";
    let mut killed = 0;
    for (i, shards) in [2u32, 3, 1].into_iter().enumerate() {
        let cfg = job("csv", shards, "out", ck).write(dir, &format!("job-{i}.toml"));
        if i < 2 && common::crash::run_killed_at_checkpoint(&cfg, 2) {
            killed += 1;
        } else if i == 2 {
            let out = common::weft_run(&cfg, &[]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        } else {
            break; // ran to the end before the kill: the answer is still checked below
        }
    }
    eprintln!("split kill test: {killed} kills");
    let text = job("csv", 1, "out", ck).render();
    let job = common::job_from_toml(&text, dir).unwrap();
    let v = weft::oracle::diff::validate_job(&job, &dir.join("out"), 10).unwrap();
    assert!(v.is_equal(), "after {killed} kills: {}", shown(&v));
}

/// A checkpointed split job over 200k rows per file, killed at its second checkpoint
/// (started over when it ended first); returns the config.
fn killed_split_job(dir: &Path) -> std::path::PathBuf {
    write_inputs(dir, "csv", 200_000);
    let ck = "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 10\ncheckpoints_retained = 3";
    let cfg = job("csv", 2, "out", ck).write(dir, "job.toml");
    for _ in 0..4 {
        if common::crash::run_killed_at_checkpoint(&cfg, 2) {
            return cfg;
        }
        let _ = std::fs::remove_dir_all(dir.join("ckpt"));
        let _ = std::fs::remove_dir_all(dir.join("out"));
    }
    panic!("the job always ended before its second checkpoint: the input is too small for this host");
}

fn restart(cfg: &Path) -> (i32, String) {
    let out = common::weft_out(&["run", "--config", cfg.to_str().unwrap(), "--quiet"]);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_batch_answer(dir: &Path, cfg: &Path) {
    let text = std::fs::read_to_string(cfg).unwrap();
    let job = common::job_from_toml(&text, dir).unwrap();
    let v = weft::oracle::diff::validate_job(&job, &dir.join("out"), 10).unwrap();
    assert!(v.is_equal(), "{}", shown(&v));
}

#[test]
fn a_split_file_edited_before_its_checkpoint_position_is_refused_and_resumes_when_put_back() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let cfg = killed_split_job(dir);
    let input = dir.join("l.csv");
    let original = std::fs::read(&input).unwrap();
    let mut edited = original.clone();
    let at = original.iter().position(|&c| c == b'\n').unwrap() + 1; // the first row's key
    edited[at] = if edited[at] == b'9' { b'1' } else { b'9' };
    std::fs::write(&input, &edited).unwrap();
    let (code, err) = restart(&cfg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("l.csv") && err.contains("differ"), "{err}");
    std::fs::write(&input, &original).unwrap();
    let (code, err) = restart(&cfg);
    assert_eq!(code, 0, "{err}");
    assert_batch_answer(dir, &cfg);
}

#[test]
fn a_split_file_appended_after_the_checkpoint_resumes_with_the_answer_over_the_longer_file() {
    // The longer file has more chunks than the checkpoint knew: the last known chunk
    // now stops at its nominal end, and the chunks after it are new.
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let cfg = killed_split_job(dir);
    let more = input(9, 5_000, false);
    let rows = more.split_once('\n').unwrap().1; // no second header
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("r.csv")).unwrap();
    std::io::Write::write_all(&mut f, rows.as_bytes()).unwrap();
    drop(f);
    let (code, err) = restart(&cfg);
    assert_eq!(code, 0, "{err}");
    assert_batch_answer(dir, &cfg);
}

//! Guards the output targets: a directory that already holds output is refused
//! unless `--force`, which replaces all of it (no stale part files from a run with
//! more shards); unrelated files are left alone; a run that failed before writing
//! anything does not leave "output" that blocks the next run; `path = "-"` writes
//! the header and rows to stdout (the report to stderr) and `path = "none"` only
//! counts.

mod common;

use std::path::Path;

use common::job::JobToml;

const HEADER: &str = "l.k,l.ts,r.k,r.ts";

fn config(dir: &Path, out: &str, shards: u32) -> std::path::PathBuf {
    let job = JobToml::k_ts(&["l.csv"], &["r.csv"]).kind("full").window(0, 5).output(out).shards(shards);
    job.write(dir, &format!("job-{shards}.toml"))
}

fn inputs(dir: &Path) {
    let mut l = String::from("k,ts\n");
    let mut r = String::from("k,ts\n");
    for i in 0..40 {
        l += &format!("{},{}\n", i % 9, i * 3);
        r += &format!("{},{}\n", i % 11, i * 3 + 2);
    }
    common::write(dir, "l.csv", l);
    common::write(dir, "r.csv", r);
}

fn part_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("part-"))
        .collect();
    v.sort();
    v
}

#[test]
fn existing_output_is_refused_without_force_and_replaced_with_it() {
    let tmp = tempfile::tempdir().unwrap();
    inputs(tmp.path());
    let out = tmp.path().join("out");
    let three = config(tmp.path(), "out", 3);
    let o = common::weft_run(&three, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first = common::output_rows(&out, HEADER);
    assert!(part_files(&out).len() >= 2, "the 3-shard run should write several part files: {:?}", part_files(&out));
    common::write(&out, "NOTES.txt", "mine");

    let o = common::weft_run(&three, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--force"), "stderr `{stderr}` should say how to replace the output");
    assert_eq!(common::output_rows(&out, HEADER), first, "a refused run must not touch the output");

    let one = config(tmp.path(), "out", 1);
    let o = common::weft_run(&one, &["--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(part_files(&out), ["part-0.csv"], "--force must remove the part files of the earlier run");
    assert_eq!(common::output_rows(&out, HEADER), first, "1 shard and 3 shards agree");
    assert_eq!(std::fs::read_to_string(out.join("NOTES.txt")).unwrap(), "mine", "unrelated files stay");
}

/// A run that fails before reading a row (here: an input file is missing) must not
/// leave anything that counts as output: fixing the input and running again must
/// work without `--force`.
#[test]
fn a_run_that_failed_before_writing_does_not_block_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    inputs(tmp.path());
    let r = std::fs::read(tmp.path().join("r.csv")).unwrap();
    std::fs::remove_file(tmp.path().join("r.csv")).unwrap();
    let cfg = config(tmp.path(), "out", 2);
    let o = common::weft_run(&cfg, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::write(tmp.path().join("r.csv"), r).unwrap();
    let o = common::weft_run(&cfg, &[]);
    assert!(o.status.success(), "the rerun after fixing the input failed: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn stdout_output_is_header_then_rows() {
    let tmp = tempfile::tempdir().unwrap();
    inputs(tmp.path());
    let o = common::weft_run(&config(tmp.path(), "-", 2), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8(o.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(HEADER));
    let mut rows: Vec<String> = lines.map(str::to_string).collect();
    rows.sort();
    let o = common::weft_run(&config(tmp.path(), "out", 1), &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(rows, common::output_rows(&tmp.path().join("out"), HEADER));
    assert!(String::from_utf8_lossy(&o.stdout).contains("matched pairs"), "the report goes to stdout for a directory");
}

#[test]
fn none_output_counts_only() {
    let tmp = tempfile::tempdir().unwrap();
    inputs(tmp.path());
    let cfg = config(tmp.path(), "none", 2);
    let rep = common::run(&std::fs::read_to_string(&cfg).unwrap(), tmp.path());
    assert!(rep.output_rows > 0);
    assert!(!tmp.path().join("none").exists());
    let o = common::weft_run(&config(tmp.path(), "out", 2), &[]);
    assert!(o.status.success());
    assert_eq!(rep.output_rows as usize, common::output_rows(&tmp.path().join("out"), HEADER).len());
}

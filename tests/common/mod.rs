//! Helpers shared by the integration tests: build a job from TOML text, run it in
//! process or through the `weft` binary, and read an output directory back as
//! multisets of lines (`part-*.csv` minus headers, `late/`, `dead/`).
//!
//! Nothing here knows the join semantics; that is `model.rs`. Job configs that
//! differ only in a few values are built with `job.rs`; the `kill -9` tests' seeded
//! random source, generated data sets and killed attempts are `crash.rs`.
#![allow(dead_code)]

pub mod crash;
pub mod job;
pub mod model;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use weft::config::{ConfigError, Job, JobConfig};
use weft::engine::{self, EngineError, RunOptions};
use weft::metrics::Report;

/// A TOML string literal (quoted and escaped) for `s`, e.g. a path.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML array of string literals.
pub fn toml_paths(paths: &[PathBuf]) -> String {
    let items: Vec<String> = paths.iter().map(|p| toml_str(&p.display().to_string())).collect();
    format!("[{}]", items.join(", "))
}

/// Parses and resolves a config as if it were the file `base/job.toml`.
pub fn job_from_toml(text: &str, base: &Path) -> Result<Job, ConfigError> {
    let path = base.join("job.toml");
    JobConfig::parse(text, &path)?.resolve(&path, base)
}

/// Longest a test lets one engine run or one `weft` process take before it calls it
/// a hang (`WEFT_TEST_TIMEOUT_S` overrides). A hang then fails the test instead of
/// blocking the whole suite.
pub fn timeout() -> Duration {
    let s = std::env::var("WEFT_TEST_TIMEOUT_S").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    Duration::from_secs(s)
}

/// Runs the job in process (on a helper thread, so that a hang fails the test after
/// [`timeout`]; the hung run's threads then die with the test process).
pub fn try_run(text: &str, base: &Path, opts: &RunOptions) -> Result<Report, EngineError> {
    try_run_within(text, base, opts, timeout())
}

/// [`try_run`] with an explicit hang timeout.
pub fn try_run_within(text: &str, base: &Path, opts: &RunOptions, limit: Duration) -> Result<Report, EngineError> {
    let job = job_from_toml(text, base).unwrap_or_else(|e| panic!("config does not resolve: {e}\n{text}"));
    let (tx, rx) = mpsc::channel();
    let opts = opts.clone();
    std::thread::spawn(move || {
        let _ = tx.send(engine::run(&job, &opts));
    });
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the engine did not finish within {limit:?} (a hang?)\n--- config ---\n{text}")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the engine run panicked\n--- config ---\n{text}"),
    }
}

/// Runs the job in process; panics (with the config) when it fails.
pub fn run(text: &str, base: &Path) -> Report {
    try_run(text, base, &RunOptions::default()).unwrap_or_else(|e| panic!("job failed: {e}\n--- config ---\n{text}"))
}

/// The `weft` binary.
pub fn weft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weft"))
}

/// `weft run --config CFG --quiet EXTRA...`; see [`weft_out`].
pub fn weft_run(cfg: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--config", cfg.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    weft_out(&args)
}

/// Runs the binary and returns its output (never panics on a non-zero status);
/// kills it and panics after [`timeout`].
pub fn weft_out(args: &[&str]) -> Output {
    let child = weft()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the weft binary");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout()) {
        Ok(out) => out.expect("cannot wait for the weft binary"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped
            // (the waiting thread has not returned), so the pid cannot be reused.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = rx.recv_timeout(Duration::from_secs(10));
            panic!("`weft {}` did not finish within {:?} (a hang?); killed", args.join(" "), timeout())
        }
    }
}

pub fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

fn files_matching(dir: &Path, prefix: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy().into_owned();
                p.is_file() && n.starts_with(prefix) && n.ends_with(ext)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn read_string(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("{} is not UTF-8: {e}", p.display()))
}

/// Lines of CSV files with a header: asserts every file starts with `header` (when
/// given) and returns the other lines of all files, sorted.
fn csv_rows(files: &[PathBuf], header: Option<&str>) -> Vec<String> {
    let mut rows = Vec::new();
    for f in files {
        let text = read_string(f);
        assert!(text.is_empty() || text.ends_with('\n'), "{} does not end with a newline", f.display());
        let mut lines = text.lines();
        let first = lines.next();
        if let (Some(h), Some(first)) = (header, first) {
            assert_eq!(first, h, "header of {}", f.display());
        }
        rows.extend(lines.map(str::to_string));
    }
    rows.sort();
    rows
}

/// The joined rows of an output directory (`part-*.csv` minus headers), sorted.
pub fn output_rows(dir: &Path, header: &str) -> Vec<String> {
    csv_rows(&files_matching(dir, "part-", ".csv"), Some(header))
}

/// The late rows of input `name` (`late/<name>-*.csv` minus headers), sorted.
pub fn late_rows(dir: &Path, name: &str, header: &str) -> Vec<String> {
    csv_rows(&files_matching(&dir.join("late"), &format!("{name}-"), ".csv"), Some(header))
}

/// The late rows of a JSONL input, converted to CSV lines with the fields in `fields`
/// order (NULL or missing = empty; integers only), sorted.
pub fn late_rows_jsonl(dir: &Path, name: &str, fields: &[&str]) -> Vec<String> {
    let files = files_matching(&dir.join("late"), &format!("{name}-"), ".jsonl");
    let mut rows: Vec<String> =
        jsonl_objects(&files).iter().map(|(f, line, obj)| int_cells(f, line, obj, fields)).collect();
    rows.sort();
    rows
}

/// The joined rows of a JSONL output directory (`part-*.jsonl`), converted to CSV
/// lines with the values in `columns` order (NULL = empty; integers only), sorted.
/// Asserts every object has exactly these keys.
pub fn output_rows_jsonl(dir: &Path, columns: &[String]) -> Vec<String> {
    let mut rows = Vec::new();
    for (f, line, obj) in jsonl_objects(&files_matching(dir, "part-", ".jsonl")) {
        let mut keys: Vec<&String> = obj.keys().collect();
        let mut want: Vec<&String> = columns.iter().collect();
        keys.sort();
        want.sort();
        assert_eq!(keys, want, "{}: keys of {line}", f.display());
        rows.push(int_cells(&f, &line, &obj, columns));
    }
    rows.sort();
    rows
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

/// (file, line, object) for every line of `files`; panics on bad JSON or a non-object.
fn jsonl_objects(files: &[PathBuf]) -> Vec<(PathBuf, String, JsonObject)> {
    let mut v = Vec::new();
    for f in files {
        for line in read_string(f).lines() {
            let value: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: bad JSON {line:?}: {e}", f.display()));
            let serde_json::Value::Object(obj) = value else { panic!("{}: not an object: {line}", f.display()) };
            v.push((f.clone(), line.to_string(), obj));
        }
    }
    v
}

/// The values of `keys` in `obj` (`line` of file `f`) as a CSV line: missing or NULL
/// is an empty cell; any other value must be an integer.
fn int_cells<K: AsRef<str>>(f: &Path, line: &str, obj: &JsonObject, keys: &[K]) -> String {
    let cells: Vec<String> = keys
        .iter()
        .map(|k| match obj.get(k.as_ref()) {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(x) => x
                .as_i64()
                .unwrap_or_else(|| panic!("{}: `{}` not an integer: {line}", f.display(), k.as_ref()))
                .to_string(),
        })
        .collect();
    cells.join(",")
}

/// Every dead letter of an output directory (`dead/part-*.jsonl`).
pub fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    let mut v = Vec::new();
    for f in files_matching(&dir.join("dead"), "part-", ".jsonl") {
        for line in read_string(&f).lines() {
            v.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: bad JSON {line:?}: {e}", f.display())));
        }
    }
    v
}

/// A readable difference of two multisets of lines ("" when equal).
pub fn multiset_diff(actual: &[String], expected: &[String]) -> String {
    let mut count: BTreeMap<&str, i64> = BTreeMap::new();
    for a in actual {
        *count.entry(a).or_default() += 1;
    }
    for e in expected {
        *count.entry(e).or_default() -= 1;
    }
    let mut s = String::new();
    for (line, n) in count {
        if n > 0 {
            s += &format!("  extra   x{n}: {line}\n");
        } else if n < 0 {
            s += &format!("  missing x{}: {line}\n", -n);
        }
    }
    s
}

/// Asserts two sorted multisets of lines are equal, showing the difference.
#[track_caller]
pub fn assert_same_rows(what: &str, actual: &[String], expected: &[String], context: &str) {
    if actual != expected {
        panic!(
            "{what}: {} rows, expected {}; difference (extra = engine only, missing = expected only):\n{}\n{context}",
            actual.len(),
            expected.len(),
            multiset_diff(actual, expected)
        );
    }
}

/// Flips one byte in the middle of a bucket copy that checkpoint `n` wrote itself (older
/// packs may be shared with checkpoint `n - 1`); returns that bucket's manifest entry.
pub fn corrupt_own_pack(ckpt: &Path, n: u64) -> weft::state::copy::BucketCopy {
    let m = weft::checkpoint::read_manifest(ckpt, n).unwrap();
    let b = m
        .shards
        .iter()
        .flat_map(|s| &s.buckets)
        .find(|b| b.file.ends_with(&format!("c{n}.pack")))
        .expect("checkpoint n wrote a pack")
        .clone();
    let p = ckpt.join(&b.file);
    let mut bytes = std::fs::read(&p).unwrap();
    // Inside that bucket's copy (packs have alignment padding in between).
    bytes[(b.offset + b.bytes / 2) as usize] ^= 0x5a;
    std::fs::write(&p, bytes).unwrap();
    b
}

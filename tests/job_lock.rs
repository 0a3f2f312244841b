//! Guards the one-writer rule of a job's directories: two `weft run`s started together
//! on one job (checkpoint, state and output directories, or the output directory
//! alone) never both run: exactly one does, the other exits 2 at once naming the
//! directory and the holder's pid. A `weft batch` into an output directory a run
//! holds is refused the same way. The lock is an `flock`, released by the kernel when
//! its holder dies: after `kill -9` of a holder the next run starts (and resumes).
//!
//! `WEFT_BIN` may name another weft binary (to show these tests fail without the lock).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::job::JobToml;

fn bin() -> Command {
    Command::new(std::env::var("WEFT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_weft").to_string()))
}

fn spawn(args: &[&str]) -> Child {
    bin().args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn run_args(cfg: &Path) -> Vec<String> {
    vec!["run".into(), "--config".into(), cfg.display().to_string(), "--quiet".into()]
}

/// A generator job paced to run for about two seconds.
fn paced_job(dir: &Path, engine: &str) -> PathBuf {
    JobToml::generated("seed = 3, events = 16000, keys = 200, rate_limit = 8000.0, partitions = 2")
        .shards(2)
        .engine(engine)
        .write(dir, "job.toml")
}

fn wait_all(children: Vec<Child>) -> Vec<Output> {
    let deadline = Instant::now() + common::timeout();
    children
        .into_iter()
        .map(|mut c| {
            while c.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "a weft run did not finish (a hang?)");
                std::thread::sleep(Duration::from_millis(20));
            }
            c.wait_with_output().unwrap()
        })
        .collect()
}

/// Exactly one of `outs` ran (exit 0) and every other exited 2 naming the lock.
fn exactly_one_ran(outs: &[Output], dir_hint: &str) {
    let ok = outs.iter().filter(|o| o.status.success()).count();
    let all: Vec<String> =
        outs.iter().map(|o| format!("exit {:?}: {}", o.status.code(), String::from_utf8_lossy(&o.stderr))).collect();
    assert_eq!(ok, 1, "exactly one run must succeed:\n{}", all.join("\n"));
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("in use by another weft process") && err.contains("pid "), "{err}");
        assert!(err.contains(dir_hint), "the message should name the directory ({dir_hint}): {err}");
    }
}

#[test]
fn two_runs_on_one_checkpointed_job_never_both_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = paced_job(tmp.path(), "checkpoint_dir = \"ck\"\ncheckpoint_interval_ms = 100\nstate_dir = \"st\"");
    let args = run_args(&cfg);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outs = wait_all(vec![spawn(&args), spawn(&args)]);
    exactly_one_ran(&outs, "ck");
    let v = common::weft_out(&["checkpoints", "verify", tmp.path().join("ck").to_str().unwrap()]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

#[test]
fn two_runs_into_one_output_directory_never_both_run_and_batch_waits_its_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = paced_job(tmp.path(), "");
    let args = run_args(&cfg);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = spawn(&args);
    let second = spawn(&args);
    // While a run holds the output directory, a batch job into it is refused too.
    let lock = tmp.path().join("out/.weft.lock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&lock).map_or(true, |s| s.is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let batch = common::weft_out(&[
        "batch",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        tmp.path().join("out").to_str().unwrap(),
        "--force",
    ]);
    let outs = wait_all(vec![first, second]);
    exactly_one_ran(&outs, "out");
    let err = String::from_utf8_lossy(&batch.stderr);
    assert_eq!(batch.status.code(), Some(2), "a batch into a held output directory must be refused: {err}");
    assert!(err.contains("in use by another weft process"), "{err}");
}

#[test]
fn a_lock_left_by_a_killed_run_does_not_block_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = paced_job(tmp.path(), "checkpoint_dir = \"ck\"\ncheckpoint_interval_ms = 50");
    let args = run_args(&cfg);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut holder = spawn(&args);
    // Kill it once it holds its locks and has completed a checkpoint.
    let deadline = Instant::now() + Duration::from_secs(20);
    let has_manifest = || {
        std::fs::read_dir(tmp.path().join("ck"))
            .map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".json")))
            .unwrap_or(false)
    };
    while !has_manifest() {
        assert!(Instant::now() < deadline, "no checkpoint within 20 s");
        assert!(holder.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(10));
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(tmp.path().join("ck/.weft.lock").exists() || std::env::var("WEFT_BIN").is_ok());
    let o = common::weft_run(&cfg, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "the run after a kill -9 must start (and resume): {err}");
    assert!(err.contains("resuming from checkpoint"), "{err}");
}

//! Guards three small promises of the command line and the checkpoint writer:
//! `engine.state_memory_mb` without `engine.state_dir` warns that it has no effect;
//! `weft checkpoints list|verify` of a missing directory exits 2 naming it; and a
//! checkpoint that fails on a full disk (the debug build's ENOSPC hook) removes its
//! partial pack instead of leaving a short or empty file behind.
//!
//! `WEFT_BIN` may name another weft binary (to show these tests fail without the fix).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::job::JobToml;

fn bin() -> Command {
    Command::new(std::env::var("WEFT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_weft").to_string()))
}

#[test]
fn state_memory_mb_without_state_dir_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let l = common::write(tmp.path(), "l.csv", "k,ts\n1,1\n");
    let r = common::write(tmp.path(), "r.csv", "k,ts\n1,1\n");
    let cfg = JobToml::k_ts(&[&l], &[&r]).engine("state_memory_mb = 64").write(tmp.path(), "job.toml");
    let o = bin().args(["run", "--config", cfg.to_str().unwrap(), "--quiet"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(err.contains("state_memory_mb") && err.contains("no effect"), "{err}");
    let cfg =
        JobToml::k_ts(&[&l], &[&r]).engine("state_memory_mb = 64\nstate_dir = \"st\"").write(tmp.path(), "job2.toml");
    let o = bin().args(["run", "--config", cfg.to_str().unwrap(), "--quiet", "--force"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("no effect"), "{err}");
}

#[test]
fn checkpoints_of_a_missing_directory_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nonexistent");
    for action in ["list", "verify"] {
        let o = bin().args(["checkpoints", action, missing.to_str().unwrap()]).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{action}: {err}");
        assert!(err.contains("nonexistent") && err.contains("does not exist"), "{action}: {err}");
    }
    assert!(!missing.exists(), "inspecting must not create the directory");
}

#[test]
fn a_checkpoint_failing_on_a_full_disk_leaves_no_partial_pack() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = JobToml::generated("seed = 3, events = 40000, keys = 20000, rate_limit = 8000.0, partitions = 1")
        .engine("checkpoint_dir = \"ck\"\ncheckpoint_interval_ms = 100")
        .write(tmp.path(), "job.toml");
    let mut c = bin()
        .args(["run", "--config", cfg.to_str().unwrap(), "--quiet"])
        .env("WEFT_FAULT_ENOSPC_FROM_CHECKPOINT", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let shard = tmp.path().join("ck/state/shard-0");
    // Let a few checkpoints fail, then kill the run so garbage collection cannot help.
    let deadline = Instant::now() + Duration::from_secs(30);
    let manifests = || {
        std::fs::read_dir(tmp.path().join("ck"))
            .map(|rd| rd.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
            .unwrap_or(0)
    };
    while manifests() < 2 {
        assert!(Instant::now() < deadline && c.try_wait().unwrap().is_none(), "no checkpoints");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(1200));
    c.kill().unwrap();
    c.wait().unwrap();
    let packs: Vec<String> = std::fs::read_dir(&shard)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".pack"))
        .collect();
    let numbers: Vec<u64> = packs.iter().filter_map(|n| n[1..n.len() - 5].parse::<u64>().ok()).collect();
    // The kill may land while the newest checkpoint is still being written (its pack is
    // there until its write fails): that one is in flight, not failed (a later attempt
    // at that number replaces it; GC removes it once a newer manifest exists). Every
    // earlier one from 3 on has failed by then.
    let newest = numbers.iter().copied().max().unwrap_or(0);
    let failed: Vec<u64> = numbers.iter().copied().filter(|&k| k >= 3 && k < newest).collect();
    assert!(failed.is_empty(), "packs of failed checkpoints left behind: {failed:?} (all: {packs:?})");
}

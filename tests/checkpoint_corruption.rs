//! Guards [checkpoint] recovery against damaged checkpoints: a truncated manifest, a
//! corrupted or missing state pack, and a full disk during a checkpoint each make the
//! restart fall back to the previous valid checkpoint (with a warning naming what is
//! wrong) and still commit exactly the crash-free answer; with no valid checkpoint
//! left, the job refuses to start instead of silently starting afresh.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::job::JobToml;

const HEADER: &str = "impressions.profile_id,impressions.title_id,impressions.ts,impressions.row,impressions.col,plays.profile_id,plays.title_id,plays.ts,plays.duration_ms";

fn config(dir: &Path, checkpoint: bool, rate_limit: f64, out: &str) -> PathBuf {
    let ck = if checkpoint {
        "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 100\ncheckpoints_retained = 3\n"
    } else {
        ""
    };
    JobToml::generated(&format!(
        "events = 60000, keys = 3000, titles = 50, event_time_rate = 100.0, play_window_ms = 300000, partitions = 2, \
         seed = 11, rate_limit = {rate_limit:.1}"
    ))
    .kind("left")
    .window(0, 300000)
    .max_out_of_orderness_ms(5000)
    .output(out)
    .shards(2)
    .engine("state_dir = \"state\"")
    .engine(ck)
    .write(dir, &format!("{out}.toml"))
}

/// Runs the job and kills it (-9) once `want` checkpoints exist, or fails.
fn run_and_kill(cfg: &Path, ckpt: &Path, want: usize, env: &[(&str, &str)]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["run", "--config", cfg.to_str().unwrap(), "--quiet"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let n = weft::checkpoint::list(ckpt).map(|v| v.len()).unwrap_or(0);
        if n >= want {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "the job ended before {want} checkpoints existed");
        assert!(t0.elapsed() < Duration::from_secs(60), "no {want} checkpoints after a minute");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn restart(cfg: &Path) -> (bool, String) {
    let out = common::weft_out(&["run", "--config", cfg.to_str().unwrap(), "--quiet"]);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

struct Case {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    cfg: PathBuf,
    want: Vec<String>,
}

fn setup(env: &[(&str, &str)], checkpoints: usize) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let reference = config(&dir, false, 0.0, "out-ref");
    let (ok, err) = restart(&reference);
    assert!(ok, "reference: {err}");
    let want = common::output_rows(&dir.join("out-ref"), HEADER);
    assert!(want.len() > 1000);
    let cfg = config(&dir, true, 20000.0, "out");
    run_and_kill(&cfg, &dir.join("ckpt"), checkpoints, env);
    Case { _tmp: tmp, dir, cfg, want }
}

fn newest(c: &Case) -> u64 {
    weft::checkpoint::list(&c.dir.join("ckpt")).unwrap()[0]
}

fn finish_and_compare(c: &Case, expect_warning: &str) {
    let (ok, err) = restart(&c.cfg);
    assert!(ok, "restart failed: {err}");
    assert!(err.contains(expect_warning), "stderr should mention `{expect_warning}`:\n{err}");
    let got = common::output_rows(&c.dir.join("out"), HEADER);
    common::assert_same_rows("committed output after fallback", &got, &c.want, "");
}

#[test]
fn truncated_manifest_falls_back_to_the_previous_checkpoint() {
    let c = setup(&[], 2);
    let n = newest(&c);
    let m = weft::checkpoint::manifest_path(&c.dir.join("ckpt"), n);
    let len = std::fs::metadata(&m).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&m).unwrap().set_len(len / 2).unwrap();
    let (s, ok) = weft::checkpoint::describe(&c.dir.join("ckpt"), true).unwrap();
    assert!(!ok && s.contains("INVALID"), "{s}");
    finish_and_compare(&c, &format!("checkpoint {n} is unusable"));
}

#[test]
fn corrupted_or_missing_state_pack_falls_back() {
    for missing in [false, true] {
        let c = setup(&[], 2);
        let n = newest(&c);
        let ck = c.dir.join("ckpt");
        if missing {
            let m = weft::checkpoint::read_manifest(&ck, n).unwrap();
            let b = m.shards.iter().flat_map(|s| &s.buckets).find(|b| b.file.ends_with(&format!("c{n}.pack")));
            std::fs::remove_file(ck.join(&b.expect("checkpoint n wrote a pack").file)).unwrap();
        } else {
            common::corrupt_own_pack(&ck, n);
        }
        finish_and_compare(&c, if missing { "open" } else { "checksum" });
    }
}

#[test]
fn no_valid_checkpoint_refuses_to_start() {
    let c = setup(&[], 1);
    let ck = c.dir.join("ckpt");
    for n in weft::checkpoint::list(&ck).unwrap() {
        std::fs::write(weft::checkpoint::manifest_path(&ck, n), b"{ not json").unwrap();
    }
    let before = std::fs::read_dir(c.dir.join("out")).unwrap().count();
    let (ok, err) = restart(&c.cfg);
    assert!(!ok, "must not start afresh over old output");
    assert!(err.contains("none of the") && err.contains("valid"), "{err}");
    assert_eq!(std::fs::read_dir(c.dir.join("out")).unwrap().count(), before, "output untouched");
    let out = common::weft_out(&["checkpoints", "verify", ck.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn full_disk_during_a_checkpoint_keeps_the_previous_one() {
    // Checkpoints from 3 on fail with ENOSPC (fault hook); the job goes on regardless.
    let c = setup(&[("WEFT_FAULT_ENOSPC_FROM_CHECKPOINT", "3")], 2);
    std::thread::sleep(Duration::from_millis(10));
    let ck = c.dir.join("ckpt");
    let valid = weft::checkpoint::list(&ck).unwrap();
    assert!(valid.iter().all(|&n| n <= 2), "checkpoints past the fault must not complete: {valid:?}");
    for n in valid {
        weft::checkpoint::verify(&ck, n).unwrap_or_else(|e| panic!("checkpoint {n} damaged by the failed ones: {e}"));
    }
    finish_and_compare(&c, "resuming from checkpoint 2");
}

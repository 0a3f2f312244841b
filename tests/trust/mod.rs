//! Support for the restart-trust scenarios (`manifest_checksum`, `input_fingerprint`,
//! `output_format_shape`, `manifest_tmp_symlink`): a generated CSV job, its
//! uninterrupted answer, and a checkpointed run killed (-9) mid-input once enough
//! checkpoints exist, so a restart resumes from a manifest with file positions.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Fixture {
    pub _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    /// The checkpointed job (`out`, checkpoints in `ckpt`).
    pub cfg: PathBuf,
    pub ckpt: PathBuf,
    /// The output header and rows of the uninterrupted run (`out-ref`).
    pub header: String,
    pub want: Vec<String>,
}

/// `weft gen` of `events` events as CSV (2 files per input), plus two configs.
pub fn fixture(events: u32) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let out = weft_ok(&["gen", "--out", dir.to_str().unwrap(), "--events", &events.to_string(), "--seed", "5"]);
    drop(out);
    let reference = config(&dir, "ref.toml", "", "out-ref", "csv");
    let cfg = config(
        &dir,
        "ck.toml",
        "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 10\ncheckpoints_retained = 4",
        "out",
        "csv",
    );
    weft_ok(&["run", "--config", reference.to_str().unwrap(), "--quiet"]);
    let header = first_line(&dir.join("out-ref/part-0.csv"));
    let want = super::common::output_rows(&dir.join("out-ref"), &header);
    assert!(want.len() > 1000, "the reference run has too few rows: {}", want.len());
    Fixture { _tmp: tmp, ckpt: dir.join("ckpt"), dir, cfg, header, want }
}

/// A copy of the generated job.toml with `engine` lines, output path and format.
pub fn config(dir: &Path, name: &str, engine: &str, out: &str, format: &str) -> PathBuf {
    let text = std::fs::read_to_string(dir.join("job.toml")).unwrap();
    let text = text.replace("path = \"out\"\nformat = \"csv\"", &format!("path = \"{out}\"\nformat = \"{format}\""));
    // Files read whole (`file_split_kib = 0`): the kills wait for a checkpoint in the
    // middle of every file, a place one reader per file has (tests/split_files.rs
    // covers split reads).
    let text =
        text.replace("[engine]", &format!("[engine]\nshards = 2\npin_cores = false\nfile_split_kib = 0\n{engine}"));
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn first_line(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap().lines().next().unwrap().to_string()
}

pub fn weft_ok(args: &[&str]) -> std::process::Output {
    let out = super::common::weft_out(args);
    assert!(out.status.success(), "weft {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out
}

/// The byte a file source's checkpoint position has read to: its `byte`, or for a
/// file split across shards the furthest chunk end it knows.
fn read_to(pos: &serde_json::Value) -> u64 {
    match pos["kind"].as_str() {
        Some("split") => pos["ends"].as_array().unwrap().iter().filter_map(|e| e["byte"].as_u64()).max().unwrap_or(0),
        _ => pos["byte"].as_u64().unwrap(),
    }
}

/// Checkpoint manifests that are running (unfinished) ones, newest first, and whether
/// each is in the middle of every file: read past its first 8 KiB (an edit at its
/// start is before the position) and not to its end (rows appended are still read).
fn running_checkpoints(ckpt: &Path) -> Vec<bool> {
    let Ok(ns) = weft::checkpoint::list(ckpt) else { return Vec::new() };
    let mut out = Vec::new();
    for n in ns {
        let Ok(text) = std::fs::read_to_string(weft::checkpoint::manifest_path(ckpt, n)) else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        let Some(shards) = v["shards"].as_array() else { continue };
        let sources: Vec<&serde_json::Value> = shards.iter().flat_map(|s| s["sources"].as_array().unwrap()).collect();
        if v["finished"] == false && !sources.is_empty() {
            out.push(sources.iter().all(|p| read_to(&p["position"]) >= 8192 && p["done"] == false));
        }
    }
    out
}

/// Runs the checkpointed job and kills it (-9) once `want` running checkpoints exist
/// (with `mid_input`, once the newest is in the middle of every file). A run that ends
/// first (the host was fast, or the checkpoint thread slow, this time) is started over
/// from nothing, up to 4 times; then it panics (the input is too small for this host).
pub fn run_and_kill(f: &Fixture, want: usize, mid_input: bool) {
    for attempt in 1..=4 {
        if try_run_and_kill(f, want, mid_input) {
            return;
        }
        eprintln!("attempt {attempt}: the job ended before {want} running checkpoints existed; starting over");
        let _ = std::fs::remove_dir_all(&f.ckpt);
        let _ = std::fs::remove_dir_all(f.dir.join("out"));
    }
    panic!("the job ended before the checkpoints wanted existed, 4 times: the input is too small for this host");
}

fn try_run_and_kill(f: &Fixture, want: usize, mid_input: bool) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["run", "--config", f.cfg.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let r = running_checkpoints(&f.ckpt);
        if r.len() >= want && (!mid_input || r[0]) {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoints wanted after a minute");
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    if mid_input && !running_checkpoints(&f.ckpt)[0] {
        // A later checkpoint was written before the kill landed, at the end of a file.
        let _ = std::fs::remove_dir_all(&f.ckpt);
        let _ = std::fs::remove_dir_all(f.dir.join("out"));
        return false;
    }
    true
}

/// `weft run` of `cfg`: (exit code, stderr).
pub fn restart(cfg: &Path) -> (i32, String) {
    let out = super::common::weft_out(&["run", "--config", cfg.to_str().unwrap(), "--quiet"]);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Newest first.
pub fn manifests(ckpt: &Path) -> Vec<PathBuf> {
    weft::checkpoint::list(ckpt).unwrap().into_iter().map(|n| weft::checkpoint::manifest_path(ckpt, n)).collect()
}

/// Changes the last digit of the first `"byte": N` (a source position) in a manifest.
pub fn flip_offset_digit(manifest: &Path) {
    let text = std::fs::read_to_string(manifest).unwrap();
    let at = text.find("\"byte\": ").unwrap_or_else(|| panic!("no source position in {}", manifest.display()));
    let digits_from = at + "\"byte\": ".len();
    let end = digits_from + text[digits_from..].find(|c: char| !c.is_ascii_digit()).unwrap();
    let d = text.as_bytes()[end - 1] - b'0';
    let mut bytes = text.into_bytes();
    bytes[end - 1] = b'0' + (d + 1) % 10;
    std::fs::write(manifest, bytes).unwrap();
}

/// The job's committed output equals the uninterrupted answer.
pub fn assert_reference_answer(f: &Fixture, what: &str) {
    let got = super::common::output_rows(&f.dir.join("out"), &f.header);
    super::common::assert_same_rows(what, &got, &f.want, "");
}

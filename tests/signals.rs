//! Guards how a stop signal ends `weft run`. With checkpoints, SIGINT/SIGTERM at any
//! moment (also while a checkpoint is being written, also near the end of the
//! input) exits 0: the job stops at a checkpoint ("stopped at checkpoint n") or, when
//! all input was already in, completes. Without checkpoints, SIGTERM exits 2 saying
//! the run was interrupted by the signal, and no file is left under a final output
//! name. A closed stdout with `output.path = "-"` exits 2 with "output closed".
//!
//! Seeded (`WEFT_SIGNAL_SEED`); a failure prints the seed. `WEFT_BIN` may name another
//! weft binary (to show these tests fail without the fix).

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::job::JobToml;

fn bin() -> Command {
    Command::new(std::env::var("WEFT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_weft").to_string()))
}

fn spawn_run(cfg: &Path) -> Child {
    bin()
        .args(["run", "--config", cfg.to_str().unwrap(), "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(c: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still ours.
    unsafe { libc::kill(c.id() as libc::pid_t, sig) };
}

/// Waits for `c`; returns (exit code, stderr). Panics after the test timeout.
fn finish(mut c: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + common::timeout();
    while c.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("weft did not stop after the signal (a hang?)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (c.wait().unwrap().code(), err)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn inputs(dir: &Path, rows: u32) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut l = String::from("k,ts\n");
    let mut r = String::from("k,ts\n");
    for i in 0..rows {
        l += &format!("{},{}\n", i % 97, i * 3);
        r += &format!("{},{}\n", i % 89, i * 3 + 1);
    }
    (common::write(dir, "l.csv", l), common::write(dir, "r.csv", r))
}

#[test]
fn sigint_with_checkpoints_at_random_moments_never_fails() {
    const TRIES: u32 = 30;
    let seed = std::env::var("WEFT_SIGNAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5161_u64);
    let mut rng = Rng(seed | 1);
    let tmp = tempfile::tempdir().unwrap();
    let (l, r) = inputs(tmp.path(), 30_000);
    let job = JobToml::k_ts(&[&l], &[&r])
        .kind("full")
        .window(-5, 5)
        .shards(2)
        .engine("checkpoint_dir = \"ck\"\ncheckpoint_interval_ms = 1\nstate_dir = \"st\"");
    let cfg = job.write(tmp.path(), "job.toml");
    // How long a whole run takes here, so the signals land all over it (its end too).
    let t0 = Instant::now();
    let (code, err) = finish(spawn_run(&cfg));
    assert_eq!(code, Some(0), "{err}");
    let whole = t0.elapsed().as_micros() as u64;
    for i in 0..TRIES {
        let _ = std::fs::remove_dir_all(tmp.path().join("ck"));
        let _ = std::fs::remove_dir_all(tmp.path().join("out"));
        let mut c = spawn_run(&cfg);
        // Signals before weft installed its handlers would only test the default
        // action: wait until it made its checkpoint directory (after the handlers are in).
        let ck = tmp.path().join("ck");
        while !ck.exists() && c.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_micros(200));
        }
        // Half the signals anywhere in the run, half near its end (where shards that
        // already finished meet shards asked to stop).
        let at = if i % 2 == 0 {
            rng.next() % (whole + whole / 4).max(1)
        } else {
            whole * 6 / 10 + rng.next() % (whole / 2).max(1)
        };
        std::thread::sleep(Duration::from_micros(at));
        signal(&c, libc::SIGINT);
        let (code, err) = finish(c);
        assert_eq!(code, Some(0), "try {i} (seed {seed}, SIGINT after {at} us): exit {code:?}: {err}");
        assert!(err.contains("stopped at checkpoint") || !err.contains("error"), "try {i} (seed {seed}): {err}");
    }
}

#[test]
fn sigterm_without_checkpoints_says_so_and_leaves_no_final_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = JobToml::generated("seed = 3, events = 40000, keys = 200, rate_limit = 8000.0, partitions = 2")
        .shards(2)
        .write(tmp.path(), "job.toml");
    let c = spawn_run(&cfg);
    let out = tmp.path().join("out");
    let deadline = Instant::now() + Duration::from_secs(20);
    let has_rows = || {
        std::fs::read_dir(&out)
            .map(|rd| rd.flatten().any(|e| e.metadata().is_ok_and(|m| m.len() > 100)))
            .unwrap_or(false)
    };
    while !has_rows() {
        assert!(Instant::now() < deadline, "no output within 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&c, libc::SIGTERM);
    let (code, err) = finish(c);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("interrupted by SIGTERM"), "{err}");
    assert!(!err.contains("another shard failed"), "{err}");
    for d in [out.clone(), out.join("late"), out.join("dead")] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(name.starts_with('.') || !(name.ends_with(".csv") || name.ends_with(".jsonl")), "{name} left");
        }
    }
}

#[test]
fn a_closed_stdout_says_output_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let (l, r) = inputs(tmp.path(), 50_000);
    let cfg = JobToml::k_ts(&[&l], &[&r]).kind("full").window(-50, 50).output("-").write(tmp.path(), "job.toml");
    let mut c = bin()
        .args(["run", "--config", cfg.to_str().unwrap(), "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(c.stdout.take());
    let (code, err) = finish(c);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("output closed"), "{err}");
}

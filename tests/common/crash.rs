//! Helpers for the seeded `kill -9` tests (`crash_recovery.rs`, `soak_kill.rs`): a
//! reproducible random source, `weft gen` data sets with their generated `job.toml`
//! turned into a test's config, and one attempt of `weft run` that is killed with
//! SIGKILL at a chosen moment (a delay after start, or after the n-th stderr line
//! containing a pattern, e.g. a checkpoint's debug line).
//!
//! An attempt never waits without bound: one that neither exits nor is killed within
//! its hang limit is killed and the test fails, so a hang cannot stall the suite.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// xorshift64*: enough randomness for kill moments, and reproducible from the seed.
pub struct Rng(pub u64);

impl Rng {
    /// A generator for `seed` (any value; 0 is mapped to a non-zero state).
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        lo + self.next() % (hi - lo + 1)
    }

    /// One of `items`, uniformly.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.next() as usize % items.len()]
    }
}

/// `weft gen --out DIR ARGS...`; panics when it fails.
pub fn weft_gen(dir: &Path, args: &[&str]) {
    let mut all = vec!["gen", "--out", dir.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = super::weft_out(&all);
    assert!(out.status.success(), "weft {}: {}", all.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// The `job.toml` that `weft gen` wrote in `dir`, with `output.path = out`, 2 unpinned
/// shards and `extra_engine` (verbatim `key = value` lines) added to `[engine]`.
pub fn gen_config_text(dir: &Path, out: &str, extra_engine: &str) -> String {
    let text = std::fs::read_to_string(dir.join("job.toml")).unwrap();
    assert!(text.contains("path = \"out\"") && text.contains("[engine]"), "unexpected gen job.toml:\n{text}");
    let text = text.replace("path = \"out\"", &format!("path = {}", super::toml_str(out)));
    text.replace("[engine]", &format!("[engine]\nshards = 2\npin_cores = false\n{extra_engine}"))
}

/// When an attempt is killed: `delay` after the `nth` (1-based) stderr line that
/// contains `line`, or `delay` after the process started when `line` is `None`.
#[derive(Clone, Debug)]
pub struct KillAt {
    pub line: Option<(String, u32)>,
    pub delay: Duration,
}

/// How an attempt ended.
#[derive(Debug)]
pub struct Attempt {
    /// Killed by our SIGKILL (and not exited on its own first).
    pub killed: bool,
    pub status: ExitStatus,
    /// From start to the kill or the exit.
    pub elapsed: Duration,
    pub stderr: String,
}

/// Runs `cmd` (stdin and stdout null, stderr read here) and kills it with SIGKILL at
/// `kill` (never when `None`). Panics when it neither exits nor is killed within
/// `hang`.
pub fn attempt(mut cmd: Command, kill: Option<&KillAt>, hang: Duration) -> Attempt {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the weft binary");
    let started = Instant::now();
    let stderr = child.stderr.take().unwrap();
    // The reader sends `Some(t)` when the trigger line is seen, `None` at end of file.
    let (tx, rx) = mpsc::channel::<Option<Instant>>();
    let pattern = kill.and_then(|k| k.line.clone());
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut seen = 0;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some((p, nth)) = &pattern {
                if line.contains(p.as_str()) {
                    seen += 1;
                    if seen == *nth {
                        let _ = tx.send(Some(Instant::now()));
                    }
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        let _ = tx.send(None);
        all
    });
    let mut deadline = kill.filter(|k| k.line.is_none()).map(|k| started + k.delay);
    let mut killed = false;
    loop {
        let hang_at = started + hang;
        let until = deadline.map_or(hang_at, |d| d.min(hang_at));
        match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
            Ok(Some(seen_at)) => deadline = Some(seen_at + kill.unwrap().delay),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // The child is not reaped before `wait` below, so its pid is still ours.
                let _ = child.kill();
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    killed = true;
                    break;
                }
                let _ = child.wait();
                panic!("{cmd:?} neither exited nor was killed within {hang:?}: hung");
            }
        }
    }
    // Stderr closed: the process is exiting (or was killed); reap it.
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for weft") {
            break s;
        }
        if started.elapsed() > hang {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} closed stderr but did not exit within {hang:?}: hung");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let elapsed = started.elapsed();
    let stderr = reader.join().expect("stderr reader");
    // A kill that raced with a clean exit is an exit.
    let killed = killed && status.signal() == Some(libc::SIGKILL);
    Attempt { killed, status, elapsed, stderr }
}

/// `weft run --config cfg` (debug log, so that checkpoints show), killed (-9) once its
/// `n`-th checkpoint of this attempt completes; false when it ran to its end first (it
/// must then have succeeded, and nothing is known about a mid-run restore).
pub fn run_killed_at_checkpoint(cfg: &Path, n: u32) -> bool {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(["run", "--quiet", "--log-level", "debug", "--config", cfg.to_str().unwrap()]);
    let kill = KillAt { line: Some(("complete at".into(), n)), delay: Duration::ZERO };
    let a = attempt(cmd, Some(&kill), super::timeout());
    if !a.killed {
        assert!(a.status.success(), "{}", a.stderr);
    }
    a.killed
}

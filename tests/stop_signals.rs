//! Guards what a stop signal does to a checkpointed `weft run`, against an
//! uninterrupted run of the same job:
//!
//! - SIGTERM or SIGINT mid-run: a final checkpoint (a manifest newer than any before the
//!   signal), exit 0, committed output; the same command resumes, and the output is
//!   then exactly the uninterrupted run's (multiset of rows).
//! - A second signal while the final checkpoint is being taken: exit 2, saying it
//!   stopped without a final checkpoint and that the previous one stays valid; that
//!   final checkpoint's manifest never appears, the committed files are left byte for
//!   byte, and the restart is still exactly once. The final checkpoint is made slow
//!   (the whole state, ~70 MB, sits in one bucket per side, so every checkpoint copies
//!   it all); an attempt in which it still won the race (exit 0) is detected and run
//!   again, never judged by timing.
//! - SIGHUP is ignored: the run goes on to its end.
//!
//! A single signal that came after all input was read rightly lets the job complete
//! (exit 0, "completed"); that attempt is detected and run again too.
//!
//! Signals are sent only after weft made its first manifest (its handlers were
//! installed before its checkpoint directory existed), as in `signals.rs`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::job::{InputToml, JobToml};

/// Rows per input; with [`PAD_BYTES`] a side holds about 35 MB of state at the end.
const ROWS: u32 = 150_000;
const PAD_BYTES: usize = 200;
/// Attempts at landing a signal before all input is read.
const STOP_TRIES: u32 = 8;
/// Attempts at landing the second signal inside the final checkpoint.
const SECOND_SIGNAL_TRIES: u32 = 6;

const HEADER: &str = "l.k,l.ts,l.pad,r.k,r.ts,r.pad";

/// The data set and the uninterrupted run's output, made once for all tests here.
struct Data {
    dir: tempfile::TempDir,
    want: Vec<String>,
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pad = "p".repeat(PAD_BYTES);
        let mut l = String::from("k,ts,pad\n");
        let mut r = String::from("k,ts,pad\n");
        for i in 0..ROWS {
            l += &format!("{},{},{pad}\n", i % 50_000, i * 2);
            // One right row in 100 shares a key with left rows: a small output, a large state.
            let rk = if i % 100 == 0 { i % 50_000 } else { 1_000_000 + i % 50_000 };
            r += &format!("{rk},{},{pad}\n", i * 2 + 1);
        }
        common::write(dir.path(), "l.csv", l);
        common::write(dir.path(), "r.csv", r);
        let cfg = job("out-ref", "").write(dir.path(), "ref.toml");
        let out = common::weft_run(&cfg, &[]);
        assert!(out.status.success(), "uninterrupted run: {}", String::from_utf8_lossy(&out.stderr));
        let want = common::output_rows(&dir.path().join("out-ref"), HEADER);
        assert!(want.len() > 1000, "the uninterrupted run joined only {} rows", want.len());
        Data { dir, want }
    })
}

/// The job over the data set, writing to `out` (relative to the data directory), with
/// `engine` lines added. Every row is kept for the whole run, in one bucket per side.
fn job(out: &str, engine: &str) -> JobToml {
    let fields = [("k", "i64"), ("ts", "i64"), ("pad", "string")];
    JobToml::new(InputToml::files("l", &["l.csv"], &fields), InputToml::files("r", &["r.csv"], &fields))
        .window(-1_000_000, 1_000_000)
        .shards(2)
        .output(out)
        .engine(&format!("state_bucket_ms = 100000000\n{engine}"))
}

/// A checkpointed config for case `name`: its own output, checkpoint and state dirs.
fn checkpointed(name: &str, interval_ms: u64) -> (PathBuf, PathBuf, PathBuf) {
    let d = data().dir.path();
    for sub in ["out", "ck", "st"] {
        let _ = std::fs::remove_dir_all(d.join(format!("{name}-{sub}")));
    }
    let engine = format!(
        "checkpoint_dir = \"{name}-ck\"\ncheckpoint_interval_ms = {interval_ms}\ncheckpoints_retained = 2\nstate_dir = \"{name}-st\""
    );
    let cfg = job(&format!("{name}-out"), &engine).write(d, &format!("{name}.toml"));
    (cfg, d.join(format!("{name}-out")), d.join(format!("{name}-ck")))
}

/// `weft run` of `cfg`, its stdout (the report, which says how the run ended) to `cfg`
/// with `.stdout` added, its stderr piped.
fn spawn_run(cfg: &Path) -> Child {
    let stdout = std::fs::File::create(stdout_path(cfg)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["run", "--config", cfg.to_str().unwrap(), "--quiet"])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stdout_path(cfg: &Path) -> PathBuf {
    cfg.with_extension("stdout")
}

fn signal(c: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child, not yet reaped, so the pid is still ours.
    unsafe { libc::kill(c.id() as libc::pid_t, sig) };
}

/// Numbers of the manifests in `ck`.
fn manifests(ck: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(ck)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("chk-")?.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    v.sort();
    v
}

/// Stderr lines as they come, on a channel; the whole text at the end from the handle.
fn read_stderr(c: &mut Child) -> (mpsc::Receiver<String>, std::thread::JoinHandle<String>) {
    let err = c.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            all += &line;
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    (rx, h)
}

/// Waits for `c` to exit (killing it and failing after the test timeout).
fn wait_exit(c: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + common::timeout();
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("weft did not exit after the signal (a hang?)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `ck` exists (or `c` exited: false).
fn wait_checkpoint_dir(c: &mut Child, ck: &Path) -> bool {
    let deadline = Instant::now() + common::timeout();
    while !ck.is_dir() {
        if c.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "no checkpoint directory within {:?}", common::timeout());
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// Waits until `ck` holds a manifest (or `c` exited: false).
fn wait_first_manifest(c: &mut Child, ck: &Path) -> bool {
    let deadline = Instant::now() + common::timeout();
    while manifests(ck).is_empty() {
        if c.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(Instant::now() < deadline, "no checkpoint within {:?}", common::timeout());
        std::thread::sleep(Duration::from_millis(2));
    }
    true
}

/// Every file under its final name in `out` (and `late/`, `dead/`) with its bytes.
fn committed(out: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut m = BTreeMap::new();
    for d in [out.to_path_buf(), out.join("late"), out.join("dead")] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if e.path().is_file() && !n.starts_with('.') && !n.ends_with(".inprogress") {
                m.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    m
}

/// The same command again, to the end: exit 0 and exactly the uninterrupted output.
fn restart_equals_uninterrupted(cfg: &Path, out: &Path, what: &str) {
    let again = common::weft_run(cfg, &[]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{what}: restart: {err}");
    assert!(err.contains("resuming from checkpoint") || !err.contains("error"), "{what}: restart: {err}");
    let got = common::output_rows(out, HEADER);
    common::assert_same_rows(&format!("{what}: output after the restart"), &got, &data().want, "");
}

fn one_signal_stops_at_a_final_checkpoint(sig: libc::c_int, name: &str) {
    // How long after the checkpoint directory appears the signal is sent: longer after
    // an attempt that stopped too early (nothing committed yet: a loaded machine),
    // shorter after one that came too late (all input read).
    let mut delay_ms = 0u64;
    for attempt in 0..STOP_TRIES {
        let (cfg, out, ck) = checkpointed(name, 100);
        let mut c = spawn_run(&cfg);
        let (_lines, err) = read_stderr(&mut c);
        // As soon as the handlers are in (the checkpoint directory exists): on an idle
        // machine the input is read before the first manifest appears.
        assert!(wait_checkpoint_dir(&mut c, &ck), "{name}: the run ended before it made its checkpoint directory");
        let before = manifests(&ck).last().copied().unwrap_or(0);
        // Too early commits nothing, too late finds all input read; either is detected
        // and tried again with the delay moved.
        std::thread::sleep(Duration::from_millis(delay_ms));
        signal(&c, sig);
        let code = wait_exit(&mut c);
        let err = err.join().unwrap();
        let report = std::fs::read_to_string(stdout_path(&cfg)).unwrap();
        assert_eq!(code, Some(0), "{name}: {err}");
        if report.contains("outcome") && report.contains("completed;") {
            // All input was read when the final checkpoint was taken: the job rightly ran
            // to its end (a slow first checkpoint on a busy machine). Not mid-run: again.
            eprintln!("{name}: attempt {attempt}: the input was all read before the stop; again");
            delay_ms /= 2;
            continue;
        }
        assert!(report.contains("stopped at checkpoint"), "{name}: not stopped at a checkpoint: {report}{err}");
        let after = *manifests(&ck).last().unwrap();
        assert!(after > before, "{name}: no manifest newer than {before} (newest {after}): {err}");
        if committed(&out).is_empty() {
            eprintln!("{name}: attempt {attempt}: stopped before any output was committed; again");
            delay_ms = delay_ms * 2 + 20;
            continue;
        }
        restart_equals_uninterrupted(&cfg, &out, name);
        return;
    }
    panic!("{name}: in {STOP_TRIES} attempts the signal never landed mid-run with output committed");
}

#[test]
fn sigterm_mid_run_takes_a_final_checkpoint_and_resumes_exactly_once() {
    one_signal_stops_at_a_final_checkpoint(libc::SIGTERM, "sigterm");
}

#[test]
fn sigint_mid_run_takes_a_final_checkpoint_and_resumes_exactly_once() {
    one_signal_stops_at_a_final_checkpoint(libc::SIGINT, "sigint");
}

#[test]
fn a_second_signal_stops_at_once_without_the_final_checkpoint() {
    for attempt in 0..SECOND_SIGNAL_TRIES {
        let (cfg, out, ck) = checkpointed("twice", 100);
        let mut c = spawn_run(&cfg);
        let (lines, err) = read_stderr(&mut c);
        assert!(wait_first_manifest(&mut c, &ck), "the run ended before its first checkpoint");
        signal(&c, libc::SIGTERM);
        // The coordinator says which checkpoint it stops at as it asks for it; the
        // second signal goes right after, while the shards copy their state.
        let final_n: Option<u64> = loop {
            match lines.recv_timeout(common::timeout()) {
                Ok(line) => {
                    if let Some(rest) = line.split("stopping at a final checkpoint (").nth(1) {
                        break Some(rest.split(')').next().unwrap().parse().unwrap());
                    }
                }
                // weft closed its stderr: it ended before it saw the signal.
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                Err(e) => panic!("attempt {attempt}: no 'stopping at a final checkpoint' line: {e}"),
            }
        };
        let Some(final_n) = final_n else {
            let code = wait_exit(&mut c);
            let err = err.join().unwrap();
            let report = std::fs::read_to_string(stdout_path(&cfg)).unwrap();
            assert_eq!(code, Some(0), "attempt {attempt}: weft ended without a stop line: {err}");
            assert!(report.contains("completed;"), "attempt {attempt}: ended, not completed: {report}{err}");
            eprintln!("attempt {attempt}: all input was read before the first signal; again");
            continue;
        };
        signal(&c, libc::SIGTERM);
        let code = wait_exit(&mut c);
        let err = err.join().unwrap();
        if code == Some(0) {
            let report = std::fs::read_to_string(stdout_path(&cfg)).unwrap();
            assert!(report.contains("stopped at checkpoint"), "attempt {attempt}: {report}{err}");
            eprintln!("attempt {attempt}: the final checkpoint completed before the second signal; again");
            continue;
        }
        assert_eq!(code, Some(2), "attempt {attempt}: {err}");
        assert!(err.contains("stopped at once by a second SIGTERM, without a final checkpoint"), "{err}");
        assert!(err.contains("stays valid"), "{err}");
        let ms = manifests(&ck);
        assert!(!ms.contains(&final_n), "manifest {final_n} of the final checkpoint exists: {ms:?}: {err}");
        let previous = *ms.last().expect("the first checkpoint's manifest is gone");
        assert!(err.contains(&format!("previous checkpoint {previous} ")), "newest manifest {previous}: {err}");
        // Committed files stay as they were through the restart (it only adds files).
        let kept = committed(&out);
        restart_equals_uninterrupted(&cfg, &out, "after a second signal");
        let now = committed(&out);
        for (p, bytes) in &kept {
            assert!(now.get(p) == Some(bytes), "{} changed or vanished in the restart", p.display());
        }
        eprintln!("attempt {attempt}: stopped at once before checkpoint {final_n}; resumed from {previous}");
        return;
    }
    panic!("in {SECOND_SIGNAL_TRIES} attempts the final checkpoint always completed before the second signal");
}

#[test]
fn sighup_is_ignored() {
    let (cfg, out, ck) = checkpointed("sighup", 100);
    let mut c = spawn_run(&cfg);
    let (_lines, err) = read_stderr(&mut c);
    assert!(wait_first_manifest(&mut c, &ck), "the run ended before its first checkpoint");
    signal(&c, libc::SIGHUP);
    // Not killed by it (the default action), and nothing else happens: the run goes
    // on to its end and commits the whole answer.
    let code = wait_exit(&mut c);
    let err = err.join().unwrap();
    assert_eq!(code, Some(0), "killed or failed after SIGHUP: {err}");
    assert!(!err.contains("stopping"), "SIGHUP stopped the run: {err}");
    let report = std::fs::read_to_string(stdout_path(&cfg)).unwrap();
    assert!(report.contains("completed;"), "{report}{err}");
    common::assert_same_rows("after SIGHUP", &common::output_rows(&out, HEADER), &data().want, "");
}

//! Guards [checkpoint]'s exactly-once promise: a job killed with `kill -9` at random
//! moments and restarted until its input is done commits exactly the multiset a
//! crash-free run commits (joined rows and late rows): nothing lost, nothing doubled.
//!
//! Seeded: the kill moments come from `WEFT_CRASH_SEED` (default below); a failure
//! prints the seed. Each attempt that is not killed must end on its own within a
//! minute, so a hang fails the test instead of stalling the suite.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::crash::Rng;

const HEADER: &str = "impressions.profile_id,impressions.title_id,impressions.ts,impressions.row,impressions.col,plays.profile_id,plays.title_id,plays.ts,plays.duration_ms";

fn gen(dir: &Path, kind: &str) {
    let args = ["--events", "200000", "--keys", "20000", "--partitions", "2", "--kind", kind, "--seed", "5"];
    common::crash::weft_gen(dir, &args);
}

fn write_config(dir: &Path, name: &str, extra_engine: &str, out: &str) -> std::path::PathBuf {
    common::write(dir, name, common::crash::gen_config_text(dir, out, extra_engine))
}

/// Kills land at random moments between 1/25 and 1/8 of a crash-free run's duration
/// (`run`), so a single attempt can never finish the job before its kill: every
/// attempt resumes, progresses a little and dies, until `kills_wanted` kills landed.
fn crash_until_done(config: &Path, seed: u64, kills_wanted: u32, run: Duration) -> u32 {
    let lo = (run.as_millis() as u64 / 25).max(15);
    let span = (run.as_millis() as u64 / 8).saturating_sub(lo).max(10);
    let mut rng = Rng::new(seed);
    let mut kills = 0;
    for attempt in 0..200 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["run", "--config", config.to_str().unwrap(), "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let kill_after = if kills < kills_wanted { Some(Duration::from_millis(lo + rng.next() % span)) } else { None };
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                assert!(status.success(), "seed {seed}: attempt {attempt} failed ({status}):\n{err}");
                return kills;
            }
            if kill_after.is_some_and(|k| started.elapsed() >= k) {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("seed {seed}: attempt {attempt} ran over a minute: hung");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    panic!("seed {seed}: the job did not finish in 200 attempts");
}

fn check(kind: &str, state: &str, default_seed: u64) {
    let seed = std::env::var("WEFT_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default_seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen(dir, kind);
    let reference = write_config(dir, "ref.toml", state, "out-ref");
    let t0 = Instant::now();
    let out = common::weft_out(&["run", "--config", reference.to_str().unwrap(), "--quiet"]);
    let run = t0.elapsed();
    assert!(out.status.success(), "reference run: {}", String::from_utf8_lossy(&out.stderr));
    let crashy = write_config(
        dir,
        "crash.toml",
        &format!("{state}\ncheckpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 30\ncheckpoints_retained = 2"),
        "out",
    );
    let kills = crash_until_done(&crashy, seed, 12, run);
    assert!(kills >= 10, "seed {seed}: only {kills} kills landed before the job finished");
    let got = common::output_rows(&dir.join("out"), HEADER);
    let want = common::output_rows(&dir.join("out-ref"), HEADER);
    assert!(!want.is_empty());
    common::assert_same_rows(&format!("seed {seed}, {kills} kills: committed output"), &got, &want, "");
    let lh = "profile_id,title_id,ts,row,col";
    let got_late = common::late_rows(&dir.join("out"), "impressions", lh);
    let want_late = common::late_rows(&dir.join("out-ref"), "impressions", lh);
    common::assert_same_rows(&format!("seed {seed}: late impressions"), &got_late, &want_late, "");
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".inprogress"))
        .collect();
    assert!(leftovers.is_empty(), "uncommitted files left: {leftovers:?}");
    // Running the finished job again changes nothing.
    let again = common::weft_out(&["run", "--config", crashy.to_str().unwrap(), "--quiet"]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already ran to the end"));
    eprintln!("seed {seed}: {kills} kills, {} rows committed exactly once", got.len());
}

#[test]
fn kill_9_left_join_arena_state_exactly_once() {
    check("left", "state_dir = \"state\"", 0x5eed_0001);
}

#[test]
fn kill_9_full_join_heap_state_exactly_once() {
    check("full", "", 0x5eed_0002);
}

/// Arena state far over its budget: checkpoints copy cold buckets (read with `pread`,
/// flags set while cold applied first) and restore them.
#[test]
fn kill_9_full_join_arena_state_over_budget_exactly_once() {
    check("full", "state_dir = \"state\"\nstate_memory_mb = 1", 0x5eed_0003);
}

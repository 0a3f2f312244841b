//! Rescaling across restarts: a job checkpointed under 2 shards, killed (-9), resumed
//! under 1 shard, killed again, and finished under 3 commits exactly the answer of an
//! uninterrupted run (joined rows and late rows), because each restart with another
//! `engine.shards` re-distributes the checkpoint's state rows by key. Also: a
//! checkpoint whose manifest names another routing function (as one written before
//! routing was pinned does) is re-distributed, not trusted.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::crash::{attempt, Attempt, KillAt};

const HEADER: &str = "impressions.profile_id,impressions.title_id,impressions.ts,impressions.row,impressions.col,plays.profile_id,plays.title_id,plays.ts,plays.duration_ms";
const LATE_HEADER: &str = "profile_id,title_id,ts,row,col";

fn gen(dir: &Path) {
    let args = ["--events", "1000000", "--keys", "50000", "--partitions", "3", "--kind", "left", "--seed", "11"];
    common::crash::weft_gen(dir, &args);
}

fn config(dir: &Path, name: &str, shards: u32, out: &str, checkpoints: bool) -> PathBuf {
    let engine = if checkpoints {
        "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 20\ncheckpoints_retained = 3\n"
    } else {
        ""
    };
    let text = common::crash::gen_config_text(dir, out, engine).replace("shards = 2", &format!("shards = {shards}"));
    common::write(dir, name, text)
}

fn run(cfg: &Path, kill_at_checkpoint: Option<u32>) -> Attempt {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    cmd.args(["run", "--quiet", "--log-level", "debug", "--config", cfg.to_str().unwrap()]);
    let kill = kill_at_checkpoint.map(|n| KillAt { line: Some(("complete at".into(), n)), delay: Duration::ZERO });
    attempt(cmd, kill.as_ref(), common::timeout())
}

/// Runs `cfg` until its `n`-th checkpoint of this attempt completes and kills it;
/// false when the job ran to its end first (then nothing is known about a mid-run
/// restore).
fn run_and_kill(cfg: &Path, n: u32) -> bool {
    common::crash::run_killed_at_checkpoint(cfg, n)
}

#[test]
fn two_then_one_then_three_shards_give_the_uninterrupted_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen(dir);
    let reference = config(dir, "ref.toml", 2, "out-ref", false);
    let r = run(&reference, None);
    assert!(r.status.success(), "{}", r.stderr);
    let want = common::output_rows(&dir.join("out-ref"), HEADER);
    let want_late = common::late_rows(&dir.join("out-ref"), "impressions", LATE_HEADER);
    assert!(want.len() > 100_000, "{}", want.len());

    let two = config(dir, "two.toml", 2, "out", true);
    let one = config(dir, "one.toml", 1, "out", true);
    let three = config(dir, "three.toml", 3, "out", true);
    let mut mid_run = false;
    for _ in 0..4 {
        let _ = std::fs::remove_dir_all(dir.join("ckpt"));
        let _ = std::fs::remove_dir_all(dir.join("out"));
        if run_and_kill(&two, 1) && run_and_kill(&one, 1) {
            mid_run = true;
            break;
        }
    }
    assert!(mid_run, "the job always ended before its first checkpoint: the input is too small for this host");
    let last = run(&three, None);
    assert!(last.status.success(), "{}", last.stderr);
    assert!(last.stderr.contains("re-distributing the state of checkpoint"), "{}", last.stderr);
    assert!(last.stderr.contains("it has 1 shards, the job has 3"), "{}", last.stderr);

    let got = common::output_rows(&dir.join("out"), HEADER);
    assert_eq!(got.len(), want.len(), "rows after 2 -> 1 -> 3 shards");
    assert!(got == want, "the rescaled run's rows differ from the uninterrupted run's");
    assert_eq!(common::late_rows(&dir.join("out"), "impressions", LATE_HEADER), want_late);
}

#[test]
fn a_checkpoint_of_another_routing_is_redistributed_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen(dir);
    let reference = config(dir, "ref.toml", 2, "out-ref", false);
    assert!(run(&reference, None).status.success());
    let want = common::output_rows(&dir.join("out-ref"), HEADER);

    let two = config(dir, "two.toml", 2, "out", true);
    let mut mid_run = false;
    for _ in 0..4 {
        let _ = std::fs::remove_dir_all(dir.join("ckpt"));
        let _ = std::fs::remove_dir_all(dir.join("out"));
        if run_and_kill(&two, 1) {
            mid_run = true;
            break;
        }
    }
    assert!(mid_run, "the job always ended before its first checkpoint");
    // As a weft before pinned routing wrote them: no `routing` in any manifest. Each
    // is rewritten through the library so its checksum stays right.
    let ckpt = dir.join("ckpt");
    for n in weft::checkpoint::list(&ckpt).unwrap() {
        let mut m = weft::checkpoint::read_manifest(&ckpt, n).unwrap();
        m.routing = None;
        std::fs::remove_file(weft::checkpoint::manifest_path(&ckpt, n)).unwrap();
        weft::checkpoint::write_manifest(&ckpt, &m).unwrap();
    }
    let last = run(&two, None);
    assert!(last.status.success(), "{}", last.stderr);
    assert!(
        last.stderr.contains("re-distributing") && last.stderr.contains("build-dependent ahash"),
        "{}",
        last.stderr
    );
    let got = common::output_rows(&dir.join("out"), HEADER);
    assert!(
        got == want,
        "rows differ after re-distributing a checkpoint of another routing ({} vs {})",
        got.len(),
        want.len()
    );
}

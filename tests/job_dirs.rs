//! Guards what weft does to files in a job's own directories. An input file that
//! lies inside the output, state or checkpoint directory is refused (exit 2) before
//! anything is touched, `--force` included, so no run ever deletes an input; the same
//! for `weft batch --output`. A symlink planted where weft writes (an output file,
//! a checkpoint pack) is never followed: its target keeps its bytes, and the run
//! either fails naming the path or replaces the link itself.
//!
//! `WEFT_BIN` may name another weft binary (to show these tests fail without the fix).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::job::JobToml;

fn bin() -> Command {
    Command::new(std::env::var("WEFT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_weft").to_string()))
}

fn weft(args: &[&str]) -> Output {
    bin().args(args).stdin(Stdio::null()).output().unwrap()
}

const L: &str = "k,ts\n1,100\n2,200\n3,300\n";
const R: &str = "k,ts\n1,100\n3,300\n";

fn run(cfg: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--config", cfg.to_str().unwrap(), "--quiet"];
    args.extend_from_slice(extra);
    weft(&args)
}

#[test]
fn inputs_inside_the_job_directories_are_refused_and_kept() {
    for (place, engine) in [
        ("out", ""),
        ("ck", "checkpoint_dir = \"ck\""),
        ("st", "state_dir = \"st\""),
        ("ck", "checkpoint_dir = \"ck\"\nstate_dir = \"st\""),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join(place).join("in")).unwrap();
        let l = common::write(tmp.path(), &format!("{place}/in/l.csv"), L);
        let r = common::write(tmp.path(), "r.csv", R);
        let cfg = JobToml::k_ts(&[&l], &[&r]).engine(engine).write(tmp.path(), "job.toml");
        let o = run(&cfg, &["--force"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "input inside {place}: {err}");
        assert!(err.contains("lies inside") && err.contains("l.csv"), "input inside {place}: {err}");
        assert_eq!(std::fs::read_to_string(&l).unwrap(), L, "the input must be untouched");
    }
    // weft batch --output: the same rule.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("b")).unwrap();
    let l = common::write(tmp.path(), "b/l.csv", L);
    let r = common::write(tmp.path(), "r.csv", R);
    let cfg = JobToml::k_ts(&[&l], &[&r]).write(tmp.path(), "job.toml");
    let o = weft(&[
        "batch",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        tmp.path().join("b").to_str().unwrap(),
        "--force",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("lies inside"), "{err}");
    assert_eq!(std::fs::read_to_string(&l).unwrap(), L);
}

#[test]
fn symlinks_where_weft_writes_are_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let l = common::write(tmp.path(), "l.csv", L);
    let r = common::write(tmp.path(), "r.csv", R);
    let victim = common::write(tmp.path(), "victim.txt", "precious\n");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(out.join("dead")).unwrap();

    // A link at the final name of an output file (no checkpointing).
    let cfg = JobToml::k_ts(&[&l], &[&r]).write(tmp.path(), "job.toml");
    std::os::unix::fs::symlink(&victim, out.join("part-0.csv")).unwrap();
    let o = run(&cfg, &[]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "{}", String::from_utf8_lossy(&o.stderr));

    // A link at the in-progress name: refused with the path, target kept.
    let _ = std::fs::remove_file(out.join("part-0.csv"));
    std::os::unix::fs::symlink(&victim, out.join("part-0.csv.inprogress")).unwrap();
    let o = run(&cfg, &["--force"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "{err}");
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("part-0.csv.inprogress"), "{err}");
    let _ = std::fs::remove_file(out.join("part-0.csv.inprogress"));

    // A link at a checkpoint's pack path and at an epoch file.
    let tmp = tempfile::tempdir().unwrap();
    let victim = common::write(tmp.path(), "victim.txt", "precious\n");
    let text = JobToml::generated("seed = 3, events = 4000, keys = 50, rate_limit = 8000.0, partitions = 1")
        .engine("checkpoint_dir = \"ck\"\ncheckpoint_interval_ms = 50")
        .render();
    let cfg = common::write(tmp.path(), "job.toml", text);
    let shard = tmp.path().join("ck/state/shard-0");
    std::fs::create_dir_all(&shard).unwrap();
    std::fs::create_dir_all(tmp.path().join("out")).unwrap();
    for n in 1..20 {
        std::os::unix::fs::symlink(&victim, shard.join(format!("c{n}.pack"))).unwrap();
    }
    std::os::unix::fs::symlink(&victim, tmp.path().join("out/part-0-2.csv.inprogress")).unwrap();
    let o = run(&cfg, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "{err}");
}

#[test]
fn symlinks_where_weft_batch_writes_are_never_followed() {
    // weft batch writes part files under `.inprogress` names, then late and dead-letter
    // files under their final names: a link planted at either is refused with its path.
    for planted in ["part-0.csv.inprogress", "dead/r-0.jsonl"] {
        let tmp = tempfile::tempdir().unwrap();
        let l = common::write(tmp.path(), "l.csv", L);
        let r = common::write(tmp.path(), "r.csv", "k,ts\n1,100\nnot-a-number,300\n");
        let victim = common::write(tmp.path(), "victim.txt", "precious\n");
        let out = tmp.path().join("out");
        std::fs::create_dir_all(out.join("dead")).unwrap();
        std::os::unix::fs::symlink(&victim, out.join(planted)).unwrap();
        let cfg = JobToml::k_ts(&[&l], &[&r]).write(tmp.path(), "job.toml");
        let o =
            weft(&["batch", "--config", cfg.to_str().unwrap(), "--output", out.to_str().unwrap(), "--threads", "1"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "link at {planted}: {err}");
        assert_eq!(o.status.code(), Some(2), "link at {planted}: {err}");
        assert!(err.contains(planted.rsplit('/').next().unwrap()), "link at {planted}: {err}");
    }
}

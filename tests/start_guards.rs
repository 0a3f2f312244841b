//! Guards `weft run`'s start-up refusals: before anything is read or joined it exits 2
//! with a message naming the directory, the OS error and what to change when an
//! output, state or checkpoint directory cannot be written, when the disk of
//! `engine.state_dir` has less free space than `engine.state_memory_mb`, and when
//! `ulimit -l` is too low for the io_uring rings. A normal job passes them all.
//!
//! As root, permission bits do not stop writes, so the chmod case is skipped there (with
//! a printed reason); a path whose parent is a regular file fails for anyone.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::job::JobToml;

fn inputs(dir: &Path) -> JobToml {
    let l = common::write(dir, "l.csv", "k,ts\n1,1\n2,5\n");
    let r = common::write(dir, "r.csv", "k,ts\n1,1\n");
    JobToml::k_ts(&[&l], &[&r])
}

/// Exit code and stderr of `weft run` of `job` (written to `dir/job.toml`).
fn run(dir: &Path, job: &JobToml) -> (Option<i32>, String) {
    let cfg = job.write(dir, "job.toml");
    let o = common::weft_run(&cfg, &[]);
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_directory_under_a_regular_file_is_refused_naming_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    common::write(tmp.path(), "file", "not a directory");
    let cases = [
        ("output directory", "output.path", inputs(tmp.path()).output("file/out")),
        ("state directory", "engine.state_dir", inputs(tmp.path()).engine("state_dir = \"file/st\"")),
        ("checkpoint directory", "engine.checkpoint_dir", inputs(tmp.path()).engine("checkpoint_dir = \"file/ck\"")),
    ];
    for (what, key, job) in cases {
        let (code, err) = run(tmp.path(), &job);
        assert_eq!(code, Some(2), "{what}: {err}");
        assert!(err.contains(&format!("{what} ")) && err.contains("is not writable"), "{what}: {err}");
        assert!(err.contains("Not a directory"), "{what}: the errno text: {err}");
        assert!(err.contains(&format!("choose another {key}")), "{what}: what to change: {err}");
    }
    assert!(!tmp.path().join("out").exists(), "nothing was joined");
}

#[test]
fn a_read_only_directory_is_refused_with_chmod_advice() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        eprintln!("skipped: running as root, where permission bits do not stop writes");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let job = inputs(tmp.path());
    // A locked-out output directory that already exists, and one that holds a lock file
    // left by a killed run (the lock opens it; only the probe finds the directory read-only).
    for left_lock in [false, true] {
        let out = tmp.path().join("out");
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir(&out).unwrap();
        if left_lock {
            common::write(&out, ".weft.lock", "pid 1\n");
        }
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o555)).unwrap();
        let (code, err) = run(tmp.path(), &job);
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(code, Some(2), "left lock {left_lock}: {err}");
        assert!(err.contains("output directory") && err.contains("is not writable"), "{err}");
        assert!(err.contains("permission denied: chmod it or choose another output.path"), "{err}");
    }
}

#[test]
fn a_state_budget_larger_than_the_free_disk_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let job = inputs(tmp.path()).engine("state_dir = \"st\"\nstate_memory_mb = 1073741824");
    let (code, err) = run(tmp.path(), &job);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("MiB free, less than the state budget engine.state_memory_mb = 1073741824 MiB"), "{err}");
    assert!(err.contains("lower engine.state_memory_mb") && err.contains("choose another engine.state_dir"), "{err}");
    assert!(!tmp.path().join("out").join("part-0.csv").exists(), "nothing was joined");
    // The default budget (1 GiB) on this disk, and a small one, pass.
    let (code, err) = run(tmp.path(), &inputs(tmp.path()).engine("state_dir = \"st\""));
    assert_eq!(code, Some(0), "{err}");
    let small = inputs(tmp.path()).output("out2").engine("state_dir = \"st\"\nstate_memory_mb = 1");
    let (code, err) = run(tmp.path(), &small);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_low_memlock_limit_says_how_to_raise_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = inputs(tmp.path()).write(tmp.path(), "job.toml");
    // Lowering a soft limit needs no privilege; `exec` keeps the limit for weft.
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -l 64 && exec \"$0\" run --config \"$1\" --quiet")
        .arg(env!("CARGO_BIN_EXE_weft"))
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("`ulimit -l` (locked memory) is 64 KiB"), "{err}");
    assert!(err.contains("ulimit -l 8192") && err.contains("LimitMEMLOCK"), "{err}");
    assert!(!tmp.path().join("out").exists(), "refused before the output directory was made");
}

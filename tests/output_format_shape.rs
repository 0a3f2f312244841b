//! Guards `output.format` as part of a checkpoint's job shape: restarting a CSV job
//! with `format = "jsonl"` is refused (exit 2, naming the key and both formats) like
//! any other shape change, instead of mixing CSV and JSONL in one output; the same
//! command with the original format then resumes.

mod common;
mod trust;

#[test]
fn a_restart_with_another_output_format_is_refused() {
    let f = trust::fixture(1_000_000);
    trust::run_and_kill(&f, 1, false);
    let jsonl = trust::config(
        &f.dir,
        "ck-jsonl.toml",
        "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 10\ncheckpoints_retained = 4",
        "out",
        "jsonl",
    );
    let (code, err) = trust::restart(&jsonl);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("different job") && err.contains("output.format was \"csv\", is now \"jsonl\""), "{err}");
    let (code, err) = trust::restart(&f.cfg);
    assert_eq!(code, 0, "{err}");
    trust::assert_reference_answer(&f, "resumed with the original format");
}

//! Guards the manifest checksum: one digit of a source offset changed in the newest
//! manifest makes the restart skip it with a warning and resume from the previous
//! checkpoint (committing exactly the uninterrupted answer); with every manifest
//! damaged the job refuses to start (exit 2) instead of resuming at a wrong offset.

mod common;
mod trust;

#[test]
fn a_flipped_digit_falls_back_to_the_previous_checkpoint() {
    let f = trust::fixture(1_000_000);
    trust::run_and_kill(&f, 2, false);
    let ms = trust::manifests(&f.ckpt);
    trust::flip_offset_digit(&ms[0]);
    let (code, err) = trust::restart(&f.cfg);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("is unusable") && err.contains("checksum"), "no warning about the checksum:\n{err}");
    trust::assert_reference_answer(&f, "after falling back from a damaged manifest");
}

#[test]
fn with_every_manifest_damaged_the_job_refuses_to_start() {
    let f = trust::fixture(1_000_000);
    trust::run_and_kill(&f, 1, false);
    for m in trust::manifests(&f.ckpt) {
        trust::flip_offset_digit(&m);
    }
    let (code, err) = trust::restart(&f.cfg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("checksum") && err.contains("none of the"), "{err}");
}

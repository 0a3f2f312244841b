//! Guards the manifest's temp file against a planted symlink: with a link at
//! `chk-000000000001.json.tmp` pointing at another file, a checkpointed run removes
//! the link (never opening it), leaves the link's target untouched, and writes its
//! manifests as regular files.

mod common;
mod trust;

#[test]
fn a_symlink_at_the_manifest_temp_path_is_not_followed() {
    let f = trust::fixture(20_000);
    std::fs::create_dir_all(&f.ckpt).unwrap();
    let victim = f.dir.join("victim.txt");
    std::fs::write(&victim, "not weft's to overwrite\n").unwrap();
    let tmp = weft::checkpoint::manifest_path(&f.ckpt, 1).with_extension("json.tmp");
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let (code, err) = trust::restart(&f.cfg);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not weft's to overwrite\n");
    assert!(std::fs::symlink_metadata(&tmp).is_err(), "the planted link is removed");
    for m in trust::manifests(&f.ckpt) {
        let t = std::fs::symlink_metadata(&m).unwrap().file_type();
        assert!(t.is_file(), "{} is not a regular file", m.display());
    }
    trust::assert_reference_answer(&f, "checkpointed run");
}

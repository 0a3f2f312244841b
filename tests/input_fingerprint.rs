//! Guards the input fingerprints of a checkpoint: an input edited (or truncated)
//! before the checkpoint's position is refused on restart (exit 2, naming the file and
//! what changed) before anything is touched, and putting the file back lets the same
//! command resume; an input appended to after its position resumes and commits the
//! answer over the longer file.

mod common;
mod trust;

use std::io::Write;

/// Byte offset of the first digit of the first data row (block 0 is always sampled).
fn first_row_digit(text: &[u8]) -> usize {
    let nl = text.iter().position(|&c| c == b'\n').unwrap();
    nl + 1 + text[nl + 1..].iter().position(|c| c.is_ascii_digit()).unwrap()
}

#[test]
fn an_input_edited_before_its_position_is_refused() {
    let f = trust::fixture(600_000);
    trust::run_and_kill(&f, 1, true);
    let input = f.dir.join("left-0.csv");
    let original = std::fs::read(&input).unwrap();
    let mut edited = original.clone();
    let at = first_row_digit(&edited);
    edited[at] = if edited[at] == b'9' { b'1' } else { edited[at] + 1 };
    std::fs::write(&input, &edited).unwrap();
    let before: Vec<_> = std::fs::read_dir(f.dir.join("out")).unwrap().map(|e| e.unwrap().file_name()).collect();
    let (code, err) = trust::restart(&f.cfg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("left-0.csv") && err.contains("differ"), "{err}");
    let after: Vec<_> = std::fs::read_dir(f.dir.join("out")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "the refusal touched the output");

    std::fs::write(&input, &original[..original.len() / 1000]).unwrap();
    let (code, err) = trust::restart(&f.cfg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("left-0.csv") && err.contains("shorter than the checkpoint's position"), "{err}");

    std::fs::write(&input, &original).unwrap();
    let (code, err) = trust::restart(&f.cfg);
    assert_eq!(code, 0, "the original file resumes: {err}");
    trust::assert_reference_answer(&f, "resumed after the input was put back");
}

#[test]
fn an_input_appended_after_its_position_resumes() {
    let f = trust::fixture(600_000);
    trust::run_and_kill(&f, 1, true);
    // A growing log: rows appended after the position (copies of rows near the end).
    let input = f.dir.join("right-1.csv");
    let text = std::fs::read_to_string(&input).unwrap();
    let tail: Vec<&str> = text.lines().rev().take(200).collect();
    let mut file = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
    for l in tail.iter().rev() {
        writeln!(file, "{l}").unwrap();
    }
    drop(file);
    let (code, err) = trust::restart(&f.cfg);
    assert_eq!(code, 0, "{err}");
    // The answer over the longer files, uninterrupted.
    let reference = trust::config(&f.dir, "ref2.toml", "", "out-ref2", "csv");
    trust::weft_ok(&["run", "--config", reference.to_str().unwrap(), "--quiet"]);
    let want = common::output_rows(&f.dir.join("out-ref2"), &f.header);
    assert!(want.len() > f.want.len(), "the appended rows join");
    let got = common::output_rows(&f.dir.join("out"), &f.header);
    common::assert_same_rows("resumed over an appended input", &got, &want, "");
}

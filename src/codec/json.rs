//! JSON text: a field as a JSON value, a JSON string literal, and the one
//! dead-letter record (`{"input","file","line","reason","raw"}`) that the streaming
//! sink and the batch join both write. Never allocates except for a control
//! character inside a string (rare); never panics.
//!
//! Invariants: the output is valid JSON for any input bytes (raw bytes that are not
//! UTF-8 are replaced lossily in dead letters); non-finite floats are strings.

use super::csv::{write_csv_cell, write_f64};
use crate::event::RowView;
use crate::schema::FieldType;

/// Appends field `i` of `row` as a JSON value (NULL = `null`). Non-finite floats,
/// which JSON cannot carry, are written as strings.
pub fn write_json_value(out: &mut Vec<u8>, row: RowView, ty: FieldType, i: usize) {
    if row.is_null(i) {
        out.extend_from_slice(b"null");
        return;
    }
    match ty {
        FieldType::F64 => {
            let v = f64::from_bits(row.slot(i));
            if v.is_finite() {
                write_f64(out, v);
            } else {
                out.push(b'"');
                write_f64(out, v);
                out.push(b'"');
            }
        }
        FieldType::String => write_json_str(out, row.str(i)),
        _ => write_csv_cell(out, row, ty, i),
    }
}

/// Appends a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c).as_bytes());
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// Appends one dead letter, one JSON object per line:
/// `{"input":..,"file":..,"line":..,"reason":..,"raw":..}`. `raw` is the malformed
/// record as read; bytes that are not UTF-8 become U+FFFD (the file stays JSON).
pub fn write_dead_letter(out: &mut Vec<u8>, input: &str, file: &str, line: u64, reason: &str, raw: &[u8]) {
    out.extend_from_slice(b"{\"input\":");
    write_json_str(out, input.as_bytes());
    out.extend_from_slice(b",\"file\":");
    write_json_str(out, file.as_bytes());
    out.extend_from_slice(b",\"line\":");
    out.extend_from_slice(itoa::Buffer::new().format(line).as_bytes());
    out.extend_from_slice(b",\"reason\":");
    write_json_str(out, reason.as_bytes());
    out.extend_from_slice(b",\"raw\":");
    write_json_str(out, String::from_utf8_lossy(raw).as_bytes());
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_is_one_json_object() {
        let mut out = Vec::new();
        write_dead_letter(&mut out, "imp", "a \"b\".csv", 7, "bad\n", b"x,\xff");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["line"], 7);
        assert_eq!(v["file"], "a \"b\".csv");
        assert!(out.ends_with(b"}\n"));
    }
}

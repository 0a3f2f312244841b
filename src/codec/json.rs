//! JSON text: a field as a JSON value, a JSON string literal, and the one
//! dead-letter record (`{"input","file","line","reason","raw"}`) that the streaming
//! sink and the batch join both write. Never allocates except for a control
//! character inside a string (rare); never panics.
//!
//! Invariants: the output is valid JSON for any input bytes (a dead letter's `raw`
//! that is not UTF-8 is written lossily, and exactly in `raw_base64`); non-finite
//! floats are strings.

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
/// record as read; when it is not UTF-8, `raw` has U+FFFD for the bad bytes (the file
/// stays JSON) and a further field `raw_base64` holds the exact bytes.
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
    match std::str::from_utf8(raw) {
        Ok(text) => write_json_str(out, text.as_bytes()),
        Err(_) => {
            write_json_str(out, String::from_utf8_lossy(raw).as_bytes());
            out.extend_from_slice(b",\"raw_base64\":\"");
            write_base64(out, raw);
            out.push(b'"');
        }
    }
    out.extend_from_slice(b"}\n");
}

/// Appends `bytes` in standard base64 (RFC 4648 alphabet, `=` padding).
pub fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.reserve(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for k in 0..4 {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * k)) as usize & 63]);
            } else {
                out.push(b'=');
            }
        }
    }
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
        assert_eq!(v["raw"], "x,\u{fffd}");
        assert_eq!(v["raw_base64"], "eCz/");
        out.clear();
        write_dead_letter(&mut out, "imp", "f", 1, "r", "é".as_bytes());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v["raw"].as_str(), v.get("raw_base64")), (Some("é"), None));
    }

    #[test]
    fn base64_pads() {
        for (bytes, want) in [(&b""[..], ""), (b"f", "Zg=="), (b"fo", "Zm8="), (b"foo", "Zm9v"), (b"foob", "Zm9vYg==")]
        {
            let mut out = Vec::new();
            write_base64(&mut out, bytes);
            assert_eq!(out, want.as_bytes());
        }
    }
}

//! CSV cells: parsing one text cell into a field of a row record, and writing one
//! field back as a cell. Never allocates, never panics on any byte input; the
//! parse error is a short static reason for the dead-letter file.
//!
//! Invariants: an empty cell is NULL; an empty string is written as `""` so it
//! does not read back as NULL; integers parse without overflow (an overflow is an
//! error, never a wrapped value).

use crate::event::{RowBuilder, RowView};
use crate::schema::FieldType;

/// Parses one text cell (CSV) of type `ty` into field `i` of `b`. An empty cell is
/// NULL. The error is a short reason for the dead-letter file.
pub fn parse_cell(b: &mut RowBuilder, i: usize, ty: FieldType, cell: &[u8]) -> Result<(), &'static str> {
    if cell.is_empty() {
        return Ok(());
    }
    match ty {
        FieldType::I32 => {
            let v = parse_i64(cell).ok_or("not an i32")?;
            if v < i32::MIN as i64 || v > i32::MAX as i64 {
                return Err("i32 out of range");
            }
            b.set_i64(i, v);
        }
        FieldType::I64 => b.set_i64(i, parse_i64(cell).ok_or("not an i64")?),
        FieldType::U32 => {
            let v = parse_u64(cell).ok_or("not a u32")?;
            if v > u32::MAX as u64 {
                return Err("u32 out of range");
            }
            b.set_u64(i, v);
        }
        FieldType::U64 => b.set_u64(i, parse_u64(cell).ok_or("not a u64")?),
        FieldType::F64 => {
            let s = std::str::from_utf8(cell).map_err(|_| "not an f64")?.trim();
            let v = s.parse::<f64>().map_err(|_| "not an f64")?;
            // `1e400` parses as infinity: only the words for it (which weft writes) may.
            if v.is_infinite() && !is_infinity_word(s) {
                return Err("f64 out of range");
            }
            b.set_f64(i, v);
        }
        FieldType::Bool => b.set_bool(
            i,
            match cell {
                b"true" | b"TRUE" | b"True" | b"1" => true,
                b"false" | b"FALSE" | b"False" | b"0" => false,
                _ => return Err("not a bool"),
            },
        ),
        FieldType::String => {
            std::str::from_utf8(cell).map_err(|_| "string is not valid UTF-8")?;
            b.set_str(i, cell)?;
        }
    }
    Ok(())
}

/// `inf` or `infinity` in any case, with an optional sign: what Rust's f64 parser
/// takes for infinity (and `write_f64` writes as `inf`).
fn is_infinity_word(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    s.eq_ignore_ascii_case("inf") || s.eq_ignore_ascii_case("infinity")
}

/// A value quoted in a dead-letter reason holds at most this many bytes of it.
pub const REASON_VALUE_BYTES_MAX: usize = 64;

/// `value` for a dead-letter reason: Debug-quoted text (lossy UTF-8), cut after
/// [`REASON_VALUE_BYTES_MAX`] bytes with its true length, so a 20 MB cell does not
/// make a 20 MB reason. Sources and the batch join build reasons with it alike.
pub fn quote_value(value: &[u8]) -> String {
    if value.len() <= REASON_VALUE_BYTES_MAX {
        return format!("{:?}", String::from_utf8_lossy(value));
    }
    let mut cut = REASON_VALUE_BYTES_MAX;
    while cut > 0 && (value[cut] & 0xc0) == 0x80 {
        cut -= 1; // do not split a UTF-8 character
    }
    format!("{:?}... ({} bytes)", String::from_utf8_lossy(&value[..cut]), value.len())
}

/// The dead-letter reason for a cell of column `column` that does not parse.
pub fn cell_reason(column: &str, reason: &str, cell: &[u8]) -> String {
    format!("column `{column}`: {reason}: {}", quote_value(cell))
}

/// Plain base-10 unsigned integer, optional leading '+'; no overflow.
#[inline]
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let s = s.strip_prefix(b"+").unwrap_or(s);
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(d as u64)?;
    }
    Some(v)
}

/// Plain base-10 signed integer; no overflow.
#[inline]
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if let Some(rest) = s.strip_prefix(b"-") {
        let v = parse_u64(rest)?;
        if rest.first() == Some(&b'+') {
            return None;
        }
        if v <= i64::MAX as u64 {
            Some(-(v as i64))
        } else if v == 1u64 << 63 {
            Some(i64::MIN)
        } else {
            None
        }
    } else {
        let v = parse_u64(s)?;
        i64::try_from(v).ok()
    }
}

/// Appends field `i` of `row` as a CSV cell (NULL = empty; strings quoted when needed).
pub fn write_csv_cell(out: &mut Vec<u8>, row: RowView, ty: FieldType, i: usize) {
    if row.is_null(i) {
        return;
    }
    match ty {
        FieldType::I32 | FieldType::I64 => out.extend_from_slice(itoa::Buffer::new().format(row.i64(i)).as_bytes()),
        FieldType::U32 | FieldType::U64 => out.extend_from_slice(itoa::Buffer::new().format(row.slot(i)).as_bytes()),
        FieldType::F64 => write_f64(out, f64::from_bits(row.slot(i))),
        FieldType::Bool => out.extend_from_slice(if row.slot(i) != 0 { b"true" } else { b"false" }),
        FieldType::String => {
            let s = row.str(i);
            // An empty string would read back as NULL: quote it so it does not.
            if s.is_empty() || s.iter().any(|&c| matches!(c, b',' | b'"' | b'\n' | b'\r')) {
                out.push(b'"');
                for &c in s {
                    if c == b'"' {
                        out.push(b'"');
                    }
                    out.push(c);
                }
                out.push(b'"');
            } else {
                out.extend_from_slice(s);
            }
        }
    }
}

/// A float as text: the shortest form that reads back the same (ryu), or
/// `NaN`, `inf`, `-inf`.
pub(crate) fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(v).as_bytes());
    } else if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v > 0.0 {
        out.extend_from_slice(b"inf");
    } else {
        out.extend_from_slice(b"-inf");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::json::write_json_value;

    #[test]
    fn round_trip_and_nulls() {
        let mut b = RowBuilder::new();
        b.begin(4);
        b.set_i64(0, -5);
        b.set_str(2, b"a,b").unwrap();
        b.set_f64(3, 1.5);
        let r = RowView(b.bytes());
        assert!(!r.is_null(0) && r.is_null(1) && !r.is_null(2));
        assert_eq!(r.i64(0), -5);
        assert_eq!(r.str(2), b"a,b");
        let mut out = Vec::new();
        write_csv_cell(&mut out, r, FieldType::String, 2);
        assert_eq!(out, b"\"a,b\"");
        out.clear();
        write_json_value(&mut out, r, FieldType::I64, 1);
        assert_eq!(out, b"null");
    }

    #[test]
    fn integer_parsing_edges() {
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"1x"), None);
        assert_eq!(parse_i64(b"-+1"), None);
        let mut b = RowBuilder::new();
        b.begin(1);
        assert_eq!(parse_cell(&mut b, 0, FieldType::U32, b"4294967296"), Err("u32 out of range"));
        assert_eq!(parse_cell(&mut b, 0, FieldType::String, b"\xff"), Err("string is not valid UTF-8"));
    }

    #[test]
    fn f64_overflow_is_an_error_but_infinity_words_read() {
        let mut b = RowBuilder::new();
        b.begin(1);
        for bad in [&b"1e400"[..], b"-1e400", b" 2e308 "] {
            assert_eq!(parse_cell(&mut b, 0, FieldType::F64, bad), Err("f64 out of range"), "{bad:?}");
        }
        for good in [&b"inf"[..], b"-inf", b"+Infinity", b"NaN", b"1e308", b"1e-400"] {
            assert_eq!(parse_cell(&mut b, 0, FieldType::F64, good), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn quoted_values_are_bounded() {
        assert_eq!(quote_value(b"ab"), "\"ab\"");
        let long = "é".repeat(100);
        let q = quote_value(long.as_bytes());
        assert!(q.len() < REASON_VALUE_BYTES_MAX + 30 && q.ends_with("... (200 bytes)"), "{q}");
        assert!(!q.contains('\u{fffd}'), "{q}");
    }
}

//! The in-memory and in-state representation of one row: a compact, self-contained
//! byte record that needs no schema lookups to copy, hash or compare.
//!
//! Layout (little endian), for a schema of `n` fields:
//! ```text
//!   u64            null bitmap: bit i set = field i is NULL
//!   n x u64        one slot per field: i32/i64 as i64 bits, u32/u64 as u64,
//!                  f64 bits, bool 0/1, string = offset (low 32) | len (high 32)
//!   ...            string bytes, referenced by offset from the record start
//! ```
//! The same record is carried in batches over the rings, stored in join state and
//! formatted by the sinks. A key is encoded separately (see [`encode_key`]) so that
//! equal keys have equal bytes on both inputs.
//!
//! Nothing here allocates per row once the builder's buffer has grown to the largest
//! row; nothing panics on any byte input given to the parsers.

use crate::schema::{FieldType, Schema, FIELDS_MAX};

/// Which input a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Side {
    Left = 0,
    Right = 1,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Left => Side::Right,
            Side::Right => Side::Left,
        }
    }
    pub fn idx(self) -> usize {
        self as usize
    }
}

/// Where the operator's output goes.
pub trait Emit {
    /// A matching pair; `arrival_ns` is the arrival of the later of the two rows.
    fn pair(&mut self, l: RowView, r: RowView, arrival_ns: u64);
    /// A row that never matched, leaving state (outer joins only).
    fn unmatched(&mut self, side: Side, row: RowView);
}

/// A row record is at most this many bytes (string offsets are u32).
pub const ROW_BYTES_MAX: usize = 1 << 24;

const HEADER_BYTES: usize = 8;

/// Builds one row record in a reusable buffer.
#[derive(Default)]
pub struct RowBuilder {
    buf: Vec<u8>,
    fields: usize,
}

impl RowBuilder {
    pub fn new() -> RowBuilder {
        RowBuilder::default()
    }

    /// Starts a row of `fields` fields, all NULL.
    pub fn begin(&mut self, fields: usize) {
        debug_assert!(fields <= FIELDS_MAX);
        self.fields = fields;
        self.buf.clear();
        let nulls: u64 = if fields == 64 { u64::MAX } else { (1u64 << fields) - 1 };
        self.buf.extend_from_slice(&nulls.to_le_bytes());
        self.buf.resize(HEADER_BYTES + 8 * fields, 0);
    }

    #[inline]
    fn set_slot(&mut self, i: usize, v: u64) {
        debug_assert!(i < self.fields);
        let at = HEADER_BYTES + 8 * i;
        self.buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
        let mut nulls = u64::from_le_bytes(self.buf[0..8].try_into().unwrap());
        nulls &= !(1u64 << i);
        self.buf[0..8].copy_from_slice(&nulls.to_le_bytes());
    }

    #[inline]
    pub fn set_i64(&mut self, i: usize, v: i64) {
        self.set_slot(i, v as u64)
    }
    #[inline]
    pub fn set_u64(&mut self, i: usize, v: u64) {
        self.set_slot(i, v)
    }
    #[inline]
    pub fn set_f64(&mut self, i: usize, v: f64) {
        self.set_slot(i, v.to_bits())
    }
    #[inline]
    pub fn set_bool(&mut self, i: usize, v: bool) {
        self.set_slot(i, v as u64)
    }

    /// Appends string bytes; fails when the record would exceed [`ROW_BYTES_MAX`].
    pub fn set_str(&mut self, i: usize, s: &[u8]) -> Result<(), &'static str> {
        let off = self.buf.len();
        if off + s.len() > ROW_BYTES_MAX {
            return Err("row larger than 16 MiB");
        }
        self.buf.extend_from_slice(s);
        self.set_slot(i, (off as u64) | ((s.len() as u64) << 32));
        Ok(())
    }

    /// Sets field `i` from a scalar [`Value`].
    pub fn set_value(&mut self, i: usize, v: &Value) -> Result<(), &'static str> {
        match v {
            Value::Null => Ok(()),
            Value::Int(x) => {
                self.set_i64(i, *x);
                Ok(())
            }
            Value::UInt(x) => {
                self.set_u64(i, *x);
                Ok(())
            }
            Value::Float(x) => {
                self.set_f64(i, *x);
                Ok(())
            }
            Value::Bool(x) => {
                self.set_bool(i, *x);
                Ok(())
            }
            Value::Str(s) => self.set_str(i, s.as_bytes()),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// A read-only view of a row record.
#[derive(Clone, Copy)]
pub struct RowView<'a>(pub &'a [u8]);

impl<'a> RowView<'a> {
    #[inline]
    pub fn is_null(&self, i: usize) -> bool {
        let nulls = u64::from_le_bytes(self.0[0..8].try_into().unwrap());
        nulls & (1u64 << i) != 0
    }
    #[inline]
    pub fn slot(&self, i: usize) -> u64 {
        let at = HEADER_BYTES + 8 * i;
        u64::from_le_bytes(self.0[at..at + 8].try_into().unwrap())
    }
    #[inline]
    pub fn i64(&self, i: usize) -> i64 {
        self.slot(i) as i64
    }
    #[inline]
    pub fn str(&self, i: usize) -> &'a [u8] {
        let s = self.slot(i);
        let off = (s & 0xffff_ffff) as usize;
        let len = (s >> 32) as usize;
        &self.0[off..off + len]
    }

    /// The field as a [`Value`] (allocates for strings; not for the hot path).
    pub fn value(&self, ty: FieldType, i: usize) -> Value {
        if self.is_null(i) {
            return Value::Null;
        }
        match ty {
            FieldType::I32 | FieldType::I64 => Value::Int(self.i64(i)),
            FieldType::U32 | FieldType::U64 => Value::UInt(self.slot(i)),
            FieldType::F64 => Value::Float(f64::from_bits(self.slot(i))),
            FieldType::Bool => Value::Bool(self.slot(i) != 0),
            FieldType::String => Value::Str(String::from_utf8_lossy(self.str(i)).into_owned()),
        }
    }
}

/// A scalar value, for parsing JSON and for tests and the batch join.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
}

/// Encodes the key of `row` into `out` (cleared first). Returns false when a key
/// field is NULL: such a row never matches.
///
/// Numeric and bool fields take their 8-byte slot; strings a u32 length and their
/// bytes. Key types are equal on both inputs (checked by the config), so equal keys
/// encode to equal bytes.
#[inline]
pub fn encode_key(row: RowView, schema: &Schema, out: &mut Vec<u8>) -> bool {
    out.clear();
    for &k in &schema.key {
        if row.is_null(k) {
            return false;
        }
        match schema.fields[k].ty {
            FieldType::String => {
                let s = row.str(k);
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s);
            }
            FieldType::F64 => {
                // Keys compare as values: -0.0 equals 0.0, and every NaN is one NaN.
                let v = f64::from_bits(row.slot(k));
                let v = if v == 0.0 {
                    0.0
                } else if v.is_nan() {
                    f64::NAN
                } else {
                    v
                };
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
            _ => out.extend_from_slice(&row.slot(k).to_le_bytes()),
        }
    }
    true
}

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
            let s = std::str::from_utf8(cell).map_err(|_| "not an f64")?;
            b.set_f64(i, s.trim().parse::<f64>().map_err(|_| "not an f64")?);
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

/// Reads the event time of a row, which must be a non-NULL integer that fits i64.
#[inline]
pub fn event_time(row: RowView, schema: &Schema) -> Result<i64, &'static str> {
    let t = schema.time;
    if row.is_null(t) {
        return Err("event time is NULL");
    }
    match schema.fields[t].ty {
        FieldType::U64 => i64::try_from(row.slot(t)).map_err(|_| "event time does not fit i64"),
        _ => Ok(row.i64(t)),
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

fn write_f64(out: &mut Vec<u8>, v: f64) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Field;

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
    fn keys_equal_across_inputs_and_null_keys() {
        let s1 = Schema::new(
            "l",
            vec![Field::new("k", FieldType::String), Field::new("t", FieldType::I64)],
            &["k".into()],
            "t",
        )
        .unwrap();
        let s2 = Schema::new(
            "r",
            vec![Field::new("t", FieldType::I64), Field::new("k", FieldType::String)],
            &["k".into()],
            "t",
        )
        .unwrap();
        let mut a = RowBuilder::new();
        a.begin(2);
        a.set_str(0, b"x").unwrap();
        let mut b = RowBuilder::new();
        b.begin(2);
        b.set_str(1, b"x").unwrap();
        let (mut ka, mut kb) = (Vec::new(), Vec::new());
        assert!(encode_key(RowView(a.bytes()), &s1, &mut ka));
        assert!(encode_key(RowView(b.bytes()), &s2, &mut kb));
        assert_eq!(ka, kb);
        b.begin(2);
        assert!(!encode_key(RowView(b.bytes()), &s2, &mut kb));
    }
}

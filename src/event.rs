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
//! row. Text is not this module's business: parsing a cell and formatting a field
//! are in `codec` (the layer above), which builds and reads rows through this API.

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Field;

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

//! JSON-lines partitions: one object per line; keys match fields by name or alias;
//! a field's missing key takes its default, else NULL, as `null` does (a key field's
//! too: a NULL key, SEMANTICS.md); a line with no key for the time field is a dead
//! letter; unknown keys are ignored (as extra CSV columns are) and counted. A line that is not a JSON
//! object, an object with a key twice (which value is meant?), or a value of the
//! wrong type, becomes a dead letter naming the line. A UTF-8 BOM at the start of
//! the file is ignored; blank lines count as lines but carry no row.
//!
//! Reading is bounded as for CSV: a line longer than
//! [`LINE_BYTES_MAX`](super::LINE_BYTES_MAX) is skipped while it is read and is a
//! dead letter holding its first [`RAW_BYTES_MAX`] bytes.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::Value as J;

use super::lines::LineBuf;
use super::{
    io_err, long_line_reason, truncate_raw, wrong_pos, PollStatus, ReadLimits, Source, SourceError, SourceItem,
    SourcePos, RAW_BYTES_MAX,
};
use crate::codec::csv::quote_value;
use crate::event::Side;
use crate::event::{event_time, RowBuilder, RowView};
use crate::schema::{FieldType, Schema};

const BOM: &[u8] = b"\xef\xbb\xbf";

pub struct JsonlSource {
    path: PathBuf,
    side: Side,
    index: u32,
    schema: Schema,
    limits: ReadLimits,
    lb: LineBuf,
    line_no: u64,
    builder: RowBuilder,
    /// The kept start of an over-long line.
    raw: Vec<u8>,
    blank_lines: u64,
    done: bool,
    /// The source ends at the first line that starts at or past this byte (a chunk
    /// of a split file, source/split.rs); `u64::MAX` otherwise.
    stop: u64,
}

impl JsonlSource {
    pub fn open(path: &Path, side: Side, index: u32, schema: Schema) -> Result<JsonlSource, SourceError> {
        JsonlSource::open_with(path, side, index, schema, ReadLimits::default())
    }

    /// [`JsonlSource::open`] with other read limits (tests).
    pub fn open_with(
        path: &Path,
        side: Side,
        index: u32,
        schema: Schema,
        limits: ReadLimits,
    ) -> Result<JsonlSource, SourceError> {
        let file = File::open(path).map_err(io_err(path, "open"))?;
        Ok(JsonlSource {
            path: path.to_path_buf(),
            side,
            index,
            schema,
            lb: LineBuf::new(file, &limits),
            limits,
            line_no: 0,
            builder: RowBuilder::new(),
            raw: Vec::new(),
            blank_lines: 0,
            done: false,
            stop: u64::MAX,
        })
    }

    /// Ends the source at the first line that starts at or past `byte`.
    pub fn stop_at(&mut self, byte: u64) {
        self.stop = byte;
    }

    /// Blank lines read so far (tests: rows + dead letters + blank lines = lines).
    pub fn blank_lines(&self) -> u64 {
        self.blank_lines
    }

    /// Bytes the reader's buffers hold allocated (tests of the memory bound).
    pub fn buffer_bytes(&self) -> usize {
        self.lb.capacity() + self.raw.capacity()
    }
}

/// A JSON line as read: an object (first value of each key), or why it is not one.
enum Line {
    Object(serde_json::Map<String, J>),
    NotObject,
    /// The first key found twice.
    Duplicate(String),
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = Line;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
    fn visit_str<E>(self, _: &str) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
    fn visit_unit<E>(self) -> Result<Line, E> {
        Ok(Line::NotObject)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Line, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Line::NotObject)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line, A::Error> {
        let mut obj = serde_json::Map::new();
        let mut dup = None;
        while let Some(k) = map.next_key::<String>()? {
            let v: J = map.next_value()?;
            match obj.entry(k) {
                Entry::Vacant(e) => {
                    e.insert(v);
                }
                Entry::Occupied(e) => {
                    dup.get_or_insert_with(|| e.key().clone());
                }
            }
        }
        Ok(match dup {
            Some(k) => Line::Duplicate(k),
            None => Line::Object(obj),
        })
    }
}

impl<'de> Deserialize<'de> for Line {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Line, D::Error> {
        d.deserialize_any(LineVisitor)
    }
}

/// Encodes one JSON line into `b`: its event time, and how many of its keys no field
/// answers to (ignored, counted in the report). Err is the dead-letter reason: also a
/// line with no key (nor alias) for the time field.
pub fn encode_json_line(line: &[u8], schema: &Schema, b: &mut RowBuilder) -> Result<(i64, u32), String> {
    let obj = match serde_json::from_slice::<Line>(line).map_err(|e| format!("not valid JSON: {e}"))? {
        Line::Object(m) => m,
        Line::NotObject => return Err("not a JSON object".into()),
        Line::Duplicate(k) => return Err(format!("duplicate key {}", quote_key(&k))),
    };
    b.begin(schema.fields.len());
    let mut found = 0usize;
    for (i, f) in schema.fields.iter().enumerate() {
        let Some(v) = json_value(&obj, f)? else {
            // A missing key is NULL for every field (SEMANTICS.md), so a line without its
            // key field is a NULL-key row; without its time field it cannot be placed in
            // time: a dead letter, saying why.
            if schema.time == i {
                return Err(format!("no key `{}`, the time field of input `{}`", f.name, schema.name));
            }
            if let Some(d) = crate::evolve::field_default(f) {
                b.set_value(i, &d).map_err(|e| format!("field `{}`: default: {e}", f.name))?;
            }
            continue;
        };
        found += 1;
        let wrong = || format!("field `{}`: expected {}, found {}", f.name, f.ty.name(), quote_json(v));
        match (f.ty, v) {
            (_, J::Null) => {}
            (FieldType::I32, J::Number(n)) => {
                let x = n.as_i64().filter(|x| i32::try_from(*x).is_ok()).ok_or_else(wrong)?;
                b.set_i64(i, x)
            }
            (FieldType::I64, J::Number(n)) => b.set_i64(i, n.as_i64().ok_or_else(wrong)?),
            (FieldType::U32, J::Number(n)) => {
                let x = n.as_u64().filter(|x| u32::try_from(*x).is_ok()).ok_or_else(wrong)?;
                b.set_u64(i, x)
            }
            (FieldType::U64, J::Number(n)) => b.set_u64(i, n.as_u64().ok_or_else(wrong)?),
            // serde_json refuses a number that overflows f64 (`1e400`) as invalid JSON.
            (FieldType::F64, J::Number(n)) => b.set_f64(i, n.as_f64().filter(|x| x.is_finite()).ok_or_else(wrong)?),
            (FieldType::Bool, J::Bool(x)) => b.set_bool(i, *x),
            (FieldType::String, J::String(s)) => b.set_str(i, s.as_bytes()).map_err(|e| e.to_string())?,
            _ => return Err(wrong()),
        }
    }
    let ts = event_time(RowView(b.bytes()), schema)
        .map_err(|r| format!("field `{}`: {r}", schema.fields[schema.time].name))?;
    Ok((ts, (obj.len() - found) as u32))
}

/// The value of field `f` in `obj`, under its name or one of its `aliases` (a line
/// written before a rename); `None` when absent (the field's default or NULL). Two
/// keys answering one field are ambiguous: Err is the dead-letter reason.
fn json_value<'a>(obj: &'a serde_json::Map<String, J>, f: &crate::schema::Field) -> Result<Option<&'a J>, String> {
    let mut found = std::iter::once(&f.name).chain(&f.aliases).filter_map(|n| obj.get_key_value(n.as_str()));
    match (found.next(), found.next()) {
        (Some((a, _)), Some((b, _))) => {
            Err(format!("keys {} and {} both answer to field `{}`", quote_key(a), quote_key(b), f.name))
        }
        (v, _) => Ok(v.map(|(_, v)| v)),
    }
}

/// A key for a reason: `k` in backquotes, cut like a quoted value when long.
fn quote_key(k: &str) -> String {
    if k.len() <= crate::codec::csv::REASON_VALUE_BYTES_MAX {
        format!("`{k}`")
    } else {
        format!("`{}`", quote_value(k.as_bytes()))
    }
}

/// A JSON value for a reason, as JSON text, cut like a quoted value when long.
fn quote_json(v: &J) -> String {
    let s = v.to_string();
    if s.len() <= crate::codec::csv::REASON_VALUE_BYTES_MAX {
        s
    } else {
        quote_value(s.as_bytes())
    }
}

impl Source for JsonlSource {
    fn poll(
        &mut self,
        max_rows: usize,
        _now_ns: u64,
        out: &mut dyn FnMut(SourceItem<'_>),
    ) -> Result<PollStatus, SourceError> {
        if self.done {
            return Ok(PollStatus::Done);
        }
        let limit = self.limits.line_bytes_max;
        let mut n = 0;
        let mut scanned = 0;
        while n < max_rows {
            if scanned == 0 && self.lb.offset() >= self.stop {
                self.done = true;
                return Ok(PollStatus::Done);
            }
            let a = self.lb.avail();
            let (line_end, consume) = match memchr::memchr(b'\n', &a[scanned..]) {
                Some(p) => (scanned + p, scanned + p + 1),
                None if a.len() > limit => {
                    let line_no = self.line_no + 1;
                    let len = self.lb.skip_line(&mut self.raw, RAW_BYTES_MAX).map_err(io_err(&self.path, "read"))?;
                    self.line_no = line_no;
                    let reason = long_line_reason(len, limit);
                    out(SourceItem::Dead { side: self.side, line: line_no, reason, raw: truncate_raw(&self.raw) });
                    n += 1;
                    scanned = 0;
                    continue;
                }
                None if !self.lb.at_eof() => {
                    scanned = a.len();
                    self.lb.fill().map_err(io_err(&self.path, "read"))?;
                    continue;
                }
                None if a.is_empty() => {
                    self.done = true;
                    return Ok(PollStatus::Done);
                }
                None => (a.len(), a.len()),
            };
            scanned = 0;
            if line_end > limit {
                // Whole in the buffer, but over the limit all the same.
                let line_no = self.line_no + 1;
                let len = self.lb.skip_line(&mut self.raw, RAW_BYTES_MAX).map_err(io_err(&self.path, "read"))?;
                self.line_no = line_no;
                out(SourceItem::Dead {
                    side: self.side,
                    line: line_no,
                    reason: long_line_reason(len, limit),
                    raw: truncate_raw(&self.raw),
                });
                n += 1;
                continue;
            }
            let at_start = self.lb.offset() == 0;
            let a = self.lb.avail();
            let mut line = &a[..line_end];
            if at_start {
                line = line.strip_prefix(BOM).unwrap_or(line);
            }
            self.line_no += 1;
            n += 1;
            while let Some((&c, rest)) = line.split_last() {
                if c == b'\n' || c == b'\r' {
                    line = rest;
                } else {
                    break;
                }
            }
            if line.iter().all(|c| c.is_ascii_whitespace()) {
                self.blank_lines += 1;
            } else {
                match encode_json_line(line, &self.schema, &mut self.builder) {
                    Ok((ts, extra)) => out(SourceItem::Row {
                        side: self.side,
                        ts,
                        row: self.builder.bytes(),
                        intended_ns: None,
                        extra,
                    }),
                    Err(reason) => out(SourceItem::Dead { side: self.side, line: self.line_no, reason, raw: line }),
                }
            }
            self.lb.consume(consume);
        }
        Ok(PollStatus::Rows)
    }

    fn partitions(&self) -> Vec<(Side, u32)> {
        vec![(self.side, self.index)]
    }

    fn position(&self) -> SourcePos {
        SourcePos::Jsonl { byte: self.lb.offset(), line: self.line_no }
    }

    fn seek(&mut self, pos: &SourcePos) -> Result<(), SourceError> {
        let SourcePos::Jsonl { byte, line } = *pos else {
            return Err(wrong_pos(&self.path.display().to_string(), pos));
        };
        self.lb.seek(byte).map_err(io_err(&self.path, "seek"))?;
        self.line_no = line;
        self.done = false;
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

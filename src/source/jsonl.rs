//! JSON-lines partitions: one object per line; a missing key or `null` is NULL;
//! unknown keys are ignored (as extra CSV columns are). A line that is not a JSON
//! object, or a value of the wrong type, becomes a dead letter naming the line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value as J;

use std::io::{Seek, SeekFrom};

use super::{io_err, wrong_pos, PollStatus, Source, SourceError, SourceItem, SourcePos};
use crate::event::Side;
use crate::event::{event_time, RowBuilder, RowView};
use crate::schema::{FieldType, Schema};

pub struct JsonlSource {
    path: PathBuf,
    side: Side,
    index: u32,
    schema: Schema,
    reader: BufReader<File>,
    line_buf: Vec<u8>,
    line_no: u64,
    /// Byte offset of the next line.
    byte: u64,
    builder: RowBuilder,
    done: bool,
}

impl JsonlSource {
    pub fn open(path: &Path, side: Side, index: u32, schema: Schema) -> Result<JsonlSource, SourceError> {
        let file = File::open(path).map_err(io_err(path, "open"))?;
        Ok(JsonlSource {
            path: path.to_path_buf(),
            side,
            index,
            schema,
            reader: BufReader::with_capacity(1 << 20, file),
            line_buf: Vec::new(),
            line_no: 0,
            byte: 0,
            builder: RowBuilder::new(),
            done: false,
        })
    }
}

/// Encodes one JSON line into `b`; Err is the dead-letter reason.
pub fn encode_json_line(line: &[u8], schema: &Schema, b: &mut RowBuilder) -> Result<i64, String> {
    let v: J = serde_json::from_slice(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let obj = match v {
        J::Object(m) => m,
        _ => return Err("not a JSON object".into()),
    };
    b.begin(schema.fields.len());
    for (i, f) in schema.fields.iter().enumerate() {
        let Some(v) = obj.get(&f.name) else { continue };
        let wrong = || format!("field `{}`: expected {}, found {}", f.name, f.ty.name(), v);
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
            (FieldType::F64, J::Number(n)) => b.set_f64(i, n.as_f64().ok_or_else(wrong)?),
            (FieldType::Bool, J::Bool(x)) => b.set_bool(i, *x),
            (FieldType::String, J::String(s)) => b.set_str(i, s.as_bytes()).map_err(|e| e.to_string())?,
            _ => return Err(wrong()),
        }
    }
    event_time(RowView(b.bytes()), schema).map_err(|r| format!("field `{}`: {r}", schema.fields[schema.time].name))
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
        for _ in 0..max_rows {
            self.line_buf.clear();
            let n = self.reader.read_until(b'\n', &mut self.line_buf).map_err(io_err(&self.path, "read"))?;
            if n == 0 {
                self.done = true;
                return Ok(PollStatus::Done);
            }
            self.line_no += 1;
            self.byte += n as u64;
            let mut line = &self.line_buf[..];
            while let Some((&c, rest)) = line.split_last() {
                if c == b'\n' || c == b'\r' {
                    line = rest;
                } else {
                    break;
                }
            }
            if line.iter().all(|c| c.is_ascii_whitespace()) {
                continue;
            }
            match encode_json_line(line, &self.schema, &mut self.builder) {
                Ok(ts) => out(SourceItem::Row { side: self.side, ts, row: self.builder.bytes(), intended_ns: None }),
                Err(reason) => out(SourceItem::Dead { side: self.side, line: self.line_no, reason, raw: line }),
            }
        }
        Ok(PollStatus::Rows)
    }

    fn partitions(&self) -> Vec<(Side, u32)> {
        vec![(self.side, self.index)]
    }

    fn position(&self) -> SourcePos {
        SourcePos::Jsonl { byte: self.byte, line: self.line_no }
    }

    fn seek(&mut self, pos: &SourcePos) -> Result<(), SourceError> {
        let SourcePos::Jsonl { byte, line } = *pos else {
            return Err(wrong_pos(&self.path.display().to_string(), pos));
        };
        self.reader.seek(SeekFrom::Start(byte)).map_err(io_err(&self.path, "seek"))?;
        self.byte = byte;
        self.line_no = line;
        self.done = false;
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

//! CSV partitions: header line required, columns matched by name, extra columns
//! ignored, empty cell = NULL. RFC 4180 quoting is handled by the `csv` crate.
//!
//! Malformed rows (wrong column count, a cell that does not parse as its type, a
//! NULL or out-of-range event time, bad UTF-8 in a string) become dead letters
//! naming the line; they never stop the job unless the shard runs in strict mode.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{io_err, map_columns, wrong_pos, PollStatus, Source, SourceError, SourceItem, SourcePos};
use crate::codec::csv::parse_cell;
use crate::event::Side;
use crate::event::{event_time, RowBuilder, RowView};
use crate::schema::Schema;

pub struct CsvSource {
    path: PathBuf,
    side: Side,
    index: u32,
    schema: Schema,
    reader: csv::Reader<File>,
    record: csv::ByteRecord,
    cols: Vec<usize>,
    header_len: usize,
    builder: RowBuilder,
    raw: Vec<u8>,
    done: bool,
}

impl CsvSource {
    pub fn open(path: &Path, side: Side, index: u32, schema: Schema) -> Result<CsvSource, SourceError> {
        let file = File::open(path).map_err(io_err(path, "open"))?;
        let mut reader =
            csv::ReaderBuilder::new().has_headers(true).flexible(true).buffer_capacity(1 << 20).from_reader(file);
        let header = reader.byte_headers().map_err(|e| SourceError::Format {
            path: path.to_path_buf(),
            message: format!("cannot read the header line: {e}"),
        })?;
        if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
            return Err(SourceError::Format {
                path: path.to_path_buf(),
                message: "empty file: a header line is required".into(),
            });
        }
        let cells: Vec<&[u8]> = header.iter().collect();
        let cols = map_columns(path, &schema, &cells)?;
        let header_len = header.len();
        Ok(CsvSource {
            path: path.to_path_buf(),
            side,
            index,
            schema,
            reader,
            record: csv::ByteRecord::new(),
            cols,
            header_len,
            builder: RowBuilder::new(),
            raw: Vec::new(),
            done: false,
        })
    }

    /// Encodes the current record; Err is the dead-letter reason.
    fn encode(&mut self) -> Result<i64, String> {
        let rec = &self.record;
        if rec.len() != self.header_len {
            return Err(format!("expected {} columns, found {}", self.header_len, rec.len()));
        }
        let b = &mut self.builder;
        b.begin(self.schema.fields.len());
        for (i, f) in self.schema.fields.iter().enumerate() {
            // Line ends (\r\n too) are the csv crate's; a \r inside a quoted cell is data.
            let cell = &rec[self.cols[i]];
            parse_cell(b, i, f.ty, cell)
                .map_err(|r| format!("column `{}`: {r}: {:?}", f.name, String::from_utf8_lossy(cell)))?;
        }
        event_time(RowView(b.bytes()), &self.schema)
            .map_err(|r| format!("column `{}`: {r}", self.schema.fields[self.schema.time].name))
    }
}

impl Source for CsvSource {
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
            let more = match self.reader.read_byte_record(&mut self.record) {
                Ok(m) => m,
                Err(e) => {
                    // The csv crate reports I/O errors here; anything else is a malformed row.
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    if let csv::ErrorKind::Io(_) = e.kind() {
                        return Err(SourceError::Format {
                            path: self.path.clone(),
                            message: format!("read error near line {line}: {e}"),
                        });
                    }
                    out(SourceItem::Dead { side: self.side, line, reason: e.to_string(), raw: b"" });
                    continue;
                }
            };
            if !more {
                self.done = true;
                return Ok(PollStatus::Done);
            }
            let line = self.record.position().map(|p| p.line()).unwrap_or(0);
            if self.record.len() == 1 && self.record[0].is_empty() {
                continue; // a blank line carries no row
            }
            match self.encode() {
                Ok(ts) => out(SourceItem::Row { side: self.side, ts, row: self.builder.bytes(), intended_ns: None }),
                Err(reason) => {
                    self.raw.clear();
                    for (i, c) in self.record.iter().enumerate() {
                        if i > 0 {
                            self.raw.push(b',');
                        }
                        self.raw.extend_from_slice(c);
                    }
                    out(SourceItem::Dead { side: self.side, line, reason, raw: &self.raw });
                }
            }
        }
        Ok(PollStatus::Rows)
    }

    fn partitions(&self) -> Vec<(Side, u32)> {
        vec![(self.side, self.index)]
    }

    fn position(&self) -> SourcePos {
        let p = self.reader.position();
        SourcePos::Csv { byte: p.byte(), line: p.line(), record: p.record() }
    }

    fn seek(&mut self, pos: &SourcePos) -> Result<(), SourceError> {
        let SourcePos::Csv { byte, line, record } = *pos else {
            return Err(wrong_pos(&self.path.display().to_string(), pos));
        };
        let mut p = csv::Position::new();
        p.set_byte(byte).set_line(line).set_record(record);
        self.reader.seek(p).map_err(|e| SourceError::Format {
            path: self.path.clone(),
            message: format!("cannot seek to byte {byte} (line {line}) from the checkpoint: {e}"),
        })?;
        self.done = false;
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

//! CSV partitions: header line required, columns matched by name, extra columns
//! ignored, empty cell = NULL (and `""` too: a documented choice), blank lines
//! skipped, a UTF-8 BOM at the start of the file ignored. Quoting is RFC 4180: a
//! cell that starts with `"` runs to the next lone `"` (`""` is a quote) and may span
//! lines; a line ends at `\n`, and a `\r` just before it (outside quotes) is part of
//! the line end. A `\r` anywhere else is data.
//!
//! Reading is bounded: the unread bytes sit in one [`LineBuf`] of at most
//! `line_bytes_max + read_bytes` bytes. A line longer than
//! [`LINE_BYTES_MAX`](super::LINE_BYTES_MAX) is skipped while it is read and is a
//! dead letter holding its first [`RAW_BYTES_MAX`] bytes. A quoted record that is
//! still open after [`RECORD_LINES_MAX`](super::RECORD_LINES_MAX) lines or
//! `line_bytes_max` bytes, or at the end of the file, is an unterminated quote: its
//! FIRST line is the dead letter and reading resumes at the line after it, so a
//! stray quote costs one row, not the rest of the file.
//!
//! Malformed rows (wrong column count, a cell that does not parse as its type, a
//! NULL or out-of-range event time, bad UTF-8 in a string) become dead letters
//! naming the record's first physical line (blank lines count); they never stop the
//! job unless the shard runs in strict mode. A dead letter's `raw` is the record's
//! bytes as in the file, line end excluded.
//!
//! Cost per row: one `memchr` for the line end and one byte loop over the line for
//! commas and quotes; unquoted cells are parsed in place. Quoted records are
//! decoded into a scratch buffer. Nothing is allocated per row once the buffers
//! have grown.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::lines::LineBuf;
use super::{
    absent_role, io_err, long_line_reason, map_columns, no_column_reason, truncate_raw, wrong_pos, Columns, LineCounts,
    PollStatus, ReadLimits, Source, SourceError, SourceItem, SourcePos, COLUMNS_MAX, RAW_BYTES_MAX,
};
use crate::codec::csv::{cell_reason, parse_cell};
use crate::event::Side;
use crate::event::{event_time, RowBuilder, RowView, Value};
use crate::schema::Schema;

const BOM: &[u8] = b"\xef\xbb\xbf";

/// What the next record turned out to be. Lengths are from the read position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// A record of `lines` physical lines: its text is `text` bytes (line end
    /// excluded), `consume` bytes with it. Its cells are in `Cells`.
    Record { text: usize, consume: usize, lines: u32 },
    /// An empty line (or only `\r`).
    Blank { consume: usize },
    /// The first line is over the limit; it has not been consumed.
    TooLong,
    /// A quote still open past the limits or at the end of the file: the first line
    /// (`text` bytes, `consume` with its line end) is the dead letter.
    Unterminated { text: usize, consume: usize },
    /// No more bytes.
    Eof,
}

/// The cells of the last record: the first `max` of them as ranges into the record
/// text (unquoted records) or into `dec` (records with a quote), and how many.
pub(crate) struct Cells {
    ranges: Vec<(u32, u32)>,
    count: usize,
    max: usize,
    /// Ranges point into `dec`, not into the record text.
    decoded: bool,
    dec: Vec<u8>,
}

impl Cells {
    /// Cells keeping the ranges of the first `max` cells of a record.
    pub(crate) fn new(max: usize) -> Cells {
        Cells { ranges: Vec::new(), count: 0, max, decoded: false, dec: Vec::new() }
    }

    #[inline]
    fn push(&mut self, s: usize, e: usize) {
        if self.ranges.len() < self.max {
            self.ranges.push((s as u32, e as u32));
        }
        self.count += 1;
    }

    #[inline]
    fn get<'a>(&'a self, text: &'a [u8], i: usize) -> &'a [u8] {
        let (s, e) = self.ranges[i];
        if self.decoded {
            &self.dec[s as usize..e as usize]
        } else {
            &text[s as usize..e as usize]
        }
    }
}

/// Outcome of decoding a record that holds a quote.
enum Quoted {
    Complete {
        text: usize,
        consume: usize,
        lines: u32,
    },
    /// The bytes ran out before the record ended.
    NeedMore,
    /// More than `lines_max` lines.
    TooManyLines,
}

/// Decodes the record at the start of `t` (which holds a quote) into `cells`,
/// RFC 4180 as the `csv` crate reads it: a quote opens a quoted part only at the
/// start of a cell; after the closing quote, bytes up to the next comma are
/// appended as they are. `eof`: no bytes follow `t`.
fn decode_quoted(t: &[u8], eof: bool, lines_max: u32, cells: &mut Cells) -> Quoted {
    cells.ranges.clear();
    cells.count = 0;
    cells.decoded = true;
    cells.dec.clear();
    let mut lines = 1u32;
    let mut i = 0;
    loop {
        let start = cells.dec.len();
        if t.get(i) == Some(&b'"') {
            i += 1;
            loop {
                let Some(q) = memchr::memchr(b'"', &t[i..]) else {
                    return Quoted::NeedMore;
                };
                let part = &t[i..i + q];
                lines += memchr::memchr_iter(b'\n', part).count() as u32;
                if lines > lines_max {
                    return Quoted::TooManyLines;
                }
                cells.dec.extend_from_slice(part);
                i += q + 1;
                match t.get(i) {
                    Some(b'"') => {
                        cells.dec.push(b'"');
                        i += 1;
                    }
                    Some(_) => break,
                    None if eof => break,
                    None => return Quoted::NeedMore, // `""` or the end: cannot tell yet
                }
            }
        }
        match memchr::memchr2(b',', b'\n', &t[i..]) {
            Some(j) => {
                let part = &t[i..i + j];
                cells.dec.extend_from_slice(part);
                i += j;
                if t[i] == b',' {
                    cells.push(start, cells.dec.len());
                    i += 1;
                    continue;
                }
                let cr = part.last() == Some(&b'\r');
                if cr {
                    cells.dec.pop();
                }
                cells.push(start, cells.dec.len());
                return Quoted::Complete { text: i - cr as usize, consume: i + 1, lines };
            }
            None if eof => {
                let part = &t[i..];
                cells.dec.extend_from_slice(part);
                let cr = part.last() == Some(&b'\r');
                if cr {
                    cells.dec.pop();
                }
                cells.push(start, cells.dec.len());
                return Quoted::Complete { text: t.len() - cr as usize, consume: t.len(), lines };
            }
            None => return Quoted::NeedMore,
        }
    }
}

/// Splits a line (line end excluded) at commas; false, with `cells` undefined, when
/// it holds a quote. A plain byte loop: lines are short, and one pass finding both
/// beats a `memchr` call per cell.
#[inline]
fn split_plain(line: &[u8], cells: &mut Cells) -> bool {
    cells.ranges.clear();
    cells.count = 0;
    cells.decoded = false;
    let mut s = 0;
    for (i, &c) in line.iter().enumerate() {
        if c == b',' {
            cells.push(s, i);
            s = i + 1;
        } else if c == b'"' {
            return false;
        }
    }
    cells.push(s, line.len());
    true
}

/// Reads the next record from `lb` into `cells` (see [`Scan`]).
fn scan(lb: &mut LineBuf, limits: &ReadLimits, cells: &mut Cells) -> std::io::Result<Scan> {
    let limit = limits.line_bytes_max;
    // The first line: its end within the limit, or the end of the file.
    let mut scanned = 0;
    let nl = loop {
        let a = lb.avail();
        if let Some(p) = memchr::memchr(b'\n', &a[scanned..]) {
            break Some(scanned + p);
        }
        if a.len() > limit {
            return Ok(Scan::TooLong);
        }
        scanned = a.len();
        if !lb.fill()? {
            if lb.avail().is_empty() {
                return Ok(Scan::Eof);
            }
            break None;
        }
    };
    let a = lb.avail();
    let (line_end, consume) = match nl {
        Some(p) => (p, p + 1),
        None => (a.len(), a.len()),
    };
    if line_end > limit {
        return Ok(Scan::TooLong);
    }
    let line = &a[..line_end];
    let text = line.strip_suffix(b"\r").unwrap_or(line);
    if text.is_empty() {
        return Ok(Scan::Blank { consume });
    }
    if split_plain(text, cells) {
        return Ok(Scan::Record { text: text.len(), consume, lines: 1 });
    }
    let first = Scan::Unterminated { text: text.len(), consume };
    loop {
        let a = lb.avail();
        match decode_quoted(a, lb.at_eof(), limits.record_lines_max, cells) {
            Quoted::Complete { text, consume, lines } => {
                if text > limit {
                    return Ok(first);
                }
                return Ok(Scan::Record { text, consume, lines });
            }
            Quoted::TooManyLines => return Ok(first),
            Quoted::NeedMore => {
                // At the end of the file a quote is still open: unterminated.
                if lb.at_eof() || a.len() > limit {
                    return Ok(first);
                }
                lb.fill()?; // at the end, the next decode knows it (eof = true)
            }
        }
    }
}

pub struct CsvSource {
    path: PathBuf,
    side: Side,
    index: u32,
    schema: Schema,
    limits: ReadLimits,
    lb: LineBuf,
    cells: Cells,
    /// Column of each field; `None`: not in this file, the field's default applies.
    cols: Columns,
    /// Each field's default (`None` = NULL), for fields this file has no column for.
    defaults: Vec<Option<Value>>,
    header_len: usize,
    builder: RowBuilder,
    /// The kept start of an over-long line.
    raw: Vec<u8>,
    /// Physical line (1-based) where the next record starts.
    line: u64,
    /// Records read, the header included.
    record: u64,
    counts: LineCounts,
    done: bool,
    /// The source ends at the first record that starts at or past this byte (a chunk
    /// of a split file, source/split.rs); `u64::MAX` otherwise.
    stop: u64,
}

impl CsvSource {
    pub fn open(path: &Path, side: Side, index: u32, schema: Schema) -> Result<CsvSource, SourceError> {
        CsvSource::open_with(path, side, index, schema, ReadLimits::default())
    }

    /// [`CsvSource::open`] with other read limits (tests).
    pub fn open_with(
        path: &Path,
        side: Side,
        index: u32,
        schema: Schema,
        limits: ReadLimits,
    ) -> Result<CsvSource, SourceError> {
        let file = File::open(path).map_err(io_err(path, "open"))?;
        let mut lb = LineBuf::new(file, &limits);
        let fail = |message: String| SourceError::Format { path: path.to_path_buf(), message };
        while lb.avail().len() < BOM.len() && lb.fill().map_err(io_err(path, "read"))? {}
        if lb.avail().starts_with(BOM) {
            lb.consume(BOM.len());
        }
        let mut cells = Cells { ranges: Vec::new(), count: 0, max: COLUMNS_MAX + 1, decoded: false, dec: Vec::new() };
        let mut counts = LineCounts::default();
        let mut line = 1u64;
        let (text_len, consume, lines) = loop {
            match scan(&mut lb, &limits, &mut cells).map_err(io_err(path, "read"))? {
                Scan::Record { text, consume, lines } => break (text, consume, lines),
                Scan::Blank { consume } => {
                    lb.consume(consume);
                    counts.blank += 1;
                    line += 1;
                }
                Scan::Eof => return Err(fail("empty file: a header line is required".into())),
                Scan::TooLong => {
                    return Err(fail(format!(
                        "header line {line} is longer than the row limit of {} bytes",
                        limits.line_bytes_max
                    )))
                }
                Scan::Unterminated { .. } => {
                    return Err(fail(format!("header line {line}: unterminated quote")));
                }
            }
        };
        let text = &lb.avail()[..text_len];
        let header: Vec<&[u8]> = (0..cells.ranges.len()).map(|i| cells.get(text, i)).collect();
        let cols = map_columns(path, &schema, &header)?;
        let defaults = schema.fields.iter().map(crate::evolve::field_default).collect();
        let header_len = cells.count;
        lb.consume(consume);
        counts.header = lines as u64;
        cells.max = header_len;
        cells.ranges = Vec::with_capacity(header_len);
        Ok(CsvSource {
            path: path.to_path_buf(),
            side,
            index,
            schema,
            limits,
            lb,
            cells,
            defaults,
            cols,
            header_len,
            builder: RowBuilder::new(),
            raw: Vec::new(),
            line: line + lines as u64,
            record: 1,
            counts,
            done: false,
            stop: u64::MAX,
        })
    }

    /// Ends the source at the first record that starts at or past `byte`.
    pub fn stop_at(&mut self, byte: u64) {
        self.stop = byte;
    }

    /// How the lines read so far were accounted for (tests).
    pub fn line_counts(&self) -> LineCounts {
        self.counts
    }

    /// Bytes the reader's buffers hold allocated (tests of the memory bound): at most
    /// about `ReadLimits::buffer_bytes_max` for the line buffer plus the record.
    pub fn buffer_bytes(&self) -> usize {
        self.lb.capacity() + self.cells.dec.capacity() + self.raw.capacity()
    }
}

/// Encodes a record's cells into `b`; Err is the dead-letter reason.
fn encode(
    schema: &Schema,
    cols: &[Option<usize>],
    defaults: &[Option<Value>],
    header_len: usize,
    cells: &Cells,
    text: &[u8],
    b: &mut RowBuilder,
) -> Result<i64, String> {
    if cells.count != header_len {
        return Err(format!("expected {} columns, found {}", header_len, cells.count));
    }
    b.begin(schema.fields.len());
    for (i, f) in schema.fields.iter().enumerate() {
        match cols[i] {
            Some(c) => {
                let cell = cells.get(text, c);
                parse_cell(b, i, f.ty, cell).map_err(|r| cell_reason(&f.name, r, cell))?;
            }
            None => {
                if let Some(role) = absent_role(schema, i) {
                    return Err(no_column_reason(schema, i, role));
                }
                if let Some(v) = &defaults[i] {
                    b.set_value(i, v).map_err(|e| format!("field `{}`: default: {e}", f.name))?;
                }
            }
        }
    }
    event_time(RowView(b.bytes()), schema).map_err(|r| format!("column `{}`: {r}", schema.fields[schema.time].name))
}

/// Encodes CSV records without a header (a Kafka record's value: its cells are the
/// schema's fields in order, quoted as RFC 4180 says, line breaks inside quotes
/// allowed). Built once per source: nothing is allocated per record.
pub(crate) struct LineEncoder {
    cells: Cells,
    /// Field i is column i.
    cols: Vec<Option<usize>>,
    /// No defaults: every field is a column.
    defaults: Vec<Option<Value>>,
}

impl LineEncoder {
    pub(crate) fn new(schema: &Schema) -> LineEncoder {
        let n = schema.fields.len();
        LineEncoder { cells: Cells::new(n + 1), cols: (0..n).map(Some).collect(), defaults: vec![None; n] }
    }

    /// Encodes one record into `b`; returns its event time. Err is the dead-letter reason.
    pub(crate) fn encode(&mut self, text: &[u8], schema: &Schema, b: &mut RowBuilder) -> Result<i64, String> {
        let cells = &mut self.cells;
        if !split_plain(text, cells) {
            match decode_quoted(text, true, u32::MAX, cells) {
                Quoted::Complete { consume, .. } if consume >= text.len() => {}
                Quoted::Complete { .. } => return Err("more than one CSV record in the value".into()),
                Quoted::NeedMore | Quoted::TooManyLines => return Err("unterminated quote".into()),
            }
        }
        encode(schema, &self.cols, &self.defaults, self.cols.len(), cells, text, b)
            .map_err(|e| format!("{e} (the value's columns are the fields of input `{}`, in order)", schema.name))
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
        let side = self.side;
        let mut n = 0;
        while n < max_rows {
            if self.lb.offset() >= self.stop {
                self.done = true;
                return Ok(PollStatus::Done);
            }
            let line = self.line;
            match scan(&mut self.lb, &self.limits, &mut self.cells).map_err(io_err(&self.path, "read"))? {
                Scan::Eof => {
                    self.done = true;
                    return Ok(PollStatus::Done);
                }
                Scan::Blank { consume } => {
                    self.lb.consume(consume);
                    self.counts.blank += 1;
                    self.line += 1;
                    n += 1; // a blank line carries no row, but bounds the poll like one
                    continue;
                }
                Scan::Record { text, consume, lines } => {
                    let t = &self.lb.avail()[..text];
                    match encode(
                        &self.schema,
                        &self.cols.of_field,
                        &self.defaults,
                        self.header_len,
                        &self.cells,
                        t,
                        &mut self.builder,
                    ) {
                        Ok(ts) => out(SourceItem::Row {
                            side,
                            ts,
                            row: self.builder.bytes(),
                            intended_ns: None,
                            extra: self.cols.extra,
                        }),
                        Err(reason) => out(SourceItem::Dead { side, line, reason, raw: t }),
                    }
                    self.lb.consume(consume);
                    self.counts.continuation += lines as u64 - 1;
                    self.line += lines as u64;
                }
                Scan::Unterminated { text, consume } => {
                    let t = &self.lb.avail()[..text];
                    let reason = format!(
                        "unterminated quote (a quoted record may span at most {} lines and {} bytes); \
                         reading resumes at the next line",
                        self.limits.record_lines_max, self.limits.line_bytes_max
                    );
                    out(SourceItem::Dead { side, line, reason, raw: t });
                    self.lb.consume(consume);
                    self.line += 1;
                }
                Scan::TooLong => {
                    let len = self.lb.skip_line(&mut self.raw, RAW_BYTES_MAX).map_err(io_err(&self.path, "read"))?;
                    let reason = long_line_reason(len, self.limits.line_bytes_max);
                    out(SourceItem::Dead { side, line, reason, raw: truncate_raw(&self.raw) });
                    self.line += 1;
                }
            }
            self.record += 1;
            n += 1;
        }
        Ok(PollStatus::Rows)
    }

    fn partitions(&self) -> Vec<(Side, u32)> {
        vec![(self.side, self.index)]
    }

    fn position(&self) -> SourcePos {
        SourcePos::Csv { byte: self.lb.offset(), line: self.line, record: self.record }
    }

    fn seek(&mut self, pos: &SourcePos) -> Result<(), SourceError> {
        let SourcePos::Csv { byte, line, record } = *pos else {
            return Err(wrong_pos(&self.path.display().to_string(), pos));
        };
        self.lb.seek(byte).map_err(|e| SourceError::Format {
            path: self.path.clone(),
            message: format!("cannot seek to byte {byte} (line {line}) from the checkpoint: {e}"),
        })?;
        self.line = line;
        self.record = record;
        self.done = false;
        Ok(())
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells() -> Cells {
        Cells { ranges: Vec::new(), count: 0, max: 16, decoded: false, dec: Vec::new() }
    }

    fn texts(c: &Cells, t: &[u8]) -> Vec<Vec<u8>> {
        (0..c.ranges.len()).map(|i| c.get(t, i).to_vec()).collect()
    }

    #[test]
    fn quoted_cells_decode_as_rfc_4180() {
        let mut c = cells();
        let t = b"a,\"b,\"\"c\"\"\",\"d\ne\"x,\"f\r\"\r\nnext";
        match decode_quoted(t, false, 8, &mut c) {
            Quoted::Complete { text, consume, lines } => {
                assert_eq!((text, consume, lines), (t.len() - 6, t.len() - 4, 2));
            }
            _ => panic!("not complete"),
        }
        assert_eq!(texts(&c, t), [&b"a"[..], b"b,\"c\"", b"d\nex", b"f\r"]);
        assert!(matches!(decode_quoted(b"\"open\nmore", false, 8, &mut c), Quoted::NeedMore));
        assert!(matches!(decode_quoted(b"\"a\"", false, 8, &mut c), Quoted::NeedMore));
        assert!(matches!(decode_quoted(b"\"a\"", true, 8, &mut c), Quoted::Complete { text: 3, consume: 3, lines: 1 }));
        assert!(matches!(decode_quoted(b"\"a\n\n\nb\"\n", false, 3, &mut c), Quoted::TooManyLines));
        assert!(matches!(decode_quoted(b"\"\",x\n", false, 3, &mut c), Quoted::Complete { .. }));
        assert_eq!(texts(&c, b""), [&b""[..], b"x"]);
    }

    #[test]
    fn a_record_value_is_one_csv_record_with_the_fields_in_order() {
        use crate::schema::{Field, FieldType};
        let fields =
            vec![Field::new("k", FieldType::I64), Field::new("ts", FieldType::I64), Field::new("s", FieldType::String)];
        let schema = Schema::new("l", fields, &["k".into()], "ts").unwrap();
        let mut c = LineEncoder::new(&schema);
        let mut b = RowBuilder::new();
        assert_eq!(c.encode(b"7,100,x", &schema, &mut b), Ok(100));
        assert_eq!(RowView(b.bytes()).str(2), b"x");
        assert_eq!(c.encode(b"7,101,\"a,\"\"b\"\"\nc\"", &schema, &mut b), Ok(101), "quoted, with a line break");
        assert_eq!(RowView(b.bytes()).str(2), b"a,\"b\"\nc");
        let err = |v: &[u8], c: &mut LineEncoder, b: &mut RowBuilder| c.encode(v, &schema, b).unwrap_err();
        assert!(err(b"7,100", &mut c, &mut b).contains("expected 3 columns, found 2"));
        assert!(err(b"7,100,x,y", &mut c, &mut b).contains("in order"));
        assert!(err(b"7,soon,x", &mut c, &mut b).contains("ts"));
        assert!(err(b"7,100,\"open", &mut c, &mut b).contains("unterminated quote"));
        assert!(err(b"7,100,\"x\"\n8,1,y", &mut c, &mut b).contains("more than one CSV record"));
    }

    #[test]
    fn plain_lines_split_at_commas_and_cells_past_the_max_are_only_counted() {
        let mut c = cells();
        c.max = 2;
        assert!(split_plain(b"a,,b,c", &mut c));
        assert_eq!((c.count, texts(&c, b"a,,b,c")), (4, vec![b"a".to_vec(), b"".to_vec()]));
        assert!(!split_plain(b"a,b\"", &mut c));
    }
}

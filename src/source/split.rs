//! Split files: one large CSV or JSON-lines file read by every shard, chunk by chunk,
//! with exactly the answer of a read in file order.
//!
//! The file is cut at nominal offsets `o_c = c * chunk_bytes`; chunk `c` is read by
//! shard `c % shards` (after a rescale, by the shard that owns it in the new count).
//! Each chunk goes through three steps on its shard:
//! 1. **parse** (in parallel with the other shards): chunk c's rows and dead letters
//!    go into a buffer. Its reader (the file's ordinary [`CsvSource`] or
//!    [`JsonlSource`]) starts where the chunk's first record is assumed to start, just
//!    after the first line break at or past `o_c - 1` (chunk 0: after the header), and
//!    reads every record that starts before `o_{c+1}`;
//! 2. **decide** (in file order, one chunk at a time over all shards): wait until the
//!    [`ChunkTable`] holds the [`ChunkEnd`] of chunk c - 1: where a file-order read
//!    stands at the end of chunk c - 1 (the byte where the next record starts, its
//!    line, the max event time so far). If the assumed start is not that byte (a
//!    quoted line break across `o_c`), the chunk is parsed again from that byte.
//!    Then publish chunk c's own end;
//! 3. **emit**: hand out [`SourceItem::Resume`] with the max event time before the
//!    chunk, then the chunk's items in file order.
//!
//! Why this is the file-order answer:
//! - the readers keep no state across a record boundary but the line and record
//!   counters (which step 2 rebases), so a reader started at a true record start
//!   reads what a file-order read reads from there; step 2 makes every chunk start at
//!   the true end of the one before, by induction from the header;
//! - lateness (`t < max(t before) - B - A`) needs only the max before each row:
//!   `Resume` sets the partition clock of the emitting shard to the max before the
//!   chunk, and the shard's clock then sees the chunk's rows in file order;
//! - the watermark: a shard's clock for the file is at most the file-order max
//!   before any row it has not handed out yet (its chunks come later in the file
//!   than what it has emitted, and a chunk it has not reached starts after the max
//!   its clock holds), and a shard with no chunk left reports the file as ended; so
//!   the engine watermark, the minimum over shards, is never ahead of the file-order
//!   watermark of a row not yet sent, which is what state retention relies on.
//!
//! A chunk's parsed rows are held until it is decided: about `chunk_bytes` of memory
//! per split file per shard. The table holds one entry per chunk (at most
//! [`CHUNKS_MAX`]); a checkpoint records each shard's place (chunk, items emitted)
//! and the entries it knows, and a restore merges the entries of every shard.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::csv::CsvSource;
use super::jsonl::JsonlSource;
use super::{io_err, wrong_pos, PollStatus, Source, SourceError, SourceItem, SourcePos};
use crate::config::Format;
use crate::event::Side;
use crate::schema::Schema;

/// A file is cut into at most this many chunks (larger files get larger chunks): it
/// bounds the table a checkpoint records.
pub const CHUNKS_MAX: u64 = 1024;

/// How long a shard waits before it looks again for the end of the chunk before its own.
const WAIT_NS: u64 = 50_000;

/// Bytes read at a time when looking for the first line break of a chunk.
const PROBE_BYTES: usize = 64 << 10;

/// The chunk size for a file of `len` bytes split at `split_bytes`.
pub fn chunk_bytes_for(len: u64, split_bytes: u64) -> u64 {
    split_bytes.max(len.div_ceil(CHUNKS_MAX)).max(1)
}

/// Where a file-order read stands at the end of a chunk (entry 0: after the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkEnd {
    /// Max event time of the file's rows so far (`None`: no row yet).
    pub max_ts: Option<i64>,
    /// Byte where the next record starts.
    pub byte: u64,
    /// The reader's line counter there (CSV: the next record's 1-based line; JSON
    /// lines: lines read).
    pub line: u64,
    /// CSV records read so far, the header included (0 for JSON lines).
    pub record: u64,
}

/// A split file's place in a checkpoint, as one shard records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SplitPos {
    pub chunk_bytes: u64,
    /// Shards of the run that recorded it, and which one this is.
    pub shards: u32,
    pub shard: u32,
    /// The chunk in progress (or, with nothing left, the number of chunks): every
    /// chunk of this shard's share before it is done.
    pub chunk: u64,
    /// Items (rows and dead letters) of `chunk` already handed out.
    pub skip: u64,
    /// Chunks of this shard's share after `chunk` that are done already (only after
    /// a rescale moved chunks around; usually empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub done_ahead: Vec<u64>,
    /// `ends[c]`: the end of chunk c - 1, for every entry this shard knew.
    pub ends: Vec<Option<ChunkEnd>>,
}

impl SplitPos {
    /// The last byte any chunk is known to have been read to.
    pub fn read_to(&self) -> u64 {
        self.ends.iter().flatten().map(|e| e.byte).max().unwrap_or(0)
    }
}

/// The entries all shards reading one file share: `ends[c]` is published by the
/// shard that decides chunk c - 1. Taken once per chunk; a plain mutex suffices.
#[derive(Debug, Default)]
pub struct ChunkTable {
    ends: Mutex<Vec<Option<ChunkEnd>>>,
}

impl ChunkTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<ChunkEnd>>> {
        // A panicking shard ends the job; the entries are plain values either way.
        self.ends.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, c: u64) -> Option<ChunkEnd> {
        self.lock().get(c as usize).copied().flatten()
    }

    fn put(&self, c: u64, e: ChunkEnd) {
        let mut ends = self.lock();
        let c = c as usize;
        if ends.len() <= c {
            ends.resize(c + 1, None);
        }
        debug_assert!(ends[c].is_none_or(|old| old == e), "chunk end {c} decided twice, differently");
        ends[c] = Some(e);
    }

    fn snapshot(&self) -> Vec<Option<ChunkEnd>> {
        let ends = self.lock();
        let used = ends.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
        ends[..used].to_vec()
    }
}

/// The reader of a chunk: the file's ordinary source, moved from chunk to chunk.
enum Inner {
    Csv(CsvSource),
    Jsonl(JsonlSource),
}

impl Inner {
    fn src(&mut self) -> &mut dyn Source {
        match self {
            Inner::Csv(s) => s,
            Inner::Jsonl(s) => s,
        }
    }

    /// (byte, line, record) of the reader's position.
    fn at(&self) -> (u64, u64, u64) {
        let pos = match self {
            Inner::Csv(s) => s.position(),
            Inner::Jsonl(s) => s.position(),
        };
        match pos {
            SourcePos::Csv { byte, line, record } => (byte, line, record),
            SourcePos::Jsonl { byte, line } => (byte, line, 0),
            _ => unreachable!("file sources report file positions"),
        }
    }

    /// Starts reading at `byte` with counters from 0, ending before `stop`.
    fn start(&mut self, byte: u64, stop: u64) -> Result<(), SourceError> {
        match self {
            Inner::Csv(s) => {
                s.seek(&SourcePos::Csv { byte, line: 0, record: 0 })?;
                s.stop_at(stop);
            }
            Inner::Jsonl(s) => {
                s.seek(&SourcePos::Jsonl { byte, line: 0 })?;
                s.stop_at(stop);
            }
        }
        Ok(())
    }
}

/// One parsed item of a chunk; its bytes are in `Parsed::bytes`.
enum Item {
    Row {
        ts: i64,
        at: usize,
        len: usize,
        extra: u32,
    },
    /// `line` is relative to the chunk's start (rebased when handed out).
    Dead {
        line: u64,
        reason: String,
        at: usize,
        len: usize,
    },
}

#[derive(Default)]
struct Parsed {
    bytes: Vec<u8>,
    items: Vec<Item>,
    max_ts: Option<i64>,
    /// Byte the parse started at.
    start: u64,
}

impl Parsed {
    fn reset(&mut self, start: u64) {
        self.bytes.clear();
        self.items.clear();
        self.max_ts = None;
        self.start = start;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// About to parse the chunk at the front of `todo`.
    Next,
    Parse,
    /// Parsed, waiting for the end of the chunk before.
    Decide,
    /// Handing out `items[at..]`; `line_base` rebases dead letters' lines.
    Emit {
        at: usize,
        line_base: u64,
    },
    Done,
}

/// A shard's reader of a split file (see the module doc).
pub struct SplitSource {
    path: PathBuf,
    side: Side,
    index: u32,
    inner: Inner,
    probe: File,
    len: u64,
    table: Arc<ChunkTable>,
    chunk_bytes: u64,
    chunks: u64,
    shards: u32,
    shard: u32,
    /// This shard's chunks still to read, in file order, with the items of each
    /// already handed out before a restore.
    todo: VecDeque<(u64, u64)>,
    phase: Phase,
    parsed: Parsed,
    /// Items of the front chunk handed out (skipped ones included).
    emitted: u64,
}

impl SplitSource {
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        path: &Path,
        side: Side,
        index: u32,
        format: Format,
        schema: Schema,
        chunk_bytes: u64,
        table: Arc<ChunkTable>,
        shard: u32,
        shards: u32,
    ) -> Result<SplitSource, SourceError> {
        let inner = match format {
            Format::Csv => Inner::Csv(CsvSource::open(path, side, index, schema)?),
            Format::Jsonl => Inner::Jsonl(JsonlSource::open(path, side, index, schema)?),
        };
        let probe = File::open(path).map_err(io_err(path, "open"))?;
        let len = probe.metadata().map_err(io_err(path, "stat"))?.len();
        let (byte, line, record) = inner.at();
        table.put(0, ChunkEnd { max_ts: None, byte, line, record });
        let chunk_bytes = chunk_bytes.max(1);
        let chunks = len.div_ceil(chunk_bytes).max(1);
        let shards = shards.max(1);
        let todo = (u64::from(shard)..chunks).step_by(shards as usize).map(|c| (c, 0)).collect();
        Ok(SplitSource {
            path: path.to_path_buf(),
            side,
            index,
            inner,
            probe,
            len,
            table,
            chunk_bytes,
            chunks,
            shards,
            shard,
            todo,
            phase: Phase::Next,
            parsed: Parsed::default(),
            emitted: 0,
        })
    }

    fn fail(&self, message: String) -> SourceError {
        SourceError::Format { path: self.path.clone(), message }
    }

    /// Where chunk `c`'s first record is assumed to start.
    fn assumed_start(&self, c: u64) -> Result<u64, SourceError> {
        if c == 0 {
            return Ok(self.table.get(0).map_or(0, |e| e.byte));
        }
        let mut at = c * self.chunk_bytes - 1;
        let mut buf = vec![0u8; PROBE_BYTES];
        loop {
            let n = loop {
                match self.probe.read_at(&mut buf, at) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(io_err(&self.path, "read")(e)),
                }
            };
            if n == 0 {
                return Ok(at.max(self.len));
            }
            if let Some(p) = memchr::memchr(b'\n', &buf[..n]) {
                return Ok(at + p as u64 + 1);
            }
            at += n as u64;
        }
    }

    /// Starts parsing the front chunk at `start`.
    fn begin(&mut self, c: u64, start: u64) -> Result<(), SourceError> {
        let stop = if c + 1 >= self.chunks { u64::MAX } else { (c + 1) * self.chunk_bytes };
        self.parsed.reset(start);
        self.inner.start(start, stop)?;
        self.phase = Phase::Parse;
        Ok(())
    }

    /// Parses up to `max_rows` more items; true when the chunk is complete.
    fn parse_some(&mut self, max_rows: usize, now_ns: u64) -> Result<bool, SourceError> {
        let p = &mut self.parsed;
        let status = self.inner.src().poll(max_rows, now_ns, &mut |item| match item {
            SourceItem::Row { ts, row, extra, .. } => {
                p.max_ts = Some(p.max_ts.map_or(ts, |m| m.max(ts)));
                p.items.push(Item::Row { ts, at: p.bytes.len(), len: row.len(), extra });
                p.bytes.extend_from_slice(row);
            }
            SourceItem::Dead { line, reason, raw, .. } => {
                p.items.push(Item::Dead { line, reason, at: p.bytes.len(), len: raw.len() });
                p.bytes.extend_from_slice(raw);
            }
            SourceItem::Resume { .. } => unreachable!("file readers never resume"),
        })?;
        Ok(status == PollStatus::Done)
    }

    /// Decides the front chunk `c` if the end of chunk c - 1 is known: publishes its
    /// own end and hands out the `Resume`. False while waiting.
    fn decide(&mut self, c: u64, skip: u64, out: &mut dyn FnMut(SourceItem<'_>)) -> Result<bool, SourceError> {
        let Some(before) = self.table.get(c) else {
            return Ok(false);
        };
        if before.byte != self.parsed.start {
            // A record spans the chunk's nominal start: read again from its true start.
            self.begin(c, before.byte)?;
            return Ok(false);
        }
        let (byte, line, record) = self.inner.at();
        let max_ts = match (before.max_ts, self.parsed.max_ts) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.table.put(c + 1, ChunkEnd { max_ts, byte, line: before.line + line, record: before.record + record });
        if skip > self.parsed.items.len() as u64 {
            return Err(self.fail(format!(
                "checkpoint position: chunk {c} has {} items, the checkpoint had handed out {skip}",
                self.parsed.items.len()
            )));
        }
        let mut resume = before.max_ts;
        for it in &self.parsed.items[..skip as usize] {
            if let Item::Row { ts, .. } = *it {
                resume = Some(resume.map_or(ts, |m| m.max(ts)));
            }
        }
        out(SourceItem::Resume { side: self.side, max_ts: resume });
        self.emitted = skip;
        self.phase = Phase::Emit { at: skip as usize, line_base: before.line };
        Ok(true)
    }

    /// Derives this shard's chunks still to read from the records of every shard of
    /// the checkpoint (only its own when the shard count is unchanged).
    fn restore(&mut self, recs: &[&SplitPos]) -> Result<(), SourceError> {
        for r in recs {
            if r.chunk_bytes != self.chunk_bytes {
                return Err(self.fail(format!(
                    "checkpoint position: split into chunks of {} bytes, this run uses {}",
                    r.chunk_bytes, self.chunk_bytes
                )));
            }
            for (c, e) in r.ends.iter().enumerate() {
                if let Some(e) = e {
                    self.table.put(c as u64, *e);
                }
            }
        }
        let mut todo = VecDeque::new();
        for c in (u64::from(self.shard)..self.chunks).step_by(self.shards as usize) {
            let Some(r) = recs.iter().find(|r| r.shards > 0 && r.shard == (c % u64::from(r.shards)) as u32) else {
                return Err(self.fail(format!("the checkpoint has no position for chunk {c} of this file")));
            };
            if c < r.chunk || r.done_ahead.contains(&c) {
                continue;
            }
            todo.push_back((c, if c == r.chunk { r.skip } else { 0 }));
        }
        self.todo = todo;
        self.phase = Phase::Next;
        Ok(())
    }

    /// Restores from the records of several shards (a re-distributing restore).
    fn seek_from(&mut self, positions: &[&SourcePos]) -> Result<(), SourceError> {
        let mut recs = Vec::with_capacity(positions.len());
        for p in positions {
            match p {
                SourcePos::Split(r) => recs.push(r),
                other => return Err(wrong_pos(&self.path.display().to_string(), other)),
            }
        }
        self.restore(&recs)
    }
}

impl Source for SplitSource {
    fn poll(
        &mut self,
        max_rows: usize,
        now_ns: u64,
        out: &mut dyn FnMut(SourceItem<'_>),
    ) -> Result<PollStatus, SourceError> {
        loop {
            match self.phase {
                Phase::Done => return Ok(PollStatus::Done),
                Phase::Next => {
                    let Some(&(c, _)) = self.todo.front() else {
                        self.phase = Phase::Done;
                        return Ok(PollStatus::Done);
                    };
                    let start = self.assumed_start(c)?;
                    self.begin(c, start)?;
                }
                Phase::Parse => {
                    if !self.parse_some(max_rows, now_ns)? {
                        return Ok(PollStatus::Rows);
                    }
                    self.phase = Phase::Decide;
                }
                Phase::Decide => {
                    let (c, skip) = self.todo[0];
                    if !self.decide(c, skip, out)? {
                        if self.phase == Phase::Parse {
                            continue;
                        }
                        return Ok(PollStatus::Waiting { retry_ns: WAIT_NS });
                    }
                }
                Phase::Emit { at, line_base } => {
                    let end = (at + max_rows.max(1)).min(self.parsed.items.len());
                    let side = self.side;
                    for it in &mut self.parsed.items[at..end] {
                        match it {
                            Item::Row { ts, at, len, extra } => out(SourceItem::Row {
                                side,
                                ts: *ts,
                                row: &self.parsed.bytes[*at..*at + *len],
                                intended_ns: None,
                                extra: *extra,
                            }),
                            Item::Dead { line, reason, at, len } => out(SourceItem::Dead {
                                side,
                                line: line_base + *line,
                                reason: std::mem::take(reason),
                                raw: &self.parsed.bytes[*at..*at + *len],
                            }),
                        }
                    }
                    self.emitted += (end - at) as u64;
                    if end == self.parsed.items.len() {
                        self.todo.pop_front();
                        self.emitted = 0;
                        self.phase = Phase::Next;
                    } else {
                        self.phase = Phase::Emit { at: end, line_base };
                    }
                    return Ok(PollStatus::Rows);
                }
            }
        }
    }

    fn partitions(&self) -> Vec<(Side, u32)> {
        vec![(self.side, self.index)]
    }

    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn position(&self) -> SourcePos {
        let (chunk, skip) = match self.todo.front() {
            None => (self.chunks, 0),
            Some(&(c, _)) => (c, if matches!(self.phase, Phase::Emit { .. }) { self.emitted } else { 0 }),
        };
        let later: Vec<u64> = self.todo.iter().skip(1).map(|&(c, _)| c).collect();
        let done_ahead = (chunk..self.chunks)
            .step_by(self.shards as usize)
            .skip(1)
            .filter(|c| c % u64::from(self.shards) == u64::from(self.shard) && !later.contains(c))
            .collect();
        SourcePos::Split(SplitPos {
            chunk_bytes: self.chunk_bytes,
            shards: self.shards,
            shard: self.shard,
            chunk,
            skip,
            done_ahead,
            ends: self.table.snapshot(),
        })
    }

    fn seek(&mut self, pos: &SourcePos) -> Result<(), SourceError> {
        self.seek_from(&[pos])
    }

    fn seek_merged(&mut self, positions: &[&SourcePos]) -> Result<(), SourceError> {
        self.seek_from(positions)
    }
}

//! Sources: where rows come from. One partition is one ordered sequence of rows of
//! one input (a file, or one generator partition); a source object reads one or more
//! partitions and hands out encoded rows.
//!
//! A source never blocks on anything but its own file reads, never decides lateness
//! (the shard's [`crate::watermark::PartitionClock`] does) and never drops a row: every
//! row it reads is handed out as a [`SourceItem::Row`] or a [`SourceItem::Dead`] letter.

use std::path::{Path, PathBuf};

use crate::config::{Format, GenParams, Job};
use crate::event::{Side, ROW_BYTES_MAX};
use crate::schema::Schema;

pub mod csv;
pub mod generator;
pub mod jsonl;
pub mod kafka;
mod lines;
pub mod split;

/// A line (or a CSV record, its lines together) longer than this many bytes, line
/// end excluded, is not held in memory: it is skipped while it is read and becomes a
/// dead letter (a CSV header that long fails the file). It is the row limit: a
/// longer line could not become a row anyway.
pub const LINE_BYTES_MAX: usize = ROW_BYTES_MAX;

/// The `raw` of a dead letter for a line over [`LINE_BYTES_MAX`] holds this many
/// bytes of its start (less when that would cut a UTF-8 character); the reason gives
/// the line's true length.
pub const RAW_BYTES_MAX: usize = 4096;

/// Columns a CSV header may have: more fails the file (it bounds the per-record cell
/// table; a row has at most `schema::FIELDS_MAX` fields anyway).
pub const COLUMNS_MAX: usize = 1 << 16;

/// A CSV record whose quoted cells span more than this many lines is taken for an
/// unterminated quote: its first line is a dead letter and reading goes on at the
/// line after it.
pub const RECORD_LINES_MAX: u32 = 64;

/// Bytes a file reader asks the kernel for at a time (also its initial buffer).
pub const READ_BYTES: usize = 1 << 20;

const _: () = assert!(RAW_BYTES_MAX <= LINE_BYTES_MAX && RECORD_LINES_MAX >= 2 && COLUMNS_MAX >= 64);

/// The limits of the file readers: the constants above, smaller in tests so that a
/// fuzzer reaches every boundary with small inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimits {
    /// [`LINE_BYTES_MAX`].
    pub line_bytes_max: usize,
    /// [`RECORD_LINES_MAX`].
    pub record_lines_max: u32,
    /// [`READ_BYTES`]; at least 1.
    pub read_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits { line_bytes_max: LINE_BYTES_MAX, record_lines_max: RECORD_LINES_MAX, read_bytes: READ_BYTES }
    }
}

impl ReadLimits {
    /// The most bytes a file reader's buffer ever holds.
    pub fn buffer_bytes_max(&self) -> usize {
        self.line_bytes_max + self.read_bytes.max(1)
    }
}

/// What counting a file's lines found, for tests: every line is a header line, a
/// blank line, the first line of a row or of a dead letter, or a further line of a
/// multi-line CSV record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineCounts {
    pub header: u64,
    pub blank: u64,
    pub continuation: u64,
}

/// The reason of a dead letter for a line over the limit.
pub fn long_line_reason(len: u64, limit: usize) -> String {
    format!("line of {len} bytes is longer than the row limit of {limit} bytes (raw holds its start)")
}

/// The start of `raw` kept in a dead letter of an over-long line: [`RAW_BYTES_MAX`]
/// bytes, fewer when the cut would split a UTF-8 character of otherwise valid text.
pub fn truncate_raw(raw: &[u8]) -> &[u8] {
    if raw.len() <= RAW_BYTES_MAX {
        return raw;
    }
    let head = &raw[..RAW_BYTES_MAX];
    match std::str::from_utf8(head) {
        Err(e) if e.error_len().is_none() => &head[..e.valid_up_to()],
        _ => head,
    }
}

/// One item read from a source.
pub enum SourceItem<'a> {
    /// A well-formed row of `side` with event time `ts`. `intended_ns` is the moment
    /// (ns since job start) a rate-limited generator meant to send it, if any. `extra`
    /// counts the values the row came with that no field answers to (extra CSV columns,
    /// unknown JSON keys): ignored, and counted in the report's `extra_fields`.
    Row { side: Side, ts: i64, row: &'a [u8], intended_ns: Option<u64>, extra: u32 },
    /// A malformed row: it goes to the dead-letter output, never into the join.
    Dead { side: Side, line: u64, reason: String, raw: &'a [u8] },
    /// The rows that follow come after rows read elsewhere (a chunk of a split file,
    /// `split.rs`): the partition's max event time before them is `max_ts`. The
    /// reader raises the partition's clock to it before it judges the next row.
    Resume { side: Side, max_ts: Option<i64> },
}

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    /// Some rows were handed out; poll again.
    Rows,
    /// Nothing available now; retry after about this many ns.
    Idle { retry_ns: u64 },
    /// Nothing available now because another shard is not yet as far in the same
    /// file (a split file): retry after about this many ns. Unlike `Idle`, the
    /// partition never counts as idle for it.
    Waiting { retry_ns: u64 },
    /// Every partition of this source has ended.
    Done,
}

/// A fatal source error: the job cannot go on (unreadable file, missing column).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{0}")]
    Kafka(String),
    #[error("{path}:{line}: {reason} (strict mode: first malformed row is fatal)")]
    Strict { path: String, line: u64, reason: String },
}

/// Where a source is in its partitions: what a checkpoint records and recovery seeks to.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourcePos {
    /// A CSV file: the byte offset and physical line (1-based) where the next record
    /// starts, and the records read so far (header included).
    Csv { byte: u64, line: u64, record: u64 },
    /// A JSON-lines file: byte offset and line number of the next line.
    Jsonl { byte: u64, line: u64 },
    /// A generator partition: events emitted so far (it is replayed deterministically).
    Generator { emitted: u64 },
    /// One shard's place in a split file (`split.rs`).
    Split(split::SplitPos),
    /// A Kafka partition: the offset of the next record (`None`: the partition's
    /// start) and, for a bounded read, the end offset found when the job started.
    Kafka { offset: Option<i64>, end: Option<i64> },
}

pub trait Source {
    /// Reads up to `max_rows` rows and hands each to `out`.
    fn poll(
        &mut self,
        max_rows: usize,
        now_ns: u64,
        out: &mut dyn FnMut(SourceItem<'_>),
    ) -> Result<PollStatus, SourceError>;
    /// The partitions this source reads, as (side, partition index within the side).
    fn partitions(&self) -> Vec<(Side, u32)>;
    /// A human name for messages and dead letters: a file path or `generator/3`.
    fn describe(&self) -> String;
    /// The position after the last row handed out.
    fn position(&self) -> SourcePos;
    /// Continues from `pos` (a position this kind of source returned for the same input).
    fn seek(&mut self, pos: &SourcePos) -> Result<(), SourceError>;
    /// Continues from the positions several shards recorded for the same input (a
    /// split file under a new shard count); other sources take exactly one.
    fn seek_merged(&mut self, positions: &[&SourcePos]) -> Result<(), SourceError> {
        match positions {
            [one] => self.seek(one),
            _ => Err(SourceError::Format {
                path: self.describe().into(),
                message: format!("the checkpoint has {} positions for this partition, expected 1", positions.len()),
            }),
        }
    }
}

pub(crate) fn wrong_pos(path: &str, pos: &SourcePos) -> SourceError {
    SourceError::Format {
        path: path.into(),
        message: format!("checkpoint position {pos:?} does not belong to this kind of source"),
    }
}

/// One partition of the job, before it is opened.
#[derive(Clone, Debug)]
pub enum PartitionSpec {
    File {
        side: Side,
        index: u32,
        format: Format,
        path: PathBuf,
    },
    /// A file read by every shard in chunks of `chunk_bytes` (`split.rs`); `table` is
    /// shared by the shards' readers.
    Split {
        side: Side,
        index: u32,
        format: Format,
        path: PathBuf,
        chunk_bytes: u64,
        table: std::sync::Arc<split::ChunkTable>,
    },
    /// Partition `index` of a Kafka topic.
    Kafka {
        side: Side,
        index: u32,
        input: crate::config::KafkaInput,
    },
    /// Generator partition `index` produces left partition `index` and right partition `index`.
    Generator {
        index: u32,
        params: GenParams,
    },
}

impl PartitionSpec {
    /// A stable name: the file path, or `generator/<n>`.
    pub fn describe(&self) -> String {
        match self {
            PartitionSpec::File { path, .. } | PartitionSpec::Split { path, .. } => path.display().to_string(),
            PartitionSpec::Generator { index, .. } => format!("generator/{index}"),
            PartitionSpec::Kafka { index, input, .. } => format!("kafka:{}/{index}", input.topic),
        }
    }
}

/// Lists the job's sources; source `i` is read by shard `i % shards`.
pub fn plan(job: &Job) -> Vec<PartitionSpec> {
    let mut out = Vec::new();
    if let Some(g) = &job.generator {
        for p in 0..g.partitions {
            out.push(PartitionSpec::Generator { index: p, params: g.clone() });
        }
        return out;
    }
    for side in [Side::Left, Side::Right] {
        match &job.input(side).source {
            crate::config::InputSource::Files { format, paths } => {
                for (i, p) in paths.iter().enumerate() {
                    out.push(PartitionSpec::File { side, index: i as u32, format: *format, path: p.clone() });
                }
            }
            crate::config::InputSource::Kafka(k) => {
                for p in kafka::own_partitions(k, job.instance, job.instances) {
                    out.push(PartitionSpec::Kafka { side, index: p, input: k.clone() });
                }
            }
            crate::config::InputSource::Generator => {}
        }
    }
    out
}

/// How many partitions each input has.
pub fn partition_counts(specs: &[PartitionSpec]) -> [u32; 2] {
    let mut n = [0u32; 2];
    for s in specs {
        match s {
            PartitionSpec::File { side, .. }
            | PartitionSpec::Split { side, .. }
            | PartitionSpec::Kafka { side, .. } => n[side.idx()] += 1,
            PartitionSpec::Generator { .. } => {
                n[0] += 1;
                n[1] += 1;
            }
        }
    }
    n
}

/// Marks the file partitions to split across shards (see `split.rs`): when resuming,
/// exactly those the checkpoint `resumed` read split, with its chunk size (what a
/// partition is must not change under a checkpoint); otherwise, with more than one
/// shard, every CSV or JSON-lines file larger than `engine.file_split_kib`. A file
/// whose size cannot be read is left whole (opening it reports the error).
pub fn split_large(specs: Vec<PartitionSpec>, job: &Job, resumed: Option<&[&SourcePos]>) -> Vec<PartitionSpec> {
    specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let PartitionSpec::File { side, index, format, path } = &spec else {
                return spec;
            };
            let chunk_bytes = match resumed {
                Some(recorded) => recorded.get(i).and_then(|p| match p {
                    SourcePos::Split(r) => Some(r.chunk_bytes),
                    _ => None,
                }),
                None if job.shards > 1 && job.file_split_bytes > 0 => std::fs::metadata(path)
                    .ok()
                    .filter(|m| m.len() > job.file_split_bytes)
                    .map(|m| split::chunk_bytes_for(m.len(), job.file_split_bytes)),
                None => None,
            };
            match chunk_bytes {
                Some(chunk_bytes) => PartitionSpec::Split {
                    side: *side,
                    index: *index,
                    format: *format,
                    path: path.clone(),
                    chunk_bytes,
                    table: Default::default(),
                },
                None => spec,
            }
        })
        .collect()
}

/// Opens a partition for a job of one shard.
pub fn open(spec: &PartitionSpec, job: &Job) -> Result<Box<dyn Source>, SourceError> {
    open_on(spec, job, 0, 1)
}

/// Opens a partition on shard `shard` of `shards` (which chunks of a split file it reads).
pub fn open_on(spec: &PartitionSpec, job: &Job, shard: u32, shards: u32) -> Result<Box<dyn Source>, SourceError> {
    Ok(match spec {
        PartitionSpec::Split { side, index, format, path, chunk_bytes, table } => Box::new(split::SplitSource::open(
            path,
            *side,
            *index,
            *format,
            job.input(*side).schema.clone(),
            *chunk_bytes,
            table.clone(),
            shard,
            shards,
        )?),
        PartitionSpec::File { side, index, format: Format::Csv, path } => {
            Box::new(csv::CsvSource::open(path, *side, *index, job.input(*side).schema.clone())?)
        }
        PartitionSpec::File { side, index, format: Format::Jsonl, path } => {
            Box::new(jsonl::JsonlSource::open(path, *side, *index, job.input(*side).schema.clone())?)
        }
        PartitionSpec::Generator { index, params } => Box::new(generator::Generator::new(params.clone(), *index)),
        PartitionSpec::Kafka { side, index, input } => {
            Box::new(kafka::KafkaSource::open(input, *side, *index, job.input(*side).schema.clone())?)
        }
    })
}

pub(crate) fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(std::io::Error) -> SourceError + 'a {
    move |e| SourceError::Io { path: path.to_path_buf(), op, source: e }
}

/// How a CSV file's columns answer to the schema's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Columns {
    /// The column of each field, `None` when the file has none for it (see
    /// [`absent_role`] for what a row then gets).
    pub of_field: Vec<Option<usize>>,
    /// Columns no field answers to: ignored, and counted per row in the report's
    /// `extra_fields`.
    pub extra: u32,
}

/// Checks the schema's fields against a file's header; returns the column of each
/// field, matched by the field's name or one of its `aliases` (a file written before a
/// rename). A field with no column is `None`: its rows take the field's default, or
/// NULL; a key or time field without a column makes every row of the file a dead
/// letter ([`absent_role`]; a warning at open says so). A field two columns answer to
/// (named twice, or by its name and an alias) is ambiguous and fails the file; extra
/// columns are ignored (and counted), duplicates among them too. At most
/// [`COLUMNS_MAX`] columns.
pub(crate) fn map_columns(path: &Path, schema: &Schema, header: &[&[u8]]) -> Result<Columns, SourceError> {
    let fail = |message: String| SourceError::Format { path: path.to_path_buf(), message };
    if header.len() > COLUMNS_MAX {
        return Err(fail(format!("header has more than {COLUMNS_MAX} columns")));
    }
    let mut cols = Vec::with_capacity(schema.fields.len());
    for (i, f) in schema.fields.iter().enumerate() {
        let answers = |h: &&[u8]| std::str::from_utf8(trim_cell(h)).is_ok_and(|n| f.answers_to(n));
        let mut at = header.iter().enumerate().filter(|(_, h)| answers(h)).map(|(c, _)| c);
        match (at.next(), at.next()) {
            (Some(c), None) => cols.push(Some(c)),
            (Some(a), Some(b)) => {
                return Err(fail(format!(
                    "header has two columns for field `{}` (columns {} `{}` and {} `{}`; input `{}`)",
                    f.name,
                    a + 1,
                    String::from_utf8_lossy(trim_cell(header[a])),
                    b + 1,
                    String::from_utf8_lossy(trim_cell(header[b])),
                    schema.name
                )))
            }
            (None, _) => {
                if let Some(role) = absent_role(schema, i) {
                    tracing::warn!(
                        file = %path.display(),
                        input = %schema.name,
                        field = %f.name,
                        "{}: header has no column `{}`, the {role} field of input `{}`: every row of the file \
                         is a dead letter; header is: {}",
                        path.display(),
                        f.name,
                        schema.name,
                        header_text(header)
                    );
                }
                cols.push(None)
            }
        }
    }
    let matched = cols.iter().flatten().count();
    Ok(Columns { of_field: cols, extra: (header.len() - matched) as u32 })
}

/// `Some("key")` or `Some("time")` when field `i` is a key or the time field of
/// `schema`: the rows of a CSV file with no column for it (under the name or an alias)
/// are dead letters, since the file cannot be joined or placed in time. `None` for any
/// other field: it takes its default, or NULL. (In JSON lines a missing key is NULL,
/// as SEMANTICS.md says: a NULL key matches nothing, a NULL time is malformed.)
pub(crate) fn absent_role(schema: &Schema, i: usize) -> Option<&'static str> {
    if schema.time == i {
        Some("time")
    } else if schema.key.contains(&i) {
        Some("key")
    } else {
        None
    }
}

/// The dead-letter reason of a CSV row whose file has no column for key or time field `i`.
pub(crate) fn no_column_reason(schema: &Schema, i: usize, role: &str) -> String {
    format!("the file has no column `{}`, the {role} field of input `{}`", schema.fields[i].name, schema.name)
}

/// The header's cells joined by commas, cut after about 1 KiB (it goes into a message).
fn header_text(header: &[&[u8]]) -> String {
    const TEXT_BYTES_MAX: usize = 1024;
    let mut s = String::new();
    for (i, h) in header.iter().enumerate() {
        if s.len() > TEXT_BYTES_MAX {
            s.push_str(&format!("... ({} columns)", header.len()));
            break;
        }
        if i > 0 {
            s.push(',');
        }
        s.push_str(&String::from_utf8_lossy(&h[..h.len().min(TEXT_BYTES_MAX)]));
    }
    s
}

pub(crate) fn trim_cell(c: &[u8]) -> &[u8] {
    let c = c.strip_prefix(b"\xef\xbb\xbf").unwrap_or(c); // a UTF-8 BOM on the first header cell
    let c = c.strip_suffix(b"\r").unwrap_or(c);
    c
}

/// Bytes per sampled block of a [`Fingerprint`].
pub const FINGERPRINT_BLOCK_BYTES: u64 = 4096;
/// Blocks spread evenly over a file's prefix, the first at byte 0; one more block ends
/// exactly at the position. A prefix of at most this many + 1 blocks is read whole.
pub const FINGERPRINT_SPREAD_BLOCKS: u64 = 16;
const _: () = assert!(FINGERPRINT_BLOCK_BYTES > 0 && FINGERPRINT_SPREAD_BLOCKS >= 1);

/// What a file held before a checkpoint's position, so that a restart can tell that
/// the file it seeks into is the one the checkpoint read. Sampled, not whole: at most
/// 17 blocks of 4 KiB (68 KiB read, whatever the file's size), covering the header,
/// 16 points spread over the prefix and the bytes just before the position. An edit
/// elsewhere in the prefix can go unseen; a truncation, a rewrite, a replaced file, or
/// an edit near the start or near the position cannot. Appending is allowed: nothing
/// at or after `bytes` is looked at.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    /// The prefix covered: bytes `[0, bytes)` (the partition's position).
    pub bytes: u64,
    /// The file's size when the fingerprint was taken (for messages only).
    pub file_bytes: u64,
    /// CRC32 of each block of [`fingerprint_blocks`]`(bytes)`, in that order.
    pub block_crc32: Vec<u32>,
}

/// The byte ranges `(offset, len)` a fingerprint of `[0, bytes)` samples: the whole
/// prefix in 4 KiB blocks when it is short, else 16 blocks spread from byte 0 plus the
/// block that ends at `bytes`. Ranges are within `[0, bytes)`.
pub fn fingerprint_blocks(bytes: u64) -> Vec<(u64, u64)> {
    let bs = FINGERPRINT_BLOCK_BYTES;
    if bytes <= (FINGERPRINT_SPREAD_BLOCKS + 1) * bs {
        return (0..bytes.div_ceil(bs)).map(|i| (i * bs, bs.min(bytes - i * bs))).collect();
    }
    let last = bytes - bs;
    let mut v: Vec<(u64, u64)> = (0..FINGERPRINT_SPREAD_BLOCKS)
        .map(|k| ((k as u128 * last as u128 / FINGERPRINT_SPREAD_BLOCKS as u128) as u64, bs))
        .collect();
    v.push((last, bs));
    v
}

fn block_crcs(file: &std::fs::File, blocks: &[(u64, u64)]) -> std::io::Result<Vec<u32>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; FINGERPRINT_BLOCK_BYTES as usize];
    blocks
        .iter()
        .map(|&(off, len)| {
            let b = &mut buf[..len as usize];
            file.read_exact_at(b, off)?;
            Ok(crc32fast::hash(b))
        })
        .collect()
}

/// Fingerprints the first `bytes` bytes of the file at `path` (see [`Fingerprint`]).
/// Off the per-row path: taken when a checkpoint's manifest is written.
pub fn fingerprint(path: &Path, bytes: u64) -> Result<Fingerprint, SourceError> {
    let f = std::fs::File::open(path).map_err(io_err(path, "open to fingerprint"))?;
    let file_bytes = f.metadata().map_err(io_err(path, "stat to fingerprint"))?.len();
    if file_bytes < bytes {
        return Err(SourceError::Format {
            path: path.to_path_buf(),
            message: format!("is {file_bytes} bytes, shorter than the position {bytes} just read"),
        });
    }
    let block_crc32 = block_crcs(&f, &fingerprint_blocks(bytes)).map_err(io_err(path, "read to fingerprint"))?;
    Ok(Fingerprint { bytes, file_bytes, block_crc32 })
}

/// What changed in the file at `path` since `fp` was taken, if anything: `None` when
/// its first `fp.bytes` bytes still match (bytes appended after them are fine).
pub fn fingerprint_change(path: &Path, fp: &Fingerprint) -> Option<String> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot be opened ({e})")),
    };
    let now = match f.metadata() {
        Ok(m) => m.len(),
        Err(e) => return Some(format!("cannot be read ({e})")),
    };
    if now < fp.bytes {
        return Some(format!(
            "is now {now} bytes, shorter than the checkpoint's position {} (it was {} bytes then): truncated or rewritten",
            fp.bytes, fp.file_bytes
        ));
    }
    let blocks = fingerprint_blocks(fp.bytes);
    let crcs = match block_crcs(&f, &blocks) {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot be read ({e})")),
    };
    if crcs.len() != fp.block_crc32.len() {
        return Some(format!("has a fingerprint of {} blocks, expected {}", fp.block_crc32.len(), crcs.len()));
    }
    let (off, len) = blocks.iter().zip(crcs.iter().zip(&fp.block_crc32)).find(|(_, (a, b))| a != b)?.0;
    Some(format!(
        "bytes {off}..{} differ from what the checkpoint read (the file was edited before the checkpoint's position {}; \
         only appending after it is allowed)",
        off + len,
        fp.bytes
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_match_by_name_or_alias_and_extra_ones_are_counted() {
        use crate::schema::{Field, FieldType, Literal};
        let mut watched = Field::new("watched_ms", FieldType::I64);
        watched.aliases = vec!["duration_ms".into()];
        let mut device = Field::new("device", FieldType::String);
        device.default = Some(Literal::Str("tv".into()));
        let fields = vec![Field::new("k", FieldType::U64), Field::new("ts", FieldType::I64), watched, device];
        let schema = Schema::new("plays", fields, &["k".into()], "ts").unwrap();
        let p = Path::new("f.csv");
        // Reordered, renamed through the alias, `device` missing, an extra column.
        let cols = map_columns(p, &schema, &[b"duration_ms", b"extra", b"ts", b"k"]).unwrap();
        assert_eq!(cols, Columns { of_field: vec![Some(3), Some(2), Some(0), None], extra: 1 });
        let both = map_columns(p, &schema, &[b"k", b"ts", b"duration_ms", b"watched_ms"]).unwrap_err().to_string();
        assert!(both.contains("two columns for field `watched_ms`") && both.contains("3 `duration_ms`"), "{both}");
        // A key or time column missing: the file opens, its rows become dead letters.
        let no_key = map_columns(p, &schema, &[b"ts", b"watched_ms", b"x", b"x"]).unwrap();
        assert_eq!(no_key, Columns { of_field: vec![None, Some(0), Some(1), None], extra: 2 });
        assert_eq!(
            (absent_role(&schema, 0), absent_role(&schema, 1), absent_role(&schema, 2)),
            (Some("key"), Some("time"), None)
        );
        assert_eq!(no_column_reason(&schema, 0, "key"), "the file has no column `k`, the key field of input `plays`");
    }

    #[test]
    fn fingerprint_blocks_cover_short_prefixes_whole_and_sample_long_ones() {
        assert!(fingerprint_blocks(0).is_empty());
        assert_eq!(fingerprint_blocks(10), vec![(0, 10)]);
        assert_eq!(fingerprint_blocks(5000), vec![(0, 4096), (4096, 904)]);
        let n = 1 << 30;
        let v = fingerprint_blocks(n);
        assert_eq!(v.len(), 17);
        assert_eq!(v[0], (0, 4096));
        assert_eq!(*v.last().unwrap(), (n - 4096, 4096), "the block just before the position");
        assert!(v.windows(2).all(|w| w[0].0 < w[1].0) && v.iter().all(|&(o, l)| o + l <= n));
    }

    #[test]
    fn appending_keeps_a_fingerprint_and_editing_or_truncating_breaks_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.csv");
        let body: Vec<u8> = (0..200_000u32).flat_map(|i| format!("{i},x\n").into_bytes()).collect();
        std::fs::write(&p, &body).unwrap();
        let pos = body.len() as u64 - 1000;
        let fp = fingerprint(&p, pos).unwrap();
        assert_eq!(fingerprint_change(&p, &fp), None);
        std::fs::write(&p, [&body[..], b"9,y\n"].concat()).unwrap();
        assert_eq!(fingerprint_change(&p, &fp), None, "appended");
        let mut edited = body.clone();
        edited[pos as usize - 10] = b'#';
        std::fs::write(&p, &edited).unwrap();
        assert!(fingerprint_change(&p, &fp).unwrap().contains("differ"));
        std::fs::write(&p, &body[..100]).unwrap();
        assert!(fingerprint_change(&p, &fp).unwrap().contains("shorter"));
        assert!(fingerprint(&p, pos).is_err(), "a position past the end is an error");
    }

    /// `cargo test --lib fingerprint_timing_1gb -- --ignored --nocapture`: the cost of a
    /// fingerprint of a 1 GiB prefix, page cache warm and cold (recorded in perf/).
    #[test]
    #[ignore]
    fn fingerprint_timing_1gb() {
        use std::os::fd::AsRawFd;
        let dir = std::env::var("WEFT_FP_DIR").map(PathBuf::from).unwrap_or_else(|_| std::env::temp_dir());
        let p = dir.join("weft-fingerprint-1g.bin");
        let n: u64 = 1 << 30;
        {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
            let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i * 31 % 251) as u8).collect();
            for _ in 0..n / chunk.len() as u64 {
                f.write_all(&chunk).unwrap();
            }
        }
        let evict = || {
            let f = std::fs::File::open(&p).unwrap();
            f.sync_all().unwrap();
            // SAFETY: plain advice call on a descriptor we own.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        };
        for round in 0..3 {
            evict();
            let t = std::time::Instant::now();
            let fp = fingerprint(&p, n - 12345).unwrap();
            let take_cold = t.elapsed();
            let t = std::time::Instant::now();
            assert_eq!(fingerprint_change(&p, &fp), None);
            let check_warm = t.elapsed();
            evict();
            let t = std::time::Instant::now();
            assert_eq!(fingerprint_change(&p, &fp), None);
            let check_cold = t.elapsed();
            println!(
                "round {round}: take (cold) {take_cold:?}, check (warm) {check_warm:?}, check (cold) {check_cold:?}"
            );
        }
        std::fs::remove_file(&p).unwrap();
    }
}

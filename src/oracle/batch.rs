//! The batch join: the validation oracle. It computes the join of docs/SEMANTICS.md over
//! whole inputs, on a code path that shares nothing with the streaming engine but
//! the sources (parsing, dead letters) and the formatters (byte-identical rows).
//!
//! Three phases, each on up to `threads` OS threads:
//! 1. **Read**: each partition (input file or generator partition) is read start to
//!    end by one thread, through its [`Source`](crate::source::Source). The
//!    per-partition lateness rule is applied in file order (`t < max(t of earlier
//!    rows) - B - A`, in i128); late rows go to `late/<input>-<partition>.<input ext>`,
//!    malformed rows to `dead/<input>-<partition>.jsonl` (names from `sink::layout`,
//!    which also prepares the directory). Every other row is copied
//!    into the arena of the hash bucket of its key (rows with a NULL key go to a side
//!    list: they never match). A large plain CSV file (no quotes, no carriage
//!    returns) is instead cut into chunks of whole lines parsed by every thread with
//!    the same cell parser, then judged late chunk by chunk starting from the max
//!    time of the chunks before; its rows stay in the chunk's arena.
//! 2. **Join**: each bucket is joined by one thread: per side, entries are sorted by
//!    (key hash, time), hash collisions split by key bytes, and the rows gathered in
//!    that order; equal keys are merged and each left row's window
//!    `[t + lower_ms, t + upper_ms]` is found with two monotone pointers over the
//!    right rows, so the cost is O(n log n + output).
//! 3. **Write**: join thread `i` formats its rows with [`OutputFormatter`] into
//!    `part-<i>.<ext>.inprogress` and renames it to `part-<i>.<ext>` when complete.
//!
//! Invariants: every row a source hands out is counted exactly once as late, dead,
//! or joined input; a non-late row with no match is counted as unmatched (and
//! emitted NULL-padded when the join kind asks for it); duplicates stay distinct;
//! the chunked read decides exactly what a sequential read decides (tests check
//! rows, late files and dead letters byte for byte). The whole input is held in
//! memory (about row bytes + 48 bytes per row, plus the chunk being parsed); the
//! output is streamed to disk. Bad input never panics: it is a dead letter or a
//! [`BatchError`].

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::codec::csv::{cell_reason, parse_cell};
use crate::codec::format::{InputFormatter, OutputFormatter};
use crate::codec::json::write_dead_letter;
use crate::config::{Format, Job, JoinKind};
use crate::event::Side;
use crate::event::{encode_key, event_time, RowBuilder, RowView};
use crate::schema::Schema;
use crate::sink::layout::{self, Claim, PrepareError};
use crate::source::{self, PartitionSpec, PollStatus, SourceError, SourceItem};

/// Rows a reader takes from its source per poll.
pub const POLL_ROWS: usize = 4096;
/// Hash buckets per join thread: more buckets than threads balance skewed keys.
pub const BUCKETS_PER_THREAD: usize = 8;
/// A writer flushes its formatting buffer to the file past this many bytes.
pub const WRITE_BUF_BYTES: usize = 1 << 20;
/// CSV files at least this large are parsed by every thread in parallel chunks.
pub const PARALLEL_CSV_BYTES_MIN: u64 = 4 << 20;
/// Threads the batch join accepts.
pub const THREADS_MAX: usize = 256;
/// Key bytes kept in each entry; longer keys are also stored in the arena.
const KEY_INLINE_BYTES: usize = 16;
/// Arena offsets share a u64 with the index of the reader that owns the arena.
const LOC_OFF_BITS: u32 = 48;
const LOC_OFF_MASK: u64 = (1 << LOC_OFF_BITS) - 1;
/// Set in a reader's entries that point into its shared arena (cleared, and the
/// arena index set, when buckets are gathered).
const LOC_SHARED: u64 = 1 << (LOC_OFF_BITS - 1);
/// Fixed hash seeds: the bucket of a key, and so the part file of a row, is the
/// same on every run.
const HASH_SEEDS: [u64; 4] =
    [0x5745_4654_4241_5443, 0x9E37_79B9_7F4A_7C15, 0xD1B5_4A32_D192_ED03, 0x8CB9_2BA7_2F3D_8DD7];

const _: () = assert!(THREADS_MAX * BUCKETS_PER_THREAD <= u16::MAX as usize);
const _: () = assert!(2 * THREADS_MAX < (1 << (64 - LOC_OFF_BITS)));

/// Errors of a batch run. Malformed rows are not errors: they are dead letters.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("output directory {path} already holds weft output ({found}); pass --force to replace it")]
    OutputExists { path: PathBuf, found: PathBuf },
    #[error("input file {path} lies where the output goes ({dir}); choose another output directory")]
    InputInOutput { path: PathBuf, dir: PathBuf },
    #[error("{path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: io::Error },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("threads must be in 1..={THREADS_MAX}, got {0}")]
    Threads(usize),
    #[error("{path}: one reader's arena passed {limit} bytes", limit = LOC_OFF_MASK)]
    ArenaFull { path: String },
    #[error("a batch {0} thread panicked")]
    ThreadPanicked(&'static str),
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> BatchError + 'a {
    move |source| BatchError::Io { path: path.to_path_buf(), op, source }
}

/// Counts for one input of a batch run (JSON field names as `weft batch` prints them;
/// the streaming engine's counterpart is `metrics::InputReport`).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct BatchInputReport {
    pub name: String,
    pub partitions: u32,
    /// Well-formed rows read (late ones included).
    pub rows_in: u64,
    pub late_rows: u64,
    pub dead_rows: u64,
    /// Values of rows read that no field answers to (extra CSV columns once per row,
    /// unknown JSON keys): ignored, counted.
    pub extra_fields: u64,
    /// Non-late rows that matched no row of the other input (emitted or not).
    pub unmatched_rows: u64,
}

/// What a batch run did; `weft batch` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct BatchReport {
    pub output_dir: PathBuf,
    pub kind: JoinKind,
    pub threads: u32,
    pub left: BatchInputReport,
    pub right: BatchInputReport,
    pub matched_pairs: u64,
    pub output_rows: u64,
    pub output_files: Vec<PathBuf>,
    pub read_ms: u64,
    pub join_ms: u64,
    pub wall_ms: u64,
}

impl BatchReport {
    pub fn input(&self, side: Side) -> &BatchInputReport {
        match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        }
    }

    pub fn print(&self) {
        println!("batch join ({:?}) into {}", self.kind, self.output_dir.display());
        for s in [&self.left, &self.right] {
            println!(
                "  {:<16} partitions {:>4}  rows in {:>12}  late {:>10}  dead {:>8}  unmatched {:>10}",
                s.name, s.partitions, s.rows_in, s.late_rows, s.dead_rows, s.unmatched_rows
            );
        }
        println!(
            "  matched pairs {}  output rows {} in {} files",
            self.matched_pairs,
            self.output_rows,
            self.output_files.len()
        );
        let events = self.left.rows_in + self.right.rows_in;
        let rate = if self.wall_ms > 0 { events as f64 * 1000.0 / self.wall_ms as f64 } else { 0.0 };
        println!(
            "  {} threads, read {} ms, join+write {} ms, wall {} ms ({:.0} input rows/s)",
            self.threads, self.read_ms, self.join_ms, self.wall_ms, rate
        );
    }
}

/// Arenas are shared between the buckets a chunk of a large file routes rows to.
type Arena = Arc<Vec<u8>>;

/// One stored row: where its key and record are, and what the join sorts on.
#[derive(Clone, Copy, Debug)]
struct Entry {
    hash: u64,
    ts: i64,
    /// Reader index (high bits) | offset of the record in that reader's arena: the
    /// key bytes (only when longer than [`KEY_INLINE_BYTES`]) then the row.
    loc: u64,
    key_len: u32,
    row_len: u32,
    /// The key's first bytes, zero-padded: most keys compare without touching the
    /// arena, which would be a cache miss per comparison.
    inline: [u8; KEY_INLINE_BYTES],
}

impl Entry {
    #[inline]
    fn key_in_arena(&self) -> usize {
        if self.key_len as usize > KEY_INLINE_BYTES {
            self.key_len as usize
        } else {
            0
        }
    }
}

/// The rows of one side that one reader routed to one bucket.
#[derive(Default)]
struct Bucket {
    arena: Vec<u8>,
    keyed: Vec<Entry>,
    /// Non-late rows with a NULL key: never matched.
    null_key: Vec<Entry>,
}

/// The output of one reader thread.
struct ReaderOut {
    /// `buckets[side][bucket]`.
    buckets: [Vec<Bucket>; 2],
    counts: [BatchInputReport; 2],
    /// The arena that entries flagged [`LOC_SHARED`] point into: a parsed chunk of a
    /// large CSV file, whose rows are not copied again.
    shared: Option<Arc<Vec<u8>>>,
}

/// One bucket's rows from every reader, ready to join.
struct BucketWork {
    /// `arenas[side][2 * reader]` = the reader's own arena for this bucket,
    /// `arenas[side][2 * reader + 1]` = its shared chunk arena (maybe empty).
    arenas: [Vec<Arena>; 2],
    keyed: [Vec<Entry>; 2],
    null_key: [Vec<Entry>; 2],
}

impl BucketWork {
    fn rows(&self) -> usize {
        self.keyed[0].len() + self.keyed[1].len() + self.null_key[0].len() + self.null_key[1].len()
    }
}

#[derive(Default, Clone, Copy)]
struct JoinCounts {
    pairs: u64,
    unmatched: [u64; 2],
    output_rows: u64,
}

/// Tuning knobs of [`run_with`]; [`run`] uses the defaults.
#[derive(Clone, Copy, Debug)]
pub struct BatchOptions {
    /// CSV files at least this large are parsed by every thread in chunks.
    pub parallel_csv_bytes_min: u64,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions { parallel_csv_bytes_min: PARALLEL_CSV_BYTES_MIN }
    }
}

/// Runs the batch join of `job` and writes its output into `out_dir`.
///
/// `threads` = 0 means one per available CPU. Refuses a directory that already holds
/// weft output unless `force`, and then removes only what it would write itself.
pub fn run(job: &Job, out_dir: &Path, force: bool, threads: usize) -> Result<BatchReport, BatchError> {
    run_with(job, out_dir, force, threads, BatchOptions::default())
}

/// [`run`] with explicit [`BatchOptions`].
pub fn run_with(
    job: &Job,
    out_dir: &Path,
    force: bool,
    threads: usize,
    opts: BatchOptions,
) -> Result<BatchReport, BatchError> {
    let t_start = Instant::now();
    let threads = if threads == 0 { crate::config::available_cpus() as usize } else { threads };
    if threads > THREADS_MAX {
        return Err(BatchError::Threads(threads));
    }
    for side in [Side::Left, Side::Right] {
        if let crate::config::InputSource::Kafka(k) = &job.input(side).source {
            if !k.bounded {
                return Err(SourceError::Kafka(format!(
                    "input `{}` reads Kafka topic `{}` unbounded: the batch join needs an end (set `bounded = true` \
                     in its `kafka` table, or give the same rows as files)",
                    job.input(side).schema.name,
                    k.topic
                ))
                .into());
            }
        }
    }
    let mut job = job.clone();
    source::kafka::resolve(&mut job)?;
    let job = &job;
    layout::prepare_output_dir(job, out_dir, force, Claim::TextFiles)?;
    let all_specs = source::plan(job);
    let partitions = source::partition_counts(&all_specs);
    let nbuckets = threads * BUCKETS_PER_THREAD;

    let outs = read_all(job, all_specs, threads, nbuckets, out_dir, opts)?;
    let mut counts = input_counts(job, &outs, partitions);
    let read_ms = t_start.elapsed().as_millis() as u64;

    let works = bucket_works(outs, nbuckets);
    let t_join = Instant::now();
    let (total, files) = join_all(job, works, threads, out_dir)?;
    counts[0].unmatched_rows = total.unmatched[0];
    counts[1].unmatched_rows = total.unmatched[1];
    let [left, right] = counts;
    source::kafka::wait_closed();
    Ok(BatchReport {
        output_dir: out_dir.to_path_buf(),
        kind: job.kind,
        threads: threads as u32,
        left,
        right,
        matched_pairs: total.pairs,
        output_rows: total.output_rows,
        output_files: files,
        read_ms,
        join_ms: t_join.elapsed().as_millis() as u64,
        wall_ms: t_start.elapsed().as_millis() as u64,
    })
}

/// Phase 1: reads every partition, decides lateness, routes rows to buckets. Large
/// CSV files first, each with every thread; then the rest, a file per thread.
fn read_all(
    job: &Job,
    all_specs: Vec<PartitionSpec>,
    threads: usize,
    nbuckets: usize,
    out_dir: &Path,
    opts: BatchOptions,
) -> Result<Vec<ReaderOut>, BatchError> {
    let mut outs = Vec::new();
    let mut specs = Vec::with_capacity(all_specs.len());
    for spec in all_specs {
        let big = match &spec {
            PartitionSpec::File { format: Format::Csv, path, .. } => {
                threads > 1 && fs::metadata(path).is_ok_and(|m| m.len() >= opts.parallel_csv_bytes_min)
            }
            _ => false,
        };
        match big {
            true => match read_csv_parallel(job, &spec, threads, nbuckets, out_dir)? {
                Some(mut o) => outs.append(&mut o),
                None => specs.push(spec),
            },
            false => specs.push(spec),
        }
    }
    let readers = threads.min(specs.len());
    let next_spec = AtomicUsize::new(0);
    let reader_outs: Vec<Result<ReaderOut, BatchError>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..readers).map(|_| s.spawn(|| read_partitions(job, &specs, &next_spec, nbuckets, out_dir))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(BatchError::ThreadPanicked("reader")))).collect()
    });
    for r in reader_outs {
        outs.push(r?);
    }
    if 2 * outs.len() >= 1 << (64 - LOC_OFF_BITS) {
        return Err(BatchError::Threads(outs.len()));
    }
    Ok(outs)
}

/// The read counts of both inputs, summed over the readers.
fn input_counts(job: &Job, outs: &[ReaderOut], partitions: [u32; 2]) -> [BatchInputReport; 2] {
    let mut counts: [BatchInputReport; 2] = Default::default();
    for side in [Side::Left, Side::Right] {
        let c = &mut counts[side.idx()];
        c.name = job.input(side).schema.name.clone();
        c.partitions = partitions[side.idx()];
        for o in outs {
            let oc = &o.counts[side.idx()];
            c.rows_in += oc.rows_in;
            c.late_rows += oc.late_rows;
            c.dead_rows += oc.dead_rows;
            c.extra_fields += oc.extra_fields;
        }
    }
    counts
}

/// Transposes reader outputs into per-bucket work, biggest buckets first so the
/// last thread to finish does not start a large bucket late.
fn bucket_works(outs: Vec<ReaderOut>, nbuckets: usize) -> Vec<BucketWork> {
    let nouts = outs.len();
    let mut works: Vec<BucketWork> = (0..nbuckets)
        .map(|_| BucketWork {
            arenas: [Vec::with_capacity(2 * nouts), Vec::with_capacity(2 * nouts)],
            keyed: [Vec::new(), Vec::new()],
            null_key: [Vec::new(), Vec::new()],
        })
        .collect();
    for (reader, o) in outs.into_iter().enumerate() {
        let own = (2 * reader as u64) << LOC_OFF_BITS;
        let shared = (2 * reader as u64 + 1) << LOC_OFF_BITS;
        let retag = |e: Entry| {
            let loc = if e.loc & LOC_SHARED != 0 { (e.loc & !LOC_SHARED) | shared } else { e.loc | own };
            Entry { loc, ..e }
        };
        let shared_arena = o.shared.unwrap_or_default();
        for (side, buckets) in o.buckets.into_iter().enumerate() {
            for (b, bucket) in buckets.into_iter().enumerate() {
                let w = &mut works[b];
                debug_assert_eq!(w.arenas[side].len(), 2 * reader);
                w.arenas[side].push(Arc::new(bucket.arena));
                w.arenas[side].push(shared_arena.clone());
                w.keyed[side].extend(bucket.keyed.into_iter().map(retag));
                w.null_key[side].extend(bucket.null_key.into_iter().map(retag));
            }
        }
    }
    works.sort_by_key(|w| std::cmp::Reverse(w.rows()));
    works
}

/// Phases 2 and 3: `threads` workers join buckets from one queue and write a part
/// file each. Returns the summed counts and the part files.
fn join_all(
    job: &Job,
    works: Vec<BucketWork>,
    threads: usize,
    out_dir: &Path,
) -> Result<(JoinCounts, Vec<PathBuf>), BatchError> {
    let ext = job.output_format.ext();
    let queue = Mutex::new(works.into_iter());
    let formatter = OutputFormatter::new(job.output_format, &job.left.schema, &job.right.schema);
    let results: Vec<Result<(JoinCounts, PathBuf), BatchError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (queue, formatter) = (&queue, &formatter);
                s.spawn(move || join_worker(job, i, queue, formatter, out_dir, ext))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(BatchError::ThreadPanicked("join")))).collect()
    });
    let mut total = JoinCounts::default();
    let mut files = Vec::with_capacity(threads);
    for r in results {
        let (c, path) = r?;
        total.pairs += c.pairs;
        total.unmatched[0] += c.unmatched[0];
        total.unmatched[1] += c.unmatched[1];
        total.output_rows += c.output_rows;
        files.push(path);
    }
    Ok((total, files))
}

impl From<PrepareError> for BatchError {
    fn from(e: PrepareError) -> Self {
        match e {
            PrepareError::Io(e) => BatchError::Io { path: e.path, op: e.op, source: e.source },
            PrepareError::Exists { dir, found } => BatchError::OutputExists { path: dir, found: found[0].clone() },
            PrepareError::InputInOutput { input, dir } => BatchError::InputInOutput { path: input, dir },
        }
    }
}

/// A lazily created side-output file (late rows or dead letters).
struct SideFile {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
    header: Vec<u8>,
}

impl SideFile {
    fn new(path: PathBuf, header: Vec<u8>) -> SideFile {
        SideFile { path, file: None, buf: Vec::new(), header }
    }

    /// The buffer to append one record to; the file is created on first use.
    fn buf(&mut self) -> &mut Vec<u8> {
        if self.file.is_none() && self.buf.is_empty() {
            self.buf.extend_from_slice(&self.header);
        }
        &mut self.buf
    }

    fn maybe_flush(&mut self) -> Result<(), BatchError> {
        if self.buf.len() >= WRITE_BUF_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BatchError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some(crate::sys::create_new_nofollow(&self.path).map_err(io_err(&self.path, "create"))?);
        }
        if let Some(f) = &mut self.file {
            f.write_all(&self.buf).map_err(io_err(&self.path, "write"))?;
        }
        self.buf.clear();
        Ok(())
    }
}

/// Routes non-late rows of one reader into its hash buckets.
struct Bucketer {
    hasher: ahash::RandomState,
    nbuckets: usize,
    key: Vec<u8>,
    out: ReaderOut,
}

impl Bucketer {
    fn new(nbuckets: usize) -> Bucketer {
        Bucketer {
            hasher: ahash::RandomState::with_seeds(HASH_SEEDS[0], HASH_SEEDS[1], HASH_SEEDS[2], HASH_SEEDS[3]),
            nbuckets,
            key: Vec::new(),
            out: ReaderOut {
                buckets: [
                    (0..nbuckets).map(|_| Bucket::default()).collect(),
                    (0..nbuckets).map(|_| Bucket::default()).collect(),
                ],
                counts: Default::default(),
                shared: None,
            },
        }
    }

    /// Routes a row that lives at `off` in the reader's shared arena: when its key
    /// fits in the entry, only the entry is stored; otherwise the row is copied.
    #[allow(clippy::too_many_arguments)]
    fn route_shared(
        &mut self,
        job: &Job,
        side: Side,
        ts: i64,
        row: &[u8],
        off: u64,
        seq: u64,
        what: &str,
    ) -> Result<(), BatchError> {
        let has_key = encode_key(RowView(row), &job.input(side).schema, &mut self.key);
        if self.key.len() > KEY_INLINE_BYTES || off >= LOC_SHARED {
            return self.route(job, side, ts, row, seq, what);
        }
        let key_len = if has_key { self.key.len() } else { 0 };
        let hash =
            if has_key { self.hasher.hash_one(self.key.as_slice()) } else { seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) };
        let b = ((hash as u128 * self.nbuckets as u128) >> 64) as usize;
        let bucket = &mut self.out.buckets[side.idx()][b];
        let mut inline = [0u8; KEY_INLINE_BYTES];
        inline[..key_len].copy_from_slice(&self.key[..key_len]);
        let e = Entry { hash, ts, loc: off | LOC_SHARED, key_len: key_len as u32, row_len: row.len() as u32, inline };
        if has_key {
            bucket.keyed.push(e);
        } else {
            bucket.null_key.push(e);
        }
        Ok(())
    }

    /// Copies a non-late row (with its encoded key in front) into its bucket. Rows
    /// with a NULL key are spread over the buckets by `seq`.
    fn route(&mut self, job: &Job, side: Side, ts: i64, row: &[u8], seq: u64, what: &str) -> Result<(), BatchError> {
        let has_key = encode_key(RowView(row), &job.input(side).schema, &mut self.key);
        let key_len = if has_key { self.key.len() } else { 0 };
        let hash =
            if has_key { self.hasher.hash_one(self.key.as_slice()) } else { seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) };
        let b = ((hash as u128 * self.nbuckets as u128) >> 64) as usize;
        let bucket = &mut self.out.buckets[side.idx()][b];
        let off = bucket.arena.len() as u64;
        let mut inline = [0u8; KEY_INLINE_BYTES];
        let n = key_len.min(KEY_INLINE_BYTES);
        inline[..n].copy_from_slice(&self.key[..n]);
        let in_arena = if key_len > KEY_INLINE_BYTES { key_len } else { 0 };
        if off + (in_arena + row.len()) as u64 > LOC_OFF_MASK {
            return Err(BatchError::ArenaFull { path: what.to_string() });
        }
        bucket.arena.extend_from_slice(&self.key[..in_arena]);
        bucket.arena.extend_from_slice(row);
        let e = Entry { hash, ts, loc: off, key_len: key_len as u32, row_len: row.len() as u32, inline };
        if has_key {
            bucket.keyed.push(e);
        } else {
            bucket.null_key.push(e);
        }
        Ok(())
    }
}

/// The lateness rule of SEMANTICS.md: `t < max(t of earlier rows) - B - A`, in i128
/// so that no time near the i64 limits overflows.
#[inline]
fn is_late(max_before: Option<i64>, ts: i64, slack: i128) -> bool {
    max_before.is_some_and(|m| (ts as i128) < m as i128 - slack)
}

/// The format of an input's files: its late rows are written in it, so they can be
/// fed again (the generator's as CSV), as the streaming sink does.
fn input_format(job: &Job, side: Side) -> Format {
    job.input(side).row_format()
}

/// Reads partitions from the shared queue until it is empty.
fn read_partitions(
    job: &Job,
    specs: &[PartitionSpec],
    next: &AtomicUsize,
    nbuckets: usize,
    out_dir: &Path,
) -> Result<ReaderOut, BatchError> {
    let mut bucketer = Bucketer::new(nbuckets);
    let late_fmt = [
        InputFormatter::new(input_format(job, Side::Left), &job.left.schema),
        InputFormatter::new(input_format(job, Side::Right), &job.right.schema),
    ];
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(spec) = specs.get(i) else { break };
        read_partition(job, spec, &mut bucketer, &late_fmt, out_dir)?;
    }
    Ok(bucketer.out)
}

/// Reads one partition start to end: late rows and dead letters to its side files
/// (created only if a row goes there), every other row into `bucketer`.
fn read_partition(
    job: &Job,
    spec: &PartitionSpec,
    bucketer: &mut Bucketer,
    late_fmt: &[InputFormatter; 2],
    out_dir: &Path,
) -> Result<(), BatchError> {
    let slack = job.max_out_of_orderness_ms as i128 + job.allowed_lateness_ms as i128;
    let (index, sides): (u32, &[Side]) = match spec {
        PartitionSpec::File { side: Side::Left, index, .. }
        | PartitionSpec::Split { side: Side::Left, index, .. }
        | PartitionSpec::Kafka { side: Side::Left, index, .. } => (*index, &[Side::Left]),
        PartitionSpec::File { side: Side::Right, index, .. }
        | PartitionSpec::Split { side: Side::Right, index, .. }
        | PartitionSpec::Kafka { side: Side::Right, index, .. } => (*index, &[Side::Right]),
        PartitionSpec::Generator { index, .. } => (*index, &[Side::Left, Side::Right]),
    };
    let mut src = source::open(spec, job)?;
    let describe = src.describe();
    let name = |side: Side| job.input(side).schema.name.as_str();
    let mut late: [Option<SideFile>; 2] = [None, None];
    let mut dead: [Option<SideFile>; 2] = [None, None];
    for &side in sides {
        let s = side.idx();
        late[s] = Some(SideFile::new(
            layout::batch_late_path(out_dir, name(side), index, input_format(job, side).ext()),
            late_fmt[s].header(),
        ));
        dead[s] = Some(SideFile::new(layout::batch_dead_path(out_dir, name(side), index), Vec::new()));
    }
    // Max event time of the rows read so far, per side of this partition.
    let mut max_ts: [Option<i64>; 2] = [None, None];
    let mut failure: Option<BatchError> = None;
    loop {
        let status = src.poll(POLL_ROWS, u64::MAX, &mut |item| {
            if failure.is_some() {
                return;
            }
            match item {
                SourceItem::Row { side, ts, row, extra, .. } => {
                    let s = side.idx();
                    bucketer.out.counts[s].rows_in += 1;
                    bucketer.out.counts[s].extra_fields += u64::from(extra);
                    let late_row = is_late(max_ts[s], ts, slack);
                    max_ts[s] = Some(max_ts[s].map_or(ts, |m| m.max(ts)));
                    if late_row {
                        bucketer.out.counts[s].late_rows += 1;
                        if let Some(f) = &mut late[s] {
                            late_fmt[s].write(f.buf(), RowView(row));
                            if let Err(e) = f.maybe_flush() {
                                failure = Some(e);
                            }
                        }
                        return;
                    }
                    let seq = bucketer.out.counts[s].rows_in;
                    if let Err(e) = bucketer.route(job, side, ts, row, seq, &describe) {
                        failure = Some(e);
                    }
                }
                SourceItem::Resume { side, max_ts: m } => {
                    let s = side.idx();
                    max_ts[s] = max_ts[s].max(m);
                }
                SourceItem::Dead { side, line, reason, raw } => {
                    let s = side.idx();
                    bucketer.out.counts[s].dead_rows += 1;
                    if let Some(f) = &mut dead[s] {
                        write_dead_letter(f.buf(), name(side), &describe, line, &reason, raw);
                        if let Err(e) = f.maybe_flush() {
                            failure = Some(e);
                        }
                    }
                }
            }
        })?;
        if let Some(e) = failure.take() {
            return Err(e);
        }
        match status {
            PollStatus::Rows => {}
            PollStatus::Done => break,
            PollStatus::Idle { retry_ns } | PollStatus::Waiting { retry_ns } => {
                std::thread::sleep(std::time::Duration::from_nanos(retry_ns.min(10_000_000)))
            }
        }
    }
    for f in late.iter_mut().chain(dead.iter_mut()).flatten() {
        f.flush()?;
    }
    Ok(())
}

/// Rows of one chunk of a plain CSV file, parsed but not yet judged late.
struct ChunkRows {
    arena: Vec<u8>,
    /// (event time, offset in `arena`, length) per well-formed row, in file order.
    rows: Vec<(i64, u64, u32)>,
    /// (line index within the chunk, reason, raw line) per malformed row.
    dead: Vec<(u64, String, Vec<u8>)>,
    /// Lines in the chunk, blank ones included.
    lines: u64,
    max_ts: Option<i64>,
    /// False when the chunk holds a quote or a carriage return: then the whole
    /// file is read by [`CsvSource`](crate::source::csv::CsvSource) instead.
    plain: bool,
}

/// Parses one chunk (whole lines) of a plain CSV file exactly as
/// [`CsvSource`](crate::source::csv::CsvSource) parses those lines: cells split at
/// commas, blank lines skipped, a wrong cell count or a cell that does not parse is
/// a dead letter with the same reason text.
fn parse_chunk(text: &[u8], schema: &Schema, cols: &[Option<usize>], header_len: usize) -> ChunkRows {
    let defaults: Vec<_> = schema.fields.iter().map(crate::evolve::field_default).collect();
    let mut c = ChunkRows {
        arena: Vec::with_capacity(text.len() / 2 * 3),
        rows: Vec::new(),
        dead: Vec::new(),
        lines: 0,
        max_ts: None,
        plain: true,
    };
    // Only the first `header_len` cells are kept (more is a dead letter anyway).
    let mut cells: Vec<(usize, usize)> = Vec::with_capacity(header_len);
    let mut b = RowBuilder::new();
    let mut pos = 0;
    while pos < text.len() {
        let line_start = pos;
        let line_idx = c.lines;
        c.lines += 1;
        cells.clear();
        let mut ncells = 0usize;
        let mut cell_start = pos;
        let mut i = pos;
        while i < text.len() {
            match text[i] {
                b',' => {
                    if cells.len() < header_len {
                        cells.push((cell_start, i));
                    }
                    ncells += 1;
                    cell_start = i + 1;
                }
                b'\n' => break,
                b'"' | b'\r' => {
                    c.plain = false;
                    return c;
                }
                _ => {}
            }
            i += 1;
        }
        if cells.len() < header_len {
            cells.push((cell_start, i));
        }
        ncells += 1;
        let line = &text[line_start..i];
        pos = i + 1;
        if line.len() > source::LINE_BYTES_MAX {
            // As the source, which skips it while reading: its start and its length.
            let reason = source::long_line_reason(line.len() as u64, source::LINE_BYTES_MAX);
            c.dead.push((line_idx, reason, source::truncate_raw(line).to_vec()));
            continue;
        }
        if line.is_empty() {
            continue; // a blank line carries no row
        }
        if ncells != header_len {
            let reason = format!("expected {header_len} columns, found {ncells}");
            c.dead.push((line_idx, reason, line.to_vec()));
            continue;
        }
        let encoded = (|| {
            b.begin(schema.fields.len());
            for (fi, f) in schema.fields.iter().enumerate() {
                let Some(col) = cols[fi] else {
                    // Not in this file: a dead letter for a key or time field, else the
                    // field's default, or NULL (as the source).
                    if let Some(role) = source::absent_role(schema, fi) {
                        return Err(source::no_column_reason(schema, fi, role));
                    }
                    if let Some(v) = &defaults[fi] {
                        b.set_value(fi, v).map_err(|e| format!("field `{}`: default: {e}", f.name))?;
                    }
                    continue;
                };
                let (s, e) = cells[col];
                let cell = &text[s..e];
                parse_cell(&mut b, fi, f.ty, cell).map_err(|r| cell_reason(&f.name, r, cell))?;
            }
            event_time(RowView(b.bytes()), schema)
                .map_err(|r| format!("column `{}`: {r}", schema.fields[schema.time].name))
        })();
        match encoded {
            Ok(ts) => {
                let row = b.bytes();
                c.rows.push((ts, c.arena.len() as u64, row.len() as u32));
                c.arena.extend_from_slice(row);
                c.max_ts = Some(c.max_ts.map_or(ts, |m| m.max(ts)));
            }
            Err(reason) => c.dead.push((line_idx, reason, line.to_vec())),
        }
    }
    c
}

/// Reads one large CSV partition with every thread: the file is cut into chunks of
/// whole lines, parsed in parallel, then each chunk applies the lateness rule
/// starting from the maximum time of the chunks before it (so the decisions are
/// those of a sequential read), and routes its rows. Returns None when the file is
/// not plain (quotes, carriage returns, no header line): the caller then reads it
/// sequentially with the source, which handles every case.
fn read_csv_parallel(
    job: &Job,
    spec: &PartitionSpec,
    threads: usize,
    nbuckets: usize,
    out_dir: &Path,
) -> Result<Option<Vec<ReaderOut>>, BatchError> {
    let PartitionSpec::File { side, index, path, .. } = spec else {
        return Ok(None);
    };
    let (side, index) = (*side, *index);
    let schema = &job.input(side).schema;
    let text = fs::read(path).map_err(io_err(path, "read"))?;
    let Some(header_end) = text.iter().position(|&c| c == b'\n') else {
        return Ok(None);
    };
    let header = &text[..header_end];
    // Anything but a plain header (and the errors of a long one) is the source's.
    let bare = header.strip_prefix(b"\xef\xbb\xbf").unwrap_or(header);
    if bare.is_empty() || header.len() > source::LINE_BYTES_MAX || header.contains(&b'"') || header.contains(&b'\r') {
        return Ok(None);
    }
    let header_cells: Vec<&[u8]> = header.split(|&c| c == b',').collect();
    let cols = source::map_columns(path, schema, &header_cells)?;
    let bounds = chunk_bounds(&text, header_end + 1, threads);
    let parsed = parse_chunks(&text, &bounds, schema, &cols.of_field, header_cells.len())?;
    drop(text);
    if parsed.iter().any(|c| !c.plain) {
        return Ok(None);
    }
    let (max_before, line_before) = chunk_starts(&parsed);
    let late_fmt = InputFormatter::new(Format::Csv, schema);
    let describe = path.display().to_string();
    let results = judge_chunks(job, side, &parsed, &max_before, nbuckets, &late_fmt, &describe);

    // Side outputs in file order: late rows, then dead letters with absolute lines.
    let name = schema.name.as_str();
    let mut late_file = SideFile::new(layout::batch_late_path(out_dir, name, index, "csv"), late_fmt.header());
    let mut dead_file = SideFile::new(layout::batch_dead_path(out_dir, name, index), Vec::new());
    let mut outs = Vec::with_capacity(results.len());
    for (r, (c, &first_line)) in results.into_iter().zip(parsed.into_iter().zip(line_before.iter())) {
        let (mut out, late) = r?;
        out.counts[side.idx()].extra_fields = c.rows.len() as u64 * u64::from(cols.extra);
        if !late.is_empty() {
            late_file.buf().extend_from_slice(&late);
            late_file.maybe_flush()?;
        }
        for (line_idx, reason, raw) in &c.dead {
            let line = first_line + 1 + line_idx;
            write_dead_letter(dead_file.buf(), name, &describe, line, reason, raw);
            dead_file.maybe_flush()?;
        }
        out.shared = Some(Arc::new(c.arena));
        outs.push(out);
    }
    late_file.flush()?;
    dead_file.flush()?;
    Ok(Some(outs))
}

/// Chunk boundaries of `text[body..]` just after a line end, about equal in size:
/// at most `threads` chunks, never an empty one.
fn chunk_bounds(text: &[u8], body: usize, threads: usize) -> Vec<usize> {
    let mut bounds = vec![body];
    for k in 1..threads {
        let target = (body + (text.len() - body) * k / threads).max(*bounds.last().unwrap_or(&body));
        let cut = match text[target..].iter().position(|&c| c == b'\n') {
            Some(p) => target + p + 1,
            None => text.len(),
        };
        bounds.push(cut);
    }
    bounds.push(text.len());
    bounds.dedup();
    bounds
}

/// Parses every chunk on its own thread.
fn parse_chunks(
    text: &[u8],
    bounds: &[usize],
    schema: &Schema,
    cols: &[Option<usize>],
    header_len: usize,
) -> Result<Vec<ChunkRows>, BatchError> {
    std::thread::scope(|s| {
        let handles: Vec<_> = bounds
            .windows(2)
            .map(|w| {
                let chunk = &text[w[0]..w[1]];
                s.spawn(move || parse_chunk(chunk, schema, cols, header_len))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| BatchError::ThreadPanicked("reader")))
            .collect::<Result<_, _>>()
    })
}

/// The max event time and the line number before each chunk: where a sequential
/// read would be when it reaches the chunk.
fn chunk_starts(parsed: &[ChunkRows]) -> (Vec<Option<i64>>, Vec<u64>) {
    let mut max_before = Vec::with_capacity(parsed.len());
    let mut line_before = Vec::with_capacity(parsed.len());
    let (mut m, mut line) = (None::<i64>, 1u64);
    for c in parsed {
        max_before.push(m);
        line_before.push(line);
        m = match (m, c.max_ts) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        line += c.lines;
    }
    (max_before, line_before)
}

/// Each chunk on its own thread: applies the lateness rule from the chunk's start
/// max, formats its late rows, routes the others into buckets (rows stay in the
/// chunk's arena). Returns per chunk its reader output and its late rows' text.
fn judge_chunks(
    job: &Job,
    side: Side,
    parsed: &[ChunkRows],
    max_before: &[Option<i64>],
    nbuckets: usize,
    late_fmt: &InputFormatter,
    describe: &str,
) -> Vec<Result<(ReaderOut, Vec<u8>), BatchError>> {
    let slack = job.max_out_of_orderness_ms as i128 + job.allowed_lateness_ms as i128;
    std::thread::scope(|s| {
        let handles: Vec<_> = parsed
            .iter()
            .zip(max_before.iter())
            .map(|(c, &start_max)| {
                s.spawn(move || {
                    let mut bucketer = Bucketer::new(nbuckets);
                    let mut late = Vec::new();
                    let mut max = start_max;
                    let counts = &mut bucketer.out.counts[side.idx()];
                    counts.rows_in = c.rows.len() as u64;
                    counts.dead_rows = c.dead.len() as u64;
                    for (n, &(ts, off, len)) in c.rows.iter().enumerate() {
                        let row = &c.arena[off as usize..off as usize + len as usize];
                        let late_row = is_late(max, ts, slack);
                        max = Some(max.map_or(ts, |m| m.max(ts)));
                        if late_row {
                            bucketer.out.counts[side.idx()].late_rows += 1;
                            late_fmt.write(&mut late, RowView(row));
                        } else {
                            bucketer.route_shared(job, side, ts, row, off, off ^ n as u64, describe)?;
                        }
                    }
                    Ok((bucketer.out, late))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(BatchError::ThreadPanicked("reader")))).collect()
    })
}

/// The bytes of an entry's row.
#[inline]
fn row_of<'a>(arenas: &'a [Arena], e: &Entry) -> &'a [u8] {
    let arena = &arenas[(e.loc >> LOC_OFF_BITS) as usize];
    let at = (e.loc & LOC_OFF_MASK) as usize + e.key_in_arena();
    &arena[at..at + e.row_len as usize]
}

/// A total order on keys that touches the arena only for keys longer than
/// [`KEY_INLINE_BYTES`] whose first bytes are equal. Equal keys compare Equal.
#[inline]
fn key_cmp(aa: &[Arena], a: &Entry, ba: &[Arena], b: &Entry) -> std::cmp::Ordering {
    a.inline.cmp(&b.inline).then(a.key_len.cmp(&b.key_len)).then_with(|| {
        if a.key_in_arena() == 0 {
            return std::cmp::Ordering::Equal;
        }
        let ka = &aa[(a.loc >> LOC_OFF_BITS) as usize];
        let kb = &ba[(b.loc >> LOC_OFF_BITS) as usize];
        let (oa, ob) = ((a.loc & LOC_OFF_MASK) as usize, (b.loc & LOC_OFF_MASK) as usize);
        ka[oa..oa + a.key_len as usize].cmp(&kb[ob..ob + b.key_len as usize])
    })
}

/// Orders entries by (hash, key, time): equal keys become adjacent runs sorted by
/// time. Sorts on the integers only; a run of equal hashes is checked for a
/// collision (two keys, one hash), which a stable sort on the key then separates,
/// keeping each key's time order.
fn sort_entries(arenas: &[Arena], v: &mut [Entry]) {
    v.sort_unstable_by_key(|e| (e.hash, e.ts));
    let mut start = 0;
    while start < v.len() {
        let h = v[start].hash;
        let mut end = start + 1;
        let mut mixed = false;
        while end < v.len() && v[end].hash == h {
            mixed |= key_cmp(arenas, &v[start], arenas, &v[end]).is_ne();
            end += 1;
        }
        if mixed {
            v[start..end].sort_by(|a, b| key_cmp(arenas, a, arenas, b));
        }
        start = end;
    }
}

/// Copies the records of `keyed` then `null_key`, in their order, into one new
/// arena and points the entries at it. The copy loop has independent iterations, so
/// the CPU overlaps its cache misses; the join then reads rows sequentially instead
/// of missing the cache once per output row.
fn gather(arenas: &[Arena], keyed: &mut [Entry], null_key: &mut [Entry]) -> Arena {
    let bytes: usize = keyed.iter().chain(null_key.iter()).map(|e| e.key_in_arena() + e.row_len as usize).sum();
    let mut out = Vec::with_capacity(bytes);
    for e in keyed.iter_mut().chain(null_key.iter_mut()) {
        let arena = &arenas[(e.loc >> LOC_OFF_BITS) as usize];
        let at = (e.loc & LOC_OFF_MASK) as usize;
        let len = e.key_in_arena() + e.row_len as usize;
        let off = out.len() as u64;
        out.extend_from_slice(&arena[at..at + len]);
        e.loc = off;
    }
    debug_assert_eq!(out.len(), bytes);
    Arc::new(out)
}

/// The end of the run of entries with the key of `v[start]`.
fn run_end(arenas: &[Arena], v: &[Entry], start: usize) -> usize {
    let first = &v[start];
    let mut end = start + 1;
    while end < v.len() && v[end].hash == first.hash && key_cmp(arenas, first, arenas, &v[end]).is_eq() {
        end += 1;
    }
    end
}

/// Buffers formatted rows of one part file.
struct PartWriter<'a> {
    formatter: &'a OutputFormatter,
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

impl PartWriter<'_> {
    #[inline]
    fn row(&mut self, l: Option<&[u8]>, r: Option<&[u8]>) -> Result<(), BatchError> {
        self.formatter.write(&mut self.buf, l.map(RowView), r.map(RowView));
        if self.buf.len() >= WRITE_BUF_BYTES {
            self.file.write_all(&self.buf).map_err(io_err(&self.path, "write"))?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Joins buckets from the queue into `part-<i>.<ext>`.
fn join_worker(
    job: &Job,
    i: usize,
    queue: &Mutex<std::vec::IntoIter<BucketWork>>,
    formatter: &OutputFormatter,
    out_dir: &Path,
    ext: &str,
) -> Result<(JoinCounts, PathBuf), BatchError> {
    let final_path = layout::batch_part_path(out_dir, i, ext, false);
    let path = layout::batch_part_path(out_dir, i, ext, true);
    let file = crate::sys::create_new_nofollow(&path).map_err(io_err(&path, "create"))?;
    let mut w = PartWriter { formatter, path, file, buf: formatter.header() };
    let mut counts = JoinCounts::default();
    let mut matched = Vec::new();
    loop {
        let work = match queue.lock() {
            Ok(mut q) => q.next(),
            Err(_) => return Err(BatchError::ThreadPanicked("join")),
        };
        let Some(mut work) = work else { break };
        join_bucket(job, &mut work, &mut w, &mut counts, &mut matched)?;
    }
    w.file.write_all(&w.buf).map_err(io_err(&w.path, "write"))?;
    drop(w.file);
    fs::rename(&w.path, &final_path).map_err(io_err(&w.path, "rename"))?;
    Ok((counts, final_path))
}

/// Joins one bucket: sort both sides, merge equal keys, sweep each key's windows.
fn join_bucket(
    job: &Job,
    work: &mut BucketWork,
    w: &mut PartWriter,
    c: &mut JoinCounts,
    matched: &mut Vec<bool>,
) -> Result<(), BatchError> {
    let emit = [job.kind.emits_unmatched(Side::Left), job.kind.emits_unmatched(Side::Right)];
    let window = (job.lower_ms as i128, job.upper_ms as i128);
    for side in 0..2 {
        sort_entries(&work.arenas[side], &mut work.keyed[side]);
        let gathered = gather(&work.arenas[side], &mut work.keyed[side], &mut work.null_key[side]);
        work.arenas[side] = vec![gathered];
    }
    let [la, ra] = &work.arenas;
    let [lk, rk] = &work.keyed;

    let (mut i, mut j) = (0, 0);
    while i < lk.len() || j < rk.len() {
        let order = if i == lk.len() {
            std::cmp::Ordering::Greater
        } else if j == rk.len() {
            std::cmp::Ordering::Less
        } else {
            let (a, b) = (&lk[i], &rk[j]);
            a.hash.cmp(&b.hash).then_with(|| key_cmp(la, a, ra, b))
        };
        match order {
            std::cmp::Ordering::Less => {
                let end = run_end(la, lk, i);
                emit_unmatched(w, c, Side::Left, emit[0], la, &lk[i..end])?;
                i = end;
            }
            std::cmp::Ordering::Greater => {
                let end = run_end(ra, rk, j);
                emit_unmatched(w, c, Side::Right, emit[1], ra, &rk[j..end])?;
                j = end;
            }
            std::cmp::Ordering::Equal => {
                let (li, rj) = (run_end(la, lk, i), run_end(ra, rk, j));
                join_key_run(w, c, emit, window, (la, &lk[i..li]), (ra, &rk[j..rj]), matched)?;
                i = li;
                j = rj;
            }
        }
    }
    emit_unmatched(w, c, Side::Left, emit[0], la, &work.null_key[0])?;
    emit_unmatched(w, c, Side::Right, emit[1], ra, &work.null_key[1])?;
    Ok(())
}

/// Rows of `side` that match nothing: counted, and written NULL-padded when the
/// join kind emits them (`emit`).
fn emit_unmatched(
    w: &mut PartWriter,
    c: &mut JoinCounts,
    side: Side,
    emit: bool,
    arenas: &[Arena],
    rows: &[Entry],
) -> Result<(), BatchError> {
    let n = rows.len() as u64;
    c.unmatched[side.idx()] += n;
    if emit {
        for e in rows {
            let row = row_of(arenas, e);
            match side {
                Side::Left => w.row(Some(row), None)?,
                Side::Right => w.row(None, Some(row))?,
            }
        }
        c.output_rows += n;
    }
    Ok(())
}

/// Joins the left and right rows of one key, both sorted by time: each left row's
/// window `[t + lower, t + upper]` is found with two pointers that only move
/// forward (both bounds grow with `t`), so the cost is O(rows + output).
fn join_key_run(
    w: &mut PartWriter,
    c: &mut JoinCounts,
    emit: [bool; 2],
    (lower, upper): (i128, i128),
    (la, lefts): (&[Arena], &[Entry]),
    (ra, rights): (&[Arena], &[Entry]),
    matched: &mut Vec<bool>,
) -> Result<(), BatchError> {
    matched.clear();
    matched.resize(rights.len(), false);
    // `marked` is how far `matched` has been set.
    let (mut lo, mut hi, mut marked) = (0, 0, 0);
    for l in lefts {
        let (from, to) = (l.ts as i128 + lower, l.ts as i128 + upper);
        while lo < rights.len() && (rights[lo].ts as i128) < from {
            lo += 1;
        }
        hi = hi.max(lo);
        while hi < rights.len() && (rights[hi].ts as i128) <= to {
            hi += 1;
        }
        let lrow = row_of(la, l);
        if lo == hi {
            c.unmatched[0] += 1;
            if emit[0] {
                w.row(Some(lrow), None)?;
                c.output_rows += 1;
            }
            continue;
        }
        for r in &rights[lo..hi] {
            w.row(Some(lrow), Some(row_of(ra, r)))?;
        }
        let n = (hi - lo) as u64;
        c.pairs += n;
        c.output_rows += n;
        for m in &mut matched[marked.max(lo)..hi] {
            *m = true;
        }
        marked = marked.max(hi);
    }
    for (r, &m) in rights.iter().zip(matched.iter()) {
        if !m {
            c.unmatched[1] += 1;
            if emit[1] {
                w.row(None, Some(row_of(ra, r)))?;
                c.output_rows += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    mod chunk_parser_agrees_with_the_source {
        use super::*;
        use crate::schema::{Field, FieldType};
        use crate::source::csv::CsvSource;
        use crate::source::Source;
        use proptest::prelude::*;

        fn schema() -> Schema {
            let fields = vec![
                Field::new("k", FieldType::I64),
                Field::new("ts", FieldType::I64),
                Field::new("v", FieldType::F64),
                Field::new("name", FieldType::String),
            ];
            Schema::new("l", fields, &["k".into()], "ts").unwrap()
        }

        type Dead = Vec<(u64, String, Vec<u8>)>;

        /// (rows, dead letters with absolute lines) as `CsvSource` reads the file.
        fn streaming(text: &[u8]) -> (Vec<Vec<u8>>, Dead) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f.csv");
            std::fs::write(&path, text).unwrap();
            let mut src = CsvSource::open(&path, Side::Left, 0, schema()).unwrap();
            let (mut rows, mut dead) = (Vec::new(), Vec::new());
            while src
                .poll(64, 0, &mut |it| match it {
                    SourceItem::Row { row, .. } => rows.push(row.to_vec()),
                    SourceItem::Dead { line, reason, raw, .. } => dead.push((line, reason, raw.to_vec())),
                    SourceItem::Resume { .. } => unreachable!("a CSV reader never resumes"),
                })
                .unwrap()
                != PollStatus::Done
            {}
            (rows, dead)
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// Plain files (no quote, no CR): the same rows and dead letters (line,
            /// reason, raw), with every rule the source applies.
            #[test]
            fn on_plain_csv(body in proptest::collection::vec(
                proptest::sample::select(b",,,\n\n1234-e.x \xff\xef\xbb\xbf".to_vec()), 0..300)
            ) {
                let header = b"\xef\xbb\xbfname,ts,k,v,name2\n";
                let mut text = header.to_vec();
                text.extend_from_slice(&body);
                let cols = source::map_columns(Path::new("f.csv"), &schema(), &[b"\xef\xbb\xbfname", b"ts", b"k", b"v", b"name2"]).unwrap();
                let c = parse_chunk(&text[header.len()..], &schema(), &cols.of_field, 5);
                prop_assert!(c.plain);
                let rows: Vec<Vec<u8>> =
                    c.rows.iter().map(|&(_, off, len)| c.arena[off as usize..off as usize + len as usize].to_vec()).collect();
                let dead: Dead = c.dead.iter().map(|(i, r, raw)| (i + 2, r.clone(), raw.clone())).collect();
                prop_assert_eq!((rows, dead), streaming(&text));
            }
        }
    }

    /// Entries laid out as [`Bucketer::route`] does, all with one forced hash.
    fn entries(keys: &[(&[u8], i64)]) -> (Vec<Arena>, Vec<Entry>) {
        let mut arena = Vec::new();
        let mut v = Vec::new();
        for &(key, ts) in keys {
            let off = arena.len() as u64;
            let mut inline = [0u8; KEY_INLINE_BYTES];
            let n = key.len().min(KEY_INLINE_BYTES);
            inline[..n].copy_from_slice(&key[..n]);
            if key.len() > KEY_INLINE_BYTES {
                arena.extend_from_slice(key);
            }
            arena.extend_from_slice(&ts.to_le_bytes()); // the "row"
            v.push(Entry { hash: 7, ts, loc: off, key_len: key.len() as u32, row_len: 8, inline });
        }
        (vec![Arc::new(arena)], v)
    }

    #[test]
    fn hash_collisions_are_split_by_key_keeping_time_order() {
        let long_a: &[u8] = b"0123456789abcdefXXa";
        let long_b: &[u8] = b"0123456789abcdefXXb";
        for (ka, kb) in [(&b"aa"[..], &b"bb"[..]), (long_a, long_b), (&b"aa"[..], &b"aa\0"[..])] {
            let (arenas, mut v) = entries(&[(kb, 5), (ka, 3), (kb, 1), (ka, 9), (ka, 1)]);
            sort_entries(&arenas, &mut v);
            let got: Vec<(u32, i64)> = v.iter().map(|e| (e.key_len, e.ts)).collect();
            let order: Vec<i64> = v.iter().map(|e| e.ts).collect();
            assert_eq!(order, [1, 3, 9, 1, 5], "{got:?}");
            assert!(key_cmp(&arenas, &v[0], &arenas, &v[3]).is_lt());
            assert_eq!(run_end(&arenas, &v, 0), 3);
            assert_eq!(run_end(&arenas, &v, 3), 5);
            assert_eq!(row_of(&arenas, &v[4]), 5i64.to_le_bytes());
        }
    }

    #[test]
    fn late_rule_uses_i128() {
        assert!(!is_late(None, i64::MIN, 0));
        assert!(is_late(Some(10), 4, 5));
        assert!(!is_late(Some(10), 5, 5));
        assert!(!is_late(Some(i64::MIN), i64::MIN, i64::MAX as i128 * 2));
        assert!(is_late(Some(i64::MAX), i64::MIN, i64::MAX as i128));
    }
}

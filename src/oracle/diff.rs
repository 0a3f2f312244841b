//! Validation: compares two join outputs (a streaming job's committed output and
//! the batch answer, or any two output directories) as multisets of rows.
//!
//! An output directory holds part files directly in it (`*.csv` or `*.jsonl`; dot
//! files, subdirectories and other names such as `*.inprogress` are ignored), late
//! rows in `late/<input>-<n>.<ext>` and dead letters in `dead/*.jsonl`; which files
//! are read is `sink::layout`'s rule ([`list_output_files`]). Row order and
//! the split into part files do not matter. CSV files start with a header line, which
//! must be the same in every file of both directories.
//!
//! Dead letters are part of the answer: when the expected directory has `dead/`, both
//! directories' dead letters are compared as a multiset of (input, file, line, reason
//! kind) ([`reason_kind`]: the stable part of the reason, without the quoted value),
//! whatever files hold them (streaming names them by shard, batch by partition).
//! Other fields (`raw`, and any added later) are ignored. An expected directory
//! without `dead/` (the DuckDB oracle writes none) means "not compared", and the
//! report says so. Dead letters are held in memory (about 100 bytes each).
//!
//! Rows are compared as canonical text: both engines format with
//! [`crate::codec::format::OutputFormatter`], and the DuckDB oracle writes the same
//! text for integer and string data. A row's kind comes from its NULL pattern:
//! `pair` (both sides have a non-NULL field), `left-unmatched` (every right field
//! NULL), `right-unmatched` (every left field NULL).
//!
//! Memory: rows are counted in a hash table over a byte arena (about row bytes + 40
//! bytes each). When both directories together exceed the memory budget, every row
//! is first spilled by hash into one of K bucket files per side (K <= [`SPILL_BUCKETS_MAX`])
//! and buckets are compared one at a time, so outputs larger than memory validate.
//! Bad input (a header mismatch, an unreadable file) is a [`ValidateError`], never a panic.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use hashbrown::HashTable;
use serde::Serialize;

use crate::config::{Format, Job};
use crate::oracle::batch::{self, BatchError, BatchReport};
use crate::sink::layout;

/// Default memory for the row table of one comparison.
pub const MEM_BUDGET_BYTES_DEFAULT: u64 = 1 << 30;
/// Table bytes per input byte, with the arena, slots and growth slack.
const TABLE_BYTES_PER_INPUT_BYTE: u64 = 2;
/// In-memory comparisons split the rows into this many partitions by hash, so
/// each partition's table stays small and two threads can count them.
const MEM_PARTITIONS: u64 = 64;
/// Below this many bytes in all, one partition.
const MEM_PARTITION_BYTES_MIN: u64 = 1 << 20;
/// Spill buckets per side at most (each one an open file while spilling).
pub const SPILL_BUCKETS_MAX: u64 = 512;
/// Rows shown per difference kind when the caller does not say.
pub const SHOW_DEFAULT: usize = 10;
/// Read buffer per file.
const READ_BUF_BYTES: usize = 1 << 20;
/// A record (one output row) is at most this long; past it the file is malformed.
pub const RECORD_BYTES_MAX: usize = 1 << 26;
const HASH_SEEDS: [u64; 4] =
    [0x7661_6c69_6461_7465, 0x2545_F491_4F6C_DD1D, 0x9E37_79B9_7F4A_7C15, 0xBF58_476D_1CE4_E5B9];

const _: () = assert!(SPILL_BUCKETS_MAX >= 1 && SPILL_BUCKETS_MAX <= 4096);

/// Errors that stop a comparison (exit status 2 at the CLI).
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    #[error("{path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: io::Error },
    #[error("{path}: not a directory")]
    NotADir { path: PathBuf },
    #[error("{path}:1: header differs from {first}:1\n  expected: {expected}\n  found:    {found}")]
    HeaderMismatch { path: PathBuf, first: PathBuf, expected: String, found: String },
    #[error("{path}:{line}: {message}")]
    Malformed { path: PathBuf, line: u64, message: String },
    #[error("a validation thread panicked")]
    Panicked,
    #[error("batch join for validation failed: {0}")]
    Batch(#[from] BatchError),
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> ValidateError + 'a {
    move |source| ValidateError::Io { path: path.to_path_buf(), op, source }
}

/// The kind of an output row, from its NULL pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowKind {
    Pair,
    LeftUnmatched,
    RightUnmatched,
}

impl RowKind {
    pub const ALL: [RowKind; 3] = [RowKind::Pair, RowKind::LeftUnmatched, RowKind::RightUnmatched];

    pub fn name(self) -> &'static str {
        match self {
            RowKind::Pair => "pair",
            RowKind::LeftUnmatched => "left-unmatched",
            RowKind::RightUnmatched => "right-unmatched",
        }
    }
}

/// Row counts by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KindCounts {
    pub pair: u64,
    pub left_unmatched: u64,
    pub right_unmatched: u64,
}

impl KindCounts {
    pub fn get(&self, k: RowKind) -> u64 {
        match k {
            RowKind::Pair => self.pair,
            RowKind::LeftUnmatched => self.left_unmatched,
            RowKind::RightUnmatched => self.right_unmatched,
        }
    }

    fn add(&mut self, k: RowKind, n: u64) {
        match k {
            RowKind::Pair => self.pair += n,
            RowKind::LeftUnmatched => self.left_unmatched += n,
            RowKind::RightUnmatched => self.right_unmatched += n,
        }
    }

    pub fn total(&self) -> u64 {
        self.pair + self.left_unmatched + self.right_unmatched
    }
}

/// What one output directory holds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DirSummary {
    pub path: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub rows: u64,
    /// Rows by kind: `pair` = matched pairs, the others = unmatched rows per side.
    pub kinds: KindCounts,
    /// Late rows per input name, when the directory has a `late/` subdirectory.
    pub late: Option<BTreeMap<String, u64>>,
    /// Dead letters, when the directory has a `dead/` subdirectory.
    pub dead: Option<u64>,
}

/// Rows of one kind that are in one directory and not (as often) in the other.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Differences {
    pub counts: KindCounts,
    /// The first rows of each kind (at most `show`), in a deterministic order.
    pub pair: Vec<String>,
    pub left_unmatched: Vec<String>,
    pub right_unmatched: Vec<String>,
}

impl Differences {
    pub fn samples(&self, k: RowKind) -> &[String] {
        match k {
            RowKind::Pair => &self.pair,
            RowKind::LeftUnmatched => &self.left_unmatched,
            RowKind::RightUnmatched => &self.right_unmatched,
        }
    }

    /// Adds `other`'s counts, and its samples while fewer than `show` are kept.
    fn merge(&mut self, other: Differences, show: usize) {
        for k in RowKind::ALL {
            self.counts.add(k, other.counts.get(k));
        }
        let Differences { pair, left_unmatched, right_unmatched, .. } = other;
        for (k, v) in [
            (RowKind::Pair, pair),
            (RowKind::LeftUnmatched, left_unmatched),
            (RowKind::RightUnmatched, right_unmatched),
        ] {
            let mine = self.samples_mut(k);
            let room = show.saturating_sub(mine.len());
            mine.extend(v.into_iter().take(room));
        }
    }

    fn samples_mut(&mut self, k: RowKind) -> &mut Vec<String> {
        match k {
            RowKind::Pair => &mut self.pair,
            RowKind::LeftUnmatched => &mut self.left_unmatched,
            RowKind::RightUnmatched => &mut self.right_unmatched,
        }
    }
}

/// Dead letters in one directory and not (as often) in the other.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeadDifferences {
    pub count: u64,
    /// The first ones (at most `show`), sorted: `input file:line: reason kind`.
    pub samples: Vec<String>,
}

/// A dead letter as compared: the fields that are the answer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DeadKey {
    input: String,
    file: String,
    line: u64,
    kind: String,
}

impl DeadKey {
    fn show(&self) -> String {
        format!("{} {}:{}: {}", self.input, self.file, self.line, self.kind)
    }
}

/// A dead-letter record's fields that take part; others are ignored.
#[derive(serde::Deserialize)]
struct DeadRecord {
    input: String,
    file: String,
    line: u64,
    reason: String,
}

/// The stable part of a dead letter's reason: what went wrong and where (column or
/// field), without the offending value or a parser's position. `column `x`: not a
/// u64: "abc"` -> `column `x`: not a u64`; `expected 3 columns, found 2` -> `expected
/// 3 columns`; `field `x`: expected u64, found "a"` -> `field `x`: expected u64`;
/// `not valid JSON: <parser message>` -> `not valid JSON`.
pub fn reason_kind(reason: &str) -> &str {
    if reason.starts_with("not valid JSON") {
        return "not valid JSON";
    }
    let mut end = reason.len();
    for cut in [", found ", ": \"", ": {", ": ["] {
        if let Some(i) = reason.find(cut) {
            end = end.min(i);
        }
    }
    reason[..end].trim_end()
}

/// Late rows of one input in each directory, when they differ.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct LateDifference {
    pub input: String,
    pub expected: u64,
    pub actual: u64,
}

/// The result of a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct ValidateReport {
    pub expected: DirSummary,
    pub actual: DirSummary,
    /// Rows of `expected` missing from `actual` (multiset difference).
    pub missing: Differences,
    /// Rows of `actual` not in `expected`.
    pub extra: Differences,
    /// Late-row counts that differ; only compared when both directories have `late/`.
    pub late_differences: Vec<LateDifference>,
    /// Whether dead letters were compared (the expected directory has `dead/`).
    pub dead_compared: bool,
    /// Dead letters of `expected` missing from `actual`, and the reverse.
    pub dead_missing: DeadDifferences,
    pub dead_extra: DeadDifferences,
    /// Spill buckets used (1 = compared in memory).
    pub buckets: u64,
    /// The batch run that produced `expected`, for `validate --config`.
    pub batch: Option<BatchReport>,
}

impl ValidateReport {
    /// The same multiset of rows, the same late-row counts where both are known, and
    /// the same dead letters where compared.
    pub fn is_equal(&self) -> bool {
        self.missing.counts.total() == 0
            && self.extra.counts.total() == 0
            && self.late_differences.is_empty()
            && self.dead_missing.count == 0
            && self.dead_extra.count == 0
    }

    pub fn print(&self) {
        let verdict = if self.is_equal() { "EQUAL" } else { "DIFFERENT" };
        println!("validate: {verdict}");
        for (label, d) in [("expected", &self.expected), ("actual", &self.actual)] {
            println!("  {label:<8} {}: {} rows in {} files ({} bytes)", d.path.display(), d.rows, d.files, d.bytes);
            println!(
                "           matched pairs {}, left unmatched {}, right unmatched {}",
                d.kinds.pair, d.kinds.left_unmatched, d.kinds.right_unmatched
            );
            match &d.late {
                Some(late) if !late.is_empty() => {
                    let parts: Vec<String> = late.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    println!("           late rows: {}", parts.join(", "));
                }
                Some(_) => println!("           late rows: none"),
                None => println!("           late rows: not recorded (no late/ directory)"),
            }
            match d.dead {
                Some(dead) => println!("           dead letters: {dead}"),
                None => println!("           dead letters: none recorded (no dead/ directory)"),
            }
        }
        if let Some(b) = &self.batch {
            for s in [&b.left, &b.right] {
                println!(
                    "  batch    {}: {} rows in, {} late, {} dead, {} unmatched",
                    s.name, s.rows_in, s.late_rows, s.dead_rows, s.unmatched_rows
                );
            }
        }
        for (label, d) in [
            ("missing (in expected, not in actual)", &self.missing),
            ("extra (in actual, not in expected)", &self.extra),
        ] {
            if d.counts.total() == 0 {
                continue;
            }
            println!("  {label}: {} rows", d.counts.total());
            for k in RowKind::ALL {
                let n = d.counts.get(k);
                if n == 0 {
                    continue;
                }
                println!("    {}: {n}", k.name());
                for s in d.samples(k) {
                    println!("      {s}");
                }
            }
        }
        for l in &self.late_differences {
            println!("  late rows of {} differ: expected {}, actual {}", l.input, l.expected, l.actual);
        }
        if !self.dead_compared {
            println!(
                "  dead letters: not compared ({} has no dead/ directory; the DuckDB oracle writes none)",
                self.expected.path.display()
            );
        }
        for (label, d) in [
            ("dead letters missing (in expected, not in actual)", &self.dead_missing),
            ("dead letters extra (in actual, not in expected)", &self.dead_extra),
        ] {
            if d.count == 0 {
                continue;
            }
            println!("  {label}: {}", d.count);
            for s in &d.samples {
                println!("      {s}");
            }
        }
    }
}

/// Compares the outputs in `expected` and `actual` as multisets of rows.
///
/// `show` rows of each difference kind are kept as samples; `mem_budget_bytes`
/// bounds the row table (0 = [`MEM_BUDGET_BYTES_DEFAULT`]).
pub fn compare_dirs(
    expected: &Path,
    actual: &Path,
    format: Format,
    show: usize,
    mem_budget_bytes: u64,
) -> Result<ValidateReport, ValidateError> {
    let budget = if mem_budget_bytes == 0 { MEM_BUDGET_BYTES_DEFAULT } else { mem_budget_bytes };
    let files = [list_output_files(expected, format)?, list_output_files(actual, format)?];
    let total_bytes: u64 = files.iter().flatten().map(|f| f.1).sum();
    let mut summaries = summarize([expected, actual], &files)?;
    let dead = [read_dead(expected)?, read_dead(actual)?];
    for (s, d) in summaries.iter_mut().zip(&dead) {
        s.dead = d.as_ref().map(|v| v.len() as u64);
    }
    let dead_compared = dead[0].is_some();
    let (dead_missing, dead_extra) = match dead {
        [Some(e), a] => dead_differences(e, a.unwrap_or_default(), show),
        [None, _] => (DeadDifferences::default(), DeadDifferences::default()),
    };

    // Pass 1, one thread per directory: count rows by kind and partition them by
    // hash, in memory when twice the data fits the budget, else into spill files.
    let in_memory = total_bytes.saturating_mul(TABLE_BYTES_PER_INPUT_BYTE) <= budget;
    let threads = (crate::config::available_cpus() as u64).clamp(1, 2);
    let nparts = partitions_for(total_bytes, in_memory, threads, budget);
    let spill_dir = if in_memory { None } else { Some(SpillDir::create(actual)?) };
    let spill_dir_path = spill_dir.as_ref().map(|d| d.path.clone());
    let [p0, p1] = pass1_both(&files, format, spill_dir_path.as_deref(), nparts, budget)?;
    let left_cols = same_header(&p0, &p1)?;
    for (s, p) in summaries.iter_mut().zip([&p0, &p1]) {
        s.rows = p.rows;
        s.kinds = p.kinds;
    }

    let (missing, extra) = pass2(&p0, &p1, format, left_cols, show, nparts, threads)?;
    drop(spill_dir);
    let late_differences = late_differences(&summaries[0], &summaries[1]);
    let [expected_summary, actual_summary] = summaries;
    Ok(ValidateReport {
        expected: expected_summary,
        actual: actual_summary,
        missing,
        extra,
        late_differences,
        dead_compared,
        dead_missing,
        dead_extra,
        buckets: nparts,
        batch: None,
    })
}

/// Files, bytes, late rows and dead letters of both directories (rows come later).
fn summarize(dirs: [&Path; 2], files: &[Vec<(PathBuf, u64)>; 2]) -> Result<[DirSummary; 2], ValidateError> {
    let mut summaries = [DirSummary::default(), DirSummary::default()];
    for (s, (dir, list)) in summaries.iter_mut().zip(dirs.into_iter().zip(files.iter())) {
        s.path = dir.to_path_buf();
        s.files = list.len() as u64;
        s.bytes = list.iter().map(|f| f.1).sum();
        s.late = count_late(dir)?;
    }
    Ok(summaries)
}

/// Hash partitions of the comparison: one for small data, [`MEM_PARTITIONS`] in
/// memory, else enough spill buckets that each pass-2 thread's table fits.
fn partitions_for(total_bytes: u64, in_memory: bool, threads: u64, budget: u64) -> u64 {
    if !in_memory {
        (total_bytes.saturating_mul(TABLE_BYTES_PER_INPUT_BYTE * threads)).div_ceil(budget).clamp(2, SPILL_BUCKETS_MAX)
    } else if total_bytes < MEM_PARTITION_BYTES_MIN {
        1
    } else {
        MEM_PARTITIONS
    }
}

/// Pass 1 over both directories, the expected one on a second thread.
fn pass1_both(
    files: &[Vec<(PathBuf, u64)>; 2],
    format: Format,
    spill_dir: Option<&Path>,
    nparts: u64,
    budget: u64,
) -> Result<[Pass1; 2], ValidateError> {
    let pass1 = |side: usize| -> Result<Pass1, ValidateError> {
        let mut p = Pass1 {
            header: HeaderCheck::default(),
            rows: 0,
            kinds: KindCounts::default(),
            parts: Partitions::create(spill_dir, side, nparts, budget)?,
        };
        for (path, _) in &files[side] {
            read_records(path, format, &mut p.header, |rec, left_cols| {
                p.rows += 1;
                p.kinds.add(classify(rec, format, left_cols), 1);
                p.parts.push(rec)
            })?;
        }
        p.parts.finish()?;
        Ok(p)
    };
    let (r0, r1) = std::thread::scope(|s| {
        let h = s.spawn(|| pass1(0));
        let r1 = pass1(1);
        (h.join().unwrap_or_else(|_| Err(ValidateError::Panicked)), r1)
    });
    Ok([r0?, r1?])
}

/// Both directories' CSV headers must be equal; returns the left input's columns.
fn same_header(p0: &Pass1, p1: &Pass1) -> Result<usize, ValidateError> {
    if let (Some((path0, h0)), Some((path1, h1))) = (&p0.header.first, &p1.header.first) {
        if h0 != h1 {
            return Err(ValidateError::HeaderMismatch {
                path: path1.clone(),
                first: path0.clone(),
                expected: String::from_utf8_lossy(h0).into_owned(),
                found: String::from_utf8_lossy(h1).into_owned(),
            });
        }
    }
    Ok(if p0.header.first.is_some() { p0.header.left_cols } else { p1.header.left_cols })
}

/// Pass 2: partitions in parallel, each counted in its own table; differences are
/// merged in partition order, so the samples do not depend on thread timing.
fn pass2(
    p0: &Pass1,
    p1: &Pass1,
    format: Format,
    left_cols: usize,
    show: usize,
    nparts: u64,
    threads: u64,
) -> Result<(Differences, Differences), ValidateError> {
    let next = std::sync::atomic::AtomicU64::new(0);
    let results: Vec<Result<Vec<PartDiff>, ValidateError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(nparts))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let b = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if b >= nparts {
                            return Ok(done);
                        }
                        let mut table = CountTable::new();
                        p0.parts.for_each(b, |rec| table.add(rec, 1))?;
                        p1.parts.for_each(b, |rec| table.add(rec, -1))?;
                        let (mut m, mut e) = (Differences::default(), Differences::default());
                        table.collect(format, left_cols, show, &mut m, &mut e);
                        done.push((b, m, e));
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(ValidateError::Panicked))).collect()
    });
    let mut per_part = Vec::with_capacity(nparts as usize);
    for r in results {
        per_part.extend(r?);
    }
    per_part.sort_by_key(|x| x.0);
    let mut missing = Differences::default();
    let mut extra = Differences::default();
    for (_, m, e) in per_part {
        missing.merge(m, show);
        extra.merge(e, show);
    }
    Ok((missing, extra))
}

/// Late-row counts per input that differ; only when both directories have `late/`.
fn late_differences(expected: &DirSummary, actual: &DirSummary) -> Vec<LateDifference> {
    let mut out = Vec::new();
    if let (Some(e), Some(a)) = (&expected.late, &actual.late) {
        let names: std::collections::BTreeSet<&String> = e.keys().chain(a.keys()).collect();
        for n in names {
            let (x, y) = (e.get(n).copied().unwrap_or(0), a.get(n).copied().unwrap_or(0));
            if x != y {
                out.push(LateDifference { input: n.clone(), expected: x, actual: y });
            }
        }
    }
    out
}

/// Runs the batch join of `job` into a temporary directory next to `actual`,
/// compares it with `actual`, and removes the temporary directory.
pub fn validate_job(job: &Job, actual: &Path, show: usize) -> Result<ValidateReport, ValidateError> {
    if !actual.is_dir() {
        return Err(ValidateError::NotADir { path: actual.to_path_buf() });
    }
    let parent = match actual.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = parent.join(format!(".weft-validate-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp, "remove stale validation directory"))?;
    }
    let result: Result<ValidateReport, ValidateError> = (|| {
        let report = batch::run(job, &tmp, false, 0)?;
        let mut v = compare_dirs(&tmp, actual, job.output_format, show, MEM_BUDGET_BYTES_DEFAULT)?;
        v.batch = Some(report);
        Ok(v)
    })();
    let cleanup = fs::remove_dir_all(&tmp);
    let v = result?;
    cleanup.map_err(io_err(&tmp, "remove validation directory"))?;
    Ok(v)
}

/// The part files of an output directory with their sizes, sorted by name (the
/// rule is [`layout::list_text_files`]: every non-hidden `*.<ext>` file).
pub fn list_output_files(dir: &Path, format: Format) -> Result<Vec<(PathBuf, u64)>, ValidateError> {
    if !dir.is_dir() {
        return Err(ValidateError::NotADir { path: dir.to_path_buf() });
    }
    layout::list_text_files(dir, format).map_err(|e| ValidateError::Io { path: e.path, op: e.op, source: e.source })
}

/// Late rows per input name in `dir/late/<input>-<n>.<ext>`; None without `late/`.
fn count_late(dir: &Path) -> Result<Option<BTreeMap<String, u64>>, ValidateError> {
    let late_dir = dir.join(layout::LATE_DIR);
    if !late_dir.is_dir() {
        return Ok(None);
    }
    let mut out = BTreeMap::new();
    let mut header = HeaderCheck { per_file: true, ..Default::default() };
    // Late rows are written in their input's format, which may differ per input.
    for format in [Format::Csv, Format::Jsonl] {
        for (path, _) in list_output_files(&late_dir, format)? {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let input = late_input_name(name, format);
            let mut n = 0u64;
            read_records(&path, format, &mut header, |_, _| {
                n += 1;
                Ok(())
            })?;
            *out.entry(input.to_string()).or_insert(0) += n;
        }
    }
    Ok(Some(out))
}

pub use crate::sink::layout::late_input_name;

/// Dead letters in `dir/dead/*.jsonl`, sorted; None without `dead/`.
fn read_dead(dir: &Path) -> Result<Option<Vec<DeadKey>>, ValidateError> {
    let dead_dir = dir.join(layout::DEAD_DIR);
    if !dead_dir.is_dir() {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut header = HeaderCheck::default();
    for (path, _) in list_output_files(&dead_dir, layout::DEAD_FORMAT)? {
        let mut record = 0u64;
        read_records(&path, layout::DEAD_FORMAT, &mut header, |rec, _| {
            record += 1;
            let d: DeadRecord = serde_json::from_slice(rec).map_err(|e| ValidateError::Malformed {
                path: path.clone(),
                line: record,
                message: format!("not a dead-letter record ({{\"input\",\"file\",\"line\",\"reason\",...}}): {e}"),
            })?;
            let kind = reason_kind(&d.reason).to_string();
            out.push(DeadKey { input: d.input, file: d.file, line: d.line, kind });
            Ok(())
        })?;
    }
    out.sort_unstable();
    Ok(Some(out))
}

/// Multiset difference of two sorted dead-letter lists: (expected - actual, actual -
/// expected), each with its first `show` entries.
fn dead_differences(expected: Vec<DeadKey>, actual: Vec<DeadKey>, show: usize) -> (DeadDifferences, DeadDifferences) {
    let (mut missing, mut extra) = (DeadDifferences::default(), DeadDifferences::default());
    let note = |d: &mut DeadDifferences, k: &DeadKey| {
        d.count += 1;
        if d.samples.len() < show {
            d.samples.push(k.show());
        }
    };
    let (mut e, mut a) = (expected.iter().peekable(), actual.iter().peekable());
    loop {
        match (e.peek(), a.peek()) {
            (Some(x), Some(y)) if x == y => {
                e.next();
                a.next();
            }
            (Some(x), Some(y)) if x < y => note(&mut missing, e.next().unwrap()),
            (Some(_), Some(_)) | (None, Some(_)) => note(&mut extra, a.next().unwrap()),
            (Some(_), None) => note(&mut missing, e.next().unwrap()),
            (None, None) => return (missing, extra),
        }
    }
}

/// The CSV header every file must carry, taken from the first file read.
#[derive(Default)]
struct HeaderCheck {
    first: Option<(PathBuf, Vec<u8>)>,
    /// Left input columns in the header (CSV), see [`csv_side_split`].
    left_cols: usize,
    /// Only skip each file's header, do not compare them (late files of two inputs).
    per_file: bool,
}

impl HeaderCheck {
    fn check(&mut self, path: &Path, h: &[u8]) -> Result<(), ValidateError> {
        if self.per_file {
            return Ok(());
        }
        match &self.first {
            None => {
                self.left_cols = csv_side_split(h);
                self.first = Some((path.to_path_buf(), h.to_vec()));
                Ok(())
            }
            Some((_, first)) if first == h => Ok(()),
            Some((first_path, first)) => Err(ValidateError::HeaderMismatch {
                path: path.to_path_buf(),
                first: first_path.clone(),
                expected: String::from_utf8_lossy(first).into_owned(),
                found: String::from_utf8_lossy(h).into_owned(),
            }),
        }
    }
}

/// Calls `f` with each record of a part file, without its line end. A CSV record
/// may span lines inside quotes; blank lines are skipped; a CSV file's first record
/// is its header, checked against `header`.
fn read_records(
    path: &Path,
    format: Format,
    header: &mut HeaderCheck,
    mut f: impl FnMut(&[u8], usize) -> Result<(), ValidateError>,
) -> Result<(), ValidateError> {
    let file = File::open(path).map_err(io_err(path, "open"))?;
    let mut r = BufReader::with_capacity(READ_BUF_BYTES, file);
    let mut rec = Vec::new();
    let mut line_no = 0u64;
    let mut first = format == Format::Csv;
    loop {
        rec.clear();
        let start_line = line_no + 1;
        loop {
            let n = r.read_until(b'\n', &mut rec).map_err(io_err(path, "read"))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            // An odd number of quotes so far: a quoted cell holds a line break.
            if format == Format::Jsonl || rec.iter().filter(|&&c| c == b'"').count() % 2 == 0 {
                break;
            }
            if rec.len() > RECORD_BYTES_MAX {
                return Err(ValidateError::Malformed {
                    path: path.to_path_buf(),
                    line: start_line,
                    message: format!("record longer than {RECORD_BYTES_MAX} bytes (unbalanced quote?)"),
                });
            }
        }
        if rec.is_empty() {
            return Ok(());
        }
        let mut end = rec.len();
        while end > 0 && matches!(rec[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let body = &rec[..end];
        if format == Format::Csv && rec.iter().filter(|&&c| c == b'"').count() % 2 != 0 {
            return Err(ValidateError::Malformed {
                path: path.to_path_buf(),
                line: start_line,
                message: "unterminated quoted cell at end of file".into(),
            });
        }
        if first {
            first = false;
            header.check(path, body)?;
            continue;
        }
        if body.iter().all(|c| c.is_ascii_whitespace()) {
            continue;
        }
        f(body, header.left_cols)?;
    }
}

/// The kind of an output row. CSV: a cell is NULL when empty and unquoted, and the
/// first `left_cols` cells are the left input's (see [`csv_side_split`]). JSON: a
/// value is NULL when `null`; the left input's keys share the first key's prefix.
pub fn classify(rec: &[u8], format: Format, left_cols: usize) -> RowKind {
    let (left_all_null, right_all_null) = match format {
        Format::Csv => csv_nulls(rec, left_cols),
        Format::Jsonl => json_nulls(rec),
    };
    if right_all_null {
        RowKind::LeftUnmatched
    } else if left_all_null {
        RowKind::RightUnmatched
    } else {
        RowKind::Pair
    }
}

/// The number of leading header columns that share the first column's `<name>.`
/// prefix: the left input's columns.
pub fn csv_side_split(header: &[u8]) -> usize {
    let cells = split_csv(header);
    let Some(first) = cells.first() else { return 0 };
    let prefix = match first.0.iter().position(|&c| c == b'.') {
        Some(p) => &first.0[..=p],
        None => return cells.len(),
    };
    cells.iter().take_while(|c| c.0.starts_with(prefix)).count()
}

/// Splits a CSV record into (cell bytes, was quoted).
fn split_csv(rec: &[u8]) -> Vec<(&[u8], bool)> {
    let mut cells = Vec::new();
    let mut i = 0;
    loop {
        let start = i;
        let mut quoted = false;
        let mut in_q = false;
        while i < rec.len() {
            match rec[i] {
                b'"' => {
                    quoted = true;
                    in_q = !in_q;
                }
                b',' if !in_q => break,
                _ => {}
            }
            i += 1;
        }
        cells.push((&rec[start..i], quoted));
        if i >= rec.len() {
            return cells;
        }
        i += 1;
    }
}

/// (every left cell NULL, every right cell NULL) for a CSV record.
fn csv_nulls(rec: &[u8], split: usize) -> (bool, bool) {
    let mut left_null = true;
    let mut right_null = true;
    for (i, (cell, quoted)) in split_csv(rec).into_iter().enumerate() {
        let null = cell.is_empty() && !quoted;
        if i < split {
            left_null &= null;
        } else {
            right_null &= null;
        }
    }
    (left_null, right_null)
}

/// (every left value null, every right value null) for a JSON object line. The left
/// input's keys are those with the first key's `<name>.` prefix.
fn json_nulls(rec: &[u8]) -> (bool, bool) {
    let mut left_null = true;
    let mut right_null = true;
    let mut prefix: Option<Vec<u8>> = None;
    let mut p = JsonScan { s: rec, i: 0 };
    p.ws();
    if !p.eat(b'{') {
        return (false, false);
    }
    loop {
        p.ws();
        if p.eat(b'}') {
            break;
        }
        let Some(key) = p.string() else { break };
        let pfx = prefix.get_or_insert_with(|| match key.iter().position(|&c| c == b'.') {
            Some(i) => key[..=i].to_vec(),
            None => key.clone(),
        });
        let is_left = key.starts_with(pfx);
        p.ws();
        if !p.eat(b':') {
            break;
        }
        p.ws();
        let null = p.s[p.i..].starts_with(b"null");
        if !p.skip_value() {
            break;
        }
        if is_left {
            left_null &= null;
        } else {
            right_null &= null;
        }
        p.ws();
        if !p.eat(b',') {
            break;
        }
    }
    (left_null, right_null)
}

/// A minimal scanner over one JSON object: keys and the extent of values.
struct JsonScan<'a> {
    s: &'a [u8],
    i: usize,
}

impl JsonScan<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// A string literal, unescaped only as far as key prefixes need (escapes kept).
    fn string(&mut self) -> Option<Vec<u8>> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.i;
        while self.i < self.s.len() {
            match self.s[self.i] {
                b'\\' => self.i += 2,
                b'"' => {
                    let v = self.s[start..self.i].to_vec();
                    self.i += 1;
                    return Some(v);
                }
                _ => self.i += 1,
            }
        }
        None
    }

    fn skip_value(&mut self) -> bool {
        match self.s.get(self.i) {
            None => false,
            Some(b'"') => self.string().is_some(),
            Some(b'{') | Some(b'[') => {
                let mut depth = 0i32;
                while self.i < self.s.len() {
                    match self.s[self.i] {
                        b'"' => {
                            if self.string().is_none() {
                                return false;
                            }
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return true;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                false
            }
            Some(_) => {
                while self.i < self.s.len() && !matches!(self.s[self.i], b',' | b'}') {
                    self.i += 1;
                }
                true
            }
        }
    }
}

/// Multiset counts of records: +1 per expected row, -1 per actual row. Records are
/// stored once in an arena; the table holds (hash, offset, length, count).
struct CountTable {
    arena: Vec<u8>,
    table: HashTable<Slot>,
    hasher: ahash::RandomState,
}

struct Slot {
    hash: u64,
    off: u64,
    len: u32,
    count: i64,
}

impl CountTable {
    fn new() -> CountTable {
        CountTable {
            arena: Vec::new(),
            table: HashTable::new(),
            hasher: ahash::RandomState::with_seeds(HASH_SEEDS[0], HASH_SEEDS[1], HASH_SEEDS[2], HASH_SEEDS[3]),
        }
    }

    fn add(&mut self, rec: &[u8], delta: i64) {
        let hash = self.hasher.hash_one(rec);
        let arena = &self.arena;
        let eq =
            |s: &Slot| s.len as usize == rec.len() && &arena[s.off as usize..s.off as usize + s.len as usize] == rec;
        if let Some(s) = self.table.find_mut(hash, eq) {
            s.count += delta;
            return;
        }
        let off = self.arena.len() as u64;
        self.arena.extend_from_slice(rec);
        self.table.insert_unique(hash, Slot { hash, off, len: rec.len() as u32, count: delta }, |s| s.hash);
    }

    /// Adds this table's differences to `missing` (count > 0) and `extra` (< 0).
    fn collect(
        &self,
        format: Format,
        left_cols: usize,
        show: usize,
        missing: &mut Differences,
        extra: &mut Differences,
    ) {
        let mut diffs: Vec<(&[u8], i64)> = self
            .table
            .iter()
            .filter(|s| s.count != 0)
            .map(|s| (&self.arena[s.off as usize..s.off as usize + s.len as usize], s.count))
            .collect();
        diffs.sort_unstable();
        for (rec, count) in diffs {
            let kind = classify(rec, format, left_cols);
            let d = if count > 0 { &mut *missing } else { &mut *extra };
            d.counts.add(kind, count.unsigned_abs());
            let samples = d.samples_mut(kind);
            if samples.len() < show {
                let text = String::from_utf8_lossy(rec).into_owned();
                let text =
                    if count.unsigned_abs() > 1 { format!("{text}   (x{})", count.unsigned_abs()) } else { text };
                samples.push(text);
            }
        }
    }
}

/// A temporary directory for spill files, next to the directory being validated
/// (same file system, so it can hold what memory cannot); removed on drop.
struct SpillDir {
    path: PathBuf,
}

impl SpillDir {
    fn create(near: &Path) -> Result<SpillDir, ValidateError> {
        let parent = match near.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!(".weft-validate-spill-{}-{seq}", std::process::id());
        let mut path = parent.join(&name);
        if fs::create_dir(&path).is_err() {
            path = std::env::temp_dir().join(&name);
            fs::create_dir_all(&path).map_err(io_err(&path, "create spill directory"))?;
        }
        Ok(SpillDir { path })
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn spill_path(dir: &Path, side: usize, bucket: u64) -> PathBuf {
    dir.join(format!("{}-{bucket}.spill", if side == 0 { "expected" } else { "actual" }))
}

/// The differences found in one partition: (partition, missing, extra).
type PartDiff = (u64, Differences, Differences);

/// What pass 1 learned from one directory.
struct Pass1 {
    header: HeaderCheck,
    rows: u64,
    kinds: KindCounts,
    parts: Partitions,
}

/// One side's records partitioned by hash, as length-prefixed records: in memory, or
/// in one spill file per partition.
enum Partitions {
    Mem { parts: Vec<Vec<u8>>, hasher: ahash::RandomState },
    Disk { writer: Option<SpillWriter>, paths: Vec<PathBuf> },
}

impl Partitions {
    fn create(spill_dir: Option<&Path>, side: usize, n: u64, budget: u64) -> Result<Partitions, ValidateError> {
        Ok(match spill_dir {
            None => Partitions::Mem { parts: vec![Vec::new(); n as usize], hasher: bucket_hasher() },
            Some(dir) => {
                let w = SpillWriter::create(dir, side, n, budget)?;
                let paths = w.files.iter().map(|f| f.0.clone()).collect();
                Partitions::Disk { writer: Some(w), paths }
            }
        })
    }

    fn push(&mut self, rec: &[u8]) -> Result<(), ValidateError> {
        match self {
            Partitions::Mem { parts, hasher } => {
                let b = ((hasher.hash_one(rec) as u128 * parts.len() as u128) >> 64) as usize;
                parts[b].extend_from_slice(&(rec.len() as u32).to_le_bytes());
                parts[b].extend_from_slice(rec);
                Ok(())
            }
            Partitions::Disk { writer: Some(w), .. } => w.push(rec),
            Partitions::Disk { writer: None, paths } => {
                Err(ValidateError::Malformed { path: paths[0].clone(), line: 0, message: "spill file closed".into() })
            }
        }
    }

    fn finish(&mut self) -> Result<(), ValidateError> {
        match self {
            Partitions::Mem { .. } => Ok(()),
            Partitions::Disk { writer, .. } => writer.take().map_or(Ok(()), |w| w.finish()),
        }
    }

    /// Calls `f` with every record of partition `b`.
    fn for_each(&self, b: u64, mut f: impl FnMut(&[u8])) -> Result<(), ValidateError> {
        match self {
            Partitions::Mem { parts, .. } => {
                let mut p = parts[b as usize].as_slice();
                while p.len() >= 4 {
                    let len = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
                    f(&p[4..4 + len]);
                    p = &p[4 + len..];
                }
                Ok(())
            }
            Partitions::Disk { paths, .. } => {
                let path = &paths[b as usize];
                read_spill(path, |rec| {
                    f(rec);
                    Ok(())
                })?;
                fs::remove_file(path).map_err(io_err(path, "remove spill file"))
            }
        }
    }
}

/// The partition hash: independent of the count table's, or a partition's rows
/// would crowd a few table slots.
fn bucket_hasher() -> ahash::RandomState {
    ahash::RandomState::with_seeds(HASH_SEEDS[3], HASH_SEEDS[2], HASH_SEEDS[1], HASH_SEEDS[0])
}

/// Writes length-prefixed records into one file per bucket.
struct SpillWriter {
    files: Vec<(PathBuf, BufWriter<File>)>,
    hasher: ahash::RandomState,
}

impl SpillWriter {
    fn create(dir: &Path, side: usize, buckets: u64, budget: u64) -> Result<SpillWriter, ValidateError> {
        let buf = (budget / 4 / buckets).clamp(4096, 1 << 20) as usize;
        let mut files = Vec::with_capacity(buckets as usize);
        for b in 0..buckets {
            let p = spill_path(dir, side, b);
            let f = File::create(&p).map_err(io_err(&p, "create spill file"))?;
            files.push((p, BufWriter::with_capacity(buf, f)));
        }
        Ok(SpillWriter { files, hasher: bucket_hasher() })
    }

    fn push(&mut self, rec: &[u8]) -> Result<(), ValidateError> {
        let h = self.hasher.hash_one(rec);
        let b = ((h as u128 * self.files.len() as u128) >> 64) as usize;
        let (p, w) = &mut self.files[b];
        w.write_all(&(rec.len() as u32).to_le_bytes()).map_err(io_err(p, "write spill file"))?;
        w.write_all(rec).map_err(io_err(p, "write spill file"))
    }

    fn finish(self) -> Result<(), ValidateError> {
        for (p, mut w) in self.files {
            w.flush().map_err(io_err(&p, "write spill file"))?;
        }
        Ok(())
    }
}

fn read_spill(path: &Path, mut f: impl FnMut(&[u8]) -> Result<(), ValidateError>) -> Result<(), ValidateError> {
    let file = File::open(path).map_err(io_err(path, "open spill file"))?;
    let mut r = BufReader::with_capacity(READ_BUF_BYTES, file);
    let mut len = [0u8; 4];
    let mut rec = Vec::new();
    loop {
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(ValidateError::Io { path: path.to_path_buf(), op: "read spill file", source: e }),
        }
        rec.resize(u32::from_le_bytes(len) as usize, 0);
        r.read_exact(&mut rec).map_err(io_err(path, "read spill file"))?;
        f(&rec)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_file_names() {
        assert_eq!(late_input_name("impressions-0.csv", Format::Csv), "impressions");
        assert_eq!(late_input_name("impressions-1-000042.jsonl", Format::Jsonl), "impressions");
        assert_eq!(late_input_name("my-plays-3.csv", Format::Csv), "my-plays");
        assert_eq!(late_input_name("x.csv", Format::Csv), "x");
    }

    #[test]
    fn reason_kinds_drop_the_value() {
        assert_eq!(reason_kind("column `x`: not a u64: \"abc\""), "column `x`: not a u64");
        assert_eq!(reason_kind("expected 3 columns, found 2"), "expected 3 columns");
        assert_eq!(reason_kind("field `x`: expected u64, found \"a\""), "field `x`: expected u64");
        assert_eq!(reason_kind("field `x`: expected u64, found {\"a\":1}"), "field `x`: expected u64");
        assert_eq!(reason_kind("not valid JSON: EOF while parsing at line 1 column 4"), "not valid JSON");
        assert_eq!(reason_kind("not a JSON object"), "not a JSON object");
    }

    #[test]
    fn dead_letters_differ_as_multisets() {
        let k = |line: u64, kind: &str| DeadKey { input: "l".into(), file: "a.csv".into(), line, kind: kind.into() };
        let e = vec![k(2, "x"), k(2, "x"), k(5, "y")];
        let a = vec![k(2, "x"), k(5, "y"), k(7, "z")];
        let (m, x) = dead_differences(e.clone(), a, 10);
        assert_eq!((m.count, x.count), (1, 1));
        assert_eq!(m.samples, vec!["l a.csv:2: x"]);
        assert_eq!(x.samples, vec!["l a.csv:7: z"]);
        let (m, x) = dead_differences(e.clone(), e, 10);
        assert_eq!((m.count, x.count), (0, 0));
    }

    #[test]
    fn kinds_from_nulls() {
        let split = csv_side_split(b"a.x,a.y,b.x");
        assert_eq!(split, 2);
        assert_eq!(classify(b"1,2,3", Format::Csv, split), RowKind::Pair);
        assert_eq!(classify(b"1,,", Format::Csv, split), RowKind::LeftUnmatched);
        assert_eq!(classify(b",,3", Format::Csv, split), RowKind::RightUnmatched);
        assert_eq!(classify(b"\"\",,3", Format::Csv, split), RowKind::Pair);
        let j = br#"{"a.x":null,"a.y":null,"b.x":{"q":[1,"]"]}}"#;
        assert_eq!(classify(j, Format::Jsonl, 0), RowKind::RightUnmatched);
    }
}

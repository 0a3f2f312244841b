//! `weft inspect DIR`: what a checkpoint directory or a state directory holds, as one
//! [`Inspection`] that serialises to JSON (`--json`) and renders as text (the same
//! struct, so the two never disagree).
//!
//! A checkpoint directory: every manifest (`chk-<n>.json`, newest first) with its
//! checkpoint number, state, job shape, per shard the watermark, marks, source
//! positions and per side the buckets, bytes and rows it references, and whether every
//! referenced segment is whole (size and CRC32, the checks a restore makes, plus the
//! record validation of each bucket copy, which gives its row count); then the pack
//! files on disk and which manifests use them. A state directory (`engine.state_dir`):
//! its arena files per shard with sizes, and what their names and headers say.
//!
//! Never writes, creates, removes or locks anything: files are opened read-only, the
//! job lock (`.weft.lock`) is only read to say who holds it. A live run may add or
//! remove files while this runs; a file that vanished is reported, never a panic.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    list, manifest_path, read_bucket, read_manifest, CheckpointError, JobShape, MarkState, MANIFEST_FORMAT_LEGACY,
};
use crate::event::Side;
use crate::source::SourcePos;
use crate::state::arena::{ARENA_HEADER_BYTES, ARENA_MAGIC, ARENA_VERSION};

/// Why a directory could not be inspected at all (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error(
        "{0} holds neither checkpoint manifests (chk-<n>.json) nor state arena files (shard-<s>/<side>-<bucket>.arena){1}"
    )]
    Empty(PathBuf, String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Everything `weft inspect` found in one directory.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub dir: String,
    /// What `.weft.lock` says (`pid <n>` and a command line) when the file exists: a
    /// run may be live, or a killed run left it. Not taken, only read.
    pub lock: Option<String>,
    /// Manifests, newest first.
    pub checkpoints: Vec<CheckpointReport>,
    /// Pack files under `state/shard-<s>/` of a checkpoint directory.
    pub packs: Vec<PackReport>,
    /// Arena files of a state directory, by shard then side then bucket.
    pub arenas: Vec<ArenaReport>,
    /// Every checkpoint verified and every arena header is sound.
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct CheckpointReport {
    pub checkpoint: u64,
    pub manifest: String,
    pub manifest_bytes: Option<u64>,
    /// The manifest parses, its checksum holds, and every segment it references is
    /// whole (size, CRC32, records).
    pub verified: bool,
    /// What is wrong, each naming its file.
    pub problems: Vec<String>,
    /// The rest is absent when the manifest itself cannot be read.
    pub format: Option<u32>,
    pub finished: Option<bool>,
    pub created_unix_ms: Option<u64>,
    pub job: Option<JobShape>,
    /// Sum over every referenced segment (rows and matched lists), in bytes.
    pub state_bytes: u64,
    /// Packs this manifest references, relative to the directory.
    pub packs: Vec<String>,
    pub shards: Vec<ShardReport>,
}

#[derive(Debug, Serialize)]
pub struct ShardReport {
    pub shard: u32,
    /// The engine watermark `W` at this shard (ms of event time).
    pub watermark: i64,
    /// Every sender's mark, as this shard last saw it.
    pub marks: Vec<MarkState>,
    pub sources: Vec<SourceReport>,
    /// Left, then right.
    pub sides: [SideReport; 2],
}

#[derive(Debug, Serialize)]
pub struct SourceReport {
    pub plan_index: u32,
    /// A file path or a generator partition.
    pub name: String,
    /// As the manifest holds it: byte offset and line (files) or events emitted.
    pub position: SourcePos,
    pub done: bool,
    /// Per side read by this source, the highest event time seen (its clock).
    pub max_ts: [Option<i64>; 2],
}

#[derive(Debug, Default, Serialize)]
pub struct SideReport {
    pub side: &'static str,
    /// Live buckets the checkpoint holds for this side.
    pub buckets: u64,
    /// Their copies' bytes (without matched lists).
    pub bytes: u64,
    pub flips_bytes: u64,
    /// Records in those copies, counted while verifying; `None` when a copy could not
    /// be read.
    pub rows: Option<u64>,
    /// Counters up to the checkpoint: rows read, and peaks of state rows and bytes.
    pub rows_read: u64,
    pub state_rows_peak: u64,
    pub state_bytes_peak: u64,
}

#[derive(Debug, Serialize)]
pub struct PackReport {
    pub path: String,
    pub bytes: u64,
    pub shard: Option<u32>,
    /// The checkpoint that wrote it (from its name).
    pub written_by: Option<u64>,
    /// Manifests (that could be read) referencing it; empty for a pack of a checkpoint
    /// in progress or one GC has not reached.
    pub referenced_by: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct ArenaReport {
    pub path: String,
    pub shard: Option<u32>,
    pub side: Option<&'static str>,
    pub bucket: Option<i64>,
    /// File length (arenas are preallocated and grow by doubling, so this is capacity).
    pub bytes: u64,
    /// Disk blocks allocated, in bytes.
    pub allocated_bytes: u64,
    /// From the header: the bucket's width, so the bucket covers event times
    /// `[bucket * bucket_ms, (bucket + 1) * bucket_ms)`.
    pub bucket_ms: Option<i64>,
    /// A header that is not a weft arena's (fails the inspection).
    pub problem: Option<String>,
    /// A header whose side or bucket differs from the name's. Not a failure: a bucket
    /// restored from the copy of a heap buffer (a run without `state_dir`) keeps that
    /// buffer's header, which leaves side and bucket 0.
    pub note: Option<String>,
}

fn side_name(s: Side) -> &'static str {
    match s {
        Side::Left => "left",
        Side::Right => "right",
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Inspects `dir`: a checkpoint directory, a state directory, or one holding both.
pub fn inspect(dir: &Path) -> Result<Inspection, InspectError> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(InspectError::Missing(dir.to_path_buf())),
        Err(e) => return Err(CheckpointError::Io { path: dir.to_path_buf(), op: "stat", source: e }.into()),
        Ok(m) if !m.is_dir() => return Err(InspectError::NotADirectory(dir.to_path_buf())),
        Ok(_) => {}
    }
    let lock = std::fs::read_to_string(dir.join(crate::sys::LOCK_FILE_NAME)).ok().map(|t| t.trim().replace('\n', ": "));
    let checkpoints: Vec<CheckpointReport> = list(dir)?.into_iter().map(|n| inspect_checkpoint(dir, n)).collect();
    let mut packs = list_packs(dir);
    for p in &mut packs {
        for c in checkpoints.iter().filter(|c| c.packs.contains(&p.path)) {
            p.referenced_by.push(c.checkpoint);
        }
    }
    let arenas = list_arenas(dir);
    if checkpoints.is_empty() && arenas.is_empty() {
        let extra = if packs.is_empty() {
            String::new()
        } else {
            format!(" ({} pack files under state/, but no manifest references them)", packs.len())
        };
        return Err(InspectError::Empty(dir.to_path_buf(), extra));
    }
    let ok = checkpoints.iter().all(|c| c.verified) && arenas.iter().all(|a| a.problem.is_none());
    Ok(Inspection { dir: display(dir), lock, checkpoints, packs, arenas, ok })
}

fn inspect_checkpoint(dir: &Path, n: u64) -> CheckpointReport {
    let path = manifest_path(dir, n);
    let mut r = CheckpointReport {
        checkpoint: n,
        manifest: display(&path),
        manifest_bytes: std::fs::metadata(&path).ok().map(|m| m.len()),
        verified: false,
        problems: Vec::new(),
        format: None,
        finished: None,
        created_unix_ms: None,
        job: None,
        state_bytes: 0,
        packs: Vec::new(),
        shards: Vec::new(),
    };
    let m = match read_manifest(dir, n) {
        Ok(m) => m,
        Err(e) => {
            r.problems.push(e.to_string());
            return r;
        }
    };
    if m.format == MANIFEST_FORMAT_LEGACY {
        r.problems
            .push(format!("{}: legacy manifest (format 1, no checksum): its own bytes are not checked", r.manifest));
    }
    for s in &m.shards {
        let mut sides =
            [SideReport { side: "left", ..Default::default() }, SideReport { side: "right", ..Default::default() }];
        for (i, side) in sides.iter_mut().enumerate() {
            side.rows = Some(0);
            side.rows_read = s.counters.rows_in[i];
            side.state_rows_peak = s.counters.state_rows_peak[i];
            side.state_bytes_peak = s.counters.state_bytes_peak_side[i];
        }
        for b in &s.buckets {
            let side = &mut sides[b.side as usize];
            side.buckets += 1;
            side.bytes += b.bytes;
            side.flips_bytes += b.flips.as_ref().map_or(0, |f| f.bytes);
            r.state_bytes += b.bytes + b.flips.as_ref().map_or(0, |f| f.bytes);
            for f in b.files() {
                if !r.packs.iter().any(|p| p == f) {
                    r.packs.push(f.to_string());
                }
            }
            match read_bucket(dir, b) {
                Ok((bytes, _flips)) => {
                    let name = dir.join(&b.file);
                    match crate::state::arena::Buffer::restore(&bytes, None, &name) {
                        Ok((_, roots)) => {
                            if let Some(rows) = side.rows.as_mut() {
                                *rows += roots.len() as u64;
                            }
                        }
                        Err(e) => {
                            side.rows = None;
                            r.problems.push(format!("bucket {} of side {}: {e}", b.bucket, side.side));
                        }
                    }
                }
                Err(e) => {
                    side.rows = None;
                    r.problems.push(e.to_string());
                }
            }
        }
        let sources = s
            .sources
            .iter()
            .map(|src| SourceReport {
                plan_index: src.plan_index,
                name: src.name.clone(),
                position: src.position.clone(),
                done: src.done,
                max_ts: [0, 1].map(|i| src.clocks[i].as_ref().and_then(|c| c.max_ts)),
            })
            .collect();
        r.shards.push(ShardReport { shard: s.shard, watermark: s.watermark, marks: s.marks.clone(), sources, sides });
    }
    r.packs.sort();
    // A legacy manifest is still usable: its note is not a failure.
    r.verified = r.problems.iter().all(|p| p.contains("legacy manifest"));
    r.format = Some(m.format);
    r.finished = Some(m.finished);
    r.created_unix_ms = Some(m.created_unix_ms);
    r.job = Some(m.job);
    r
}

/// Directories `shard-<s>` under `dir`, by shard number.
fn shard_dirs(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let s = name.strip_prefix("shard-")?.parse().ok()?;
            e.file_type().ok()?.is_dir().then(|| (s, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Regular files (not followed) in `dir` whose names end with `ext`, sorted by name.
fn files_ending(dir: &Path, ext: &str) -> Vec<(String, std::fs::Metadata)> {
    let mut v: Vec<(String, std::fs::Metadata)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // symlink_metadata: a file removed meanwhile by a live run is skipped.
            let md = std::fs::symlink_metadata(e.path()).ok()?;
            (name.ends_with(ext) && md.is_file()).then_some((name, md))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn list_packs(dir: &Path) -> Vec<PackReport> {
    let mut v = Vec::new();
    for (shard, sd) in shard_dirs(&dir.join("state")) {
        for (name, md) in files_ending(&sd, ".pack") {
            let path = format!("state/shard-{shard}/{name}");
            v.push(PackReport {
                written_by: super::writer::pack_checkpoint(Path::new(&name)),
                path,
                bytes: md.len(),
                shard: Some(shard),
                referenced_by: Vec::new(),
            });
        }
    }
    v.sort_by_key(|p| (p.shard, p.written_by));
    v
}

fn list_arenas(dir: &Path) -> Vec<ArenaReport> {
    use std::os::unix::fs::MetadataExt;
    let mut v = Vec::new();
    for (shard, sd) in shard_dirs(dir) {
        for (name, md) in files_ending(&sd, ".arena") {
            let path = sd.join(&name);
            let parsed = crate::state::parse_arena_name(&name);
            let mut a = ArenaReport {
                path: display(&path),
                shard: Some(shard),
                side: parsed.map(|(s, _)| side_name(s)),
                bucket: parsed.map(|(_, b)| b),
                bytes: md.len(),
                allocated_bytes: md.blocks() * 512,
                bucket_ms: None,
                problem: None,
                note: None,
            };
            match read_header(&path) {
                Err(e) => a.problem = Some(format!("{}: {e}", a.path)),
                Ok(h) => {
                    a.bucket_ms = h.bucket_ms;
                    match header_problem(&h, parsed) {
                        Some(HeaderIssue::Bad(p)) => a.problem = Some(format!("{}: {p}", a.path)),
                        Some(HeaderIssue::Differs(n)) => a.note = Some(n),
                        None => {}
                    }
                }
            }
            v.push(a);
        }
    }
    v.sort_by_key(|a| (a.shard, a.side, a.bucket));
    v
}

struct Header {
    bytes: Vec<u8>,
    bucket_ms: Option<i64>,
}

/// The first [`ARENA_HEADER_BYTES`] of an arena file (or fewer, if it is shorter),
/// read through a read-only descriptor: nothing is mapped.
fn read_header(path: &Path) -> std::io::Result<Header> {
    let mut f = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(ARENA_HEADER_BYTES);
    f.by_ref().take(ARENA_HEADER_BYTES as u64).read_to_end(&mut bytes)?;
    let bucket_ms =
        (bytes.len() == ARENA_HEADER_BYTES).then(|| i64::from_le_bytes(bytes[24..32].try_into().expect("8 bytes")));
    Ok(Header { bytes, bucket_ms })
}

enum HeaderIssue {
    Bad(String),
    Differs(String),
}

/// What is wrong with an arena's header (layout: `ArenaFile::create`), if anything.
fn header_problem(h: &Header, parsed: Option<(Side, i64)>) -> Option<HeaderIssue> {
    let b = &h.bytes;
    // A run creates an arena, then writes its header: one killed (or still running) in
    // between leaves a file without one. Arenas are rebuilt from the checkpoint on a
    // restart, so that is worth a note, not a failure.
    if b.iter().all(|&x| x == 0) {
        return Some(HeaderIssue::Differs(format!(
            "no header yet ({} bytes): created by a run stopped before writing it; a restart rebuilds arenas from the checkpoint",
            b.len()
        )));
    }
    if b.len() < ARENA_HEADER_BYTES {
        return Some(HeaderIssue::Bad(format!("{} bytes, shorter than the {ARENA_HEADER_BYTES}-byte header", b.len())));
    }
    if &b[0..8] != ARENA_MAGIC {
        return Some(HeaderIssue::Bad("not a weft arena (bad magic)".into()));
    }
    let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
    if version != ARENA_VERSION {
        return Some(HeaderIssue::Bad(format!("arena version {version}, this weft reads version {ARENA_VERSION}")));
    }
    let side = b[12];
    let bucket = i64::from_le_bytes(b[16..24].try_into().expect("8 bytes"));
    match parsed {
        None => Some(HeaderIssue::Bad("the name is not <left|right>-<bucket>.arena".into())),
        Some((s, nb)) if s as u8 != side || nb != bucket => Some(HeaderIssue::Differs(format!(
            "the header says side {side} bucket {bucket}, the name side {} bucket {nb}",
            s as u8
        ))),
        Some(_) => None,
    }
}

fn position_text(p: &SourcePos) -> String {
    match p {
        SourcePos::Csv { byte, line, record } => format!("byte {byte} line {line} record {record}"),
        SourcePos::Jsonl { byte, line } => format!("byte {byte} line {line}"),
        SourcePos::Generator { emitted } => format!("emitted {emitted}"),
        SourcePos::Kafka { offset, end } => format!(
            "offset {}{}",
            offset.map_or("(the partition's start)".to_string(), |o| o.to_string()),
            end.map_or(String::new(), |e| format!(", bounded: up to offset {e}"))
        ),
        SourcePos::Split(r) => format!(
            "split in chunks of {} bytes: shard {} of {} at chunk {} (items handed out {}), read to byte {}",
            r.chunk_bytes,
            r.shard,
            r.shards,
            r.chunk,
            r.skip,
            r.read_to()
        ),
    }
}

fn mark_text(m: &MarkState) -> String {
    match m {
        MarkState::At { ts } => ts.to_string(),
        MarkState::Idle => "idle".into(),
        MarkState::Done => "done".into(),
    }
}

impl Inspection {
    /// The text `weft inspect` prints (without `--json`).
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "{}", self.dir);
        if let Some(l) = &self.lock {
            let _ = writeln!(s, "lock file: {l} (a run may be live; a killed run also leaves it)");
        }
        if !self.checkpoints.is_empty() {
            let _ = writeln!(s, "\ncheckpoints ({}, newest first):", self.checkpoints.len());
        }
        // Every checkpoint of one directory has one job shape (a restore refuses
        // another), so it is printed in full once and then only when it differs.
        let mut shown: Option<(u64, &JobShape)> = None;
        for c in &self.checkpoints {
            let same = match (shown, &c.job) {
                (Some((n, was)), Some(job)) if same_shape(was, job) => Some(n),
                _ => None,
            };
            render_checkpoint(&mut s, c, same);
            if let (None, Some(job)) = (same, &c.job) {
                shown = Some((c.checkpoint, job));
            }
        }
        if !self.packs.is_empty() {
            let _ = writeln!(s, "\npack files:");
            for p in &self.packs {
                let used = if p.referenced_by.is_empty() {
                    "referenced by no readable manifest".to_string()
                } else {
                    format!("referenced by {:?}", p.referenced_by)
                };
                let _ = writeln!(s, "  {}  {} bytes  {used}", p.path, p.bytes);
            }
        }
        if !self.arenas.is_empty() {
            let total: u64 = self.arenas.iter().map(|a| a.bytes).sum();
            let _ = writeln!(s, "\narena files ({}, {total} bytes):", self.arenas.len());
            for a in &self.arenas {
                let what = match (a.shard, a.side, a.bucket) {
                    (Some(sh), Some(side), Some(b)) => {
                        let range = a.bucket_ms.map_or(String::new(), |ms| {
                            format!(
                                "  event time [{}, {})",
                                b.saturating_mul(ms),
                                b.saturating_add(1).saturating_mul(ms)
                            )
                        });
                        format!("shard {sh} {side} bucket {b}{range}")
                    }
                    _ => "unrecognised name".into(),
                };
                let _ = writeln!(s, "  {}  {} bytes ({} allocated)  {what}", a.path, a.bytes, a.allocated_bytes);
                if let Some(p) = &a.problem {
                    let _ = writeln!(s, "    PROBLEM: {p}");
                }
                if let Some(n) = &a.note {
                    let _ = writeln!(s, "    note: {n}");
                }
            }
        }
        let _ = writeln!(s, "\n{}", if self.ok { "all verified" } else { "NOT VERIFIED: see the problems above" });
        s
    }
}

/// Equal but for the input fingerprints, which are per checkpoint (its positions).
fn same_shape(a: &JobShape, b: &JobShape) -> bool {
    let strip = |j: &JobShape| JobShape { inputs: Vec::new(), ..j.clone() };
    strip(a) == strip(b)
}

/// `same_job_as`: a checkpoint printed before with the same job shape.
fn render_checkpoint(s: &mut String, c: &CheckpointReport, same_job_as: Option<u64>) {
    use std::fmt::Write;
    let state = match c.finished {
        Some(true) => "finished",
        Some(false) => "running",
        None => "unreadable",
    };
    let _ = writeln!(
        s,
        "checkpoint {}  {state}  {}  manifest {} ({} bytes)",
        c.checkpoint,
        if c.verified { "verified" } else { "NOT VERIFIED" },
        c.manifest,
        c.manifest_bytes.map_or("?".into(), |b| b.to_string())
    );
    for p in &c.problems {
        let _ = writeln!(s, "  PROBLEM: {p}");
    }
    let Some(job) = &c.job else { return };
    let _ = writeln!(
        s,
        "  format {}  created {} ms  state {} bytes in {} packs",
        c.format.unwrap_or(0),
        c.created_unix_ms.unwrap_or(0),
        c.state_bytes,
        c.packs.len()
    );
    match same_job_as {
        Some(n) => {
            let _ = writeln!(s, "  job: as checkpoint {n}");
        }
        None => render_job(s, job),
    }
    render_shards(s, c);
}

fn render_job(s: &mut String, job: &JobShape) {
    use std::fmt::Write;
    let fields = |f: &[crate::schema::Field]| {
        f.iter().map(|f| format!("{} {}", f.name, f.ty.name())).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(
        s,
        "  job: {:?} join, {} shards, window [{}, {}] ms, out-of-orderness {} ms, lateness {} ms, buckets {} ms",
        job.kind,
        job.shards,
        job.lower_ms,
        job.upper_ms,
        job.max_out_of_orderness_ms,
        job.allowed_lateness_ms,
        job.state_bucket_ms
    );
    let key = |f: &[crate::schema::Field], k: &[u32]| {
        k.iter().map(|&i| f.get(i as usize).map_or(format!("#{i}"), |f| f.name.clone())).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(
        s,
        "    left  {}: {}; key {}",
        job.left_name,
        fields(&job.left_fields),
        key(&job.left_fields, &job.left_key)
    );
    let _ = writeln!(
        s,
        "    right {}: {}; key {}",
        job.right_name,
        fields(&job.right_fields),
        key(&job.right_fields, &job.right_key)
    );
    for (i, p) in job.partitions.iter().enumerate() {
        let _ = writeln!(s, "    partition {i}: {p}");
    }
}

fn render_shards(s: &mut String, c: &CheckpointReport) {
    use std::fmt::Write;
    for sh in &c.shards {
        let marks: Vec<String> = sh.marks.iter().map(mark_text).collect();
        let _ = writeln!(s, "  shard {}: watermark {}  marks [{}]", sh.shard, sh.watermark, marks.join(", "));
        for src in &sh.sources {
            let _ = writeln!(
                s,
                "    source {} {}: {}{}",
                src.plan_index,
                src.name,
                position_text(&src.position),
                if src.done { "  done" } else { "" }
            );
        }
        for side in &sh.sides {
            let _ = writeln!(
                s,
                "    {:<5} {} buckets  {} bytes{}  rows {}  (rows read {}, peak rows {}{})",
                side.side,
                side.buckets,
                side.bytes,
                if side.flips_bytes > 0 {
                    format!(" + {} matched-list bytes", side.flips_bytes)
                } else {
                    String::new()
                },
                side.rows.map_or("?".into(), |r| r.to_string()),
                side.rows_read,
                side.state_rows_peak,
                // Left out when the manifest holds 0 (not every checkpoint fills it).
                if side.state_bytes_peak > 0 {
                    format!(", peak bytes {}", side.state_bytes_peak)
                } else {
                    String::new()
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_not_a_directory_are_errors_naming_the_path() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let e = inspect(&missing).unwrap_err();
        assert!(matches!(e, InspectError::Missing(_)) && e.to_string().contains("nope"), "{e}");
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(inspect(&file).unwrap_err(), InspectError::NotADirectory(_)));
        let e = inspect(d.path()).unwrap_err();
        assert!(matches!(e, InspectError::Empty(..)), "{e}");
    }

    #[test]
    fn arena_headers_are_checked_against_their_names() {
        let d = tempfile::tempdir().unwrap();
        let sd = d.path().join("shard-1");
        std::fs::create_dir(&sd).unwrap();
        let mut h = vec![0u8; 4096];
        h[0..8].copy_from_slice(ARENA_MAGIC);
        h[8..12].copy_from_slice(&ARENA_VERSION.to_le_bytes());
        h[12] = 1;
        h[16..24].copy_from_slice(&7i64.to_le_bytes());
        h[24..32].copy_from_slice(&1000i64.to_le_bytes());
        std::fs::write(sd.join("right-7.arena"), &h).unwrap();
        std::fs::write(sd.join("left-7.arena"), &h).unwrap();
        let r = inspect(d.path()).unwrap();
        assert_eq!(r.arenas.len(), 2);
        let good = r.arenas.iter().find(|a| a.side == Some("right")).unwrap();
        assert_eq!((good.shard, good.bucket, good.bytes, good.bucket_ms), (Some(1), Some(7), 4096, Some(1000)));
        assert!(good.problem.is_none());
        let differs = r.arenas.iter().find(|a| a.side == Some("left")).unwrap();
        assert!(differs.note.as_ref().unwrap().contains("side 1 bucket 7, the name side 0"), "{:?}", differs.note);
        assert!(r.ok, "a header differing from its name is a note only");
        std::fs::write(sd.join("left-8.arena"), b"short").unwrap();
        let r = inspect(d.path()).unwrap();
        let bad = r.arenas.iter().find(|a| a.bucket == Some(8)).unwrap();
        assert!(bad.problem.as_ref().unwrap().contains("left-8.arena: 5 bytes, shorter"), "{:?}", bad.problem);
        assert!(!r.ok);
        std::fs::remove_file(sd.join("left-8.arena")).unwrap();
        std::fs::write(sd.join("left-9.arena"), b"").unwrap();
        let r = inspect(d.path()).unwrap();
        let empty = r.arenas.iter().find(|a| a.bucket == Some(9)).unwrap();
        assert!(empty.note.as_ref().unwrap().contains("no header yet (0 bytes)"), "{:?}", empty.note);
        assert!(r.ok, "an arena a stopped run left without a header is a note only");
        assert!(r.render().contains("shard 1 right bucket 7  event time [7000, 8000)"), "{}", r.render());
    }
}

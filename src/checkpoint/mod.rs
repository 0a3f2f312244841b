//! Consistent checkpoints: what they contain, how they are made durable, verified,
//! committed and garbage-collected. The shard side (barrier alignment, snapshot
//! capture, the pack copy, restore) is in [`barrier`], the io_uring pack writer and the
//! pack's file name in [`writer`], the start plan and the coordinator in [`coordinator`],
//! `weft inspect` (a report of a checkpoint or state directory) in [`inspect`], `weft
//! schema check` (what a restart of a changed job would do) in [`compat`].
//!
//! Layout of `engine.checkpoint_dir`:
//! ```text
//!   chk-<n:012>.json                         manifest of checkpoint n (written last)
//!   state/shard-<s>/c<m>.pack                the bucket copies shard s wrote for checkpoint
//!                                            m, at aligned offsets; a manifest may reference
//!                                            a copy in the pack of an earlier checkpoint m <= n
//! ```
//! Protocol of checkpoint n (Chandy-Lamport with aligned barriers):
//! 1. the coordinator asks for n; each shard's source records its partitions' positions
//!    and sends barrier n on every ring after the rows it routed before;
//! 2. a shard that has barrier n from every sender captures its snapshot: watermarks,
//!    source positions, counters, and its buckets. Buckets unchanged since the last
//!    checkpoint are referenced; the others are copied through io_uring (O_DIRECT, 1 MiB
//!    aligned writes) while the shard goes on joining. Its output files of epoch n are
//!    closed;
//! 3. when every shard has reported n, the coordinator fsyncs the epoch-n output files,
//!    writes the manifest (tmp file, fdatasync, rename, directory fsync), then commits
//!    the output by renaming `*.inprogress` files of epochs <= n to their final names.
//!
//! Invariants: a manifest is only ever written after every file it references is
//! durable; output of epoch e becomes visible only after a manifest with n >= e is
//! durable; a bucket copy is deleted only when no retained manifest references it.

pub mod barrier;
pub mod compat;
pub mod coordinator;
pub mod inspect;
pub mod redistribute;
pub mod writer;

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Format, Job, JoinKind};
use crate::evolve::{self, Incompatible, Migration, Stored};
use crate::metrics::ShardCounters;
use crate::schema::Field;
use crate::source::{Fingerprint, SourcePos};
use crate::state::copy::{BucketCopy, Segment};
use crate::watermark::Mark;

/// The manifest format this weft writes: 2 adds the `checksum` (CRC32 of the canonical
/// body), `job.output_format` and `job.inputs` (the input fingerprints).
pub const MANIFEST_FORMAT: u32 = 2;
/// Manifests of this format (no checksum, written by an older weft) are still read, as
/// legacy: nothing detects a hand edit or a torn write in them, and their inputs are
/// not checked on restore. A manifest carrying a checksum is always verified.
pub const MANIFEST_FORMAT_LEGACY: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    #[error("checkpoint {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "checkpoint {path} was taken by a different job: {reason}; use another engine.checkpoint_dir or remove it"
    )]
    Mismatch { path: PathBuf, reason: String },
    #[error(
        "checkpoint {path}: its state cannot be carried into the new schema: {error}. Nothing was changed; \
         restart with the checkpoint's schema (see `weft schema check`), or run the job afresh in another \
         engine.checkpoint_dir"
    )]
    Schema { path: PathBuf, error: Box<Incompatible> },
    #[error(transparent)]
    Publish(#[from] crate::sink::kafka::PublishError),
}

/// An output-directory error met while committing a checkpoint's output.
impl From<crate::sink::SinkError> for CheckpointError {
    fn from(e: crate::sink::SinkError) -> CheckpointError {
        CheckpointError::Io { path: e.path, op: e.op, source: e.source }
    }
}

pub(crate) fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { path, op, source }
}

/// What must not change between a checkpoint and the job restoring it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobShape {
    pub shards: u32,
    pub left_name: String,
    pub right_name: String,
    /// The schemas in force when the checkpoint was taken.
    pub left_fields: Vec<Field>,
    pub right_fields: Vec<Field>,
    /// Key field indexes (fixed width on disk; the JSON is the same numbers).
    pub left_key: Vec<u32>,
    pub right_key: Vec<u32>,
    /// The time field's index per input. Absent in manifests written before schema
    /// evolution (2026-12-05): the restoring job's time field is then looked up by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_time: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub right_time: Option<u32>,
    /// Per input (left, right), the version of its schema: 1 for the schema the job
    /// started with, raised by each restart that changed it (see `evolve`). Written only
    /// once a schema changed, so older manifests (and their checksums) read as [1, 1].
    #[serde(default = "first_versions", skip_serializing_if = "is_first_versions")]
    pub schema_versions: [u32; 2],
    pub kind: JoinKind,
    pub lower_ms: i64,
    pub upper_ms: i64,
    pub max_out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
    pub state_bucket_ms: i64,
    /// Partitions in plan order (file paths or generator partitions).
    pub partitions: Vec<String>,
    /// `output.format`: a resumed run appends to the same output files. `None` in
    /// legacy manifests (not checked).
    #[serde(default)]
    pub output_format: Option<Format>,
    /// The checkpoint's view of its file inputs: a fingerprint of each file partition
    /// up to the position the checkpoint resumes it at (taken when the manifest is
    /// written, see [`write_manifest`]). Empty in the running job's own shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputPrint>,
}

/// One file partition's fingerprint in a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputPrint {
    pub plan_index: u32,
    pub path: String,
    pub print: Fingerprint,
}

impl JobShape {
    pub fn of(job: &Job) -> JobShape {
        JobShape {
            shards: job.shards,
            left_name: job.left.schema.name.clone(),
            right_name: job.right.schema.name.clone(),
            left_fields: job.left.schema.fields.clone(),
            right_fields: job.right.schema.fields.clone(),
            left_key: key_fields(&job.left.schema.key),
            right_key: key_fields(&job.right.schema.key),
            left_time: Some(job.left.schema.time as u32),
            right_time: Some(job.right.schema.time as u32),
            schema_versions: first_versions(),
            kind: job.kind,
            lower_ms: job.lower_ms,
            upper_ms: job.upper_ms,
            max_out_of_orderness_ms: job.max_out_of_orderness_ms,
            allowed_lateness_ms: job.allowed_lateness_ms,
            state_bucket_ms: job.state_bucket_ms,
            partitions: crate::source::plan(job).iter().map(|p| p.describe()).collect(),
            output_format: Some(job.output_format),
            inputs: Vec::new(),
        }
    }

    /// The first difference that makes a checkpoint unusable for `other`, if any:
    /// `self` is the checkpoint's shape, `other` the job's. Last, the inputs: a file
    /// partition whose bytes before the checkpoint's position changed (this reads up
    /// to 68 KiB per file partition) would resume at a stale byte offset.
    pub fn mismatch(&self, other: &JobShape) -> Option<String> {
        macro_rules! same {
            ($f:ident) => {
                if self.$f != other.$f {
                    return Some(format!("{} was {:?}, is now {:?}", stringify!($f), self.$f, other.$f));
                }
            };
        }
        // The schemas (fields, key, time) are not compared here: `evolve::plan` decides
        // per field whether the state can be carried over (see `schema_change`).
        same!(left_name);
        same!(right_name);
        same!(kind);
        same!(lower_ms);
        same!(upper_ms);
        same!(max_out_of_orderness_ms);
        same!(allowed_lateness_ms);
        same!(state_bucket_ms);
        same!(partitions);
        if let (Some(was), Some(now)) = (self.output_format, other.output_format) {
            if was != now {
                return Some(format!(
                    "output.format was \"{}\", is now \"{}\" (a resumed run appends to the same output)",
                    was.ext(),
                    now.ext()
                ));
            }
        }
        for p in &self.inputs {
            if let Some(why) = crate::source::fingerprint_change(Path::new(&p.path), &p.print) {
                return Some(format!("input file {} {why}", p.path));
            }
        }
        None
    }
}

impl JobShape {
    /// The schema of input `side` (0 left, 1 right) as this checkpoint stored it.
    pub fn stored(&self, side: usize) -> Stored<'_> {
        match side {
            0 => Stored { fields: &self.left_fields, key: &self.left_key, time: self.left_time },
            _ => Stored { fields: &self.right_fields, key: &self.right_key, time: self.right_time },
        }
    }

    /// How the rows this checkpoint stored become rows of `job`'s schemas, per input
    /// (left, right); the first incompatible field refuses the restore.
    pub fn schema_change(&self, job: &Job) -> Result<SchemaChange, Incompatible> {
        let mut migrations = Vec::with_capacity(2);
        for (side, schema) in [&job.left.schema, &job.right.schema].into_iter().enumerate() {
            migrations.push(evolve::plan(&schema.name, &self.stored(side), schema)?);
        }
        let [left, right]: [Migration; 2] = migrations.try_into().expect("two inputs");
        let changed = [left.changes_anything(self.left_fields.len()), right.changes_anything(self.right_fields.len())];
        let versions = [0, 1].map(|i| self.schema_versions[i] + changed[i] as u32);
        Ok(SchemaChange { migrations: [left, right], changed, versions })
    }
}

/// What a restart does to the schemas of a checkpoint's inputs (see [`JobShape::schema_change`]).
#[derive(Clone, Debug)]
pub struct SchemaChange {
    /// Per input (left, right).
    pub migrations: [Migration; 2],
    /// Per input: any field renamed, retyped, added, dropped or moved.
    pub changed: [bool; 2],
    /// The schema versions the restarted job's checkpoints record.
    pub versions: [u32; 2],
}

impl SchemaChange {
    /// True when stored rows must be rewritten (not only renamed) for `shape`'s job.
    pub fn rewrites_rows(&self, shape: &JobShape) -> bool {
        !self.migrations[0].is_identity(shape.left_fields.len())
            || !self.migrations[1].is_identity(shape.right_fields.len())
    }
}

fn first_versions() -> [u32; 2] {
    [1, 1]
}

fn is_first_versions(v: &[u32; 2]) -> bool {
    *v == [1, 1]
}

/// Key field indexes as persisted: below `FIELDS_MAX`, so they fit a `u32`.
fn key_fields(key: &[usize]) -> Vec<u32> {
    const _: () = assert!(crate::schema::FIELDS_MAX <= u32::MAX as usize);
    key.iter().map(|&k| k as u32).collect()
}

/// Watermark and end state of one partition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockState {
    pub max_ts: Option<i64>,
    pub done: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// Index in the job's partition plan.
    pub plan_index: u32,
    pub name: String,
    pub position: SourcePos,
    pub done: bool,
    /// Per side (left, right): the partition's clock, if the source reads that side.
    pub clocks: [Option<ClockState>; 2],
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MarkState {
    At { ts: i64 },
    Idle,
    Done,
}

impl From<Mark> for MarkState {
    fn from(m: Mark) -> MarkState {
        match m {
            Mark::At(ts) => MarkState::At { ts },
            Mark::Idle => MarkState::Idle,
            Mark::Done => MarkState::Done,
        }
    }
}

impl From<&MarkState> for Mark {
    fn from(m: &MarkState) -> Mark {
        match *m {
            MarkState::At { ts } => Mark::At(ts),
            MarkState::Idle => Mark::Idle,
            MarkState::Done => Mark::Done,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardSnapshot {
    pub shard: u32,
    pub watermark: i64,
    /// The watermark mark of every sender, as this shard last saw it.
    pub marks: Vec<MarkState>,
    pub sources: Vec<SourceState>,
    pub buckets: Vec<BucketCopy>,
    /// Per side, the bucket that the index's relative bucket numbers count from (see
    /// `state`): it decides which buckets form the far units named in `buckets`.
    /// Absent in checkpoints of earlier versions (the first bucket restored sets it).
    #[serde(default)]
    pub base_buckets: [Option<i64>; 2],
    pub counters: ShardCounters,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub checkpoint: u64,
    /// The job ran to the end of its inputs; every output epoch is committed.
    pub finished: bool,
    pub created_unix_ms: u64,
    pub job: JobShape,
    /// The routing function (`router::ROUTING`) the state's shards and key hashes
    /// follow. Absent in checkpoints of weft before 2026-12-05, which routed by a
    /// build-dependent ahash: those are re-distributed at restore, as are checkpoints
    /// of another routing or another shard count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<String>,
    pub shards: Vec<ShardSnapshot>,
}

impl Manifest {
    /// Why this checkpoint's state cannot be restored shard by shard by a job of
    /// `shards` shards (so it is re-distributed by key), or `None` when it can.
    pub fn needs_redistribution(&self, shards: u32) -> Option<String> {
        if self.routing.as_deref() != Some(crate::router::ROUTING) {
            return Some(format!(
                "its routing is {}, this weft routes by {}",
                self.routing.as_deref().unwrap_or("a build-dependent ahash (a weft before 2026-12-05)"),
                crate::router::ROUTING
            ));
        }
        if self.shards.len() != shards as usize {
            return Some(format!("it has {} shards, the job has {shards}", self.shards.len()));
        }
        None
    }
}

/// What shards tell the coordinator (the engine's calling thread).
pub enum CoordMsg {
    /// Snapshot `n` of a shard is durable (its copies are written and synced).
    Snapshot { n: u64, snap: Box<ShardSnapshot> },
    /// Snapshot `n` of a shard could not be written: checkpoint n fails.
    Failed { n: u64, shard: u32, error: String },
    /// The shard ran to the end of its input; its last epoch's files are closed.
    /// `positions`: where its sources ended, by plan index.
    Finished { shard: u32, positions: Vec<(u32, crate::source::SourcePos)> },
}

pub fn manifest_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("chk-{n:012}.json"))
}

/// Checkpoint numbers that have a manifest file, newest first.
pub fn list(dir: &Path) -> Result<Vec<u64>, CheckpointError> {
    let mut v = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(io(dir, "read directory")(e)),
    };
    for e in rd {
        let name = e.map_err(io(dir, "read directory"))?.file_name().to_string_lossy().into_owned();
        if let Some(n) =
            name.strip_prefix("chk-").and_then(|r| r.strip_suffix(".json")).and_then(|n| n.parse::<u64>().ok())
        {
            v.push(n);
        }
    }
    v.sort_unstable_by(|a, b| b.cmp(a));
    Ok(v)
}

/// A manifest as stored: its fields plus `checksum`, the CRC32 of [`canonical_body`].
#[derive(Serialize)]
struct StoredManifestOut<'a> {
    #[serde(flatten)]
    manifest: &'a Manifest,
    checksum: String,
}

#[derive(Deserialize)]
struct StoredManifestIn {
    #[serde(flatten)]
    manifest: Manifest,
    #[serde(default)]
    checksum: Option<String>,
}

/// The bytes a manifest's checksum covers: its compact JSON (fields in declaration
/// order), which a parse and re-serialisation reproduce exactly. So the checksum
/// survives reformatting of the file but not a changed value.
fn canonical_body(m: &Manifest) -> Vec<u8> {
    serde_json::to_vec(m).expect("manifest serialises")
}

fn checksum_of(m: &Manifest) -> String {
    format!("crc32:{:08x}", crc32_of(&canonical_body(m)))
}

/// Reads a manifest and checks its checksum (no file checks).
pub fn read_manifest(dir: &Path, n: u64) -> Result<Manifest, CheckpointError> {
    let path = manifest_path(dir, n);
    let text = std::fs::read(&path).map_err(io(&path, "read"))?;
    let stored: StoredManifestIn = serde_json::from_slice(&text).map_err(|e| CheckpointError::Invalid {
        path: path.clone(),
        reason: format!("manifest does not parse (truncated or damaged?): {e}"),
    })?;
    let m = stored.manifest;
    match stored.checksum {
        Some(want) => {
            let got = checksum_of(&m);
            if got != want {
                return Err(CheckpointError::Invalid {
                    path,
                    reason: format!("manifest checksum is {want}, its contents give {got} (edited by hand or damaged)"),
                });
            }
        }
        None if m.format == MANIFEST_FORMAT_LEGACY => {}
        None => {
            return Err(CheckpointError::Invalid {
                path,
                reason: format!("manifest of format {} has no checksum (damaged?)", m.format),
            })
        }
    }
    if m.format != MANIFEST_FORMAT && m.format != MANIFEST_FORMAT_LEGACY {
        return Err(CheckpointError::Invalid {
            path,
            reason: format!(
                "manifest format {}, this weft reads {MANIFEST_FORMAT} (and {MANIFEST_FORMAT_LEGACY}, legacy)",
                m.format
            ),
        });
    }
    if m.checkpoint != n {
        return Err(CheckpointError::Invalid {
            path,
            reason: format!("manifest says checkpoint {}, file name says {n}", m.checkpoint),
        });
    }
    Ok(m)
}

pub fn crc32_of(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Reads a bucket copy and its matched-flag list (roots), checking sizes and checksums.
pub fn read_bucket(dir: &Path, b: &BucketCopy) -> Result<(rkyv::util::AlignedVec<16>, Vec<u32>), CheckpointError> {
    let base = read_segment(dir, &b.rows(), b.bucket)?;
    let flips = match &b.flips {
        None => Vec::new(),
        Some(seg) => {
            let raw = read_segment(dir, seg, b.bucket)?;
            if raw.len() % 4 != 0 {
                return Err(CheckpointError::Invalid {
                    path: dir.join(&seg.file),
                    reason: format!("matched list of bucket {} is {} bytes, not a multiple of 4", b.bucket, raw.len()),
                });
            }
            raw.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
        }
    };
    Ok((base, flips))
}

/// Bytes per read-ahead request [`prefetch_segments`] makes: about what Linux reads per
/// `POSIX_FADV_WILLNEED` call on a virtio or NVMe disk.
const PREFETCH_BYTES: u64 = 1 << 20;

/// Puts the reads of every segment of `buckets` in flight at once, in the background,
/// before a restore reads them one by one: buffered reads of one segment after another
/// otherwise wait for the disk at readahead-window depth (~150 MB/s here, a quarter of
/// the restore's wall time on its own; perf/snapshot-2026-12-08.md). A hint only:
/// a pack that cannot be opened is left for `read_bucket` to report.
pub fn prefetch_segments(dir: &Path, buckets: &[BucketCopy]) {
    let mut segs: Vec<Segment> =
        buckets.iter().flat_map(|b| std::iter::once(b.rows()).chain(b.flips.clone())).collect();
    segs.sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
    let mut open: Option<(&str, File)> = None;
    for s in &segs {
        if open.as_ref().is_none_or(|(name, _)| *name != s.file) {
            open = File::open(dir.join(&s.file)).ok().map(|f| (s.file.as_str(), f));
        }
        let Some((_, f)) = &open else { continue };
        let mut at = s.offset;
        while at < s.offset + s.bytes {
            let len = PREFETCH_BYTES.min(s.offset + s.bytes - at);
            if crate::sys::advise_willneed(f, at, len).is_err() {
                break;
            }
            at += len;
        }
    }
}

fn read_segment(dir: &Path, b: &Segment, bucket: i64) -> Result<rkyv::util::AlignedVec<16>, CheckpointError> {
    let path = dir.join(&b.file);
    let mut f = File::open(&path).map_err(io(&path, "open"))?;
    let len = f.metadata().map_err(io(&path, "stat"))?.len();
    if len < b.offset + b.bytes {
        return Err(CheckpointError::Invalid {
            path,
            reason: format!(
                "{len} bytes, the manifest lists bucket {} at bytes {}..{} (truncated)",
                bucket,
                b.offset,
                b.offset + b.bytes
            ),
        });
    }
    // 16-aligned, so a restore can validate and read the rkyv records in place.
    let mut buf = rkyv::util::AlignedVec::<16>::with_capacity(b.bytes as usize);
    buf.resize(b.bytes as usize, 0);
    f.seek(std::io::SeekFrom::Start(b.offset)).map_err(io(&path, "seek"))?;
    f.read_exact(&mut buf).map_err(io(&path, "read"))?;
    let crc = crc32_of(&buf);
    if crc != b.crc32 {
        return Err(CheckpointError::Invalid {
            path,
            reason: format!("checksum {crc:#010x}, the manifest lists {:#010x}", b.crc32),
        });
    }
    Ok(buf)
}

/// Reads manifest `n` and checks every file it references.
pub fn verify(dir: &Path, n: u64) -> Result<Manifest, CheckpointError> {
    let m = read_manifest(dir, n)?;
    for s in &m.shards {
        for b in &s.buckets {
            read_bucket(dir, b)?;
        }
    }
    Ok(m)
}

fn fsync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir, "fsync directory"))
}

/// The fingerprint of every file partition of `m` up to its position, in plan order.
/// Runs on the coordinator's thread, off the per-row path: at most 17 reads of 4 KiB
/// per file partition (see perf/fingerprint-2026-12-02.md).
fn fingerprint_inputs(m: &Manifest) -> Result<Vec<InputPrint>, CheckpointError> {
    let mut out = Vec::new();
    for st in m.shards.iter().flat_map(|s| &s.sources) {
        let bytes = match st.position {
            SourcePos::Csv { byte, .. } | SourcePos::Jsonl { byte, .. } => byte,
            SourcePos::Split(ref r) => r.read_to(),
            // A Kafka offset names its record; nothing to fingerprint.
            SourcePos::Generator { .. } | SourcePos::Kafka { .. } => continue,
        };
        let path = m.job.partitions.get(st.plan_index as usize).cloned().unwrap_or_else(|| st.name.clone());
        let print = crate::source::fingerprint(Path::new(&path), bytes).map_err(|e| CheckpointError::Invalid {
            path: PathBuf::from(&path),
            reason: format!("cannot fingerprint the input for checkpoint {}: {e}", m.checkpoint),
        })?;
        out.push(InputPrint { plan_index: st.plan_index, path, print });
    }
    out.sort_by_key(|p| p.plan_index);
    Ok(out)
}

/// Writes a manifest durably: tmp file, fdatasync, rename, directory fsync. Adds the
/// input fingerprints (when `m.job.inputs` is empty) and the checksum.
///
/// The temp file `chk-<n>.json.tmp` is created with `O_CREAT|O_EXCL|O_NOFOLLOW`: a
/// stale one (a crash) is unlinked by name first, so a symlink planted there is
/// removed, never followed. A failed write (full disk) removes the temp file.
pub fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), CheckpointError> {
    write_manifest_with(dir, m, |f, text| f.write_all(text))
}

fn write_manifest_with(
    dir: &Path,
    m: &Manifest,
    write: impl FnOnce(&mut File, &[u8]) -> std::io::Result<()>,
) -> Result<(), CheckpointError> {
    let mut stored = m.clone();
    if stored.job.inputs.is_empty() {
        stored.job.inputs = fingerprint_inputs(&stored)?;
    }
    let checksum = checksum_of(&stored);
    let text =
        serde_json::to_vec_pretty(&StoredManifestOut { manifest: &stored, checksum }).expect("manifest serialises");
    let path = manifest_path(dir, m.checkpoint);
    let tmp = path.with_extension("json.tmp");
    remove_name(&tmp)?;
    let mut f = crate::sys::create_new_nofollow(&tmp).map_err(io(&tmp, "create"))?;
    let written = write(&mut f, &text)
        .map_err(io(&tmp, "write"))
        .and_then(|()| f.sync_data().map_err(io(&tmp, "fdatasync")))
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(io(&path, "rename")));
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(dir)
}

/// Unlinks `path` if it exists; never opens it (a symlink is removed, not followed).
fn remove_name(path: &Path) -> Result<(), CheckpointError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, "remove stale temp file")(e)),
    }
}

/// Keeps the newest `retained` manifests and deletes bucket copies none of them uses.
pub fn collect_garbage(dir: &Path, retained: u32) -> Result<(), CheckpointError> {
    let all = list(dir)?;
    let mut keep_files = std::collections::HashSet::new();
    let mut kept = 0;
    for n in &all {
        if kept < retained as usize {
            match read_manifest(dir, *n) {
                Ok(m) => {
                    for s in &m.shards {
                        for b in &s.buckets {
                            for f in b.files() {
                                keep_files.insert(dir.join(f));
                            }
                        }
                    }
                    kept += 1;
                }
                // Keep an unreadable manifest's neighbours; never delete on a guess.
                Err(_) => return Ok(()),
            }
        } else {
            let p = manifest_path(dir, *n);
            std::fs::remove_file(&p).map_err(io(&p, "remove old manifest"))?;
        }
    }
    // Temp files of manifests at or below the newest (a crash or a failed write left
    // them): unlinked by name. A newer one may be the manifest being written.
    let newest = all.first().copied().unwrap_or(0);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let n =
                name.strip_prefix("chk-").and_then(|r| r.strip_suffix(".json.tmp")).and_then(|n| n.parse::<u64>().ok());
            if n.is_some_and(|n| n <= newest) {
                remove_name(&e.path())?;
            }
        }
    }
    let state = dir.join("state");
    let Ok(shards) = std::fs::read_dir(&state) else { return Ok(()) };
    for sd in shards.flatten() {
        let Ok(files) = std::fs::read_dir(sd.path()) else { continue };
        for f in files.flatten() {
            let p = f.path();
            if p.extension().is_some_and(|x| x == "pack") && !keep_files.contains(&p) {
                // A copy of the checkpoint in progress is newer than every manifest:
                // only files named for a checkpoint at or below the newest are collected.
                let made_by = writer::pack_checkpoint(&p).unwrap_or(u64::MAX);
                if made_by <= newest {
                    std::fs::remove_file(&p).map_err(io(&p, "remove unreferenced state"))?;
                }
            }
        }
    }
    Ok(())
}

/// `weft checkpoints list DIR`: one line per checkpoint.
pub fn describe(dir: &Path, check: bool) -> Result<(String, bool), CheckpointError> {
    let mut s = String::new();
    let mut all_ok = true;
    let ns = list(dir)?;
    if ns.is_empty() {
        s += &format!("no checkpoints in {}\n", dir.display());
    }
    for n in ns {
        let r = if check { verify(dir, n) } else { read_manifest(dir, n) };
        match r {
            Ok(m) => {
                let files: usize = m.shards.iter().map(|s| s.buckets.len()).sum();
                let bytes: u64 = m.shards.iter().flat_map(|s| &s.buckets).map(|b| b.bytes).sum();
                let rows: u64 = m.shards.iter().map(|s| s.counters.rows_in[0] + s.counters.rows_in[1]).sum();
                s += &format!(
                    "checkpoint {n:>6}  {}  shards {}  rows read {rows}  state files {files}  state bytes {bytes}{}{}\n",
                    if m.finished { "finished" } else { "running " },
                    m.job.shards,
                    if check { "  verified" } else { "" },
                    if m.format == MANIFEST_FORMAT_LEGACY { "  legacy (no checksum)" } else { "" }
                );
            }
            Err(e) => {
                all_ok = false;
                s += &format!("checkpoint {n:>6}  INVALID: {e}\n");
            }
        }
    }
    Ok((s, all_ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(partitions: Vec<String>) -> JobShape {
        JobShape {
            shards: 1,
            left_name: "l".into(),
            right_name: "r".into(),
            left_fields: Vec::new(),
            right_fields: Vec::new(),
            left_key: vec![0],
            right_key: vec![0],
            left_time: None,
            right_time: None,
            schema_versions: [1, 1],
            kind: JoinKind::Inner,
            lower_ms: 0,
            upper_ms: 10,
            max_out_of_orderness_ms: 0,
            allowed_lateness_ms: 0,
            state_bucket_ms: 1000,
            partitions,
            output_format: Some(Format::Csv),
            inputs: Vec::new(),
        }
    }

    /// A manifest of one shard reading `input` (a CSV file) up to byte `byte`.
    fn manifest(n: u64, input: &Path, byte: u64) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            checkpoint: n,
            finished: false,
            created_unix_ms: 1_700_000_000_000,
            job: shape(vec![input.display().to_string()]),
            routing: Some(crate::router::ROUTING.into()),
            shards: vec![ShardSnapshot {
                shard: 0,
                watermark: -5,
                marks: vec![MarkState::At { ts: 7 }],
                sources: vec![SourceState {
                    plan_index: 0,
                    name: input.display().to_string(),
                    position: SourcePos::Csv { byte, line: 3, record: 2 },
                    done: false,
                    clocks: [Some(ClockState { max_ts: Some(9), done: false }), None],
                }],
                buckets: Vec::new(),
                base_buckets: [Some(0), None],
                counters: ShardCounters::default(),
            }],
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in.csv");
        std::fs::write(&input, "k,ts\n1,5\n2,9\n").unwrap();
        (d, input)
    }

    #[test]
    fn a_written_manifest_reads_back_with_its_input_fingerprint() {
        let (d, input) = setup();
        write_manifest(d.path(), &manifest(1, &input, 9)).unwrap();
        let m = read_manifest(d.path(), 1).unwrap();
        assert_eq!(m.shards[0].sources[0].position, SourcePos::Csv { byte: 9, line: 3, record: 2 });
        assert_eq!(m.job.inputs.len(), 1);
        assert_eq!(m.job.inputs[0].print.bytes, 9);
        let text = std::fs::read_to_string(manifest_path(d.path(), 1)).unwrap();
        assert!(text.contains("\"checksum\": \"crc32:"), "{text}");
        assert_eq!(m.job.mismatch(&shape(m.job.partitions.clone())), None, "input unchanged");
    }

    #[test]
    fn a_flipped_digit_fails_the_checksum() {
        let (d, input) = setup();
        write_manifest(d.path(), &manifest(1, &input, 9)).unwrap();
        let p = manifest_path(d.path(), 1);
        let text = std::fs::read_to_string(&p).unwrap();
        let edited = text.replacen("\"byte\": 9", "\"byte\": 8", 1);
        assert_ne!(text, edited);
        std::fs::write(&p, edited).unwrap();
        let e = read_manifest(d.path(), 1).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("chk-000000000001.json"), "{e}");
        // Reformatting keeps the checksum valid: it covers the values, not the layout.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
        read_manifest(d.path(), 1).unwrap();
    }

    #[test]
    fn legacy_manifests_without_checksum_are_read_and_new_ones_need_it() {
        let (d, input) = setup();
        let mut m = manifest(1, &input, 9);
        m.format = MANIFEST_FORMAT_LEGACY;
        m.job.output_format = None;
        std::fs::write(manifest_path(d.path(), 1), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        let back = read_manifest(d.path(), 1).unwrap();
        assert_eq!(back.format, MANIFEST_FORMAT_LEGACY);
        assert!(describe(d.path(), false).unwrap().0.contains("legacy"));
        let m2 = manifest(2, &input, 9);
        std::fs::write(manifest_path(d.path(), 2), serde_json::to_vec_pretty(&m2).unwrap()).unwrap();
        assert!(read_manifest(d.path(), 2).unwrap_err().to_string().contains("no checksum"));
    }

    #[test]
    fn output_format_and_edited_inputs_are_shape_mismatches() {
        let (d, input) = setup();
        write_manifest(d.path(), &manifest(1, &input, 9)).unwrap();
        let m = read_manifest(d.path(), 1).unwrap();
        let mut now = shape(m.job.partitions.clone());
        now.output_format = Some(Format::Jsonl);
        let why = m.job.mismatch(&now).unwrap();
        assert!(why.contains("output.format was \"csv\", is now \"jsonl\""), "{why}");
        let now = shape(m.job.partitions.clone());
        std::fs::write(&input, "k,ts\n1,5\n2,9\n3,10\n").unwrap();
        assert_eq!(m.job.mismatch(&now), None, "appended after the position");
        std::fs::write(&input, "k,ts\n7,5\n2,9\n").unwrap();
        let why = m.job.mismatch(&now).unwrap();
        assert!(why.contains("in.csv") && why.contains("bytes 0..9 differ"), "{why}");
        std::fs::write(&input, "k,ts\n").unwrap();
        assert!(m.job.mismatch(&now).unwrap().contains("shorter than the checkpoint's position 9"));
    }

    #[test]
    fn a_symlink_at_the_temp_name_is_removed_not_followed() {
        let (d, input) = setup();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let tmp = manifest_path(d.path(), 1).with_extension("json.tmp");
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_manifest(d.path(), &manifest(1, &input, 9)).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(manifest_path(d.path(), 1)).unwrap().file_type().is_symlink());
        read_manifest(d.path(), 1).unwrap();
    }

    #[test]
    fn a_failed_manifest_write_leaves_no_temp_file() {
        let (d, input) = setup();
        let full = |_: &mut File, _: &[u8]| Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        let e = write_manifest_with(d.path(), &manifest(1, &input, 9), full).unwrap_err();
        assert!(e.to_string().contains("chk-000000000001.json.tmp: write"), "{e}");
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(!left.iter().any(|n| n.to_string_lossy().ends_with(".tmp")), "{left:?}");
        assert!(list(d.path()).unwrap().is_empty());
    }

    #[test]
    fn gc_removes_stale_temp_files_up_to_the_newest_manifest() {
        let (d, input) = setup();
        std::fs::write(manifest_path(d.path(), 1).with_extension("json.tmp"), b"").unwrap();
        std::fs::write(manifest_path(d.path(), 9).with_extension("json.tmp"), b"").unwrap();
        write_manifest(d.path(), &manifest(2, &input, 9)).unwrap();
        collect_garbage(d.path(), 3).unwrap();
        assert!(!manifest_path(d.path(), 1).with_extension("json.tmp").exists());
        assert!(manifest_path(d.path(), 9).with_extension("json.tmp").exists(), "may be in progress");
    }
}

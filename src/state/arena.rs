//! Append-only buffers that hold state records: on the heap, or in a memory-mapped
//! file (an *arena*) under `engine.state_dir`. A buffer also keeps the bookkeeping of
//! its checkpoint copy (what changed since, see [`super::copy`]) behind methods.
//!
//! Arena file layout:
//! ```text
//!   0..64    header: b"WEFTARN\x01", u32 version, u8 side, 3 pad, i64 bucket, i64 bucket_ms
//!   64..     records (see record.rs), back to back, each 8-byte aligned
//!   ...      zeros up to the file's length (a zero header marks the end)
//! ```
//! Space is reserved with `posix_fallocate` before it is written, so a full disk is
//! an error from [`Buffer::reserve`] naming the file, never a SIGBUS on a mapped write.
//!
//! Invariants: `used <= capacity`; `[64, used)` holds only whole records written by
//! [`Buffer::append`] (or checked by [`validate`]); a [`Root`] handed out by this buffer
//! stays valid until the buffer is dropped.
//!
//! Unsafe here (the state store's other unsafe is in index_alloc.rs, its table memory,
//! and prefetch.rs, a cache hint): `mmap`/`mremap`/`madvise(DONTNEED)` of arena files,
//! which rely on the state directory being private to the job (nothing else changes a
//! mapped file); and the unchecked rkyv reads of [`Buffer::get`] and [`read_record`],
//! which rely on [`Root`]: only this file makes one, for a record it wrote or
//! validated, except [`Root::from_index`], the one place that trusts a stored `u32`.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, RemapOptions};
use rkyv::rancor;

use super::copy::{BucketCopy, CopyJob, Segment, WrittenCopy};
use super::record::{
    record_bytes_max, ArchivedRecord, Record, HASH_OFFSET, MATCHED_OFFSET, RECORD_HEADER_BYTES, RECORD_TAG, ROOT_BYTES,
};
use crate::event::Side;

pub const ARENA_MAGIC: &[u8; 8] = b"WEFTARN\x01";
pub const ARENA_VERSION: u32 = 1;
pub const ARENA_HEADER_BYTES: usize = 64;
/// First size of an arena file; it doubles as it fills.
pub const ARENA_BYTES_INITIAL: usize = 1 << 20;
/// First size of a heap buffer.
const HEAP_BYTES_INITIAL: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state arena {path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    #[error("state arena {path}: corrupt at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("state index: {reason}")]
    Index { reason: String },
    #[error(
        "state bucket of side {} at {bucket}: more than {max} bytes; lower engine.state_bucket_ms",
        *side as u8
    )]
    BucketFull { side: Side, bucket: i64, max: usize },
    #[error("checkpoint pack {path}: a stored row cannot be migrated to the new schema: {reason}")]
    Migrate { path: PathBuf, reason: String },
}

/// The position of a record's root in the buffer that made it. Only this file makes
/// one: [`Buffer::append`] for the record it wrote, [`validate`] and [`Buffer::roots`]
/// for records they found whole, so [`Buffer::get`] reads a record without checking it
/// again. A `u32` wrapper: free on the probe path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Root(u32);

impl Root {
    /// The position, as the index and a checkpoint's matched list store it.
    #[inline]
    pub fn pos(self) -> u32 {
        self.0
    }

    /// The root that [`Root::pos`] gave `pos`: the one place a stored `u32` is trusted
    /// as a root (the index keeps roots as `u32`, see `SideStore::get`).
    ///
    /// # Safety
    /// `pos` is the `pos()` of a `Root` made by the buffer that this one will be used
    /// with, and that buffer is still alive (it was not dropped and replaced).
    #[inline]
    pub(super) unsafe fn from_index(pos: u32) -> Root {
        Root(pos)
    }
}

impl std::fmt::Display for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A mapped arena file.
pub struct ArenaFile {
    path: PathBuf,
    file: File,
    map: MmapMut,
}

fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { path, op, source }
}

fn fallocate(file: &File, path: &Path, len: usize) -> Result<(), StateError> {
    crate::sys::reserve(file, len as u64).map_err(io(path, "reserve space"))
}

impl ArenaFile {
    /// Creates a new arena file (it must not exist) with its header.
    pub fn create(path: &Path, side: Side, bucket: i64, bucket_ms: i64) -> Result<ArenaFile, StateError> {
        let file = crate::sys::create_new_nofollow(path).map_err(io(path, "create"))?;
        fallocate(&file, path, ARENA_BYTES_INITIAL)?;
        // SAFETY: the file was just created by us and is only ever changed through this
        // mapping (the state directory is private to the job); its length is fixed by
        // fallocate above and only grows, under `&mut self`, in `grow`.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io(path, "mmap"))?;
        // Probes jump around: readahead would only pull in pages nobody asked for.
        let _ = map.advise(memmap2::Advice::Random);
        let h = &mut map[..ARENA_HEADER_BYTES];
        h[0..8].copy_from_slice(ARENA_MAGIC);
        h[8..12].copy_from_slice(&ARENA_VERSION.to_le_bytes());
        h[12] = side as u8;
        h[16..24].copy_from_slice(&bucket.to_le_bytes());
        h[24..32].copy_from_slice(&bucket_ms.to_le_bytes());
        Ok(ArenaFile { path: path.to_path_buf(), file, map })
    }

    /// Opens an existing arena and checks every record; returns it with the root
    /// positions of its records and the bytes in use. Any damage is an error naming
    /// the file and the offset.
    pub fn open(path: &Path) -> Result<(ArenaFile, Vec<Root>, usize), StateError> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io(path, "open"))?;
        // SAFETY: as in `create`: the file belongs to this job's state directory.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(io(path, "mmap"))?;
        let (roots, used) = validate(&map[..], path)?;
        Ok((ArenaFile { path: path.to_path_buf(), file, map }, roots, used))
    }

    /// Creates an arena whose records are a copy of `bytes` (another arena's image),
    /// checks the copy, and returns it with its root positions and bytes in use. A copy
    /// that fails the check is deleted.
    fn create_from(
        path: &Path,
        bytes: &[u8],
        name_for_errors: &Path,
    ) -> Result<(ArenaFile, Vec<Root>, usize), StateError> {
        let _ = std::fs::remove_file(path);
        let file = crate::sys::create_new_nofollow(path).map_err(io(path, "create"))?;
        fallocate(&file, path, bytes.len().max(ARENA_BYTES_INITIAL).next_power_of_two())?;
        // SAFETY: as in `create`.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io(path, "mmap"))?;
        let _ = map.advise(memmap2::Advice::Random);
        map[..bytes.len()].copy_from_slice(bytes);
        // Checked in the (page-aligned) mapping, and only its first `bytes.len()` bytes:
        // the zeros after them would hide a truncated last record.
        match validate(&map[..bytes.len()], name_for_errors) {
            Ok((roots, used)) => Ok((ArenaFile { path: path.to_path_buf(), file, map }, roots, used)),
            Err(e) => {
                drop((map, file));
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    fn grow(&mut self, min_len: usize) -> Result<(), StateError> {
        let new_len = min_len.next_power_of_two().max(self.map.len() * 2);
        fallocate(&self.file, &self.path, new_len)?;
        // SAFETY: the file is now at least `new_len` bytes (fallocate extends it); no
        // reference into the old mapping survives this `&mut self` call, since callers
        // hold only offsets.
        unsafe { self.map.remap(new_len, RemapOptions::new().may_move(true)) }.map_err(io(&self.path, "mremap"))?;
        let _ = self.map.advise(memmap2::Advice::Random);
        Ok(())
    }

    /// Drops this process's page mappings of the arena; the data stays in the file
    /// and the page cache and is faulted back in on the next read.
    pub fn release_resident(&self) {
        // SAFETY: MADV_DONTNEED on a shared file mapping discards only page-table
        // entries; the file keeps every byte written, so later reads see the same data.
        let _ = unsafe { self.map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Checks the header and every record of an arena image; returns the records' root
/// positions and the bytes in use. Errors name `path` and the offset.
pub fn validate(map: &[u8], path: &Path) -> Result<(Vec<Root>, usize), StateError> {
    let len = map.len();
    let corrupt =
        |offset: usize, reason: String| StateError::Corrupt { path: path.to_path_buf(), offset: offset as u64, reason };
    if len < ARENA_HEADER_BYTES {
        return Err(corrupt(0, format!("{len} bytes, shorter than the {ARENA_HEADER_BYTES}-byte header (truncated)")));
    }
    if &map[0..8] != ARENA_MAGIC {
        return Err(corrupt(0, "not a weft arena (bad magic)".into()));
    }
    let version = u32::from_le_bytes(map[8..12].try_into().unwrap());
    if version != ARENA_VERSION {
        return Err(corrupt(8, format!("arena version {version}, this weft reads version {ARENA_VERSION}")));
    }
    let mut roots = Vec::new();
    let mut at = ARENA_HEADER_BYTES;
    while at + RECORD_HEADER_BYTES <= len {
        let plen = u32::from_le_bytes(map[at..at + 4].try_into().unwrap()) as usize;
        let tag = u32::from_le_bytes(map[at + 4..at + 8].try_into().unwrap());
        if plen == 0 && tag == 0 {
            break;
        }
        if tag != RECORD_TAG {
            return Err(corrupt(at, format!("bad record tag {tag:#x}")));
        }
        let start = at + RECORD_HEADER_BYTES;
        let end = start + plen;
        if plen < ROOT_BYTES || end > len {
            return Err(corrupt(at, format!("record of {plen} bytes runs past the end ({len} bytes): truncated")));
        }
        rkyv::access::<ArchivedRecord, rancor::Error>(&map[start..end])
            .map_err(|e| corrupt(at, format!("record fails validation: {e}")))?;
        roots.push(Root((end - ROOT_BYTES) as u32));
        at = end.next_multiple_of(8);
    }
    Ok((roots, at.min(len)))
}

/// Reads the record whose root is at `root` of an arena image into `scratch`, through
/// `read_at(dst, offset)` (`pread` on the arena file; a slice in tests, so that Miri runs
/// this), checks it, and sets its `matched` flag in the copy when `matched`. Errors name
/// `path`.
///
/// A record's key and row lie just before its root: a window of [`COLD_READ_BYTES`] before
/// the root's end usually holds all of it; if not, validation fails and a window 8 times
/// wider is read, until the arena's header.
fn read_record<'s>(
    root: Root,
    matched: bool,
    scratch: &'s mut rkyv::util::AlignedVec<16>,
    path: &Path,
    read_at: impl Fn(&mut [u8], u64) -> std::io::Result<()>,
) -> Result<&'s ArchivedRecord<'static>, StateError> {
    let end = root.0 as usize + ROOT_BYTES;
    let mut window = COLD_READ_BYTES;
    let (start, len) = loop {
        // `end` and `window` are multiples of 8, so the copy keeps every field's
        // alignment (at most 8) relative to the 16-aligned scratch.
        let start = end.saturating_sub(window).max(ARENA_HEADER_BYTES);
        let len = end - start;
        scratch.clear();
        scratch.resize(len, 0);
        read_at(&mut scratch[..], start as u64).map_err(io(path, "read"))?;
        match rkyv::access::<ArchivedRecord, rancor::Error>(&scratch[..]) {
            Ok(_) => break (start, len),
            Err(_) if start > ARENA_HEADER_BYTES => window *= 8,
            Err(e) => {
                return Err(StateError::Corrupt {
                    path: path.to_path_buf(),
                    offset: root.0 as u64,
                    reason: format!("record fails validation: {e}"),
                })
            }
        }
    };
    if matched {
        scratch[root.0 as usize - start + MATCHED_OFFSET] = 1; // a bool stays valid
    }
    // SAFETY: these exact `len` bytes were validated as an `ArchivedRecord` just above
    // (since then only the `matched` bool was set, to another valid value) and are not
    // changed before the returned borrow of `scratch` ends.
    Ok(unsafe { rkyv::access_unchecked::<ArchivedRecord<'static>>(&scratch[..len]) })
}

enum Backing {
    Heap(rkyv::util::AlignedVec<16>),
    File(ArenaFile),
}

/// An append-only record buffer: heap or arena file.
pub(crate) struct Buffer {
    backing: Backing,
    used: usize,
    /// Appended to since the last full checkpoint copy.
    dirty: bool,
    /// Roots whose `matched` flag was set since the last full copy (a checkpoint
    /// stores these instead of copying an unchanged bucket again).
    flips: Vec<Root>,
    /// `flips` grew since the last checkpoint.
    flips_dirty: bool,
    /// The checkpoint copy that holds this buffer's rows as of its last clean point.
    snapshot: Option<BucketCopy>,
    /// What was done to a mapped buffer since its last `release_resident`, for
    /// [`Buffer::resident_estimate`].
    appended: usize,
    reads: Cell<u64>,
    /// A mapped buffer whose pages were released: records are read with `pread`
    /// ([`Buffer::read_cold`]) and flags kept in `cold_flips`, so reads no longer
    /// fault pages back into this process (see budget.rs). Appends still go through
    /// the mapping (they are counted in `appended` and released again).
    cold: bool,
    /// Records matched while cold whose flag is not yet in the file (each is also in
    /// `flips`): a 1-byte `pwrite` per match cost more than the read (ext4's buffered
    /// write path), so flags are written in bulk when the bucket is read through its
    /// mapping again ([`Buffer::apply_cold_flips`]).
    cold_flips: ahash::AHashSet<Root>,
}

/// First window `read_cold` reads before a record's root end; most records fit in it.
const COLD_READ_BYTES: usize = 256;

/// Pages the kernel maps around a read fault on a file mapping (fault-around, 64 KiB
/// by default): what one read of a released page can bring back.
const FAULT_AROUND_BYTES: u64 = 64 << 10;

impl Buffer {
    pub fn heap() -> Buffer {
        let mut v = rkyv::util::AlignedVec::<16>::with_capacity(HEAP_BYTES_INITIAL);
        v.resize(ARENA_HEADER_BYTES, 0);
        Buffer::heap_in(v)
    }

    /// A new, empty heap buffer in the storage of a dropped one ([`Buffer::into_spare`]):
    /// its bytes past the header are stale and never read (reads stop at `used`, and
    /// every append writes its record whole, padding included), so it is not zeroed
    /// again, and its pages are already faulted in.
    pub fn heap_in(mut v: rkyv::util::AlignedVec<16>) -> Buffer {
        if v.len() < ARENA_HEADER_BYTES {
            v.resize(ARENA_HEADER_BYTES, 0);
        }
        v[..8].copy_from_slice(ARENA_MAGIC);
        v[8..12].copy_from_slice(&ARENA_VERSION.to_le_bytes());
        Buffer::with(Backing::Heap(v), ARENA_HEADER_BYTES, true)
    }

    pub fn file(f: ArenaFile) -> Buffer {
        Buffer::with(Backing::File(f), ARENA_HEADER_BYTES, true)
    }

    /// An opened arena with `used` bytes of checked records. Only tests reopen an arena
    /// today: recovery restores buckets from checkpoint copies ([`Buffer::restore`]).
    #[cfg(test)]
    pub fn reopened(f: ArenaFile, used: usize) -> Buffer {
        Buffer::with(Backing::File(f), used, true)
    }

    /// A buffer over `backing` with `used` bytes of records, all of them counted as
    /// touched (resident) since no release.
    fn with(backing: Backing, used: usize, dirty: bool) -> Buffer {
        Buffer {
            backing,
            used,
            dirty,
            flips: Vec::new(),
            flips_dirty: false,
            snapshot: None,
            appended: used,
            reads: Cell::new(0),
            cold: false,
            cold_flips: ahash::AHashSet::new(),
        }
    }

    /// A buffer holding a checked copy of `bytes` (an arena image from a checkpoint):
    /// an arena file at `path`, or the heap when `path` is `None`. Returns it with the
    /// root positions of its records.
    ///
    /// The check runs on the copy, not on `bytes`: rkyv's validation rejects values
    /// that are misaligned in memory, and `bytes` (a `Vec<u8>` read from a checkpoint)
    /// promises no alignment, while the copy is 16-aligned (heap) or page-aligned (file).
    /// The checked bytes are then also exactly the bytes `get` reads.
    pub fn restore(
        bytes: &[u8],
        path: Option<&Path>,
        name_for_errors: &Path,
    ) -> Result<(Buffer, Vec<Root>), StateError> {
        let (backing, roots, used) = match path {
            None => {
                let mut v = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len().max(HEAP_BYTES_INITIAL));
                v.extend_from_slice(bytes);
                let (roots, used) = validate(&v, name_for_errors)?;
                (Backing::Heap(v), roots, used)
            }
            Some(p) => {
                let (f, roots, used) = ArenaFile::create_from(p, bytes, name_for_errors)?;
                (Backing::File(f), roots, used)
            }
        };
        let b = Buffer::with(backing, used, false);
        Ok((b, roots))
    }

    /// A heap buffer that is `bytes` itself (already 16-aligned, so checked in place,
    /// without the copy [`Buffer::restore`] makes), with its records' roots.
    pub fn restore_owned(
        bytes: rkyv::util::AlignedVec<16>,
        name_for_errors: &Path,
    ) -> Result<(Buffer, Vec<Root>), StateError> {
        let (roots, used) = validate(&bytes, name_for_errors)?;
        Ok((Buffer::with(Backing::Heap(bytes), used, false), roots))
    }

    /// Copies `dst.len()` bytes from offset `off` (for a checkpoint copy); a cold buffer
    /// is read with `pread`, not through its released mapping. Its flags set while cold
    /// are in the copy only after [`Buffer::apply_cold_flips`].
    pub fn copy_out(&self, off: usize, dst: &mut [u8]) -> Result<(), StateError> {
        match &self.backing {
            Backing::File(f) if self.cold => f.file.read_exact_at(dst, off as u64).map_err(io(&f.path, "read")),
            _ => {
                dst.copy_from_slice(&self.bytes()[off..off + dst.len()]);
                Ok(())
            }
        }
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::Heap(v) => v.as_slice(),
            Backing::File(f) => &f.map[..],
        }
    }

    #[inline]
    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.backing {
            Backing::Heap(v) => v.as_mut_slice(),
            Backing::File(f) => &mut f.map[..],
        }
    }

    /// Makes room for `extra` more bytes.
    fn reserve(&mut self, extra: usize) -> Result<(), StateError> {
        let need = self.used + extra;
        match &mut self.backing {
            Backing::Heap(v) => {
                if v.len() < need {
                    let new_len = need.next_power_of_two();
                    v.reserve(new_len - v.len());
                    v.resize(new_len, 0);
                }
            }
            Backing::File(f) => {
                if f.map.len() < need {
                    f.grow(need)?;
                }
            }
        }
        Ok(())
    }

    /// Appends a record; returns its root.
    pub fn append(&mut self, rec: &Record) -> Result<Root, StateError> {
        let max = record_bytes_max(rec.key.len(), rec.row.len());
        self.reserve(max)?;
        let start = self.used;
        let payload = start + RECORD_HEADER_BYTES;
        let buf = self.bytes_mut();
        // The reservation holds the whole record (`record_bytes_max`).
        let end = super::record::write_archived(buf, payload, rec);
        buf[start..start + 4].copy_from_slice(&((end - payload) as u32).to_le_bytes());
        buf[start + 4..start + 8].copy_from_slice(&RECORD_TAG.to_le_bytes());
        let next = end.next_multiple_of(8);
        buf[end..next].fill(0);
        self.appended += next - start;
        self.used = next;
        self.dirty = true;
        debug_assert!(end - ROOT_BYTES <= u32::MAX as usize);
        Ok(Root((end - ROOT_BYTES) as u32))
    }

    /// Appends a record given as its archived bytes (a payload of another buffer, from
    /// [`Buffer::payload`], or made by `record::archive_into`), with its hash and
    /// `matched` set to these; returns its root. This is a copy, not a serialisation:
    /// what a restore that re-distributes rows does instead of [`Buffer::append`].
    ///
    /// The copied bytes are checked once at their new place (as `validate` checks a
    /// restored arena), so a `Root` of this buffer still names only a checked record
    /// whatever the caller passed; a payload that is no record is an error naming
    /// `name_for_errors`.
    pub fn append_archived(
        &mut self,
        payload: &[u8],
        hash: u64,
        matched: bool,
        name_for_errors: &Path,
    ) -> Result<Root, StateError> {
        let corrupt = |offset: usize, reason: String| StateError::Corrupt {
            path: name_for_errors.to_path_buf(),
            offset: offset as u64,
            reason,
        };
        if payload.len() < ROOT_BYTES || payload.len() > u32::MAX as usize {
            return Err(corrupt(0, format!("a moved record of {} bytes is no record", payload.len())));
        }
        self.reserve(RECORD_HEADER_BYTES + payload.len().next_multiple_of(8))?;
        let start = self.used;
        let payload_at = start + RECORD_HEADER_BYTES;
        let end = payload_at + payload.len();
        let root = end - ROOT_BYTES;
        let next = end.next_multiple_of(8);
        let buf = self.bytes_mut();
        buf[start..start + 4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        buf[start + 4..start + 8].copy_from_slice(&RECORD_TAG.to_le_bytes());
        buf[payload_at..end].copy_from_slice(payload);
        buf[root + HASH_OFFSET..root + HASH_OFFSET + 8].copy_from_slice(&hash.to_le_bytes());
        buf[root + MATCHED_OFFSET] = matched as u8;
        buf[end..next].fill(0);
        if let Err(e) = rkyv::access::<ArchivedRecord, rancor::Error>(&buf[payload_at..end]) {
            buf[start..next].fill(0);
            return Err(corrupt(0, format!("a moved record fails validation: {e}")));
        }
        self.appended += next - start;
        self.used = next;
        self.dirty = true;
        debug_assert!(root <= u32::MAX as usize);
        Ok(Root(root as u32))
    }

    /// The archived bytes of the record at `root`, whose predecessor in this buffer is
    /// the record at `prev` (`None`: it is the first), as [`Buffer::roots`] yields them.
    pub fn payload(&self, prev: Option<Root>, root: Root) -> &[u8] {
        let start = match prev {
            None => ARENA_HEADER_BYTES,
            Some(p) => (p.0 as usize + ROOT_BYTES).next_multiple_of(8),
        };
        let end = root.0 as usize + ROOT_BYTES;
        debug_assert_eq!(
            self.record_len_at(start),
            end - start - RECORD_HEADER_BYTES,
            "prev is not root's predecessor"
        );
        &self.bytes()[start + RECORD_HEADER_BYTES..end]
    }

    /// The record whose root is at `root`.
    #[inline]
    pub fn get(&self, root: Root) -> &ArchivedRecord<'static> {
        self.reads.set(self.reads.get() + 1);
        let root = root.0 as usize;
        let bytes = &self.bytes()[..root + ROOT_BYTES];
        // SAFETY: a `Root` of this buffer is made only for a record that `append` wrote
        // or that `validate` (or `roots`) found whole here; the bytes before it were
        // written by rkyv and never change except the `matched` byte, which is a valid
        // bool either way. (The slice above is bounds-checked: a root past the end
        // panics.)
        unsafe { rkyv::access_unchecked::<ArchivedRecord<'static>>(bytes) }
    }

    /// The roots of the records in this buffer, in order (a walk of the record
    /// headers, which `append` or `validate` made whole).
    pub fn roots(&self) -> impl Iterator<Item = Root> + '_ {
        let mut at = ARENA_HEADER_BYTES;
        std::iter::from_fn(move || {
            if at >= self.used {
                return None;
            }
            let plen = self.record_len_at(at);
            let end = at + RECORD_HEADER_BYTES + plen;
            at = end.next_multiple_of(8);
            Some(Root((end - ROOT_BYTES) as u32))
        })
    }

    /// The record whose root is at `root`, read from the file into `scratch` without
    /// touching the mapping (for a cold buffer; works on any arena). The bytes are
    /// validated, so damage in the file is an error naming it, not undefined behaviour.
    /// See [`read_record`].
    pub fn read_cold<'s>(
        &self,
        root: Root,
        scratch: &'s mut rkyv::util::AlignedVec<16>,
    ) -> Result<&'s ArchivedRecord<'static>, StateError> {
        let Backing::File(f) = &self.backing else {
            // Heap buffers are never cold; read them in place.
            unreachable!("read_cold on a heap buffer");
        };
        let matched = self.cold_flips.contains(&root);
        read_record(root, matched, scratch, &f.path, |dst, at| f.file.read_exact_at(dst, at))
    }

    /// Whether reads of this buffer go through [`Buffer::read_cold`].
    #[inline]
    pub fn is_cold(&self) -> bool {
        self.cold
    }

    /// Sets the `matched` flag of the record at `root` (in place; for a cold buffer, in
    /// `cold_flips` until [`Buffer::apply_cold_flips`]).
    #[inline]
    pub fn set_matched(&mut self, root: Root) {
        if self.cold {
            if !self.cold_flips.insert(root) {
                return;
            }
        } else {
            let at = root.0 as usize + MATCHED_OFFSET;
            let b = self.bytes_mut();
            if b[at] != 0 {
                return;
            }
            b[at] = 1;
        }
        self.flips.push(root);
        self.flips_dirty = true;
    }

    /// Writes the flags set while cold into the records (through the mapping: for a
    /// bucket about to be read whole, or copied whole by a checkpoint) and frees the set.
    pub fn apply_cold_flips(&mut self) {
        let roots = std::mem::take(&mut self.cold_flips);
        let b = self.bytes_mut();
        for root in roots {
            b[root.0 as usize + MATCHED_OFFSET] = 1;
        }
    }

    /// Heap bytes of the cold flags not yet applied.
    pub fn cold_flips_bytes(&self) -> usize {
        self.cold_flips.capacity() * (std::mem::size_of::<u32>() + 1)
    }

    pub fn used(&self) -> usize {
        self.used
    }

    /// Payload length of the record whose header is at `at` (a record boundary).
    fn record_len_at(&self, at: usize) -> usize {
        u32::from_le_bytes(self.bytes()[at..at + 4].try_into().unwrap()) as usize
    }

    /// Bytes this buffer holds (heap capacity, or file length).
    pub fn capacity(&self) -> usize {
        self.bytes().len()
    }

    /// Drops the resident pages of a mapped buffer; from now on it is cold (records are
    /// read with `pread`). No-op on the heap.
    pub fn release_resident(&mut self) {
        if let Backing::File(f) = &self.backing {
            f.release_resident();
            self.cold = true;
        }
        self.appended = 0;
        self.reads.set(0);
    }

    /// An upper estimate of this process's resident bytes of a mapped buffer: what was
    /// appended, plus a fault-around window per record read, since the last release
    /// (0 on the heap: not governed by the budget).
    pub fn resident_estimate(&self) -> u64 {
        match &self.backing {
            Backing::File(f) => {
                let est = self.appended as u64 + self.reads.get().saturating_mul(FAULT_AROUND_BYTES);
                est.min(f.map.len() as u64)
            }
            Backing::Heap(_) => 0,
        }
    }

    /// The checkpoint copy of this buffer, for a checkpoint writing into `pack`: the
    /// existing copy if no row was appended since it was made (with a job for the
    /// matched list when rows matched since the last checkpoint), else a new full copy
    /// and its job. Unchanged buffers cost a clone of their copy's description.
    pub fn plan_copy(&mut self, side: Side, bucket: i64, pack: &str) -> (BucketCopy, Option<CopyJob>) {
        match &mut self.snapshot {
            Some(copy) if !self.dirty => {
                let mut job = None;
                if self.flips_dirty {
                    // Unchanged rows, new matches: write only the matched list.
                    let data: Vec<u8> = self.flips.iter().flat_map(|r| r.0.to_le_bytes()).collect();
                    copy.flips = Some(Segment::unwritten(pack, data.len() as u64));
                    job = Some(CopyJob::Flips { side, bucket, data });
                    self.flips_dirty = false;
                }
                (copy.clone(), job)
            }
            _ => {
                // The copy must hold every flag: it replaces the flip list.
                self.apply_cold_flips();
                let copy = BucketCopy::unwritten(side, bucket, pack, self.used as u64);
                self.snapshot = Some(copy.clone());
                self.dirty = false;
                self.flips.clear();
                self.flips_dirty = false;
                (copy, Some(CopyJob::Full { side, bucket, bytes: self.used }))
            }
        }
    }

    /// Records where a part of this buffer's copy was written into `pack`.
    pub fn copy_written(&mut self, pack: &str, w: &WrittenCopy) {
        if let Some(copy) = self.snapshot.as_mut() {
            copy.fill_in(pack, w);
        }
    }

    /// Writing `pack` failed: forgets what of this buffer's copy was to be in it, so
    /// that the next checkpoint writes it again (the whole copy, or the matched list).
    pub fn copy_failed(&mut self, pack: &str) {
        let Some(copy) = self.snapshot.as_mut() else { return };
        if copy.file == pack {
            self.snapshot = None;
            self.dirty = true;
        } else if copy.flips.as_ref().is_some_and(|s| s.file == pack) {
            // The cumulative list is written again next time.
            copy.flips = None;
            self.flips_dirty = true;
        }
    }

    /// This buffer was restored from `copy` (with its matched list applied through
    /// `set_matched`): that copy is current, nothing needs writing.
    pub fn restored_from(&mut self, copy: BucketCopy) {
        self.flips_dirty = false;
        self.snapshot = Some(copy);
    }

    /// Drops the buffer and, for an arena, deletes its file (space goes back to the
    /// file system).
    /// The storage of a heap buffer being dropped, for [`Buffer::heap_in`]; `None` for
    /// an arena file.
    pub fn into_spare(self) -> Option<rkyv::util::AlignedVec<16>> {
        match self.backing {
            Backing::Heap(v) => Some(v),
            Backing::File(_) => None,
        }
    }

    pub fn delete(self) -> Result<(), StateError> {
        if let Backing::File(f) = self.backing {
            let path = f.path.clone();
            drop(f);
            std::fs::remove_file(&path).map_err(io(&path, "remove"))?;
        }
        Ok(())
    }

    pub fn is_file(&self) -> bool {
        matches!(self.backing, Backing::File(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new arena file `name` in a fresh directory (kept alive by the returned guard).
    fn arena(name: &str, side: Side, bucket: i64, bucket_ms: i64) -> (tempfile::TempDir, PathBuf, Buffer) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        let b = Buffer::file(ArenaFile::create(&path, side, bucket, bucket_ms).unwrap());
        (dir, path, b)
    }

    fn rec<'a>(i: u64, key: &'a [u8], row: &'a [u8]) -> Record<'a> {
        Record { hash: i, ts: i as i64 * 10, matched: false, key, row }
    }

    #[test]
    fn archived_records_copy_whole_to_another_buffer_with_hash_and_flag_rewritten() {
        let mut a = Buffer::heap();
        let rows: Vec<(Vec<u8>, Vec<u8>)> =
            (0..50u8).map(|i| (vec![i; (i % 9) as usize], vec![i ^ 0x5a; (i as usize * 7) % 31])).collect();
        for (i, (k, r)) in rows.iter().enumerate() {
            a.append(&rec(i as u64, k, r)).unwrap();
        }
        let (_d, _p, mut b) = arena("b.arena", Side::Left, 0, 10);
        b.append(&rec(99, b"odd", b"x")).unwrap(); // the copies land at other offsets than in `a`
        let roots: Vec<Root> = a.roots().collect();
        let mut prev = None;
        let mut copied = Vec::new();
        for (i, &r) in roots.iter().enumerate() {
            let root = b.append_archived(a.payload(prev, r), 1000 + i as u64, i % 3 == 0, Path::new("t")).unwrap();
            copied.push(root);
            prev = Some(r);
        }
        for (i, &r) in copied.iter().enumerate() {
            let got = b.get(r);
            assert_eq!(got.hash.to_native(), 1000 + i as u64);
            assert_eq!(got.ts.to_native(), i as i64 * 10);
            assert_eq!(got.matched, i % 3 == 0);
            assert_eq!((got.key.get(), got.row.get()), (&rows[i].0[..], &rows[i].1[..]));
        }
        // The copy is an arena like any other: it validates whole.
        let (found, used) = validate(&b.bytes()[..b.used()], Path::new("t")).unwrap();
        assert_eq!(found.len(), 51);
        assert_eq!(used, b.used());
    }

    #[test]
    fn bytes_that_are_no_record_are_refused_and_leave_the_buffer_as_it_was() {
        let mut b = Buffer::heap();
        b.append(&rec(1, b"k", b"r")).unwrap();
        let used = b.used();
        let e = b.append_archived(&[0xff; 40], 1, false, Path::new("moved")).unwrap_err();
        assert!(e.to_string().contains("moved") && e.to_string().contains("validation"), "{e}");
        assert!(b.append_archived(&[0; 3], 1, false, Path::new("moved")).is_err());
        assert_eq!(b.used(), used);
        assert_eq!(b.roots().count(), 1);
    }

    #[test]
    fn heap_round_trip_and_matched() {
        let mut b = Buffer::heap();
        let mut roots = Vec::new();
        // Miri needs minutes for 1000 records; growth is heap_growth_moves_records_intact's job.
        let n: u64 = if cfg!(miri) { 120 } else { 1000 };
        for i in 0..n {
            let row = vec![i as u8; (i % 37) as usize];
            roots.push(b.append(&rec(i, &i.to_le_bytes(), &row)).unwrap());
        }
        b.set_matched(roots[7]);
        for (i, &r) in roots.iter().enumerate() {
            let a = b.get(r);
            assert_eq!(a.hash, i as u64);
            assert_eq!(a.ts, i as i64 * 10);
            assert_eq!(a.key.get(), &(i as u64).to_le_bytes());
            assert_eq!(a.row.len(), i % 37);
            assert_eq!(a.matched, i == 7);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "creates, mmaps and fallocates a file: syscalls Miri cannot run")]
    fn file_round_trip_reopen_and_corruption() {
        let (_dir, path, mut b) = arena("left-5.arena", Side::Left, 5, 1000);
        let mut roots = Vec::new();
        for i in 0..50_000u64 {
            roots.push(b.append(&rec(i, b"k", &[1, 2, 3])).unwrap()); // grows past 1 MiB
        }
        b.set_matched(roots[3]);
        assert!(b.capacity() > ARENA_BYTES_INITIAL);
        let used = b.used();
        drop(b);
        let (f, reroots, reused) = ArenaFile::open(&path).unwrap();
        assert_eq!(reroots, roots);
        assert_eq!(reused, used);
        let b = Buffer::reopened(f, reused);
        assert!(b.get(roots[3]).matched && !b.get(roots[4]).matched);
        drop(b);

        // Truncated in the middle of a record.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len((roots[100].pos() as u64) - 3).unwrap();
        drop(f);
        let e = ArenaFile::open(&path).err().unwrap().to_string();
        assert!(e.contains("left-5.arena") && e.contains("truncated"), "{e}");

        // A flipped byte in a record's tag.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[ARENA_HEADER_BYTES + 5] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let e = ArenaFile::open(&path).err().unwrap().to_string();
        assert!(e.contains("bad record tag") && e.contains("offset 64"), "{e}");

        // Shorter than a header.
        std::fs::write(&path, b"WEFT").unwrap();
        assert!(ArenaFile::open(&path).err().unwrap().to_string().contains("shorter than"));
    }

    #[test]
    #[cfg_attr(miri, ignore = "creates, mmaps and madvises a file: syscalls Miri cannot run")]
    fn delete_removes_the_file() {
        let (_dir, path, mut b) = arena("a.arena", Side::Right, 0, 10);
        let r = b.append(&rec(1, b"k", b"r")).unwrap();
        b.release_resident();
        assert_eq!(b.get(r).hash, 1, "released pages read back from the file");
        b.delete().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn read_record_widens_its_window_checks_and_sets_the_flag() {
        // An image in memory stands in for the file, so that Miri runs the unsafe part.
        let mut b = Buffer::heap();
        let n = if cfg!(miri) { 12 } else { 60 };
        let rows: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; (i * i * 37) % 3001]).collect();
        let roots: Vec<Root> =
            rows.iter().enumerate().map(|(i, r)| b.append(&rec(i as u64, b"key", r)).unwrap()).collect();
        let image = b.bytes()[..b.used()].to_vec();
        let read_at = |dst: &mut [u8], at: u64| {
            dst.copy_from_slice(&image[at as usize..at as usize + dst.len()]);
            Ok(())
        };
        let mut scratch = rkyv::util::AlignedVec::<16>::new();
        let path = Path::new("left-1.arena");
        for (i, &r) in roots.iter().enumerate() {
            let a = read_record(r, i == 5, &mut scratch, path, read_at).unwrap();
            assert_eq!((a.hash.to_native(), a.key.get(), a.row.get()), (i as u64, &b"key"[..], &rows[i][..]));
            assert_eq!(a.matched, i == 5);
        }
        // A key pointer sent outside the image: an error naming the file, at every width.
        let mut bad = image.clone();
        let at = roots[3].pos() as usize + std::mem::offset_of!(ArchivedRecord<'static>, key);
        bad[at..at + 4].copy_from_slice(&(-(1i32 << 30)).to_le_bytes());
        let read_bad = |dst: &mut [u8], at: u64| {
            dst.copy_from_slice(&bad[at as usize..at as usize + dst.len()]);
            Ok(())
        };
        let e = read_record(roots[3], false, &mut scratch, path, read_bad).err().unwrap().to_string();
        assert!(e.contains("left-1.arena") && e.contains(&format!("offset {}", roots[3])), "{e}");
        let e = read_record(roots[3], false, &mut scratch, path, |_, _| Err(std::io::Error::other("disk gone")));
        assert!(e.err().unwrap().to_string().contains("disk gone"));
    }

    #[test]
    #[cfg_attr(miri, ignore = "creates, mmaps and preads a file: syscalls Miri cannot run")]
    fn cold_reads_and_flags_go_through_the_file() {
        let (_dir, _path, mut b) = arena("left-0.arena", Side::Left, 0, 10);
        // Rows from empty to 5000 bytes: some need the wider windows of `read_cold`.
        let rows: Vec<Vec<u8>> = (0..200usize).map(|i| vec![i as u8; (i * i) % 5001]).collect();
        let roots: Vec<Root> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| b.append(&rec(i as u64, &(i as u64).to_le_bytes(), r)).unwrap())
            .collect();
        b.set_matched(roots[3]);
        assert!(!b.is_cold());
        b.release_resident();
        assert!(b.is_cold());
        assert_eq!(b.resident_estimate(), 0);
        let mut scratch = rkyv::util::AlignedVec::<16>::new();
        for (i, &r) in roots.iter().enumerate() {
            let a = b.read_cold(r, &mut scratch).unwrap();
            assert_eq!((a.hash.to_native(), a.ts.to_native()), (i as u64, i as i64 * 10));
            assert_eq!((a.key.get(), a.row.get()), (&(i as u64).to_le_bytes()[..], &rows[i][..]));
            assert_eq!(a.matched, i == 3);
        }
        assert_eq!(b.resident_estimate(), 0, "cold reads fault nothing in");
        // A flag set while cold: seen by cold reads and in the flip list at once, in the
        // record once applied; set twice, listed once.
        b.set_matched(roots[150]);
        b.set_matched(roots[150]);
        assert!(b.read_cold(roots[150], &mut scratch).unwrap().matched);
        assert!(!b.read_cold(roots[151], &mut scratch).unwrap().matched);
        assert_eq!(b.flips, vec![roots[3], roots[150]]);
        assert!(b.cold_flips_bytes() > 0);
        b.apply_cold_flips();
        assert_eq!(b.cold_flips_bytes(), 0, "applied flags are freed");
        assert!(b.get(roots[150]).matched && b.read_cold(roots[150], &mut scratch).unwrap().matched);
        // Appends after the release are read back both ways.
        let r = b.append(&rec(999, b"late", b"row")).unwrap();
        assert_eq!(b.read_cold(r, &mut scratch).unwrap().row.get(), b"row");
        let mut img = vec![0u8; b.used()];
        b.copy_out(0, &mut img).unwrap();
        let (h, reroots) = Buffer::restore(&img, None, Path::new("img")).unwrap();
        assert_eq!(reroots.len(), 201);
        assert!(h.get(roots[150]).matched && h.get(roots[3]).matched && !h.get(roots[4]).matched);
    }

    #[test]
    #[cfg_attr(miri, ignore = "creates, mmaps and preads a file: syscalls Miri cannot run")]
    fn a_damaged_cold_record_is_an_error_naming_the_file() {
        let (_dir, path, mut b) = arena("left-5.arena", Side::Left, 5, 10);
        let r0 = b.append(&rec(1, b"k", b"row")).unwrap();
        let r1 = b.append(&rec(2, b"k", b"row")).unwrap();
        b.release_resident();
        // Point the second record's key far outside the file (a relative offset of -2^30).
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        let key_field = r1.pos() as u64 + std::mem::offset_of!(ArchivedRecord<'static>, key) as u64;
        f.write_all_at(&(-(1i32 << 30)).to_le_bytes(), key_field).unwrap();
        let mut scratch = rkyv::util::AlignedVec::<16>::new();
        assert_eq!(b.read_cold(r0, &mut scratch).unwrap().hash.to_native(), 1);
        let e = b.read_cold(r1, &mut scratch).err().unwrap().to_string();
        assert!(e.contains("left-5.arena") && e.contains(&format!("offset {r1}")), "{e}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "creates and mmaps a file: syscalls Miri cannot run")]
    fn restore_into_a_file_checks_the_copy() {
        let mut h = Buffer::heap();
        let roots: Vec<Root> = (0..20u64).map(|i| h.append(&rec(i, b"k", &[i as u8; 5])).unwrap()).collect();
        let mut img = vec![0u8; h.used() + 1];
        h.copy_out(0, &mut img[1..]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("left-2.arena");
        let name = Path::new("ck/left-2.bucket");

        let (b, reroots) = Buffer::restore(&img[1..], Some(&path), name).unwrap(); // unaligned source
        assert_eq!(reroots, roots);
        assert!(b.is_file() && b.used() == h.used() && b.get(roots[19]).hash == 19);
        drop(b);

        let cut = &img[1..roots[10].pos() as usize];
        let e = Buffer::restore(cut, Some(&path), name).err().unwrap().to_string();
        assert!(e.contains("ck/left-2.bucket") && e.contains("truncated"), "{e}");
        assert!(!path.exists(), "a copy that fails its check is deleted");
    }

    // The tests below use heap buffers only, so that Miri can run every unsafe block
    // reachable without a mapped file: `get` (access_unchecked), rkyv's own unsafe in
    // serialisation and validation, and AlignedVec's growth.

    /// A heap buffer with `n` records whose rows are 0..37 bytes long.
    fn filled_heap(n: u64) -> (Buffer, Vec<Root>) {
        let mut b = Buffer::heap();
        let roots = (0..n)
            .map(|i| {
                let row = vec![i as u8; (i % 37) as usize];
                b.append(&rec(i, &i.to_le_bytes(), &row)).unwrap()
            })
            .collect();
        (b, roots)
    }

    /// The arena image of a buffer, as a checkpoint copies it.
    fn image(b: &Buffer) -> Vec<u8> {
        let mut img = vec![0; b.used()];
        b.copy_out(0, &mut img).unwrap();
        img
    }

    fn check(b: &Buffer, roots: &[Root], matched: &[usize]) {
        for (i, &r) in roots.iter().enumerate() {
            let a = b.get(r);
            assert_eq!(a.hash, i as u64);
            assert_eq!(a.ts, i as i64 * 10);
            assert_eq!(a.key.get(), &(i as u64).to_le_bytes());
            assert_eq!(a.row.get(), &vec![i as u8; i % 37][..]);
            assert_eq!(a.matched, matched.contains(&i), "record {i}");
        }
    }

    #[test]
    fn heap_growth_moves_records_intact() {
        let mut b = Buffer::heap();
        let cap0 = b.capacity();
        let big = vec![0xa5u8; 3000];
        let mut roots = Vec::new();
        for i in 0..40u64 {
            let r = b.append(&rec(i, b"key", &big[..(i as usize * 75)])).unwrap();
            assert_eq!(r.pos() as usize % std::mem::align_of::<ArchivedRecord<'static>>(), 0, "root {r} misaligned");
            roots.push(r);
        }
        assert!(b.capacity() > cap0 && b.capacity() >= b.used(), "{} of {}", b.used(), b.capacity());
        for (i, &r) in roots.iter().enumerate() {
            let a = b.get(r);
            assert_eq!((a.hash.to_native(), a.key.get(), a.row.get()), (i as u64, &b"key"[..], &big[..i * 75]));
        }
    }

    #[test]
    fn empty_key_and_row() {
        let mut b = Buffer::heap();
        let r0 = b.append(&rec(1, b"", b"")).unwrap();
        let r1 = b.append(&rec(2, b"", b"x")).unwrap();
        assert!(b.get(r0).key.is_empty() && b.get(r0).row.is_empty());
        assert_eq!(b.get(r1).row.get(), b"x");
        let first = b.record_len_at(ARENA_HEADER_BYTES);
        assert_eq!(ARENA_HEADER_BYTES + RECORD_HEADER_BYTES + first, r0.pos() as usize + ROOT_BYTES);
    }

    #[test]
    fn set_matched_flips_in_place_once() {
        let (mut b, roots) = filled_heap(60);
        b.set_matched(roots[0]);
        b.set_matched(roots[59]);
        b.set_matched(roots[0]);
        assert_eq!(b.flips, [roots[0], roots[59]]);
        assert!(b.flips_dirty);
        check(&b, &roots, &[0, 59]);
    }

    #[test]
    fn copy_out_and_restore_on_heap() {
        let (mut b, roots) = filled_heap(80);
        b.set_matched(roots[5]);
        let img = image(&b);
        let mut tail = [0u8; 8];
        b.copy_out(roots[1].pos() as usize, &mut tail).unwrap();
        assert_eq!(tail, 1u64.to_le_bytes(), "the root starts with the hash");

        let (mut r, reroots) = Buffer::restore(&img, None, Path::new("ck/left-0.bucket")).unwrap();
        assert_eq!(reroots, roots);
        assert_eq!(r.used(), b.used());
        assert!(!r.is_file() && !r.dirty && r.flips.is_empty());
        check(&r, &roots, &[5]);
        // The restored buffer is a normal buffer: it grows and flips.
        let more = r.append(&rec(80, &80u64.to_le_bytes(), &[80; 80 % 37])).unwrap();
        r.set_matched(roots[6]);
        check(&r, &[roots.clone(), vec![more]].concat(), &[5, 6]);
    }

    #[test]
    fn restore_accepts_an_unaligned_image() {
        let (b, roots) = filled_heap(20);
        let img = image(&b);
        // A checkpoint is read into a Vec<u8>, which promises no alignment.
        let mut shifted = vec![0u8; img.len() + 1];
        shifted[1..].copy_from_slice(&img);
        let (r, reroots) = Buffer::restore(&shifted[1..], None, Path::new("ck/x.bucket")).unwrap();
        assert_eq!(reroots, roots);
        check(&r, &roots, &[]);
    }

    #[test]
    fn restore_rejects_damaged_images() {
        let (b, roots) = filled_heap(10);
        let img = image(&b);
        let name = Path::new("ck/left-3.bucket");
        let err = |bytes: &[u8]| Buffer::restore(bytes, None, name).err().expect("damage must be rejected").to_string();
        let damaged = |at: usize, with: &[u8]| {
            let mut v = img.clone();
            v[at..at + with.len()].copy_from_slice(with);
            err(&v)
        };

        assert!(err(&img[..10]).contains("shorter than"));
        assert!(damaged(0, b"XEFT").contains("bad magic"));
        assert!(damaged(8, &9u32.to_le_bytes()).contains("arena version 9"));
        let e = damaged(ARENA_HEADER_BYTES + 4, b"JUNK");
        assert!(e.contains("ck/left-3.bucket") && e.contains("offset 64") && e.contains("bad record tag"), "{e}");
        let e = err(&img[..roots[4].pos() as usize]);
        assert!(e.contains("truncated"), "{e}");
        // A relative pointer aimed far outside the record: rkyv's validation catches it.
        let key_at = roots[2].pos() as usize + std::mem::offset_of!(ArchivedRecord<'static>, key);
        let e = damaged(key_at, &0x4000_0000i32.to_le_bytes());
        assert!(e.contains("fails validation"), "{e}");
        // A zero header ends the records: what follows is not read.
        let mut v = img.clone();
        let second = (roots[0].pos() as usize + ROOT_BYTES).next_multiple_of(8);
        v[second..second + 8].fill(0);
        let (_, reroots) = Buffer::restore(&v, None, name).unwrap();
        assert_eq!(reroots, &roots[..1]);
    }
}

//! Join state of one shard: each side's rows in time buckets, and the key index.
//!
//! A [`SideStore`] keeps a side's rows in append-only buckets of `bucket_ms` of event
//! time, each one [`arena::Buffer`]: on the heap, or, with `engine.state_dir`, an
//! mmap'd arena file `<state_dir>/shard-<n>/<side>-<bucket>.arena` holding rkyv
//! records read in place. A whole bucket leaves at once when the watermark has passed
//! the retention bound of its newest possible row: its file is deleted, so space goes
//! back to the file system as the watermark moves; there is no compaction.
//!
//! Checkpoints: each buffer keeps the description of its last copy ([`copy::BucketCopy`])
//! and what changed since; [`SideStore::plan_snapshot`] turns that into the copies a
//! checkpoint references and the [`CopyJob`]s it writes, and the written offsets and
//! checksums come back through [`SideStore::set_copy`]. Buckets dropped while a copy
//! runs are held until [`SideStore::end_snapshot`]. Nothing here knows the manifest:
//! it embeds [`copy::BucketCopy`].
//!
//! Unsafe: none in this file but the one trusted conversion of an index root
//! ([`SideStore::get`]'s `root_of`); the rest is in arena.rs (mappings, unchecked record
//! reads), index_alloc.rs (index table memory) and prefetch.rs (a cache hint), each
//! listed in its file's doc.
//!
//! Memory: with arenas, [`SideStore::release_bucket`] drops the mapped pages of a
//! bucket, which the join does, oldest first, when mapped state exceeds
//! `engine.state_memory_mb` (see budget.rs); the rows stay in the files and the page
//! cache. The index ([`index::KeyIndex`], about 38 bytes
//! per live key) then lives in mapped files too (evictable page-cache pages, not
//! anonymous memory), but is kept resident: see budget.rs for how the budget is split.
//!
//! Bucket numbers in the index: a [`Ref`] names its bucket by an `i32` relative to the
//! side's *base*, at first the bucket of the first row the side stored (or the base a
//! checkpoint recorded). A row whose bucket lies [`REL_BUCKET_MAX`] or more buckets away
//! from the base (68 years at the default `state_bucket_ms` of at least 1 s; 25 days at
//! 1 ms) moves the base to the oldest live bucket, and the join rebuilds the index
//! (`Join::rebase`: O(rows in state), once per ~2^31 buckets of progress), when every live
//! bucket and the row's then fit. When they do not (event times near both ends of `i64`
//! live at once, as the property tests use), all buckets at or beyond that distance on
//! one side of the base are kept together as one *far unit* (one buffer), named by the
//! relative number at the limit. Units keep the buckets' time order, so liveness
//! (`rel >= live_from_rel`) and the join's bucket-granular prefilter stay exact; a far
//! unit leaves state only when its newest possible row is past retention (the upper far
//! unit only at the end of input), which delays, but never changes, the rows an outer
//! join emits unmatched. The base does not move while a far unit is live.

pub mod arena;
pub mod budget;
pub mod copy;
pub mod index;
pub mod index_alloc;
pub mod prefetch;
pub mod record;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::event::Side;
use arena::{ArenaFile, Buffer, Root};
use copy::{BucketCopy, SnapshotPlan, WrittenCopy};
use record::{record_bytes_max, ArchivedRecord, Record};

pub use arena::StateError;
pub use copy::CopyJob;
pub use index::{IndexAlloc, KeyIndex, Ref};

/// A bucket's buffer holds at most this many bytes: record positions are below 2^31.
pub const BUCKET_BYTES_MAX: usize = index::ROOT_MAX as usize;

/// Relative bucket numbers (bucket - base) of single buckets lie strictly between
/// `-REL_BUCKET_MAX` and `REL_BUCKET_MAX`; those two name the far units (see above).
/// One below `i32::MAX` so that the live-from number after the upper far unit fits.
pub const REL_BUCKET_MAX: i32 = i32::MAX - 1;

/// The rows of one side, bucketed by event time.
pub struct SideStore {
    side: Side,
    bucket_ms: i64,
    /// Keyed by unit: `base + rel` (the bucket number itself, but for the far units).
    buckets: BTreeMap<i64, Buffer>,
    /// Arena directory of this shard; `None` = heap buffers.
    dir: Option<PathBuf>,
    /// Bucket number that relative numbers count from; set by the first row stored.
    base: Option<i64>,
    /// Event times whose buckets are single units (not far) under `base`.
    near_ts: (i64, i64),
    /// Every unit below this one has been dropped.
    live_from: i64,
    /// `live_from - base`, clamped to `i32`: refs with a smaller bucket are dead.
    pub live_from_rel: i32,
    pub rows: u64,
    /// Bytes given back by dropping buckets, since the start.
    pub bytes_reclaimed: u64,
    /// Rows read from cold buckets (with `pread`), since the start.
    pub cold_reads: u64,
    /// While a checkpoint copy runs, dropped buckets wait here instead of being deleted.
    hold: bool,
    graveyard: Vec<(i64, Buffer)>,
    /// Where records of cold buckets are read to ([`Buffer::read_cold`]).
    scratch: rkyv::util::AlignedVec<16>,
    /// Storage of dropped heap buckets, reused by new ones (at most [`SPARE_BUFFERS`]):
    /// buckets expire as fast as new ones start, and a fresh buffer costs a page fault
    /// and a zeroing per page as it doubles (perf/split-2026-12-07.md).
    spare: Vec<rkyv::util::AlignedVec<16>>,
}

/// Dropped heap bucket buffers a side keeps for reuse.
const SPARE_BUFFERS: usize = 4;

impl SideStore {
    pub fn new(side: Side, bucket_ms: i64, dir: Option<&Path>) -> SideStore {
        assert!(bucket_ms > 0);
        SideStore {
            side,
            bucket_ms,
            buckets: BTreeMap::new(),
            dir: dir.map(Path::to_path_buf),
            base: None,
            near_ts: (i64::MIN, i64::MAX),
            live_from: i64::MIN,
            live_from_rel: i32::MIN,
            rows: 0,
            bytes_reclaimed: 0,
            cold_reads: 0,
            hold: false,
            graveyard: Vec::new(),
            scratch: rkyv::util::AlignedVec::new(),
            spare: Vec::new(),
        }
    }

    #[inline]
    pub fn bucket_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.bucket_ms)
    }

    /// Relative number of the unit holding bucket `b` (before a base is set: of `b` as
    /// if it were the base).
    #[inline]
    fn rel_of(&self, b: i64) -> i32 {
        let base = self.base.unwrap_or(b);
        (b as i128 - base as i128).clamp(-REL_BUCKET_MAX as i128, REL_BUCKET_MAX as i128) as i32
    }

    /// The unit (key of `buckets`) of relative number `rel`.
    #[inline]
    fn unit_of_rel(&self, rel: i32) -> i64 {
        // A ref exists only once the base is set, and `base + rel` lies between the base
        // and a stored bucket: no overflow.
        self.base.expect("a Ref implies a base") + rel as i64
    }

    /// Sets the base of relative bucket numbers and what follows from it. Refs made
    /// under another base are wrong from now on: the caller rebuilds the index.
    pub fn set_base(&mut self, base: i64) {
        debug_assert!(self.base.is_none() || !self.has_far_unit());
        self.base = Some(base);
        let (bms, max) = (self.bucket_ms as i128, REL_BUCKET_MAX as i128);
        let clamp = |t: i128| t.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        self.near_ts = (clamp((base as i128 - max + 1) * bms), clamp((base as i128 + max) * bms - 1));
        self.live_from_rel = (self.live_from as i128 - base as i128).clamp(i32::MIN as i128, i32::MAX as i128) as i32;
    }

    /// Whether a row at `ts` lies outside the single buckets of the current base.
    #[inline]
    pub fn is_far(&self, ts: i64) -> bool {
        ts < self.near_ts.0 || ts > self.near_ts.1
    }

    fn has_far_unit(&self) -> bool {
        let far = |b: &i64| self.rel_of(*b).abs() == REL_BUCKET_MAX;
        self.buckets.keys().next().is_some_and(far) || self.buckets.keys().next_back().is_some_and(far)
    }

    /// A base under which every live bucket and that of a row at `ts` are single units,
    /// if there is one and no far unit is live: the oldest of them.
    pub fn rebase_target(&self, ts: i64) -> Option<i64> {
        let b = self.bucket_of(ts);
        let (Some(&first), Some(&last)) = (self.buckets.keys().next(), self.buckets.keys().next_back()) else {
            return Some(b);
        };
        if self.has_far_unit() {
            return None;
        }
        let (lo, hi) = (first.min(b), last.max(b));
        ((hi as i128 - lo as i128) < REL_BUCKET_MAX as i128).then_some(lo)
    }

    /// Calls `f` with the key hash and ref of every row in state, for an index rebuild.
    pub fn for_each_ref(&self, mut f: impl FnMut(u64, Ref)) {
        for (&b, buf) in &self.buckets {
            let bucket = self.rel_of(b);
            for root in buf.roots() {
                f(buf.get(root).hash.to_native(), Ref { bucket, root: root.pos() });
            }
        }
    }

    /// The newest event time unit `b` can hold.
    pub fn bucket_max_ts(&self, b: i64) -> i128 {
        if self.base.is_some() && self.rel_of(b) == REL_BUCKET_MAX {
            return i64::MAX as i128; // the upper far unit
        }
        (b as i128 + 1) * self.bucket_ms as i128 - 1
    }

    /// The relative bucket numbers whose time ranges meet `[lo, hi]` (empty when `lo >
    /// hi`): a ref outside them holds no row with a time in `[lo, hi]`.
    #[inline]
    pub fn rel_range(&self, lo: i128, hi: i128) -> (i32, i32) {
        let clamp = |t: i128| t.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        (self.rel_of(self.bucket_of(clamp(lo))), self.rel_of(self.bucket_of(clamp(hi))))
    }

    pub fn insert(&mut self, ts: i64, hash: u64, key: &[u8], row: &[u8], matched: bool) -> Result<Ref, StateError> {
        let max = record_bytes_max(key.len(), row.len());
        let (rel, buf) = self.buffer_for(ts, max)?;
        let root = buf.append(&Record { hash, ts, matched, key, row })?;
        self.rows += 1;
        Ok(Ref { bucket: rel, root: root.pos() })
    }

    /// Inserts a record given as its archived bytes (see `Buffer::append_archived`): a
    /// row of a checkpoint moved to this shard, copied rather than serialised again.
    /// `ts` must be the record's own time (the bucket is chosen by it). Errors name
    /// `name_for_errors`.
    pub fn insert_archived(
        &mut self,
        ts: i64,
        hash: u64,
        payload: &[u8],
        matched: bool,
        name_for_errors: &Path,
    ) -> Result<Ref, StateError> {
        let bytes = record::RECORD_HEADER_BYTES + payload.len().next_multiple_of(8);
        let (rel, buf) = self.buffer_for(ts, bytes)?;
        let root = buf.append_archived(payload, hash, matched, name_for_errors)?;
        self.rows += 1;
        Ok(Ref { bucket: rel, root: root.pos() })
    }

    /// The buffer of the bucket of time `ts` (made if new), with room for `bytes` more,
    /// and that bucket's number relative to the base.
    fn buffer_for(&mut self, ts: i64, bytes: usize) -> Result<(i32, &mut Buffer), StateError> {
        let bucket = self.bucket_of(ts);
        if self.base.is_none() {
            self.set_base(bucket);
        }
        let rel = self.rel_of(bucket);
        let b = self.unit_of_rel(rel);
        let buf = match self.buckets.entry(b) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let nb = match (&self.dir, self.spare.pop()) {
                    (None, Some(v)) => Buffer::heap_in(v),
                    _ => new_buffer(self.dir.as_deref(), self.side, b, self.bucket_ms)?,
                };
                v.insert(nb)
            }
        };
        if buf.used() + bytes > BUCKET_BYTES_MAX {
            return Err(StateError::BucketFull { side: self.side, bucket: b, max: BUCKET_BYTES_MAX });
        }
        Ok((rel, buf))
    }

    /// The record of a live ref: read in place, or, from a cold bucket (its pages were
    /// released for the memory budget), read from the file into a scratch buffer.
    #[inline]
    pub fn get(&mut self, r: Ref) -> Result<&ArchivedRecord<'static>, StateError> {
        let buf = &self.buckets[&self.unit_of_rel(r.bucket)];
        let root = root_of(r);
        if buf.is_cold() {
            self.cold_reads += 1;
            buf.read_cold(root, &mut self.scratch)
        } else {
            Ok(buf.get(root))
        }
    }

    /// Marks the record of a live ref as matched.
    #[inline]
    pub fn set_matched(&mut self, r: Ref) {
        let b = self.unit_of_rel(r.bucket);
        self.buckets.get_mut(&b).expect("a live Ref names a live bucket").set_matched(root_of(r));
    }

    /// Heap bytes of the bookkeeping of cold buckets (flags not yet in their files).
    pub fn cold_flips_bytes(&self) -> u64 {
        self.buckets.values().map(|b| b.cold_flips_bytes() as u64).sum()
    }

    /// The oldest bucket, if any.
    pub fn first(&self) -> Option<i64> {
        self.buckets.keys().next().copied()
    }

    /// Removes bucket `b`, calling `each` on every record in it, then deletes its
    /// arena file. Every ref into it, or into older buckets, is dead from now on.
    pub fn drop_bucket(&mut self, b: i64, mut each: impl FnMut(&ArchivedRecord<'static>)) -> Result<u64, StateError> {
        let Some(mut buf) = self.buckets.remove(&b) else {
            return Ok(0);
        };
        buf.apply_cold_flips();
        if b >= self.live_from {
            self.live_from = b.saturating_add(1);
            let base = self.base.expect("a stored bucket implies a base");
            self.live_from_rel =
                (self.live_from as i128 - base as i128).clamp(i32::MIN as i128, i32::MAX as i128) as i32;
        }
        let mut n = 0u64;
        for root in buf.roots() {
            each(buf.get(root));
            n += 1;
        }
        self.rows -= n;
        self.bytes_reclaimed += buf.capacity() as u64;
        if self.hold {
            // Kept for the checkpoint copy only: not resident meanwhile (reading it
            // above may have faulted its pages in).
            buf.release_resident();
            self.graveyard.push((b, buf));
        } else {
            self.recycle(buf)?;
        }
        Ok(n)
    }

    /// Adds what a checkpoint writing into `pack` needs from this side to `plan`:
    /// every live bucket's copy, either the existing one (unchanged since it was made)
    /// or a new one, with a job for each part to write. Dropped buckets are kept until
    /// [`SideStore::end_snapshot`]. The offsets and checksums of new parts are filled in
    /// by [`SideStore::set_copy`] once written.
    pub fn plan_snapshot(&mut self, pack: &str, plan: &mut SnapshotPlan) {
        self.hold = true;
        for (&b, buf) in self.buckets.iter_mut() {
            let (copy, job) = buf.plan_copy(self.side, b, pack);
            plan.copies.push(copy);
            plan.jobs.extend(job);
        }
    }

    /// Copies bytes of bucket `b` (live or held) for a checkpoint copy.
    pub fn copy_out(&self, b: i64, off: usize, dst: &mut [u8]) -> bool {
        let buf = self.buckets.get(&b).or_else(|| self.graveyard.iter().find(|(g, _)| *g == b).map(|(_, x)| x));
        match buf {
            // A read error fails this checkpoint's copy (the next one copies again).
            Some(buf) if off + dst.len() <= buf.used() => buf.copy_out(off, dst).is_ok(),
            _ => false,
        }
    }

    /// Records where a part of a bucket's copy (rows, or matched list) was written
    /// into `pack`, and its checksum.
    pub fn set_copy(&mut self, pack: &str, w: &WrittenCopy) {
        debug_assert_eq!(w.side, self.side);
        if let Some(buf) = self.buckets.get_mut(&w.bucket) {
            buf.copy_written(pack, w);
        }
    }

    /// A copy into `pack` failed: its buckets must be copied again next time.
    pub fn fail_copies(&mut self, pack: &str) {
        for buf in self.buckets.values_mut() {
            buf.copy_failed(pack);
        }
    }

    /// The copy is over: delete the buckets dropped meanwhile.
    pub fn end_snapshot(&mut self) -> Result<(), StateError> {
        self.hold = false;
        for (_, buf) in std::mem::take(&mut self.graveyard) {
            self.recycle(buf)?;
        }
        Ok(())
    }

    /// Deletes a dropped bucket's buffer, keeping a heap buffer's storage for reuse.
    fn recycle(&mut self, buf: Buffer) -> Result<(), StateError> {
        if buf.is_file() {
            return buf.delete();
        }
        if self.spare.len() < SPARE_BUFFERS {
            self.spare.extend(buf.into_spare());
        }
        Ok(())
    }

    /// The base of relative bucket numbers, if set (a checkpoint records it, so that the
    /// far units it holds keep their meaning).
    pub fn base(&self) -> Option<i64> {
        self.base
    }

    /// Sets the base before buckets are restored. Without one (a checkpoint that did
    /// not record it), the first bucket restored sets it.
    pub fn restore_base(&mut self, base: Option<i64>) {
        debug_assert!(self.buckets.is_empty());
        if let Some(b) = base {
            self.set_base(b);
        }
    }

    /// Adds bucket `b` restored from a checkpoint copy `file`: `bytes` its rows, `flips`
    /// the roots of its matched list. Calls `each` with every record and its ref, for
    /// the index. Errors name `name_for_errors` (the pack).
    pub fn restore_bucket(
        &mut self,
        b: i64,
        bytes: rkyv::util::AlignedVec<16>,
        flips: &[u32],
        file: BucketCopy,
        name_for_errors: &Path,
        mut each: impl FnMut(&ArchivedRecord<'static>, Ref, Option<&ArchivedRecord<'static>>),
    ) -> Result<(), StateError> {
        let path = self.dir.as_ref().map(|d| d.join(arena_name(self.side, b)));
        if self.base.is_none() {
            self.set_base(b);
        }
        let base = self.base.expect("set above");
        let rel = b as i128 - base as i128;
        let bad = |what: String| StateError::Corrupt { path: name_for_errors.to_path_buf(), offset: 0, reason: what };
        if rel.abs() > REL_BUCKET_MAX as i128 {
            return Err(bad(format!("bucket {b} lies {rel} buckets from the base bucket {base}: beyond the far unit")));
        }
        if self.buckets.contains_key(&b) {
            return Err(bad(format!("bucket {b} of side {} is restored twice", self.side as u8)));
        }
        let rel = rel as i32;
        // Heap state keeps the bytes read from the pack as the bucket's buffer: a second
        // copy would touch as much fresh memory again, and first touches (page faults
        // and zeroing) were most of a restore's CPU (perf/snapshot-2026-12-08.md).
        let (mut buf, roots) = match path.as_deref() {
            None => Buffer::restore_owned(bytes, name_for_errors)?,
            Some(p) => Buffer::restore(&bytes, Some(p), name_for_errors)?,
        };
        for &r in flips {
            // A listed position becomes a root only if it is one of a checked record.
            let Ok(i) = roots.binary_search_by_key(&r, |x| x.pos()) else {
                return Err(StateError::Corrupt {
                    path: name_for_errors.to_path_buf(),
                    offset: r as u64,
                    reason: "matched list names no record".into(),
                });
            };
            buf.set_matched(roots[i]);
        }
        buf.restored_from(file);
        for (i, &root) in roots.iter().enumerate() {
            let ahead = roots.get(i + RESTORE_LOOKAHEAD).map(|&r| buf.get(r));
            let rec = buf.get(root);
            each(rec, Ref { bucket: rel, root: root.pos() }, ahead);
            self.rows += 1;
        }
        self.buckets.insert(b, buf);
        Ok(())
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Bytes held by the buffers (heap capacity or file length).
    pub fn bytes(&self) -> u64 {
        self.buckets.values().map(|b| b.capacity() as u64).sum()
    }

    /// Buckets, oldest first.
    pub fn bucket_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.buckets.keys().copied()
    }

    /// Drops the resident pages of bucket `b`; returns the estimate of what was resident
    /// ([`Buffer::resident_estimate`]; 0 on the heap or when nothing was touched).
    pub fn release_bucket(&mut self, b: i64) -> u64 {
        match self.buckets.get_mut(&b) {
            Some(buf) => {
                let est = buf.resident_estimate();
                if est > 0 {
                    buf.release_resident();
                }
                est
            }
            None => 0,
        }
    }

    pub fn arena_files(&self) -> usize {
        self.buckets.values().filter(|b| b.is_file()).count()
    }
}

/// How many records ahead a restore looks to prefetch a record's index slot: the
/// index lookup is a cache miss per row (a third of a restore's CPU without it), and
/// a restore does little else per row, so it looks further ahead than the join.
pub const RESTORE_LOOKAHEAD: usize = 16;

/// The file name of bucket `b`'s arena.
/// Calls `each` with every record of a checkpoint copy of a bucket (`bytes` its rows,
/// `flips` the roots of its matched list) and whether it is matched, without keeping
/// the bucket: for a restore that re-distributes rows to other shards. The copy is
/// validated as [`SideStore::restore_bucket`] validates it; errors name
/// `name_for_errors` (the pack).
/// `each` also gets the record's archived bytes (to copy it whole, see
/// [`SideStore::insert_archived`]) and the record [`RESTORE_LOOKAHEAD`] places further
/// on, if any (to prefetch its index slot).
pub fn each_copied_record(
    bytes: rkyv::util::AlignedVec<16>,
    flips: &[u32],
    name_for_errors: &Path,
    mut each: impl FnMut(&ArchivedRecord<'static>, &[u8], bool, Option<&ArchivedRecord<'static>>) -> Result<(), StateError>,
) -> Result<(), StateError> {
    let (buf, roots) = Buffer::restore_owned(bytes, name_for_errors)?;
    let mut flips = flips.to_vec();
    flips.sort_unstable();
    for &r in &flips {
        if roots.binary_search_by_key(&r, |x| x.pos()).is_err() {
            return Err(StateError::Corrupt {
                path: name_for_errors.to_path_buf(),
                offset: r as u64,
                reason: "matched list names no record".into(),
            });
        }
    }
    let mut prev = None;
    for (i, &root) in roots.iter().enumerate() {
        let ahead = roots.get(i + RESTORE_LOOKAHEAD).map(|&r| buf.get(r));
        let rec = buf.get(root);
        let matched = rec.matched || flips.binary_search(&root.pos()).is_ok();
        each(rec, buf.payload(prev, root), matched, ahead)?;
        prev = Some(root);
    }
    Ok(())
}

fn arena_name(side: Side, b: i64) -> String {
    let name = match side {
        Side::Left => "left",
        Side::Right => "right",
    };
    format!("{name}-{b}.arena")
}

/// The side and bucket an arena file's name (see [`arena_name`]) says it holds; `None`
/// when `name` is not an arena's. `weft inspect` reads names with this.
pub fn parse_arena_name(name: &str) -> Option<(Side, i64)> {
    let stem = name.strip_suffix(".arena")?;
    let (side, b) = stem.split_once('-')?;
    let side = match side {
        "left" => Side::Left,
        "right" => Side::Right,
        _ => return None,
    };
    Some((side, b.parse().ok()?))
}

fn new_buffer(dir: Option<&Path>, side: Side, b: i64, bucket_ms: i64) -> Result<Buffer, StateError> {
    Ok(match dir {
        None => Buffer::heap(),
        Some(d) => Buffer::file(ArenaFile::create(&d.join(arena_name(side, b)), side, b, bucket_ms)?),
    })
}

/// The root of a ref's record, for its bucket's buffer: the one place where a root the
/// index stored as `u32` is trusted (see [`Root`]). Free: a `u32` copy.
#[inline]
fn root_of(r: Ref) -> Root {
    // SAFETY: a `Ref` is made only in this module (`insert`, `for_each_ref`,
    // `restore_bucket`), from a `Root` of the buffer of the bucket it names, and its
    // `root` cannot be set outside `state` (the field is private to it); the index
    // only hands back refs it was given. What the callers keep: a ref is used with
    // the store of the side it came from, under the base it was made in (`set_base`
    // tells the caller to rebuild the index), and only while its bucket lives (the
    // lookup of a dropped bucket panics; the join passes only refs at or after
    // `live_from_rel`, so a later bucket of the same number is never read through an
    // old ref).
    unsafe { Root::from_index(r.root) }
}

/// Prepares a shard's arena directory: creates it and removes arena files left by an
/// earlier run (without a checkpoint to restore, they are not state of this run).
pub fn prepare_dir(dir: &Path) -> Result<(), StateError> {
    let io = |op: &'static str| {
        let path = dir.to_path_buf();
        move |source| StateError::Io { path, op, source }
    };
    std::fs::create_dir_all(dir).map_err(io("create directory"))?;
    for e in std::fs::read_dir(dir).map_err(io("read directory"))? {
        let p = e.map_err(io("read directory"))?.path();
        // Index tables (index-*.map) are unlinked once mapped; one is left only by a
        // crash between the two steps.
        if p.extension().is_some_and(|x| x == "arena" || x == "map") {
            std::fs::remove_file(&p).map_err(io("remove stale arena"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of `bytes` in the 16-aligned form a checkpoint's read hands over.
    fn aligned(bytes: &[u8]) -> rkyv::util::AlignedVec<16> {
        let mut v = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn arena_names_parse_back() {
        for (side, b) in [(Side::Left, 0), (Side::Right, 17), (Side::Left, -3)] {
            assert_eq!(parse_arena_name(&arena_name(side, b)), Some((side, b)));
        }
        for bad in ["left-x.arena", "middle-1.arena", "left-1.map", "left1.arena"] {
            assert_eq!(parse_arena_name(bad), None, "{bad}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "creates, mmaps and preads files: syscalls Miri cannot run")]
    fn a_checkpoint_copy_of_a_cold_bucket_holds_the_flags_set_while_cold() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SideStore::new(Side::Left, 1000, Some(dir.path()));
        let refs: Vec<Ref> = (0..100).map(|i| s.insert(i, i as u64, b"k", b"row", false).unwrap()).collect();
        s.plan_snapshot("p1", &mut SnapshotPlan::default());
        s.end_snapshot().unwrap();
        assert!(s.release_bucket(0) > 0, "the bucket was resident");
        s.set_matched(refs[10]);
        assert!(s.get(refs[10]).unwrap().matched && !s.get(refs[11]).unwrap().matched);
        assert_eq!(s.cold_reads, 2);
        // A late row makes the cold bucket dirty: the next checkpoint copies it whole,
        // and that copy replaces the flip list, so it must hold the flag.
        s.insert(500, 7, b"k", b"late", false).unwrap();
        let mut plan = SnapshotPlan::default();
        s.plan_snapshot("p2", &mut plan);
        let (files, jobs) = (plan.copies, plan.jobs);
        let [CopyJob::Full { bytes, .. }] = jobs[..] else { panic!("one full copy: {jobs:?}") };
        let mut img = vec![0u8; bytes];
        assert!(s.copy_out(0, 0, &mut img));
        s.end_snapshot().unwrap();
        let mut restored = SideStore::new(Side::Left, 1000, None);
        let mut matched = Vec::new();
        restored
            .restore_bucket(0, aligned(&img), &[], files[0].clone(), Path::new("p2"), |rec, _, _| {
                matched.push(rec.matched)
            })
            .unwrap();
        assert_eq!(matched.len(), 101);
        assert_eq!(matched.iter().filter(|&&m| m).count(), 1);
        assert!(matched[10]);
    }
}

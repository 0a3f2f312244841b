//! The interval join operator of one shard, exactly per docs/SEMANTICS.md.
//!
//! `on_row` probes the other side's rows of the same key for the interval
//! `l.t + lower <= r.t <= l.t + upper`, emits one output per match, then stores the
//! row. `advance(W)` drops the buckets whose rows are all past retention
//! (left: `W - A > l.t + upper`, right: `W - A > r.t - lower`) and emits their
//! unmatched rows for outer joins; `finish` does so for everything left.
//!
//! The operator does no I/O of its own beyond its state store (heap, or mapped arena
//! files: see [`crate::state`]), reads no clock, and allocates nothing per row once
//! buckets and index have grown. Lateness is decided before rows reach it.

use std::path::Path;

use crate::config::JoinKind;
use crate::event::RowView;
use crate::event::{Emit, Side};
use crate::state::copy::{BucketCopy, SnapshotPlan, WrittenCopy};
use crate::state::{IndexAlloc, KeyIndex, Ref, SideStore, StateError};

#[derive(Clone, Copy, Debug)]
pub struct JoinParams {
    pub kind: JoinKind,
    pub lower_ms: i64,
    pub upper_ms: i64,
    pub allowed_lateness_ms: i64,
    pub bucket_ms: i64,
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct JoinStats {
    pub pairs: u64,
    /// Rows that left state (or had a NULL key) without ever matching, per side.
    pub unmatched: [u64; 2],
}

pub struct Join {
    p: JoinParams,
    index: KeyIndex,
    sides: [SideStore; 2],
    /// Rows dropped since the last index sweep.
    dropped_since_sweep: u64,
    /// An incremental sweep pass is under way.
    sweeping: bool,
    /// Rows joined since the last index table was swept (paces a pass).
    rows_since_sweep_step: u64,
    pub stats: JoinStats,
}

/// The index is swept once this many rows (and at least as many as it has keys) left.
const SWEEP_ROWS_MIN: u64 = 1 << 16;
/// A sweep pass visits one table (1/64 of the keys) per this many rows joined, or per
/// 1/128 of the keys in rows if more: a pass then spans about half as many rows as the
/// index has keys, and its cost (~20 ns a key) is spread at a few % over them. Two tables
/// per `advance` instead made every pass a burst that held each batch ~1.5 ms longer for
/// 32 batches in a row: 20-30 ms of queueing, the open-loop p99 (perf/bench-notes.md).
const SWEEP_STEP_ROWS_MIN: u64 = 1024;

impl Join {
    /// A join whose state lives on the heap.
    pub fn new(p: JoinParams) -> Join {
        Join::with_state(p, None)
    }

    /// A join whose rows and index tables live in files under `dir` (heap when `None`).
    pub fn with_state(p: JoinParams, dir: Option<&Path>) -> Join {
        Join {
            p,
            index: KeyIndex::new(dir.map_or_else(IndexAlloc::heap, IndexAlloc::mapped)),
            sides: [SideStore::new(Side::Left, p.bucket_ms, dir), SideStore::new(Side::Right, p.bucket_ms, dir)],
            dropped_since_sweep: 0,
            sweeping: false,
            rows_since_sweep_step: 0,
            stats: JoinStats::default(),
        }
    }

    /// Starts loading what `on_row` for a row with key hash `hash` will touch first; call
    /// it a few rows ahead.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        self.index.prefetch(hash);
    }

    /// Joins and stores one non-late row. `key` is `None` when a key field is NULL.
    // The per-row entry point: the fields of the batch's event go in as registers;
    // a struct built per row only to satisfy the lint would read no better.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn on_row(
        &mut self,
        side: Side,
        ts: i64,
        hash: u64,
        key: Option<&[u8]>,
        row: &[u8],
        arrival_ns: u64,
        emit: &mut impl Emit,
    ) -> Result<(), StateError> {
        self.rows_since_sweep_step = self.rows_since_sweep_step.saturating_add(1);
        let Some(key) = key else {
            // Can never match: it is unmatched now and no later row can change that.
            self.stats.unmatched[side.idx()] += 1;
            if self.p.kind.emits_unmatched(side) {
                emit.unmatched(side, RowView(row));
            }
            return Ok(());
        };
        if self.sides[side.idx()].is_far(ts) {
            self.rebase(side, ts)?;
        }
        let other = side.other();
        // Window of the other side's event times that match this row.
        let (lo, hi) = match side {
            Side::Left => (ts as i128 + self.p.lower_ms as i128, ts as i128 + self.p.upper_ms as i128),
            Side::Right => (ts as i128 - self.p.upper_ms as i128, ts as i128 - self.p.lower_ms as i128),
        };
        let live_other = self.sides[other.idx()].live_from_rel;
        let live_own = self.sides[side.idx()].live_from_rel;
        let mut entry = self.index.entry(hash)?;
        let mut matched = false;
        let store = &mut self.sides[other.idx()];
        let pairs = &mut self.stats.pairs;
        let mut failed = None;
        // Buckets that can hold a match; found (two divisions) only for a key with refs.
        let mut window: Option<(i32, i32)> = None;
        entry.for_each_live(other.idx(), live_other, |r| {
            if failed.is_some() {
                return;
            }
            let (first, last) = *window.get_or_insert_with(|| store.rel_range(lo, hi));
            if r.bucket < first || r.bucket > last {
                return; // its whole bucket is outside the window: no read
            }
            let rec = match store.get(r) {
                Ok(rec) => rec,
                Err(e) => return failed = Some(e),
            };
            let t = rec.ts.to_native() as i128;
            if t < lo || t > hi {
                return;
            }
            if rec.key.get() != key {
                return; // another key whose hash shares the slot (see state::index)
            }
            matched = true;
            *pairs += 1;
            let was_matched = rec.matched;
            let orow = rec.row.get();
            match side {
                Side::Left => emit.pair(RowView(row), RowView(orow), arrival_ns),
                Side::Right => emit.pair(RowView(orow), RowView(row), arrival_ns),
            }
            // Tracked for every kind: `unmatched` in the report counts rows that matched
            // nothing, inner joins included.
            if !was_matched {
                store.set_matched(r);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        let r = self.sides[side.idx()].insert(ts, hash, key, row, matched)?;
        entry.push(side.idx(), r, live_own);
        Ok(())
    }

    /// A row at `ts` is too far from `side`'s base for an `i32` bucket number: moves the
    /// base to the side's oldest live bucket (or the row's) and rebuilds the index from
    /// the rows in state, when all of them then fit; otherwise the row goes to a far unit
    /// (see [`crate::state`]). Costs O(rows in state) with a random index access each
    /// (about as long as a recovery's index build); happens once per ~2^31 buckets a
    /// stream advances.
    #[cold]
    fn rebase(&mut self, side: Side, ts: i64) -> Result<(), StateError> {
        let Some(base) = self.sides[side.idx()].rebase_target(ts) else {
            return Ok(());
        };
        self.sides[side.idx()].set_base(base);
        self.index.clear();
        for (s, store) in self.sides.iter().enumerate() {
            let index = &mut self.index;
            let mut failed = None;
            store.for_each_ref(|hash, r| {
                if failed.is_none() {
                    match index.entry(hash) {
                        Ok(mut e) => e.push(s, r, i32::MIN),
                        Err(e) => failed = Some(e),
                    }
                }
            });
            failed.map_or(Ok(()), Err)?;
        }
        self.dropped_since_sweep = 0;
        self.sweeping = false;
        Ok(())
    }

    /// Drops every bucket past retention at engine watermark `w`.
    pub fn advance(&mut self, w: i64, emit: &mut impl Emit) -> Result<(), StateError> {
        let wa = w as i128 - self.p.allowed_lateness_ms as i128;
        for side in [Side::Left, Side::Right] {
            // Retention bound added to a row's time: left `+ upper`, right `- lower`.
            let reach = match side {
                Side::Left => self.p.upper_ms as i128,
                Side::Right => -(self.p.lower_ms as i128),
            };
            while let Some(b) = self.sides[side.idx()].first() {
                if wa <= self.sides[side.idx()].bucket_max_ts(b) + reach {
                    break;
                }
                self.drop_bucket(side, b, emit)?;
            }
        }
        // Incremental sweep: once as many rows left as the index has keys, visit one of
        // its tables at a time, paced by rows joined, until a whole pass is done.
        let keys = self.index.len() as u64;
        if !self.sweeping && self.dropped_since_sweep >= SWEEP_ROWS_MIN.max(keys) {
            self.sweeping = true;
            self.dropped_since_sweep = 0;
            self.rows_since_sweep_step = u64::MAX; // the first table now
        }
        let step_rows = SWEEP_STEP_ROWS_MIN.max(keys / (2 * crate::state::index::INDEX_PARTS as u64));
        if self.sweeping && self.rows_since_sweep_step >= step_rows {
            self.rows_since_sweep_step = 0;
            self.sweeping = !self.index.sweep_some([self.sides[0].live_from_rel, self.sides[1].live_from_rel], 1)?;
        }
        Ok(())
    }

    /// Drops the resident pages of mapped buckets, oldest event time first, until an
    /// estimated `bytes` were released or every bucket touched since its last release
    /// was. Oldest first because new rows match recent ones: the retention window is
    /// usually far longer than the span in which rows find their matches, so old buckets
    /// are cold (read again only when they expire). The estimate that
    /// [`SideStore::release_bucket`] returns stands in for a per-mapping
    /// resident count, which only a walk of /proc/self/smaps gives (`mincore` answers
    /// for the page cache, not for this process's page tables). No-op for heap state.
    pub fn release_resident(&mut self, bytes: u64) {
        let mut order: Vec<(i64, usize)> =
            (0..2).flat_map(|s| self.sides[s].bucket_ids().map(move |b| (b, s))).collect();
        order.sort_unstable();
        let mut released = 0;
        for (b, s) in order {
            if released >= bytes {
                break;
            }
            released += self.sides[s].release_bucket(b);
        }
    }

    /// Bytes of state bookkeeping on the heap besides the index (flags of cold buckets).
    pub fn cold_flips_bytes(&self) -> u64 {
        self.sides[0].cold_flips_bytes() + self.sides[1].cold_flips_bytes()
    }

    /// Bytes of index tables held in mapped files.
    pub fn index_mapped_bytes(&self) -> u64 {
        self.index.mapped_bytes()
    }

    /// End of input: every remaining row leaves state.
    pub fn finish(&mut self, emit: &mut impl Emit) -> Result<(), StateError> {
        for side in [Side::Left, Side::Right] {
            while let Some(b) = self.sides[side.idx()].first() {
                self.drop_bucket(side, b, emit)?;
            }
        }
        self.index.clear();
        self.dropped_since_sweep = 0;
        Ok(())
    }

    fn drop_bucket(&mut self, side: Side, b: i64, emit: &mut impl Emit) -> Result<(), StateError> {
        let emits = self.p.kind.emits_unmatched(side);
        let unmatched = &mut self.stats.unmatched[side.idx()];
        let n = self.sides[side.idx()].drop_bucket(b, |rec| {
            if !rec.matched {
                *unmatched += 1;
                if emits {
                    emit.unmatched(side, RowView(rec.row.get()));
                }
            }
        })?;
        self.dropped_since_sweep += n;
        Ok(())
    }

    /// Rows in state per side.
    pub fn state_rows(&self) -> [u64; 2] {
        [self.sides[0].rows, self.sides[1].rows]
    }

    pub fn state_bytes(&self) -> [u64; 2] {
        [self.sides[0].bytes(), self.sides[1].bytes()]
    }

    pub fn cold_reads(&self) -> u64 {
        self.sides[0].cold_reads + self.sides[1].cold_reads
    }

    pub fn bytes_reclaimed(&self) -> u64 {
        self.sides[0].bytes_reclaimed + self.sides[1].bytes_reclaimed
    }

    pub fn keys(&self) -> usize {
        self.index.len()
    }

    pub fn index_bytes(&self) -> u64 {
        self.index.bytes()
    }

    pub fn buckets(&self) -> usize {
        self.sides[0].bucket_count() + self.sides[1].bucket_count()
    }

    /// Starts a checkpoint whose new copies go into `pack`: which bucket copies it
    /// references and which parts it must write. Buckets dropped from now on are kept
    /// until [`Join::end_snapshot`].
    pub fn plan_snapshot(&mut self, pack: &str) -> SnapshotPlan {
        let mut plan = SnapshotPlan::default();
        for s in &mut self.sides {
            s.plan_snapshot(pack, &mut plan);
        }
        plan
    }

    /// Copies bytes `off..off + dst.len()` of a bucket (live, or dropped during the
    /// copy) for a checkpoint; false if it is gone or shorter, or a read failed.
    pub fn copy_out(&self, side: Side, bucket: i64, off: usize, dst: &mut [u8]) -> bool {
        self.sides[side.idx()].copy_out(bucket, off, dst)
    }

    /// The copies of a checkpoint into `pack` are over: records where each part in
    /// `done` was written and its checksum, and deletes the buckets dropped meanwhile.
    /// With `failed` (the pack could not be written; `done` is then empty), every copy
    /// that was to be in the pack is written again by the next checkpoint.
    pub fn end_snapshot(&mut self, pack: &str, done: &[WrittenCopy], failed: bool) -> Result<(), StateError> {
        for w in done {
            self.sides[w.side.idx()].set_copy(pack, w);
        }
        if failed {
            self.sides[0].fail_copies(pack);
            self.sides[1].fail_copies(pack);
        }
        self.sides[0].end_snapshot()?;
        self.sides[1].end_snapshot()
    }

    /// Each side's base of relative bucket numbers, for a checkpoint.
    pub fn state_bases(&self) -> [Option<i64>; 2] {
        [self.sides[0].base(), self.sides[1].base()]
    }

    /// Sets the bases recorded by a checkpoint, before its buckets are restored.
    pub fn restore_bases(&mut self, bases: [Option<i64>; 2]) {
        self.sides[0].restore_base(bases[0]);
        self.sides[1].restore_base(bases[1]);
    }

    /// Adds a row taken from a checkpoint of another shard layout or routing (see
    /// `checkpoint::barrier::restore_redistributed`): into state and the index, with
    /// its matched flag, probing nothing (its matches were emitted before the
    /// checkpoint).
    pub fn insert_restored(
        &mut self,
        side: Side,
        ts: i64,
        hash: u64,
        key: &[u8],
        row: &[u8],
        matched: bool,
    ) -> Result<(), StateError> {
        self.index_restored(side, ts, hash, |store| store.insert(ts, hash, key, row, matched))
    }

    /// As [`Join::insert_restored`], for a row given as its archived record (copied
    /// whole: see `SideStore::insert_archived`). Errors name `name_for_errors`.
    pub fn insert_restored_archived(
        &mut self,
        side: Side,
        ts: i64,
        hash: u64,
        payload: &[u8],
        matched: bool,
        name_for_errors: &Path,
    ) -> Result<(), StateError> {
        self.index_restored(side, ts, hash, |store| store.insert_archived(ts, hash, payload, matched, name_for_errors))
    }

    /// Stores a restored row of time `ts` on `side` by `insert` (rebasing the side
    /// first when `ts` is far from its base) and indexes it under `hash`.
    fn index_restored(
        &mut self,
        side: Side,
        ts: i64,
        hash: u64,
        insert: impl FnOnce(&mut SideStore) -> Result<Ref, StateError>,
    ) -> Result<(), StateError> {
        if self.sides[side.idx()].is_far(ts) {
            self.rebase(side, ts)?;
        }
        let live_own = self.sides[side.idx()].live_from_rel;
        let r = insert(&mut self.sides[side.idx()])?;
        self.index.entry(hash)?.push(side.idx(), r, live_own);
        Ok(())
    }

    /// Restores one bucket from a checkpoint copy and indexes its rows.
    pub fn restore_bucket(
        &mut self,
        file: &BucketCopy,
        bytes: rkyv::util::AlignedVec<16>,
        flips: &[u32],
        name_for_errors: &Path,
    ) -> Result<(), StateError> {
        let side = file.side.idx();
        let index = &mut self.index;
        let mut failed = None;
        self.sides[side].restore_bucket(
            file.bucket,
            bytes,
            flips,
            file.clone(),
            name_for_errors,
            |rec, r, ahead| {
                if let Some(next) = ahead {
                    index.prefetch(next.hash.to_native());
                }
                match index.entry(rec.hash.to_native()) {
                    Ok(mut e) => e.push(side, r, i32::MIN),
                    Err(e) => failed = failed.take().or(Some(e)),
                }
            },
        )?;
        failed.map_or(Ok(()), Err)
    }

    pub fn arena_files(&self) -> usize {
        self.sides[0].arena_files() + self.sides[1].arena_files()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RowBuilder;

    #[derive(Default)]
    struct Collect {
        pairs: Vec<(i64, i64)>,
        unmatched: Vec<(Side, i64)>,
    }
    impl Emit for Collect {
        fn pair(&mut self, l: RowView, r: RowView, _: u64) {
            self.pairs.push((l.i64(0), r.i64(0)));
        }
        fn unmatched(&mut self, side: Side, row: RowView) {
            self.unmatched.push((side, row.i64(0)));
        }
    }

    fn row(ts: i64) -> Vec<u8> {
        let mut b = RowBuilder::new();
        b.begin(1);
        b.set_i64(0, ts);
        b.bytes().to_vec()
    }

    fn params(kind: JoinKind, lower: i64, upper: i64) -> JoinParams {
        JoinParams { kind, lower_ms: lower, upper_ms: upper, allowed_lateness_ms: 0, bucket_ms: 10 }
    }

    #[test]
    fn matches_inclusive_bounds_either_arrival_order() {
        let mut j = Join::new(params(JoinKind::Full, -5, 5));
        let mut c = Collect::default();
        j.on_row(Side::Left, 100, 1, Some(b"k"), &row(100), 0, &mut c).unwrap();
        j.on_row(Side::Right, 105, 1, Some(b"k"), &row(105), 0, &mut c).unwrap(); // edge: matches
        j.on_row(Side::Right, 106, 1, Some(b"k"), &row(106), 0, &mut c).unwrap(); // outside
        j.on_row(Side::Right, 95, 1, Some(b"k"), &row(95), 0, &mut c).unwrap(); // lower edge
        j.on_row(Side::Left, 110, 1, Some(b"k"), &row(110), 0, &mut c).unwrap(); // matches 105, 106
        j.on_row(Side::Right, 100, 2, Some(b"other"), &row(100), 0, &mut c).unwrap();
        c.pairs.sort();
        assert_eq!(c.pairs, vec![(100, 95), (100, 105), (110, 105), (110, 106)]);
        j.finish(&mut c).unwrap();
        assert_eq!(c.unmatched, vec![(Side::Right, 100)]);
        assert_eq!(j.keys(), 0);
    }

    #[test]
    fn expiry_emits_unmatched_only_after_retention() {
        let mut j = Join::new(params(JoinKind::Left, 0, 20));
        let mut c = Collect::default();
        j.on_row(Side::Left, 5, 1, Some(b"k"), &row(5), 0, &mut c).unwrap();
        j.advance(25, &mut c).unwrap(); // bucket [0,9]: needs W > 9 + 20
        assert!(c.unmatched.is_empty());
        j.advance(30, &mut c).unwrap();
        assert_eq!(c.unmatched, vec![(Side::Left, 5)]);
        assert_eq!(j.state_rows(), [0, 0]);
        // The dead ref is skipped: a right row at 5 would have matched, but it is late
        // by now and never reaches the operator; one at 30 does not match.
        j.on_row(Side::Right, 30, 1, Some(b"k"), &row(30), 0, &mut c).unwrap();
        assert!(c.pairs.is_empty());
        j.index.sweep([j.sides[0].live_from_rel, j.sides[1].live_from_rel]).unwrap();
        assert_eq!(j.keys(), 1, "only the right row's key entry is left");
    }

    #[test]
    fn keys_with_equal_hashes_do_not_match() {
        // The index holds hash tags only: the stored record's key decides.
        let mut j = Join::new(params(JoinKind::Full, -5, 5));
        let mut c = Collect::default();
        j.on_row(Side::Left, 100, 42, Some(b"a"), &row(100), 0, &mut c).unwrap();
        j.on_row(Side::Left, 102, 42, Some(b"b"), &row(102), 0, &mut c).unwrap();
        j.on_row(Side::Right, 101, 42, Some(b"b"), &row(101), 0, &mut c).unwrap();
        j.on_row(Side::Right, 103, 42, Some(b"c"), &row(103), 0, &mut c).unwrap();
        assert_eq!(c.pairs, vec![(102, 101)]);
        assert_eq!(j.keys(), 1);
        j.finish(&mut c).unwrap();
        c.unmatched.sort_by_key(|u| u.1);
        assert_eq!(c.unmatched, vec![(Side::Left, 100), (Side::Right, 103)]);
    }

    #[test]
    fn keys_whose_hashes_share_the_low_32_bits_do_not_match() {
        // Equal tags in the same table: one index slot for both keys.
        let (ha, hb) = (0x0000_0001_0000_002A_u64, 0x0000_0002_0000_002A_u64);
        let mut j = Join::new(params(JoinKind::Full, -5, 5));
        let mut c = Collect::default();
        j.on_row(Side::Left, 100, ha, Some(b"a"), &row(100), 0, &mut c).unwrap();
        j.on_row(Side::Left, 102, hb, Some(b"b"), &row(102), 0, &mut c).unwrap();
        j.on_row(Side::Right, 101, ha, Some(b"a"), &row(101), 0, &mut c).unwrap();
        j.on_row(Side::Right, 103, hb, Some(b"b"), &row(103), 0, &mut c).unwrap();
        c.pairs.sort();
        assert_eq!(c.pairs, vec![(100, 101), (102, 103)]);
        assert_eq!(j.keys(), 1, "one slot");
        j.finish(&mut c).unwrap();
        assert!(c.unmatched.is_empty());
    }

    #[test]
    fn the_window_is_exact_within_a_bucket() {
        // Buckets of 10 ms; the prefilter keeps whole buckets, the record's time decides.
        let mut j = Join::new(params(JoinKind::Inner, 3, 4));
        let mut c = Collect::default();
        for t in 20..30 {
            j.on_row(Side::Right, t, 1, Some(b"k"), &row(t), 0, &mut c).unwrap();
        }
        j.on_row(Side::Left, 21, 1, Some(b"k"), &row(21), 0, &mut c).unwrap();
        assert_eq!(c.pairs, vec![(21, 24), (21, 25)]);
    }

    #[test]
    fn rows_at_both_ends_of_i64_share_far_units() {
        // Too far apart for i32 bucket numbers: the far rows of each side share a unit.
        let (min, max) = (i64::MIN, i64::MAX);
        let mut j = Join::new(params(JoinKind::Full, 0, 1));
        let mut c = Collect::default();
        for t in [0, min, min + 30, max - 30, max] {
            j.on_row(Side::Left, t, 1, Some(b"k"), &row(t), 0, &mut c).unwrap();
        }
        for t in [1, min + 1, max - 29, min + 31] {
            j.on_row(Side::Right, t, 1, Some(b"k"), &row(t), 0, &mut c).unwrap();
        }
        c.pairs.sort();
        assert_eq!(c.pairs, vec![(min, min + 1), (min + 30, min + 31), (0, 1), (max - 30, max - 29)]);
        assert_eq!(j.buckets(), 3 + 3, "per side: bucket 0 (the base) and two far units");
        // The lower far units leave once the watermark passes their newest bucket; the
        // upper ones stay until the end.
        j.advance(0, &mut c).unwrap();
        assert_eq!(j.buckets(), 2 + 2);
        j.advance(max - 1, &mut c).unwrap();
        assert_eq!(j.buckets(), 2);
        assert!(c.unmatched.is_empty());
        j.finish(&mut c).unwrap();
        assert_eq!(c.unmatched, vec![(Side::Left, max)]);
    }

    #[test]
    fn a_stream_past_2_31_buckets_moves_its_base() {
        let p = params(JoinKind::Full, 0, 1); // 10 ms buckets
        let mut j = Join::new(p);
        let mut c = Collect::default();
        j.on_row(Side::Left, 0, 1, Some(b"k"), &row(0), 0, &mut c).unwrap();
        j.on_row(Side::Right, 0, 1, Some(b"k"), &row(0), 0, &mut c).unwrap();
        j.advance(100, &mut c).unwrap();
        assert_eq!(j.buckets(), 0);
        // Bucket 1e9 is near base 0; bucket 2.5e9 is not, but both fit from 1e9.
        let (t1, t2) = (10_000_000_000i64, 25_000_000_000i64);
        j.on_row(Side::Left, t1, 1, Some(b"k"), &row(t1), 0, &mut c).unwrap();
        assert_eq!(j.state_bases(), [Some(0), Some(0)]);
        j.on_row(Side::Left, t2, 1, Some(b"k"), &row(t2), 0, &mut c).unwrap();
        assert_eq!(j.state_bases(), [Some(1_000_000_000), Some(0)]);
        j.on_row(Side::Right, t1 + 1, 1, Some(b"k"), &row(t1 + 1), 0, &mut c).unwrap();
        j.on_row(Side::Right, t2, 1, Some(b"k"), &row(t2), 0, &mut c).unwrap();
        assert_eq!(j.state_bases(), [Some(1_000_000_000), Some(1_000_000_000)]);
        assert_eq!(c.pairs, vec![(0, 0), (t1, t1 + 1), (t2, t2)]);
        // Single buckets again: the older one leaves on its own.
        j.advance(t1 + 100, &mut c).unwrap();
        assert_eq!(j.buckets(), 2);
        j.finish(&mut c).unwrap();
        assert!(c.unmatched.is_empty());
    }

    /// A checkpoint's copies of `j`'s buckets, restored into a new join the way
    /// recovery does (bases first).
    fn snapshot_and_restore(j: &mut Join, p: JoinParams) -> Join {
        let SnapshotPlan { copies: files, jobs } = j.plan_snapshot("pack");
        let mut k = Join::new(p);
        k.restore_bases(j.state_bases());
        for f in &files {
            let job = jobs.iter().find(|x| x.side_bucket() == (f.side, f.bucket)).expect("new buckets are copied");
            let mut bytes = vec![0u8; job.len()];
            assert!(j.copy_out(f.side, f.bucket, 0, &mut bytes));
            let mut owned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
            owned.extend_from_slice(&bytes);
            k.restore_bucket(f, owned, &[], Path::new("pack")).unwrap();
        }
        j.end_snapshot("pack", &[], true).unwrap();
        k
    }

    #[test]
    fn far_units_survive_a_checkpoint() {
        let (min, max) = (i64::MIN, i64::MAX);
        let p = params(JoinKind::Full, 0, 1);
        let mut j = Join::new(p);
        let mut c = Collect::default();
        for t in [0, min, max] {
            j.on_row(Side::Left, t, 1, Some(b"k"), &row(t), 0, &mut c).unwrap();
        }
        let mut k = snapshot_and_restore(&mut j, p);
        assert_eq!(k.state_bases(), j.state_bases());
        assert_eq!((k.buckets(), k.keys()), (3, 1));
        for t in [1, min + 1, max] {
            k.on_row(Side::Right, t, 1, Some(b"k"), &row(t), 0, &mut c).unwrap();
        }
        c.pairs.sort();
        assert_eq!(c.pairs, vec![(min, min + 1), (0, 1), (max, max)]);
        k.finish(&mut c).unwrap();
        assert!(c.unmatched.is_empty());
    }

    #[test]
    #[cfg_attr(miri, ignore = "mmap and files")]
    fn arena_state_with_mapped_index_tables() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Join::with_state(params(JoinKind::Full, 0, 10), Some(dir.path()));
        let mut c = Collect::default();
        // Enough keys that the index tables outgrow the heap threshold and are mapped.
        let n = 600_000i64;
        for k in 0..n {
            let key = k.to_le_bytes();
            j.on_row(Side::Left, k / 200_000, crate::router::key_hash(&key), Some(&key), &row(k), 0, &mut c).unwrap();
        }
        assert!(j.index_mapped_bytes() > 0, "index tables are in mapped files");
        j.release_resident(u64::MAX);
        for k in 0..n {
            let key = k.to_le_bytes();
            let ts = k / 200_000 + 1;
            j.on_row(Side::Right, ts, crate::router::key_hash(&key), Some(&key), &row(-k), 0, &mut c).unwrap();
        }
        assert_eq!(c.pairs.len(), n as usize);
        assert!(c.pairs.iter().all(|&(l, r)| l == -r), "every pair is one key's two rows");
        j.finish(&mut c).unwrap();
        assert!(c.unmatched.is_empty());
        assert_eq!(j.index_mapped_bytes(), 0, "finish frees the tables");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file left behind");
    }

    #[test]
    fn null_key_never_matches() {
        let mut j = Join::new(params(JoinKind::Inner, 0, 0));
        let mut c = Collect::default();
        j.on_row(Side::Left, 1, 0, None, &row(1), 0, &mut c).unwrap();
        j.on_row(Side::Right, 1, 0, None, &row(1), 0, &mut c).unwrap();
        assert!(c.pairs.is_empty() && c.unmatched.is_empty());
        assert_eq!(j.stats.unmatched, [1, 1]);
    }
}

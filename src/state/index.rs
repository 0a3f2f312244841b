//! Key hash -> rows of that key on each side: the index of the join state.
//!
//! An entry is one 20-byte [`Slot`] (`repr(C)`, align 4): a 32-bit *tag* (the low 32
//! bits of the key's hash) and, per side, either nothing, the one row of the key (its
//! [`Ref`] inline: an `i32` bucket and a `u32` root), or the number of a *spill* list
//! holding its rows. With the tables' slack (at most 7/8 full, doubling) and the spill
//! lists this measured 37.8 bytes per live key on the built-in 10M-key workload, down
//! from 59.7 with the former 32-byte slot of a 64-bit hash and two `i64` times
//! (perf/index20-2026-11-29.md).
//!
//! Keys are not stored in the index: the join compares the key of a stored record
//! before it counts a match. Two keys whose hashes agree in the bits that pick the
//! table (48..54) and in the tag share a slot and are told apart there: about
//! n^2 / (2 * 64 * 2^32) pairs among n keys of one index (45 at 5M keys; the built-in
//! workload's two shards of 2.5M keys each showed 27), each costing at most a record
//! read when its times fall in a probe's window.
//!
//! Buckets leave oldest first, so a [`Ref`] is live exactly when its bucket (numbered
//! relative to a per-side base, see `SideStore`) is at or after its side's live-from
//! bucket; dead refs are skipped and removed whenever their key is touched, and
//! [`KeyIndex::sweep_some`] (sequential, amortised O(1) per dropped row) removes the
//! rest. Dropping a bucket therefore touches only the bucket itself.
//!
//! The index is [`INDEX_PARTS`] independent tables chosen by hash bits, so that neither a
//! table's growth (a rehash of every entry) nor a sweep ever stops the shard for long:
//! each touches 1/64 of the keys. One stop-the-world resize of a 1M-key table stalled a
//! shard for 0.3-0.5 s and, through the full ring, its peer too (perf/bench-notes.md).
//!
//! Each table is open addressing with linear probing over a flat array of slots (tag 0
//! marks a free slot; a key whose tag is 0 is stored as 1, and the record's key tells
//! them apart), at most 7/8 full. A key's home slot is `tag & mask`, so a table can
//! grow or shrink from its tags alone; tables therefore never exceed 2^32 slots
//! ([`TABLE_SLOTS_MAX`]). A slot's place follows from the hash alone, so
//! [`KeyIndex::prefetch`] can start the cache miss of a probe a few rows ahead of it: the
//! miss on this table was a third of a shard's time (perf/flamegraph-notes.md).
//!
//! Tables are allocated through an [`IndexAlloc`]: the heap, or (with `engine.state_dir`)
//! mapped files, whose pages the kernel can write out and evict under memory pressure
//! (see index_alloc.rs; budget.rs for why the index is kept resident otherwise).

use allocator_api2::vec::Vec as AVec;

use super::arena::StateError;

pub use super::index_alloc::IndexAlloc;

/// A row in state: its bucket, numbered relative to its side's base (the side's
/// `SideStore` converts), and the position of its record's root in that bucket's buffer
/// (below [`ROOT_MAX`]). Buckets of a side are ordered by event time, so `bucket` orders
/// refs by time at bucket granularity.
///
/// Only `state` makes refs and sees `root`: `SideStore` reads a record at `root`
/// without checking it again, which is sound only for the position of a record's root
/// that the store itself handed out (see `arena::Root`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ref {
    pub bucket: i32,
    pub(super) root: u32,
}

const _: () = assert!(std::mem::size_of::<Ref>() == 8);

/// Roots are below this; the top bit of [`Slot::root`] marks a spill list.
pub const ROOT_MAX: u32 = 1 << 31;
const SPILL: u32 = 1 << 31;
const EMPTY: u32 = u32::MAX;

#[inline]
fn is_spill(root: u32) -> bool {
    root != EMPTY && root >= ROOT_MAX
}

/// One key's rows. `tag`: the low 32 bits of the key hash (0 = free slot, see
/// [`stored_tag`]). Per side `s`: `root[s] == EMPTY`: none; `root[s] < ROOT_MAX`: one,
/// `Ref { bucket: bucket[s], root: root[s] }`; otherwise `spill[root[s] & !SPILL]` holds
/// them (two or more; dead ones are removed lazily) and `bucket[s]` is the oldest of
/// their buckets, so that a probe scans the list for dead refs only when one can be dead.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Slot {
    tag: u32,
    bucket: [i32; 2],
    root: [u32; 2],
}

const _: () = assert!(std::mem::size_of::<Slot>() == 20);
const _: () = assert!(std::mem::align_of::<Slot>() == 4);

/// Lists of refs of keys with more than one row on a side; freed ids are reused.
#[derive(Default)]
struct Spill {
    lists: Vec<Vec<Ref>>,
    free: Vec<u32>,
    /// Refs held by all lists, and room for refs the lists have allocated (for
    /// [`KeyIndex::bytes`]; freed lists keep theirs for reuse).
    refs: usize,
    capacity: usize,
}

impl Spill {
    fn add(&mut self, a: Ref, b: Ref) -> u32 {
        match self.free.pop() {
            Some(id) => {
                self.push(id, a);
                self.push(id, b);
                id
            }
            None => {
                assert!(self.lists.len() < SPILL as usize, "more than 2^31 keys with several rows");
                self.lists.push(vec![a, b]);
                self.refs += 2;
                self.capacity += self.lists.last().expect("just pushed").capacity();
                (self.lists.len() - 1) as u32
            }
        }
    }

    #[inline]
    fn push(&mut self, id: u32, r: Ref) {
        let l = &mut self.lists[id as usize];
        let before = l.capacity();
        l.push(r);
        self.capacity += l.capacity() - before;
        self.refs += 1;
    }

    /// Heap bytes of the lists: their headers, the refs they have room for, and the
    /// allocator's overhead of a block per list (16 bytes with glibc malloc).
    fn bytes(&self) -> usize {
        self.lists.capacity() * std::mem::size_of::<Vec<Ref>>()
            + self.capacity * std::mem::size_of::<Ref>()
            + self.lists.len() * 16
    }

    fn release(&mut self, id: u32) {
        let l = &mut self.lists[id as usize];
        self.refs -= l.len();
        l.clear();
        if l.capacity() > 8 {
            let before = l.capacity();
            l.shrink_to(2);
            self.capacity -= before - l.capacity();
        }
        self.free.push(id);
    }
}

/// Tables in the index.
pub const INDEX_PARTS: usize = 64;

/// Hashes come from [`crate::router::key_hash`].
pub struct KeyIndex {
    parts: Vec<Table>,
    spill: Spill,
    alloc: IndexAlloc,
    /// Next table the incremental sweep visits.
    sweep_cursor: usize,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex::new(IndexAlloc::heap())
    }
}

/// Bits 48..54 pick the table; the low 32 bits (the tag) place a key in it.
#[inline]
fn part_of(hash: u64) -> usize {
    ((hash >> 48) as usize) & (INDEX_PARTS - 1)
}

/// Removes `side`'s dead refs (bucket below `live_from`) from `slot`.
fn prune(slot: &mut Slot, spill: &mut Spill, side: usize, live_from: i32) {
    let root = slot.root[side];
    if root == EMPTY {
    } else if root < ROOT_MAX {
        if slot.bucket[side] < live_from {
            slot.root[side] = EMPTY;
        }
    } else {
        if slot.bucket[side] >= live_from {
            return; // its oldest ref is live: all are
        }
        let id = root & !SPILL;
        let l = &mut spill.lists[id as usize];
        let before = l.len();
        l.retain(|r| r.bucket >= live_from);
        spill.refs -= before - l.len();
        match l.len() {
            0 => {
                spill.release(id);
                slot.root[side] = EMPTY;
            }
            1 => {
                let r = l[0];
                spill.release(id);
                slot.bucket[side] = r.bucket;
                slot.root[side] = r.root;
            }
            _ => slot.bucket[side] = l.iter().map(|r| r.bucket).min().expect("two or more refs"),
        }
    }
}

/// One key's entry, borrowed from the index.
pub struct Entry<'a> {
    slot: &'a mut Slot,
    spill: &'a mut Spill,
}

impl Entry<'_> {
    /// Calls `f` on every live ref of `side` (bucket at or after `live_from`), removing
    /// dead ones on the way.
    #[inline]
    pub fn for_each_live(&mut self, side: usize, live_from: i32, mut f: impl FnMut(Ref)) {
        let root = self.slot.root[side];
        if root == EMPTY {
            return;
        }
        if root < ROOT_MAX {
            let bucket = self.slot.bucket[side];
            if bucket < live_from {
                self.slot.root[side] = EMPTY;
            } else {
                f(Ref { bucket, root });
            }
            return;
        }
        prune(self.slot, self.spill, side, live_from);
        let root = self.slot.root[side];
        if root == EMPTY {
        } else if root < ROOT_MAX {
            f(Ref { bucket: self.slot.bucket[side], root });
        } else {
            for &r in &self.spill.lists[(root & !SPILL) as usize] {
                f(r);
            }
        }
    }

    /// Adds `r` to `side`'s rows, dropping that side's dead refs when it has several.
    #[inline]
    pub fn push(&mut self, side: usize, r: Ref, live_from: i32) {
        debug_assert!(r.root < ROOT_MAX);
        let root = self.slot.root[side];
        if is_spill(root) && self.spill.lists[(root & !SPILL) as usize].len() >= 4 {
            prune(self.slot, self.spill, side, live_from);
        }
        let root = self.slot.root[side];
        if root == EMPTY || (root < ROOT_MAX && self.slot.bucket[side] < live_from) {
            self.slot.bucket[side] = r.bucket;
            self.slot.root[side] = r.root;
        } else if root < ROOT_MAX {
            let old = Ref { bucket: self.slot.bucket[side], root };
            self.slot.root[side] = SPILL | self.spill.add(old, r);
            self.slot.bucket[side] = old.bucket.min(r.bucket);
        } else {
            self.spill.push(root & !SPILL, r);
            self.slot.bucket[side] = self.slot.bucket[side].min(r.bucket);
        }
    }

    /// Live or dead refs held for `side` (for tests).
    pub fn len(&self, side: usize) -> usize {
        match self.slot.root[side] {
            EMPTY => 0,
            r if r < ROOT_MAX => 1,
            r => self.spill.lists[(r & !SPILL) as usize].len(),
        }
    }
}

/// One open-addressing table. Invariants: `slots.len()` is 0 or a power of two, at most
/// [`TABLE_SLOTS_MAX`]; `len` slots have a non-zero tag; `len <= slots.len() * LOAD_MAX`;
/// every key is at or after its home slot (`tag & mask`) with no free slot in between
/// (linear probing).
struct Table {
    slots: AVec<Slot, IndexAlloc>,
    len: usize,
}

const FREE: Slot = Slot { tag: 0, bucket: [0; 2], root: [EMPTY; 2] };
const TABLE_SLOTS_MIN: usize = 16;
/// A key's home is `tag & mask` with a 32-bit tag: a bigger table would leave slots no
/// key can call home. 2^32 slots in each of 64 tables is far beyond any memory here.
const TABLE_SLOTS_MAX: usize = 1 << 32;
/// Most a table is filled, `LOAD_NUM / LOAD_DEN`, before it doubles.
const LOAD_NUM: usize = 7;
const LOAD_DEN: usize = 8;

/// The tag a key hash is stored under: its low 32 bits, 0 (the mark of a free slot)
/// replaced by 1.
#[inline]
fn stored_tag(hash: u64) -> u32 {
    (hash as u32).max(1)
}

impl Table {
    fn new(alloc: IndexAlloc) -> Table {
        Table { slots: AVec::new_in(alloc), len: 0 }
    }

    /// A table of `n` free slots; fails (naming the cause) when `alloc` cannot give them.
    fn with_slots(n: usize, alloc: IndexAlloc) -> Result<Table, StateError> {
        if n > TABLE_SLOTS_MAX {
            return Err(StateError::Index { reason: format!("a table of {n} slots: more than {TABLE_SLOTS_MAX}") });
        }
        let mut slots = AVec::new_in(alloc.clone());
        slots.try_reserve_exact(n).map_err(|_| StateError::Index {
            reason: alloc.last_error().unwrap_or_else(|| format!("out of memory for a table of {n} slots")),
        })?;
        slots.resize(n, FREE);
        Ok(Table { slots, len: 0 })
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Inserts a slot known to be absent (no growth).
    fn put(&mut self, slot: Slot) {
        let mask = self.mask();
        let mut i = slot.tag as usize & mask;
        while self.slots[i].tag != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
        self.len += 1;
    }

    /// Keeps the slots that `keep` keeps (it may change them), in place, in one pass.
    ///
    /// The pass starts just after a slot that is free before it begins: no probe run
    /// crosses that slot, so every key's home lies between it and the key. Visiting
    /// slots in order from there, each key is taken out and, if kept, put back at the
    /// first free slot from its home, which is at or before where it was. A key placed
    /// this way ends its run before the slot being visited, so taking a later key out
    /// never opens a hole in it; keys not yet visited are put back anyway.
    ///
    /// A table left less than 1/4 full is then moved into a smaller one (the only
    /// allocation; sweeps once allocated a new table every time, and the page faults of
    /// those fresh tables stalled a shard for tens of ms per sweep pass).
    fn retain(&mut self, mut keep: impl FnMut(&mut Slot) -> bool) -> Result<(), StateError> {
        let n = self.slots.len();
        let Some(start) = self.slots.iter().position(|s| s.tag == 0) else {
            return Ok(()); // empty table (0 slots): nothing to keep
        };
        let mask = self.mask();
        for k in 1..=n {
            let i = (start + k) & mask;
            if self.slots[i].tag != 0 {
                let mut s = self.slots[i];
                self.slots[i] = FREE;
                self.len -= 1;
                if keep(&mut s) {
                    self.put(s);
                }
            }
        }
        if n > TABLE_SLOTS_MIN && self.len * 4 < n {
            let m = if self.len == 0 {
                0
            } else {
                (self.len * LOAD_DEN / LOAD_NUM + 1).next_power_of_two().max(TABLE_SLOTS_MIN)
            };
            let mut t = Table::with_slots(m, self.slots.allocator().clone())?;
            for s in self.slots.iter().filter(|s| s.tag != 0) {
                t.put(*s);
            }
            *self = t;
        }
        Ok(())
    }

    /// Room for one more key.
    #[inline]
    fn reserve_one(&mut self) -> Result<(), StateError> {
        if (self.len + 1) * LOAD_DEN > self.slots.len() * LOAD_NUM {
            let n = (self.slots.len() * 2).max(TABLE_SLOTS_MIN);
            let mut bigger = Table::with_slots(n, self.slots.allocator().clone())?;
            for s in self.slots.iter().filter(|s| s.tag != 0) {
                bigger.put(*s);
            }
            *self = bigger;
        }
        Ok(())
    }

    /// The slot of `tag` (stored form), inserted free of refs if absent. Needs
    /// `reserve_one` first.
    #[inline]
    fn slot(&mut self, tag: u32) -> &mut Slot {
        let mask = self.mask();
        let mut i = tag as usize & mask;
        loop {
            let t = self.slots[i].tag;
            if t == tag {
                return &mut self.slots[i];
            }
            if t == 0 {
                self.slots[i] = Slot { tag, ..FREE };
                self.len += 1;
                return &mut self.slots[i];
            }
            i = (i + 1) & mask;
        }
    }

    fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }
}

fn sweep_table(table: &mut Table, spill: &mut Spill, live_from: [i32; 2]) -> Result<(), StateError> {
    table.retain(|s| {
        for (side, &from) in live_from.iter().enumerate() {
            prune(s, spill, side, from);
        }
        !(s.root[0] == EMPTY && s.root[1] == EMPTY)
    })
}

impl KeyIndex {
    /// An empty index whose tables come from `alloc`.
    pub fn new(alloc: IndexAlloc) -> KeyIndex {
        KeyIndex {
            parts: (0..INDEX_PARTS).map(|_| Table::new(alloc.clone())).collect(),
            spill: Spill::default(),
            alloc,
            sweep_cursor: 0,
        }
    }

    /// Starts loading the memory that [`KeyIndex::entry`] for `hash` will touch first.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let t = &self.parts[part_of(hash)];
        if !t.slots.is_empty() {
            super::prefetch::read(&t.slots[stored_tag(hash) as usize & t.mask()]);
        }
    }

    /// The entry for `hash`, created empty if absent. Fails only when a table cannot
    /// grow (its mapped file cannot be created: see [`IndexAlloc`]).
    #[inline]
    pub fn entry(&mut self, hash: u64) -> Result<Entry<'_>, StateError> {
        let p = part_of(hash);
        self.parts[p].reserve_one()?;
        Ok(Entry { slot: self.parts[p].slot(stored_tag(hash)), spill: &mut self.spill })
    }

    /// Removes dead refs (bucket below `live_from` of their side) everywhere, and
    /// entries left with none.
    pub fn sweep(&mut self, live_from: [i32; 2]) -> Result<(), StateError> {
        for i in 0..INDEX_PARTS {
            sweep_table(&mut self.parts[i], &mut self.spill, live_from)?;
        }
        Ok(())
    }

    /// Sweeps the next `tables` tables (round robin); returns true when the cursor
    /// wrapped around (a whole pass is done).
    pub fn sweep_some(&mut self, live_from: [i32; 2], tables: usize) -> Result<bool, StateError> {
        let mut wrapped = false;
        for _ in 0..tables {
            sweep_table(&mut self.parts[self.sweep_cursor], &mut self.spill, live_from)?;
            self.sweep_cursor = (self.sweep_cursor + 1) % INDEX_PARTS;
            wrapped |= self.sweep_cursor == 0;
        }
        Ok(wrapped)
    }

    pub fn clear(&mut self) {
        for t in &mut self.parts {
            *t = Table::new(self.alloc.clone());
        }
        self.spill = Spill::default();
    }

    /// Keys (strictly: distinct (table, tag) pairs of key hashes) with an entry.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|t| t.len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|t| t.len == 0)
    }

    /// Approximate bytes of the index: tables and spill lists.
    pub fn bytes(&self) -> u64 {
        let tables: usize = self.parts.iter().map(Table::bytes).sum();
        (tables + self.spill.bytes()) as u64
    }

    /// Bytes of the tables held in mapped files (0 on the heap).
    pub fn mapped_bytes(&self) -> u64 {
        self.alloc.mapped_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl KeyIndex {
        fn entry_ok(&mut self, hash: u64) -> Entry<'_> {
            self.entry(hash).unwrap()
        }
    }

    fn live(e: &mut Entry, side: usize, from: i32) -> Vec<Ref> {
        let mut v = Vec::new();
        e.for_each_live(side, from, |r| v.push(r));
        v
    }

    #[test]
    fn inline_then_spill_then_inline_again() {
        let mut ix = KeyIndex::default();
        let r = |bucket, root| Ref { bucket, root };
        ix.entry_ok(7).push(0, r(10, 64), i32::MIN);
        assert_eq!(live(&mut ix.entry_ok(7), 0, i32::MIN), vec![r(10, 64)]);
        assert!(live(&mut ix.entry_ok(7), 1, i32::MIN).is_empty());
        ix.entry_ok(7).push(0, r(20, 128), i32::MIN);
        ix.entry_ok(7).push(0, r(30, 192), i32::MIN);
        assert_eq!(live(&mut ix.entry_ok(7), 0, i32::MIN), vec![r(10, 64), r(20, 128), r(30, 192)]);
        // Rows before 25 are gone: one left, back inline; the spill list is reused.
        assert_eq!(live(&mut ix.entry_ok(7), 0, 25), vec![r(30, 192)]);
        assert_eq!(ix.entry_ok(7).len(0), 1);
        assert_eq!(ix.spill.free.len(), 1);
        assert_eq!(ix.spill.refs, 0);
        assert_eq!(ix.spill.capacity, ix.spill.lists.iter().map(Vec::capacity).sum::<usize>());
        ix.entry_ok(7).push(0, r(40, 256), 25);
        assert_eq!(ix.spill.free.len(), 0);
        assert_eq!(live(&mut ix.entry_ok(7), 0, 0), vec![r(30, 192), r(40, 256)]);
        // A dead inline ref is replaced, not spilled.
        ix.entry_ok(8).push(1, r(1, 64), 0);
        ix.entry_ok(8).push(1, r(50, 72), 10);
        assert_eq!(ix.entry_ok(8).len(1), 1);
        assert_eq!(ix.len(), 2);
    }

    #[test]
    fn sweep_removes_dead_entries_and_spills() {
        let mut ix = KeyIndex::default();
        let n = if cfg!(miri) { 300 } else { 10_000u64 };
        for k in 0..n {
            let h = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            for t in 0..(k % 3 + 1) as i32 {
                ix.entry_ok(h).push((k % 2) as usize, Ref { bucket: t * 100 + k as i32 % 100, root: 64 }, i32::MIN);
            }
        }
        assert_eq!(ix.len() as u64, n);
        let before = ix.bytes();
        ix.sweep([100, 100]).unwrap();
        // Keys with one row (k % 3 == 0) had ts < 100 only: gone. Others keep 1 or 2 rows.
        assert_eq!(ix.len() as u64, n - n.div_ceil(3));
        ix.sweep([1_000, 1_000]).unwrap();
        assert!(ix.is_empty());
        assert_eq!(ix.spill.refs, 0);
        assert_eq!(ix.spill.capacity, ix.spill.lists.iter().map(Vec::capacity).sum::<usize>());
        // Emptied tables shrink, except at the minimum size (Miri's 300 keys leave 64
        // tables of 16 slots); freed spill lists keep their room for reuse.
        if n > (INDEX_PARTS * TABLE_SLOTS_MIN) as u64 {
            assert!(ix.bytes() < before);
        } else {
            assert!(ix.bytes() <= before);
        }
    }

    #[test]
    fn spill_bytes_follow_list_capacity() {
        let mut ix = KeyIndex::default();
        let cap_sum = |ix: &KeyIndex| ix.spill.lists.iter().map(Vec::capacity).sum::<usize>();
        // One key with 20 rows (a list grown past 8), one with 3; then all dead.
        for (h, rows) in [(7u64, 20), (9, 3)] {
            for t in 0..rows {
                ix.entry_ok(h).push(0, Ref { bucket: t, root: 64 }, i32::MIN);
            }
        }
        assert_eq!((ix.spill.refs, ix.spill.capacity), (23, cap_sum(&ix)));
        let grown = ix.bytes();
        ix.sweep([100, 100]).unwrap();
        assert_eq!((ix.spill.refs, ix.spill.capacity), (0, cap_sum(&ix)));
        assert!(ix.spill.capacity <= 2 + 4, "the long list shrank: {}", ix.spill.capacity);
        // Freed lists are reused: their room counts once.
        for t in 0..5 {
            ix.entry_ok(11).push(1, Ref { bucket: 200 + t, root: 64 }, 100);
        }
        assert_eq!((ix.spill.refs, ix.spill.capacity), (5, cap_sum(&ix)));
        assert!(ix.bytes() < grown);
    }

    /// Where `tag` is, by a plain probe (no insert).
    fn find(t: &Table, tag: u32) -> Option<usize> {
        let mask = t.mask();
        let mut i = tag as usize & mask;
        loop {
            match t.slots[i].tag {
                0 => return None,
                h if h == tag => return Some(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    #[test]
    fn retain_in_place_keeps_every_kept_key_reachable() {
        // Few distinct homes (long runs), some near the end of the table (runs that wrap).
        let n = if cfg!(miri) { 100 } else { 3_000u64 };
        let tag = |k: u64| (((k % 11) * 97 + 4000) | (k << 20)) as u32;
        for keep_every in [2u64, 3, 7] {
            let mut t = Table::new(IndexAlloc::heap());
            for k in 0..n {
                t.reserve_one().unwrap();
                t.slot(tag(k));
            }
            assert_eq!(t.len as u64, n);
            t.retain(|s| (s.tag as u64 >> 20) % keep_every == 0).unwrap();
            for k in 0..n {
                assert_eq!(find(&t, tag(k)).is_some(), k % keep_every == 0, "key {k}, keeping every {keep_every}");
            }
            assert_eq!(t.len as u64, n.div_ceil(keep_every));
            assert!(t.len * LOAD_DEN <= t.slots.len() * LOAD_NUM);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "mmap and files")]
    fn a_table_that_cannot_grow_is_an_error_naming_the_file() {
        let mut ix = KeyIndex::new(IndexAlloc::mapped(std::path::Path::new("/nonexistent/weft-state")));
        // Small hashes all land in table 0, which outgrows the heap threshold.
        let err = (1..20_000u64).find_map(|h| ix.entry(h).err()).expect("growth into a mapped file fails");
        assert!(err.to_string().contains("/nonexistent/weft-state/index-"), "{err}");
    }

    #[test]
    fn prefetch_then_entry_finds_the_same_key() {
        let mut ix = KeyIndex::default();
        ix.prefetch(5); // no table yet: nothing to touch
        ix.entry_ok(5).push(1, Ref { bucket: 1, root: 64 }, i32::MIN);
        for h in [0, 5, u64::MAX] {
            ix.prefetch(h);
        }
        assert_eq!(live(&mut ix.entry_ok(5), 1, 0), vec![Ref { bucket: 1, root: 64 }]);
    }

    #[test]
    fn spill_lists_track_their_oldest_bucket() {
        let mut ix = KeyIndex::default();
        let r = |bucket| Ref { bucket, root: 64 };
        for b in [50, 10, 30] {
            ix.entry_ok(3).push(0, r(b), i32::MIN);
        }
        assert_eq!(live(&mut ix.entry_ok(3), 0, 20), vec![r(50), r(30)]);
        assert_eq!(live(&mut ix.entry_ok(3), 0, 30), vec![r(50), r(30)]);
        assert_eq!(live(&mut ix.entry_ok(3), 0, 31), vec![r(50)]);
        ix.entry_ok(3).push(0, r(5), 0);
        ix.entry_ok(3).push(0, r(70), 0);
        assert_eq!(live(&mut ix.entry_ok(3), 0, 6), vec![r(50), r(70)]);
    }

    #[test]
    fn slots_are_20_bytes_and_hashes_share_one_by_table_and_tag() {
        assert_eq!(std::mem::size_of::<Slot>(), 20);
        let mut ix = KeyIndex::default();
        // Equal low 32 bits, different high bits outside the table bits: one slot.
        let (a, b) = (0x0000_0001_0000_002A_u64, 0x0000_0002_0000_002A_u64);
        assert_eq!(part_of(a), part_of(b));
        ix.entry_ok(a).push(0, Ref { bucket: 1, root: 64 }, i32::MIN);
        ix.entry_ok(b).push(0, Ref { bucket: 2, root: 128 }, i32::MIN);
        assert_eq!(ix.len(), 1);
        assert_eq!(ix.entry_ok(a).len(0), 2);
        // Same tag, another table: two slots. A tag of 0 is stored as 1, sharing with 1.
        ix.entry_ok(a | 1 << 48).push(0, Ref { bucket: 3, root: 64 }, i32::MIN);
        assert_eq!(ix.len(), 2);
        ix.entry_ok(1 << 32).push(1, Ref { bucket: 4, root: 64 }, i32::MIN);
        ix.entry_ok(1).push(1, Ref { bucket: 5, root: 64 }, i32::MIN);
        assert_eq!(ix.len(), 3);
        assert_eq!(ix.entry_ok(0).len(1), 2);
    }

    #[test]
    fn a_table_never_outgrows_its_tags() {
        assert!(matches!(Table::with_slots(TABLE_SLOTS_MAX + 1, IndexAlloc::heap()), Err(StateError::Index { .. })));
    }

    #[test]
    fn long_lists_prune_dead_refs_on_push() {
        let mut ix = KeyIndex::default();
        for t in 0..100 {
            // Only the last 3 rows are live each time.
            ix.entry_ok(1).push(0, Ref { bucket: t, root: 64 }, t - 2);
        }
        assert!(ix.entry_ok(1).len(0) <= 5, "{}", ix.entry_ok(1).len(0));
    }
}

//! Key -> rows of that key on each side: the in-memory index of the join state.
//!
//! Buckets leave oldest first, so a [`Ref`] is live exactly when its time is at or
//! after its side's `live_from_ts`; dead refs are skipped and removed whenever their
//! key is touched, and [`KeyIndex::sweep`] (sequential, amortised O(1) per dropped row)
//! removes the rest. Dropping a bucket therefore touches only the bucket itself.
//!
//! Cost: one hash-table probe per row (its key's entry holds both sides' refs inline
//! for the common case of one row per key and side).
//!
//! The index is [`INDEX_PARTS`] independent tables chosen by hash bits, so that neither a
//! table's growth (a rehash of every entry) nor a sweep ever stops the shard for long:
//! each touches 1/64 of the keys. One stop-the-world resize of a 1M-key table stalled a
//! shard for 0.3-0.5 s and, through the full ring, its peer too (perf/bench-notes.md).

use hashbrown::HashTable;
use smallvec::SmallVec;

/// A row in state: its event time (which names its bucket) and the position of its
/// record's root in that bucket's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ref {
    pub ts: i64,
    pub root: u32,
}

/// One key's rows on each side.
pub struct KeyEntry {
    pub hash: u64,
    pub key: SmallVec<[u8; 16]>,
    pub refs: [SmallVec<[Ref; 1]>; 2],
}

/// Tables in the index.
pub const INDEX_PARTS: usize = 64;

/// Hashes come from [`crate::router::key_hash`]; equal keys have equal bytes.
pub struct KeyIndex {
    parts: Vec<HashTable<KeyEntry>>,
    /// Next table the incremental sweep visits.
    sweep_cursor: usize,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex { parts: (0..INDEX_PARTS).map(|_| HashTable::new()).collect(), sweep_cursor: 0 }
    }
}

/// Bits 48..54 pick the table: hashbrown uses the top 7 bits and the low bits itself.
#[inline]
fn part_of(hash: u64) -> usize {
    ((hash >> 48) as usize) & (INDEX_PARTS - 1)
}

fn sweep_table(table: &mut HashTable<KeyEntry>, live_from_ts: [i64; 2]) {
    table.retain(|e| {
        for side in 0..2 {
            e.refs[side].retain(|r| r.ts >= live_from_ts[side]);
            if e.refs[side].spilled() && e.refs[side].len() < e.refs[side].capacity() / 4 {
                e.refs[side].shrink_to_fit();
            }
        }
        !(e.refs[0].is_empty() && e.refs[1].is_empty())
    });
    if table.capacity() > 64 && table.len() < table.capacity() / 4 {
        table.shrink_to_fit(|e| e.hash);
    }
}

impl KeyIndex {
    /// The entry for `key`, created empty if absent.
    #[inline]
    pub fn entry(&mut self, hash: u64, key: &[u8]) -> &mut KeyEntry {
        self.parts[part_of(hash)]
            .entry(hash, |e| e.hash == hash && e.key.as_slice() == key, |e| e.hash)
            .or_insert_with(|| KeyEntry {
                hash,
                key: SmallVec::from_slice(key),
                refs: [SmallVec::new(), SmallVec::new()],
            })
            .into_mut()
    }

    /// Removes dead refs everywhere, and entries left with none.
    pub fn sweep(&mut self, live_from_ts: [i64; 2]) {
        for t in &mut self.parts {
            sweep_table(t, live_from_ts);
        }
    }

    /// Sweeps the next `tables` tables (round robin); returns true when the cursor
    /// wrapped around (a whole pass is done).
    pub fn sweep_some(&mut self, live_from_ts: [i64; 2], tables: usize) -> bool {
        let mut wrapped = false;
        for _ in 0..tables {
            sweep_table(&mut self.parts[self.sweep_cursor], live_from_ts);
            self.sweep_cursor = (self.sweep_cursor + 1) % INDEX_PARTS;
            wrapped |= self.sweep_cursor == 0;
        }
        wrapped
    }

    pub fn clear(&mut self) {
        for t in &mut self.parts {
            *t = HashTable::new();
        }
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|t| t.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|t| t.is_empty())
    }

    /// Approximate heap bytes of the index.
    pub fn bytes(&self) -> u64 {
        self.parts.iter().map(|t| (t.capacity() * (std::mem::size_of::<KeyEntry>() + 1)) as u64).sum()
    }
}

//! Key -> rows of that key on each side: the in-memory index of the join state.
//!
//! Buckets leave oldest first, so a [`Ref`] is live exactly when its time is at or
//! after its side's `live_from_ts`; dead refs are skipped and removed whenever their
//! key is touched, and [`KeyIndex::sweep`] (sequential, amortised O(1) per dropped row)
//! removes the rest. Dropping a bucket therefore touches only the bucket itself.
//!
//! Cost: one hash-table probe per row (its key's entry holds both sides' refs inline
//! for the common case of one row per key and side).

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

/// Hashes come from [`crate::router::key_hash`]; equal keys have equal bytes.
#[derive(Default)]
pub struct KeyIndex {
    table: HashTable<KeyEntry>,
}

impl KeyIndex {
    /// The entry for `key`, created empty if absent.
    #[inline]
    pub fn entry(&mut self, hash: u64, key: &[u8]) -> &mut KeyEntry {
        self.table
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
        self.table.retain(|e| {
            for side in 0..2 {
                e.refs[side].retain(|r| r.ts >= live_from_ts[side]);
                if e.refs[side].spilled() && e.refs[side].len() < e.refs[side].capacity() / 4 {
                    e.refs[side].shrink_to_fit();
                }
            }
            !(e.refs[0].is_empty() && e.refs[1].is_empty())
        });
    }

    pub fn clear(&mut self) {
        self.table = HashTable::new();
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Approximate heap bytes of the index.
    pub fn bytes(&self) -> u64 {
        (self.table.capacity() * (std::mem::size_of::<KeyEntry>() + 1)) as u64
    }
}

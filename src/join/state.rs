//! Join state of one shard: rows of each side in time buckets, and an index from key
//! to the rows of that key on each side.
//!
//! - A [`SideStore`] keeps a side's rows in append-only buckets of `bucket_ms` of event
//!   time. A whole bucket leaves at once when the watermark has passed the retention
//!   bound of its newest possible row: no per-row expiry work, no compaction.
//! - The [`KeyIndex`] maps a key to small lists of [`Ref`]s (event time + ordinal in
//!   the bucket). A reference never dangles: when a bucket is dropped, the index
//!   entries of its rows are pruned (one lookup per dropped row).
//! - Outer-join bookkeeping (has this row matched?) is a bitmap per bucket.
//!
//! Stored record in a bucket: `[hash u64][key_len u32][row_len u32][key][row]`.
//! This is the in-memory store of [spine]; the mmap'd rkyv arenas of [state] replace
//! the buckets' `Vec<u8>` with mapped files and keep this shape.

use std::collections::BTreeMap;

use hashbrown::HashTable;
use smallvec::SmallVec;

/// A row of one side in state: its event time (which also names its bucket) and its
/// ordinal in that bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ref {
    pub ts: i64,
    pub ord: u32,
}

const RECORD_HEADER: usize = 16;

#[derive(Default)]
pub struct Bucket {
    data: Vec<u8>,
    offsets: Vec<u32>,
    matched: Vec<u64>,
}

impl Bucket {
    fn push(&mut self, hash: u64, key: &[u8], row: &[u8], matched: bool) -> u32 {
        let ord = self.offsets.len() as u32;
        self.offsets.push(self.data.len() as u32);
        self.data.extend_from_slice(&hash.to_le_bytes());
        self.data.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.data.extend_from_slice(&(row.len() as u32).to_le_bytes());
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(row);
        if ord as usize % 64 == 0 {
            self.matched.push(0);
        }
        if matched {
            self.set_matched(ord);
        }
        ord
    }

    /// (hash, key, row) of record `ord`.
    #[inline]
    pub fn get(&self, ord: u32) -> (u64, &[u8], &[u8]) {
        let at = self.offsets[ord as usize] as usize;
        let d = &self.data[at..];
        let hash = u64::from_le_bytes(d[0..8].try_into().unwrap());
        let kl = u32::from_le_bytes(d[8..12].try_into().unwrap()) as usize;
        let rl = u32::from_le_bytes(d[12..16].try_into().unwrap()) as usize;
        (hash, &d[RECORD_HEADER..RECORD_HEADER + kl], &d[RECORD_HEADER + kl..RECORD_HEADER + kl + rl])
    }

    #[inline]
    pub fn is_matched(&self, ord: u32) -> bool {
        self.matched[ord as usize / 64] & (1 << (ord % 64)) != 0
    }

    #[inline]
    pub fn set_matched(&mut self, ord: u32) {
        self.matched[ord as usize / 64] |= 1 << (ord % 64);
    }

    pub fn len(&self) -> u32 {
        self.offsets.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn bytes(&self) -> u64 {
        (self.data.capacity() + self.offsets.capacity() * 4 + self.matched.capacity() * 8) as u64
    }
}

/// The rows of one side, bucketed by event time.
pub struct SideStore {
    bucket_ms: i64,
    buckets: BTreeMap<i64, Bucket>,
    pub rows: u64,
    /// Bytes reclaimed by dropping buckets, since the start.
    pub bytes_reclaimed: u64,
}

impl SideStore {
    pub fn new(bucket_ms: i64) -> SideStore {
        assert!(bucket_ms > 0);
        SideStore { bucket_ms, buckets: BTreeMap::new(), rows: 0, bytes_reclaimed: 0 }
    }

    #[inline]
    pub fn bucket_of(&self, ts: i64) -> i64 {
        ts.div_euclid(self.bucket_ms)
    }

    /// The newest event time bucket `b` can hold.
    pub fn bucket_max_ts(&self, b: i64) -> i128 {
        (b as i128 + 1) * self.bucket_ms as i128 - 1
    }

    pub fn insert(&mut self, ts: i64, hash: u64, key: &[u8], row: &[u8], matched: bool) -> Ref {
        let b = self.bucket_of(ts);
        let ord = self.buckets.entry(b).or_default().push(hash, key, row, matched);
        self.rows += 1;
        Ref { ts, ord }
    }

    #[inline]
    pub fn bucket(&self, ts: i64) -> &Bucket {
        &self.buckets[&self.bucket_of(ts)]
    }

    #[inline]
    pub fn bucket_mut(&mut self, ts: i64) -> &mut Bucket {
        let b = self.bucket_of(ts);
        self.buckets.get_mut(&b).expect("a Ref always names a live bucket")
    }

    /// The oldest bucket, if any.
    pub fn first(&self) -> Option<i64> {
        self.buckets.keys().next().copied()
    }

    pub fn remove(&mut self, b: i64) -> Option<Bucket> {
        let bucket = self.buckets.remove(&b)?;
        self.rows -= bucket.len() as u64;
        self.bytes_reclaimed += bucket.bytes();
        Some(bucket)
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    pub fn bytes(&self) -> u64 {
        self.buckets.values().map(Bucket::bytes).sum()
    }
}

/// One key's rows on each side.
pub struct KeyEntry {
    pub hash: u64,
    pub key: SmallVec<[u8; 16]>,
    pub refs: [SmallVec<[Ref; 1]>; 2],
}

/// Key -> rows. Hashes come from [`crate::router::key_hash`]; equal keys have equal bytes.
#[derive(Default)]
pub struct KeyIndex {
    table: HashTable<KeyEntry>,
}

impl KeyIndex {
    #[inline]
    pub fn get_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut KeyEntry> {
        self.table.find_mut(hash, |e| e.hash == hash && e.key.as_slice() == key)
    }

    /// The entry for `key`, created empty if absent.
    #[inline]
    pub fn entry(&mut self, hash: u64, key: &[u8]) -> &mut KeyEntry {
        self.table
            .entry(hash, |e| e.hash == hash && e.key.as_slice() == key, |e| e.hash)
            .or_insert_with(|| KeyEntry { hash, key: SmallVec::from_slice(key), refs: [SmallVec::new(), SmallVec::new()] })
            .into_mut()
    }

    /// Removes every ref of `side` in bucket `b` from the key's entry, and the entry
    /// when nothing is left.
    pub fn prune(&mut self, hash: u64, key: &[u8], side: usize, b: i64, bucket_ms: i64) {
        if let Ok(e) = self.table.find_entry(hash, |e| e.hash == hash && e.key.as_slice() == key) {
            let entry = e.get();
            let _ = entry;
            let mut occupied = e;
            let ent = occupied.get_mut();
            ent.refs[side].retain(|r| r.ts.div_euclid(bucket_ms) != b);
            if ent.refs[0].is_empty() && ent.refs[1].is_empty() {
                occupied.remove();
            } else if ent.refs[side].capacity() > 8 && ent.refs[side].len() < ent.refs[side].capacity() / 4 {
                ent.refs[side].shrink_to_fit();
            }
        }
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

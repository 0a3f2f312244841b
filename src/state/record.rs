//! The stored form of one row in join state: an rkyv archive, read in place.
//!
//! In a state buffer (heap or mapped file) a record is
//! ```text
//!   u32 payload_len, u32 RECORD_TAG       (8-byte aligned)
//!   payload: rkyv archive of `Record`       (key bytes, row bytes, then the root)
//!   zero padding to the next 8-byte boundary
//! ```
//! The root of an archive sits at its end, so a record is addressed by the position
//! of its root ([`ROOT_BYTES`] before the payload's end). Everything in the archive is
//! position independent (relative pointers), which is what lets a mapped file be
//! read back zero-copy after a restart.
//!
//! `matched` is the outer-join bookkeeping; it lives in the record so that it
//! survives with the arena, and is flipped in place ([`MATCHED_OFFSET`]).

use rkyv::with::InlineAsBox;

/// Marks the start of every record (`"WREC"` little endian).
pub const RECORD_TAG: u32 = u32::from_le_bytes(*b"WREC");
pub const RECORD_HEADER_BYTES: usize = 8;

#[derive(rkyv::Archive, rkyv::Serialize)]
pub struct Record<'a> {
    pub hash: u64,
    pub ts: i64,
    pub matched: bool,
    #[rkyv(with = InlineAsBox)]
    pub key: &'a [u8],
    #[rkyv(with = InlineAsBox)]
    pub row: &'a [u8],
}

/// Size of the archived root.
pub const ROOT_BYTES: usize = std::mem::size_of::<ArchivedRecord<'static>>();
/// Where `matched` is, from the root.
pub const MATCHED_OFFSET: usize = std::mem::offset_of!(ArchivedRecord<'static>, matched);
/// Where `hash` (a little-endian u64) is, from the root.
pub const HASH_OFFSET: usize = std::mem::offset_of!(ArchivedRecord<'static>, hash);

/// A record's archived bytes (the payload of its place in a buffer), for moving it
/// whole to another buffer ([`super::arena::Buffer::append_archived`]). The layout
/// inside a payload depends only on its start's position modulo 8 (no field is
/// aligned to more, see the assertion below), and every payload starts 8-aligned, so a
/// payload stays a valid archive at any 8-aligned place.
pub fn archive_into<'v>(rec: &Record, scratch: &'v mut rkyv::util::AlignedVec<16>) -> &'v [u8] {
    scratch.clear();
    let v = std::mem::take(scratch);
    *scratch = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(rec, v)
        .expect("serialising into a growing vector does not fail");
    &scratch[..]
}

/// An upper bound of the bytes `append` needs for a record: header, payload with its
/// internal alignment padding, trailing padding.
pub fn record_bytes_max(key_len: usize, row_len: usize) -> usize {
    RECORD_HEADER_BYTES + key_len + row_len + 16 + ROOT_BYTES + 8
}

const _: () = assert!(std::mem::align_of::<ArchivedRecord<'static>>() <= 8);
// The archived hash is little endian whatever the host (rkyv's default), which
// `append_archived` relies on when it rewrites it.
const _: () = assert!(std::mem::size_of::<rkyv::Archived<u64>>() == 8);

#[cfg(test)]
mod tests {
    use super::*;

    /// Serialises `rec` at `pos` bytes into a 16-aligned buffer, as `Buffer::append` does
    /// at a record's payload; returns the buffer and the payload's end.
    fn archive_at(rec: &Record, pos: usize) -> (rkyv::util::AlignedVec<16>, usize) {
        let mut v = rkyv::util::AlignedVec::<16>::new();
        v.resize(pos, 0);
        let v = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(rec, v).unwrap();
        let end = v.len();
        (v, end)
    }

    #[test]
    fn matched_flips_in_place_at_matched_offset() {
        let rec = Record { hash: 7, ts: -3, matched: false, key: b"key", row: b"row bytes" };
        let (mut v, end) = archive_at(&rec, 8);
        let root = end - ROOT_BYTES;
        assert_eq!(v[root + MATCHED_OFFSET], 0);
        v[root + MATCHED_OFFSET] = 1;
        let a = rkyv::access::<ArchivedRecord, rkyv::rancor::Error>(&v[8..end]).unwrap();
        assert!(a.matched);
        assert_eq!((a.hash.to_native(), a.ts.to_native()), (7, -3));
        assert_eq!((a.key.get(), a.row.get()), (&b"key"[..], &b"row bytes"[..]));
    }

    #[test]
    fn record_bytes_max_bounds_every_layout() {
        for pos in (8..64).step_by(8) {
            for (k, r) in [(0, 0), (1, 0), (0, 1), (3, 5), (7, 9), (8, 8), (13, 200)] {
                let key = vec![1u8; k];
                let row = vec![2u8; r];
                let rec = Record { hash: 0, ts: 0, matched: false, key: &key, row: &row };
                let (_, end) = archive_at(&rec, pos);
                let used = RECORD_HEADER_BYTES + (end - pos).next_multiple_of(8);
                assert!(used <= record_bytes_max(k, r), "key {k} row {r} at {pos}: {used} bytes");
            }
        }
    }
}

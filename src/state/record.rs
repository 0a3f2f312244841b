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
    scratch.resize(record_bytes_max(rec.key.len(), rec.row.len()) - RECORD_HEADER_BYTES, 0);
    let end = write_archived(scratch, 0, rec);
    &scratch[..end]
}

/// Where each part of an archived [`Record`] goes, from rkyv's own layout: the key's
/// bytes, then the row's, then the root at the next multiple of its alignment
/// (rkyv serialises the fields in order, writes a `[u8]` unaligned where it stands,
/// and pads before the root). In the root, `key` and `row` are relative pointers:
/// an `i32` offset from the pointer's own place to the bytes, then a `u32` length.
const ROOT_ALIGN: usize = std::mem::align_of::<ArchivedRecord<'static>>();
const KEY_PTR_OFFSET: usize = std::mem::offset_of!(ArchivedRecord<'static>, key);
const ROW_PTR_OFFSET: usize = std::mem::offset_of!(ArchivedRecord<'static>, row);
const TS_OFFSET: usize = std::mem::offset_of!(ArchivedRecord<'static>, ts);

/// Writes `rec` archived at `pos` of `buf` (`pos` 8-aligned in a 16-aligned buffer,
/// as every record payload is) and returns the archive's end: the same bytes
/// `rkyv::api::high::to_bytes_in` writes there (a test holds them equal), at the
/// cost of two copies and a few stores instead of a serializer call per row. The
/// bytes are read back through rkyv (`access_unchecked` on the hot path, `access`
/// with validation on restore), so the archived form stays rkyv's.
///
/// Panics if `buf` is shorter than `pos + record_bytes_max(..) - RECORD_HEADER_BYTES`.
pub fn write_archived(buf: &mut [u8], pos: usize, rec: &Record) -> usize {
    let key_at = pos;
    let row_at = key_at + rec.key.len();
    let pad_at = row_at + rec.row.len();
    let root = pad_at.next_multiple_of(ROOT_ALIGN);
    let end = root + ROOT_BYTES;
    buf[key_at..row_at].copy_from_slice(rec.key);
    buf[row_at..pad_at].copy_from_slice(rec.row);
    let r = &mut buf[pad_at..end];
    r.fill(0);
    let r = &mut r[root - pad_at..];
    r[HASH_OFFSET..HASH_OFFSET + 8].copy_from_slice(&rec.hash.to_le_bytes());
    r[TS_OFFSET..TS_OFFSET + 8].copy_from_slice(&rec.ts.to_le_bytes());
    r[MATCHED_OFFSET] = rec.matched as u8;
    for (field, at, len) in [(KEY_PTR_OFFSET, key_at, rec.key.len()), (ROW_PTR_OFFSET, row_at, rec.row.len())] {
        let rel = at as i64 - (root + field) as i64;
        r[field..field + 4].copy_from_slice(&(rel as i32).to_le_bytes());
        r[field + 4..field + 8].copy_from_slice(&(len as u32).to_le_bytes());
    }
    end
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
// `write_archived`'s picture of the root: two 8-byte relative pointers (i32 offset,
// u32 length: rkyv's default 32-bit pointer width) after hash, ts and matched.
const _: () = assert!(std::mem::size_of::<rkyv::boxed::ArchivedBox<[u8]>>() == 8);
const _: () = assert!(KEY_PTR_OFFSET + 8 <= ROW_PTR_OFFSET && ROW_PTR_OFFSET + 8 <= ROOT_BYTES);
const _: () = assert!(TS_OFFSET + 8 <= ROOT_BYTES && HASH_OFFSET + 8 <= ROOT_BYTES && MATCHED_OFFSET < ROOT_BYTES);

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
    fn write_archived_writes_the_bytes_rkyv_writes() {
        let long = vec![0xA5u8; 300];
        for pos in (0..72).step_by(8) {
            for (k, r) in [(0, 0), (1, 0), (0, 1), (3, 5), (7, 9), (8, 8), (13, 200), (1, 300), (300, 7)] {
                for (hash, ts, matched) in
                    [(0, 0, false), (u64::MAX, i64::MIN, true), (0x0123_4567_89AB_CDEF, -1, false)]
                {
                    let rec = Record { hash, ts, matched, key: &long[..k], row: &long[..r] };
                    let (want, end) = archive_at(&rec, pos);
                    // Stale bytes where the record goes, as in a reused buffer.
                    let mut got = rkyv::util::AlignedVec::<16>::new();
                    got.resize(pos + record_bytes_max(k, r), 0xEE);
                    let got_end = write_archived(&mut got, pos, &rec);
                    assert_eq!(got_end, end, "key {k} row {r} at {pos}");
                    assert_eq!(&got[pos..end], &want[pos..end], "key {k} row {r} at {pos}");
                    let a = rkyv::access::<ArchivedRecord, rkyv::rancor::Error>(&got[pos..end]).unwrap();
                    assert_eq!((a.hash.to_native(), a.ts.to_native(), a.matched), (hash, ts, matched));
                    assert_eq!((a.key.get(), a.row.get()), (&long[..k], &long[..r]));
                }
            }
        }
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

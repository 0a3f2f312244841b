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

/// An upper bound of the bytes `append` needs for a record: header, payload with its
/// internal alignment padding, trailing padding.
pub fn record_bytes_max(key_len: usize, row_len: usize) -> usize {
    RECORD_HEADER_BYTES + key_len + row_len + 16 + ROOT_BYTES + 8
}

const _: () = assert!(std::mem::align_of::<ArchivedRecord<'static>>() <= 8);

//! The state store's checkpoint copies: what a copy of a bucket is ([`BucketCopy`], the
//! form a checkpoint manifest embeds), what a checkpoint must write for it
//! ([`CopyJob`]), what came back once it was written ([`WrittenCopy`]), and the one
//! place that fills a written copy's pack offset and checksum in ([`BucketCopy::fill_in`]).
//!
//! Never does I/O, and knows nothing of packs beyond their names: the checkpoint writes
//! the bytes and hands back offsets and CRCs; the state store keeps the copies current.
//!
//! Persisted form (JSON, inside the manifest; field names and order are the format):
//! `side` is a number (0 left, 1 right; anything else is an error when read), `flips`
//! is left out when there is no matched list. In memory the side is an [`Side`].
//!
//! Invariants: a `BucketCopy` names the rows of one bucket as they were at a clean point;
//! its `offset`/`crc32` (and its matched list's) are 0 until the pack they are in is
//! written, and are filled in only for that pack.

use serde::{Deserialize, Serialize};

use crate::event::Side;

/// One bucket's rows: a copy of its buffer's first `bytes` bytes, at `offset` in a pack,
/// plus, when rows matched after that copy was made, the list of those rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BucketCopy {
    #[serde(with = "side_as_u8")]
    pub side: Side,
    pub bucket: i64,
    /// The pack, relative to the checkpoint directory.
    pub file: String,
    pub offset: u64,
    pub bytes: u64,
    pub crc32: u32,
    /// Record roots (u32 LE each) whose `matched` flag was set since the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flips: Option<Segment>,
}

/// Bytes at `offset` in a pack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub file: String,
    pub offset: u64,
    pub bytes: u64,
    pub crc32: u32,
}

impl Segment {
    /// `bytes` bytes to be written into `pack`: offset and checksum come later.
    pub fn unwritten(pack: &str, bytes: u64) -> Segment {
        Segment { file: pack.to_string(), offset: 0, bytes, crc32: 0 }
    }
}

impl BucketCopy {
    /// A full copy of `bytes` bytes of `bucket` to be written into `pack`.
    pub fn unwritten(side: Side, bucket: i64, pack: &str, bytes: u64) -> BucketCopy {
        BucketCopy { side, bucket, file: pack.to_string(), offset: 0, bytes, crc32: 0, flips: None }
    }

    /// The packs this bucket's restore reads.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.file.as_str()).chain(self.flips.as_ref().map(|f| f.file.as_str()))
    }

    /// Where the copied rows are (without the matched list).
    pub fn rows(&self) -> Segment {
        Segment { file: self.file.clone(), offset: self.offset, bytes: self.bytes, crc32: self.crc32 }
    }

    /// Records where the part `w` of this copy was written into `pack`, and its
    /// checksum; a part that is not in `pack` (an older copy still referenced) keeps its
    /// place. The caller matches `w` to this bucket (side and bucket).
    pub fn fill_in(&mut self, pack: &str, w: &WrittenCopy) {
        debug_assert!(w.side == self.side && w.bucket == self.bucket);
        match w.part {
            CopyPart::Rows if self.file == pack => {
                self.offset = w.offset;
                self.crc32 = w.crc32;
            }
            CopyPart::Rows => {}
            CopyPart::Flips => {
                if let Some(seg) = self.flips.as_mut().filter(|s| s.file == pack) {
                    seg.offset = w.offset;
                    seg.crc32 = w.crc32;
                }
            }
        }
    }
}

/// Fills in every part of `written` (one pack's) into the copies it belongs to.
/// O(copies x written): both are a shard's buckets, tens to hundreds.
pub fn fill_in_all(copies: &mut [BucketCopy], pack: &str, written: &[WrittenCopy]) {
    for c in copies.iter_mut() {
        let (side, bucket) = (c.side, c.bucket);
        for w in written.iter().filter(|w| w.side == side && w.bucket == bucket) {
            c.fill_in(pack, w);
        }
    }
}

/// Which part of a bucket's copy a job writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyPart {
    /// The rows: the buffer's first bytes.
    Rows,
    /// The matched list (roots set since the rows were copied).
    Flips,
}

/// What a checkpoint must write for one bucket.
#[derive(Clone, Debug)]
pub enum CopyJob {
    /// Its first `bytes` bytes (new or appended-to bucket).
    Full { side: Side, bucket: i64, bytes: usize },
    /// Every root that matched since its last full copy (u32 LE each): the list is
    /// cumulative, so that it alone completes that copy.
    Flips { side: Side, bucket: i64, data: Vec<u8> },
}

impl CopyJob {
    pub fn len(&self) -> usize {
        match self {
            CopyJob::Full { bytes, .. } => *bytes,
            CopyJob::Flips { data, .. } => data.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn side_bucket(&self) -> (Side, i64) {
        match self {
            CopyJob::Full { side, bucket, .. } | CopyJob::Flips { side, bucket, .. } => (*side, *bucket),
        }
    }

    pub fn is_full(&self) -> bool {
        matches!(self, CopyJob::Full { .. })
    }

    /// This job, written at `offset` of its pack with checksum `crc32`.
    pub fn written(&self, offset: u64, crc32: u32) -> WrittenCopy {
        let (side, bucket) = self.side_bucket();
        let part = if self.is_full() { CopyPart::Rows } else { CopyPart::Flips };
        WrittenCopy { side, bucket, part, offset, crc32 }
    }
}

/// One written part of a bucket's copy: where it is in its pack and its CRC32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrittenCopy {
    pub side: Side,
    pub bucket: i64,
    pub part: CopyPart,
    pub offset: u64,
    pub crc32: u32,
}

/// What a checkpoint references and writes for a shard's state: every live bucket's
/// copy (existing or new), and the jobs that write the new parts.
#[derive(Debug, Default)]
pub struct SnapshotPlan {
    pub copies: Vec<BucketCopy>,
    pub jobs: Vec<CopyJob>,
}

/// `side` as the number the manifest has always held: 0 left, 1 right.
mod side_as_u8 {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::event::Side;

    pub fn serialize<S: Serializer>(side: &Side, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(*side as u8)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Side, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(Side::Left),
            1 => Ok(Side::Right),
            n => Err(D::Error::custom(format!("side {n}: neither 0 (left) nor 1 (right)"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(flips: Option<Segment>) -> BucketCopy {
        BucketCopy {
            side: Side::Right,
            bucket: -3,
            file: "state/shard-0/c1.pack".into(),
            offset: 4096,
            bytes: 128,
            crc32: 7,
            flips,
        }
    }

    #[test]
    fn the_manifest_form_is_unchanged() {
        let plain = r#"{"side":1,"bucket":-3,"file":"state/shard-0/c1.pack","offset":4096,"bytes":128,"crc32":7}"#;
        assert_eq!(serde_json::to_string(&copy(None)).unwrap(), plain);
        let seg = Segment { file: "state/shard-0/c2.pack".into(), offset: 0, bytes: 8, crc32: 9 };
        let with = r#"{"side":1,"bucket":-3,"file":"state/shard-0/c1.pack","offset":4096,"bytes":128,"crc32":7,"flips":{"file":"state/shard-0/c2.pack","offset":0,"bytes":8,"crc32":9}}"#;
        assert_eq!(serde_json::to_string(&copy(Some(seg.clone()))).unwrap(), with);
        assert_eq!(serde_json::from_str::<BucketCopy>(plain).unwrap(), copy(None));
        assert_eq!(serde_json::from_str::<BucketCopy>(with).unwrap(), copy(Some(seg)));
        let left = plain.replace(r#""side":1"#, r#""side":0"#);
        assert_eq!(serde_json::from_str::<BucketCopy>(&left).unwrap().side, Side::Left);
    }

    #[test]
    fn an_unknown_side_is_an_error() {
        for side in ["2", "255", "-1", "256"] {
            let text = format!(r#"{{"side":{side},"bucket":0,"file":"p","offset":0,"bytes":0,"crc32":0}}"#);
            assert!(serde_json::from_str::<BucketCopy>(&text).is_err(), "side {side}");
        }
        let e =
            serde_json::from_str::<BucketCopy>(r#"{"side":2,"bucket":0,"file":"p","offset":0,"bytes":0,"crc32":0}"#);
        assert!(e.unwrap_err().to_string().contains("side 2"));
    }

    #[test]
    fn fill_in_touches_only_parts_in_the_written_pack() {
        let (old, new) = ("c1.pack", "c2.pack");
        let mut c = BucketCopy::unwritten(Side::Left, 5, old, 100);
        c.flips = Some(Segment::unwritten(new, 8));
        let rows = CopyJob::Full { side: Side::Left, bucket: 5, bytes: 100 };
        let flips = CopyJob::Flips { side: Side::Left, bucket: 5, data: vec![0; 8] };
        // The rows are in an older pack: writing `new` fills in the matched list only.
        fill_in_all(std::slice::from_mut(&mut c), new, &[rows.written(10, 11), flips.written(20, 21)]);
        assert_eq!((c.offset, c.crc32), (0, 0));
        assert_eq!(c.flips.as_ref().map(|s| (s.offset, s.crc32)), Some((20, 21)));
        // Another bucket's parts are not this one's.
        let other = CopyJob::Full { side: Side::Right, bucket: 5, bytes: 100 };
        let mut d = BucketCopy::unwritten(Side::Left, 5, old, 100);
        fill_in_all(std::slice::from_mut(&mut d), old, &[other.written(30, 31)]);
        assert_eq!((d.offset, d.crc32), (0, 0));
        fill_in_all(std::slice::from_mut(&mut d), old, &[rows.written(40, 41)]);
        assert_eq!((d.offset, d.crc32), (40, 41));
        assert_eq!(d.rows(), Segment { file: old.into(), offset: 40, bytes: 100, crc32: 41 });
    }
}

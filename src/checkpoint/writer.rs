//! Writes a shard's bucket copies of one checkpoint through io_uring: one pack file
//! per shard and checkpoint, glommio's `DmaFile` (O_DIRECT), [`CHUNK_BYTES`] aligned
//! writes, one fdatasync. (One file per bucket cost one fdatasync each: ~10 ms apiece
//! on this machine's virtio disk, so tens of buckets took most of a second.)
//!
//! The bytes come from a live state buffer that the shard keeps using while the copy
//! runs: the copier borrows the buffer only for one chunk's memcpy at a time (never
//! across an `.await`), and reads only the first `bytes` bytes, which appends do not
//! change. A `matched` flag set after the barrier may reach the copy; that is harmless,
//! because the row that set it comes after the barrier and is replayed on recovery,
//! setting it again. The file is padded with zeros to the alignment, which the arena
//! format reads as "no more records".

use std::path::Path;

use glommio::io::DmaFile;

use super::{io, CheckpointError};

/// Bytes per write: large, aligned, and a bounded pause per memcpy.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Writes the segments `lens[i]` bytes each, one after another at aligned offsets, into
/// one pack file at `path`, fetching segment `i`'s chunk `[off, off + len)` with
/// `fetch(i, off, dst)` (false if the source is gone). One fdatasync for the whole
/// pack. Returns each segment's (offset in the pack, CRC32).
pub async fn write_pack(
    path: &Path,
    lens: &[usize],
    mut fetch: impl FnMut(usize, usize, &mut [u8]) -> bool,
) -> Result<Vec<(u64, u32)>, CheckpointError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent, "create directory"))?;
    }
    // A pack left by an attempt that never completed its checkpoint is replaced.
    let _ = std::fs::remove_file(path);
    let f = DmaFile::create(path).await.map_err(|e| io(path, "create")(e.into()))?;
    let align = f.alignment() as usize;
    let mut out = Vec::with_capacity(lens.len());
    let mut pos = 0usize;
    for (i, &bytes) in lens.iter().enumerate() {
        let seg_start = pos;
        let mut crc = crc32fast::Hasher::new();
        let mut off = 0usize;
        while off < bytes {
            let len = CHUNK_BYTES.min(bytes - off);
            let padded = len.next_multiple_of(align);
            let mut buf = f.alloc_dma_buffer(padded);
            let dst = buf.as_bytes_mut();
            if !fetch(i, off, &mut dst[..len]) {
                let _ = f.close().await;
                return Err(CheckpointError::Invalid {
                    path: path.to_path_buf(),
                    reason: "state bucket vanished during the copy".into(),
                });
            }
            dst[len..].fill(0);
            crc.update(&dst[..len]);
            let wrote = f.write_at(buf, pos as u64).await.map_err(|e| io(path, "write")(e.into()))?;
            if wrote != padded {
                let _ = f.close().await;
                return Err(CheckpointError::Io {
                    path: path.to_path_buf(),
                    op: "write",
                    source: std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        format!("short write: {wrote} of {padded} bytes"),
                    ),
                });
            }
            off += len;
            pos += padded;
            // Let the shard's other tasks run between chunks.
            futures_lite::future::yield_now().await;
        }
        out.push((seg_start as u64, crc.finalize()));
    }
    f.fdatasync().await.map_err(|e| io(path, "fdatasync")(e.into()))?;
    f.close().await.map_err(|e| io(path, "close")(e.into()))?;
    Ok(out)
}

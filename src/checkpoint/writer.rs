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
//!
//! This file owns the pack's name: [`pack_path`] writes it, [`pack_checkpoint`] parses
//! it (garbage collection, the fault hook). It never reads a pack back (`read_bucket`
//! in `checkpoint/mod.rs` does) and never touches the state it copies except through
//! `fetch`.

use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;

use glommio::Task;

use super::{io, CheckpointError};

/// Bytes per write: large, aligned, and a bounded pause per memcpy.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The pack shard `shard` writes for checkpoint `n`, relative to the checkpoint
/// directory (as the manifest names it).
pub fn pack_path(shard: u32, n: u64) -> String {
    format!("state/shard-{shard}/c{n}.pack")
}

/// The checkpoint a pack was written for, from its file name (`c<n>.pack`); `None` if
/// the name is not a pack's.
pub fn pack_checkpoint(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix('c')?.strip_suffix(".pack")?.parse().ok()
}

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
    // A pack left by an attempt that never completed its checkpoint is replaced (a
    // symlink planted there is removed, never followed): the new pack is created with
    // O_CREAT|O_EXCL|O_NOFOLLOW, so nothing but a file this call made is written.
    let _ = std::fs::remove_file(path);
    let f = glommio::io::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .dma_open(path)
        .await
        .map_err(|e| io(path, "create")(e.into()))?;
    let f = Rc::new(f);
    let align = f.alignment() as usize;
    let fault = injected_enospc(path);
    let mut out = Vec::with_capacity(lens.len());
    let mut in_flight: VecDeque<(Task<glommio::Result<usize, ()>>, usize)> = VecDeque::new();
    let mut pos = 0usize;
    let mut result = Ok(());
    'segments: for (i, &bytes) in lens.iter().enumerate() {
        let seg_start = pos;
        let mut crc = crc32fast::Hasher::new();
        let mut off = 0usize;
        while off < bytes {
            let len = CHUNK_BYTES.min(bytes - off);
            let padded = len.next_multiple_of(align);
            let mut buf = f.alloc_dma_buffer(padded);
            let dst = buf.as_bytes_mut();
            if !fetch(i, off, &mut dst[..len]) {
                result = Err(CheckpointError::Invalid {
                    path: path.to_path_buf(),
                    reason: "state bucket vanished during the copy".into(),
                });
                break 'segments;
            }
            dst[len..].fill(0);
            crc.update(&dst[..len]);
            if fault && pos > 0 {
                result = Err(io(path, "write")(std::io::Error::from_raw_os_error(libc::ENOSPC)));
                break 'segments;
            }
            let file = f.clone();
            let at = pos as u64;
            in_flight.push_back((glommio::spawn_local(async move { file.write_at(buf, at).await }), padded));
            if in_flight.len() >= WRITES_IN_FLIGHT {
                if let Err(e) = reap(&mut in_flight, path).await {
                    result = Err(e);
                    break 'segments;
                }
            }
            off += len;
            pos += padded;
        }
        out.push((seg_start as u64, crc.finalize()));
    }
    while !in_flight.is_empty() {
        if let Err(e) = reap(&mut in_flight, path).await {
            result = result.and(Err(e));
        }
    }
    let f = Rc::try_unwrap(f).map_err(|_| ()).expect("every write finished");
    let synced = match result {
        Ok(()) => f.fdatasync().await.map_err(|e| io(path, "fdatasync")(e.into())),
        Err(e) => Err(e),
    };
    let closed = f.close().await.map_err(|e| io(path, "close")(e.into()));
    if let Err(e) = synced.and(closed) {
        // A failed pack (a full disk) is never referenced: remove it rather than leave a
        // short or empty file behind until garbage collection.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(out)
}

/// Writes kept in flight: enough to keep the device busy while this shard joins.
const WRITES_IN_FLIGHT: usize = 4;

/// Waits for the oldest write and checks it wrote everything.
async fn reap(
    in_flight: &mut VecDeque<(Task<glommio::Result<usize, ()>>, usize)>,
    path: &Path,
) -> Result<(), CheckpointError> {
    let (task, padded) = in_flight.pop_front().expect("a write in flight");
    let wrote = task.await.map_err(|e| io(path, "write")(e.into()))?;
    if wrote != padded {
        return Err(CheckpointError::Io {
            path: path.to_path_buf(),
            op: "write",
            source: std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {wrote} of {padded} bytes"),
            ),
        });
    }
    Ok(())
}

/// Test hook (debug builds only; the integration tests run the debug binary): with
/// `WEFT_FAULT_ENOSPC_FROM_CHECKPOINT=n`, packs of checkpoints `>= n` fail with ENOSPC
/// after their first chunk, as on a full disk. Read once per pack, not per chunk.
#[cfg(debug_assertions)]
fn injected_enospc(path: &Path) -> bool {
    let Some(from) = std::env::var("WEFT_FAULT_ENOSPC_FROM_CHECKPOINT").ok().and_then(|v| v.parse::<u64>().ok()) else {
        return false;
    };
    pack_checkpoint(path).is_some_and(|n| n >= from)
}

/// Release builds have no fault hook: no environment read, no branch taken.
#[cfg(not(debug_assertions))]
fn injected_enospc(_path: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_name_round_trips() {
        let p = pack_path(3, 17);
        assert_eq!(p, "state/shard-3/c17.pack");
        assert_eq!(pack_checkpoint(Path::new(&p)), Some(17));
        assert_eq!(pack_checkpoint(&Path::new("/ck").join(&p)), Some(17));
        assert_eq!(pack_checkpoint(Path::new("state/shard-3/x17.pack")), None);
        assert_eq!(pack_checkpoint(Path::new("state/shard-3/c17.json")), None);
    }
}

//! Writes a shard's bucket copies of one checkpoint: one pack file per shard and
//! checkpoint, O_DIRECT, [`CHUNK_BYTES`] aligned writes, [`WRITES_IN_FLIGHT`] of them
//! queued at once, one fdatasync. (One file per bucket cost one fdatasync each: ~10 ms
//! apiece on this machine's virtio disk, so tens of buckets took most of a second.)
//!
//! The writes go through the shard's own io_uring ring ([`crate::sys::DirectRing`]),
//! not glommio's `DmaFile`: glommio submits and reaps only at its executor's I/O poll,
//! which a busy shard reaches once per preempt period (10 ms), so each write waited
//! about two periods and a snapshot under load ran at ~100-480 MB/s per shard
//! (perf/snapshot-2026-12-08.md). Here a write reaches the kernel when it is queued and
//! its completion is seen the next time the copy task runs, between two of the join's
//! batches. The ring's buffers are registered once and reused: no allocation, page
//! fault or page pinning per write.
//!
//! The bytes come from a live state buffer that the shard keeps using while the copy
//! runs: the copier borrows the buffer only for one chunk's memcpy at a time (never
//! across an `.await`), yields to the join after each chunk (so the copy runs in
//! bounded slices between batches), and reads only the first `bytes` bytes, which
//! appends do not change. A `matched` flag set after the barrier may reach the copy;
//! that is harmless, because the row that set it comes after the barrier and is
//! replayed on recovery, setting it again. The file is padded with zeros to the
//! alignment, which the arena format reads as "no more records".
//!
//! This file owns the pack's name: [`pack_path`] writes it, [`pack_checkpoint`] parses
//! it (garbage collection, the fault hook). It never reads a pack back (`read_bucket`
//! in `checkpoint/mod.rs` does) and never touches the state it copies except through
//! `fetch`.

use std::path::Path;
use std::time::Duration;

use super::{io, CheckpointError};
use crate::sys::{DirectFile, DirectRing, DIRECT_ALIGN_BYTES};

/// Bytes per write: large, aligned, and a bounded pause per memcpy (~0.2-0.4 ms here).
/// 2 MiB wrote a full snapshot under load at 1.37-1.80 GB/s against 1.24-1.32 GB/s for
/// 1 MiB, at the same checkpoint cost (perf/snapshot-2026-12-08.md).
pub const CHUNK_BYTES: usize = 2 << 20;
/// Writes kept in flight per shard: enough to keep the disk busy (16 MiB queued; `dd`
/// with one 1 MiB write at a time reaches less than two shards' packs do).
pub const WRITES_IN_FLIGHT: usize = 8;
/// Times the copy task yields to the join while it waits for the disk before it sleeps
/// instead: a busy shard runs a batch per yield, an idle one would spin.
const WAIT_YIELDS_MAX: u32 = 16;
/// How long the copy task sleeps when yielding found no completion (an idle shard):
/// well under the 16 MiB queued (~16 ms of writes at 1 GB/s), so the
/// queue never runs dry, and few wake-ups (each idle sleep costs glommio a membarrier,
/// an interrupt on every other CPU).
const WAIT_SLEEP_US: u64 = 500;

const _: () = assert!(CHUNK_BYTES % DIRECT_ALIGN_BYTES == 0);
const _: () = assert!(CHUNK_BYTES <= u32::MAX as usize && WRITES_IN_FLIGHT >= 2);

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

/// The ring a shard writes its packs through: [`WRITES_IN_FLIGHT`] buffers of
/// [`CHUNK_BYTES`]. Made at the shard's first checkpoint and kept.
pub fn new_ring() -> std::io::Result<DirectRing> {
    DirectRing::new(WRITES_IN_FLIGHT, CHUNK_BYTES)
}

/// Writes the segments `lens[i]` bytes each, one after another at aligned offsets, into
/// one pack file at `path` through `ring`, fetching segment `i`'s chunk
/// `[off, off + len)` with `fetch(i, off, dst)` (false if the source is gone). One
/// fdatasync for the whole pack. Returns each segment's (offset in the pack, CRC32).
pub async fn write_pack(
    ring: &mut DirectRing,
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
    let mut f = ring.create(path).map_err(io(path, "create"))?;
    let written = fill_pack(&mut f, path, lens, &mut fetch).await;
    // Dropping the file waits for any write still in flight (an error path), then
    // closes it.
    drop(f);
    match written {
        Ok(out) => Ok(out),
        Err(e) => {
            // A failed pack (a full disk) is never referenced: remove it rather than
            // leave a short or empty file behind until garbage collection.
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// The body of [`write_pack`]: every chunk written, then the fdatasync.
async fn fill_pack(
    f: &mut DirectFile<'_>,
    path: &Path,
    lens: &[usize],
    fetch: &mut impl FnMut(usize, usize, &mut [u8]) -> bool,
) -> Result<Vec<(u64, u32)>, CheckpointError> {
    let fault = injected_enospc(path);
    let write_err = |e| io(path, "write")(e);
    let mut out = Vec::with_capacity(lens.len());
    let mut pos = 0u64;
    for (i, &bytes) in lens.iter().enumerate() {
        let seg_start = pos;
        let mut crc = crc32fast::Hasher::new();
        let mut off = 0usize;
        while off < bytes {
            wait(f, path, |f| f.has_free()).await?;
            let len = CHUNK_BYTES.min(bytes - off);
            if fault && pos > 0 {
                return Err(write_err(std::io::Error::from_raw_os_error(libc::ENOSPC)));
            }
            // `None`: the fill declined, because the bucket is gone.
            let padded = f
                .write_with(pos, |buf| {
                    let dst = &mut buf[..len];
                    if !fetch(i, off, dst) {
                        return None;
                    }
                    crc.update(dst);
                    Some(len)
                })
                .map_err(write_err)?;
            let Some(padded) = padded else {
                return Err(CheckpointError::Invalid {
                    path: path.to_path_buf(),
                    reason: "state bucket vanished during the copy".into(),
                });
            };
            off += len;
            pos += padded as u64;
            // One chunk's memcpy per turn: the join's batches run in between.
            futures_lite::future::yield_now().await;
        }
        out.push((seg_start, crc.finalize()));
    }
    wait(f, path, |f| f.in_flight() == 0).await?;
    f.start_sync().map_err(io(path, "fdatasync"))?;
    wait(f, path, |f| f.synced()).await.map_err(|e| match e {
        CheckpointError::Io { path, source, .. } => CheckpointError::Io { path, op: "fdatasync", source },
        e => e,
    })?;
    Ok(out)
}

/// Reaps completions until `done(f)`: yields to the join while it has work, sleeps
/// [`WAIT_SLEEP_US`] once yielding [`WAIT_YIELDS_MAX`] times brought nothing.
async fn wait(
    f: &mut DirectFile<'_>,
    path: &Path,
    done: impl Fn(&DirectFile<'_>) -> bool,
) -> Result<(), CheckpointError> {
    let mut yields = 0u32;
    loop {
        f.poll().map_err(io(path, "write"))?;
        if done(f) {
            return Ok(());
        }
        if yields < WAIT_YIELDS_MAX {
            yields += 1;
            futures_lite::future::yield_now().await;
        } else {
            glommio::timer::sleep(Duration::from_micros(WAIT_SLEEP_US)).await;
        }
    }
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

//! The Kafka sink's staging directory, `<engine.checkpoint_dir>/kafka-out`: the epochs
//! of output, late rows and dead letters that the shards wrote, waiting to be published
//! to Kafka ([`super::kafka`]).
//!
//! ```text
//!   kafka-out/RUN                                   this job's run id (see below)
//!   kafka-out/part-<shard>-<epoch>.rec[.inprogress]       output rows
//!   kafka-out/late/<input>-<shard>-<epoch>.rec[.inprogress] late rows of one input
//!   kafka-out/dead/part-<shard>-<epoch>.rec[.inprogress]    dead letters
//! ```
//! The names and their commit, sync and reset are those of an output directory
//! (`layout`), with the extension [`EXT`]: a checkpoint commits its epochs here as it
//! commits them in a directory, and a restart resets them the same way, so a committed
//! staged file holds exactly the rows of one shard in one epoch of a complete
//! checkpoint. The publisher sends a committed file and removes it only once the Kafka
//! transaction holding its rows has committed.
//!
//! A file is a sequence of frames, one record each: a little-endian `u32` length, then
//! that many bytes (the row in the output's format, without its line end). There is no
//! header: a record is one row.
//!
//! The run id (`RUN`) is written when the job starts afresh and kept while it resumes;
//! the publisher's markers carry it, so markers left in the progress topic by an
//! earlier run of the same job (its checkpoints removed, started again from the
//! beginning) are never read as this run's.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::layout::{self, io, DEAD_DIR, LATE_DIR};
use super::SinkError;

/// The extension of staged files.
pub const EXT: &str = "rec";
/// The run id's file.
pub const RUN_FILE: &str = "RUN";
/// Bytes of a frame's length.
const LEN: usize = 4;

fn corrupt(path: &Path, reason: String) -> SinkError {
    SinkError { path: path.to_path_buf(), op: "read staged records", source: std::io::Error::other(reason) }
}

/// Starts a frame at the end of `buf` (its length is filled in by [`end_frame`]).
#[inline]
pub fn begin_frame(buf: &mut Vec<u8>) {
    buf.extend_from_slice(&[0; LEN]);
}

/// Ends the frame begun at `at`: drops the row's line end and writes the length.
#[inline]
pub fn end_frame(buf: &mut Vec<u8>, at: usize) {
    if buf.last() == Some(&b'\n') {
        buf.pop();
    }
    let len = (buf.len() - at - LEN) as u32;
    buf[at..at + LEN].copy_from_slice(&len.to_le_bytes());
}

/// The records of a staged file's bytes; a frame cut short is corruption, named with
/// the file and the byte offset.
pub fn records<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<&'a [u8]>, SinkError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(len) = bytes.get(at..at + LEN) else {
            return Err(corrupt(path, format!("a record's length is cut short at byte {at}")));
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some(rec) = bytes.get(at + LEN..at + LEN + len) else {
            return Err(corrupt(path, format!("the record at byte {at} ({len} bytes) is cut short")));
        };
        out.push(rec);
        at += LEN + len;
    }
    Ok(out)
}

/// What a staged file holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    Output,
    /// Late rows of the input of this name.
    Late(String),
    DeadLetters,
}

/// A committed staged file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    pub path: PathBuf,
    pub stream: Stream,
    pub shard: u32,
    pub epoch: u64,
}

/// `<stem>-<shard>-<epoch>.rec`: the stem and the shard.
fn stem_and_shard(name: &str) -> Option<(&str, u32)> {
    let before_ext = name.strip_suffix(EXT)?.strip_suffix('.')?;
    let (rest, _epoch) = before_ext.rsplit_once('-')?;
    let (stem, shard) = rest.rsplit_once('-')?;
    Some((stem, shard.parse().ok()?))
}

/// The committed staged files, by shard, then epoch, then stream. A file whose name
/// does not parse is not weft's and is left alone.
pub fn committed(dir: &Path) -> Result<Vec<Staged>, SinkError> {
    let mut v = Vec::new();
    for f in layout::output_files(dir)? {
        if f.inprogress {
            continue;
        }
        let name = f.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let Some((stem, shard)) = stem_and_shard(&name) else { continue };
        let parent = f.path.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str());
        let in_top = f.path.parent() == Some(dir);
        let stream = match parent {
            _ if in_top && stem == "part" => Stream::Output,
            Some(LATE_DIR) if !in_top => Stream::Late(stem.to_string()),
            Some(DEAD_DIR) if !in_top && stem == "part" => Stream::DeadLetters,
            _ => continue,
        };
        v.push(Staged { path: f.path, stream, shard, epoch: f.epoch });
    }
    v.sort_by(|a, b| (a.shard, a.epoch, &a.stream).cmp(&(b.shard, b.epoch, &b.stream)));
    Ok(v)
}

/// Removes a published file (its directory is synced by [`sync_dirs`]).
pub fn remove(path: &Path) -> Result<(), SinkError> {
    std::fs::remove_file(path).map_err(io(path, "remove published records"))
}

/// fsyncs the staging directories (after files were removed).
pub fn sync_dirs(dir: &Path) -> Result<(), SinkError> {
    for d in [dir.to_path_buf(), dir.join(LATE_DIR), dir.join(DEAD_DIR)] {
        match File::open(&d) {
            Ok(f) => f.sync_all().map_err(io(&d, "fsync directory"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&d, "open directory")(e)),
        }
    }
    Ok(())
}

/// A fresh start: every staged file is an earlier run's (never published by this one)
/// and is removed; a new run id is written (synced) and returned.
pub fn start_fresh(dir: &Path) -> Result<String, SinkError> {
    for d in [dir.to_path_buf(), dir.join(LATE_DIR), dir.join(DEAD_DIR)] {
        std::fs::create_dir_all(&d).map_err(io(&d, "create directory"))?;
    }
    for f in layout::output_files(dir)? {
        let name = f.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if stem_and_shard(name.strip_suffix(layout::INPROGRESS_SUFFIX).unwrap_or(&name)).is_some() {
            std::fs::remove_file(&f.path).map_err(io(&f.path, "remove an earlier run's staged records"))?;
        }
    }
    let id = new_run_id();
    let path = dir.join(RUN_FILE);
    let tmp = dir.join(format!("{RUN_FILE}.tmp"));
    let mut f = File::create(&tmp).map_err(io(&tmp, "create"))?;
    f.write_all(id.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&tmp, "write"))?;
    std::fs::rename(&tmp, &path).map_err(io(&tmp, "rename"))?;
    sync_dirs(dir)?;
    Ok(id)
}

/// The run id of a resumed job.
pub fn run_id(dir: &Path) -> Result<String, SinkError> {
    let path = dir.join(RUN_FILE);
    let id = std::fs::read_to_string(&path).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            std::io::Error::new(
                e.kind(),
                "the Kafka sink's run id is missing, so weft cannot tell which checkpointed epochs it already \
                 published; restore the file, or remove the checkpoint directory to run the job from the start",
            )
        } else {
            e
        };
        SinkError { path: path.clone(), op: "read", source: why }
    })?;
    let id = id.trim().to_string();
    if id.is_empty() || !id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
        return Err(corrupt(&path, format!("not a run id: {id:?}")));
    }
    Ok(id)
}

/// A run id: the start time and process id, with random bits (unique across restarts
/// and hosts for any practical purpose).
fn new_run_id() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{ms:x}-{:x}-{:016x}", std::process::id(), rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_hold_records_without_their_line_end_and_a_cut_frame_is_named() {
        let mut buf = Vec::new();
        for row in [&b"a,1\n"[..], b"", b"\"x\ny\",2\n"] {
            let at = buf.len();
            begin_frame(&mut buf);
            buf.extend_from_slice(row);
            end_frame(&mut buf, at);
        }
        let p = Path::new("/s/part-0-1.rec");
        assert_eq!(records(p, &buf).unwrap(), vec![&b"a,1"[..], b"", b"\"x\ny\",2"]);
        let e = records(p, &buf[..buf.len() - 1]).unwrap_err().to_string();
        assert!(e.contains("/s/part-0-1.rec") && e.contains("at byte 11") && e.contains("cut short"), "{e}");
        let e = records(p, &buf[..2]).unwrap_err().to_string();
        assert!(e.contains("length is cut short at byte 0"), "{e}");
    }

    #[test]
    fn names_give_stream_shard_and_epoch() {
        assert_eq!(stem_and_shard("part-3-17.rec"), Some(("part", 3)));
        assert_eq!(stem_and_shard("my-input-0-2.rec"), Some(("my-input", 0)));
        assert_eq!(stem_and_shard("part-3.rec"), None);
        assert_eq!(stem_and_shard("part-3-1.csv"), None);
    }

    #[test]
    fn committed_files_are_listed_by_shard_and_epoch_and_a_fresh_start_clears_them() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let id = start_fresh(dir).unwrap();
        assert_eq!(run_id(dir).unwrap(), id);
        for name in ["part-1-2.rec", "part-0-3.rec", "part-0-2.rec", "part-0-4.rec.inprogress", "notes.txt"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        std::fs::write(dir.join("late/imp-0-2.rec"), b"").unwrap();
        std::fs::write(dir.join("dead/part-1-2.rec"), b"").unwrap();
        let got: Vec<(u32, u64, Stream)> =
            committed(dir).unwrap().into_iter().map(|s| (s.shard, s.epoch, s.stream)).collect();
        assert_eq!(
            got,
            vec![
                (0, 2, Stream::Output),
                (0, 2, Stream::Late("imp".into())),
                (0, 3, Stream::Output),
                (1, 2, Stream::Output),
                (1, 2, Stream::DeadLetters),
            ]
        );
        let id2 = start_fresh(dir).unwrap();
        assert_ne!(id, id2);
        assert!(committed(dir).unwrap().is_empty());
        assert!(!dir.join("part-0-4.rec.inprogress").exists());
        assert!(dir.join("notes.txt").exists(), "a file that is not weft's stays");
    }
}

//! Sinks of one shard: the joined output, the late-data side output and the
//! dead-letter output. Each shard writes its own files (named by [`layout`]:
//! `part-<shard>`, `late/<input>-<shard>`, `dead/part-<shard>`), so no file is
//! shared between threads; stdout is shared under a lock, one buffer at a time.
//! Rows are formatted by `codec`; this module only buffers, creates and rotates.
//!
//! Writes are buffered ([`FLUSH_BYTES`]); an I/O error (full disk) is kept and
//! reported by [`ShardSinks::take_error`], which the shard checks after every batch:
//! the job then fails with the path and the OS error, it never loses rows silently.

pub mod kafka;
pub mod layout;
pub mod staging;

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use hdrhistogram::Histogram;

use crate::codec::format::{InputFormatter, OutputFormatter};
use crate::codec::json::write_dead_letter;
use crate::config::{Job, OutputTarget};
use crate::event::Emit;
use crate::event::RowView;
use crate::event::Side;
use crate::metrics::new_histogram;

/// Buffered bytes per file before a write.
pub const FLUSH_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {op}: {source}")]
pub struct SinkError {
    pub path: PathBuf,
    pub op: &'static str,
    pub source: std::io::Error,
}

/// A failed write to stdout: a reader that went away (EPIPE) is "output closed".
pub fn stdout_error(e: std::io::Error) -> SinkError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        let source = std::io::Error::new(e.kind(), "the reader of standard output went away");
        return SinkError { path: "<stdout>".into(), op: "output closed", source };
    }
    SinkError { path: "<stdout>".into(), op: "write", source: e }
}

enum Target {
    None,
    Stdout,
    /// `<base>.<ext>`, or with checkpointing `<base>-<epoch>.<ext>.inprogress`
    /// until the checkpoint that covers the epoch commits it.
    File {
        base: PathBuf,
        ext: &'static str,
        epoch: Option<u64>,
        path: PathBuf,
        file: Option<File>,
        header: Vec<u8>,
    },
}

fn file_target(base: PathBuf, ext: &'static str, epoch: Option<u64>, header: Vec<u8>) -> Target {
    Target::File { base, ext, epoch, path: PathBuf::new(), file: None, header }
}

/// A buffered, lazily created output file (or stdout, or nothing).
struct Out {
    target: Target,
    buf: Vec<u8>,
    error: Option<SinkError>,
    /// Records are framed ([`staging`]): a Kafka sink's staged epoch.
    framed: bool,
}

impl Out {
    fn new(target: Target) -> Out {
        Out { target, buf: Vec::new(), error: None, framed: false }
    }

    fn framed(target: Target) -> Out {
        Out { target, buf: Vec::new(), error: None, framed: true }
    }

    /// Starts a record: returns where it starts in the buffer.
    #[inline]
    fn begin(&mut self) -> usize {
        let at = self.buf.len();
        if self.framed {
            staging::begin_frame(&mut self.buf);
        }
        at
    }

    /// Ends the record begun at `at`.
    #[inline]
    fn end(&mut self, at: usize) {
        if self.framed {
            staging::end_frame(&mut self.buf, at);
        }
        self.maybe_flush();
    }

    fn enabled(&self) -> bool {
        !matches!(self.target, Target::None)
    }

    fn maybe_flush(&mut self) {
        if self.buf.len() >= FLUSH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.buf.is_empty() || self.error.is_some() {
            return;
        }
        let res = match &mut self.target {
            Target::None => Ok(()),
            Target::Stdout => {
                let mut so = std::io::stdout().lock();
                so.write_all(&self.buf).and_then(|_| so.flush()).map_err(stdout_error)
            }
            Target::File { base, ext, epoch, path, file, header } => {
                if file.is_none() {
                    *path = layout::file_path(base, ext, *epoch);
                    // Never follows a link planted at the path, never replaces a file.
                    match crate::sys::create_new_nofollow(path) {
                        Ok(mut f) => match f.write_all(header) {
                            Ok(()) => *file = Some(f),
                            Err(e) => {
                                return self.error = Some(SinkError { path: path.clone(), op: "write", source: e })
                            }
                        },
                        Err(e) => {
                            let source = if e.kind() == std::io::ErrorKind::AlreadyExists {
                                std::io::Error::new(
                                    e.kind(),
                                    "something already has this name (a file or a symlink); weft never overwrites \
                                     or follows one here",
                                )
                            } else {
                                e
                            };
                            return self.error = Some(SinkError { path: path.clone(), op: "create", source });
                        }
                    }
                }
                file.as_mut().unwrap().write_all(&self.buf).map_err(|e| SinkError {
                    path: path.clone(),
                    op: "write",
                    source: e,
                })
            }
        };
        self.buf.clear();
        if let Err(e) = res {
            self.error = Some(e);
        }
    }

    /// Closes the current epoch's file (if any rows went to it) and starts `next`.
    /// The closed file is synced and committed by the checkpoint coordinator.
    fn rotate(&mut self, next: u64) -> Option<PathBuf> {
        self.flush();
        if let Target::File { epoch, path, file, .. } = &mut self.target {
            *epoch = Some(next);
            if file.take().is_some() {
                return Some(std::mem::take(path));
            }
        }
        None
    }

    /// Flushes and fsyncs (files only).
    fn close(&mut self) {
        self.flush();
        if let Target::File { path, file: Some(f), .. } = &mut self.target {
            if self.error.is_none() {
                if let Err(e) = f.sync_data() {
                    self.error = Some(SinkError { path: path.clone(), op: "fdatasync", source: e });
                }
            }
        }
    }
}

/// Everything one shard writes.
pub struct ShardSinks {
    out: Out,
    fmt: OutputFormatter,
    late: [Out; 2],
    late_fmt: [InputFormatter; 2],
    dead: Out,
    /// Output rows written (or counted, for `none`).
    pub output_rows: u64,
    pub unmatched_emitted: [u64; 2],
    pub latency: Histogram<u64>,
    /// Set by the shard before each batch: "now" for latency, in ns since job start.
    pub now_ns: u64,
}

impl ShardSinks {
    /// `epoch`: `None` without checkpointing (files `part-<shard>.<ext>.inprogress`,
    /// renamed by the engine when the run succeeds), else the first output epoch
    /// (files committed per checkpoint).
    pub fn new(job: &Job, shard: u32, epoch: Option<u64>) -> ShardSinks {
        let (l, r) = (&job.left.schema, &job.right.schema);
        let fmt = OutputFormatter::new(job.output_format, l, r);
        let ext = job.output_format.ext();
        let late_format = |side: Side| job.input(side).row_format();
        let late_fmt =
            [InputFormatter::new(late_format(Side::Left), l), InputFormatter::new(late_format(Side::Right), r)];
        let (out, late, dead) = match &job.output {
            OutputTarget::None => {
                (Out::new(Target::None), [Out::new(Target::None), Out::new(Target::None)], Out::new(Target::None))
            }
            OutputTarget::Stdout => {
                (Out::new(Target::Stdout), [Out::new(Target::None), Out::new(Target::None)], Out::new(Target::None))
            }
            OutputTarget::Dir(d) => {
                let late_file = |side: Side| {
                    let s = &job.input(side).schema;
                    Out::new(file_target(
                        layout::late_base(d, &s.name, shard),
                        late_format(side).ext(),
                        epoch,
                        late_fmt[side.idx()].header(),
                    ))
                };
                (
                    Out::new(file_target(layout::part_base(d, shard), ext, epoch, fmt.header())),
                    [late_file(Side::Left), late_file(Side::Right)],
                    Out::new(file_target(layout::dead_base(d, shard), layout::DEAD_FORMAT.ext(), epoch, Vec::new())),
                )
            }
            // Staged records: framed, no header (a record is one row), published when committed.
            OutputTarget::Kafka(k) => {
                let d = &k.staging;
                let staged = |base: PathBuf| Out::framed(file_target(base, staging::EXT, epoch, Vec::new()));
                (
                    staged(layout::part_base(d, shard)),
                    [
                        staged(layout::late_base(d, &job.left.schema.name, shard)),
                        staged(layout::late_base(d, &job.right.schema.name, shard)),
                    ],
                    staged(layout::dead_base(d, shard)),
                )
            }
        };
        ShardSinks {
            out,
            fmt,
            late,
            late_fmt,
            dead,
            output_rows: 0,
            unmatched_emitted: [0, 0],
            latency: new_histogram(),
            now_ns: 0,
        }
    }

    /// A late row, in its input's own columns.
    pub fn late(&mut self, side: Side, row: RowView) {
        let o = &mut self.late[side.idx()];
        if o.enabled() {
            let at = o.begin();
            self.late_fmt[side.idx()].write(&mut o.buf, row);
            o.end(at);
        }
    }

    /// A malformed row: `{"input", "file", "line", "reason", "raw"}`.
    pub fn dead(&mut self, input: &str, file: &str, line: u64, reason: &str, raw: &[u8]) {
        let o = &mut self.dead;
        if !o.enabled() {
            return;
        }
        let at = o.begin();
        write_dead_letter(&mut o.buf, input, file, line, reason, raw);
        o.end(at);
    }

    /// The first I/O error any sink hit, if any.
    pub fn take_error(&mut self) -> Option<SinkError> {
        let [l0, l1] = &mut self.late;
        for o in [&mut self.out, l0, l1, &mut self.dead] {
            if let Some(e) = o.error.take() {
                return Some(e);
            }
        }
        None
    }

    /// Ends the current epoch: closes its files and returns them (to be committed when
    /// the checkpoint completes); rows from now on go to epoch `next`.
    pub fn rotate(&mut self, next: u64) -> Vec<PathBuf> {
        let [l0, l1] = &mut self.late;
        [&mut self.out, l0, l1, &mut self.dead].into_iter().filter_map(|o| o.rotate(next)).collect()
    }

    /// Flushes and syncs every file.
    pub fn close(&mut self) -> Result<(), SinkError> {
        let [l0, l1] = &mut self.late;
        for o in [&mut self.out, l0, l1, &mut self.dead] {
            o.close();
        }
        match self.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Emit for ShardSinks {
    #[inline]
    fn pair(&mut self, l: RowView, r: RowView, arrival_ns: u64) {
        self.output_rows += 1;
        let lat = self.now_ns.saturating_sub(arrival_ns).max(1);
        let _ = self.latency.record(lat.min(crate::metrics::LATENCY_NS_MAX));
        if self.out.enabled() {
            let at = self.out.begin();
            self.fmt.write(&mut self.out.buf, Some(l), Some(r));
            self.out.end(at);
        }
    }

    #[inline]
    fn unmatched(&mut self, side: Side, row: RowView) {
        self.output_rows += 1;
        self.unmatched_emitted[side.idx()] += 1;
        if self.out.enabled() {
            let at = self.out.begin();
            match side {
                Side::Left => self.fmt.write(&mut self.out.buf, Some(row), None),
                Side::Right => self.fmt.write(&mut self.out.buf, None, Some(row)),
            }
            self.out.end(at);
        }
    }
}

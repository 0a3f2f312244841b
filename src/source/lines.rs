//! A bounded read buffer over one file, shared by the CSV and JSON-lines readers:
//! the unread bytes `buf[pos..end]`, refilled `read_bytes` at a time, never more
//! than `line_bytes_max + read_bytes` bytes. A line that does not fit is skipped by
//! [`LineBuf::skip_line`] in `read_bytes` steps, keeping only its first bytes, so a
//! 300 MB line or `/dev/zero` costs no more memory than a line at the limit.
//!
//! Owns the file descriptor and the buffer; knows nothing of CSV or JSON. The buffer
//! grows (by doubling) only when a line needs it, up to its cap, and never shrinks.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use super::ReadLimits;

pub(crate) struct LineBuf {
    file: File,
    /// Storage; `buf.len()` is what is allocated and used (never past `cap_max`).
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    read_bytes: usize,
    cap_max: usize,
}

impl LineBuf {
    pub(crate) fn new(file: File, limits: &ReadLimits) -> LineBuf {
        let read_bytes = limits.read_bytes.max(1);
        let cap_max = limits.line_bytes_max + read_bytes;
        LineBuf {
            file,
            buf: vec![0; read_bytes.min(cap_max)],
            pos: 0,
            end: 0,
            base: 0,
            eof: false,
            read_bytes,
            cap_max,
        }
    }

    /// The bytes read and not consumed yet.
    #[inline]
    pub(crate) fn avail(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    /// File offset of the first unread byte.
    #[inline]
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(self.pos + n <= self.end);
        self.pos += n;
    }

    pub(crate) fn at_eof(&self) -> bool {
        self.eof
    }

    /// Bytes allocated for the buffer (for tests of the memory bound).
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Reads more bytes after the unread ones; false at the end of the file. The
    /// caller calls it only while `avail()` holds at most `line_bytes_max` bytes, so
    /// there is always room after moving the unread bytes to the front.
    pub(crate) fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        debug_assert!(self.end - self.pos < self.cap_max);
        // Move the unread bytes to the front when less than half a read fits after them.
        if self.pos > 0 && self.buf.len() - self.end < self.read_bytes.div_ceil(2) {
            self.buf.copy_within(self.pos..self.end, 0);
            self.base += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        // Grow only for a line that fills most of the buffer: ordinary files keep the
        // first `read_bytes`, so many partitions cost little.
        let unread = self.end - self.pos;
        if (unread > self.buf.len() / 2 || self.end == self.buf.len()) && self.buf.len() < self.cap_max {
            let want = (self.end + self.read_bytes).max(self.buf.len() * 2).min(self.cap_max);
            // Exact: `resize` alone may double the capacity past the cap.
            self.buf.reserve_exact(want - self.buf.len());
            self.buf.resize(want, 0);
        }
        debug_assert!(self.end < self.buf.len());
        let stop = (self.end + self.read_bytes).min(self.buf.len());
        loop {
            match self.file.read(&mut self.buf[self.end..stop]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Consumes the line at the read position and its `\n` (or the rest of the file)
    /// without holding it: its first `keep_max` bytes go to `keep`. Returns the
    /// line's length in bytes, without the `\n`.
    pub(crate) fn skip_line(&mut self, keep: &mut Vec<u8>, keep_max: usize) -> io::Result<u64> {
        keep.clear();
        let mut len = 0u64;
        loop {
            let a = self.avail();
            let (part, nl) = match memchr::memchr(b'\n', a) {
                Some(i) => (i, true),
                None => (a.len(), false),
            };
            let k = part.min(keep_max - keep.len());
            keep.extend_from_slice(&a[..k]);
            len += part as u64;
            if nl {
                self.pos += part + 1;
                return Ok(len);
            }
            self.pos = self.end;
            if !self.fill()? {
                return Ok(len);
            }
        }
    }

    /// Continues reading at file offset `byte`.
    pub(crate) fn seek(&mut self, byte: u64) -> io::Result<()> {
        self.file.seek(SeekFrom::Start(byte))?;
        self.base = byte;
        self.pos = 0;
        self.end = 0;
        self.eof = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &[u8], line_bytes_max: usize, read_bytes: usize) -> (LineBuf, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, bytes).unwrap();
        let limits = ReadLimits { line_bytes_max, record_lines_max: 4, read_bytes };
        (LineBuf::new(File::open(&path).unwrap(), &limits), dir)
    }

    /// Reads every line (skipping those over the limit); returns their lengths.
    fn lines(lb: &mut LineBuf, limit: usize) -> Vec<u64> {
        let mut out = Vec::new();
        let mut keep = Vec::new();
        loop {
            match memchr::memchr(b'\n', lb.avail()) {
                Some(i) if i <= limit => {
                    out.push(i as u64);
                    lb.consume(i + 1);
                }
                _ if lb.avail().len() > limit => out.push(lb.skip_line(&mut keep, 8).unwrap()),
                _ => {
                    if !lb.fill().unwrap() {
                        if !lb.avail().is_empty() {
                            out.push(lb.avail().len() as u64);
                        }
                        return out;
                    }
                }
            }
        }
    }

    #[test]
    fn short_lines_keep_the_first_buffer_and_long_ones_stay_under_the_cap() {
        let text: Vec<u8> = (0..1000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let (mut lb, _d) = reader(&text, 1024, 64);
        assert_eq!(lines(&mut lb, 1024).len(), 1000);
        assert_eq!(lb.capacity(), 64, "no growth for short lines");

        let mut text = b"a\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 5000));
        text.extend_from_slice(b"\nb\nmiddle-sized line of 600 bytes");
        text.extend(std::iter::repeat_n(b'y', 570));
        for read_bytes in [1, 7, 64, 4096] {
            let (mut lb, _d) = reader(&text, 1024, read_bytes);
            assert_eq!(lines(&mut lb, 1024), [1, 5000, 1, 600], "read_bytes {read_bytes}");
            assert!(lb.capacity() <= 1024 + read_bytes, "capacity {} (read_bytes {read_bytes})", lb.capacity());
        }
    }
}

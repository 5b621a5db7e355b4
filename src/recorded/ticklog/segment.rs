//! Segment files: their names (`ticks-{index:08}.tlog`), listing a log
//! directory in reading order, syncing that directory, and
//! [`SegmentFile`], the buffered reader of one segment's header and
//! framed records that both the reader and recovery use.
//!
//! [`SegmentFile`] checks the framing (length bound, CRC) and reports a bad
//! or cut record as a [`SourceError`] naming the file and the offset of the
//! record's start; what a body means is left to `format`.
//!
//! Imports: its sibling `format` and `crate::recorded::source`.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::format::{check_header, le_u32, HEADER_LEN, MAX_BODY_LEN, PREFIX_LEN};
use crate::recorded::source::SourceError;

/// Reader buffer: room for the largest record plus as much again, so a
/// record never has to be read in pieces.
const READ_BUFFER: usize = 2 * (PREFIX_LEN + MAX_BODY_LEN);

/// The file name of segment `index`, so the writer, the reader and tools
/// agree on it.
pub fn segment_file_name(index: u64) -> String {
    format!("ticks-{index:08}.tlog")
}

/// The segment index in a file name `ticks-<digits>.tlog`.
pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("ticks-")?.strip_suffix(".tlog")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments of `dir` with their indexes, in index order; other files
/// are ignored. An error is an error of reading `dir`.
pub(super) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(index) = entry.file_name().to_str().and_then(parse_segment_name) else {
            continue;
        };
        let path = entry.path();
        if path.is_file() {
            segments.push((index, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// The segment files of a log directory in reading order (by index), so
/// tools can list, inspect or archive them one by one. Other files in the
/// directory are ignored.
pub fn segment_paths(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let segments = list_segments(dir).map_err(|e| io_error(dir, e))?;
    Ok(segments.into_iter().map(|(_, path)| path).collect())
}

/// Makes a segment's creation or removal in `dir` durable.
#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes a segment's creation or removal in `dir` durable (nothing to do
/// off Unix).
#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn io_error(path: &Path, source: io::Error) -> SourceError {
    SourceError::Io { path: path.to_owned(), source }
}

/// A `Corrupt` error of `path` at `offset`.
pub(super) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> SourceError {
    SourceError::Corrupt { path: path.to_owned(), offset, reason: reason.into() }
}

fn truncated(path: &Path, offset: u64, reason: impl Into<String>) -> SourceError {
    SourceError::Truncated { path: path.to_owned(), offset, reason: reason.into() }
}

/// A segment file read in large chunks; records are parsed in place.
pub(super) struct SegmentFile {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Next unread byte in `buf`.
    pos: usize,
    /// End of the valid bytes in `buf`.
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

impl SegmentFile {
    /// Reads `file` (at `path`) from its start, into `buf` (a spare
    /// buffer to reuse, grown to [`READ_BUFFER`]).
    pub(super) fn new(path: PathBuf, file: File, mut buf: Vec<u8>) -> SegmentFile {
        buf.resize(READ_BUFFER, 0);
        SegmentFile { path, file, buf, pos: 0, end: 0, base: 0, eof: false }
    }

    /// The file, for errors.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes `from..to` of the buffer: a body [`next_record`] returned.
    ///
    /// [`next_record`]: SegmentFile::next_record
    #[inline]
    pub(super) fn body(&self, from: usize, to: usize) -> &[u8] {
        &self.buf[from..to]
    }

    /// The read buffer, for the next segment to reuse.
    pub(super) fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// The file, for recovery to cut.
    pub(super) fn into_file(self) -> File {
        self.file
    }

    /// Forgets that the file ended, so the next read looks again: for a
    /// segment still being appended to (see `TickLogReader::follow`).
    pub(super) fn clear_eof(&mut self) {
        self.eof = false;
    }

    /// File offset of the next unread byte.
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn available(&self) -> usize {
        self.end - self.pos
    }

    /// Makes `n` (at most [`READ_BUFFER`]) bytes available at `pos`;
    /// false if the file ends first.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.available() >= n {
            return Ok(true);
        }
        if self.pos + n > self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            self.base += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        while self.available() < n {
            if self.eof {
                return Ok(false);
            }
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads and checks the header, leaving `pos` at the first record.
    pub(super) fn read_header(&mut self) -> Result<(), SourceError> {
        if !self.fill(HEADER_LEN).map_err(|e| io_error(&self.path, e))? {
            let n = self.available();
            return Err(truncated(&self.path, 0, format!("segment header: {n} of {HEADER_LEN} bytes")));
        }
        if let Err(bad) = check_header(&self.buf[self.pos..self.pos + HEADER_LEN]) {
            return Err(corrupt(&self.path, bad.offset(), bad.to_string()));
        }
        self.pos += HEADER_LEN;
        Ok(())
    }

    /// The next record, checked for length and CRC: `Ok(None)` at a clean
    /// end of file, else the offset of its start and its body range in
    /// `buf` (consumed already).
    pub(super) fn next_record(&mut self) -> Result<Option<(u64, usize, usize)>, SourceError> {
        let start = self.offset();
        if !self.fill(PREFIX_LEN).map_err(|e| io_error(&self.path, e))? {
            let n = self.available();
            if n == 0 {
                return Ok(None);
            }
            return Err(truncated(&self.path, start, format!("record prefix: {n} of {PREFIX_LEN} bytes")));
        }
        let len = le_u32(&self.buf, self.pos) as usize;
        let crc = le_u32(&self.buf, self.pos + 4);
        if len > MAX_BODY_LEN {
            return Err(corrupt(&self.path, start, format!("record length {len} exceeds the maximum {MAX_BODY_LEN}")));
        }
        if len == 0 {
            return Err(corrupt(&self.path, start, "record with an empty body"));
        }
        if !self.fill(PREFIX_LEN + len).map_err(|e| io_error(&self.path, e))? {
            let n = self.available() - PREFIX_LEN;
            return Err(truncated(&self.path, start, format!("record body: {n} of {len} bytes")));
        }
        let body = self.pos + PREFIX_LEN;
        let actual = crc32c::crc32c(&self.buf[body..body + len]);
        if actual != crc {
            return Err(corrupt(
                &self.path,
                start,
                format!("record CRC mismatch: stored {crc:#010x}, computed {actual:#010x}"),
            ));
        }
        self.pos = body + len;
        Ok(Some((start, body, body + len)))
    }
}

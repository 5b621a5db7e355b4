//! The tick log: tickcast's own crash-safe recording of the sequenced tick
//! stream, so a session can be replayed bit for bit later.
//!
//! In: sequenced ticks ([`LogTick`]) in the order the engine sequenced them.
//! Out: segment files `ticks-{index:08}.tlog` in a directory; read back by
//! [`TickLogReader`], the same ticks as [`Event`]s of the [`Source`] trait
//! (floats bit-exact, `seq` and both timestamps kept), plus the per-symbol
//! seq gaps found on the way.
//!
//! The byte format is specified in `docs/TICKLOG.md`. In short: a 32-byte
//! segment header, then records of `len u32, crc32c u32, body`, the body a
//! symbol definition or a trade, quote or book update. Every segment defines
//! the symbols it uses, so each one can be read on its own.
//!
//! # Crash safety
//! The writer only ever appends, and never to a segment an earlier process
//! wrote: [`TickLogWriter::open`] first checks the last segment and cuts a
//! torn tail (an incomplete or CRC-failing last record left by a crash),
//! then starts a new segment. Damage bigger than a torn write
//! ([`MAX_RECOVERY_CUT`]) is logged and left for a human, never cut.
//! What survives which crash depends on [`Fsync`].
//!
//! # Cost
//! Appending encodes into a reused buffer (no allocation per record in
//! steady state) that goes to the file in one `write` per ~256 KiB or per
//! [`TickLogWriter::flush`]. Reading parses records in place from a 2 MiB
//! buffer; only book records allocate (their level `Vec`s).

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{BookDelta, Level, Quote, Side, Trade, Update};
use crate::recorded::source::{Event, Format, Gap, Source, SourceError};

/// First bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"TICKLOG\0";
/// Format version written in each segment header.
pub const VERSION: u16 = 1;
/// Length of a segment header in bytes: records start here.
pub const HEADER_LEN: usize = 32;
/// Largest record body in bytes. A larger length prefix is corruption (or
/// a torn write), so a damaged length can never make a reader allocate or
/// skip gigabytes.
pub const MAX_BODY_LEN: usize = 1 << 20;
/// The most bytes recovery cuts from a segment. A longer "tail" is not a
/// torn write but damage in the middle of the file, which recovery leaves
/// as it is (and logs) rather than destroying good records after it.
pub const MAX_RECOVERY_CUT: u64 = 8 << 20;

/// Record prefix: body length, then CRC32C of the body.
const PREFIX_LEN: usize = 8;
const KIND_SYMBOL: u8 = 0;
const KIND_TRADE: u8 = 1;
const KIND_QUOTE: u8 = 2;
const KIND_BOOK: u8 = 3;
/// kind, sym, seq, ts_event, ts_ingest: the start of every tick body.
const TICK_FIXED_LEN: usize = 1 + 4 + 8 + 8 + 8;
const TRADE_BODY_LEN: usize = TICK_FIXED_LEN + 8 + 8 + 1;
const QUOTE_BODY_LEN: usize = TICK_FIXED_LEN + 4 * 8;
const BOOK_FIXED_LEN: usize = TICK_FIXED_LEN + 2 + 2;
const LEVEL_LEN: usize = 16;
/// kind, id, name_len.
const SYMBOL_FIXED_LEN: usize = 1 + 4 + 1;
/// The writer hands its buffer to the OS once it holds this much.
const WRITE_BUFFER: usize = 256 << 10;
/// Reader buffer: room for the largest record plus as much again, so a
/// record never has to be read in pieces.
const READ_BUFFER: usize = 2 * (PREFIX_LEN + MAX_BODY_LEN);

/// One sequenced tick as the recorder appends it.
pub struct LogTick<'a> {
    /// Symbol name.
    pub sym: &'a str,
    /// Per-symbol seq the engine assigned.
    pub seq: u64,
    /// Event time, ns since the Unix epoch.
    pub ts_event: u64,
    /// Ingest time, ns since the Unix epoch.
    pub ts_ingest: u64,
    /// The change.
    pub update: &'a Update,
}

/// When appended records are forced to stable storage (`--fsync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Never: the OS writes back when it likes (a process crash loses
    /// nothing written; a power loss may lose recent records).
    Never,
    /// `fdatasync` after every flush.
    Always,
    /// `fdatasync` at most once per interval.
    Every(Duration),
}

/// `--fsync` takes `never`, `always` or an interval (`1s`, `200ms`), so the
/// flag parses with `FromStr` like every other value.
impl FromStr for Fsync {
    type Err = ParseFsyncError;

    fn from_str(s: &str) -> Result<Fsync, ParseFsyncError> {
        let value = s.trim();
        if value.eq_ignore_ascii_case("never") {
            return Ok(Fsync::Never);
        }
        if value.eq_ignore_ascii_case("always") {
            return Ok(Fsync::Always);
        }
        humantime::parse_duration(value)
            .map(Fsync::Every)
            .map_err(|e| ParseFsyncError { value: s.to_owned(), reason: e.to_string() })
    }
}

/// Prints the policy the way `--fsync` accepts it, for logs and `--help`.
impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fsync::Never => f.write_str("never"),
            Fsync::Always => f.write_str("always"),
            Fsync::Every(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// An `--fsync` value that is none of the accepted forms; the message lists
/// them, so the user can fix the flag without reading the docs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid fsync policy {value:?}: expected never, always or an interval such as 1s or 200ms ({reason})")]
pub struct ParseFsyncError {
    value: String,
    reason: String,
}

/// How the writer rolls segments and syncs.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Roll to a new segment once the current one reaches this many bytes.
    pub segment_bytes: u64,
    /// Roll to a new segment once the current one is this old.
    pub segment_age: Duration,
    /// Durability policy.
    pub fsync: Fsync,
}

/// A torn tail found and cut off when a log directory was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The segment that was cut.
    pub path: PathBuf,
    /// Its new length: the end of the last complete record.
    pub offset: u64,
    /// Bytes removed.
    pub dropped_bytes: u64,
}

/// Why the tick log could not be written or read.
pub type TickLogError = SourceError;

fn io_error(path: &Path, source: io::Error) -> SourceError {
    SourceError::Io { path: path.to_owned(), source }
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> SourceError {
    SourceError::Corrupt { path: path.to_owned(), offset, reason: reason.into() }
}

fn truncated(path: &Path, offset: u64, reason: impl Into<String>) -> SourceError {
    SourceError::Truncated { path: path.to_owned(), offset, reason: reason.into() }
}

/// The file name of segment `index`, so the writer, the reader and tools
/// agree on it.
pub fn segment_file_name(index: u64) -> String {
    format!("ticks-{index:08}.tlog")
}

/// The segment index in a file name `ticks-<digits>.tlog`.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("ticks-")?.strip_suffix(".tlog")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, TickLogError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
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
pub fn segment_paths(dir: &Path) -> Result<Vec<PathBuf>, TickLogError> {
    Ok(list_segments(dir)?.into_iter().map(|(_, path)| path).collect())
}

fn encode_header(index: u64, created_ns: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&0u16.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&created_ns.to_le_bytes());
    h[24..32].copy_from_slice(&index.to_le_bytes());
    h
}

/// Checks a complete 32-byte header.
fn check_header(path: &Path, h: &[u8]) -> Result<(), SourceError> {
    if h.len() < HEADER_LEN || h[0..8] != MAGIC {
        return Err(corrupt(path, 0, "not a tick log segment: bad magic (expected \"TICKLOG\\0\")"));
    }
    let version = le_u16(h, 8);
    if version > VERSION {
        return Err(corrupt(
            path,
            8,
            format!("segment format version {version} is newer than this reader, which reads version {VERSION}"),
        ));
    }
    if version == 0 {
        return Err(corrupt(path, 8, "segment format version 0 does not exist"));
    }
    let flags = le_u16(h, 10);
    if flags != 0 {
        return Err(corrupt(path, 10, format!("unknown header flags {flags:#06x}")));
    }
    let header_len = le_u32(h, 12);
    if header_len as usize != HEADER_LEN {
        return Err(corrupt(path, 12, format!("header length {header_len}, expected {HEADER_LEN}")));
    }
    Ok(())
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le_f64(b: &[u8], at: usize) -> f64 {
    f64::from_bits(le_u64(b, at))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// A segment file read in large chunks; records are parsed in place.
struct SegmentFile {
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
    fn new(path: PathBuf, file: File, mut buf: Vec<u8>) -> SegmentFile {
        buf.resize(READ_BUFFER, 0);
        SegmentFile { path, file, buf, pos: 0, end: 0, base: 0, eof: false }
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
    fn read_header(&mut self) -> Result<(), SourceError> {
        if !self.fill(HEADER_LEN).map_err(|e| io_error(&self.path, e))? {
            let n = self.available();
            return Err(truncated(&self.path, 0, format!("segment header: {n} of {HEADER_LEN} bytes")));
        }
        check_header(&self.path, &self.buf[self.pos..self.pos + HEADER_LEN])?;
        self.pos += HEADER_LEN;
        Ok(())
    }

    /// The next record, checked for length and CRC: `Ok(None)` at a clean
    /// end of file, else the offset of its start and its body range in
    /// `buf` (consumed already).
    fn next_record(&mut self) -> Result<Option<(u64, usize, usize)>, SourceError> {
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

/// Scans the segment at `path` and cuts its torn tail, if any: the first
/// record that is incomplete, too long or fails its CRC, and everything
/// after it. A file too short to hold a header (a crash right after it was
/// created) is removed. [`TickLogWriter::open`] runs this on the last
/// segment; it is public for tools that repair a log without writing.
///
/// Returns `Ok(None)` when there is nothing to cut, and also when the cut
/// would drop more than [`MAX_RECOVERY_CUT`] bytes: that is damage, not a
/// torn write, so the file is left as it is and an error is logged (the
/// reader will report the damage with its exact offset). A header that is
/// complete but not a tick log header this version reads is an error.
pub fn recover_segment(path: &Path) -> Result<Option<Recovery>, TickLogError> {
    let io = |e| io_error(path, e);
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    if file_len < HEADER_LEN as u64 {
        drop(file);
        fs::remove_file(path).map_err(io)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(|e| io_error(dir, e))?;
        }
        let recovery = Recovery { path: path.to_owned(), offset: 0, dropped_bytes: file_len };
        tracing::warn!(
            path = %path.display(),
            offset = 0,
            dropped_bytes = file_len,
            "tick log: removed a segment with an incomplete header (crash right after it was created)"
        );
        return Ok(Some(recovery));
    }
    let mut seg = SegmentFile::new(path.to_owned(), file, Vec::new());
    seg.read_header()?;
    let (offset, why) = loop {
        match seg.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(SourceError::Corrupt { offset, reason, .. } | SourceError::Truncated { offset, reason, .. }) => {
                break (offset, reason)
            }
            Err(e) => return Err(e),
        }
    };
    let dropped_bytes = file_len.saturating_sub(offset);
    if dropped_bytes > MAX_RECOVERY_CUT {
        tracing::error!(
            path = %path.display(),
            offset,
            bytes_after = dropped_bytes,
            reason = %why,
            "tick log segment is damaged, not torn: more than {MAX_RECOVERY_CUT} bytes follow the bad record, so \
             nothing was cut; the file is left as it is and a new segment starts after it"
        );
        return Ok(None);
    }
    seg.file.set_len(offset).map_err(io)?;
    seg.file.sync_all().map_err(io)?;
    tracing::warn!(
        path = %path.display(),
        offset,
        dropped_bytes,
        reason = %why,
        "tick log: cut a torn tail left by a crash"
    );
    Ok(Some(Recovery { path: path.to_owned(), offset, dropped_bytes }))
}

/// The segment being written.
struct Segment {
    path: PathBuf,
    file: File,
    /// When it was created, for `segment_age`.
    opened: Instant,
    /// Bytes in the file (the header included).
    len: u64,
}

impl Segment {
    fn create(dir: &Path, index: u64, fsync: Fsync) -> Result<Segment, TickLogError> {
        let path = dir.join(segment_file_name(index));
        let io = |e| io_error(&path, e);
        let mut file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(io)?;
        file.write_all(&encode_header(index, crate::model::now_ns())).map_err(io)?;
        if fsync != Fsync::Never {
            sync_dir(dir).map_err(|e| io_error(dir, e))?;
        }
        Ok(Segment { path, file, opened: Instant::now(), len: HEADER_LEN as u64 })
    }
}

/// Appends ticks to segment files in a directory.
///
/// One writer per directory: nothing stops a second one but `create_new`
/// on segment files, so two writers fail rather than interleave.
pub struct TickLogWriter {
    dir: PathBuf,
    opts: WriterOptions,
    seg: Segment,
    next_index: u64,
    /// Encoded records not yet handed to the OS; whole records only.
    buf: Vec<u8>,
    /// Segment-local ids of the symbols defined in the current segment.
    ids: HashMap<Box<str>, u32>,
    /// The same, by the caller's key ([`TickLogWriter::append_keyed`]);
    /// `u32::MAX` = not yet defined in this segment.
    by_key: Vec<u32>,
    /// Written to the file since the last `fdatasync`.
    unsynced: bool,
    /// Record bytes handed to the OS over the writer's life, all segments.
    written: u64,
    last_sync: Instant,
    /// A write or sync failed: the file's tail is unknown, so nothing more
    /// is written (reopening recovers it).
    failed: bool,
    finished: bool,
}

impl TickLogWriter {
    /// Opens `dir`, creating it, recovers the last segment's torn tail
    /// and starts a new segment.
    pub fn open(dir: &Path, opts: WriterOptions) -> Result<(TickLogWriter, Option<Recovery>), TickLogError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let segments = list_segments(dir)?;
        let mut recovery = None;
        let mut next_index = 1;
        if let Some((index, last)) = segments.last() {
            recovery = recover_segment(last)?;
            next_index = index.saturating_add(1);
        }
        let seg = Segment::create(dir, next_index, opts.fsync)?;
        let writer = TickLogWriter {
            dir: dir.to_owned(),
            opts,
            seg,
            next_index: next_index.saturating_add(1),
            buf: Vec::with_capacity(WRITE_BUFFER + 4096),
            ids: HashMap::new(),
            by_key: Vec::new(),
            unsynced: false,
            written: 0,
            last_sync: Instant::now(),
            failed: false,
            finished: false,
        };
        Ok((writer, recovery))
    }

    /// The segment being written, for logs and for tools that want to know
    /// where the tail is.
    pub fn current_segment(&self) -> &Path {
        &self.seg.path
    }

    /// Record bytes handed to the OS since the writer opened, over every
    /// segment (headers not counted): the recorder's byte counter.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Appends one tick (buffered).
    ///
    /// A tick the format cannot hold (a symbol name over 255 bytes, a book
    /// update over 65,535 levels a side or 1 MiB) is refused with an
    /// `InvalidInput` [`SourceError::Io`] and nothing is written; the writer
    /// stays usable.
    pub fn append(&mut self, tick: &LogTick<'_>) -> Result<(), TickLogError> {
        self.append_inner(None, tick)
    }

    /// [`append`](Self::append) for a caller that has its own dense id for
    /// the symbol (the recorder passes the server's symbol id): the
    /// segment-local id is then found by indexing, not by hashing the name.
    /// `key` must always go with the same name.
    pub fn append_keyed(&mut self, key: u32, tick: &LogTick<'_>) -> Result<(), TickLogError> {
        self.append_inner(Some(key), tick)
    }

    fn append_inner(&mut self, key: Option<u32>, tick: &LogTick<'_>) -> Result<(), TickLogError> {
        self.check_usable()?;
        if let Err(reason) = check_encodable(tick) {
            return Err(io_error(&self.seg.path, io::Error::new(io::ErrorKind::InvalidInput, reason)));
        }
        let cached = key.and_then(|k| self.by_key.get(k as usize).copied()).filter(|&id| id != u32::MAX);
        let sym = match cached {
            Some(id) => id,
            None => {
                let id = match self.ids.get(tick.sym) {
                    Some(&id) => id,
                    None => {
                        let id = self.ids.len() as u32;
                        encode_symbol(&mut self.buf, id, tick.sym);
                        self.ids.insert(tick.sym.into(), id);
                        id
                    }
                };
                if let Some(k) = key {
                    let k = k as usize;
                    if k >= self.by_key.len() {
                        self.by_key.resize(k + 1, u32::MAX);
                    }
                    self.by_key[k] = id;
                }
                id
            }
        };
        encode_tick(&mut self.buf, sym, tick);
        if self.buf.len() >= WRITE_BUFFER || self.seg.len + self.buf.len() as u64 >= self.opts.segment_bytes {
            self.write_out()?;
            self.after_write(false)?;
        }
        Ok(())
    }

    /// Hands buffered records to the OS and applies the fsync policy.
    pub fn flush(&mut self) -> Result<(), TickLogError> {
        self.check_usable()?;
        self.write_out()?;
        self.after_write(true)
    }

    /// Flushes, syncs and closes the current segment.
    pub fn finish(mut self) -> Result<(), TickLogError> {
        self.flush()?;
        if self.opts.fsync != Fsync::Never {
            self.sync()?;
        }
        self.finished = true;
        Ok(())
    }

    fn check_usable(&self) -> Result<(), TickLogError> {
        if self.failed {
            let e = io::Error::other("an earlier write or sync of this segment failed; reopen the log to recover it");
            return Err(io_error(&self.seg.path, e));
        }
        Ok(())
    }

    /// One `write_all` of the buffered records.
    fn write_out(&mut self) -> Result<(), TickLogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.seg.file.write_all(&self.buf) {
            self.failed = true;
            return Err(io_error(&self.seg.path, e));
        }
        self.seg.len += self.buf.len() as u64;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        self.unsynced = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), TickLogError> {
        if !self.unsynced {
            return Ok(());
        }
        if let Err(e) = self.seg.file.sync_data() {
            // After a failed fdatasync the kernel may have dropped the dirty
            // pages: nothing written since the last good sync can be trusted.
            self.failed = true;
            return Err(io_error(&self.seg.path, e));
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// After the buffer went to the file: roll if the segment is full or
    /// old, else sync per policy (`Always` only on an explicit flush,
    /// `Every` whenever its interval has passed).
    fn after_write(&mut self, explicit_flush: bool) -> Result<(), TickLogError> {
        let has_records = self.seg.len > HEADER_LEN as u64;
        if has_records
            && (self.seg.len >= self.opts.segment_bytes || self.seg.opened.elapsed() >= self.opts.segment_age)
        {
            return self.roll();
        }
        match self.opts.fsync {
            Fsync::Always if explicit_flush => self.sync(),
            Fsync::Every(interval) if self.last_sync.elapsed() >= interval => self.sync(),
            _ => Ok(()),
        }
    }

    /// Closes the current segment (synced unless `Never`) and starts the
    /// next, whose symbols are defined afresh.
    fn roll(&mut self) -> Result<(), TickLogError> {
        if self.opts.fsync != Fsync::Never {
            self.sync()?;
        }
        let seg = Segment::create(&self.dir, self.next_index, self.opts.fsync)?;
        self.next_index = self.next_index.saturating_add(1);
        self.seg = seg;
        self.ids.clear();
        self.by_key.clear();
        self.unsynced = false;
        Ok(())
    }
}

/// A writer dropped without [`TickLogWriter::finish`] still hands its
/// buffered records to the OS (like `BufWriter`), so an early return in the
/// recorder loses nothing a process crash would not.
impl Drop for TickLogWriter {
    fn drop(&mut self) {
        if self.finished || self.failed || self.buf.is_empty() {
            return;
        }
        if let Err(e) = self.write_out() {
            tracing::warn!(error = %e, "tick log: buffered records lost when the writer was dropped");
        }
    }
}

fn check_encodable(tick: &LogTick<'_>) -> Result<(), String> {
    if tick.sym.len() > u8::MAX as usize {
        return Err(format!("symbol name of {} bytes: the tick log holds at most 255", tick.sym.len()));
    }
    if let Update::Book(b) = tick.update {
        let (nb, na) = (b.bids.len(), b.asks.len());
        let body = BOOK_FIXED_LEN.saturating_add(LEVEL_LEN.saturating_mul(nb.saturating_add(na)));
        if nb > u16::MAX as usize || na > u16::MAX as usize || body > MAX_BODY_LEN {
            return Err(format!(
                "book update for {} with {nb} bids and {na} asks: a record holds at most 65535 levels a side \
                 and {MAX_BODY_LEN} bytes",
                tick.sym
            ));
        }
    }
    Ok(())
}

/// Reserves the record prefix; returns the record's start.
fn begin_record(buf: &mut Vec<u8>, body_len: usize) -> usize {
    buf.reserve(PREFIX_LEN + body_len);
    let start = buf.len();
    buf.extend_from_slice(&[0u8; PREFIX_LEN]);
    start
}

/// Fills in the prefix (length, CRC32C) of the record begun at `start`.
fn end_record(buf: &mut [u8], start: usize) {
    let body = &buf[start + PREFIX_LEN..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn encode_symbol(buf: &mut Vec<u8>, id: u32, name: &str) {
    let start = begin_record(buf, SYMBOL_FIXED_LEN + name.len());
    buf.push(KIND_SYMBOL);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.push(name.len() as u8);
    buf.extend_from_slice(name.as_bytes());
    end_record(buf, start);
}

fn encode_tick(buf: &mut Vec<u8>, sym: u32, tick: &LogTick<'_>) {
    let (kind, body_len) = match tick.update {
        Update::Trade(_) => (KIND_TRADE, TRADE_BODY_LEN),
        Update::Quote(_) => (KIND_QUOTE, QUOTE_BODY_LEN),
        Update::Book(b) => (KIND_BOOK, BOOK_FIXED_LEN + LEVEL_LEN * (b.bids.len() + b.asks.len())),
    };
    let start = begin_record(buf, body_len);
    buf.push(kind);
    buf.extend_from_slice(&sym.to_le_bytes());
    buf.extend_from_slice(&tick.seq.to_le_bytes());
    buf.extend_from_slice(&tick.ts_event.to_le_bytes());
    buf.extend_from_slice(&tick.ts_ingest.to_le_bytes());
    match tick.update {
        Update::Trade(t) => {
            buf.extend_from_slice(&t.px.to_le_bytes());
            buf.extend_from_slice(&t.sz.to_le_bytes());
            buf.push(match t.side {
                Side::Unknown => 0,
                Side::Buy => 1,
                Side::Sell => 2,
            });
        }
        Update::Quote(q) => {
            for v in [q.bid, q.bid_sz, q.ask, q.ask_sz] {
                buf.extend_from_slice(&v.to_le_bytes());
            }
        }
        Update::Book(b) => {
            // check_encodable bounded both counts.
            buf.extend_from_slice(&(b.bids.len() as u16).to_le_bytes());
            buf.extend_from_slice(&(b.asks.len() as u16).to_le_bytes());
            for level in b.bids.iter().chain(&b.asks) {
                buf.extend_from_slice(&level.px.to_le_bytes());
                buf.extend_from_slice(&level.sz.to_le_bytes());
            }
        }
    }
    end_record(buf, start);
}

/// The reader's symbols: reader-wide ids by name, the current segment's
/// local ids, and per-symbol seq tracking.
#[derive(Default)]
struct Symbols {
    /// Segment-local id (the index) to global id, for the current segment.
    local: Vec<u32>,
    names: Vec<Arc<str>>,
    by_name: HashMap<Arc<str>, u32>,
    /// Last seq seen per global id.
    last_seq: Vec<Option<u64>>,
    gaps: Vec<Gap>,
}

impl Symbols {
    fn define(&mut self, body: &[u8]) -> Result<(), String> {
        if body.len() < SYMBOL_FIXED_LEN {
            return Err(format!("symbol definition of {} bytes, at least {SYMBOL_FIXED_LEN} needed", body.len()));
        }
        let id = le_u32(body, 1);
        let name_len = body[5] as usize;
        if body.len() != SYMBOL_FIXED_LEN + name_len {
            return Err(format!("symbol definition of {} bytes holds a name of {name_len} bytes", body.len()));
        }
        if id as usize != self.local.len() {
            return Err(format!(
                "symbol id {id} defined out of order: the next id in this segment is {}",
                self.local.len()
            ));
        }
        let name = std::str::from_utf8(&body[SYMBOL_FIXED_LEN..])
            .map_err(|e| format!("symbol name of id {id} is not UTF-8: {e}"))?;
        let global = match self.by_name.get(name) {
            Some(&g) => g,
            None => {
                let g = self.names.len() as u32;
                let name: Arc<str> = Arc::from(name);
                self.names.push(name.clone());
                self.by_name.insert(name, g);
                self.last_seq.push(None);
                g
            }
        };
        self.local.push(global);
        Ok(())
    }

    /// Decodes a trade, quote or book body into an event with a global id,
    /// noting a seq gap.
    fn decode_tick(&mut self, kind: u8, body: &[u8]) -> Result<Event, String> {
        if body.len() < TICK_FIXED_LEN {
            return Err(format!("record of kind {kind} with {} bytes, at least {TICK_FIXED_LEN} needed", body.len()));
        }
        let local = le_u32(body, 1);
        let seq = le_u64(body, 5);
        let ts_event = le_u64(body, 13);
        let ts_recv = le_u64(body, 21);
        let p = TICK_FIXED_LEN;
        let update = match kind {
            KIND_TRADE => {
                expect_len(body, TRADE_BODY_LEN, "trade")?;
                let side = match body[p + 16] {
                    0 => Side::Unknown,
                    1 => Side::Buy,
                    2 => Side::Sell,
                    s => return Err(format!("unknown trade side {s}")),
                };
                Update::Trade(Trade { px: le_f64(body, p), sz: le_f64(body, p + 8), side })
            }
            KIND_QUOTE => {
                expect_len(body, QUOTE_BODY_LEN, "quote")?;
                Update::Quote(Quote {
                    bid: le_f64(body, p),
                    bid_sz: le_f64(body, p + 8),
                    ask: le_f64(body, p + 16),
                    ask_sz: le_f64(body, p + 24),
                })
            }
            _ => {
                if body.len() < BOOK_FIXED_LEN {
                    return Err(format!("book record of {} bytes, at least {BOOK_FIXED_LEN} needed", body.len()));
                }
                let nb = le_u16(body, p) as usize;
                let na = le_u16(body, p + 2) as usize;
                let want = BOOK_FIXED_LEN + LEVEL_LEN * (nb + na);
                if body.len() != want {
                    return Err(format!(
                        "book record of {} bytes, but {nb} bids and {na} asks take {want}",
                        body.len()
                    ));
                }
                let level = |i: usize| {
                    let at = BOOK_FIXED_LEN + LEVEL_LEN * i;
                    Level { px: le_f64(body, at), sz: le_f64(body, at + 8) }
                };
                Update::Book(BookDelta { bids: (0..nb).map(level).collect(), asks: (nb..nb + na).map(level).collect() })
            }
        };
        let sym = *self
            .local
            .get(local as usize)
            .ok_or_else(|| format!("symbol id {local} is not defined in this segment"))?;
        if let Some(last) = self.last_seq.get_mut(sym as usize) {
            if let Some(prev) = *last {
                let expected = prev.wrapping_add(1);
                if seq != expected && seq != 1 {
                    self.gaps.push(Gap { sym, what: "seq", expected, got: seq, ts_event });
                }
            }
            *last = Some(seq);
        }
        Ok(Event { sym, ts_event, ts_recv, seq: Some(seq), update })
    }
}

fn expect_len(body: &[u8], want: usize, what: &str) -> Result<(), String> {
    if body.len() != want {
        return Err(format!("{what} record of {} bytes, expected {want}", body.len()));
    }
    Ok(())
}

/// Reads a tick log directory (every segment in order) or one segment.
///
/// Symbol ids in the events are reader-wide (stable across segments), seq
/// gaps per symbol are reported through [`Source::take_gaps`] (a seq of 1
/// starts a new run, as after a server restart, and is no gap). After an
/// error, `next_event` returns `Ok(None)`.
pub struct TickLogReader {
    segments: Vec<PathBuf>,
    /// Index in `segments` of the next segment to open.
    next: usize,
    cur: Option<SegmentFile>,
    /// The last segment's buffer, reused for the next.
    spare: Vec<u8>,
    syms: Symbols,
    done: bool,
}

impl TickLogReader {
    /// Opens a directory or a segment file.
    ///
    /// A directory's segments (`ticks-*.tlog`, in index order) are read one
    /// after another; an empty directory holds no events. The first
    /// segment's header is checked here, the others' when they are reached.
    pub fn open(path: &Path) -> Result<TickLogReader, TickLogError> {
        let segments = if path.is_dir() { segment_paths(path)? } else { vec![path.to_owned()] };
        let mut reader =
            TickLogReader { segments, next: 0, cur: None, spare: Vec::new(), syms: Symbols::default(), done: false };
        reader.open_next()?;
        Ok(reader)
    }

    /// Opens the next segment; false when there is none.
    fn open_next(&mut self) -> Result<bool, SourceError> {
        if let Some(seg) = self.cur.take() {
            self.spare = seg.buf;
        }
        let Some(path) = self.segments.get(self.next) else {
            return Ok(false);
        };
        self.next += 1;
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let mut seg = SegmentFile::new(path.clone(), file, std::mem::take(&mut self.spare));
        seg.read_header()?;
        self.syms.local.clear();
        self.cur = Some(seg);
        Ok(true)
    }

    fn next_inner(&mut self) -> Result<Option<Event>, SourceError> {
        loop {
            let Some(seg) = self.cur.as_mut() else {
                if self.open_next()? {
                    continue;
                }
                return Ok(None);
            };
            let Some((start, from, to)) = seg.next_record()? else {
                if self.open_next()? {
                    continue;
                }
                return Ok(None);
            };
            let body = &seg.buf[from..to];
            let result = match body[0] {
                KIND_SYMBOL => self.syms.define(body).map(|()| None),
                kind @ (KIND_TRADE | KIND_QUOTE | KIND_BOOK) => self.syms.decode_tick(kind, body).map(Some),
                kind => Err(format!("unknown record kind {kind}")),
            };
            match result {
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) => {}
                Err(reason) => return Err(corrupt(&seg.path, start, reason)),
            }
        }
    }
}

impl Source for TickLogReader {
    fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        if self.done {
            return Ok(None);
        }
        match self.next_inner() {
            Ok(Some(event)) => Ok(Some(event)),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                self.cur = None;
                Err(e)
            }
        }
    }

    /// The name of a reader-wide id; an id no event carried gives `""`.
    fn symbol(&self, id: u32) -> Arc<str> {
        self.syms.names.get(id as usize).cloned().unwrap_or_else(|| Arc::from(""))
    }

    fn take_gaps(&mut self, out: &mut Vec<Gap>) {
        out.append(&mut self.syms.gaps);
    }

    fn format(&self) -> Format {
        Format::TickLog
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "tickcast-ticklog-{tag}-{}-{}-{n}",
                std::process::id(),
                crate::model::now_ns()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).unwrap();
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn opts() -> WriterOptions {
        WriterOptions { segment_bytes: 64 << 20, segment_age: Duration::from_secs(3600), fsync: Fsync::Never }
    }

    fn quote(i: u64) -> Update {
        Update::Quote(Quote { bid: i as f64, bid_sz: 1.5, ask: i as f64 + 0.5, ask_sz: 2.0 })
    }

    fn tick<'a>(sym: &'a str, seq: u64, update: &'a Update) -> LogTick<'a> {
        LogTick { sym, seq, ts_event: 1_000 + seq, ts_ingest: 2_000 + seq, update }
    }

    /// Every float of an update as bits, plus the shape, for bit-exact
    /// comparison (NaN != NaN, -0.0 == 0.0 under PartialEq).
    fn bits(u: &Update) -> (u8, Vec<u64>, usize) {
        match u {
            Update::Trade(t) => (t.side as u8, vec![t.px.to_bits(), t.sz.to_bits()], 0),
            Update::Quote(q) => (9, vec![q.bid.to_bits(), q.bid_sz.to_bits(), q.ask.to_bits(), q.ask_sz.to_bits()], 0),
            Update::Book(b) => (
                10,
                b.bids.iter().chain(&b.asks).flat_map(|l| [l.px.to_bits(), l.sz.to_bits()]).collect(),
                b.bids.len(),
            ),
        }
    }

    /// Every event with its symbol name, and the gaps.
    type ReadBack = (Vec<(Arc<str>, Event)>, Vec<Gap>);

    fn read_all(path: &Path) -> Result<ReadBack, SourceError> {
        let mut reader = TickLogReader::open(path)?;
        let mut events = Vec::new();
        while let Some(e) = reader.next_event()? {
            events.push((reader.symbol(e.sym), e));
        }
        let mut gaps = Vec::new();
        reader.take_gaps(&mut gaps);
        Ok((events, gaps))
    }

    /// Writes `n` quotes for "AAA" (seq 1..=n) into a fresh segment and
    /// finishes; returns the segment and the offsets where each record
    /// starts (index 0 the symbol definition, k quote k), plus the file end.
    fn write_quotes(dir: &Path, n: u64) -> (PathBuf, Vec<u64>) {
        let (mut w, rec) = TickLogWriter::open(dir, opts()).unwrap();
        assert_eq!(rec, None);
        let path = w.current_segment().to_owned();
        let mut offsets = vec![HEADER_LEN as u64];
        offsets.push(offsets[0] + (PREFIX_LEN + SYMBOL_FIXED_LEN + 3) as u64);
        for seq in 1..=n {
            w.append(&tick("AAA", seq, &quote(seq))).unwrap();
            offsets.push(offsets.last().unwrap() + (PREFIX_LEN + QUOTE_BODY_LEN) as u64);
        }
        w.finish().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), *offsets.last().unwrap());
        (path, offsets)
    }

    /// A segment built by hand: header, then raw bodies with correct CRCs.
    fn raw_segment(path: &Path, version: u16, bodies: &[Vec<u8>]) {
        let mut bytes = encode_header(1, 0).to_vec();
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        for body in bodies {
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
            bytes.extend_from_slice(body);
        }
        fs::write(path, bytes).unwrap();
    }

    fn symbol_body(id: u32, name: &[u8]) -> Vec<u8> {
        let mut b = vec![KIND_SYMBOL];
        b.extend_from_slice(&id.to_le_bytes());
        b.push(name.len() as u8);
        b.extend_from_slice(name);
        b
    }

    fn quote_body(sym: u32, seq: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let u = quote(seq);
        encode_tick(&mut buf, sym, &tick("-", seq, &u));
        buf.split_off(PREFIX_LEN)
    }

    fn expect_corrupt(result: Result<Option<Event>, SourceError>, path: &Path, at: u64, what: &str) {
        match result {
            Err(SourceError::Corrupt { path: p, offset, reason }) => {
                assert_eq!((p.as_path(), offset), (path, at), "{reason}");
                assert!(reason.contains(what), "{reason:?} does not mention {what:?}");
            }
            other => panic!("expected Corrupt at {at}, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_is_bit_exact() {
        let dir = TempDir::new("roundtrip");
        let weird = [
            0.0,
            -0.0,
            f64::NAN,
            f64::from_bits(0x7ff4_dead_beef_0001), // signalling NaN with a payload
            f64::from_bits(0xfff8_0000_0000_0042), // negative quiet NaN
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::from_bits(1), // smallest subnormal
            0.1 + 0.2,
        ];
        let long_name = "Z".repeat(32);
        let names = ["A", "BTC-USDT", long_name.as_str(), "ESH1:CME/fut_2"];
        let many: Vec<Level> = (0..2000).map(|i| Level { px: weird[i % weird.len()], sz: i as f64 }).collect();
        let mut updates = Vec::new();
        for (i, &x) in weird.iter().enumerate() {
            let y = weird[(i + 5) % weird.len()];
            let side = [Side::Unknown, Side::Buy, Side::Sell][i % 3];
            updates.push(Update::Trade(Trade { px: x, sz: y, side }));
            updates.push(Update::Quote(Quote { bid: x, bid_sz: y, ask: -x, ask_sz: x }));
        }
        updates.push(Update::Book(BookDelta::default()));
        updates.push(Update::Book(BookDelta { bids: many.clone(), asks: Vec::new() }));
        updates.push(Update::Book(BookDelta { bids: Vec::new(), asks: many[..7].to_vec() }));
        updates.push(Update::Book(BookDelta { bids: many[..3].to_vec(), asks: many.clone() }));

        let (mut w, _) = TickLogWriter::open(&dir.0, opts()).unwrap();
        let mut sent = Vec::new();
        let mut seqs = HashMap::new();
        for (i, u) in updates.iter().enumerate() {
            let sym = names[i % names.len()];
            let seq = seqs.entry(sym).and_modify(|s| *s += 1).or_insert(1u64);
            let t = LogTick { sym, seq: *seq, ts_event: u64::MAX - i as u64, ts_ingest: i as u64, update: u };
            w.append(&t).unwrap();
            sent.push((sym, *seq, t.ts_event, t.ts_ingest, u));
        }
        w.finish().unwrap();

        let (got, gaps) = read_all(&dir.0).unwrap();
        assert!(gaps.is_empty(), "{gaps:?}");
        assert_eq!(got.len(), sent.len());
        for ((name, e), (sym, seq, ts_event, ts_ingest, u)) in got.iter().zip(&sent) {
            assert_eq!(&**name, *sym);
            assert_eq!((e.seq, e.ts_event, e.ts_recv), (Some(*seq), *ts_event, *ts_ingest));
            assert_eq!(bits(&e.update), bits(u));
            assert_eq!(e.update.kind(), u.kind());
        }
        // Global ids are dense, in order of first appearance.
        let ids: Vec<u32> = got.iter().take(names.len()).map(|(_, e)| e.sym).collect();
        assert_eq!(ids, [0, 1, 2, 3]);

        // The generic entry point detects the format from the directory.
        let mut source = crate::recorded::open(&dir.0).unwrap();
        assert_eq!(source.format(), Format::TickLog);
        assert!(source.next_event().unwrap().is_some());
    }

    #[test]
    fn empty_directory_and_missing_path() {
        let dir = TempDir::new("empty");
        let mut reader = TickLogReader::open(&dir.0).unwrap();
        assert!(reader.next_event().unwrap().is_none());
        assert!(matches!(TickLogReader::open(&dir.0.join("nope.tlog")), Err(SourceError::Io { .. })));
    }

    #[test]
    fn unencodable_ticks_are_refused_and_the_writer_goes_on() {
        let dir = TempDir::new("refuse");
        let (mut w, _) = TickLogWriter::open(&dir.0, opts()).unwrap();
        let long = "x".repeat(256);
        let q = quote(1);
        assert!(matches!(w.append(&tick(&long, 1, &q)), Err(SourceError::Io { .. })));
        let level = Level { px: 1.0, sz: 1.0 };
        let huge = Update::Book(BookDelta { bids: vec![level; 40_000], asks: vec![level; 40_000] });
        let err = w.append(&tick("B", 1, &huge)).unwrap_err().to_string();
        assert!(err.contains("40000 bids"), "{err}");
        w.append(&tick("B", 1, &q)).unwrap();
        w.finish().unwrap();
        let (got, _) = read_all(&dir.0).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&*got[0].0, "B");
    }

    #[test]
    fn rolls_by_size_and_every_segment_stands_alone() {
        let dir = TempDir::new("rollsize");
        let o = WriterOptions { segment_bytes: 4096, ..opts() };
        let (mut w, _) = TickLogWriter::open(&dir.0, o).unwrap();
        let names = ["AAA", "BB", "C"];
        for i in 0..3000u64 {
            let u = quote(i);
            w.append(&tick(names[(i % 3) as usize], i / 3 + 1, &u)).unwrap();
        }
        w.finish().unwrap();
        let segments = segment_paths(&dir.0).unwrap();
        assert!(segments.len() > 10, "{} segments", segments.len());
        for (i, path) in segments.iter().enumerate() {
            assert_eq!(path.file_name().unwrap().to_str().unwrap(), segment_file_name(i as u64 + 1));
            // Rolled right after crossing the limit, never far past it.
            assert!(fs::metadata(path).unwrap().len() < 4096 + 256, "{}", path.display());
            // Each segment defines its own symbols.
            let (events, _) = read_all(path).unwrap();
            assert!(!events.is_empty());
            for (name, e) in &events {
                let Update::Quote(q) = &e.update else { panic!() };
                let i = q.bid as u64;
                assert_eq!(&**name, names[(i % 3) as usize]);
            }
        }
        let (events, gaps) = read_all(&dir.0).unwrap();
        assert!(gaps.is_empty(), "{gaps:?}");
        assert_eq!(events.len(), 3000);
        for (i, (name, e)) in events.iter().enumerate() {
            assert_eq!(&**name, names[i % 3]);
            assert_eq!(e.sym, (i % 3) as u32, "global ids are stable across segments");
            assert_eq!(e.seq, Some(i as u64 / 3 + 1));
        }
    }

    #[test]
    fn rolls_by_age_but_not_when_empty() {
        let dir = TempDir::new("rollage");
        let o = WriterOptions { segment_age: Duration::from_nanos(1), ..opts() };
        let (mut w, _) = TickLogWriter::open(&dir.0, o).unwrap();
        for seq in 1..=5 {
            let u = quote(seq);
            w.append(&tick("AAA", seq, &u)).unwrap();
            w.flush().unwrap();
            // Nothing new: an old but empty segment is not rolled.
            w.flush().unwrap();
        }
        w.finish().unwrap();
        let segments = segment_paths(&dir.0).unwrap();
        // Five segments of one quote each, plus the empty one started last.
        assert_eq!(segments.len(), 6);
        assert_eq!(fs::metadata(&segments[5]).unwrap().len(), HEADER_LEN as u64);
        let (events, gaps) = read_all(&dir.0).unwrap();
        assert_eq!(events.len(), 5);
        assert!(gaps.is_empty());
        assert!(events.iter().all(|(n, e)| &**n == "AAA" && e.sym == 0));
    }

    #[test]
    fn every_open_starts_a_new_segment() {
        let dir = TempDir::new("reopen");
        for round in 1..=3u64 {
            let (mut w, rec) = TickLogWriter::open(&dir.0, opts()).unwrap();
            assert_eq!(rec, None);
            assert_eq!(w.current_segment(), dir.0.join(segment_file_name(round)));
            let u = quote(round);
            w.append(&tick("AAA", 1, &u)).unwrap();
            // Dropped without finish: the buffer still reaches the file.
        }
        let (events, gaps) = read_all(&dir.0).unwrap();
        assert_eq!(events.len(), 3);
        assert!(gaps.is_empty(), "seq 1 starts a new run: {gaps:?}");
    }

    #[test]
    fn syncing_policies_write_the_same_bytes() {
        for fsync in [Fsync::Always, Fsync::Every(Duration::ZERO), Fsync::Every(Duration::from_secs(60))] {
            let dir = TempDir::new("fsync");
            let o = WriterOptions { segment_bytes: 2048, fsync, ..opts() };
            let (mut w, _) = TickLogWriter::open(&dir.0, o).unwrap();
            for seq in 1..=100 {
                let u = quote(seq);
                w.append(&tick("AAA", seq, &u)).unwrap();
                if seq % 10 == 0 {
                    w.flush().unwrap();
                }
            }
            w.finish().unwrap();
            assert_eq!(read_all(&dir.0).unwrap().0.len(), 100);
        }
    }

    #[test]
    fn seq_gaps_are_reported_but_restarts_are_not() {
        let dir = TempDir::new("gaps");
        let (mut w, _) = TickLogWriter::open(&dir.0, opts()).unwrap();
        for (sym, seq) in [("A", 1), ("A", 2), ("B", 7), ("A", 3), ("A", 5), ("B", 8), ("A", 1), ("A", 2), ("B", 10)] {
            let u = quote(seq);
            w.append(&tick(sym, seq, &u)).unwrap();
        }
        w.finish().unwrap();
        let (events, gaps) = read_all(&dir.0).unwrap();
        assert_eq!(events.len(), 9);
        assert_eq!(
            gaps,
            [
                Gap { sym: 0, what: "seq", expected: 4, got: 5, ts_event: 1_005 },
                Gap { sym: 1, what: "seq", expected: 9, got: 10, ts_event: 1_010 },
            ]
        );
    }

    #[test]
    fn recovery_cuts_a_torn_tail() {
        // (cut the file at this many bytes into the last record, then
        // append these bytes)
        let garbage: &[u8] = &[0xff; 19];
        let zeros: &[u8] = &[0; 4096];
        let cases: [(Option<u64>, &[u8]); 9] = [
            (Some(1), &[]),
            (Some(4), &[]),
            (Some(7), &[]),
            (Some(8), &[]),
            (Some(9), &[]),
            (Some(68), &[]),
            (Some(30), garbage),
            (None, garbage),
            (None, zeros),
        ];
        for (cut, tail) in cases {
            let dir = TempDir::new("recover");
            let n = 50;
            let (path, offsets) = write_quotes(&dir.0, n);
            let last_start = offsets[offsets.len() - 2];
            let end = offsets[offsets.len() - 1];
            let (keep, expect_at, expect_events) = match cut {
                Some(k) => (last_start + k, last_start, n - 1),
                None => (end, end, n),
            };
            let f = OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(keep).unwrap();
            drop(f);
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(tail).unwrap();
            drop(f);
            let len = keep + tail.len() as u64;

            // Read directly, the torn tail is an error.
            let direct = read_all(&path);
            assert!(
                matches!(direct, Err(SourceError::Truncated { offset, .. } | SourceError::Corrupt { offset, .. }) if offset == expect_at),
                "{cut:?}: {direct:?}"
            );

            let (w, rec) = TickLogWriter::open(&dir.0, opts()).unwrap();
            let want = Recovery { path: path.clone(), offset: expect_at, dropped_bytes: len - expect_at };
            assert_eq!(rec, Some(want), "cut {cut:?} tail {}", tail.len());
            w.finish().unwrap();
            assert_eq!(fs::metadata(&path).unwrap().len(), expect_at);

            let (events, gaps) = read_all(&dir.0).unwrap();
            assert!(gaps.is_empty());
            assert_eq!(events.len() as u64, expect_events);
            for (i, (_, e)) in events.iter().enumerate() {
                assert_eq!(bits(&e.update), bits(&quote(i as u64 + 1)));
            }
            // The segment the last open started is empty and complete.
            let (_, rec) = TickLogWriter::open(&dir.0, opts()).unwrap();
            assert_eq!(rec, None, "second open after cut {cut:?}");
        }
    }

    #[test]
    fn recovery_removes_a_segment_without_a_whole_header() {
        for len in [0usize, 10, 31] {
            let dir = TempDir::new("header");
            let path = dir.0.join(segment_file_name(1));
            fs::write(&path, &encode_header(1, 0)[..len]).unwrap();
            let (w, rec) = TickLogWriter::open(&dir.0, opts()).unwrap();
            assert_eq!(rec, Some(Recovery { path: path.clone(), offset: 0, dropped_bytes: len as u64 }));
            assert!(!path.exists());
            assert_eq!(w.current_segment(), dir.0.join(segment_file_name(2)));
            w.finish().unwrap();
            assert_eq!(read_all(&dir.0).unwrap().0.len(), 0);
            // Read directly, a short header is truncation.
            fs::write(&path, &encode_header(1, 0)[..len]).unwrap();
            let err = TickLogReader::open(&path).err();
            assert!(matches!(err, Some(SourceError::Truncated { offset: 0, .. })), "{err:?}");
        }
    }

    #[test]
    fn damage_beyond_the_limit_is_left_alone() {
        let dir = TempDir::new("damage");
        let n = MAX_RECOVERY_CUT / (PREFIX_LEN + QUOTE_BODY_LEN) as u64 + 100;
        let (path, offsets) = write_quotes(&dir.0, n);
        let mut bytes = fs::read(&path).unwrap();
        let victim = offsets[1] as usize + PREFIX_LEN + 20; // inside quote 1
        bytes[victim] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let (w, rec) = TickLogWriter::open(&dir.0, opts()).unwrap();
        assert_eq!(rec, None);
        assert_eq!(fs::read(&path).unwrap(), bytes, "left as it was");
        assert_eq!(w.current_segment(), dir.0.join(segment_file_name(2)));
        w.finish().unwrap();
        let mut reader = TickLogReader::open(&dir.0).unwrap();
        expect_corrupt(reader.next_event(), &path, offsets[1], "CRC mismatch");
    }

    #[test]
    fn corruption_names_the_file_and_the_record() {
        let dir = TempDir::new("corrupt");
        let (path, offsets) = write_quotes(&dir.0, 20);
        let pristine = fs::read(&path).unwrap();
        for k in [1usize, 2, 7, 20] {
            // Flip one bit in record k (0 is the symbol definition).
            let mut bytes = pristine.clone();
            bytes[offsets[k] as usize + PREFIX_LEN + 3] ^= 1;
            fs::write(&path, &bytes).unwrap();
            let mut reader = TickLogReader::open(&dir.0).unwrap();
            for _ in 1..k {
                assert!(reader.next_event().unwrap().is_some());
            }
            expect_corrupt(reader.next_event(), &path, offsets[k], "CRC mismatch");
            assert!(reader.next_event().unwrap().is_none(), "nothing after an error");
        }
        // A length prefix over the maximum.
        let mut bytes = pristine.clone();
        bytes[offsets[5] as usize..][..4].copy_from_slice(&(MAX_BODY_LEN as u32 + 1).to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let mut reader = TickLogReader::open(&path).unwrap();
        for _ in 1..5 {
            reader.next_event().unwrap();
        }
        expect_corrupt(reader.next_event(), &path, offsets[5], "exceeds the maximum");

        // Cut inside record 9: Truncated at its start.
        fs::write(&path, &pristine[..offsets[9] as usize + 30]).unwrap();
        let mut reader = TickLogReader::open(&path).unwrap();
        for _ in 1..9 {
            reader.next_event().unwrap();
        }
        match reader.next_event() {
            Err(SourceError::Truncated { path: p, offset, .. }) => assert_eq!((p, offset), (path.clone(), offsets[9])),
            other => panic!("{other:?}"),
        }
        assert!(reader.next_event().unwrap().is_none());
    }

    #[test]
    fn malformed_records_with_good_crcs_are_corrupt() {
        let dir = TempDir::new("malformed");
        let path = dir.0.join("one.tlog");
        let def = symbol_body(0, b"AAA");
        let q = quote_body(0, 1);
        let first = (HEADER_LEN + PREFIX_LEN + def.len()) as u64;
        let mut short_quote = q.clone();
        short_quote.pop();
        let mut bad_side = Vec::new();
        let t = Update::Trade(Trade { px: 1.0, sz: 1.0, side: Side::Buy });
        encode_tick(&mut bad_side, 0, &tick("-", 1, &t));
        let mut bad_side = bad_side.split_off(PREFIX_LEN);
        *bad_side.last_mut().unwrap() = 3;
        let mut bad_book = quote_body(0, 1);
        bad_book[0] = KIND_BOOK; // 61 bytes cannot hold the counts it claims
        let cases: [(Vec<u8>, &str); 8] = [
            (vec![9, 1, 2, 3], "unknown record kind 9"),
            (quote_body(1, 1), "symbol id 1 is not defined"),
            (symbol_body(1, b"\xff\xfe"), "not UTF-8"),
            (symbol_body(5, b"BBB"), "out of order"),
            (short_quote, "quote record of 60 bytes"),
            (bad_side, "unknown trade side 3"),
            (bad_book, "book record"),
            (vec![KIND_SYMBOL, 1, 0, 0, 0, 9, b'x'], "holds a name of 9 bytes"),
        ];
        for (body, what) in cases {
            // The first record is fine; the bad one is the second.
            raw_segment(&path, 1, &[def.clone(), q.clone(), body]);
            let mut reader = TickLogReader::open(&path).unwrap();
            assert!(reader.next_event().unwrap().is_some());
            let at = first + (PREFIX_LEN + q.len()) as u64;
            expect_corrupt(reader.next_event(), &path, at, what);
        }
        // An empty body (a zero-filled tail has a valid CRC for it).
        raw_segment(&path, 1, &[def.clone(), Vec::new()]);
        let mut reader = TickLogReader::open(&path).unwrap();
        expect_corrupt(reader.next_event(), &path, first, "empty body");
    }

    #[test]
    fn headers_are_checked() {
        let dir = TempDir::new("headers");
        let path = dir.0.join(segment_file_name(1));
        raw_segment(&path, 2, &[]);
        let err = TickLogReader::open(&dir.0).err().unwrap().to_string();
        assert!(err.contains("version 2") && err.contains("reads version 1"), "{err}");
        // The writer refuses to continue a log it cannot read.
        assert!(TickLogWriter::open(&dir.0, opts()).is_err());
        raw_segment(&path, 0, &[]);
        assert!(TickLogReader::open(&path).is_err());
        let mut bytes = encode_header(1, 0);
        bytes[0] = b'X';
        fs::write(&path, bytes).unwrap();
        let err = TickLogReader::open(&path).err().unwrap().to_string();
        assert!(err.contains("bad magic"), "{err}");
        let mut bytes = encode_header(1, 0);
        bytes[10] = 1;
        fs::write(&path, bytes).unwrap();
        assert!(TickLogReader::open(&path).is_err());
        // A header alone is a valid, empty segment.
        raw_segment(&path, 1, &[]);
        assert!(TickLogReader::open(&path).unwrap().next_event().unwrap().is_none());
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(1), "ticks-00000001.tlog");
        assert_eq!(parse_segment_name("ticks-00000042.tlog"), Some(42));
        assert_eq!(parse_segment_name("ticks-123456789.tlog"), Some(123_456_789));
        for bad in ["ticks-.tlog", "ticks-1.tlog.tmp", "ticks--1.tlog", "ticks-+1.tlog", "x-1.tlog"] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
        let dir = TempDir::new("names");
        for name in ["ticks-00000010.tlog", "ticks-00000002.tlog", "notes.txt", "ticks-00000003.tlog.bak"] {
            fs::write(dir.0.join(name), b"").unwrap();
        }
        let names: Vec<_> =
            segment_paths(&dir.0).unwrap().into_iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["ticks-00000002.tlog", "ticks-00000010.tlog"]);
    }

    #[test]
    fn crc_is_castagnoli() {
        // The check value docs/TICKLOG.md quotes.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn fsync_flag_values() {
        assert_eq!("never".parse(), Ok(Fsync::Never));
        assert_eq!("always".parse(), Ok(Fsync::Always));
        assert_eq!(" Always ".parse(), Ok(Fsync::Always));
        assert_eq!("1s".parse(), Ok(Fsync::Every(Duration::from_secs(1))));
        assert_eq!("200ms".parse(), Ok(Fsync::Every(Duration::from_millis(200))));
        assert_eq!("1m 30s".parse(), Ok(Fsync::Every(Duration::from_secs(90))));
        for bad in ["", "sometimes", "5", "-1s", "1 parsec"] {
            let err = bad.parse::<Fsync>().unwrap_err().to_string();
            assert!(err.contains("expected never, always or an interval such as 1s or 200ms"), "{err}");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        for policy in [Fsync::Never, Fsync::Always, Fsync::Every(Duration::from_millis(1500))] {
            assert_eq!(policy.to_string().parse(), Ok(policy));
        }
    }

    /// By hand, in release mode:
    /// `cargo test --release --lib ticklog -- --ignored --nocapture`
    #[test]
    #[ignore = "throughput check, run by hand in release mode"]
    fn throughput_5m_quotes() {
        const N: u64 = 5_000_000;
        let dir = TempDir::new("throughput");
        let names: Vec<String> = (0..16).map(|i| format!("SYM{i:02}")).collect();
        let updates: Vec<Update> = (0..64).map(quote).collect();
        let o = WriterOptions { segment_bytes: 64 << 20, ..opts() };
        let started = Instant::now();
        let (mut w, _) = TickLogWriter::open(&dir.0, o).unwrap();
        for i in 0..N {
            let t = LogTick {
                sym: &names[(i % 16) as usize],
                seq: i / 16 + 1,
                ts_event: i,
                ts_ingest: i + 1,
                update: &updates[(i % 64) as usize],
            };
            w.append(&t).unwrap();
            if i % 1000 == 999 {
                w.flush().unwrap();
            }
        }
        w.finish().unwrap();
        let write = started.elapsed();
        let bytes: u64 = segment_paths(&dir.0).unwrap().iter().map(|p| fs::metadata(p).unwrap().len()).sum();

        let started = Instant::now();
        let mut reader = TickLogReader::open(&dir.0).unwrap();
        let mut n = 0u64;
        let mut checksum = 0u64;
        while let Some(e) = reader.next_event().unwrap() {
            n += 1;
            checksum = checksum.wrapping_add(e.seq.unwrap_or(0) ^ e.sym as u64);
        }
        let read = started.elapsed();
        let mut gaps = Vec::new();
        reader.take_gaps(&mut gaps);
        assert_eq!(n, N);
        assert!(gaps.is_empty());
        let rate = |d: Duration| N as f64 / d.as_secs_f64();
        println!(
            "tick log, {N} quotes, {:.1} MB in {} segments (checksum {checksum}):\n  write {:.2} M ticks/s ({:?}, fsync never, flush every 1000)\n  read  {:.2} M ticks/s ({:?}, page cache warm)",
            bytes as f64 / 1e6,
            segment_paths(&dir.0).unwrap().len(),
            rate(write) / 1e6,
            write,
            rate(read) / 1e6,
            read,
        );
    }
}

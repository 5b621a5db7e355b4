//! [`TickLogWriter`]: appends ticks to the segments of a log directory,
//! rolling by size and age and syncing per [`Fsync`].
//!
//! The writer only ever appends, and never to a segment an earlier process
//! wrote: [`TickLogWriter::open`] recovers the last segment (see
//! `recover`), then starts a new one. Appending encodes into a reused
//! buffer (no allocation per record in steady state) that goes to the file
//! in one `write` per [`WRITE_BUFFER`] bytes or per
//! [`TickLogWriter::flush`]. Errors are [`TickLogError`]s.
//!
//! Imports: its siblings `error`, `format`, `recover` and `segment`, and
//! [`crate::model`].

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::error::TickLogError;
use super::format::{check_encodable, encode_header, encode_symbol, encode_tick, LogTick, HEADER_LEN};
use super::recover::{recover_segment, Recovery};
use super::segment::{list_segments, segment_file_name, sync_dir};

/// The writer hands its buffer to the OS once it holds this much.
const WRITE_BUFFER: usize = 256 << 10;

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
        let io = |e| TickLogError::io(&path, e);
        let mut file = OpenOptions::new().write(true).create_new(true).open(&path).map_err(io)?;
        file.write_all(&encode_header(index, crate::model::now_ns())).map_err(io)?;
        if fsync != Fsync::Never {
            sync_dir(dir).map_err(|e| TickLogError::io(dir, e))?;
        }
        Ok(Segment { path, file, opened: Instant::now(), len: HEADER_LEN as u64 })
    }
}

/// Appends ticks to segment files in a directory.
///
/// One writer per directory. The server's recorder holds an exclusive
/// lock on the directory (`tickcast.lock`, taken by `record::RecordLock`)
/// for as long as it writes; below that, `create_new` on segment files
/// makes two writers fail rather than overwrite each other.
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
    ///
    /// Fails with [`TickLogError::Io`] if the directory cannot be created
    /// or listed or the new segment created, and with
    /// [`TickLogError::UnreadableSegment`] if the last segment's header is
    /// not one this build reads.
    pub fn open(dir: &Path, opts: WriterOptions) -> Result<(TickLogWriter, Option<Recovery>), TickLogError> {
        fs::create_dir_all(dir).map_err(|e| TickLogError::io(dir, e))?;
        let segments = list_segments(dir).map_err(|e| TickLogError::io(dir, e))?;
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
    /// update over 65,535 levels a side or 1 MiB) is refused with
    /// [`TickLogError::Unencodable`] and nothing is written; the writer
    /// stays usable. After a failed write or sync every append fails with
    /// [`TickLogError::Poisoned`].
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
            return Err(TickLogError::Unencodable { path: self.seg.path.clone(), reason });
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
            return Err(TickLogError::Poisoned { path: self.seg.path.clone() });
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
            return Err(TickLogError::io(&self.seg.path, e));
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
            return Err(TickLogError::io(&self.seg.path, e));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

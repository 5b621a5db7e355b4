//! The tick log: tickcast's own crash-safe recording format (INTERFACE
//! STUB, being implemented; see docs/TICKLOG.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::recorded::{Event, Format, Source, SourceError};
use crate::tick::Update;

/// First bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"TICKLOG\0";
/// Format version written in each segment header.
pub const VERSION: u16 = 1;

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

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(Fsync::Never),
            "always" => Ok(Fsync::Always),
            d => humantime::parse_duration(d).map(Fsync::Every).map_err(|e| format!("{e}")),
        }
    }
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

/// Appends ticks to segment files in a directory.
pub struct TickLogWriter {}

impl TickLogWriter {
    /// Opens `dir`, creating it, recovers the last segment's torn tail
    /// and starts a new segment.
    pub fn open(dir: &Path, opts: WriterOptions) -> Result<(TickLogWriter, Option<Recovery>), TickLogError> {
        let _ = (dir, opts);
        todo!()
    }
    /// Appends one tick (buffered).
    pub fn append(&mut self, tick: &LogTick<'_>) -> Result<(), TickLogError> {
        let _ = tick;
        todo!()
    }
    /// Hands buffered records to the OS and applies the fsync policy.
    pub fn flush(&mut self) -> Result<(), TickLogError> {
        todo!()
    }
    /// Bytes written to the current segment so far (header included).
    pub fn bytes_written(&self) -> u64 {
        todo!()
    }
    /// Flushes, syncs and closes the current segment.
    pub fn finish(self) -> Result<(), TickLogError> {
        todo!()
    }
}

/// Reads a tick log directory (every segment in order) or one segment.
pub struct TickLogReader {}

impl TickLogReader {
    /// Opens a directory or a segment file.
    pub fn open(path: &Path) -> Result<TickLogReader, TickLogError> {
        let _ = path;
        todo!()
    }
}

impl Source for TickLogReader {
    fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        todo!()
    }
    fn symbol(&self, id: u32) -> Arc<str> {
        let _ = id;
        todo!()
    }
    fn format(&self) -> Format {
        Format::TickLog
    }
}

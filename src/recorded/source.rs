//! What every recording reader yields: normalized [`Event`]s, the [`Gap`]s
//! a source's own ids reveal, and one error type, [`SourceError`], that
//! names the file and the byte offset.
//!
//! Imports: [`crate::model`] only.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::model::Update;

/// One normalized event read from a recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Source-local symbol id; [`Source::symbol`] gives its name.
    pub sym: u32,
    /// Event time at the exchange, ns since the Unix epoch.
    pub ts_event: u64,
    /// When the recorder received it, ns since the Unix epoch: the tick
    /// log's `ts_ingest`, a Binance capture's local receive time, DBN's
    /// `ts_recv`.
    pub ts_recv: u64,
    /// The sequence number the tick log recorded (`None` for other formats).
    pub seq: Option<u64>,
    /// The change itself.
    pub update: Update,
}

/// A break in one of the source's own id sequences: something the recorder
/// never saw (or dropped) between two events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Source-local symbol id.
    pub sym: u32,
    /// Which id broke: `"seq"` (tick log), `"depth update id"` or
    /// `"trade id"` (Binance), `"sequence"` (DBN).
    pub what: &'static str,
    /// The id that should have come next.
    pub expected: u64,
    /// The id that came instead.
    pub got: u64,
    /// Event time of the event that revealed the gap.
    pub ts_event: u64,
}

/// Which format a recording is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// tickcast's own tick log.
    TickLog,
    /// Binance combined-stream capture (`<recv_ns> <json>` lines).
    Binance,
    /// Databento DBN.
    Dbn,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::TickLog => "tick log",
            Format::Binance => "binance capture",
            Format::Dbn => "dbn",
        })
    }
}

/// Why a recording could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The bytes at `offset` are not what the format allows.
    #[error("{}: corrupt at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset (in the decompressed stream for gzip and zstd
        /// input; `reason` then also gives the line or record number).
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The file ends in the middle of a record.
    #[error("{}: truncated at offset {offset}: {reason}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where the incomplete record starts.
        offset: u64,
        /// What was cut short.
        reason: String,
    },
    /// The first bytes match no format we read.
    #[error("{}: unrecognized format: expected a tick log, a Binance capture (<recv_ns> <json> lines, plain or gzip) or a DBN file (plain or zstd)", path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
}

/// A reader of one recording, yielding normalized events in file order.
pub trait Source: Send {
    /// The next event, `Ok(None)` at the end of the recording.
    fn next_event(&mut self) -> Result<Option<Event>, SourceError>;
    /// The name of a source-local symbol id returned in an [`Event`].
    fn symbol(&self, id: u32) -> Arc<str>;
    /// Moves the gaps found since the last call into `out`.
    fn take_gaps(&mut self, out: &mut Vec<Gap>) {
        let _ = out;
    }
    /// The format being read.
    fn format(&self) -> Format;
}

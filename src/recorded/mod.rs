//! Recorded market data: the file formats a quant replays, read into one
//! normalized event stream.
//!
//! In: a file or directory on disk. Out: [`Event`]s in file order, each a
//! normalized [`Update`] of a source-local symbol id, with its recorded
//! event time, and the gaps the source's own ids reveal.
//!
//! Formats, detected from the first bytes (never from the file name):
//! - our own tick log ([`crate::ticklog`]), a segment file or a directory of
//!   segments;
//! - Binance combined-stream captures, lines of `<recv_ns> <json>`, plain
//!   or gzip ([`binance`]);
//! - Databento DBN files, plain or zstd ([`dbn`]).
//!
//! Every reader reports a bad file as a [`SourceError`] naming the file and
//! the byte offset (or record number) where it went wrong; none panics.
//! The replay feed ([`crate::feed::replay`]), replay sessions
//! ([`crate::replay`]) and the `convert` and `inspect` tools all read
//! through [`open`].

pub mod binance;
pub mod dbn;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::tick::Update;

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

/// Which format `path` holds, from its first bytes (a directory is a tick
/// log).
pub fn detect(path: &Path) -> Result<Format, SourceError> {
    let io = |source| SourceError::Io { path: path.to_owned(), source };
    if path.is_dir() {
        return Ok(Format::TickLog);
    }
    let mut head = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(io)?;
    let n = read_up_to(&mut file, &mut head).map_err(io)?;
    let head = &head[..n];
    if head.starts_with(&crate::ticklog::MAGIC) {
        return Ok(Format::TickLog);
    }
    if head.starts_with(b"DBN") || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Format::Dbn);
    }
    if head.starts_with(&[0x1f, 0x8b]) || head.first().is_some_and(u8::is_ascii_digit) {
        return Ok(Format::Binance);
    }
    Err(SourceError::UnknownFormat { path: path.to_owned() })
}

/// Opens a recording of any supported format.
pub fn open(path: &Path) -> Result<Box<dyn Source>, SourceError> {
    Ok(match detect(path)? {
        Format::TickLog => Box::new(crate::ticklog::TickLogReader::open(path)?),
        Format::Binance => Box::new(binance::BinanceReader::open(path)?),
        Format::Dbn => Box::new(dbn::DbnReader::open(path)?),
    })
}

/// A file reader that marks its own read errors, so the compressed-format
/// readers can tell an I/O error of the file from the decompressor's
/// complaints about the bytes (I/O error vs corrupt file).
pub(crate) struct Watched<R> {
    /// The file.
    pub(crate) inner: R,
    /// Set by a read error of `inner`.
    pub(crate) failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != std::io::ErrorKind::Interrupted {
                self.failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

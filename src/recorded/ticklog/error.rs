//! [`TickLogError`]: why the tick log could not be written or recovered.
//!
//! The writing side (the writer and recovery) has its own error type; the
//! reader implements [`Source`](crate::recorded::Source) and reports
//! [`SourceError`] like every other recording reader. Each variant asks
//! something different of the caller: retry after reopening
//! ([`Io`](TickLogError::Io), [`Poisoned`](TickLogError::Poisoned)), skip
//! one tick ([`Unencodable`](TickLogError::Unencodable)), or get a human
//! to look at the directory
//! ([`UnreadableSegment`](TickLogError::UnreadableSegment)).
//!
//! Imports: its siblings `format` (for [`Unencodable`]) and
//! `crate::recorded::source`.

use std::io;
use std::path::{Path, PathBuf};

use super::format::Unencodable;
use crate::recorded::source::SourceError;

/// Why the tick log could not be written, opened or recovered. Every
/// variant names the file (or directory) concerned.
#[derive(Debug, thiserror::Error)]
pub enum TickLogError {
    /// A file or directory operation failed: creating the directory or a
    /// segment, listing, writing, syncing, or recovery's reads and cut.
    /// After a failed write or sync the writer refuses further appends
    /// ([`Poisoned`](TickLogError::Poisoned)); reopening recovers the log.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// A tick the format cannot hold was refused and nothing was written
    /// for it; the writer stays usable, so the caller can skip the tick.
    #[error("{}: {reason}", path.display())]
    Unencodable {
        /// The segment being written.
        path: PathBuf,
        /// What the format cannot hold.
        #[source]
        reason: Unencodable,
    },
    /// An earlier write or sync of the current segment failed, so its tail
    /// is unknown and nothing more is appended to it. Reopen the log
    /// ([`TickLogWriter::open`](crate::recorded::ticklog::TickLogWriter::open)), which cuts a
    /// torn tail and starts a new segment.
    #[error("{}: an earlier write or sync of this segment failed; reopen the log to recover it", path.display())]
    Poisoned {
        /// The segment that failed.
        path: PathBuf,
    },
    /// The last segment's header is complete but not one this build reads
    /// (a bad magic, a newer format version, unknown flags), so the writer
    /// will not touch or add to the log. Holds the reader's verdict, which
    /// names the file and the offset of the bad field; never an
    /// [`Io`](SourceError::Io) error (that is [`TickLogError::Io`]).
    #[error(transparent)]
    UnreadableSegment(SourceError),
}

impl TickLogError {
    /// An I/O error of `path`.
    pub(super) fn io(path: &Path, source: io::Error) -> TickLogError {
        TickLogError::Io { path: path.to_owned(), source }
    }

    /// Recovery's view of an error the segment reader reported.
    pub(super) fn from_segment(e: SourceError) -> TickLogError {
        match e {
            SourceError::Io { path, source } => TickLogError::Io { path, source },
            other => TickLogError::UnreadableSegment(other),
        }
    }
}

//! The tick log: tickcast's own crash-safe recording of the sequenced tick
//! stream, so a session can be replayed bit for bit later.
//!
//! In: sequenced ticks ([`LogTick`]) in the order the engine sequenced them.
//! Out: segment files `ticks-{index:08}.tlog` in a directory; read back by
//! [`TickLogReader`], the same ticks as [`Event`](crate::recorded::Event)s
//! of the [`Source`](crate::recorded::Source) trait (floats bit-exact,
//! `seq` and both timestamps kept), plus the per-symbol seq gaps found on
//! the way.
//!
//! The byte format is specified in `docs/TICKLOG.md`. In short: a 32-byte
//! segment header, then records of `len u32, crc32c u32, body`, the body a
//! symbol definition or a trade, quote or book update. Every segment defines
//! the symbols it uses, so each one can be read on its own.
//!
//! # Files
//! | file | what it owns |
//! |---|---|
//! | `format.rs` | the byte layout: header, record framing, body encode and decode |
//! | `segment.rs` | segment file names, listing a directory, the buffered record reader |
//! | `writer.rs` | [`TickLogWriter`], its [`WriterOptions`] and [`Fsync`] policy |
//! | `recover.rs` | cutting a crash's torn tail: [`recover_segment`] |
//! | `reader.rs` | [`TickLogReader`], the [`Source`](crate::recorded::Source) of a log |
//! | `restore.rs` | [`restore`]: every symbol's state at the end of a log, for a restarted server |
//! | `error.rs` | [`TickLogError`], the writer's and recovery's error |
//! | `tests.rs` | the log as a whole: round trips, rolling, recovery, damage |
//!
//! Imports flow one way: `format` imports only [`crate::model`]; `segment`
//! imports `format`; `error` imports `format`; `recover` imports `error`,
//! `format` and `segment`; `writer` imports all of those; `reader` imports
//! `format` and `segment`; `restore` imports `format`, `recover` and
//! `segment`. All may use `crate::recorded::source`; none
//! imports this file. This file only declares them and re-exports what a
//! user of the tick log needs.
//!
//! # Crash safety
//! The writer only ever appends, and never to a segment an earlier process
//! wrote: [`TickLogWriter::open`] first checks the last segment and cuts a
//! torn tail (an incomplete or CRC-failing last record left by a crash),
//! then starts a new segment. Damage bigger than a torn write
//! ([`MAX_RECOVERY_CUT`]) is logged and left for a human, never cut.
//! What survives which crash depends on [`Fsync`].
//!
//! # Errors
//! Writing and recovery fail with a [`TickLogError`]; reading fails with a
//! [`SourceError`](crate::recorded::SourceError), like every recording
//! reader, naming the file and the offset of the bad record.
//!
//! # Cost
//! Appending encodes into a reused buffer (no allocation per record in
//! steady state) that goes to the file in one `write` per ~256 KiB or per
//! [`TickLogWriter::flush`]. Reading parses records in place from a 2 MiB
//! buffer; only book records allocate (their level `Vec`s).

mod error;
mod format;
mod reader;
mod recover;
mod restore;
mod segment;
mod writer;

#[cfg(test)]
pub(crate) mod tests;

pub use error::TickLogError;
pub use format::{LogTick, Unencodable, HEADER_LEN, MAGIC, MAX_BODY_LEN, VERSION};
pub use reader::TickLogReader;
pub use recover::{recover_segment, Recovery, MAX_RECOVERY_CUT};
pub use restore::{restore, RestoreError, Restored};
pub use segment::{segment_file_name, segment_paths};
pub use writer::{Fsync, ParseFsyncError, TickLogWriter, WriterOptions};

//! Recorded market data: the file formats a quant replays, read into one
//! normalized event stream.
//!
//! In: a file or directory on disk. Out: [`Event`]s in file order, each a
//! normalized [`Update`](crate::model::Update) of a source-local symbol id, with its recorded
//! event time, and the gaps the source's own ids reveal.
//!
//! Formats, detected from the first bytes (never from the file name):
//! - our own tick log ([`ticklog`]), a segment file or a directory of
//!   segments;
//! - Binance combined-stream captures, lines of `<recv_ns> <json>`, plain
//!   or gzip ([`binance`]);
//! - Databento DBN files, plain or zstd ([`dbn`]).
//!
//! Every reader reports a bad file as a [`SourceError`] naming the file and
//! the byte offset (or record number) where it went wrong; none panics.
//! The replay feed, replay sessions and the `convert` and `inspect` tools
//! all read through [`open`].
//!
//! Imports: [`crate::model`] only. The tick log's writer lives here too
//! (in [`ticklog`]), beside its reader, so the format has one home; the
//! recorder ([`crate::record`]) drives it.

pub mod binance;
pub mod dbn;
pub mod source;
pub mod ticklog;
mod watched;

use std::path::Path;

pub use source::{Event, Format, Gap, Source, SourceError};

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
    if head.starts_with(&ticklog::MAGIC) {
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
        Format::TickLog => Box::new(ticklog::TickLogReader::open(path)?),
        Format::Binance => Box::new(binance::BinanceReader::open(path)?),
        Format::Dbn => Box::new(dbn::DbnReader::open(path)?),
    })
}

/// Reads until `buf` is full or the reader ends; returns how many bytes.
fn read_up_to(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
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

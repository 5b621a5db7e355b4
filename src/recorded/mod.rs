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
//! The tick log's writer lives here too (in [`ticklog`]), beside its
//! reader, so the format has one home; the recorder ([`crate::record`])
//! drives it.
//!
//! # Files
//! | file | what it owns |
//! |---|---|
//! | `source.rs` | the [`Source`] trait, [`Event`], [`Gap`], [`Format`], [`SourceError`] |
//! | `ticklog/` | the tick log: format, segments, writer, recovery, reader |
//! | `binance/` | Binance captures: line reader, message normalizer, local books |
//! | `dbn.rs` | Databento DBN files: reader and normalizer |
//! | `watched.rs` | a file reader that tells I/O errors from corrupt compressed bytes |
//! | this file | [`detect`], [`open`] and [`symbols`], the dispatch by format |
//!
//! Imports: [`crate::model`] only, from anywhere in this folder; besides
//! that, a file imports only its siblings (`source`, `watched`, and within
//! a format's folder the files beside it), never this file or a folder's
//! `mod.rs`.

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

/// The symbols a recording holds, read as cheaply as its format allows,
/// so a replay can declare its universe before its first tick (see
/// [`symbols`]).
#[derive(Debug)]
pub struct RecordingSymbols {
    /// Distinct names, in the order the recording first names them (DBN:
    /// by instrument id), at most the limit asked for.
    pub names: Vec<std::sync::Arc<str>>,
    /// The recording went wrong part-way: `names` holds those found before.
    pub error: Option<SourceError>,
}

/// The symbols of the recording at `path`, at most `limit`. Blocking file
/// I/O, bounded by the recording itself: call it on a feed thread or a
/// tool, never on an async worker. What each format costs:
/// - DBN: the metadata's symbol mappings, no record read (unless the
///   metadata maps no symbol: then every record is read);
/// - tick log: every record is read and CRC-checked, only symbol
///   definitions are decoded (a segment defines a symbol where it first
///   uses it, so there is no list up front);
/// - Binance capture: the whole file is read and normalized (its lines are
///   the only place it names its symbols), about the cost of one
///   `--speed max` pass without the publishing.
///
/// Reading stops early once `limit` names are found.
pub fn symbols(path: &Path, limit: usize) -> RecordingSymbols {
    let outcome = match detect(path) {
        Ok(Format::TickLog) => ticklog::TickLogReader::open(path).and_then(|r| r.into_symbols(limit)).map(Some),
        Ok(Format::Dbn) => dbn::DbnReader::open(path).map(|r| {
            r.declared_symbols().map(|mut names| {
                names.truncate(limit);
                names
            })
        }),
        Ok(Format::Binance) => Ok(None),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Some(names)) => RecordingSymbols { names, error: None },
        Ok(None) => scan(path, limit),
        Err(e) => RecordingSymbols { names: Vec::new(), error: Some(e) },
    }
}

/// Every event of the recording, for the names its symbols have.
fn scan(path: &Path, limit: usize) -> RecordingSymbols {
    let mut out = RecordingSymbols { names: Vec::new(), error: None };
    let mut source = match open(path) {
        Ok(s) => s,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    // Source-local ids are dense, in order of first appearance.
    let mut seen: Vec<bool> = Vec::new();
    while out.names.len() < limit {
        match source.next_event() {
            Ok(Some(event)) => {
                let i = event.sym as usize;
                if i >= seen.len() {
                    seen.resize(i + 1, false);
                }
                if !seen[i] {
                    seen[i] = true;
                    out.names.push(source.symbol(event.sym));
                }
            }
            Ok(None) => break,
            Err(e) => {
                out.error = Some(e);
                break;
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use super::ticklog::{Fsync, LogTick, TickLogWriter, WriterOptions};
    use super::*;
    use crate::model::{Quote, Update};

    fn data(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel)
    }

    /// A file or directory under the system temp dir, removed on drop.
    struct Temp(PathBuf);

    impl Temp {
        fn new(name: &str) -> Temp {
            let path = std::env::temp_dir().join(format!(
                "tickcast-recorded-{}-{}-{name}",
                std::process::id(),
                crate::model::now_ns()
            ));
            Temp(path)
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn formats_are_told_apart_by_their_first_bytes() {
        assert_eq!(detect(&data("binance/ethusdt_20240808.gz")).unwrap(), Format::Binance);
        assert_eq!(detect(&data("dbn/test_data.mbp-10.v3.dbn.zst")).unwrap(), Format::Dbn);

        let capture = Temp::new("capture.txt");
        std::fs::write(&capture.0, b"1723161254024619568 {}\n").unwrap();
        assert_eq!(detect(&capture.0).unwrap(), Format::Binance);
        std::fs::write(&capture.0, b"DBN\x03").unwrap();
        assert_eq!(detect(&capture.0).unwrap(), Format::Dbn);
        std::fs::write(&capture.0, b"\x00\x01 not a recording").unwrap();
        let err = detect(&capture.0).unwrap_err();
        assert!(matches!(&err, SourceError::UnknownFormat { path } if *path == capture.0), "{err}");
        assert!(matches!(detect(&capture.0.join("missing")), Err(SourceError::Io { .. })));

        // A tick log: its directory, and one of its segments.
        let log = Temp::new("log");
        let options =
            WriterOptions { segment_bytes: 1 << 20, segment_age: Duration::from_secs(3600), fsync: Fsync::Never };
        let (mut writer, _) = TickLogWriter::open(&log.0, options).unwrap();
        let segment = writer.current_segment().to_owned();
        let update = Update::Quote(Quote { bid: 1.0, bid_sz: 2.0, ask: 3.0, ask_sz: 4.0 });
        writer.append(&LogTick { sym: "AAA", seq: 1, ts_event: 5, ts_ingest: 6, update: &update }).unwrap();
        writer.finish().unwrap();
        assert_eq!(detect(&log.0).unwrap(), Format::TickLog);
        assert_eq!(detect(&segment).unwrap(), Format::TickLog);
        for path in [&log.0, &segment] {
            let mut source = open(path).unwrap();
            assert_eq!(source.format(), Format::TickLog);
            let event = source.next_event().unwrap().unwrap();
            assert_eq!((&*source.symbol(event.sym), event.update), ("AAA", update.clone()));
        }
    }

    #[test]
    fn open_dispatches_by_format() {
        for (rel, format) in
            [("binance/btcusdt_20240808.gz", Format::Binance), ("dbn/test_data.trades.v3.dbn.zst", Format::Dbn)]
        {
            let mut source = open(&data(rel)).unwrap();
            assert_eq!(source.format(), format, "{rel}");
            assert!(source.next_event().unwrap().is_some(), "{rel}");
        }
    }

    #[test]
    fn a_recordings_symbols_are_read_without_replaying_it() {
        for (rel, name) in [("binance/ethusdt_20240808.gz", "ETHUSDT"), ("binance/btcusdt_20240808.gz", "BTCUSDT")] {
            let found = symbols(&data(rel), 10);
            assert!(found.error.is_none(), "{rel}: {:?}", found.error);
            assert_eq!(found.names, [Arc::from(name)], "{rel}");
        }
        // DBN: from the metadata, and every name the records carry is among them.
        for schema in ["mbo", "mbp-1", "mbp-10", "tbbo", "trades"] {
            let path = data(&format!("dbn/test_data.{schema}.v3.dbn.zst"));
            let declared = symbols(&path, 100);
            assert!(declared.error.is_none() && !declared.names.is_empty(), "{schema}: {declared:?}");
            let scanned = scan(&path, 100);
            for name in &scanned.names {
                assert!(declared.names.contains(name), "{schema}: {name} not declared in {:?}", declared.names);
            }
        }
        // A tick log: its definitions, in order, across segments; the limit
        // stops the read.
        let log = Temp::new("symbols-log");
        let options =
            WriterOptions { segment_bytes: 1 << 20, segment_age: Duration::from_secs(3600), fsync: Fsync::Never };
        let (mut writer, _) = TickLogWriter::open(&log.0, options).unwrap();
        let update = Update::Quote(Quote { bid: 1.0, bid_sz: 2.0, ask: 3.0, ask_sz: 4.0 });
        for (seq, sym) in ["BBB", "AAA", "BBB", "CCC"].into_iter().enumerate() {
            let tick = LogTick { sym, seq: seq as u64 + 1, ts_event: 5, ts_ingest: 6, update: &update };
            writer.append(&tick).unwrap();
        }
        writer.finish().unwrap();
        let found = symbols(&log.0, 10);
        assert!(found.error.is_none());
        assert_eq!(found.names, [Arc::from("BBB"), Arc::from("AAA"), Arc::from("CCC")]);
        assert_eq!(symbols(&log.0, 2).names, [Arc::from("BBB"), Arc::from("AAA")]);
        let missing = symbols(&log.0.join("missing"), 10);
        assert!(missing.names.is_empty() && matches!(missing.error, Some(SourceError::Io { .. })));
    }
}

//! [`BinanceReader`]: a capture file of `<recv_ns> <json>` lines, plain or
//! gzip, read line by line into one reusable buffer and handed to
//! [`BinanceNormalizer`]; byte offsets and line numbers turn every failure
//! into a [`SourceError`] (see "Errors" in the `binance` module doc).
//!
//! Imports: its siblings `normalizer` and `stats`, and
//! `crate::recorded::{source, watched}`.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::normalizer::{BinanceError, BinanceNormalizer};
use super::stats::BinanceStats;
use crate::recorded::source::{Event, Format, Gap, Source, SourceError};
use crate::recorded::watched::Watched;

/// Longest line accepted, in bytes. A REST snapshot of 5,000 levels a side is
/// about 400 KB; anything past this bound is not a capture line.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Read buffer size for the file and for the decompressed stream.
const READ_BUFFER: usize = 256 << 10;

/// Reader of one Binance capture file (plain or gzip), yielding the events
/// of [`BinanceNormalizer`] with errors that name the file, line and offset.
pub struct BinanceReader {
    path: PathBuf,
    input: Box<dyn BufRead + Send>,
    file_failed: Arc<AtomicBool>,
    /// The current line, reused.
    line: Vec<u8>,
    /// Offset of the next line in the (decompressed) stream.
    offset: u64,
    /// Lines read so far.
    line_no: u64,
    norm: BinanceNormalizer,
    queue: VecDeque<Event>,
    finished: bool,
}

impl BinanceReader {
    /// Opens the file, telling gzip from plain text by its first two bytes.
    pub fn open(path: &Path) -> Result<BinanceReader, SourceError> {
        let file = File::open(path).map_err(|source| SourceError::Io { path: path.to_owned(), source })?;
        BinanceReader::from_reader(path, file)
    }

    /// Reads a capture from `input` (plain or gzip, as [`open`] tells them
    /// apart); `path` only names it in errors. For captures that are not
    /// files, and for fuzzing the reader in memory.
    ///
    /// [`open`]: BinanceReader::open
    pub fn from_reader(path: &Path, input: impl Read + Send + 'static) -> Result<BinanceReader, SourceError> {
        let io_err = |source| SourceError::Io { path: path.to_owned(), source };
        let file_failed = Arc::new(AtomicBool::new(false));
        let mut raw = BufReader::with_capacity(READ_BUFFER, Watched { inner: input, failed: file_failed.clone() });
        let gzip = raw.fill_buf().map_err(io_err)?.starts_with(&[0x1f, 0x8b]);
        let input: Box<dyn BufRead + Send> = if gzip {
            Box::new(BufReader::with_capacity(READ_BUFFER, flate2::bufread::MultiGzDecoder::new(raw)))
        } else {
            Box::new(raw)
        };
        Ok(BinanceReader {
            path: path.to_owned(),
            input,
            file_failed,
            line: Vec::with_capacity(4096),
            offset: 0,
            line_no: 0,
            norm: BinanceNormalizer::new(),
            queue: VecDeque::new(),
            finished: false,
        })
    }

    /// What the normalizer has done so far.
    pub fn stats(&self) -> &BinanceStats {
        self.norm.stats()
    }

    /// Lines read so far.
    pub fn lines(&self) -> u64 {
        self.line_no
    }

    /// Reads the next line into `self.line`: `Some((start offset, ends with
    /// a newline))`, or `None` at the end.
    fn read_line(&mut self) -> Result<Option<(u64, bool)>, SourceError> {
        self.line.clear();
        let start = self.offset;
        let limit = MAX_LINE_BYTES as u64 + 1;
        match self.input.by_ref().take(limit).read_until(b'\n', &mut self.line) {
            Ok(0) => Ok(None),
            Ok(n) => {
                self.offset += n as u64;
                self.line_no += 1;
                let newline = self.line.last() == Some(&b'\n');
                if !newline && self.line.len() > MAX_LINE_BYTES {
                    self.finished = true;
                    return Err(self.corrupt(start, format_args!("line longer than {MAX_LINE_BYTES} bytes")));
                }
                Ok(Some((start, newline)))
            }
            Err(e) => {
                self.finished = true;
                let line = self.line_no + 1;
                Err(if self.file_failed.load(Ordering::Relaxed) {
                    SourceError::Io { path: self.path.clone(), source: e }
                } else if e.kind() == io::ErrorKind::UnexpectedEof {
                    SourceError::Truncated {
                        path: self.path.clone(),
                        offset: start,
                        reason: format!("line {line}: the gzip stream ends early ({e})"),
                    }
                } else {
                    SourceError::Corrupt {
                        path: self.path.clone(),
                        offset: start,
                        reason: format!("line {line}: the gzip stream is corrupt ({e})"),
                    }
                })
            }
        }
    }

    fn corrupt(&self, offset: u64, what: impl fmt::Display) -> SourceError {
        SourceError::Corrupt { path: self.path.clone(), offset, reason: format!("line {}: {what}", self.line_no) }
    }

    /// Normalizes the line in `self.line`.
    fn process_line(&mut self, start: u64, newline: bool) -> Result<(), SourceError> {
        let mut body = self.line.as_slice();
        if let Some(rest) = body.strip_suffix(b"\n") {
            body = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        if body.is_empty() {
            return Ok(());
        }
        let result = match split_line(body) {
            Ok((recv_ns, json)) => self.norm.on_message(recv_ns, json, &mut self.queue).map_err(BadLine::Message),
            Err(bad) => Err(bad),
        };
        let Err(reason) = result else {
            return Ok(());
        };
        if newline {
            Err(self.corrupt(start, reason))
        } else {
            self.finished = true;
            Err(SourceError::Truncated {
                path: self.path.clone(),
                offset: start,
                reason: format!("line {}: the last line has no newline and does not parse: {reason}", self.line_no),
            })
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        let pending = self.norm.pending_depth();
        if pending > 0 {
            tracing::warn!(
                path = %self.path.display(),
                pending,
                "binance: depth updates never released: no snapshot followed them"
            );
        }
    }
}

/// Why a line could not be read; its text is the reason of the line's
/// `Corrupt` or `Truncated` error.
#[derive(Debug, thiserror::Error)]
enum BadLine {
    /// No space between the receive time and the JSON.
    #[error("expected `<recv_ns> <json>`: no space in the line")]
    NoSpace,
    /// What precedes the space is not a `u64` of decimal digits (its text,
    /// at most 40 bytes of it).
    #[error("expected `<recv_ns> <json>`: {0:?} is not a receive time in ns")]
    ReceiveTime(String),
    /// The JSON is not a message the normalizer takes.
    #[error(transparent)]
    Message(BinanceError),
}

/// Splits `<recv_ns> <json>`.
fn split_line(line: &[u8]) -> Result<(u64, &[u8]), BadLine> {
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return Err(BadLine::NoSpace);
    };
    let (digits, json) = (&line[..space], &line[space + 1..]);
    let recv_ns = digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    });
    match recv_ns {
        Some(ns) if !digits.is_empty() => Ok((ns, json)),
        _ => Err(BadLine::ReceiveTime(String::from_utf8_lossy(&digits[..digits.len().min(40)]).into_owned())),
    }
}

impl Source for BinanceReader {
    fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(event));
            }
            if self.finished {
                return Ok(None);
            }
            match self.read_line()? {
                Some((start, newline)) => self.process_line(start, newline)?,
                None => self.finish(),
            }
        }
    }

    /// An id this source never returned gets an empty name.
    fn symbol(&self, id: u32) -> Arc<str> {
        self.norm.symbol(id).cloned().unwrap_or_else(|| Arc::from(""))
    }

    fn take_gaps(&mut self, out: &mut Vec<Gap>) {
        self.norm.take_gaps(out);
    }

    fn format(&self) -> Format {
        Format::Binance
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::io::Write;

    use super::*;
    use crate::model::{Level, Quote, Side, Trade, Update, UpdateKind};

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/binance");
    const SAMPLES: [(&str, &str); 2] = [("btcusdt_20240808.gz", "BTCUSDT"), ("ethusdt_20240808.gz", "ETHUSDT")];

    fn sample(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    fn decompressed(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(File::open(sample(name)).unwrap()).read_to_end(&mut out).unwrap();
        out
    }

    /// A file under the system temp dir, unique to this process and test.
    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("tickcast-binance-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn read_all(path: &Path) -> (Vec<Event>, Vec<Gap>, BinanceReader) {
        let mut reader = BinanceReader::open(path).unwrap();
        let mut events = Vec::new();
        while let Some(e) = reader.next_event().unwrap() {
            events.push(e);
        }
        let mut gaps = Vec::new();
        reader.take_gaps(&mut gaps);
        (events, gaps, reader)
    }

    /// The number after `"key":` in `s`.
    fn number_after(s: &str, key: &str) -> u64 {
        let pat = format!("\"{key}\":");
        let at = s.find(&pat).unwrap() + pat.len();
        s[at..].bytes().take_while(u8::is_ascii_digit).fold(0, |n, b| n * 10 + u64::from(b - b'0'))
    }

    /// Per-kind counts computed from the raw text with string checks only.
    fn expected_counts(name: &str) -> [u64; 3] {
        let text = String::from_utf8(decompressed(name)).unwrap();
        let (mut trades, mut quotes, mut depth_ids, mut snapshot_id) = (0, 0, Vec::new(), None);
        for line in text.lines() {
            let json = line.split_once(' ').unwrap().1;
            if json.starts_with("{\"lastUpdateId\"") {
                assert!(snapshot_id.is_none(), "the samples hold one snapshot each");
                snapshot_id = Some(number_after(json, "lastUpdateId"));
            } else if json.contains("@trade\"") {
                trades += 1;
            } else if json.contains("@bookTicker\"") {
                quotes += 1;
            } else if json.contains("@depth@100ms\"") {
                depth_ids.push(number_after(json, "u"));
            } else {
                panic!("unexpected line {line}");
            }
        }
        let snapshot_id = snapshot_id.unwrap();
        let books = depth_ids.iter().filter(|&&u| u > snapshot_id).count() as u64 + 1;
        [trades, quotes, books]
    }

    #[test]
    fn per_symbol_counts_match_the_raw_files() {
        for (file, symbol) in SAMPLES {
            let (events, gaps, reader) = read_all(&sample(file));
            let mut counts: HashMap<(Arc<str>, usize), u64> = HashMap::new();
            for e in &events {
                *counts.entry((reader.symbol(e.sym), e.update.kind() as usize)).or_default() += 1;
            }
            let got = UpdateKind::ALL.map(|k| counts.get(&(Arc::from(symbol), k as usize)).copied().unwrap_or(0));
            println!("{symbol}: trades/quotes/books {got:?}, gaps {gaps:?}, stats {:?}", reader.stats());
            assert_eq!(got, expected_counts(file), "{symbol}");
            assert_eq!(counts.len(), 3, "one symbol per sample");
            assert_eq!(reader.stats().snapshots, 1);
            assert_eq!(reader.stats().skipped_messages, 0);
            assert_eq!(reader.stats().skipped_snapshots, 0);
            assert_eq!(reader.norm.pending_depth(), 0);
            assert!(events.iter().all(|e| e.seq.is_none() && e.ts_recv > 1_723_161_000_000_000_000));
        }
    }

    #[test]
    fn first_and_last_event_times() {
        // btcusdt: lines 1-2 are depth updates buffered until the snapshot
        // on line 8, so the first event is line 3's bookTicker. Its
        // ts_event is its receive time on the exchange's clock: line 2's
        // depth update (E 1723161255308 ms, received 1723161254036059768)
        // shows the exchange 1,271,940,232 ns ahead of the capture host.
        let (events, _, _) = read_all(&sample("btcusdt_20240808.gz"));
        let (first, last) = (events.first().unwrap(), events.last().unwrap());
        assert_eq!(first.ts_recv, 1723161254087891268);
        assert_eq!(first.ts_event, 1723161254087891268 + 1_271_940_232);
        assert!(
            matches!(first.update, Update::Quote(q) if q == Quote { bid: 61837.63, bid_sz: 3.78826, ask: 61837.64, ask_sz: 1.54698 })
        );
        assert_eq!(last.ts_recv, 1723161599999231384);
        assert!(last.ts_event.abs_diff(last.ts_recv + 1_271_940_232) < 50_000_000, "the offset holds all day");
        // ethusdt: the first line is a bookTicker, before any exchange time:
        // its own receive time.
        let (events, _, _) = read_all(&sample("ethusdt_20240808.gz"));
        assert_eq!(events.first().unwrap().ts_event, 1723161254024619568);
        assert_eq!(events.last().unwrap().ts_recv, 1723161599900862584);
        // Event times now follow file order, up to network jitter.
        // (A trade's ts_event is its trade time `T`, which can precede the
        // message's send time by some hundreds of ms.)
        let mut worst = 0;
        for w in events.windows(2) {
            worst = worst.max(w[0].ts_event.saturating_sub(w[1].ts_event));
        }
        assert!(worst < 500_000_000, "event time goes back by {worst} ns at most");
    }

    #[test]
    fn trade_side_and_fields() {
        let (events, _, reader) = read_all(&sample("btcusdt_20240808.gz"));
        let trades: Vec<(&Event, Trade)> = events
            .iter()
            .filter_map(|e| match e.update {
                Update::Trade(t) => Some((e, t)),
                _ => None,
            })
            .collect();
        // Line 4: "t":3735683259,"p":"61837.63000000","q":"0.02000000",
        // "T":1723161255342,"m":true -> the buyer was the maker: a sell.
        let (e, t) = trades[0];
        assert_eq!(t, Trade { px: 61837.63, sz: 0.02, side: Side::Sell });
        assert_eq!((e.ts_event, e.ts_recv), (1723161255342000000, 1723161254087896568));
        assert_eq!(&*reader.symbol(e.sym), "BTCUSDT");
        // "t":3735683305,"p":"61828.02000000","q":"0.00810000",
        // "T":1723161255856,"m":false -> a buy.
        let (e, t) = trades.iter().find(|(e, _)| e.ts_recv == 1723161254585058867).unwrap();
        assert_eq!(*t, Trade { px: 61828.02, sz: 0.0081, side: Side::Buy });
        assert_eq!(e.ts_event, 1723161255856000000);
    }

    #[test]
    fn snapshot_emits_every_level_and_releases_buffered_updates() {
        let (events, _, _) = read_all(&sample("btcusdt_20240808.gz"));
        let text = String::from_utf8(decompressed("btcusdt_20240808.gz")).unwrap();
        let snap_line = text.lines().nth(7).unwrap();
        let (recv, json) = snap_line.split_once(' ').unwrap();
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let n_bids = value["bids"].as_array().unwrap().len();
        let n_asks = value["asks"].as_array().unwrap().len();
        let recv: u64 = recv.parse().unwrap();
        let i = events.iter().position(|e| matches!(e.update, Update::Book(_))).unwrap();
        let Update::Book(book) = &events[i].update else { unreachable!() };
        assert_eq!(events[i].ts_recv, recv);
        // On the exchange's clock, by the offset of the depth update on
        // line 7 (E 1723161255408 ms, received 1723161254137307667).
        assert_eq!(events[i].ts_event, recv + (1_723_161_255_408_000_000 - 1_723_161_254_137_307_667));
        assert_eq!((book.bids.len(), book.asks.len()), (n_bids, n_asks));
        assert_eq!(book.bids[0], Level { px: 61837.63, sz: 3.78826 });
        // lastUpdateId 50093239218: line 6's update (U 50093239208, u
        // 50093239224) is the first applied, straight after the snapshot.
        let next = &events[i + 1];
        assert!(matches!(next.update, Update::Book(_)));
        assert_eq!((next.ts_event, next.ts_recv), (1723161255408000000, 1723161254137307667));
    }

    fn best(book: &BTreeMap<u64, f64>, highest: bool) -> f64 {
        let key = if highest { book.keys().next_back() } else { book.keys().next() };
        f64::from_bits(*key.unwrap())
    }

    #[test]
    fn the_book_ends_with_a_positive_spread() {
        for (file, _) in SAMPLES {
            let (events, _, _) = read_all(&sample(file));
            // Positive prices: the bit patterns sort like the values.
            let (mut bids, mut asks) = (BTreeMap::<u64, f64>::new(), BTreeMap::<u64, f64>::new());
            let mut crossed_after_first_book = 0;
            for e in &events {
                if let Update::Book(d) = &e.update {
                    for (side, levels) in [(&mut bids, &d.bids), (&mut asks, &d.asks)] {
                        for l in levels {
                            if l.sz == 0.0 {
                                side.remove(&l.px.to_bits());
                            } else {
                                side.insert(l.px.to_bits(), l.sz);
                            }
                        }
                    }
                    if best(&bids, true) >= best(&asks, false) {
                        crossed_after_first_book += 1;
                    }
                }
            }
            let (bid, ask) = (best(&bids, true), best(&asks, false));
            println!("{file}: final book {} bids / {} asks, {bid} x {ask}", bids.len(), asks.len());
            assert!(bid < ask, "{file}: crossed book at the end: {bid} >= {ask}");
            // And the top agrees with the last bookTicker of the capture.
            let Some(Update::Quote(q)) = events.iter().rev().map(|e| &e.update).find(|u| matches!(u, Update::Quote(_)))
            else {
                panic!("no quote")
            };
            assert_eq!((bid, ask), (q.bid, q.ask), "{file}");
            assert_eq!(crossed_after_first_book, 0, "{file}");
        }
    }

    #[test]
    fn plain_copy_gives_the_same_events_as_gzip() {
        let path = temp_file("plain.txt", &decompressed("ethusdt_20240808.gz"));
        let (plain, plain_gaps, _) = read_all(&path);
        let (gz, gz_gaps, _) = read_all(&sample("ethusdt_20240808.gz"));
        std::fs::remove_file(&path).unwrap();
        assert!(!plain.is_empty());
        assert_eq!(plain, gz);
        assert_eq!(plain_gaps, gz_gaps);
    }

    #[test]
    fn gzip_cut_in_the_middle_is_truncated() {
        let bytes = std::fs::read(sample("btcusdt_20240808.gz")).unwrap();
        let path = temp_file("cut.gz", &bytes[..bytes.len() / 2]);
        let mut reader = BinanceReader::open(&path).unwrap();
        let mut n = 0;
        let err = loop {
            match reader.next_event() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("a cut file read to the end after {n} events"),
                Err(e) => break e,
            }
        };
        std::fs::remove_file(&path).unwrap();
        assert!(n > 1000, "{n}");
        let SourceError::Truncated { path: p, .. } = &err else { panic!("{err}") };
        assert_eq!(p, &path);
        assert!(err.to_string().contains("cut.gz"), "{err}");
        assert!(matches!(reader.next_event(), Ok(None)), "finished after a truncation");
    }

    #[test]
    fn garbage_line_is_corrupt_at_its_offset_and_reading_goes_on() {
        let text = decompressed("ethusdt_20240808.gz");
        let starts: Vec<usize> = std::iter::once(0)
            .chain(text.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1))
            .collect();
        let at = starts[1000]; // line 1001 becomes the garbage
        for (name, garbage) in [
            ("garbage.txt", &b"this is not a capture line\n"[..]),
            ("badjson.gz", b"1723161254024619568 {\"stream\":\n"),
        ] {
            let mut bytes = text[..at].to_vec();
            bytes.extend_from_slice(garbage);
            bytes.extend_from_slice(&text[at..]);
            let bytes = if name.ends_with(".gz") { gzip(&bytes) } else { bytes };
            let path = temp_file(name, &bytes);
            let mut reader = BinanceReader::open(&path).unwrap();
            let (mut before, mut after) = (0, 0);
            let err = loop {
                match reader.next_event() {
                    Ok(Some(_)) => before += 1,
                    Ok(None) => panic!("no error"),
                    Err(e) => break e,
                }
            };
            while reader.next_event().unwrap().is_some() {
                after += 1;
            }
            std::fs::remove_file(&path).unwrap();
            let SourceError::Corrupt { path: p, offset, reason } = &err else { panic!("{err}") };
            assert_eq!((p, *offset), (&path, at as u64), "{err}");
            assert!(reason.starts_with("line 1001: "), "{err}");
            assert!(err.to_string().contains(name), "{err}");
            let (all, _, _) = read_all(&sample("ethusdt_20240808.gz"));
            assert_eq!(before + after, all.len(), "{name}: every other line still read");
        }
    }

    #[test]
    fn last_line_without_newline() {
        let text = decompressed("ethusdt_20240808.gz");
        let cut = text.len() - 40; // inside the last line's JSON
        let path = temp_file("nolf.txt", &text[..cut]);
        let mut reader = BinanceReader::open(&path).unwrap();
        let err = loop {
            match reader.next_event() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        let last_start = text[..text.len() - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
        assert!(matches!(err, SourceError::Truncated { offset, .. } if offset == last_start as u64), "{err}");
        // A complete last line without its newline is fine.
        std::fs::write(&path, &text[..text.len() - 1]).unwrap();
        let (events, _, _) = read_all(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(events.last().unwrap().ts_recv, 1723161599900862584);
    }

    #[test]
    fn line_shape_errors() {
        assert_eq!(split_line(b"12 {}").unwrap(), (12, &b"{}"[..]));
        assert!(matches!(split_line(b"{}"), Err(BadLine::NoSpace)));
        for bad in [&b" {}"[..], b"12a {}", b"99999999999999999999999 {}"] {
            let err = split_line(bad).unwrap_err();
            assert!(matches!(err, BadLine::ReceiveTime(_)), "{:?}: {err}", String::from_utf8_lossy(bad));
        }
        let err = split_line(b"12a {}").unwrap_err().to_string();
        assert_eq!(err, "expected `<recv_ns> <json>`: \"12a\" is not a receive time in ns");
    }

    /// Throughput of the whole reader on the samples (gzip and plain), on
    /// one core: `cargo test --release --lib recorded::binance -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        let plain: Vec<(PathBuf, Vec<u8>)> = SAMPLES
            .iter()
            .map(|(f, _)| {
                let text = decompressed(f);
                (temp_file(&format!("tp-{f}.txt"), &text), text)
            })
            .collect();
        for gz in [true, false] {
            let (mut lines, mut bytes, mut events) = (0u64, 0u64, 0u64);
            let start = std::time::Instant::now();
            for _ in 0..10 {
                for (i, (f, _)) in SAMPLES.iter().enumerate() {
                    let path = if gz { sample(f) } else { plain[i].0.clone() };
                    let mut reader = BinanceReader::open(&path).unwrap();
                    while reader.next_event().unwrap().is_some() {
                        events += 1;
                    }
                    lines += reader.lines();
                    bytes += plain[i].1.len() as u64;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "binance {}: {lines} lines, {events} events in {secs:.3} s: {:.0} lines/s, {:.0} MB/s of text",
                if gz { "gzip" } else { "plain" },
                lines as f64 / secs,
                bytes as f64 / secs / 1e6
            );
        }
        for (path, _) in plain {
            std::fs::remove_file(path).unwrap();
        }
    }
}

//! Tests of the tick log as a whole: what the writer writes the reader
//! reads back bit for bit; rolling; recovery of torn tails; and the errors
//! (file, offset, reason) for every kind of damage.
//!
//! Imports: the tick log's own files, [`crate::model`] and
//! `crate::recorded::source`.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::TickLogError;
use super::format::{
    encode_header, encode_tick, LogTick, Unencodable, HEADER_LEN, KIND_BOOK, KIND_SYMBOL, MAX_BODY_LEN, PREFIX_LEN,
    QUOTE_BODY_LEN, SYMBOL_FIXED_LEN,
};
use super::reader::TickLogReader;
use super::recover::{Recovery, MAX_RECOVERY_CUT};
use super::segment::{parse_segment_name, segment_file_name, segment_paths};
use super::writer::{Fsync, TickLogWriter, WriterOptions};
use crate::model::{BookDelta, Level, Quote, Side, Trade, Update};
use crate::recorded::source::{Event, Format, Gap, Source, SourceError};

/// A fresh directory under the system temp dir, removed on drop; the
/// crate's tests that need real files (the tick log, `--record`) share it.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// A new empty directory whose name holds `tag`.
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "tickcast-test-{tag}-{}-{}-{n}",
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

pub(super) fn opts() -> WriterOptions {
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
        Update::Book(b) => {
            (10, b.bids.iter().chain(&b.asks).flat_map(|l| [l.px.to_bits(), l.sz.to_bits()]).collect(), b.bids.len())
        }
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
    assert_eq!(TickLogReader::open(&dir.0).unwrap().format(), Format::TickLog);
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
    let err = w.append(&tick(&long, 1, &q)).unwrap_err();
    assert!(
        matches!(&err, TickLogError::Unencodable { path, reason: Unencodable::SymbolTooLong { len: 256 } }
            if path == w.current_segment()),
        "{err:?}"
    );
    assert!(err.to_string().contains("symbol name of 256 bytes: the tick log holds at most 255"), "{err}");
    let level = Level { px: 1.0, sz: 1.0 };
    let huge = Update::Book(BookDelta { bids: vec![level; 40_000], asks: vec![level; 40_000] });
    let err = w.append(&tick("B", 1, &huge)).unwrap_err();
    assert!(
        matches!(
            &err,
            TickLogError::Unencodable { reason: Unencodable::BookTooLarge { bids: 40_000, asks: 40_000, .. }, .. }
        ),
        "{err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("book update for B with 40000 bids"), "{err}");
    // Within 65,535 a side but over the 1 MiB body.
    let big = Update::Book(BookDelta { bids: vec![level; 33_000], asks: vec![level; 33_000] });
    let err = w.append(&tick("B", 1, &big)).unwrap_err();
    assert!(matches!(err, TickLogError::Unencodable { reason: Unencodable::BookTooLarge { .. }, .. }), "{err:?}");
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
    let err = TickLogWriter::open(&dir.0, opts()).err();
    assert!(
        matches!(&err, Some(TickLogError::UnreadableSegment(SourceError::Corrupt { path: p, offset: 8, .. })) if *p == path),
        "{err:?}"
    );
    let err = err.unwrap().to_string();
    assert!(err.contains("corrupt at offset 8") && err.contains("version 2"), "{err}");
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
    let names: Vec<_> = segment_paths(&dir.0).unwrap().into_iter().map(|p| p.file_name().unwrap().to_owned()).collect();
    assert_eq!(names, ["ticks-00000002.tlog", "ticks-00000010.tlog"]);
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

#[test]
fn follow_reads_what_is_appended_and_rolled_while_it_reads() {
    let dir = TempDir::new("follow");
    let o = WriterOptions { segment_bytes: 4096, ..opts() };
    let (mut w, _) = TickLogWriter::open(&dir.0, o).unwrap();
    let mut seqs = Vec::new();
    let mut r = None;
    let mut next = 1u64;
    for round in 0..5 {
        // 300 quotes a round: past a segment's 4096 bytes, so segments roll
        // between the reader's looks.
        for _ in 0..300 {
            w.append(&tick("AAA", next, &quote(next))).unwrap();
            next += 1;
        }
        w.flush().unwrap();
        let reader = r.get_or_insert_with(|| TickLogReader::open(&dir.0).unwrap());
        while let Some(e) = reader.follow().unwrap() {
            seqs.push(e.seq.unwrap());
        }
        assert_eq!(seqs.len(), 300 * (round + 1), "round {round}: everything written so far");
    }
    // A record whose end is not written yet is not an error: it is read
    // once it is whole.
    let mut half = Vec::new();
    encode_tick(&mut half, 0, &tick("AAA", next, &quote(next)));
    let path = segment_paths(&dir.0).unwrap().pop().unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&half[..half.len() / 2]).unwrap();
    let reader = r.as_mut().unwrap();
    assert!(reader.follow().unwrap().is_none(), "half a record is not there yet");
    drop(w);
    assert_eq!(seqs, (1..next).collect::<Vec<_>>());
}

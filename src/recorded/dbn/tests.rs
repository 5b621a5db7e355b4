//! The DBN reader against Databento's own test files (`tests/data/dbn/`)
//! and hand-made records.

use std::collections::HashSet;
use std::ffi::c_char;

use dbn::decode::DynDecoder;
use dbn::{RecordHeader, SType, Schema};

use super::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/dbn");
const SCHEMAS: [&str; 6] = ["mbo", "mbp-1", "mbp-10", "tbbo", "trades", "definition"];

fn sample(schema: &str) -> PathBuf {
    Path::new(DIR).join(format!("test_data.{schema}.v3.dbn.zst"))
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("tickcast-dbn-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn read_all(path: &Path) -> Result<(Vec<Event>, DbnReader), SourceError> {
    let mut reader = DbnReader::open(path)?;
    let mut events = Vec::new();
    while let Some(e) = reader.next_event()? {
        events.push(e);
    }
    Ok((events, reader))
}

fn counts(events: &[Event]) -> [u64; 3] {
    let mut n = [0; 3];
    for e in events {
        n[e.update.kind() as usize] += 1;
    }
    n
}

/// [trades, quotes, books] expected from the raw records, decoded here
/// with the `dbn` crate's own decoder.
fn expected_counts(schema: &str) -> ([u64; 3], u64) {
    let mut decoder = DynDecoder::from_file(sample(schema), dbn::VersionUpgradePolicy::AsIs).unwrap();
    let (mut n, mut records) = ([0u64; 3], 0);
    let mut prev_levels = None;
    let mut added = HashSet::new();
    while let Some(rec) = decoder.decode_record_ref().unwrap() {
        records += 1;
        if let Some(t) = rec.get::<TradeMsg>() {
            assert_eq!(t.action, b'T' as c_char);
            n[0] += 1;
        } else if let Some(m) = rec.get::<Mbp1Msg>() {
            n[0] += u64::from(m.action == b'T' as c_char);
            n[1] += 1;
        } else if let Some(m) = rec.get::<Mbp10Msg>() {
            n[0] += u64::from(m.action == b'T' as c_char);
            let levels: Vec<_> = m.levels.iter().map(|l| (l.bid_px, l.bid_sz, l.ask_px, l.ask_sz)).collect();
            n[2] += u64::from(prev_levels.as_ref() != Some(&levels));
            prev_levels = Some(levels);
        } else if let Some(m) = rec.get::<MboMsg>() {
            match m.action as u8 {
                b'T' => n[0] += 1,
                b'A' => {
                    added.insert(m.order_id);
                    n[2] += 1;
                }
                b'C' | b'M' => n[2] += u64::from(added.contains(&m.order_id)),
                _ => {}
            }
        }
    }
    (n, records)
}

#[test]
fn counts_per_schema_match_the_decoder() {
    for schema in SCHEMAS {
        let (events, reader) = read_all(&sample(schema)).unwrap();
        let (expected, records) = expected_counts(schema);
        println!("{schema}: {:?} from {records} records, {:?}", counts(&events), reader.stats());
        assert_eq!(counts(&events), expected, "{schema}");
        assert_eq!(reader.stats().records, records, "{schema}");
        assert!(records > 0, "{schema}");
        assert!(events.iter().all(|e| e.seq.is_none()));
    }
    // The mbo sample starts mid-session: both records cancel orders it
    // never added, so they change no book.
    let (_, reader) = read_all(&sample("mbo")).unwrap();
    assert_eq!(reader.stats().unknown_orders, 2);
    let (_, reader) = read_all(&sample("definition")).unwrap();
    assert_eq!(reader.stats().skipped_records, 2);
}

#[test]
fn prices_sides_times_and_symbols() {
    let (events, reader) = read_all(&sample("trades")).unwrap();
    assert_eq!(&*reader.symbol(events[0].sym), "ESH1");
    assert_eq!(events[0].ts_event, 1609160400098821953);
    assert_eq!(events[0].ts_recv, 1609160400099150057);
    // side 'A': the aggressor sold into the bid.
    assert_eq!(events[0].update, Update::Trade(Trade { px: 3720.25, sz: 5.0, side: Side::Sell }));
    assert_eq!(events[1].update, Update::Trade(Trade { px: 3720.25, sz: 21.0, side: Side::Sell }));

    let (events, reader) = read_all(&sample("mbp-1")).unwrap();
    assert_eq!(&*reader.symbol(events[0].sym), "ESH1");
    assert_eq!((events[0].ts_event, events[0].ts_recv), (1609160400006001487, 1609160400006136329));
    let quote = |bid, bid_sz, ask, ask_sz| Update::Quote(Quote { bid, bid_sz, ask, ask_sz });
    assert_eq!(events[0].update, quote(3720.25, 24.0, 3720.5, 11.0));
    assert_eq!(events[1].update, quote(3720.25, 24.0, 3720.5, 12.0));

    let (events, _) = read_all(&sample("tbbo")).unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].update, Update::Trade(Trade { px: 3720.25, sz: 5.0, side: Side::Sell }));
    assert_eq!(events[1].update, quote(3720.25, 26.0, 3720.5, 7.0));
    assert_eq!(events[0].ts_event, events[1].ts_event);

    let (events, _) = read_all(&sample("mbp-10")).unwrap();
    let book = |e: &Event| match &e.update {
        Update::Book(b) => b.clone(),
        other => panic!("{other:?}"),
    };
    let first = book(&events[0]);
    assert_eq!((first.bids.len(), first.asks.len()), (10, 10));
    assert_eq!(first.bids[0], Level { px: 3720.25, sz: 24.0 });
    assert_eq!(first.bids[9], Level { px: 3718.0, sz: 67.0 });
    assert_eq!(first.asks[0], Level { px: 3720.5, sz: 10.0 });
    assert_eq!(first.asks[9], Level { px: 3722.75, sz: 44.0 });
    // The second record cancels one lot at 3720.00 on the bid.
    assert_eq!(book(&events[1]), BookDelta { bids: vec![Level { px: 3720.0, sz: 30.0 }], asks: vec![] });
}

/// The samples' bytes decompressed: plain DBN.
fn plain(schema: &str) -> Vec<u8> {
    let mut out = Vec::new();
    DynReader::from_file(sample(schema)).unwrap().read_to_end(&mut out).unwrap();
    out
}

#[test]
fn plain_dbn_reads_like_zstd_and_a_cut_record_is_truncated() {
    let bytes = plain("mbp-10");
    let path = temp_file("mbp10.dbn", &bytes);
    let (events, _) = read_all(&path).unwrap();
    assert_eq!(events, read_all(&sample("mbp-10")).unwrap().0);
    // Two 368-byte records after the metadata: cut the second one.
    let record_len = std::mem::size_of::<Mbp10Msg>();
    let second = bytes.len() - record_len;
    std::fs::write(&path, &bytes[..second + 100]).unwrap();
    let mut reader = DbnReader::open(&path).unwrap();
    assert!(reader.next_event().unwrap().is_some());
    let err = reader.next_event().unwrap_err();
    std::fs::remove_file(&path).unwrap();
    let SourceError::Truncated { path: p, offset, reason } = &err else { panic!("{err}") };
    assert_eq!((p, *offset), (&path, second as u64), "{err}");
    assert!(reason.contains("record 2") && reason.contains("100 bytes into a record"), "{err}");
    assert!(matches!(reader.next_event(), Ok(None)));
}

#[test]
fn a_record_length_off_the_8_byte_grid_is_corrupt_after_the_good_records() {
    let mut bytes = plain("mbp-10");
    let second = bytes.len() - std::mem::size_of::<Mbp10Msg>();
    assert_eq!(bytes[second], 92, "368 bytes in 4-byte words");
    bytes[second] = 91;
    let path = temp_file("misaligned.dbn", &bytes);
    let mut reader = DbnReader::open(&path).unwrap();
    assert!(reader.next_event().unwrap().is_some(), "the first record still comes");
    let err = reader.next_event().unwrap_err();
    std::fs::remove_file(&path).unwrap();
    let SourceError::Corrupt { offset, reason, .. } = &err else { panic!("{err}") };
    assert_eq!(*offset, second as u64, "{err}");
    assert!(reason.starts_with("record 2: ") && reason.contains("364 bytes"), "{err}");
}

#[test]
fn a_cut_zstd_file_is_truncated() {
    let bytes = std::fs::read(sample("definition")).unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 30] {
        let path = temp_file("cut.dbn.zst", &bytes[..cut]);
        let result = read_all(&path);
        std::fs::remove_file(&path).unwrap();
        let err = result.err().unwrap_or_else(|| panic!("cut at {cut} read clean"));
        assert!(matches!(err, SourceError::Truncated { .. }), "cut at {cut}: {err}");
        assert!(err.to_string().contains("cut.dbn.zst"), "{err}");
    }
}

/// Flipping any one byte of any sample gives events or an error naming
/// the file: never a panic, never an error without the path.
#[test]
fn flipped_bytes_never_panic() {
    let mut errors = 0;
    for schema in SCHEMAS {
        for compressed in [true, false] {
            let bytes = if compressed { std::fs::read(sample(schema)).unwrap() } else { plain(schema) };
            let name = format!("flip-{schema}-{compressed}.dbn");
            for i in 0..bytes.len() {
                for mask in [0x01u8, 0x80, 0xff] {
                    let mut bad = bytes.clone();
                    bad[i] ^= mask;
                    let path = temp_file(&name, &bad);
                    if let Err(e) = read_all(&path) {
                        errors += 1;
                        assert!(e.to_string().contains(&name), "{e}");
                        assert!(!matches!(e, SourceError::Io { .. }), "{e}");
                    }
                }
            }
            std::fs::remove_file(std::env::temp_dir().join(format!("tickcast-dbn-{}-{name}", std::process::id())))
                .unwrap();
        }
    }
    assert!(errors > 1000, "{errors}");
    // A flipped zstd payload byte is caught by the frame checksum or
    // the block decoder: corrupt, not a clean short read.
    let mut bad = std::fs::read(sample("trades")).unwrap();
    let at = bad.len() - 10;
    bad[at] ^= 0xff;
    let path = temp_file("flipped.dbn.zst", &bad);
    let err = read_all(&path).err().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(err, SourceError::Corrupt { .. } | SourceError::Truncated { .. }), "{err}");
    println!("{err}");
}

fn metadata() -> Metadata {
    Metadata::builder()
        .dataset("GLBX.MDP3")
        .schema(Some(Schema::Mbo))
        .start(0)
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .symbols(vec!["ESH1".to_owned()])
        .build()
}

fn mbo(action: u8, side: u8, order_id: u64, price: f64, size: u32) -> MboMsg {
    MboMsg {
        hd: RecordHeader::new::<MboMsg>(rtype::MBO, 1, 42, 1_000),
        order_id,
        price: (price * 1e9) as i64,
        size,
        action: action as c_char,
        side: side as c_char,
        ts_recv: 2_000,
        ..Default::default()
    }
}

fn levels(pairs: &[(f64, f64)]) -> Vec<Level> {
    pairs.iter().map(|&(px, sz)| Level { px, sz }).collect()
}

#[test]
fn mbo_builds_l2() {
    let mut norm = DbnNormalizer::new(&metadata());
    let mut out = VecDeque::new();
    let mut apply = |m: MboMsg| {
        out.clear();
        norm.on_record(RecordRef::from(&m), &mut out).unwrap();
        out.drain(..).map(|e| e.update).collect::<Vec<_>>()
    };
    let bids = |pairs: &[(f64, f64)]| vec![Update::Book(BookDelta { bids: levels(pairs), asks: vec![] })];
    let asks = |pairs: &[(f64, f64)]| vec![Update::Book(BookDelta { bids: vec![], asks: levels(pairs) })];
    assert_eq!(apply(mbo(b'A', b'B', 1, 100.25, 5)), bids(&[(100.25, 5.0)]));
    assert_eq!(apply(mbo(b'A', b'B', 2, 100.25, 3)), bids(&[(100.25, 8.0)]));
    assert_eq!(apply(mbo(b'A', b'A', 3, 101.0, 4)), asks(&[(101.0, 4.0)]));
    // Partial cancel, then a modify that moves order 1 down a tick.
    assert_eq!(apply(mbo(b'C', b'B', 2, 100.25, 1)), bids(&[(100.25, 7.0)]));
    assert_eq!(apply(mbo(b'M', b'B', 1, 100.0, 6)), bids(&[(100.25, 2.0), (100.0, 6.0)]));
    // A trade prints and changes nothing; a fill changes nothing.
    assert_eq!(
        apply(mbo(b'T', b'A', 0, 100.0, 2)),
        vec![Update::Trade(Trade { px: 100.0, sz: 2.0, side: Side::Sell })]
    );
    assert_eq!(apply(mbo(b'F', b'B', 1, 100.0, 2)), vec![]);
    // Cancel the rest of order 2: the level goes.
    assert_eq!(apply(mbo(b'C', b'B', 2, 100.25, 2)), bids(&[(100.25, 0.0)]));
    // Unknown orders change nothing; an unknown modify adds.
    assert_eq!(apply(mbo(b'C', b'B', 99, 100.0, 1)), vec![]);
    assert_eq!(apply(mbo(b'M', b'A', 98, 102.0, 1)), asks(&[(102.0, 1.0)]));
    // Clear: every level goes, best first.
    assert_eq!(
        apply(mbo(b'R', b'N', 0, 0.0, 0)),
        vec![Update::Book(BookDelta { bids: levels(&[(100.0, 0.0)]), asks: levels(&[(101.0, 0.0), (102.0, 0.0)]) })]
    );
    assert_eq!(apply(mbo(b'R', b'N', 0, 0.0, 0)), vec![]);
    assert_eq!(apply(mbo(b'C', b'B', 1, 100.0, 6)), vec![], "order 1 went with the clear");
    // Undefined price: a trade without a price is skipped.
    assert_eq!(apply(MboMsg { price: dbn::UNDEF_PRICE, ..mbo(b'T', b'B', 0, 0.0, 1) }), vec![]);
    assert_eq!(norm.stats().unknown_orders, 3);
    assert_eq!(&**norm.symbol(0).unwrap(), "ESH1", "the metadata's one symbol");
}

#[test]
fn symbols_fall_back_to_the_instrument_id() {
    let meta = Metadata { symbols: vec!["ES.FUT".to_owned(), "NQ.FUT".to_owned()], ..metadata() };
    let mut norm = DbnNormalizer::new(&meta);
    let mut out = VecDeque::new();
    norm.on_record(RecordRef::from(&mbo(b'T', b'B', 0, 1.5, 1)), &mut out).unwrap();
    assert_eq!(&**norm.symbol(out[0].sym).unwrap(), "ID42");
    assert_eq!(out[0].update, Update::Trade(Trade { px: 1.5, sz: 1.0, side: Side::Buy }));
    assert_eq!((out[0].ts_event, out[0].ts_recv), (1_000, 2_000));
}

#[test]
fn mbp10_deltas() {
    let mut norm = DbnNormalizer::new(&metadata());
    let mut out = VecDeque::new();
    let mut m = Mbp10Msg { hd: RecordHeader::new::<Mbp10Msg>(rtype::MBP_10, 1, 42, 5), ..Default::default() };
    for (i, l) in m.levels.iter_mut().enumerate() {
        l.bid_px = dbn::UNDEF_PRICE;
        l.ask_px = dbn::UNDEF_PRICE;
        if i < 2 {
            l.bid_px = 100_000_000_000 - i as i64 * 250_000_000;
            l.bid_sz = 10;
        }
    }
    norm.on_record(RecordRef::from(&m), &mut out).unwrap();
    // The best bid goes away and a trade prints.
    m.levels[0] = m.levels[1].clone();
    m.levels[1].bid_px = dbn::UNDEF_PRICE;
    m.action = b'T' as c_char;
    m.side = b'A' as c_char;
    m.price = 100_000_000_000;
    m.size = 10;
    norm.on_record(RecordRef::from(&m), &mut out).unwrap();
    // Nothing changes.
    m.action = b'A' as c_char;
    norm.on_record(RecordRef::from(&m), &mut out).unwrap();
    let updates: Vec<Update> = out.into_iter().map(|e| e.update).collect();
    assert_eq!(
        updates,
        vec![
            Update::Book(BookDelta { bids: levels(&[(100.0, 10.0), (99.75, 10.0)]), asks: vec![] }),
            Update::Trade(Trade { px: 100.0, sz: 10.0, side: Side::Sell }),
            Update::Book(BookDelta { bids: levels(&[(100.0, 0.0)]), asks: vec![] }),
        ]
    );
    assert_eq!(norm.stats().unchanged_books, 1);
    assert_eq!(norm.stats().records, 3);
}

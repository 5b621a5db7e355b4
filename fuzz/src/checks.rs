//! One check per decoder of outside input: feed it arbitrary bytes, and
//! panic if it panics, loops, or breaks the invariant its docs state.
//!
//! Shared by the cargo-fuzz targets in `fuzz/fuzz_targets/` (nightly,
//! libFuzzer) and by `tests/fuzz_corpus.rs` (stable, CI), which runs every
//! check over the committed corpus under `fuzz/corpus/<target>/`. Both
//! include this file with `#[path]`, so it may only use what both crates
//! depend on: tickcast, std, serde_json, humantime, flate2 and crc32c.
//!
//! A bad input must get an error, never a panic, an absurd allocation or a
//! hang. Error messages that echo input must stay short: a reply is sent
//! back to the client that sent the input.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tickcast::feed::json::{parse_line, MAX_LEVELS_PER_LINE};
use tickcast::feed::Speed;
use tickcast::model::{is_valid_symbol, parse_event_time, valid_depth, Level, Update, FULL_DEPTH};
use tickcast::recorded::binance::BinanceReader;
use tickcast::recorded::dbn::DbnReader;
use tickcast::recorded::ticklog::{recover_segment, TickLogReader, HEADER_LEN, MAGIC, MAX_BODY_LEN, VERSION};
use tickcast::recorded::{Source, SourceError};
use tickcast::server::upgrade::{choose_encoding, choose_slow_mode};
use tickcast::session::replay::{parse_control, ReplayControl, ReplayRequest};
use tickcast::wire::request::{ClientRequest, Start, MAX_SYMBOLS_PER_REQUEST};
use tickcast::wire::{decode, encode_payload, Encoding};

/// Longest error text a check accepts for input-derived messages: input is
/// echoed only in short, truncated excerpts.
const MAX_ERROR_TEXT: usize = 1024;

/// Most events a reader may yield per input byte (plus a constant): a
/// bound on the loop, so a reader that never ends fails the check instead
/// of hanging it. A Binance REST snapshot line releases buffered depth
/// updates, so a few events per byte is not absurd; millions are.
const MAX_EVENTS_PER_BYTE: usize = 64;

/// A check: runs one decoder over one input, panicking on a failure.
pub type Check = fn(&[u8]);

/// Every check, by target name (the name of its directory under
/// `fuzz/corpus/` and of its cargo-fuzz target).
pub const CHECKS: &[(&str, Check)] = &[
    ("control", control),
    ("feed_line", feed_line),
    ("event_time", event_time),
    ("http_query", http_query),
    ("binance", binance),
    ("dbn", dbn),
    ("ticklog", ticklog),
    ("codec", codec),
    ("record", record),
];

fn short(what: &str, text: &str) {
    assert!(text.len() <= MAX_ERROR_TEXT, "{what}: error text of {} bytes echoes too much input", text.len());
}

/// Client control messages, live ([`ClientRequest::parse`]) and replay
/// ([`parse_control`]), on the same bytes.
pub fn control(data: &[u8]) {
    match ClientRequest::parse(data) {
        Ok(ClientRequest::Refresh(token)) => {
            let json = serde_json::json!({ "op": "refresh", "token": token });
            let again = ClientRequest::parse(json.to_string().as_bytes()).expect("a re-serialized refresh parses");
            assert_eq!(again, ClientRequest::Refresh(token), "round trip of {json}");
        }
        Ok(ClientRequest::Ping) => {
            let again = ClientRequest::parse(br#"{"op":"ping"}"#).expect("a ping parses");
            assert_eq!(again, ClientRequest::Ping);
        }
        Ok(req) => {
            // A parsed request says the same thing once re-serialized.
            let (op, symbols, depth, start) = match &req {
                ClientRequest::Subscribe { symbols, depth, start } => ("subscribe", symbols, *depth, start.as_ref()),
                ClientRequest::Unsubscribe(symbols) => ("unsubscribe", symbols, None, None),
                ClientRequest::Refresh(_) | ClientRequest::Ping => unreachable!("matched above"),
            };
            assert!((1..=MAX_SYMBOLS_PER_REQUEST).contains(&symbols.len()), "{} symbols", symbols.len());
            let mut json = serde_json::json!({ "op": op, "symbols": symbols });
            if let Some(d) = depth {
                assert!(valid_depth(d), "depth {d}");
                json["depth"] = if d == FULL_DEPTH { "full".into() } else { d.into() };
            }
            match start {
                Some(Start::Seq { seqs, epoch }) => {
                    for (sym, _) in seqs {
                        assert!(symbols.contains(sym), "from_seq names {sym:?}, not in symbols");
                    }
                    let map: serde_json::Map<String, serde_json::Value> =
                        seqs.iter().map(|(s, n)| (s.clone(), (*n).into())).collect();
                    json["from_seq"] = map.into();
                    if let Some(e) = epoch {
                        json["epoch"] = (*e).into();
                    }
                }
                Some(Start::Time(ts)) => json["from_ts"] = (*ts).into(),
                None => {}
            }
            let again = ClientRequest::parse(json.to_string().as_bytes()).expect("a re-serialized request parses");
            assert_eq!(again, req, "round trip of {json}");
        }
        Err(e) => short("subscribe", &e.message),
    }
    match parse_control(data) {
        Ok(ReplayControl::Speed(Speed::Times(f))) => {
            assert!(f.is_finite() && (0.001..=1_000_000.0).contains(&f), "speed {f}")
        }
        Ok(_) => {}
        Err(e) => short("replay control", &e.message),
    }
}

/// Every price finite and every size at or above zero, never -0.0 (both
/// feeds normalize it), in an accepted update; a book has a level and at
/// most `max_levels` a side.
fn accepted_update(update: &Update, max_levels: usize) {
    match update {
        Update::Trade(t) => {
            price(t.px);
            size(t.sz);
        }
        Update::Quote(q) => {
            price(q.bid);
            size(q.bid_sz);
            price(q.ask);
            size(q.ask_sz);
        }
        Update::Book(b) => {
            assert!(!(b.bids.is_empty() && b.asks.is_empty()), "empty book accepted");
            accepted_levels(&b.bids, max_levels);
            accepted_levels(&b.asks, max_levels);
        }
    }
}

/// One side of an accepted book or image: bounded, finite prices, sizes at
/// or above zero, never -0.0.
fn accepted_levels(levels: &[Level], max_levels: usize) {
    assert!(levels.len() <= max_levels, "{} levels on a side", levels.len());
    for l in levels {
        price(l.px);
        size(l.sz);
    }
}

fn price(v: f64) {
    assert!(v.is_finite() && v.to_bits() != (-0.0f64).to_bits(), "price {v:?}");
}

fn size(v: f64) {
    assert!(v.is_finite() && v >= 0.0 && v.to_bits() != (-0.0f64).to_bits(), "size {v:?}");
}

/// One line of the `tcp://` feed ([`parse_line`]).
pub fn feed_line(data: &[u8]) {
    match parse_line(data) {
        Ok(tick) => accepted_update(&tick.update, MAX_LEVELS_PER_LINE),
        Err(e) => short("feed line", &e.to_string()),
    }
}

/// Binary tick records, as an edge reads them from NATS and the tcp feed
/// from a feed handler: every accepted record holds finite prices, sizes
/// at or above zero (never -0.0), a valid symbol and bounded books, and
/// encodes back to a record that decodes to the same thing.
pub fn record(data: &[u8]) {
    use tickcast::model::record::{decode_all, encode_image, encode_tick, Body};
    use tickcast::model::MAX_BOOK_LEVELS;
    for (n, result) in decode_all(data).enumerate() {
        assert!(n <= data.len() / 5, "more records than the input can hold");
        let r = match result {
            Ok(r) => r,
            Err(e) => return short("record", &e.to_string()),
        };
        assert!(is_valid_symbol(r.sym), "symbol {:?}", r.sym);
        let mut again = Vec::new();
        match &r.body {
            Body::Update(u) => {
                accepted_update(u, MAX_BOOK_LEVELS);
                encode_tick(&mut again, r.epoch, r.seq, r.sym, r.ts_event, r.ts_ingest, u);
            }
            Body::Image(image) => {
                accepted_levels(&image.bids, MAX_BOOK_LEVELS);
                accepted_levels(&image.asks, MAX_BOOK_LEVELS);
                encode_image(&mut again, r.epoch, r.sym, image);
            }
        }
        let back: Vec<_> = decode_all(&again).collect();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].as_ref().expect("a re-encoded record decodes"), &r, "re-encoding is stable");
    }
}

/// Event times as users write them (`--from`, `from=`, `seek`):
/// [`parse_event_time`] either refuses a time or returns exactly it: never
/// a time wrapped into another century.
pub fn event_time(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse_event_time(&text) {
        Ok(ns) => {
            let s = text.trim();
            if let Ok(exact) = s.parse::<u64>() {
                assert_eq!(ns, exact);
            } else {
                let t = humantime::parse_rfc3339_weak(s).expect("accepted, so it is RFC 3339");
                assert_eq!(UNIX_EPOCH + Duration::from_nanos(ns), t, "{s:?} parsed to {ns} ns");
            }
        }
        Err(e) => short("event time", &e.to_string()),
    }
}

/// The upgrade request's query and `Sec-WebSocket-Protocol`: the first
/// line is the query, the rest the header value. Runs the `/replay` query
/// parser ([`ReplayRequest::parse_query`], no filesystem) and the
/// encoding and slow-mode choices every upgrade makes.
pub fn http_query(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (query, protocols) = match text.split_once('\n') {
        Some((q, p)) => (q, Some(p)),
        None => (&*text, None),
    };
    match ReplayRequest::parse_query(Some(query)) {
        Ok(req) => {
            // The name can never lead out of the replay directory.
            let mut parts = Path::new(&req.name).components();
            assert!(matches!(parts.next(), Some(Component::Normal(_))), "source {:?}", req.name);
            assert!(parts.next().is_none(), "source {:?} has more than one component", req.name);
            assert!(!req.name.contains(['/', '\\', '\0']) && !req.name.starts_with('.'), "source {:?}", req.name);
            if let (Some(f), Some(t)) = (req.from, req.to) {
                assert!(f <= t);
            }
            if let Some(symbols) = &req.symbols {
                assert!(!symbols.is_empty() && symbols.iter().all(|s| !s.is_empty()));
            }
            if let Some(d) = req.depth {
                assert!(valid_depth(d), "depth {d}");
            }
        }
        Err(e) => short("replay query", &e.to_string()),
    }
    if let Err(e) = choose_encoding(Some(query), protocols) {
        // The offered subprotocols are echoed whole: only the header's own
        // size limit bounds them (hyper's, 100 headers of at most 64 KiB).
        if protocols.is_none() {
            short("encoding", &e.to_string());
        }
    }
    if let Err(e) = choose_slow_mode(Some(query)) {
        short("slow mode", &e.to_string());
    }
}

/// Reads every event of `source`; checks what every reader promises:
/// finite prices, finite non-negative sizes, named symbols, an end.
fn drain(source: &mut dyn Source, input_len: usize, valid_names: bool) {
    let limit = MAX_EVENTS_PER_BYTE * input_len + 1024;
    let mut events = 0usize;
    let mut errors = 0usize;
    loop {
        match source.next_event() {
            Ok(Some(event)) => {
                events += 1;
                assert!(events <= limit, "more than {limit} events from {input_len} bytes");
                let name = source.symbol(event.sym);
                assert!(!name.is_empty(), "event of symbol id {} without a name", event.sym);
                if valid_names {
                    assert!(is_valid_symbol(&name), "invalid symbol name {name:?}");
                    check_update(&event.update);
                }
            }
            Ok(None) => break,
            Err(e) => {
                short("recording", &e.to_string());
                // Readers may go on after a corrupt line or record, but each
                // error consumes input: they cannot outnumber its bytes.
                errors += 1;
                assert!(errors <= input_len + 1, "{errors} errors from {input_len} bytes");
            }
        }
    }
    let mut gaps = Vec::new();
    source.take_gaps(&mut gaps);
}

fn check_update(update: &Update) {
    let level = |l: &Level| assert!(l.px.is_finite() && l.sz.is_finite() && l.sz >= 0.0, "level {l:?}");
    match update {
        Update::Trade(t) => level(&Level { px: t.px, sz: t.sz }),
        Update::Quote(q) => {
            level(&Level { px: q.bid, sz: q.bid_sz });
            level(&Level { px: q.ask, sz: q.ask_sz });
        }
        Update::Book(b) => b.bids.iter().chain(&b.asks).for_each(level),
    }
}

/// A Binance capture. The first byte picks the form: bit 0 gzips the rest
/// first (so the fuzzer reaches the gzip path with valid streams), bit 1
/// then cuts the gzip trailer off (a capture cut short).
pub fn binance(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let input = if mode & 1 == 1 {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(body).expect("gzip into memory");
        let mut bytes = gz.finish().expect("gzip into memory");
        if mode & 2 == 2 {
            bytes.truncate(bytes.len().saturating_sub(4));
        }
        bytes
    } else {
        body.to_vec()
    };
    let len = input.len().max(body.len());
    match BinanceReader::from_reader(Path::new("fuzz.capture"), std::io::Cursor::new(input)) {
        Ok(mut reader) => drain(&mut reader, len, true),
        Err(e) => short("binance open", &e.to_string()),
    }
}

/// A DBN stream (plain, or zstd as the file's first bytes say).
pub fn dbn(data: &[u8]) {
    match DbnReader::from_reader(Path::new("fuzz.dbn"), Box::new(std::io::Cursor::new(data.to_vec()))) {
        Ok(mut reader) => {
            if let Some(names) = reader.declared_symbols() {
                assert!(names.iter().all(|n| is_valid_symbol(n)), "declared {names:?}");
            }
            // Decompressed, a few bytes of zstd can be many records.
            drain(&mut reader, data.len().max(1) * 1024, true);
        }
        Err(e) => short("dbn open", &e.to_string()),
    }
}

/// A scratch file for one input, on tmpfs when the host has one: the tick
/// log reader and recovery read (and cut) files.
fn scratch_file(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() };
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    dir.join(format!("tickcast-fuzz-{}-{thread}-{name}", std::process::id()))
}

/// Rewrites each record's CRC32C to match its body, so the fuzzer's
/// mutations of record bodies get past the CRC to the body decoders.
fn fix_crcs(segment: &mut [u8]) {
    let mut at = HEADER_LEN;
    while at + 8 <= segment.len() {
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_BODY_LEN || at + 8 + len > segment.len() {
            break;
        }
        let crc = crc32c::crc32c(&segment[at + 8..at + 8 + len]);
        segment[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at += 8 + len;
    }
}

/// One tick-log segment. The first byte picks the form: bit 0 writes a
/// valid header over the first 32 bytes, bit 1 fixes every record's CRC.
/// The segment is read whole; then a copy is recovered (the crash-recovery
/// cut the writer runs at start-up), which must leave a segment that a
/// second recovery finds nothing to cut in.
pub fn ticklog(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut segment = body.to_vec();
    if mode & 1 == 1 && segment.len() >= HEADER_LEN {
        segment[0..8].copy_from_slice(&MAGIC);
        segment[8..10].copy_from_slice(&VERSION.to_le_bytes());
        segment[10..12].copy_from_slice(&0u16.to_le_bytes());
        segment[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    }
    if mode & 2 == 2 {
        fix_crcs(&mut segment);
    }
    let path = scratch_file("ticks-00000001.tlog");
    std::fs::write(&path, &segment).expect("write the scratch segment");
    match TickLogReader::open(&path) {
        // The tick log keeps floats bit for bit (the recorder wrote what
        // the engine sequenced), and checks names only for UTF-8.
        Ok(mut reader) => drain(&mut reader, segment.len(), false),
        Err(e) => short("tick log open", &e.to_string()),
    }
    match recover_segment(&path) {
        Ok(Some(cut)) => {
            if cut.offset > 0 {
                let len = std::fs::metadata(&path).expect("the cut segment is still there").len();
                assert_eq!(len, cut.offset, "recovery cut to {} but left {len} bytes", cut.offset);
                match recover_segment(&path) {
                    Ok(None) => {}
                    other => panic!("a second recovery of a recovered segment: {other:?}"),
                }
                if let Ok(mut reader) = TickLogReader::open(&path) {
                    loop {
                        match reader.next_event() {
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(e @ SourceError::Truncated { .. }) => panic!("a recovered segment is still torn: {e}"),
                            // A record whose CRC matches but whose body is bad
                            // is the reader's to report, not recovery's.
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        Ok(None) => {}
        Err(e) => short("tick log recovery", &e.to_string()),
    }
    let _ = std::fs::remove_file(&path);
}

/// Server messages as clients decode them, in every encoding: whatever
/// decodes re-encodes, and re-encoding is stable (decode, encode, decode,
/// encode gives the same bytes).
pub fn codec(data: &[u8]) {
    for encoding in Encoding::ALL {
        let Ok(msg) = decode(encoding, data) else {
            continue;
        };
        let mut first = Vec::new();
        encode_payload(encoding, &msg, &mut first);
        let again = decode(encoding, &first)
            .unwrap_or_else(|e| panic!("{encoding:?}: re-encoded {msg:?} does not decode: {e}"));
        let mut second = Vec::new();
        encode_payload(encoding, &again, &mut second);
        assert_eq!(first, second, "{encoding:?}: encoding of {msg:?} is not stable");
    }
}

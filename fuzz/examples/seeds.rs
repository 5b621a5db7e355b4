//! Writes the seed inputs of every fuzz target into `fuzz/seeds/<target>/`
//! from real data: the examples in docs/PROTOCOL.md, the Binance and DBN
//! samples in tests/data, and a small tick log written with the crate's own
//! writer. The fuzzer grows its corpus from these; the minimized corpus is
//! committed under `fuzz/corpus/<target>/` (see docs/SECURITY.md).
//!
//! Run from `fuzz/`: `cargo +nightly run --example seeds`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tickcast::model::{BookDelta, Level, Quote, Side, Trade, Update};
use tickcast::recorded::ticklog::{Fsync, LogTick, TickLogWriter, WriterOptions};
use tickcast::wire::{decode, encode_payload, Encoding};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join(target);
    std::fs::create_dir_all(&dir).expect("create the seed directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

/// The ```json <kind> blocks of docs/PROTOCOL.md.
fn doc_blocks(kind: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(root().join("docs/PROTOCOL.md")).expect("read docs/PROTOCOL.md");
    let fence = format!("```json {kind}");
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.trim() == fence {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            out.push(body.join("\n"));
        }
    }
    out
}

fn main() {
    // Control messages: the documented ones, live and replay.
    for (i, text) in doc_blocks("client").iter().chain(&doc_blocks("replay")).enumerate() {
        write("control", &format!("doc-{i}"), text.as_bytes());
    }
    write("control", "depth-full", br#"{"op":"subscribe","symbols":["A","*"],"depth":"full"}"#);
    write("control", "seek-rfc3339", br#"{"op":"seek","ts":"2024-08-08T23:55:00.5Z"}"#);

    // Feed lines.
    for (i, text) in doc_blocks("feed").iter().enumerate() {
        write("feed_line", &format!("doc-{i}"), text.as_bytes());
    }

    // Event times.
    for (i, text) in
        ["1723161254206652067", "2024-08-08T23:55:00Z", "2024-08-08T23:55:00.123456789Z", " 0 "].iter().enumerate()
    {
        write("event_time", &format!("t-{i}"), text.as_bytes());
    }

    // Upgrade queries (first line) and Sec-WebSocket-Protocol (the rest).
    for (i, text) in [
        "source=btcusdt_20240808.gz&from=2024-08-08T23:55:00Z&to=1723161599999999999&speed=10&symbols=BTCUSDT,ETHUSDT&depth=full&encoding=json",
        "source=a.tlog&speed=max&depth=25&slow=disconnect",
        "encoding=protobuf&slow=conflate\ntickcast.protobuf, foo",
        "source=x%2F..%2Fy&from=1\ntickcast.msgpack",
    ]
    .iter()
    .enumerate()
    {
        write("http_query", &format!("q-{i}"), text.as_bytes());
    }

    // Server messages in every encoding.
    for (i, text) in doc_blocks("server").iter().enumerate() {
        let msg = decode(Encoding::Json, text.as_bytes()).expect("a documented server message decodes");
        for encoding in Encoding::ALL {
            let mut buf = Vec::new();
            encode_payload(encoding, &msg, &mut buf);
            write("codec", &format!("doc-{i}-{}", encoding.name()), &buf);
        }
    }

    binance_seeds();
    dbn_seeds();
    ticklog_seeds();
}

/// Runs of a few lines from each sample capture, with REST snapshots cut
/// to five levels a side; mode byte 0 (plain) and 1 (gzip).
fn binance_seeds() {
    for sample in ["btcusdt_20240808.gz", "ethusdt_20240808.gz"] {
        let file = std::fs::File::open(root().join("tests/data/binance").join(sample)).expect("open a sample");
        let mut text = String::new();
        flate2::read::GzDecoder::new(file).read_to_string(&mut text).expect("decompress a sample");
        let lines: Vec<String> = text
            .lines()
            .take(400)
            .map(|line| {
                let (recv, json) = line.split_once(' ').expect("a capture line");
                let mut value: serde_json::Value = serde_json::from_str(json).expect("capture JSON");
                for side in ["bids", "asks"] {
                    if let Some(levels) = value.get_mut(side).and_then(|v| v.as_array_mut()) {
                        levels.truncate(5);
                    }
                }
                format!("{recv} {value}\n")
            })
            .collect();
        for (i, chunk) in lines.chunks(25).enumerate() {
            let body = chunk.concat();
            for mode in [0u8, 1] {
                let mut seed = vec![mode];
                seed.extend_from_slice(body.as_bytes());
                write("binance", &format!("{sample}-{i}-mode{mode}"), &seed);
            }
        }
    }
}

/// Every DBN sample, as it is (zstd) and decompressed.
fn dbn_seeds() {
    let dir = root().join("tests/data/dbn");
    for entry in std::fs::read_dir(&dir).expect("list tests/data/dbn") {
        let path = entry.expect("a dir entry").path();
        let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
        if !name.ends_with(".zst") {
            continue;
        }
        let zst = std::fs::read(&path).expect("read a sample");
        write("dbn", &name, &zst);
        match std::process::Command::new("zstd").arg("-dc").arg(&path).output() {
            Ok(out) if out.status.success() => write("dbn", name.trim_end_matches(".zst"), &out.stdout),
            _ => eprintln!("no zstd command: {name} is seeded compressed only"),
        }
    }
}

/// A small tick log from the crate's own writer: three symbols, every
/// update kind; mode bytes 0 (as written), 2 (CRCs fixed after mutation)
/// and 3 (header and CRCs fixed).
fn ticklog_seeds() {
    let dir = std::env::temp_dir().join(format!("tickcast-seeds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let options = WriterOptions { segment_bytes: 1 << 20, segment_age: Duration::from_secs(3600), fsync: Fsync::Never };
    let (mut writer, _) = TickLogWriter::open(&dir, options).expect("open a tick log");
    let segment = writer.current_segment().to_owned();
    let updates = [
        Update::Trade(Trade { px: 189.5, sz: 100.0, side: Side::Buy }),
        Update::Quote(Quote { bid: 189.49, bid_sz: 300.0, ask: 189.51, ask_sz: 200.0 }),
        Update::Book(BookDelta {
            bids: vec![Level { px: 189.49, sz: 300.0 }, Level { px: 189.48, sz: 0.0 }],
            asks: vec![Level { px: 189.52, sz: 7.0 }],
        }),
        Update::Trade(Trade { px: 0.1, sz: 1e-9, side: Side::Sell }),
    ];
    for (i, sym) in ["AAPL", "BTC-USDT", "AAPL", "ESH1", "AAPL", "BTC-USDT"].iter().enumerate() {
        let update = &updates[i % updates.len()];
        let seq = if i == 4 { 9 } else { i as u64 / 2 + 1 };
        let tick = LogTick { sym, seq, ts_event: 1_700_000_000_000_000_000 + i as u64, ts_ingest: 1, update };
        writer.append(&tick).expect("append a tick");
    }
    writer.finish().expect("finish the tick log");
    let bytes = std::fs::read(&segment).expect("read the segment");
    for mode in [0u8, 2, 3] {
        let mut seed = vec![mode];
        seed.extend_from_slice(&bytes);
        write("ticklog", &format!("segment-mode{mode}"), &seed);
    }
    // A torn tail, as a crash leaves it.
    let mut torn = vec![0u8];
    torn.extend_from_slice(&bytes[..bytes.len() - 5]);
    write("ticklog", "torn", &torn);
    let _ = std::fs::remove_dir_all(&dir);
}

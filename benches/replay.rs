//! Replay throughput: a recording read, normalized and pushed into the
//! tick ring at `--speed max`, in ticks per second.
//!
//! What it measures, per format: the real replay feed
//! ([`tickcast::feed::replay`], the code `--feed replay:PATH` runs) from
//! opening the file to the last tick taken off the ring by a consumer
//! thread that pops like the engine does. One iteration is the whole file;
//! `Throughput::Elements` makes criterion report ticks per second.
//!
//! - `ticklog`: 1,000,000 ticks (quotes, trades and 2-level book changes
//!   over 8 symbols) written once with the tick-log writer, outside the
//!   timing. The target is at least 2M ticks/s.
//! - `binance_gz`: the real BTCUSDT capture in `tests/data/binance` (gzip
//!   JSON lines: decompress, parse, normalize).
//! - `dbn_zst`: the real mbp-1 sample's records, repeated with rising
//!   timestamps to 400,000 records and written with the `dbn` crate's zstd
//!   encoder (the sample alone is a handful of records).
//!
//! And `read_only/*`: the same files through [`tickcast::recorded`]
//! without the ring, so the ring's share is visible.
//!
//! `record/append_flush`: the recorder's own work per tick, isolated from
//! the server: 1,000,000 sequenced ticks (the same mix) appended with
//! `append_keyed` and handed to the OS every 5,000 ticks (what the
//! recorder's 5 ms gather holds at 1M ticks/s), `--fsync 1s`, into a fresh tick log in the
//! temp dir. Divided by the server's CPU per tick without recording, it is
//! the recording overhead with no load-generator noise in it.
//!
//! Run: `cargo bench --bench replay`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tickcast::feed::pacing::Speed;
use tickcast::feed::replay::ReplaySettings;
use tickcast::feed::FeedContext;
use tickcast::metrics::Metrics;
use tickcast::model::{BookDelta, Level, Quote, Side, SymbolTable, Trade, Update};
use tickcast::recorded;
use tickcast::recorded::ticklog::{Fsync, LogTick, TickLogWriter, WriterOptions};
use tickcast::ring::TickRing;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TICKLOG_TICKS: u64 = 1_000_000;
const DBN_RECORDS: usize = 400_000;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickcast-bench-replay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write_ticklog(dir: &Path) -> PathBuf {
    let path = dir.join("ticks");
    let options = WriterOptions { segment_bytes: 1 << 30, segment_age: Duration::from_secs(3600), fsync: Fsync::Never };
    let (mut w, _) = TickLogWriter::open(&path, options).expect("open tick log");
    for (key, (sym, seq, ts, update)) in mix() {
        w.append_keyed(key, &LogTick { sym: &sym, seq, ts_event: ts, ts_ingest: ts + 500, update: &update })
            .expect("append");
    }
    w.finish().expect("finish");
    path
}

fn write_dbn(dir: &Path) -> PathBuf {
    use dbn::decode::{DbnMetadata, DecodeRecord, DynDecoder};
    use dbn::encode::{dbn::Encoder, EncodeRecord};
    use dbn::{Mbp1Msg, VersionUpgradePolicy};
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dbn/test_data.mbp-1.v3.dbn.zst");
    let mut decoder = DynDecoder::from_file(&sample, VersionUpgradePolicy::AsIs).expect("sample");
    let metadata = decoder.metadata().clone();
    let mut records: Vec<Mbp1Msg> = Vec::new();
    while let Some(r) = decoder.decode_record::<Mbp1Msg>().expect("decode") {
        records.push(r.clone());
    }
    assert!(!records.is_empty());
    let path = dir.join("big.mbp-1.dbn.zst");
    let file = std::fs::File::create(&path).expect("create");
    let mut encoder = Encoder::with_zstd(file, &metadata).expect("encoder");
    let step = 1_000u64;
    for i in 0..DBN_RECORDS {
        let mut r = records[i % records.len()].clone();
        r.hd.ts_event += i as u64 * step;
        r.ts_recv += i as u64 * step;
        encoder.encode_record(&r).expect("encode");
    }
    drop(encoder);
    path
}

/// Ticks the recording yields (one pass through the reader).
fn count(path: &Path) -> u64 {
    let mut src = recorded::open(path).expect("open");
    let mut n = 0;
    while src.next_event().expect("clean").is_some() {
        n += 1;
    }
    n
}

/// One replay of `path` at max speed into a ring, drained by a consumer
/// thread; returns the time from start to the last tick popped.
fn replay_once(path: &Path, expected: u64) -> Duration {
    let ring = Arc::new(TickRing::new(tickcast::ring::DEFAULT_CAPACITY));
    let ctx = FeedContext {
        ring: ring.clone(),
        symbols: Arc::new(SymbolTable::default()),
        metrics: Arc::new(Metrics::default()),
        max_symbols: 100_000,
        shutdown: Arc::new(AtomicBool::new(false)),
    };
    let consumer_ring = ring.clone();
    let consumer = std::thread::spawn(move || {
        consumer_ring.register_consumer();
        let mut n = 0u64;
        while n < expected {
            match consumer_ring.pop() {
                Some(t) => {
                    std::hint::black_box(&t);
                    n += 1;
                }
                None => consumer_ring.park_consumer(Duration::from_millis(2), || false),
            }
        }
        Instant::now()
    });
    let started = Instant::now();
    let settings = ReplaySettings { path: path.to_owned(), speed: Speed::Max, looped: false, from: None, to: None };
    let feed = tickcast::feed::replay::start(settings, ctx).expect("start replay");
    let done = consumer.join().expect("consumer");
    for t in feed.threads {
        t.join().expect("feed thread");
    }
    assert_eq!(ring.len(), 0);
    done - started
}

fn bench(c: &mut Criterion) {
    let dir = scratch();
    let inputs = [
        ("ticklog", write_ticklog(&dir)),
        ("binance_gz", Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/binance/btcusdt_20240808.gz")),
        ("dbn_zst", write_dbn(&dir)),
    ];
    let mut group = c.benchmark_group("replay_to_ring");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    for (name, path) in &inputs {
        let n = count(path);
        group.throughput(Throughput::Elements(n));
        group.bench_function(*name, |b| b.iter_custom(|iters| (0..iters).map(|_| replay_once(path, n)).sum()));
    }
    group.finish();
    let mut group = c.benchmark_group("read_only");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for (name, path) in &inputs {
        group.throughput(Throughput::Elements(count(path)));
        group.bench_function(*name, |b| b.iter(|| count(path)));
    }
    group.finish();
    let mut group = c.benchmark_group("record");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(TICKLOG_TICKS));
    let ticks = mix();
    let mut run = 0;
    group.bench_function("append_flush", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                run += 1;
                let path = dir.join(format!("rec-{run}"));
                let options = WriterOptions {
                    segment_bytes: 256 << 20,
                    segment_age: Duration::from_secs(3600),
                    fsync: Fsync::Every(Duration::from_secs(1)),
                };
                let started = Instant::now();
                let (mut w, _) = TickLogWriter::open(&path, options).expect("open");
                for (i, (key, tick)) in ticks.iter().enumerate() {
                    let t = LogTick {
                        sym: &tick.0,
                        seq: tick.1,
                        ts_event: tick.2,
                        ts_ingest: tick.2 + 500,
                        update: &tick.3,
                    };
                    w.append_keyed(*key, &t).expect("append");
                    if i % 5_000 == 4_999 {
                        w.flush().expect("flush");
                    }
                }
                w.finish().expect("finish");
                total += started.elapsed();
                let _ = std::fs::remove_dir_all(&path);
            }
            total
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The benchmark's tick mix, pre-built: (key, (symbol, seq, ts, update)).
#[allow(clippy::type_complexity)]
fn mix() -> Vec<(u32, (String, u64, u64, Update))> {
    let mut seqs = [0u64; 8];
    (0..TICKLOG_TICKS)
        .map(|n| {
            let s = (n % 8) as usize;
            seqs[s] += 1;
            let px = 100.0 + (n % 1000) as f64 * 0.01;
            let update = match n % 10 {
                0 => Update::Trade(Trade { px, sz: 1.0, side: Side::Buy }),
                1 | 2 => Update::Book(BookDelta {
                    bids: vec![Level { px, sz: 2.0 }],
                    asks: vec![Level { px: px + 0.02, sz: 0.0 }],
                }),
                _ => Update::Quote(Quote { bid: px, bid_sz: 1.0, ask: px + 0.01, ask_sz: 2.0 }),
            };
            (s as u32, (format!("SYM{s}"), seqs[s], 1_700_000_000_000_000_000 + n * 1_000, update))
        })
        .collect()
}

criterion_group!(benches, bench);
criterion_main!(benches);

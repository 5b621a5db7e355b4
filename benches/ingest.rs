//! Ingest-side cost of one feed line: what the tcp feed's thread spends
//! per tick before the ring.
//!
//! What it measures (time per line, `Throughput::Elements(1)`):
//!
//! - `parse_line/<kind>`: [`parse_line`] of one newline-free JSON line in
//!   the documented schema: the load generator's quote (the line every
//!   peers-benchmark workload sends), a trade, and a book delta of 5 bid +
//!   5 ask levels. Parsing, validation, exact floats, and the `Update`.
//! - `baseline/scan/<kind>`: a pass over the same bytes looking for a
//!   byte that is not there (the cost of touching the line at all).
//! - `decode/<kind>`: [`decode`] of the same tick as a binary record (made
//!   from what `parse_line` returns, so the ticks are the same): what a
//!   binary feed handler spares the feed thread.
//! - `parse_record/<kind>`: [`parse_record`], the tcp feed's binary path:
//!   `decode` plus the feed's rules (kind, level bound), giving the same
//!   `ParsedTick` as `parse_line`.
//!
//! Why: at 100k ticks/s into 100 subscribers (the peers benchmark's W2),
//! the feed thread is one of the three places the server's CPU goes; this
//! sizes its per-line cost against the engine's (`benches/codec.rs`), and
//! the JSON parse against the binary decode.
//!
//! Run: `cargo bench --bench ingest` (`-- 'decode|parse_record'` for the
//! binary side alone).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tickcast::feed::binary::parse_record;
use tickcast::feed::json::parse_line;
use tickcast::model::record::{decode, encode_tick, FRAME_PREFIX_LEN};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn lines() -> [(&'static str, Vec<u8>); 3] {
    [
        (
            "quote",
            br#"{"type":"quote","sym":"S007","seq":123456,"ts_event":1763776800123456789,"bid":100.5,"bid_sz":100,"ask":100.51,"ask_sz":200}"#
                .to_vec(),
        ),
        (
            "trade",
            br#"{"type":"trade","sym":"AAPL","px":189.53,"sz":100,"side":"buy","ts_event":1763776800123456789}"#.to_vec(),
        ),
        (
            "book5",
            br#"{"type":"book","sym":"AAPL","bids":[[189.49,300],[189.48,200],[189.47,100],[189.46,500],[189.45,50]],"asks":[[189.51,300],[189.52,0],[189.53,100],[189.54,700],[189.55,10]],"ts_event":1763776800123456789}"#
                .to_vec(),
        ),
    ]
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_line");
    group.throughput(Throughput::Elements(1));
    for (kind, line) in lines() {
        assert!(parse_line(&line).is_ok(), "{kind} parses");
        group.bench_with_input(BenchmarkId::from_parameter(kind), &line, |b, line| {
            b.iter(|| black_box(parse_line(black_box(line)).map(|t| t.update)))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Elements(1));
    for (kind, line) in lines() {
        group.bench_with_input(BenchmarkId::new("scan", kind), &line, |b, line| {
            b.iter(|| black_box(black_box(line).iter().position(|&b| b == 0)))
        });
    }
    group.finish();
}

/// The same ticks as [`lines`], as binary records (without the frame's
/// length prefix, as the feed hands them to the decoder).
fn records() -> Vec<(&'static str, Vec<u8>)> {
    lines()
        .into_iter()
        .map(|(kind, line)| {
            let tick = parse_line(&line).expect("parses");
            let mut buf = Vec::new();
            encode_tick(&mut buf, 0, 0, &tick.sym, tick.ts_event.unwrap_or(0), 0, &tick.update);
            let record = buf.split_off(FRAME_PREFIX_LEN);
            assert_eq!(parse_record(&record).expect("decodes"), tick, "{kind}: the same tick");
            (kind, record)
        })
        .collect()
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    for (kind, record) in records() {
        group.bench_with_input(BenchmarkId::from_parameter(kind), &record, |b, record| {
            b.iter(|| black_box(decode(black_box(record)).map(|r| r.body)))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("parse_record");
    group.throughput(Throughput::Elements(1));
    for (kind, record) in records() {
        group.bench_with_input(BenchmarkId::from_parameter(kind), &record, |b, record| {
            b.iter(|| black_box(parse_record(black_box(record)).map(|t| t.update)))
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_parse, bench_decode
}
criterion_main!(benches);

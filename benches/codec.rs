//! Encode-side cost of one market update, and why the engine encodes once.
//!
//! What it measures (every group reports time per message, or per
//! subscriber for the fan-out groups, through `Throughput::Elements`):
//!
//! - `encode_payload/<encoding>/<kind>`: [`encode_payload`] of one update
//!   (a trade, a quote, a book delta of 5 bid + 5 ask levels) into a reused
//!   `Vec`. This is the serializer alone: MessagePack (named keys), protobuf
//!   (including the conversion to the prost envelope, which allocates) and
//!   JSON.
//! - `encode_frame/<encoding>/<kind>`: [`encode_frame`], what the engine
//!   runs once per update and encoding: payload + WebSocket header + the one
//!   allocation of the shared frame (and, here, its drop).
//! - `baseline/copy_payload/<encoding>/<kind>`: the harness alone: copying
//!   the same pre-encoded payload into the same reused `Vec`. Subtract it
//!   from `encode_payload`, or read the ratio, to get the serializer's cost.
//! - `baseline/frame_only/<encoding>/<kind>`: [`frame`] of a pre-encoded
//!   payload: header + allocation + copy, i.e. `encode_frame` minus the
//!   serializer.
//! - `fanout_100/...` (`Elements(100)`, so the time shown per element is
//!   per subscriber): a quote delivered to 100 subscribers' staging
//!   `Vec<Bytes>`, as [`tickcast::engine`] does per update.
//!   `share_prebuilt_frame` is the clone loop alone (one reference count
//!   up, and down again when the staged frames are cleared);
//!   `baseline_push_static` is the same loop with a `Bytes::from_static`
//!   (whose clone and drop touch no counter), so the difference between the
//!   two is the reference count itself;
//!   `encode_once_share/<encoding>` is the engine's real path (one
//!   `encode_frame`, then 100 clones); `encode_per_subscriber/<encoding>`
//!   is the naive alternative (100 `encode_frame`s) that encode-once avoids.
//! - `topic/apply/<kind>`: [`Topic::apply`] on a topic whose book holds
//!   50 levels per side (the book delta changes sizes at 5 + 5 existing
//!   levels: a binary search and a store per level).
//! - `topic/snapshot_encode/<encoding>`: [`Topic::snapshot`] at the default
//!   `--book-depth` of 10 plus [`encode_frame`]: what every subscribe costs
//!   the engine thread per symbol.
//!
//! Allocations go through mimalloc, the server binary's global allocator.
//!
//! Why: the engine thread is the only serial stage of the pipeline, and its
//! per-update cost is "apply + one encode per encoding in use + one refcount
//! per subscriber". These numbers size each term, so a change to the codec
//! or the fan-out can be judged against the harness and against each other.
//!
//! Run: `cargo bench --bench codec` (or `-- --quick` for a fast pass).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tickcast::engine::topic::Topic;
use tickcast::model::{BookDelta, Level, Quote, Side, Trade, Update};
use tickcast::wire::{encode_frame, encode_payload, frame, Encoding, ServerMessage};

// The server's allocator, so the frame allocations cost what they cost there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SYM: &str = "BTC-USDT";
const SEQ: u64 = 1_234_567;
const TS_EVENT: u64 = 1_700_000_000_123_456_789;
const TS_INGEST: u64 = TS_EVENT + 25_000;
/// Subscribers of one topic in the fan-out groups.
const SUBSCRIBERS: usize = 100;
/// Default `--book-depth`.
const BOOK_DEPTH: usize = 10;

/// A price from an integer number of cents, so that it has the short
/// decimal form a feed would parse (JSON output length depends on it).
fn cents(c: i64) -> f64 {
    c as f64 / 100.0
}

fn trade() -> Update {
    Update::Trade(Trade { px: cents(6_412_350), sz: 0.015, side: Side::Buy })
}

fn quote() -> Update {
    Update::Quote(Quote { bid: cents(6_412_345), bid_sz: 0.8125, ask: cents(6_412_350), ask_sz: 1.25 })
}

/// A book delta of `levels` bid and `levels` ask levels around the touch.
fn book(levels: i64) -> Update {
    Update::Book(book_delta(levels, 0.0))
}

fn book_delta(levels: i64, size_bump: f64) -> BookDelta {
    let bids =
        (0..levels).map(|i| Level { px: cents(6_412_345 - 5 * i), sz: 0.5 + i as f64 * 0.25 + size_bump }).collect();
    let asks =
        (0..levels).map(|i| Level { px: cents(6_412_350 + 5 * i), sz: 0.75 + i as f64 * 0.25 + size_bump }).collect();
    BookDelta { bids, asks }
}

/// The three update kinds measured, with their bench names.
fn updates() -> [(&'static str, Update); 3] {
    [("trade", trade()), ("quote", quote()), ("book5", book(5))]
}

fn message(update: &Update) -> ServerMessage<'_> {
    ServerMessage::update(SYM, SEQ, TS_EVENT, TS_INGEST, update, 0x1234_5678)
}

fn bench_encode(c: &mut Criterion) {
    let mut scratch = Vec::with_capacity(4096);

    let mut group = c.benchmark_group("encode_payload");
    group.throughput(Throughput::Elements(1));
    for encoding in Encoding::ALL {
        for (kind, update) in updates() {
            group.bench_with_input(BenchmarkId::new(encoding.name(), kind), &update, |b, update| {
                b.iter(|| {
                    // Built per iteration, as the engine does; it only borrows.
                    let msg = message(black_box(update));
                    scratch.clear();
                    encode_payload(encoding, &msg, &mut scratch);
                    black_box(&scratch);
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("encode_frame");
    group.throughput(Throughput::Elements(1));
    for encoding in Encoding::ALL {
        for (kind, update) in updates() {
            group.bench_with_input(BenchmarkId::new(encoding.name(), kind), &update, |b, update| {
                b.iter(|| {
                    let msg = message(black_box(update));
                    black_box(encode_frame(encoding, &msg, &mut scratch))
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Elements(1));
    for encoding in Encoding::ALL {
        for (kind, update) in updates() {
            let mut payload = Vec::new();
            encode_payload(encoding, &message(&update), &mut payload);
            group.bench_with_input(
                BenchmarkId::new(format!("copy_payload/{}", encoding.name()), kind),
                &payload,
                |b, payload| {
                    b.iter(|| {
                        scratch.clear();
                        scratch.extend_from_slice(black_box(payload));
                        black_box(&scratch);
                    })
                },
            );
            group.bench_with_input(
                BenchmarkId::new(format!("frame_only/{}", encoding.name()), kind),
                &payload,
                |b, payload| b.iter(|| black_box(frame(encoding.opcode(), black_box(payload)))),
            );
        }
    }
    group.finish();
}

/// Drops every staged frame, keeping each subscriber's `Vec` capacity (the
/// engine hands them to the outbox and the writer drops them once sent).
fn clear(staged: &mut [Vec<Bytes>]) {
    for s in staged {
        s.clear();
    }
}

fn bench_fanout(c: &mut Criterion) {
    let update = quote();
    let mut scratch = Vec::with_capacity(4096);
    let mut staged: Vec<Vec<Bytes>> = (0..SUBSCRIBERS).map(|_| Vec::with_capacity(16)).collect();

    let mut group = c.benchmark_group(format!("fanout_{SUBSCRIBERS}"));
    group.throughput(Throughput::Elements(SUBSCRIBERS as u64));

    let prebuilt = encode_frame(Encoding::Msgpack, &message(&update), &mut scratch);
    // The first clone of a fresh `Bytes` moves it to a shared header (one
    // allocation); do it here so this bench shows the steady-state clone.
    // `encode_once_share` below pays it, as the engine does.
    let _promoted = prebuilt.clone();
    group.bench_function("share_prebuilt_frame", |b| {
        b.iter(|| {
            let frame = black_box(&prebuilt);
            for s in staged.iter_mut() {
                s.push(frame.clone());
            }
            clear(black_box(&mut staged));
        })
    });

    // Same push / clear loop, no reference count: the harness of this group.
    let payload: &'static [u8] = prebuilt.to_vec().leak();
    let static_frame = Bytes::from_static(payload);
    group.bench_function("baseline_push_static", |b| {
        b.iter(|| {
            let frame = black_box(&static_frame);
            for s in staged.iter_mut() {
                s.push(frame.clone());
            }
            clear(black_box(&mut staged));
        })
    });

    for encoding in Encoding::ALL {
        group.bench_function(BenchmarkId::new("encode_once_share", encoding.name()), |b| {
            b.iter(|| {
                let msg = message(black_box(&update));
                let frame = encode_frame(encoding, &msg, &mut scratch);
                for s in staged.iter_mut() {
                    s.push(frame.clone());
                }
                clear(black_box(&mut staged));
            })
        });
        group.bench_function(BenchmarkId::new("encode_per_subscriber", encoding.name()), |b| {
            b.iter(|| {
                let msg = message(black_box(&update));
                for s in staged.iter_mut() {
                    s.push(encode_frame(encoding, &msg, &mut scratch));
                }
                clear(black_box(&mut staged));
            })
        });
    }
    group.finish();
}

/// A topic with a last quote, a last trade and 50 levels per side.
fn populated_topic() -> Topic {
    let mut topic = Topic::new(Arc::from(SYM));
    topic.apply(&book(50), TS_EVENT, TS_INGEST);
    topic.apply(&quote(), TS_EVENT, TS_INGEST);
    topic.apply(&trade(), TS_EVENT, TS_INGEST);
    topic
}

fn bench_topic(c: &mut Criterion) {
    let mut group = c.benchmark_group("topic");
    group.throughput(Throughput::Elements(1));

    // Sizes change at levels already in the book, so the book keeps its
    // shape across iterations.
    let applied = [("trade", trade()), ("quote", quote()), ("book5", Update::Book(book_delta(5, 1.0)))];
    for (kind, update) in applied {
        let mut topic = populated_topic();
        group.bench_with_input(BenchmarkId::new("apply", kind), &update, |b, update| {
            b.iter(|| black_box(topic.apply(black_box(update), TS_EVENT, TS_INGEST)))
        });
    }

    let topic = populated_topic();
    let mut scratch = Vec::with_capacity(4096);
    for encoding in Encoding::ALL {
        group.bench_function(BenchmarkId::new("snapshot_encode", encoding.name()), |b| {
            b.iter(|| {
                let snapshot = black_box(&topic).snapshot(BOOK_DEPTH);
                black_box(encode_frame(encoding, &snapshot, &mut scratch))
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    // Short windows: ~50 benches, each stable within a few percent at
    // these sizes; the machine is shared, so more time buys little.
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_encode, bench_fanout, bench_topic
}
criterion_main!(benches);

//! Throughput of the feed → engine hand-off: [`TickRing`] against a
//! crossbeam-channel baseline.
//!
//! What it measures: moving N = 1,000,000 quote [`Tick`]s from one producer
//! thread to one consumer thread, in order, none lost (the consumer checks
//! every `ts_event`). One iteration is the whole million; the time is taken
//! from a barrier both threads pass to the consumer's last receive, so ring
//! allocation and thread start-up are not counted. `Throughput::Elements(N)`
//! makes criterion report ticks per second.
//!
//! For each capacity (65,536, the `--ring-capacity` default, and 1,024, a
//! ring small enough to be full most of the time):
//! - `tickring`: the producer calls [`TickRing::push`] (waits while full);
//!   the consumer, after [`TickRing::register_consumer`], pops and, when the
//!   ring is empty, parks with [`TickRing::park_consumer`] exactly as the
//!   engine does (2 ms timeout).
//! - `crossbeam_channel`: `crossbeam_channel::bounded` of the same capacity,
//!   blocking `send` / `recv`. The baseline the ring has to beat or match.
//! - `tickring_same_thread`, `crossbeam_channel_same_thread`: the same loop
//!   with both ends on one thread (push, then pop at once): the cost of the
//!   queue operations without any cross-core traffic or waiting.
//!
//! And `harness/no_queue`: building and checking the N ticks with no queue
//! at all, the floor under every other number.
//!
//! Allocations go through mimalloc, the server binary's global allocator.
//!
//! Why: the ring is the only hand-off between feeds and the engine; if it
//! were slower than an off-the-shelf channel there would be no reason to
//! keep it. Sample size and windows are reduced, and plots are off, so the
//! whole file runs in well under a minute on a 2-core machine, where
//! producer and consumer each get one core. Expect large run-to-run noise
//! there (tens of percent for the two-thread cases on a shared machine).
//!
//! Run: `cargo bench --bench ring`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use tickcast::model::{Quote, Tick, Update};
use tickcast::ring::{Input, TickRing};

// The server's allocator (the channel allocates its buffer through it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ticks moved per iteration.
const N: u64 = 1_000_000;
/// The engine's idle park timeout.
const PARK: Duration = Duration::from_millis(2);
/// Ring capacities compared.
const CAPACITIES: [usize; 2] = [tickcast::ring::DEFAULT_CAPACITY, 1024];

/// The `n`-th quote tick, as the synthetic feed would make it.
fn tick(n: u64) -> Tick {
    let px = (100_000 + n % 1000) as f64 / 100.0;
    Tick {
        symbol: (n % 100) as u32,
        ts_event: n,
        ts_ingest: n,
        update: Update::Quote(Quote { bid: px, bid_sz: 1.0, ask: px + 0.01, ask_sz: 2.0 }),
    }
}

/// The consumer's check that ticks arrive in order, none lost.
#[inline]
fn check(t: &Tick, next: u64) {
    assert_eq!(t.ts_event, next, "ticks arrive in order, none lost");
}

/// One cross-thread run through `ring`; returns the transfer time.
fn tickring_run(ring: &Arc<TickRing>) -> Duration {
    let start = Arc::new(Barrier::new(2));
    let producer = {
        let ring = ring.clone();
        let start = start.clone();
        thread::spawn(move || {
            start.wait();
            for n in 0..N {
                ring.push(tick(n)).expect("the ring is never closed here");
            }
        })
    };
    start.wait();
    let begin = Instant::now();
    let mut next = 0;
    while next < N {
        match ring.pop() {
            Some(Input::Tick(t)) => {
                check(&t, next);
                next += 1;
            }
            Some(other) => panic!("only ticks are pushed: {other:?}"),
            None => ring.park_consumer(PARK, || false),
        }
    }
    let elapsed = begin.elapsed();
    producer.join().expect("producer thread");
    elapsed
}

/// One cross-thread run through a bounded crossbeam channel.
fn channel_run(capacity: usize) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let start = Arc::new(Barrier::new(2));
    let producer = {
        let start = start.clone();
        thread::spawn(move || {
            start.wait();
            for n in 0..N {
                tx.send(tick(n)).expect("the receiver outlives the producer");
            }
        })
    };
    start.wait();
    let begin = Instant::now();
    for next in 0..N {
        let t = rx.recv().expect("the producer sends N ticks");
        check(&t, next);
    }
    let elapsed = begin.elapsed();
    producer.join().expect("producer thread");
    elapsed
}

fn tickring_same_thread(ring: &TickRing) {
    for n in 0..N {
        ring.push(tick(n)).expect("the ring is never closed here");
        let Some(Input::Tick(t)) = ring.pop() else { panic!("just pushed a tick") };
        check(&t, n);
    }
}

fn channel_same_thread(tx: &crossbeam_channel::Sender<Tick>, rx: &crossbeam_channel::Receiver<Tick>) {
    for n in 0..N {
        tx.send(tick(n)).expect("receiver alive");
        let t = rx.recv().expect("just sent");
        check(&t, n);
    }
}

/// Runs `run` `iters` times and sums what it returns (criterion's
/// `iter_custom` contract).
fn timed(iters: u64, mut run: impl FnMut() -> Duration) -> Duration {
    (0..iters).map(|_| run()).sum()
}

fn bench_ring(c: &mut Criterion) {
    for capacity in CAPACITIES {
        let mut group = c.benchmark_group(format!("ring_spsc_1M_ticks/cap{capacity}"));
        group.throughput(Throughput::Elements(N));
        group.sampling_mode(SamplingMode::Flat);

        group.bench_function(BenchmarkId::from_parameter("tickring"), |b| {
            // The bench thread is the consumer for every iteration, so one
            // ring (registered once, drained by every run) serves them all.
            let ring = Arc::new(TickRing::new(capacity));
            ring.register_consumer();
            b.iter_custom(|iters| timed(iters, || tickring_run(&ring)))
        });

        group.bench_function(BenchmarkId::from_parameter("crossbeam_channel"), |b| {
            b.iter_custom(|iters| timed(iters, || channel_run(capacity)))
        });

        group.bench_function(BenchmarkId::from_parameter("tickring_same_thread"), |b| {
            let ring = TickRing::new(capacity);
            ring.register_consumer();
            b.iter(|| tickring_same_thread(black_box(&ring)))
        });

        group.bench_function(BenchmarkId::from_parameter("crossbeam_channel_same_thread"), |b| {
            let (tx, rx) = crossbeam_channel::bounded(capacity);
            b.iter(|| channel_same_thread(black_box(&tx), black_box(&rx)))
        });
        group.finish();
    }

    let mut group = c.benchmark_group("ring_spsc_1M_ticks/harness");
    group.throughput(Throughput::Elements(N));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("no_queue", |b| {
        b.iter(|| {
            for n in 0..N {
                let t = black_box(tick(n));
                check(&t, n);
            }
        })
    });
    group.finish();
}

fn config() -> Criterion {
    // An iteration is a million ticks (tens of ms), so 10 samples over a
    // short window already hold dozens of iterations. No HTML plots: on a
    // 2-core machine drawing them takes longer than the measurement, and 10
    // samples make a poor plot anyway (the console and JSON results remain).
    Criterion::default()
        .without_plots()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_ring
}
criterion_main!(benches);

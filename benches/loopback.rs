//! What one socket write costs on this machine: the floor under every
//! figure of the fan-out.
//!
//! What it measures (time per write, `Throughput::Elements(1)`):
//!
//! - `write/<bytes>`: one `write` of a buffer of that size on a TCP
//!   connection over 127.0.0.1 with `TCP_NODELAY`, whose other end a
//!   thread drains as fast as it can. On loopback the sender's system call
//!   also runs the receiving side's TCP processing and wakes the reader,
//!   so this is what the server pays per write, whatever its writers do
//!   around it.
//! - `writev_12/1400`: the same 1,400 bytes as 12 slices in one `writev`
//!   (a writer's batch of about 12 frames of a W2 subscriber).
//! - `batch_50x124/*`: a W3 subscriber's batch of 50 frames of 124 bytes,
//!   as 50 slices, or copied into one buffer and written as one slice (what
//!   the writer does with small frames).
//!
//! Why: the engine decides how often each subscriber is written
//! (`--flush-interval`, `--write-budget`), and a write costs about the same
//! whether it carries one update or forty. This sizes that cost, so that
//! CPU per message can be read as writes per message times this, plus the
//! rest (BENCHMARKS.md, "Side by side with peers").
//!
//! Run: `cargo bench --bench loopback`.

use std::hint::black_box;
use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A connected pair on loopback, and the thread that drains it.
struct Pair {
    writer: TcpStream,
    stop: Arc<AtomicBool>,
    drain: Option<thread::JoinHandle<()>>,
}

impl Pair {
    fn new() -> Pair {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let writer = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        writer.set_nodelay(true).expect("nodelay");
        let (mut reader, _) = listener.accept().expect("accept");
        reader.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let drain = thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while !done.load(Ordering::Relaxed) {
                match reader.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                    Err(_) => return,
                }
            }
        });
        Pair { writer, stop, drain: Some(drain) }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.writer.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.drain.take() {
            let _ = t.join();
        }
    }
}

fn bench_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("write");
    group.throughput(Throughput::Elements(1));
    let mut pair = Pair::new();
    for size in [128usize, 1_400, 5_000, 12_000] {
        let buf = vec![0x81u8; size];
        group.bench_with_input(BenchmarkId::from_parameter(size), &buf, |b, buf| {
            b.iter(|| pair.writer.write_all(black_box(buf)).expect("write"))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("writev_12");
    group.throughput(Throughput::Elements(1));
    let frames: Vec<Vec<u8>> = (0..12).map(|_| vec![0x82u8; 1_400 / 12]).collect();
    group.bench_function(BenchmarkId::from_parameter(1_400), |b| {
        b.iter(|| {
            let slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
            black_box(pair.writer.write_vectored(&slices).expect("writev"))
        })
    });
    group.finish();
    // A W3 subscriber's batch: 50 frames of 124 bytes, each its own
    // allocation, as 50 slices or copied into one buffer first (what the
    // writer does with frames up to `GATHER_FRAME_MAX`).
    let frames: Vec<Vec<u8>> = (0..50).map(|i| vec![i as u8; 124]).collect();
    let mut group = c.benchmark_group("batch_50x124");
    group.throughput(Throughput::Elements(1));
    group.bench_function("writev_50_slices", |b| {
        b.iter(|| {
            let slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f)).collect();
            black_box(pair.writer.write_vectored(&slices).expect("writev"))
        })
    });
    let mut gather = Vec::with_capacity(64 * 1024);
    group.bench_function("gathered_1_slice", |b| {
        b.iter(|| {
            gather.clear();
            for f in &frames {
                gather.extend_from_slice(f);
            }
            black_box(pair.writer.write_vectored(&[IoSlice::new(&gather)]).expect("writev"))
        })
    });
    group.finish();
    drop(pair);
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_write
}
criterion_main!(benches);

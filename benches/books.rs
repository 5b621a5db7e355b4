//! What exact books cost per book tick: the full book update, each depth
//! view's delta ([`DepthDiff`]) and the checksum, on the real ETHUSDT and
//! BTCUSDT captures' book changes (`tests/data/binance`).
//!
//! Every book delta of the capture is read once, outside the timing; one
//! iteration applies all of them, in order, to a fresh book, doing per
//! tick what the engine does for a topic with audiences at the given
//! depths (`src/engine/publish.rs`): remember the old top to the deepest
//! view, apply, then per view compute its delta and its checksum.
//! `Throughput::Elements` makes criterion report book ticks per second.
//!
//! - `apply`: the full book update alone, the cost before depth views.
//! - `view_10`: one audience at depth 10 (the default).
//! - `views_1_10_25`: three audiences.
//! - `view_full`: one full-depth audience (no diff; checksum only).
//! - `checksum_10`: the checksum of a 10-level book alone.
//!
//! Run: `cargo bench --bench books`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tickcast::model::{Book, BookDelta, DepthDiff, Update, FULL_DEPTH};
use tickcast::recorded;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Every book change of a capture, in order.
fn book_deltas(path: &Path) -> Vec<BookDelta> {
    let mut src = recorded::open(path).expect("open capture");
    let mut out = Vec::new();
    while let Some(ev) = src.next_event().expect("a clean capture") {
        if let Update::Book(delta) = ev.update {
            out.push(delta);
        }
    }
    assert!(out.len() > 1000, "{}: {} book changes", path.display(), out.len());
    out
}

/// One pass over `deltas` with audiences at `depths`; returns a checksum
/// sum so the work cannot be optimized away.
fn pass(deltas: &[BookDelta], depths: &[usize], diff: &mut DepthDiff) -> u64 {
    let mut book = Book::default();
    let deepest = depths.iter().copied().filter(|&d| d < FULL_DEPTH).max().unwrap_or(0);
    let mut sum = 0u64;
    for delta in deltas {
        if !depths.is_empty() {
            diff.before(&book, deepest);
        }
        book.apply(delta);
        for &depth in depths {
            let view = diff.view(&book, delta, depth);
            sum += (view.bids.len() + view.asks.len()) as u64;
            sum += u64::from(book.checksum(depth));
        }
    }
    sum
}

fn bench(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/binance");
    for (name, file) in [("eth", "ethusdt_20240808.gz"), ("btc", "btcusdt_20240808.gz")] {
        let deltas = book_deltas(&root.join(file));
        let mut group = c.benchmark_group(format!("books_{name}"));
        group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
        group.throughput(Throughput::Elements(deltas.len() as u64));
        let mut diff = DepthDiff::default();
        for (label, depths) in [
            ("apply", &[][..]),
            ("view_10", &[10][..]),
            ("views_1_10_25", &[1, 10, 25][..]),
            ("view_full", &[FULL_DEPTH][..]),
        ] {
            group.bench_function(label, |b| b.iter(|| black_box(pass(&deltas, depths, &mut diff))));
        }
        let mut book = Book::default();
        for delta in &deltas[..deltas.len() / 2] {
            book.apply(delta);
        }
        group.throughput(Throughput::Elements(1));
        group.bench_function("checksum_10", |b| b.iter(|| black_box(&book).checksum(10)));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

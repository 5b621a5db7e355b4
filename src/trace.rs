//! `--trace-latency N`: where the time goes between a feed read and the
//! socket write, measured on 1 tick in N.
//!
//! In: stamps taken along one sampled tick's way (the feed, the engine,
//! each subscriber's writer). Out: per-stage latency distributions
//! ([`Tracer::summaries`]), which `/metrics` renders and the server logs
//! as a table at shutdown ([`Tracer::table`]).
//!
//! # Stages
//! A sampled tick carries its stamps, taken with one monotonic clock
//! ([`now`]: `CLOCK_MONOTONIC` through [`Instant`], comparable across
//! threads), from the feed to every socket it is written to:
//!
//! | stage | from | to |
//! |---|---|---|
//! | `feed_parse` | the feed read that brought the tick (tcp feed; the synthetic and replay feeds stamp at generation, so 0) | normalized, about to be pushed into the ring |
//! | `ring_wait` | pushed (a full ring's wait included) | popped by the engine thread |
//! | `fanout` | popped | sequenced, encoded and staged for every subscriber |
//! | `flush_wait` | staged | moved to this subscriber's outbox: the rest of the engine's batch, waiting for the feed's burst to drain, and the write pacing gate |
//! | `writer_wake` | in the outbox | this subscriber's writer took it (its wake-up, or its previous write finishing) |
//! | `socket_write` | taken | the vectored write that finished the frame returned (waits for socket space included) |
//! | `total` | the feed read | that write returned: the sum of the above |
//!
//! Every stage is recorded once per delivered copy, when the write that
//! finished it returns, so each distribution is over delivered messages
//! (a tick with 100 subscribers counts 100 times in `fanout` too) and the
//! stages of one delivery add up to its `total` exactly.
//!
//! # Cost
//! Off (the default, `N = 0`), each stage pays one predictable branch per
//! tick, per engine flush pass or per writer pass, and no clock read. On,
//! the feed reads the clock once per socket read and once per sampled
//! tick; the engine once per sampled tick and once per flush of a session
//! holding a sampled frame; the writer once per sampled frame it takes and
//! writes, and compares the frames each write finished with the few
//! sampled ones it holds (pointer compares, only while it holds one). No
//! unsampled message allocates or takes a lock; each delivered sample
//! takes [`Tracer`]'s lock once to record.
//!
//! # Sampling bias
//! - A subscriber carries at most one sampled frame per engine flush (a
//!   second one staged before the flush is not traced), and at most
//!   [`MARKS_PER_SESSION`] between its outbox and its socket; samples over
//!   either bound are counted in `tickcast_trace_dropped_total`. At a
//!   high sampling rate this favours the first frame of each write, which
//!   waited longest in `flush_wait`.
//! - Only frames delivered to a socket are recorded: a sample held back
//!   from a conflating subscriber, or dropped with a closed one, is not.
//! - A tick an edge forwards from its sequencer (`--feed nats://`) is
//!   never sampled.
//! - The distributions cover the whole run since start, warm-up included.
//!
//! Imports: nothing of the crate; every stage that stamps imports this.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// A point on the trace clock: ns since the process's first stamp, never
/// 0 (0 means "not stamped").
pub type Stamp = u64;

/// The origin of every [`Stamp`]: one `Instant`, so stamps taken on
/// different threads compare.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// Now on the trace clock (`CLOCK_MONOTONIC`).
#[inline]
pub fn now() -> Stamp {
    let origin = *ORIGIN.get_or_init(Instant::now);
    (origin.elapsed().as_nanos() as u64).max(1)
}

/// Most sampled frames one session holds between its outbox and its
/// socket. Full policy: a further sample is not traced, and counted as
/// dropped; the bound keeps a backlogged session's tracing state at a few
/// hundred bytes.
pub const MARKS_PER_SESSION: usize = 4;

/// Largest value a stage records, ns (a minute); longer ones are clamped.
const MAX_NS: u64 = 60_000_000_000;

/// Significant figures of each stage's histogram: 1 % resolution, about
/// 30 KiB per stage.
const SIGFIGS: u8 = 2;

/// The quantiles each stage reports.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// The feed's stamps of one sampled tick, carried through the ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeedStamps {
    /// The socket read that brought it (0: no read, a generated tick).
    pub read: Stamp,
    /// Normalized, about to be pushed into the ring.
    pub pushed: Stamp,
}

/// One sampled frame on its way to one subscriber: which frame it is, and
/// every stamp taken so far. `Copy`, so it moves with its frame (in the
/// session's outbox, then its writer) without an allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// The frame's identity: the address one past its last byte. A write
    /// that advances a partly written frame keeps it, and no two live
    /// frames share it.
    pub frame_end: usize,
    /// See [`FeedStamps::read`].
    pub read: Stamp,
    /// See [`FeedStamps::pushed`].
    pub pushed: Stamp,
    /// Popped by the engine.
    pub popped: Stamp,
    /// Staged for every subscriber.
    pub fanned: Stamp,
    /// Moved to this subscriber's outbox.
    pub flushed: Stamp,
    /// Taken by this subscriber's writer.
    pub taken: Stamp,
}

/// The identity [`Sample::frame_end`] gives `frame`.
#[inline]
pub fn frame_end(frame: &[u8]) -> usize {
    frame.as_ptr() as usize + frame.len()
}

/// A stage of a tick's way, the `stage` label of `tickcast_trace_stage_ns`
/// (see the module doc's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Feed read to pushed.
    FeedParse,
    /// Pushed to popped.
    RingWait,
    /// Popped to staged for every subscriber.
    Fanout,
    /// Staged to in the subscriber's outbox.
    FlushWait,
    /// In the outbox to taken by the writer.
    WriterWake,
    /// Taken to the write that finished it returned.
    SocketWrite,
    /// Feed read to the write that finished it returned.
    Total,
}

impl Stage {
    /// Every stage, in pipeline order, `Total` last.
    pub const ALL: [Stage; 7] = [
        Stage::FeedParse,
        Stage::RingWait,
        Stage::Fanout,
        Stage::FlushWait,
        Stage::WriterWake,
        Stage::SocketWrite,
        Stage::Total,
    ];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Stage::FeedParse => "feed_parse",
            Stage::RingWait => "ring_wait",
            Stage::Fanout => "fanout",
            Stage::FlushWait => "flush_wait",
            Stage::WriterWake => "writer_wake",
            Stage::SocketWrite => "socket_write",
            Stage::Total => "total",
        }
    }
}

impl Sample {
    /// Each stage's duration for a write that finished at `written`, in
    /// [`Stage::ALL`] order. A stage whose clock went backwards (it
    /// cannot, with one monotonic clock; a bug would) counts 0.
    pub fn stages(&self, written: Stamp) -> [u64; 7] {
        let read = if self.read == 0 { self.pushed } else { self.read };
        let points = [read, self.pushed, self.popped, self.fanned, self.flushed, self.taken, written];
        let mut out = [0u64; 7];
        for (i, pair) in points.windows(2).enumerate() {
            out[i] = pair[1].saturating_sub(pair[0]);
        }
        // The total is the sum of the stages, so they add up exactly.
        out[6] = out[..6].iter().sum();
        out
    }
}

/// Each stage's distribution and exact sum, over delivered samples.
struct Stages {
    histograms: Vec<Histogram<u64>>,
    sums: [u64; 7],
}

impl Stages {
    fn new() -> Stages {
        let histograms = Stage::ALL
            .iter()
            .map(|_| Histogram::new_with_bounds(1, MAX_NS, SIGFIGS).expect("constant, valid bounds"))
            .collect();
        Stages { histograms, sums: [0; 7] }
    }

    fn record(&mut self, durations: &[u64; 7]) {
        for (i, &ns) in durations.iter().enumerate() {
            self.histograms[i].saturating_record(ns.clamp(1, MAX_NS));
            self.sums[i] = self.sums[i].saturating_add(ns);
        }
    }
}

/// One stage's figures, as `/metrics` and the shutdown table show them.
#[derive(Clone, Debug, PartialEq)]
pub struct StageSummary {
    /// The stage.
    pub stage: Stage,
    /// Delivered samples recorded.
    pub count: u64,
    /// Sum of their durations, ns.
    pub sum_ns: u64,
    /// The value at each of [`QUANTILES`], ns.
    pub quantiles: [u64; 4],
    /// The longest, ns.
    pub max_ns: u64,
}

/// The server's tracer: whether and how often to sample, and what the
/// samples measured. One per server, inside [`crate::metrics::Metrics`]
/// so every stage that stamps already holds it.
pub struct Tracer {
    /// Sample 1 tick in this many per producer; 0: off.
    every: u32,
    /// The distributions, once on. Locked once per delivered sample, never
    /// on an unsampled path nor across an await.
    stages: Option<Mutex<Stages>>,
    /// Ticks the feeds sampled.
    sampled: AtomicU64,
    /// Samples not traced to a socket for a bound (see "Sampling bias").
    dropped: AtomicU64,
}

impl Default for Tracer {
    /// Off.
    fn default() -> Self {
        Tracer::new(0)
    }
}

impl Tracer {
    /// A tracer sampling 1 tick in `every` (0: off).
    pub fn new(every: u32) -> Tracer {
        if every > 0 {
            // Fix the clock's origin before the first stamp.
            let _ = now();
        }
        Tracer {
            every,
            stages: (every > 0).then(|| Mutex::new(Stages::new())),
            sampled: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// 1 in how many ticks is sampled; 0 when off.
    #[inline]
    pub fn every(&self) -> u32 {
        self.every
    }

    /// Whether tracing is on.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.every > 0
    }

    /// Counts one tick sampled by a feed.
    pub fn sampled(&self) {
        self.sampled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` samples not traced to a socket (see "Sampling bias").
    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Ticks sampled so far.
    pub fn sampled_total(&self) -> u64 {
        self.sampled.load(Ordering::Relaxed)
    }

    /// Samples dropped so far.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records one delivered sample whose write returned at `written`.
    pub fn record(&self, sample: &Sample, written: Stamp) {
        if let Some(stages) = &self.stages {
            stages.lock().record(&sample.stages(written));
        }
    }

    /// Every stage's figures, in [`Stage::ALL`] order; empty when off.
    pub fn summaries(&self) -> Vec<StageSummary> {
        let Some(stages) = &self.stages else { return Vec::new() };
        let stages = stages.lock();
        Stage::ALL
            .iter()
            .zip(&stages.histograms)
            .zip(stages.sums)
            .map(|((&stage, h), sum_ns)| StageSummary {
                stage,
                count: h.len(),
                sum_ns,
                quantiles: QUANTILES.map(|q| if h.is_empty() { 0 } else { h.value_at_quantile(q) }),
                max_ns: if h.is_empty() { 0 } else { h.max() },
            })
            .collect()
    }

    /// The summaries as a text table in µs, for the log at shutdown;
    /// `None` when off.
    pub fn table(&self) -> Option<String> {
        use std::fmt::Write as _;
        if !self.enabled() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        let mut out = format!(
            "latency trace, 1 tick in {} ({} sampled, {} dropped), µs per delivered message:\n\
             {:<13}{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
            self.every,
            self.sampled_total(),
            self.dropped_total(),
            "stage",
            "count",
            "mean",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max"
        );
        for s in self.summaries() {
            let mean = if s.count == 0 { 0.0 } else { us(s.sum_ns) / s.count as f64 };
            let [p50, p90, p99, p999] = s.quantiles.map(us);
            let _ = writeln!(
                out,
                "{:<13}{:>9}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}",
                s.stage.name(),
                s.count,
                mean,
                p50,
                p90,
                p99,
                p999,
                us(s.max_ns)
            );
        }
        Some(out)
    }
}

/// Samples on their way through one session: in its outbox, then held by
/// its writer until the write that finishes each frame. Bounded by
/// [`MARKS_PER_SESSION`]; empty (and unallocated) while tracing is off.
#[derive(Debug, Default)]
pub struct Marks(Vec<Sample>);

impl Marks {
    /// Whether no sample is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds `sample`; gives it back when [`MARKS_PER_SESSION`] are held.
    pub fn push(&mut self, sample: Sample) -> Result<(), Sample> {
        if self.0.len() >= MARKS_PER_SESSION {
            return Err(sample);
        }
        self.0.push(sample);
        Ok(())
    }

    /// Moves every sample into `into`, stamping each `taken` now (one
    /// clock read); returns how many did not fit there (dropped).
    pub fn take_into(&mut self, into: &mut Marks) -> u64 {
        let taken = now();
        let mut dropped = 0;
        for mut sample in self.0.drain(..) {
            sample.taken = taken;
            if into.push(sample).is_err() {
                dropped += 1;
            }
        }
        dropped
    }

    /// Lets go of every sample (their frames were dropped); returns how
    /// many.
    pub fn clear(&mut self) -> u64 {
        let n = self.0.len() as u64;
        self.0.clear();
        n
    }

    /// Of the frames a write finished (`finished`: each frame's
    /// [`frame_end`]), records every held sample's, as written at `now`,
    /// and lets go of it.
    pub fn finish(&mut self, finished: impl Iterator<Item = usize>, tracer: &Tracer) {
        let mut written = None;
        for end in finished {
            if let Some(i) = self.0.iter().position(|s| s.frame_end == end) {
                let at = *written.get_or_insert_with(now);
                tracer.record(&self.0.swap_remove(i), at);
                if self.0.is_empty() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(frame_end: usize) -> Sample {
        Sample { frame_end, read: 100, pushed: 150, popped: 400, fanned: 500, flushed: 1500, taken: 1600 }
    }

    #[test]
    fn stages_add_up_to_the_total_and_a_generated_tick_has_no_parse_time() {
        let s = sample(1);
        assert_eq!(s.stages(2000), [50, 250, 100, 1000, 100, 400, 1900]);
        let generated = Sample { read: 0, ..s };
        assert_eq!(generated.stages(2000), [0, 250, 100, 1000, 100, 400, 1850]);
        // A clock that went backwards counts 0, never wraps.
        let odd = Sample { taken: 1400, ..s };
        assert_eq!(odd.stages(1300)[4..], [0, 0, 1400]);
    }

    #[test]
    fn the_recorder_reports_counts_sums_and_quantiles_per_stage() {
        let t = Tracer::new(10);
        assert_eq!(t.every(), 10);
        for i in 0..1000u64 {
            // socket_write takes i µs: 0..999.
            t.record(&sample(1), 1600 + i * 1000);
        }
        let by: Vec<StageSummary> = t.summaries();
        assert_eq!(by.len(), Stage::ALL.len());
        assert!(by.iter().all(|s| s.count == 1000), "every stage recorded per delivery");
        let write = &by[Stage::SocketWrite as usize];
        assert_eq!(write.stage, Stage::SocketWrite);
        assert_eq!(write.sum_ns, (0..1000u64).map(|i| i * 1000).sum::<u64>());
        // 1 % resolution.
        let [p50, _, p99, _] = write.quantiles;
        assert!((495_000..=505_000).contains(&p50), "{p50}");
        assert!((980_000..=1_000_000).contains(&p99), "{p99}");
        let total = &by[Stage::Total as usize];
        assert_eq!(total.sum_ns, by[..6].iter().map(|s| s.sum_ns).sum::<u64>(), "the stages add up");
        let table = t.table().expect("on");
        assert!(table.contains("socket_write") && table.contains("p99.9"), "{table}");
    }

    #[test]
    fn off_records_nothing_and_reports_nothing() {
        let t = Tracer::default();
        assert!(!t.enabled());
        t.record(&sample(1), 2000);
        assert!(t.summaries().is_empty());
        assert_eq!(t.table(), None);
    }

    #[test]
    fn marks_are_bounded_and_found_by_the_frame_a_write_finished() {
        let t = Tracer::new(1);
        let mut outbox = Marks::default();
        for end in 1..=MARKS_PER_SESSION {
            assert!(outbox.push(sample(end)).is_ok());
        }
        assert_eq!(outbox.push(sample(99)), Err(sample(99)), "full: given back");
        let mut writer = Marks::default();
        writer.push(sample(50)).unwrap();
        assert_eq!(outbox.take_into(&mut writer), 1, "one over the writer's bound");
        assert!(outbox.is_empty());
        assert_eq!(writer.len(), MARKS_PER_SESSION);
        // A write finishing frames 7, 2 and 50 records two samples.
        writer.finish([7, 2, 50].into_iter(), &t);
        assert_eq!(writer.len(), MARKS_PER_SESSION - 2);
        assert_eq!(t.summaries()[0].count, 2);
        assert_eq!(writer.clear(), 2);
    }

    #[test]
    fn the_clock_is_monotonic_and_never_zero() {
        let a = now();
        let b = now();
        assert!(a >= 1 && b >= a);
        let frame = [1u8, 2, 3];
        assert_eq!(frame_end(&frame), frame.as_ptr() as usize + 3);
        assert_eq!(frame_end(&frame[1..]), frame_end(&frame), "advancing keeps the identity");
    }
}

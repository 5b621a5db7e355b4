//! The state every task of a run shares: the measuring window's switch,
//! the stop flag, and the figures the tasks add to.
//!
//! Subscribers touch it on their hot path: they read `measuring` per
//! message and add to the figures in batches ([`crate::tally`]), so the
//! tasks rarely contend for a lock or a cache line.
//!
//! Imports: hdrhistogram and parking_lot only.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Highest latency the histogram holds, µs (a minute); higher samples are
/// recorded as this.
const MAX_LATENCY_US: u64 = 60_000_000;

/// State every task of a run shares.
pub struct Shared {
    /// The measured window is open: healthy subscribers count what they
    /// receive and record its latency.
    pub measuring: AtomicBool,
    /// The run is over: every task stops at its next check.
    pub stop: AtomicBool,
    /// Market messages healthy subscribers received in the window.
    pub delivered: AtomicU64,
    /// Seq gaps or repeats healthy subscribers saw (must be 0).
    pub seq_errors: AtomicU64,
    /// Healthy subscribers subscribed and reading.
    pub connected: AtomicU64,
    /// Latency samples of the window, µs.
    pub histogram: Mutex<Histogram<u64>>,
    /// Latency is measured from `ts_event` (the bench publishes and stamps
    /// its send time) rather than the server's `ts_ingest`.
    pub from_event: bool,
    /// `conflated` messages seen by healthy subscribers.
    pub healthy_conflated: AtomicU64,
    /// When the bench started: the origin of every timestamp it reports.
    pub started: Instant,
    /// Stalled subscribers connected and subscribed.
    pub stalled_connected: AtomicU64,
    /// What the slow readers saw.
    pub slow: SlowStats,
    /// With `--rss-every`: `[seconds since started, RSS bytes]` samples.
    pub rss: Mutex<Vec<[f64; 2]>>,
    /// Ticks the bench's publisher has written.
    pub sent: AtomicU64,
    /// Why the publisher stopped before the run did, if it did.
    pub publish_error: Mutex<Option<anyhow::Error>>,
}

impl Shared {
    /// Figures at zero, outside the window; `from_event`: latency is
    /// measured from `ts_event` (the bench publishes) instead of `ts_ingest`.
    pub fn new(from_event: bool) -> anyhow::Result<Shared> {
        Ok(Shared {
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            delivered: AtomicU64::new(0),
            seq_errors: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            histogram: Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?),
            from_event,
            healthy_conflated: AtomicU64::new(0),
            started: Instant::now(),
            stalled_connected: AtomicU64::new(0),
            slow: SlowStats::default(),
            rss: Mutex::new(Vec::new()),
            sent: AtomicU64::new(0),
            publish_error: Mutex::new(None),
        })
    }
}

/// What the slow readers saw, summed over all of them.
#[derive(Default)]
pub struct SlowStats {
    /// Slow readers connected and subscribed.
    pub connected: AtomicU64,
    /// Bytes of frames they read.
    pub bytes: AtomicU64,
    /// Market messages (trade, quote, book) they received.
    pub market: AtomicU64,
    /// Snapshots they received (first ones and recovery ones).
    pub snapshots: AtomicU64,
    /// `conflated` messages they received.
    pub conflated: AtomicU64,
    /// Updates those `conflated` messages said they missed.
    pub skipped: AtomicU64,
    /// Breaks of the slow-consumer contract they saw (must be 0).
    pub seq_errors: AtomicU64,
    /// Seconds since the bench started at which the server closed one
    /// with 1008.
    pub disconnects: Mutex<Vec<f64>>,
}

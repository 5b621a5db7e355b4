//! A healthy subscriber's running figures: its per-symbol seq check, and
//! latency samples not yet merged into the shared histogram (merged in
//! batches, so subscribers rarely contend for its lock).
//!
//! Imports: `tickcast_client::SeqTracker` (the seq check every client
//! needs) and [`crate::shared`] (where the figures go).

use std::sync::atomic::Ordering;

use tickcast_client::{SeqEvent, SeqTracker};

use crate::shared::Shared;

/// Latency samples a subscriber keeps before merging them.
const BATCH: usize = 1024;

/// A healthy subscriber's seqs and unmerged figures.
pub struct Tally {
    /// A subscriber has a handful of symbols: the tracker scans them.
    seqs: SeqTracker,
    /// Latency samples of the window not merged yet, µs.
    pending: Vec<u64>,
    /// Market messages of the window not merged yet.
    delivered: u64,
}

impl Tally {
    /// A tally for a subscriber of `symbols` symbols.
    pub fn new(symbols: usize) -> Tally {
        Tally { seqs: SeqTracker::with_capacity(symbols), pending: Vec::with_capacity(BATCH), delivered: 0 }
    }

    /// Sets `sym`'s seq from a snapshot: the next update must follow it.
    /// Snapshots are neither seq-checked nor counted as delivered.
    pub fn baseline(&mut self, sym: &str, seq: u64) {
        self.seqs.snapshot(sym, seq);
    }

    /// Counts one market update received at `now`: its seq must follow the
    /// last one of its symbol (the first one seen sets the baseline), and
    /// inside the window its latency is recorded.
    #[inline]
    pub fn update(&mut self, shared: &Shared, sym: &str, seq: u64, ts_event: u64, now: u64) {
        if let SeqEvent::Gap { .. } = self.seqs.update(sym, seq) {
            shared.seq_errors.fetch_add(1, Ordering::Relaxed);
        }
        if shared.measuring.load(Ordering::Relaxed) {
            self.pending.push(now.saturating_sub(ts_event) / 1000);
            self.delivered += 1;
            if self.pending.len() == self.pending.capacity() {
                self.flush(shared);
            }
        } else if !self.pending.is_empty() {
            self.flush(shared);
        }
    }

    /// Merges the pending samples (µs) and delivered count into the shared
    /// figures.
    pub fn flush(&mut self, shared: &Shared) {
        let mut h = shared.histogram.lock();
        for &v in self.pending.iter() {
            h.saturating_record(v.max(1));
        }
        drop(h);
        self.pending.clear();
        shared.delivered.fetch_add(std::mem::take(&mut self.delivered), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_count_as_seq_errors_and_the_window_gates_latency() {
        let shared = Shared::new(true).expect("histogram");
        let mut tally = Tally::new(2);
        tally.baseline("BTC-USDT-PERP", 10);
        tally.update(&shared, "BTC-USDT-PERP", 11, 0, 5_000);
        tally.update(&shared, "S007", 3, 0, 5_000);
        tally.update(&shared, "S007", 4, 0, 5_000);
        assert_eq!(shared.seq_errors.load(Ordering::Relaxed), 0, "first updates and followers are fine");
        tally.update(&shared, "BTC-USDT-PERP", 99, 0, 5_000);
        assert_eq!(shared.seq_errors.load(Ordering::Relaxed), 1, "a gap is caught");
        tally.flush(&shared);
        assert_eq!(shared.delivered.load(Ordering::Relaxed), 0, "outside the window nothing counts");
        shared.measuring.store(true, Ordering::Relaxed);
        tally.update(&shared, "S007", 5, 1_000, 8_000);
        tally.flush(&shared);
        assert_eq!(shared.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(shared.histogram.lock().max(), 7, "µs from ts_event to receive");
    }
}

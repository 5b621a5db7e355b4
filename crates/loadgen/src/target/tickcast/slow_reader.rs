//! `--slow-readers`: tickcast subscribers to every symbol that read at
//! most `--slow-read-rate` bytes per second, and check what the server
//! promises them: every gap in `seq` is named by a `conflated` message and
//! healed by the snapshot that follows.
//!
//! Imports: `tickcast_client` (the connection and its [`SeqTracker`]),
//! `tickcast::wire` (to read `conflated` messages in full), and the
//! bench's light readers and shared figures.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tickcast::wire::{decode, Encoding, ServerMessage};
use tickcast_client::{Client, SeqEvent, SeqTracker};

use crate::light::decode_light;
use crate::shared::{Shared, SlowStats};

/// Idle time a slow reader may make up for later: after a quiet spell it
/// reads at most this much time's worth of bytes in a burst.
const PACE_SLACK: Duration = Duration::from_millis(100);

/// A slow reader that is ahead of its rate by more than this sleeps; smaller
/// leads are carried over, so the timer's granularity does not matter.
const PACE_SLICE: Duration = Duration::from_millis(10);

/// Reads `client` (subscribed to every symbol) at most `rate` bytes per
/// second until the run stops or the server closes, and checks the
/// slow-consumer contract: per symbol, `seq` goes up by 1 except across a
/// `conflated` entry, which starts right after the last seq received and
/// is followed by a snapshot at its `to_seq`.
pub async fn run(mut client: Client, encoding: Encoding, rate: u64, shared: Arc<Shared>) {
    let stats = &shared.slow;
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let mut seqs = SeqTracker::default();
    let mut pace = Pacer::new(rate);
    while !shared.stop.load(Ordering::Relaxed) {
        let payload = match client.next_payload().await {
            Ok(Ok(p)) => p,
            Ok(Err((code, _))) => {
                if code == 1008 {
                    stats.disconnects.lock().push(shared.started.elapsed().as_secs_f64());
                }
                break;
            }
            Err(_) => break,
        };
        let bytes = frame_len(payload.len());
        stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(light) = decode_light(encoding, &payload) {
            let ok = match &*light.kind {
                "trade" | "quote" | "book" => {
                    stats.market.fetch_add(1, Ordering::Relaxed);
                    // Every symbol's snapshot comes before its updates.
                    seqs.update(&light.sym, light.seq) == SeqEvent::InOrder
                }
                "snapshot" => {
                    stats.snapshots.fetch_add(1, Ordering::Relaxed);
                    // The first one of each symbol, or the one a
                    // `conflated` entry promised.
                    matches!(seqs.snapshot(&light.sym, light.seq), SeqEvent::First | SeqEvent::Recovered)
                }
                // The symbol's state was replaced upstream: its snapshot at
                // this seq comes next, whatever seq came before.
                "reset" => seqs.reset(&light.sym, light.seq) == SeqEvent::Reset,
                "conflated" => {
                    stats.conflated.fetch_add(1, Ordering::Relaxed);
                    conflated(encoding, &payload, &mut seqs, stats)
                }
                _ => true,
            };
            if !ok {
                stats.seq_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        pace.consumed(bytes).await;
    }
}

/// Applies a `conflated` message to a slow reader's seqs and counts the
/// updates it names; false if it cannot be read or an entry does not start
/// right after the last seq received.
fn conflated(encoding: Encoding, payload: &[u8], seqs: &mut SeqTracker, stats: &SlowStats) -> bool {
    let Ok(ServerMessage::Conflated { symbols }) = decode(encoding, payload) else { return false };
    let mut ok = true;
    for s in symbols {
        stats.skipped.fetch_add(s.to_seq.saturating_sub(s.from_seq).saturating_add(1), Ordering::Relaxed);
        ok &= seqs.conflated(&s.sym, s.from_seq, s.to_seq) == SeqEvent::Announced;
    }
    ok
}

/// Bytes a server frame with this payload takes on the wire (unmasked).
fn frame_len(payload: usize) -> u64 {
    let header = match payload {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    };
    (payload as u64).saturating_add(header)
}

/// Keeps a reader at an average byte rate: after consuming bytes it sleeps
/// until the rate allows them, in slices of at least [`PACE_SLICE`], and
/// earns at most [`PACE_SLACK`] of credit while idle.
struct Pacer {
    /// Bytes per second, at least 1.
    rate: u64,
    /// When the bytes consumed so far are allowed at `rate`.
    due: Instant,
}

impl Pacer {
    fn new(rate: u64) -> Pacer {
        Pacer { rate: rate.max(1), due: Instant::now() }
    }

    /// Accounts for `bytes` just read, and sleeps if that put the reader
    /// ahead of its rate by more than a slice.
    async fn consumed(&mut self, bytes: u64) {
        let now = Instant::now();
        if let Some(floor) = now.checked_sub(PACE_SLACK) {
            self.due = self.due.max(floor);
        }
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.rate);
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.due = self.due.checked_add(wait).unwrap_or(self.due);
        if self.due > now + PACE_SLICE {
            tokio::time::sleep_until(self.due.into()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickcast::wire::{encode_payload, ResetReason, Skipped};

    #[test]
    fn conflated_messages_are_read_and_checked() {
        let skipped = Skipped { sym: "AAPL".into(), from_seq: 3, to_seq: 9, trades: 1, quotes: 5, books: 1 };
        let msg = ServerMessage::Conflated { symbols: vec![skipped] };
        for encoding in Encoding::ALL {
            let mut buf = Vec::new();
            encode_payload(encoding, &msg, &mut buf);
            let light = decode_light(encoding, &buf).unwrap_or_else(|| panic!("{encoding:?} light reader failed"));
            assert_eq!(&*light.kind, "conflated", "{encoding:?}");
            let stats = SlowStats::default();
            let mut seqs = SeqTracker::default();
            seqs.snapshot("AAPL", 2);
            assert!(conflated(encoding, &buf, &mut seqs, &stats), "{encoding:?}");
            assert_eq!(stats.skipped.load(Ordering::Relaxed), 7, "{encoding:?}");
            assert_eq!(seqs.last("AAPL"), Some(9), "{encoding:?}");
            // Named again before its recovery snapshot: a broken promise.
            assert!(!conflated(encoding, &buf, &mut seqs, &stats), "{encoding:?}");
            assert!(!conflated(encoding, b"\x00garbage", &mut seqs, &stats), "{encoding:?}");
            assert_eq!(seqs.snapshot("AAPL", 9), SeqEvent::Recovered, "{encoding:?}");
        }
    }

    #[test]
    fn reset_messages_are_read_light() {
        let msg = ServerMessage::reset("AAPL", 1500, ResetReason::Epoch);
        for encoding in Encoding::ALL {
            let mut buf = Vec::new();
            encode_payload(encoding, &msg, &mut buf);
            let light = decode_light(encoding, &buf).unwrap_or_else(|| panic!("{encoding:?} light reader failed"));
            assert_eq!((&*light.kind, &*light.sym, light.seq), ("reset", "AAPL", 1500), "{encoding:?}");
        }
    }

    #[test]
    fn frame_len_counts_the_header() {
        assert_eq!(frame_len(0), 2);
        assert_eq!(frame_len(125), 127);
        assert_eq!(frame_len(126), 130);
        assert_eq!(frame_len(70_000), 70_010);
    }
}

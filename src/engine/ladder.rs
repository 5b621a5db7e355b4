//! The slow-consumer ladder (the module doc's "Slow consumers: the
//! ladder"): [`SlowConsumerPolicy`], the one `Missed` record a conflating
//! session keeps per held symbol, recovery (a `conflated` message, then
//! fresh snapshots), and closing a session that cannot keep up with 1008.
//!
//! A session starts conflating in `Engine::flush` (`pacing.rs`), where its
//! queue is looked at anyway; `Engine::publish` holds its updates back
//! with [`Slot::hold`](super::slot::Slot::hold).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::publish::stage;
use super::slot::Slot;
use super::topic::SlotId;
use super::Engine;
use crate::model::{now_ns, UpdateKind};
use crate::wire::{close_code, close_frame, encode_frame, ServerMessage, Skipped};

/// How often the engine looks at every session for the stall timeout.
/// Sessions that get data are checked at every flush anyway; the sweep
/// catches one whose symbols went quiet while bytes sat unread (and stops
/// counting it as active for the write budget).
pub(super) const STALL_SWEEP: Duration = Duration::from_millis(100);

/// When the engine gives up on a subscriber. Checked where frames are
/// staged, once per flush, from the session's exact queued-byte count and
/// its writer's last progress; nothing here waits on a socket.
#[derive(Clone, Copy, Debug)]
pub struct SlowConsumerPolicy {
    /// Queued bytes above which a session stops getting every update and
    /// conflates (or is closed, if it chose
    /// [`SlowMode::Disconnect`](crate::outbox::SlowMode::Disconnect)).
    pub conflate_above: usize,
    /// Queued bytes (not yet accepted by the kernel) above which the
    /// session is closed with 1008 "slow consumer" and its queue freed.
    pub disconnect_above: usize,
    /// A session with bytes queued whose writer made no progress for this
    /// long is closed the same way.
    pub slow_timeout: Duration,
}

impl SlowConsumerPolicy {
    /// Whether a session with `queued` bytes that last made progress at
    /// `last_progress_ns` has stalled past `--slow-timeout` by `now_ns`;
    /// returns how long it has been stalled, in ns.
    #[inline]
    pub(super) fn stalled(&self, queued: usize, last_progress_ns: u64, now_ns: u64) -> (bool, u64) {
        let stalled_ns = now_ns.saturating_sub(last_progress_ns);
        (queued > 0 && stalled_ns > self.slow_timeout.as_nanos() as u64, stalled_ns)
    }
}

/// One symbol's updates held back from a conflating session.
pub(super) struct Missed {
    /// The symbol's topic.
    topic: u32,
    /// The subscription's book depth: the recovery snapshot's.
    depth: usize,
    /// Seq of the first update held, the start of the `conflated` range.
    from_seq: u64,
    /// Seq of the last update held: the snapshot that ends it is at this seq.
    to_seq: u64,
    /// Held updates by [`UpdateKind`] index.
    counts: [u64; 3],
}

impl Slot {
    /// Holds back an update of `topic` if this session is conflating it.
    /// Returns whether it was held (and must not be staged).
    #[inline]
    pub(super) fn hold(&mut self, topic: u32, seq: u64, kind: UpdateKind, depth: usize) -> bool {
        if let Some(&i) = self.missed_at.get(&topic) {
            let m = &mut self.missed[i];
            m.to_seq = seq;
            m.counts[kind as usize] += 1;
            return true;
        }
        if !self.conflating {
            return false;
        }
        let mut counts = [0; 3];
        counts[kind as usize] = 1;
        self.missed_at.insert(topic, self.missed.len());
        self.missed.push(Missed { topic, depth, from_seq: seq, to_seq: seq, counts });
        true
    }

    /// Forgets the held updates of `topic` (it was unsubscribed).
    pub(super) fn forget(&mut self, topic: u32) {
        if let Some(i) = self.missed_at.remove(&topic) {
            self.missed.swap_remove(i);
            if let Some(moved) = self.missed.get(i) {
                self.missed_at.insert(moved.topic, i);
            }
        }
    }
}

impl Engine {
    /// Closes a session that cannot keep up: 1008 "slow consumer", its
    /// queued data dropped at once, its subscriptions removed so nothing
    /// more is staged for it. The session's task then ends and deregisters.
    pub(super) fn disconnect_slow(&mut self, slot: SlotId, queued: usize, stalled_ns: u64) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        s.staged.clear();
        s.staged_bytes = 0;
        s.dirty = false;
        s.trace = Default::default();
        self.paces[slot as usize].urgent = false;
        s.conflating = false;
        s.missed.clear();
        s.missed_at.clear();
        if std::mem::take(&mut s.behind) {
            self.behind.retain(|&b| b != slot);
        }
        let outbox = s.outbox.clone();
        outbox.set_conflating(false);
        // It may well come back (and resume): its history is held.
        self.unsubscribe_all(slot, true);
        outbox.close(close_frame(close_code::POLICY, "slow consumer"));
        self.metrics.slow_disconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            session = outbox.id,
            queued_bytes = queued,
            stalled_ms = stalled_ns / 1_000_000,
            "closed slow consumer (1008)"
        );
    }

    /// Closes every session that has bytes queued and whose socket has
    /// taken none of them for `--slow-timeout` (one atomic load or two per
    /// session, every [`STALL_SWEEP`]), and stops counting sessions not
    /// flushed since the last sweep as active.
    pub(super) fn sweep_stalled(&mut self) {
        let now_ns = now_ns();
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            let Some(s) = self.slots[slot].as_mut() else { continue };
            // A session whose symbols went quiet is not flushed, so its
            // rate is not updated there: it stops counting as active here.
            if s.active && now.saturating_duration_since(s.last_flush) >= STALL_SWEEP {
                s.active = false;
                self.active -= 1;
            }
            let queued = s.outbox.queued_bytes();
            let (too_slow, stalled_ns) = self.slow.stalled(queued, s.outbox.last_progress_ns(), now_ns);
            if too_slow && !s.outbox.is_closing() {
                self.dirty.retain(|&d| d != slot as SlotId);
                self.disconnect_slow(slot as SlotId, queued, stalled_ns);
            }
        }
    }

    /// Looks at every session that is behind: closes it if it made no
    /// progress for `--slow-timeout`, and once its queue has drained to
    /// half of `--conflate-above`, releases held symbols: one `conflated`
    /// message naming them and their skipped seq ranges, then a snapshot of
    /// each. Releases stop at about a quarter of the mark per pass; the
    /// rest wait for the next drain.
    pub(super) fn recover(&mut self) {
        let now = self.now;
        let now_ns = now_ns();
        let low_water = self.slow.conflate_above / 2;
        // A quarter of the mark per release: low water plus one release
        // stays under the mark, so recovery itself never re-triggers it.
        let budget = self.slow.conflate_above / 4;
        let mut i = 0;
        while i < self.behind.len() {
            let slot = self.behind[i];
            let Some(s) = self.slots[slot as usize].as_mut() else {
                self.behind.swap_remove(i);
                continue;
            };
            let queued = s.outbox.queued_bytes();
            let (too_slow, stalled_ns) = self.slow.stalled(queued, s.outbox.last_progress_ns(), now_ns);
            if too_slow {
                self.disconnect_slow(slot, queued, stalled_ns);
                continue; // disconnect_slow removed it from `behind`.
            }
            if queued + s.staged_bytes > low_water {
                i += 1;
                continue;
            }
            s.conflating = false;
            let mut skipped = Vec::new();
            let mut snapshots = Vec::new();
            let mut bytes = 0;
            while bytes < budget {
                let Some(m) = s.missed.pop() else { break };
                s.missed_at.remove(&m.topic);
                let topic = &self.topics[m.topic as usize];
                debug_assert_eq!(topic.state.seq, m.to_seq, "a held symbol's last update is held too");
                let frame = encode_frame(s.encoding, &topic.snapshot(m.depth), &mut self.scratch);
                bytes += frame.len();
                snapshots.push(frame);
                skipped.push(Skipped {
                    sym: std::borrow::Cow::Borrowed(&topic.sym),
                    from_seq: m.from_seq,
                    to_seq: m.to_seq,
                    trades: m.counts[UpdateKind::Trade as usize],
                    quotes: m.counts[UpdateKind::Quote as usize],
                    books: m.counts[UpdateKind::Book as usize],
                });
            }
            if !skipped.is_empty() {
                let n = snapshots.len() as u64;
                let head = encode_frame(s.encoding, &ServerMessage::Conflated { symbols: skipped }, &mut self.scratch);
                let pace = &mut self.paces[slot as usize];
                stage(s, &mut self.dirty, pace, slot, head, now);
                for frame in snapshots {
                    stage(s, &mut self.dirty, pace, slot, frame, now);
                }
                pace.urgent = true;
                self.urgent = true;
                self.metrics.conflated_messages.fetch_add(1, Ordering::Relaxed);
                self.metrics.snapshots_sent.fetch_add(n, Ordering::Relaxed);
            }
            if s.missed.is_empty() {
                s.behind = false;
                s.outbox.set_conflating(false);
                self.behind.swap_remove(i);
                tracing::debug!(session = s.outbox.id, "slow consumer: caught up");
            } else {
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::*;
    use crate::outbox::{Outbox, SlowMode};
    use crate::wire::Encoding;

    fn slot() -> Slot {
        Slot {
            outbox: Arc::new(Outbox::new(1, Encoding::Json, SlowMode::Conflate)),
            encoding: Encoding::Json,
            topics: HashMap::new(),
            wildcard: None,
            pending: Default::default(),
            pending_depth: HashMap::new(),
            joins: HashMap::new(),
            joining: false,
            staged: Vec::new(),
            staged_bytes: 0,
            dirty: false,
            trace: Default::default(),
            last_flush: Instant::now(),
            rate_per_ms: 0.0,
            active: false,
            mode: SlowMode::Conflate,
            conflating: false,
            missed: Vec::new(),
            missed_at: HashMap::new(),
            behind: true,
            entitlements: None,
        }
    }

    #[test]
    fn a_conflating_slot_keeps_one_record_per_symbol_with_its_range_and_counts() {
        let mut s = slot();
        assert!(!s.hold(7, 1, UpdateKind::Quote, 10), "not conflating: the update is staged");
        s.conflating = true;
        assert!(s.hold(7, 2, UpdateKind::Quote, 10));
        assert!(s.hold(9, 40, UpdateKind::Trade, 10));
        assert!(s.hold(7, 3, UpdateKind::Book, 10));
        assert!(s.hold(7, 4, UpdateKind::Trade, 10));
        assert_eq!(s.missed.len(), 2);
        let m = &s.missed[s.missed_at[&7]];
        assert_eq!((m.from_seq, m.to_seq, m.counts), (2, 4, [1, 1, 1]));
        // Released from full conflation: held symbols stay held, others flow.
        s.conflating = false;
        assert!(s.hold(9, 41, UpdateKind::Quote, 10));
        assert!(!s.hold(8, 5, UpdateKind::Quote, 10));
        // Unsubscribing forgets a record and keeps the index consistent.
        s.forget(7);
        assert_eq!(s.missed.len(), 1);
        let m = &s.missed[s.missed_at[&9]];
        assert_eq!((m.topic, m.from_seq, m.to_seq, m.counts), (9, 40, 41, [1, 1, 0]));
        s.forget(9);
        assert!(s.missed.is_empty() && s.missed_at.is_empty());
    }
}

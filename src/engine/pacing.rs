//! Write pacing: when a session's staged frames are moved to its outbox,
//! and so how many updates each socket write carries.
//!
//! [`Coalescing`] sets the interval and the write budget across sessions;
//! each session's `WriteGate`, a token bucket in its `Pace`, decides
//! when it is due; `Engine::flush` moves the frames of the sessions that
//! are, checks each against the slow-consumer ladder on the way (see
//! `ladder.rs`), and keeps the count of active sessions the budget is
//! shared by.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Engine;
use crate::model::now_ns;
use crate::outbox::SlowMode;

/// Staged bytes at which a session is flushed at once, whatever its
/// flush interval.
pub(super) const FLUSH_BYTES: usize = 64 * 1024;

/// Writes a session may bank (at least): it is written once per interval
/// on average, and up to this many in a row after a quiet spell. Two absorbs the
/// jitter of a feed that bursts once per interval (a burst a little early
/// is not held for a whole interval), and a session that is touched
/// rarely is written as soon as each burst is in.
const WRITE_BURST: f32 = 2.0;

/// Most time between two writes to one session that the write budget
/// may stretch `--flush-interval` to: the most latency it may add.
pub const MAX_BUDGET_INTERVAL: Duration = Duration::from_millis(10);

/// A session flushed at this many frames per ms or more (on average) is
/// *active*: it counts against the write budget.
const ACTIVE_FRAMES_PER_MS: f32 = 0.1;

/// Time constant of each session's frame-rate average, in ms: long enough
/// to see through a burst, short enough to follow a market that wakes up.
const RATE_TAU_MS: f32 = 10.0;

/// How often busy sessions are written (`--flush-interval`,
/// `--write-budget`). A write costs about the same CPU whatever it carries
/// (mostly the kernel's TCP path; see
/// BENCHMARKS.md#what-one-socket-write-costs), so with many active
/// sessions the interval stretches until their writes fit the budget: each
/// write then carries more updates. See `Engine::flush`.
#[derive(Clone, Copy, Debug)]
pub struct Coalescing {
    /// Least time between two writes to one busy session.
    pub interval: Duration,
    /// Socket writes per second to stay under, across all sessions.
    pub write_budget: u64,
}

impl Coalescing {
    /// The interval for `active` sessions: `interval`, stretched so that
    /// `active` writes per interval fit the budget, up to
    /// [`MAX_BUDGET_INTERVAL`] (never below `interval`).
    #[inline]
    pub fn interval_for(&self, active: usize) -> Duration {
        let fit = Duration::from_secs_f64(active as f64 / self.write_budget.max(1) as f64);
        self.interval.max(fit.min(MAX_BUDGET_INTERVAL))
    }
}

/// When one session is written (see [`Engine::flush`]): a token bucket
/// of up to [`WRITE_BURST`] writes, refilled at one per interval.
///
/// Each session's bucket holds a little more than [`WRITE_BURST`], by its
/// own `phase` in [0, 1). Sessions that fill up in the same quiet spell
/// then still come due at different bursts of the feed: when the interval
/// spans several bursts, each burst is written to a share of the sessions
/// instead of all of them every few bursts, which spreads the writers'
/// work and keeps the queue of writes behind any one burst short.
#[derive(Clone, Copy, Debug)]
struct WriteGate {
    tokens: f32,
    cap: f32,
    refilled: Instant,
}

impl WriteGate {
    /// A full bucket, `phase` over [`WRITE_BURST`].
    fn new(now: Instant, phase: f32) -> WriteGate {
        let cap = WRITE_BURST + phase.clamp(0.0, 0.999);
        WriteGate { tokens: cap, cap, refilled: now }
    }

    fn refill(&mut self, now: Instant, interval: Duration) {
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        self.tokens = if interval.is_zero() {
            self.cap
        } else {
            (self.tokens + elapsed.as_secs_f32() / interval.as_secs_f32()).min(self.cap)
        };
    }

    /// Whether a session whose oldest staged frame dates from `staged_at`
    /// is written now (`Ok`, a write taken from the bucket), or else how
    /// long it may wait at most (`Err`): it is looked at again when the
    /// input next drains, and at that deadline.
    ///
    /// With a write in the bucket it is written once the input is
    /// `drained`, or once its oldest frame has waited an interval (a feed
    /// that never pauses). Without one it waits for a drain after the
    /// bucket has refilled, so that its write still falls at the end of a
    /// burst, together with the others', rather than on its own between
    /// bursts; if the feed stays quiet it is written half an interval
    /// after the refill.
    fn decide(&mut self, now: Instant, interval: Duration, staged_at: Instant, drained: bool) -> Result<(), Duration> {
        self.refill(now, interval);
        let waited = now.saturating_duration_since(staged_at);
        if self.tokens >= 1.0 && (drained || waited >= interval) {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.tokens < 1.0 {
            Err(interval.mul_f32((1.0 - self.tokens).max(0.0)) + interval / 2)
        } else {
            Err(interval.saturating_sub(waited))
        }
    }

    /// A write that could not wait (a reply, a full staging buffer): taken
    /// from the bucket if it holds one.
    fn force(&mut self, now: Instant, interval: Duration) {
        self.refill(now, interval);
        self.tokens = (self.tokens - 1.0).max(0.0);
    }
}

/// A session's write pacing. Kept apart from its [`Slot`](super::slot::Slot), in a dense
/// array by slot id, so that a flush pass can pass over the sessions that
/// are not due without touching their slots and the atomics their writers
/// update (two cache misses per session, most of the engine's own time at
/// 100 sessions when every pass looked at every one).
pub(super) struct Pace {
    gate: WriteGate,
    /// When the oldest frame now staged was staged.
    pub(super) staged_at: Instant,
    /// Write at the next flush pass whatever the gate says: a reply or a
    /// snapshot waits, or the staging buffer is full.
    pub(super) urgent: bool,
}

impl Pace {
    pub(super) fn new(now: Instant, phase: f32) -> Pace {
        Pace { gate: WriteGate::new(now, phase), staged_at: now, urgent: false }
    }
}

impl Engine {
    /// Runs [`flush`](Self::flush) when it can write anyone: the input is
    /// drained after new ticks, a session has a reply waiting, or the
    /// earliest waiting session's deadline has come. Mid-burst passes skip it,
    /// so the dirty sessions are looked at about once per burst, not once
    /// per pass. Returns how long until the next session is due.
    #[inline]
    pub(super) fn maybe_flush(&mut self) -> Option<Duration> {
        let now = Instant::now();
        let drained = self.ring.drained();
        if self.look && !drained {
            // Sessions dirty since this pass are due within an interval
            // even if this burst never ends.
            let by = self.now + self.coalescing.interval_for(self.active);
            self.next_due = Some(self.next_due.map_or(by, |d| d.min(by)));
        }
        let due = (self.look && drained) || self.urgent || self.next_due.is_some_and(|d| now >= d);
        if !due {
            return self.next_due.map(|d| d.saturating_duration_since(now));
        }
        self.look = false;
        self.urgent = false;
        let next = self.flush(now, drained);
        self.next_due = next.map(|wait| now + wait);
        next
    }

    /// Moves staged frames to the outbox of every dirty session that is
    /// due. A session is written at once when it has a reply waiting or
    /// [`FLUSH_BYTES`] staged; otherwise it is paced by its [`WriteGate`]:
    /// once per interval on average, at the moment the input is `drained`
    /// (no tick waiting, no feed mid-burst), so that a burst reaches each
    /// subscriber whole, in one write, as soon as it is in. A feed that
    /// never pauses still gets each session written once its oldest frame
    /// has waited an interval. The interval is `--flush-interval`,
    /// stretched by the write budget when many sessions are active
    /// ([`Coalescing::interval_for`]). Returns how long until the next
    /// session is due, if any is waiting.
    fn flush(&mut self, now: Instant, drained: bool) -> Option<Duration> {
        if self.dirty.is_empty() {
            return None;
        }
        let mut next: Option<Duration> = None;
        let mut i = 0;
        let now_ns = now_ns();
        let interval = self.coalescing.interval_for(self.active);
        while i < self.dirty.len() {
            let slot = self.dirty[i];
            let pace = &mut self.paces[slot as usize];
            let write = if pace.urgent {
                pace.gate.force(now, interval);
                Ok(())
            } else {
                pace.gate.decide(now, interval, pace.staged_at, drained)
            };
            if let Err(wait) = write {
                next = Some(next.map_or(wait, |n| n.min(wait)));
                i += 1;
                continue;
            }
            pace.urgent = false;
            self.dirty.swap_remove(i);
            let Some(s) = self.slots[slot as usize].as_mut() else { continue };
            // The slow-consumer checks run where the session is written: at
            // most an interval after it fell behind.
            let queued = s.outbox.queued_bytes();
            let (too_slow, stalled_ns) = self.slow.stalled(queued, s.outbox.last_progress_ns(), now_ns);
            let too_big = queued + s.staged_bytes > self.slow.disconnect_above;
            // Only what the socket has not taken counts toward the mark: a
            // busy but healthy session may stage a full batch at once.
            let over_mark = !s.conflating && queued > self.slow.conflate_above;
            if too_big || too_slow || (over_mark && s.mode == SlowMode::Disconnect) {
                self.disconnect_slow(slot, queued, stalled_ns);
                continue;
            }
            if over_mark {
                // What is staged still goes out (it is in order); from now
                // on updates are held instead.
                s.conflating = true;
                s.outbox.set_conflating(true);
                if !s.behind {
                    s.behind = true;
                    self.behind.push(slot);
                }
                self.metrics.conflation_episodes.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(session = s.outbox.id, queued_bytes = queued, "slow consumer: conflating");
            }
            let active = s.rate_per_ms >= ACTIVE_FRAMES_PER_MS;
            if s.active != active {
                s.active = active;
                if active {
                    self.active += 1;
                } else {
                    self.active -= 1;
                }
            }
            // Exponentially decaying frame count: each frame adds 1/tau,
            // and the average decays by since/tau.
            let since_ms = now.saturating_duration_since(s.last_flush).as_secs_f32() * 1000.0;
            let decay = (since_ms / RATE_TAU_MS).min(1.0);
            s.rate_per_ms += s.staged.len() as f32 / RATE_TAU_MS.max(since_ms) - decay * s.rate_per_ms;
            if s.trace.is_set() {
                let tracer = &self.metrics.trace;
                self.trace.flush_marked(&mut s.trace, &s.outbox, &mut s.staged, s.staged_bytes, now_ns, tracer);
            } else {
                s.outbox.push_data(&mut s.staged, s.staged_bytes, now_ns);
            }
            s.staged_bytes = 0;
            s.dirty = false;
            s.last_flush = now;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_budget_stretches_the_interval_up_to_its_cap() {
        let ms = Duration::from_millis;
        let c = Coalescing { interval: ms(1), write_budget: 100_000 };
        assert_eq!(c.interval_for(0), ms(1));
        assert_eq!(c.interval_for(100), ms(1), "100 sessions at 1 ms fit 100k writes/s");
        assert_eq!(c.interval_for(500), ms(5));
        assert_eq!(c.interval_for(1_000), ms(10));
        assert_eq!(c.interval_for(50_000), MAX_BUDGET_INTERVAL, "capped");
        let slow = Coalescing { interval: ms(20), write_budget: 100_000 };
        assert_eq!(slow.interval_for(50_000), ms(20), "never below --flush-interval");
    }

    #[test]
    fn the_write_gate_writes_when_the_input_drains_at_most_once_per_interval_on_average() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let interval = ms(3);
        let mut gate = WriteGate::new(t0, 0.0);
        // A full bucket: written as soon as the input is drained, twice.
        assert_eq!(gate.decide(t0, interval, t0, false), Err(interval), "mid-burst: waits for the drain");
        assert_eq!(gate.decide(t0, interval, t0, true), Ok(()));
        assert_eq!(gate.decide(t0 + ms(1), interval, t0, true), Ok(()));
        // Empty now: the next write waits for the refill (2 ms here), then
        // for the next drain, and at most half an interval more.
        let wait = gate.decide(t0 + ms(1), interval, t0 + ms(1), true).unwrap_err();
        assert_eq!(wait.as_micros(), 3_500, "{wait:?}");
        assert!(gate.decide(t0 + ms(2), interval, t0 + ms(1), true).is_err());
        // One interval after the second write, one write is back.
        assert_eq!(gate.decide(t0 + ms(4), interval, t0 + ms(2), true), Ok(()));
        // Over a long busy stretch: one write per interval.
        let mut writes = 0;
        for k in 5..305 {
            if gate.decide(t0 + ms(k), interval, t0 + ms(k), true).is_ok() {
                writes += 1;
            }
        }
        assert!((99..=101).contains(&writes), "{writes} writes in 300 ms at one per 3 ms");
        // A feed that never pauses: written once the oldest frame waited an interval.
        let t1 = t0 + ms(1000);
        let mut gate = WriteGate::new(t1, 0.0);
        assert_eq!(gate.decide(t1 + ms(2), interval, t1, false), Err(ms(1)));
        assert_eq!(gate.decide(t1 + ms(3), interval, t1, false), Ok(()));
        // Bursts once per interval, each up to a fifth of it early or late:
        // every burst is written, none is held for the next.
        let t2 = t0 + ms(2000);
        let mut gate = WriteGate::new(t2, 0.0);
        let us = Duration::from_micros;
        for k in 0..200u64 {
            let at = t2 + us(1000 * k + [200, 400, 0, 400, 0, 200][k as usize % 6]);
            assert_eq!(gate.decide(at, ms(1), at, true), Ok(()), "burst {k} at {:?}", at - t2);
        }
        // Interval zero: every pass.
        let mut gate = WriteGate::new(t1, 0.5);
        for _ in 0..10 {
            assert_eq!(gate.decide(t1, Duration::ZERO, t1, true), Ok(()));
        }
    }

    #[test]
    fn sessions_with_different_phases_come_due_at_different_bursts() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let interval = ms(3);
        // Three sessions touched by every 1 ms burst, each with its own phase.
        let mut gates: Vec<WriteGate> = (0..3).map(|i| WriteGate::new(t0, i as f32 / 3.0)).collect();
        let mut per_burst = Vec::new();
        for k in 0..30 {
            let now = t0 + ms(k);
            per_burst
                .push(gates.iter_mut().map(|g| g.decide(now, interval, now, true).is_ok()).filter(|&ok| ok).count());
        }
        // After the banked writes are spent, one session per burst.
        assert!(per_burst[6..].iter().all(|&n| n == 1), "{per_burst:?}");
        // Whatever its phase, a session touched by two bursts in a row
        // after a quiet spell (its symbols straddle two of the feed's
        // bursts) is written at both.
        for phase in [0.0, 0.5, 0.99] {
            let t1 = t0 + ms(100);
            let mut gate = WriteGate::new(t1, phase);
            for k in [0, 1, 5, 6, 10, 11] {
                assert_eq!(gate.decide(t1 + ms(k), ms(2), t1 + ms(k), true), Ok(()), "phase {phase}, burst at {k} ms");
            }
        }
    }
}

//! The lock-free ring between the feed-ingest thread(s) and the engine.
//!
//! In: normalized [`Tick`]s from feeds. Out: the same ticks, in order per
//! producer, to the single engine thread.
//!
//! The ring is crossbeam's bounded lock-free `ArrayQueue` (we do not write our
//! own: `benches/ring.rs` compares it to a crossbeam-channel baseline), plus a
//! park/unpark handshake so an idle engine sleeps instead of spinning on a
//! 2-core machine.
//!
//! # Bound and full policy
//! The capacity is `--ring-capacity` (default 65,536 ticks). When it is full
//! the producer **waits** (spins briefly, then sleeps in 50 µs steps) until
//! the engine frees a slot: nothing is ever dropped, because a dropped tick
//! would corrupt every client's book. Each time a push finds the ring full it
//! is counted (`tickcast_ring_full_total`) and the feed logs it, rate-limited.
//! Backpressure thus travels upstream: a TCP feed handler sees its socket's
//! send buffer fill.
//!
//! # Bursts
//! Market data comes in bursts: a feed handler's write of many lines, a
//! step of the synthetic market, a stretch of a replay. A producer in the
//! middle of one marks it open ([`begin_burst`](TickRing::begin_burst),
//! [`end_burst`](TickRing::end_burst)), so the engine can tell "the ring is
//! empty for now, more is microseconds away" from "the input is drained"
//! ([`drained`](TickRing::drained)). It writes to subscribers when the
//! input is drained, so a burst that touches a subscriber many times
//! reaches it in one write, and as soon as the burst is in.
//!
//! Imports: [`crate::model`], and [`crate::trace`] for a sampled tick's
//! stamps.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::{self, Thread};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::{Backoff, CachePadded};

use crate::model::{Image, Resync, SymbolId, Tick};
use crate::trace::FeedStamps;

/// What the ring carries to the engine.
///
/// Almost always a [`Tick`] to sequence. A node following a sequencer (an
/// edge, `--feed nats://`) sends ticks that already have their seq, and
/// the sequencer's images of topics it (re-)syncs: an edge never assigns a
/// seq of its own, and an image travels in the same queue as the ticks, so
/// the engine applies it exactly between the ticks before and after it.
#[derive(Debug)]
pub enum Input {
    /// A tick the engine sequences.
    Tick(Tick),
    /// A tick a sequencer already sequenced: published with this seq, which
    /// the edge guarantees is the topic's next.
    Sequenced(Tick, u64),
    /// A sequencer's image of one topic: replaces the topic's state.
    Image(Box<ImageInput>),
    /// A tick to sequence that `--trace-latency` sampled, with the feed's
    /// stamps: the engine stamps it on from there (see [`crate::trace`]).
    Traced(Tick, FeedStamps),
}

/// One topic's new state from a sequencer, and why it is installed.
#[derive(Debug)]
pub struct ImageInput {
    /// The topic.
    pub symbol: SymbolId,
    /// Its state after update `image.seq`.
    pub image: Image,
    /// Why: the engine tells the topic's subscribers (a `reset` notice,
    /// then a fresh snapshot).
    pub cause: Resync,
    /// The sequencer's epoch the image belongs to: the engine's from then
    /// on, which clients resuming by seq name.
    pub epoch: u64,
}

/// Default ring capacity in ticks.
pub const DEFAULT_CAPACITY: usize = 65_536;

/// The push failed because the server is shutting down.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the tick ring is closed: the server is shutting down")]
pub struct Closed;

/// Bounded multi-producer, single-consumer tick ring with a parking consumer.
pub struct TickRing {
    queue: ArrayQueue<Input>,
    /// The engine thread, once it has registered; unparked by producers.
    consumer: OnceLock<Thread>,
    /// True while the consumer is (about to be) parked. Producers read it
    /// after every push; SeqCst fences on both sides order it against the
    /// queue (Dekker-style), and the park has a timeout besides, so a lost
    /// wake-up costs at most one timeout, never a stall.
    consumer_parked: CachePadded<AtomicBool>,
    /// Set at shutdown: producers stop waiting for space.
    closed: AtomicBool,
    /// Pushes that found the ring full (each then waited).
    full_events: CachePadded<AtomicU64>,
    /// Producers in the middle of a burst.
    open_bursts: CachePadded<AtomicUsize>,
}

impl TickRing {
    /// A ring holding at most `capacity` ticks (at least 1).
    pub fn new(capacity: usize) -> TickRing {
        TickRing {
            queue: ArrayQueue::new(capacity.max(1)),
            consumer: OnceLock::new(),
            consumer_parked: CachePadded::new(AtomicBool::new(false)),
            closed: AtomicBool::new(false),
            full_events: CachePadded::new(AtomicU64::new(0)),
            open_bursts: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    /// Pushes without waiting; gives the tick back if the ring is full.
    pub fn try_push(&self, tick: Tick) -> Result<(), Tick> {
        match self.queue.push(Input::Tick(tick)) {
            Ok(()) => {
                self.wake_consumer();
                Ok(())
            }
            Err(Input::Tick(tick)) => Err(tick),
            Err(_) => unreachable!("the queue gives back what it was given"),
        }
    }

    /// Pushes, waiting while the ring is full (see the module doc for the
    /// policy). Returns `Ok(true)` if it had to wait, so the caller can log.
    pub fn push(&self, tick: Tick) -> Result<bool, Closed> {
        let waited = self.push_quiet(tick)?;
        self.wake_consumer();
        Ok(waited)
    }

    /// [`push`](Self::push) without waking the consumer afterwards: for a
    /// producer in a burst (the feeds' `Publisher`), which wakes the
    /// consumer every few ticks and at [`end_burst`](Self::end_burst)
    /// instead of a fence (and maybe an unpark) per tick. The ring's full policy is the
    /// same, and a full ring still wakes the consumer.
    pub fn push_quiet(&self, tick: Tick) -> Result<bool, Closed> {
        self.push_input_quiet(Input::Tick(tick))
    }

    /// [`push_quiet`](Self::push_quiet) for any [`Input`]: an edge's
    /// sequenced ticks and images. Same full policy.
    pub fn push_input_quiet(&self, mut input: Input) -> Result<bool, Closed> {
        let mut waited = false;
        let backoff = Backoff::new();
        loop {
            match self.queue.push(input) {
                Ok(()) => return Ok(waited),
                Err(back) => {
                    input = back;
                    if !waited {
                        waited = true;
                        self.full_events.fetch_add(1, Ordering::Relaxed);
                    }
                    if self.closed.load(Ordering::Acquire) {
                        return Err(Closed);
                    }
                    self.wake_consumer();
                    if backoff.is_completed() {
                        thread::sleep(Duration::from_micros(50));
                    } else {
                        backoff.snooze();
                    }
                }
            }
        }
    }

    /// Takes the oldest input, if any. Only the engine calls this.
    pub fn pop(&self) -> Option<Input> {
        self.queue.pop()
    }

    /// Ticks waiting in the ring now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the ring is empty now.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The bound set at construction.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// How many pushes have found the ring full.
    pub fn full_events(&self) -> u64 {
        self.full_events.load(Ordering::Relaxed)
    }

    /// Marks the ring closed: waiting producers give up with [`Closed`].
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_consumer();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// A producer starts a burst: more ticks follow at once. Each call is
    /// paired with one [`end_burst`](Self::end_burst).
    pub fn begin_burst(&self) {
        self.open_bursts.fetch_add(1, Ordering::SeqCst);
    }

    /// A producer has pushed the last tick of its burst (its input is
    /// drained for now); wakes the consumer.
    pub fn end_burst(&self) {
        self.open_bursts.fetch_sub(1, Ordering::SeqCst);
        self.wake_consumer();
    }

    /// Whether the ring is empty and no producer is in the middle of a
    /// burst: everything that has arrived so far has been taken.
    pub fn drained(&self) -> bool {
        // Bursts first: a tick pushed before its burst ended is then seen
        // in the emptiness check.
        self.open_bursts.load(Ordering::SeqCst) == 0 && self.queue.is_empty()
    }

    /// Registers the calling thread as the consumer that producers unpark.
    pub fn register_consumer(&self) {
        let _ = self.consumer.set(thread::current());
    }

    /// Wakes the consumer if it is parked. Producers call it after a push;
    /// anyone with work for the engine (a subscribe) calls it too.
    pub fn wake_consumer(&self) {
        // Pairs with the fence in `park_consumer`: either the consumer sees
        // our push in its emptiness check, or we see its parked flag.
        fence(Ordering::SeqCst);
        if self.consumer_parked.load(Ordering::Relaxed) {
            if let Some(t) = self.consumer.get() {
                t.unpark();
            }
        }
    }

    /// Parks the consumer for at most `timeout` unless there is work.
    /// `has_other_work` is checked after the parked flag is raised, so work
    /// announced with [`wake_consumer`](Self::wake_consumer) is not missed.
    pub fn park_consumer(&self, timeout: Duration, has_other_work: impl Fn() -> bool) {
        self.consumer_parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.queue.is_empty() && !has_other_work() && !self.is_closed() {
            thread::park_timeout(timeout);
        }
        self.consumer_parked.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Quote, Update};
    use std::sync::Arc;

    fn tick(n: u64) -> Tick {
        Tick {
            symbol: (n % 7) as u32,
            ts_event: n,
            ts_ingest: n,
            update: Update::Quote(Quote { bid: n as f64, bid_sz: 1.0, ask: n as f64 + 1.0, ask_sz: 1.0 }),
        }
    }

    #[test]
    fn full_ring_makes_the_producer_wait_and_counts_it_without_losing_ticks() {
        let ring = Arc::new(TickRing::new(8));
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut waited = 0;
                for n in 0..10_000 {
                    if ring.push(tick(n)).unwrap() {
                        waited += 1;
                    }
                }
                waited
            })
        };
        ring.register_consumer();
        let mut next = 0;
        while next < 10_000 {
            match ring.pop() {
                Some(Input::Tick(t)) => {
                    assert_eq!(t.ts_event, next, "ticks arrive in order, none lost");
                    next += 1;
                }
                None => ring.park_consumer(Duration::from_millis(1), || false),
                Some(other) => panic!("only ticks were pushed: {other:?}"),
            }
        }
        let waited = producer.join().unwrap();
        assert_eq!(ring.full_events(), waited);
        assert!(ring.is_empty());
    }

    #[test]
    fn the_ring_is_drained_only_when_empty_and_no_burst_is_open() {
        let ring = TickRing::new(4);
        assert!(ring.drained());
        ring.begin_burst();
        assert!(!ring.drained(), "a burst is open: more is coming");
        ring.try_push(tick(0)).unwrap();
        ring.end_burst();
        assert!(!ring.drained(), "a tick is waiting");
        ring.pop().unwrap();
        assert!(ring.drained());
    }

    #[test]
    fn closed_ring_releases_a_waiting_producer() {
        let ring = TickRing::new(1);
        ring.try_push(tick(0)).unwrap();
        assert!(ring.try_push(tick(1)).is_err());
        ring.close();
        assert_eq!(ring.push(tick(2)), Err(Closed));
    }
}

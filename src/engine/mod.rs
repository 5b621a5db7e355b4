//! The topic engine: sequences every tick, keeps per-symbol state, encodes
//! each update once per encoding in use, and fans the shared frame out.
//!
//! In: [`Tick`]s from the [`TickRing`] and [`Command`]s from sessions.
//! Out: frames staged into each subscriber's outbox, once per batch.
//!
//! It is one dedicated OS thread that owns every [`Topic`], so the state
//! needs no lock and a snapshot is exactly consistent with a seq: a
//! subscribe is handled between two ticks, its snapshot is staged before
//! any later update, and the session joins the topic's audience in the same
//! step. Updates therefore follow from seq + 1, with no gap and no
//! duplicate.
//!
//! # The hot path
//! Per tick: one topic update, then for each encoding that has subscribers
//! one encode and one frame allocation, then one `Bytes` clone (a reference
//! count) per subscriber into a staging `Vec` whose capacity is reused.
//! Per write of a session (see `Engine::flush`: once the feed's burst is
//! in, and at most once per interval on average): one short lock to move
//! its staged frames to the outbox, and one writer wake-up if the outbox
//! was empty. The engine never touches a socket and never waits on a
//! session, so a slow reader cannot slow it or anyone else.
//!
//! A write costs several µs of CPU whatever it carries (the kernel's TCP
//! path, BENCHMARKS.md), so when to write decides both the CPU per message
//! and the latency. Writing when the input is drained (the ring is empty
//! and no feed is mid-burst, [`TickRing::drained`]) gives each subscriber
//! a whole burst in one write, as soon as the burst is in; writing on a
//! clock instead would split bursts and hold their tails for a tick of it.
//!
//! # Slow consumers: the ladder
//! Checked per session where its frames are staged, once per flush, from
//! the exact count of bytes queued and not yet accepted by its socket
//! ([`Outbox::queued_bytes`]) plus the frames staged for it:
//!
//! 1. At or below `--conflate-above`, every update is delivered.
//! 2. Above it the session is *conflating*: nothing more is staged for it.
//!    Each update of a subscribed symbol only bumps that symbol's one
//!    `Missed` record (seq range and counts by kind); the newest state is
//!    the topic's own, so quotes are replaced, book changes fold into the
//!    book, and trades, which cannot be merged, are counted as dropped.
//!    Once the queue drains to half the mark, the engine stages a
//!    `conflated` message naming each symbol and the seq range skipped,
//!    then a fresh snapshot of each, and live updates resume from the
//!    snapshot's seq + 1. Recovery is released in chunks of about a quarter
//!    of the mark, so a client on thousands of symbols never gets all its
//!    snapshots in one burst; symbols not yet released stay conflated.
//! 3. Above `--disconnect-above`, or with queued bytes and no progress for
//!    `--slow-timeout`, the session is closed with 1008 "slow consumer" and
//!    its queue freed. A client that chose `?slow=disconnect` is closed at
//!    step 2 instead of conflating.
//!
//! # Isolation
//! No slow consumer makes anyone else wait; this is where it is
//! guaranteed:
//! - The ingest thread only waits when the ring is full, which only the
//!   engine's own speed decides.
//! - The engine never waits on a session. Per session it does atomic loads
//!   and, per flush, one `parking_lot` lock on the outbox that the writer
//!   holds only to swap buffers (never across a write or an await).
//!   Holding an update back from a conflating session costs one hash
//!   lookup, about what staging the shared frame for it costs.
//! - Each session has its own writer task, which awaits only its own
//!   socket's writability; a full socket parks that task, not a thread.
//!
//! `tests/slow_consumer.rs` shows it: stalled subscribers are conflated
//! and then dropped while the ring never fills and healthy subscribers get
//! every update in order.
//!
//! # Control before data
//! Acks and errors the engine produces go to the session's control queue,
//! which the writer sends ahead of queued data. A subscribe's ack therefore
//! still comes before its snapshots; an unsubscribe's ack may overtake
//! updates of those symbols that were already queued.
//!
//! # Commands
//! Sessions send commands over an unbounded channel, which is bounded in
//! practice: each session has at most one request in flight (it waits for
//! the engine's answer before reading the next frame), plus its register
//! and deregister.

pub mod topic;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::metrics::Metrics;
use crate::model::{now_ns, SymbolTable, Tick, UpdateKind};
use crate::outbox::{Outbox, SlowMode};
use crate::record::RecordTap;
use crate::ring::TickRing;
use crate::wire::{close_code, close_frame, encode_frame, Encoding, ErrorCode, ServerMessage, Skipped};
use topic::{SlotId, Topic};

/// Most ticks taken from the ring before staged frames are flushed to
/// sessions. Bounds the latency batching adds (a few hundred µs at most)
/// while amortising the per-session lock and wake-up.
pub const MAX_BATCH: usize = 512;

/// Staged bytes at which a session is flushed at once, whatever its
/// flush interval.
const FLUSH_BYTES: usize = 64 * 1024;

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

/// How often busy sessions are written (`--flush-interval`,
/// `--write-budget`). A write costs 5-7 µs of CPU whatever it carries
/// (mostly the kernel's TCP path), so with many active sessions the
/// interval stretches until their writes fit the budget: each write then
/// carries more updates. See `Engine::flush`.
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

/// A session's write pacing. Kept apart from its [`Slot`], in a dense
/// array by slot id, so that a flush pass can pass over the sessions that
/// are not due without touching their slots and the atomics their writers
/// update (two cache misses per session, most of the engine's own time at
/// 100 sessions when every pass looked at every one).
struct Pace {
    gate: WriteGate,
    /// When the oldest frame now staged was staged.
    staged_at: Instant,
    /// Write at the next flush pass whatever the gate says: a reply or a
    /// snapshot waits, or the staging buffer is full.
    urgent: bool,
}

impl Pace {
    fn new(now: Instant, phase: f32) -> Pace {
        Pace { gate: WriteGate::new(now, phase), staged_at: now, urgent: false }
    }
}

/// Time constant of each session's frame-rate average, in ms: long enough
/// to see through a burst, short enough to follow a market that wakes up.
const RATE_TAU_MS: f32 = 10.0;

/// How long an idle engine parks before looking again (it is unparked as
/// soon as a tick or command arrives; this only bounds a lost wake-up).
const IDLE_PARK: Duration = Duration::from_millis(2);

/// How often the engine looks at every session for the stall timeout.
/// Sessions that get data are checked at every flush anyway; the sweep
/// catches one whose symbols went quiet while bytes sat unread (and stops
/// counting it as active for the write budget).
const STALL_SWEEP: Duration = Duration::from_millis(100);

/// When the engine gives up on a subscriber. Checked where frames are
/// staged, once per flush, from the session's exact queued-byte count and
/// its writer's last progress; nothing here waits on a socket.
#[derive(Clone, Copy, Debug)]
pub struct SlowConsumerPolicy {
    /// Queued bytes above which a session stops getting every update and
    /// conflates (or is closed, if it chose [`SlowMode::Disconnect`]).
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
    fn stalled(&self, queued: usize, last_progress_ns: u64, now_ns: u64) -> (bool, u64) {
        let stalled_ns = now_ns.saturating_sub(last_progress_ns);
        (queued > 0 && stalled_ns > self.slow_timeout.as_nanos() as u64, stalled_ns)
    }
}

/// One symbol's updates held back from a conflating session.
struct Missed {
    topic: u32,
    from_seq: u64,
    to_seq: u64,
    /// Held updates by [`UpdateKind`] index.
    counts: [u64; 3],
}

/// What sessions ask of the engine.
pub enum Command {
    /// A new session: give it a slot.
    Register {
        /// The session's outbox.
        outbox: Arc<Outbox>,
    },
    /// Subscribe to symbols (`"*"` = every symbol, now and later).
    Subscribe {
        /// Session id.
        id: u64,
        /// Symbols as the client named them.
        symbols: Vec<String>,
        /// Answered once the request is applied.
        done: oneshot::Sender<()>,
    },
    /// Unsubscribe from symbols (`"*"` = all of them).
    Unsubscribe {
        /// Session id.
        id: u64,
        /// Symbols as the client named them.
        symbols: Vec<String>,
        /// Answered once the request is applied.
        done: oneshot::Sender<()>,
    },
    /// The session ended: free its slot and subscriptions.
    Deregister {
        /// Session id.
        id: u64,
    },
}

/// The sending side sessions use; wakes the engine if it is parked.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Command>,
    ring: Arc<TickRing>,
}

impl EngineHandle {
    /// Sends a command. Fails only after the engine has stopped, when there
    /// is nothing left to do with it.
    pub fn send(&self, command: Command) {
        if self.tx.send(command).is_ok() {
            self.ring.wake_consumer();
        }
    }
}

/// A session as the engine sees it.
struct Slot {
    outbox: Arc<Outbox>,
    encoding: Encoding,
    /// Topics this session is subscribed to.
    topics: Vec<u32>,
    /// Subscribed to every symbol, including ones that appear later.
    wildcard: bool,
    /// Frames produced this batch, moved to the outbox at flush.
    staged: Vec<Bytes>,
    staged_bytes: usize,
    dirty: bool,
    /// When frames were last moved to the outbox.
    last_flush: Instant,
    /// Frames per ms moved to the outbox, averaged over about
    /// [`RATE_TAU_MS`]: decides whether the session is active.
    rate_per_ms: f32,
    /// Counted in [`Engine::active`] (see [`ACTIVE_FRAMES_PER_MS`]).
    active: bool,
    /// What the client chose for falling behind.
    mode: SlowMode,
    /// Over `--conflate-above`: every update is held in `missed`.
    conflating: bool,
    /// Symbols with held updates, one record each, until recovery releases
    /// them. While any remain, their updates keep being held.
    missed: Vec<Missed>,
    /// Topic -> index in `missed`.
    missed_at: HashMap<u32, usize>,
    /// In the engine's `behind` list.
    behind: bool,
}

impl Slot {
    /// Holds back an update of `topic` if this session is conflating it.
    /// Returns whether it was held (and must not be staged).
    fn hold(&mut self, topic: u32, seq: u64, kind: UpdateKind) -> bool {
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
        self.missed.push(Missed { topic, from_seq: seq, to_seq: seq, counts });
        true
    }

    /// Forgets the held updates of `topic` (it was unsubscribed).
    fn forget(&mut self, topic: u32) {
        if let Some(i) = self.missed_at.remove(&topic) {
            self.missed.swap_remove(i);
            if let Some(moved) = self.missed.get(i) {
                self.missed_at.insert(moved.topic, i);
            }
        }
    }
}

/// The engine's state; [`Engine::run`] is the thread's body.
pub struct Engine {
    ring: Arc<TickRing>,
    commands: Receiver<Command>,
    symbols: Arc<SymbolTable>,
    metrics: Arc<Metrics>,
    book_depth: usize,
    coalescing: Coalescing,
    slow: SlowConsumerPolicy,
    topics: Vec<Topic>,
    slots: Vec<Option<Slot>>,
    /// Write pacing by slot id, beside `slots`.
    paces: Vec<Pace>,
    free_slots: Vec<SlotId>,
    slot_of: HashMap<u64, SlotId>,
    wildcard: Vec<SlotId>,
    dirty: Vec<SlotId>,
    /// Slots conflating or still releasing held symbols.
    behind: Vec<SlotId>,
    /// Updates held back this batch, by [`UpdateKind`] index.
    skipped: [u64; 3],
    scratch: Vec<u8>,
    /// The recorder's queue, with `--record`.
    record: Option<RecordTap>,
    /// Sessions that were active at their last flush.
    active: usize,
    /// The clock at the start of this pass of the loop.
    now: Instant,
    /// Ticks were staged since the last flush pass: look at the dirty
    /// sessions once the input is drained.
    look: bool,
    /// A session has a reply waiting or a full staging buffer: flush now.
    urgent: bool,
    /// When the earliest dirty session comes due even if the input never
    /// drains (its wait or its bucket's refill).
    next_due: Option<Instant>,
}

impl Engine {
    /// An engine reading `ring`, and the handle sessions use to reach it.
    pub fn new(
        ring: Arc<TickRing>,
        symbols: Arc<SymbolTable>,
        metrics: Arc<Metrics>,
        book_depth: usize,
        coalescing: Coalescing,
        slow: SlowConsumerPolicy,
    ) -> (Engine, EngineHandle) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = EngineHandle { tx, ring: ring.clone() };
        let engine = Engine {
            ring,
            commands: rx,
            symbols,
            metrics,
            book_depth,
            coalescing,
            slow,
            topics: Vec::new(),
            slots: Vec::new(),
            paces: Vec::new(),
            free_slots: Vec::new(),
            slot_of: HashMap::new(),
            wildcard: Vec::new(),
            dirty: Vec::new(),
            behind: Vec::new(),
            skipped: [0; 3],
            scratch: Vec::with_capacity(4096),
            record: None,
            active: 0,
            now: Instant::now(),
            look: false,
            urgent: false,
            next_due: None,
        };
        (engine, handle)
    }

    /// Hands every sequenced tick to the recorder (`--record`), once per
    /// batch and without waiting (see [`crate::record`]).
    pub fn with_recorder(mut self, tap: RecordTap) -> Engine {
        self.record = Some(tap);
        self
    }

    /// Runs until the ring is closed and drained.
    pub fn run(mut self) {
        self.ring.register_consumer();
        let mut encoded = [0u64; 3];
        let mut last_sweep = Instant::now();
        loop {
            self.now = Instant::now();
            let mut worked = false;
            while let Ok(cmd) = self.commands.try_recv() {
                self.handle(cmd);
                worked = true;
            }
            let mut n = 0;
            while n < MAX_BATCH {
                let Some(tick) = self.ring.pop() else { break };
                self.publish(tick, &mut encoded);
                n += 1;
            }
            if n > 0 {
                // New frames: the dirty sessions are looked at once the
                // input drains.
                self.look = true;
                if let Some(tap) = self.record.as_mut() {
                    tap.end_batch();
                }
                self.metrics.updates_published.fetch_add(n as u64, Ordering::Relaxed);
                for e in Encoding::ALL {
                    let count = std::mem::take(&mut encoded[e.index()]);
                    if count > 0 {
                        self.metrics.frames_encoded[e.index()].fetch_add(count, Ordering::Relaxed);
                    }
                }
                for (i, n) in std::mem::take(&mut self.skipped).into_iter().enumerate() {
                    if n > 0 {
                        self.metrics.skipped_updates[i].fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
            if !self.behind.is_empty() {
                self.recover();
            }
            if last_sweep.elapsed() >= STALL_SWEEP {
                self.sweep_stalled();
                last_sweep = Instant::now();
            }
            let next_flush = self.maybe_flush();
            if n == 0 && !worked {
                if self.ring.is_closed() && self.dirty.is_empty() {
                    break;
                }
                let commands = &self.commands;
                self.ring.park_consumer(next_flush.unwrap_or(IDLE_PARK).min(IDLE_PARK), || !commands.is_empty());
            }
        }
    }

    /// Runs [`flush`](Self::flush) when it can write anyone: the input is
    /// drained after new ticks, a session has a reply waiting, or the
    /// earliest waiting session's deadline has come. Mid-burst passes skip it,
    /// so the dirty sessions are looked at about once per burst, not once
    /// per pass. Returns how long until the next session is due.
    fn maybe_flush(&mut self) -> Option<Duration> {
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

    fn handle(&mut self, command: Command) {
        match command {
            Command::Register { outbox } => {
                let now = Instant::now();
                let slot = Slot {
                    encoding: outbox.encoding,
                    outbox: outbox.clone(),
                    topics: Vec::new(),
                    wildcard: false,
                    staged: Vec::new(),
                    staged_bytes: 0,
                    dirty: false,
                    last_flush: now,
                    rate_per_ms: 0.0,
                    active: false,
                    mode: outbox.slow,
                    conflating: false,
                    missed: Vec::new(),
                    missed_at: HashMap::new(),
                    behind: false,
                };
                // Spread sessions' phases evenly (golden-ratio sequence by
                // session id; see `WriteGate`).
                let pace = Pace::new(now, (outbox.id as f64 * 0.618_033_988_75).fract() as f32);
                let id = match self.free_slots.pop() {
                    Some(id) => {
                        self.slots[id as usize] = Some(slot);
                        self.paces[id as usize] = pace;
                        id
                    }
                    None => {
                        self.slots.push(Some(slot));
                        self.paces.push(pace);
                        (self.slots.len() - 1) as SlotId
                    }
                };
                self.slot_of.insert(outbox.id, id);
            }
            Command::Subscribe { id, symbols, done } => {
                if let Some(&slot) = self.slot_of.get(&id) {
                    self.subscribe(slot, &symbols);
                }
                let _ = done.send(());
            }
            Command::Unsubscribe { id, symbols, done } => {
                if let Some(&slot) = self.slot_of.get(&id) {
                    self.unsubscribe(slot, &symbols);
                }
                let _ = done.send(());
            }
            Command::Deregister { id } => {
                if let Some(slot) = self.slot_of.remove(&id) {
                    self.unsubscribe_all(slot);
                    // The slot id will be reused: drop every reference to it.
                    self.dirty.retain(|&d| d != slot);
                    self.behind.retain(|&b| b != slot);
                    if self.slots[slot as usize].take().is_some_and(|s| s.active) {
                        self.active -= 1;
                    }
                    self.free_slots.push(slot);
                }
            }
        }
    }

    /// Creates topics for every symbol the table knows, in id order. New
    /// topics get the wildcard subscribers, each with an (empty) snapshot.
    fn sync_topics(&mut self) {
        let known = self.symbols.len();
        while self.topics.len() < known {
            let id = self.topics.len() as u32;
            let name = self.symbols.name(id).unwrap_or_else(|| Arc::from("?"));
            self.topics.push(Topic::new(name));
            for i in 0..self.wildcard.len() {
                let slot = self.wildcard[i];
                self.join(slot, id);
            }
        }
    }

    /// Adds `slot` to topic `topic` and stages its snapshot first.
    fn join(&mut self, slot: SlotId, topic: u32) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        let t = &mut self.topics[topic as usize];
        if s.topics.contains(&topic) {
            return;
        }
        let frame = encode_frame(s.encoding, &t.snapshot(self.book_depth), &mut self.scratch);
        let pace = &mut self.paces[slot as usize];
        stage(s, &mut self.dirty, pace, slot, frame, self.now);
        pace.urgent = true;
        self.urgent = true;
        t.subscribers[s.encoding.index()].push(slot);
        s.topics.push(topic);
        self.metrics.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    fn leave(&mut self, slot: SlotId, topic: u32) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        let Some(pos) = s.topics.iter().position(|&t| t == topic) else { return };
        s.topics.swap_remove(pos);
        s.forget(topic);
        let subs = &mut self.topics[topic as usize].subscribers[s.encoding.index()];
        if let Some(i) = subs.iter().position(|&x| x == slot) {
            subs.swap_remove(i);
        }
        self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }

    fn subscribe(&mut self, slot: SlotId, symbols: &[String]) {
        self.sync_topics();
        let mut unknown = Vec::new();
        let mut applied = Vec::new();
        // Ack first, so the client reads it before the snapshots it announces.
        let mut targets = Vec::new();
        for name in symbols {
            if name == "*" {
                if let Some(s) = self.slots[slot as usize].as_mut() {
                    if !s.wildcard {
                        s.wildcard = true;
                        self.wildcard.push(slot);
                    }
                }
                targets.extend(0..self.topics.len() as u32);
                applied.push(name.as_str());
            } else {
                match self.symbols.lookup(name) {
                    Some(id) if (id as usize) < self.topics.len() => {
                        targets.push(id);
                        applied.push(name.as_str());
                    }
                    _ => unknown.push(name.as_str()),
                }
            }
        }
        if !applied.is_empty() {
            let ack =
                ServerMessage::Ack { op: "subscribe".into(), symbols: applied.iter().map(|&s| s.into()).collect() };
            self.stage_message(slot, &ack);
        }
        for topic in targets {
            self.join(slot, topic);
        }
        if !unknown.is_empty() {
            self.unknown_symbols(slot, &unknown);
        }
    }

    fn unsubscribe(&mut self, slot: SlotId, symbols: &[String]) {
        let mut unknown = Vec::new();
        let mut applied = Vec::new();
        for name in symbols {
            if name == "*" {
                self.unsubscribe_all(slot);
                applied.push(name.as_str());
            } else {
                match self.symbols.lookup(name) {
                    Some(id) if (id as usize) < self.topics.len() => {
                        self.leave(slot, id);
                        applied.push(name.as_str());
                    }
                    _ => unknown.push(name.as_str()),
                }
            }
        }
        if !applied.is_empty() {
            let ack =
                ServerMessage::Ack { op: "unsubscribe".into(), symbols: applied.iter().map(|&s| s.into()).collect() };
            self.stage_message(slot, &ack);
        }
        if !unknown.is_empty() {
            self.unknown_symbols(slot, &unknown);
        }
    }

    fn unsubscribe_all(&mut self, slot: SlotId) {
        let topics = match self.slots[slot as usize].as_mut() {
            Some(s) => {
                if s.wildcard {
                    s.wildcard = false;
                    self.wildcard.retain(|&x| x != slot);
                }
                s.topics.clone()
            }
            None => return,
        };
        for topic in topics {
            self.leave(slot, topic);
        }
    }

    fn unknown_symbols(&mut self, slot: SlotId, unknown: &[&str]) {
        self.metrics.client_error(ErrorCode::UnknownSymbol);
        let shown: Vec<&str> = unknown.iter().take(20).copied().collect();
        let more = if unknown.len() > shown.len() {
            format!(" and {} more", unknown.len() - shown.len())
        } else {
            String::new()
        };
        let msg = ServerMessage::Error {
            code: ErrorCode::UnknownSymbol.code().into(),
            message: format!("unknown symbol(s): {}{more}", shown.join(", ")).into(),
            symbols: unknown.iter().map(|&s| s.into()).collect(),
        };
        self.stage_message(slot, &msg);
    }

    /// Sends an ack or error ahead of queued data (see "Control before
    /// data" above).
    fn stage_message(&mut self, slot: SlotId, msg: &ServerMessage<'_>) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        let frame = encode_frame(s.encoding, msg, &mut self.scratch);
        s.outbox.push_control(frame);
    }

    /// Sequences one tick and stages its frames for every subscriber.
    fn publish(&mut self, tick: Tick, encoded: &mut [u64; 3]) {
        let now = self.now;
        let index = tick.symbol as usize;
        if index >= self.topics.len() {
            self.sync_topics();
            if index >= self.topics.len() {
                return; // Not in the symbol table: a feed bug; nothing to publish to.
            }
        }
        let topic = &mut self.topics[index];
        let seq = topic.apply(&tick.update, tick.ts_event, tick.ts_ingest);
        let kind = tick.update.kind();
        for encoding in Encoding::ALL {
            let subscribers = &topic.subscribers[encoding.index()];
            if subscribers.is_empty() {
                continue;
            }
            let msg = ServerMessage::update(&topic.sym, seq, tick.ts_event, tick.ts_ingest, &tick.update);
            let frame = encode_frame(encoding, &msg, &mut self.scratch);
            encoded[encoding.index()] += 1;
            for &slot in subscribers {
                if let Some(s) = self.slots[slot as usize].as_mut() {
                    if s.behind && s.hold(tick.symbol, seq, kind) {
                        self.skipped[kind as usize] += 1;
                        continue;
                    }
                    if stage(s, &mut self.dirty, &mut self.paces[slot as usize], slot, frame.clone(), now) {
                        self.urgent = true;
                    }
                }
            }
        }
        if let Some(tap) = self.record.as_mut() {
            tap.push(tick, seq);
        }
    }

    /// Closes a session that cannot keep up: 1008 "slow consumer", its
    /// queued data dropped at once, its subscriptions removed so nothing
    /// more is staged for it. The session's task then ends and deregisters.
    fn disconnect_slow(&mut self, slot: SlotId, queued: usize, stalled_ns: u64) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        s.staged.clear();
        s.staged_bytes = 0;
        s.dirty = false;
        self.paces[slot as usize].urgent = false;
        s.conflating = false;
        s.missed.clear();
        s.missed_at.clear();
        if std::mem::take(&mut s.behind) {
            self.behind.retain(|&b| b != slot);
        }
        let outbox = s.outbox.clone();
        outbox.set_conflating(false);
        self.unsubscribe_all(slot);
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
    fn sweep_stalled(&mut self) {
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
    fn recover(&mut self) {
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
                debug_assert_eq!(topic.seq, m.to_seq, "a held symbol's last update is held too");
                let frame = encode_frame(s.encoding, &topic.snapshot(self.book_depth), &mut self.scratch);
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
            s.outbox.push_data(&mut s.staged, s.staged_bytes, now_ns);
            s.staged_bytes = 0;
            s.dirty = false;
            s.last_flush = now;
        }
        next
    }
}

/// Stages `frame` for `slot`; `now` is the engine's clock for this pass.
/// Returns whether the session's staging buffer is now full (it is then
/// marked urgent).
fn stage(slot: &mut Slot, dirty: &mut Vec<SlotId>, pace: &mut Pace, id: SlotId, frame: Bytes, now: Instant) -> bool {
    slot.staged_bytes += frame.len();
    slot.staged.push(frame);
    if !slot.dirty {
        slot.dirty = true;
        pace.staged_at = now;
        dirty.push(id);
    }
    let full = slot.staged_bytes >= FLUSH_BYTES;
    pace.urgent |= full;
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> Slot {
        Slot {
            outbox: Arc::new(Outbox::new(1, Encoding::Json, SlowMode::Conflate)),
            encoding: Encoding::Json,
            topics: Vec::new(),
            wildcard: false,
            staged: Vec::new(),
            staged_bytes: 0,
            dirty: false,
            last_flush: Instant::now(),
            rate_per_ms: 0.0,
            active: false,
            mode: SlowMode::Conflate,
            conflating: false,
            missed: Vec::new(),
            missed_at: HashMap::new(),
            behind: true,
        }
    }

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

    #[test]
    fn a_conflating_slot_keeps_one_record_per_symbol_with_its_range_and_counts() {
        let mut s = slot();
        assert!(!s.hold(7, 1, UpdateKind::Quote), "not conflating: the update is staged");
        s.conflating = true;
        assert!(s.hold(7, 2, UpdateKind::Quote));
        assert!(s.hold(9, 40, UpdateKind::Trade));
        assert!(s.hold(7, 3, UpdateKind::Book));
        assert!(s.hold(7, 4, UpdateKind::Trade));
        assert_eq!(s.missed.len(), 2);
        let m = &s.missed[s.missed_at[&7]];
        assert_eq!((m.from_seq, m.to_seq, m.counts), (2, 4, [1, 1, 1]));
        // Released from full conflation: held symbols stay held, others flow.
        s.conflating = false;
        assert!(s.hold(9, 41, UpdateKind::Quote));
        assert!(!s.hold(8, 5, UpdateKind::Quote));
        // Unsubscribing forgets a record and keeps the index consistent.
        s.forget(7);
        assert_eq!(s.missed.len(), 1);
        let m = &s.missed[s.missed_at[&9]];
        assert_eq!((m.topic, m.from_seq, m.to_seq, m.counts), (9, 40, 41, [1, 1, 0]));
        s.forget(9);
        assert!(s.missed.is_empty() && s.missed_at.is_empty());
    }
}

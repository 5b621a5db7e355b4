//! The topic engine: sequences every tick, keeps per-symbol state, encodes
//! each update once per encoding in use, and fans the shared frame out.
//!
//! In: [`Tick`](crate::model::Tick)s from the [`TickRing`] and
//! [`Command`]s from sessions. Out: frames staged into each subscriber's
//! outbox, once per batch.
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
//! A write costs about the same CPU whatever it carries (mostly the
//! kernel's TCP path; see BENCHMARKS.md#what-one-socket-write-costs), so
//! when to write decides both the CPU per message and the latency.
//! Writing when the input is drained (the ring is empty and no feed is
//! mid-burst, [`TickRing::drained`]) gives each subscriber a whole burst in
//! one write, as soon as the burst is in; writing on a clock instead would
//! split bursts and hold their tails for a tick of it.
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
//!
//! # Files
//! One concept each, all of them `impl Engine` blocks over the state
//! declared here:
//! - `mod.rs`: the [`Engine`] state, its loop ([`Engine::run`]), and the
//!   [`Command`]s sessions send it through an [`EngineHandle`].
//! - [`topic`]: one symbol's state, seq and audience.
//! - `slot.rs`: a session as the engine sees it.
//! - `subscriptions.rs`: register and deregister, subscribe and
//!   unsubscribe (wildcard included), entitlements, acks and
//!   `unknown_symbol`/`forbidden` errors.
//! - `publish.rs`: sequencing a tick, encoding it once per encoding in
//!   use, staging the shared frame per subscriber.
//! - `pacing.rs`: when each session is written ([`Coalescing`], the write
//!   gate, `flush`), and which sessions are active for the write budget.
//! - `resync.rs`: a cluster's topic images: installing a sequencer's
//!   image on an edge (a `reset` notice, then fresh snapshots, to its
//!   subscribers) and taking one for an edge's snapshot request.
//! - [`history`]: each topic's recent frames per (depth, encoding), for
//!   resume by seq (`from_seq`) and the end of a rewind.
//! - `ladder.rs`: the slow-consumer ladder ([`SlowConsumerPolicy`]):
//!   holding updates back, recovery, and closing with 1008.
//! - `trace.rs`: `--trace-latency`: stamping a sampled tick and carrying
//!   its mark to each subscriber's outbox ([`crate::trace`]).
//!
//! The engine reads `model`, `wire`, `ring`, `outbox`, `record` and
//! `metrics`; it never sees a session's task, the server or a socket.
//!
//! Imports: [`crate::model`], [`crate::wire`], [`crate::ring`],
//! [`crate::outbox`], [`crate::record`], [`crate::metrics`] and
//! [`crate::auth`] (a session's entitlements, checked at subscribe) and
//! [`crate::trace`] (`--trace-latency`'s stamps). The
//! engine never sees a socket or a session, only outboxes.

pub mod history;
pub mod topic;

mod ladder;
mod pacing;
mod publish;
mod resync;
mod slot;
mod subscriptions;
mod trace;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::auth::Entitlements;
use crate::cluster::PublishTap;
use crate::metrics::Metrics;
use crate::model::{DepthDiff, Image, SymbolTable};
use crate::outbox::Outbox;
use crate::record::RecordTap;
use crate::ring::{Input, TickRing};
use crate::wire::Encoding;
use history::{HistoryPolicy, HistoryTotals};
use ladder::STALL_SWEEP;
use pacing::Pace;
use slot::Slot;
use topic::{SlotId, Topic};

pub use ladder::SlowConsumerPolicy;
pub use pacing::{Coalescing, MAX_BUDGET_INTERVAL};

/// Most ticks taken from the ring before staged frames are flushed to
/// sessions. Bounds the latency batching adds (a few hundred µs at most)
/// while amortising the per-session lock and wake-up.
pub const MAX_BATCH: usize = 512;

/// How long an idle engine parks before looking again (it is unparked as
/// soon as a tick or command arrives; this only bounds a lost wake-up).
const IDLE_PARK: Duration = Duration::from_millis(2);

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
        /// Book levels per side, a [`valid_depth`](crate::model::valid_depth);
        /// `None`: `--book-depth`.
        depth: Option<usize>,
        /// What the session's token entitles it to, checked here and kept
        /// for the symbols a `"*"` picks up later; `None`: an open server.
        entitlements: Option<Arc<Entitlements>>,
        /// `from_seq`: per symbol, the last seq the client holds, and the
        /// epoch they belong to (see "Resume" in `subscriptions.rs`).
        /// Empty: every symbol joins with a snapshot.
        resume: Vec<(String, u64)>,
        /// The epoch the client's `from_seq` belongs to, if it said.
        epoch: Option<u64>,
        /// Whether to send the `ack`: not when the session already did (the
        /// end of a rewind, which joins live with a `from_seq`).
        announce: bool,
        /// Answered once the request is applied.
        done: oneshot::Sender<()>,
    },
    /// Keeps history for `symbols` at (`depth`, `encoding`) from now on,
    /// for at least `--history`, even with no subscriber: a rewind
    /// (`from_ts`) reads the tick log up to now and then resumes from that
    /// history, so the two meet without a gap. Answers each known symbol's
    /// seq now (where the history starts, at the latest), the symbols it
    /// does not know, and the epoch.
    Retain {
        /// Symbols as the client named them.
        symbols: Vec<String>,
        /// The depth the client subscribes at.
        depth: usize,
        /// The client's encoding.
        encoding: Encoding,
        /// The answer.
        reply: oneshot::Sender<Retained>,
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
    /// The session ended: free its slot and subscriptions. Its history
    /// tracks are held for `--history-linger`, for it to come back and
    /// resume (an unsubscribe holds nothing).
    Deregister {
        /// Session id.
        id: u64,
    },
    /// A sequencer's snapshot request from an edge (`--publish`): the
    /// topic's whole state, exactly as of its seq.
    Image {
        /// The symbol as the edge named it.
        symbol: String,
        /// The state, or `None` for a symbol this server does not know.
        reply: oneshot::Sender<Option<Image>>,
    },
}

/// The answer to a [`Command::Retain`].
#[derive(Debug, Default)]
pub struct Retained {
    /// Each known symbol with its seq when history was retained.
    pub seqs: Vec<(String, u64)>,
    /// Symbols the engine does not know.
    pub unknown: Vec<String>,
    /// The epoch those seqs belong to.
    pub epoch: u64,
}

/// The sending side sessions use; wakes the engine if it is parked.
#[derive(Clone)]
pub struct EngineHandle {
    /// The engine's command queue.
    tx: Sender<Command>,
    /// To wake the engine after a send.
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

/// The engine's state; [`Engine::run`] is the thread's body.
pub struct Engine {
    /// Where ticks come from; also parks and wakes this thread.
    ring: Arc<TickRing>,
    /// Commands from sessions (see "Commands" above).
    commands: Receiver<Command>,
    /// Symbol names by id; topics are created in id order as it grows.
    symbols: Arc<SymbolTable>,
    /// Counters, added to once per batch.
    metrics: Arc<Metrics>,
    /// Book levels per side of a subscription that names no depth
    /// (`--book-depth`).
    book_depth: usize,
    /// How often busy sessions are written (`pacing.rs`).
    coalescing: Coalescing,
    /// When a session is conflated or closed (`ladder.rs`).
    slow: SlowConsumerPolicy,
    /// Every symbol's topic, by symbol id.
    topics: Vec<Topic>,
    /// Registered sessions by slot id; `None` for a free slot.
    slots: Vec<Option<Slot>>,
    /// Write pacing by slot id, beside `slots`.
    paces: Vec<Pace>,
    /// Slot ids free for reuse, so that `slots` and `paces` stay dense.
    free_slots: Vec<SlotId>,
    /// Session id to slot id, for commands.
    slot_of: HashMap<u64, SlotId>,
    /// Slots subscribed to `"*"`: they join every new topic.
    wildcard: Vec<SlotId>,
    /// Slots with frames staged and not yet flushed.
    dirty: Vec<SlotId>,
    /// Slots conflating or still releasing held symbols.
    behind: Vec<SlotId>,
    /// Slots with snapshots still to send (`subscriptions.rs`, "Snapshots
    /// that stream").
    joining: Vec<SlotId>,
    /// Turns each book delta into every depth view's, buffers reused.
    diff: DepthDiff,
    /// Updates held back this batch, by [`UpdateKind`](crate::model::UpdateKind) index.
    skipped: [u64; 3],
    /// The encode buffer, reused for every frame.
    scratch: Vec<u8>,
    /// The recorder's queue, with `--record`.
    record: Option<RecordTap>,
    /// The NATS publisher's queue, on a sequencer (`--publish`).
    cluster: Option<PublishTap>,
    /// Sessions that were active at their last flush.
    active: usize,
    /// The clock at the start of this pass of the loop.
    now: Instant,
    /// `now` as ns since `started`: the time history frames are kept at.
    clock_ns: u64,
    /// When the engine was made: the origin of `clock_ns`.
    started: Instant,
    /// How much history each topic keeps (`history.rs`).
    history: HistoryPolicy,
    /// What all topics' history holds now.
    history_totals: HistoryTotals,
    /// The epoch of the seqs this engine publishes: its own start (or the
    /// tick log's, with `--record`), or on an edge its sequencer's, from
    /// the last image installed. A resume names it.
    epoch: u64,
    /// Ticks were staged since the last flush pass: look at the dirty
    /// sessions once the input is drained.
    look: bool,
    /// A session has a reply waiting or a full staging buffer: flush now.
    urgent: bool,
    /// When the earliest dirty session comes due even if the input never
    /// drains (its wait or its bucket's refill).
    next_due: Option<Instant>,
    /// `--trace-latency`: sampled ticks' marks on their way to outboxes.
    trace: trace::EngineTrace,
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
            joining: Vec::new(),
            diff: DepthDiff::default(),
            skipped: [0; 3],
            scratch: Vec::with_capacity(4096),
            record: None,
            cluster: None,
            active: 0,
            now: Instant::now(),
            clock_ns: 0,
            started: Instant::now(),
            history: HistoryPolicy::OFF,
            history_totals: HistoryTotals::default(),
            epoch: 0,
            look: false,
            urgent: false,
            next_due: None,
            trace: trace::EngineTrace::default(),
        };
        (engine, handle)
    }

    /// Hands every sequenced tick to the recorder (`--record`), once per
    /// batch and without waiting (see [`crate::record`]).
    pub fn with_recorder(mut self, tap: RecordTap) -> Engine {
        self.record = Some(tap);
        self
    }

    /// Hands every sequenced tick, as a binary record, to the sequencer's
    /// NATS thread (`--publish`), once per batch and without waiting (see
    /// [`crate::cluster`]).
    pub fn with_publisher(mut self, tap: PublishTap) -> Engine {
        self.cluster = Some(tap);
        self
    }

    /// Keeps history per topic (`--history`), for resume by seq.
    pub fn with_history(mut self, policy: HistoryPolicy) -> Engine {
        self.history = if policy.enabled() { policy } else { HistoryPolicy::OFF };
        self
    }

    /// The epoch of the seqs this engine assigns (a sequencer or a single
    /// node); an edge learns its sequencer's from the images it installs.
    pub fn with_epoch(mut self, epoch: u64) -> Engine {
        self.epoch = epoch;
        self
    }

    /// Runs until the ring is closed and drained.
    pub fn run(mut self) {
        self.ring.register_consumer();
        let mut encoded = [0u64; 3];
        let mut last_sweep = Instant::now();
        loop {
            self.now = Instant::now();
            self.clock_ns = self.now.duration_since(self.started).as_nanos() as u64;
            let mut worked = false;
            while let Ok(cmd) = self.commands.try_recv() {
                self.handle(cmd);
                worked = true;
            }
            let mut n = 0;
            while n < MAX_BATCH {
                match self.ring.pop() {
                    Some(Input::Tick(tick)) => self.publish(tick, None, &mut encoded),
                    Some(Input::Sequenced(tick, seq)) => self.publish(tick, Some(seq), &mut encoded),
                    Some(Input::Image(image)) => self.install_image(*image),
                    Some(Input::Traced(tick, feed)) => self.publish_traced(tick, feed, &mut encoded),
                    None => break,
                }
                n += 1;
            }
            if n > 0 {
                // New frames: the dirty sessions are looked at once the
                // input drains.
                self.look = true;
                if let Some(tap) = self.record.as_mut() {
                    tap.end_batch();
                }
                if let Some(tap) = self.cluster.as_mut() {
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
                self.publish_history_totals();
            }
            if !self.behind.is_empty() {
                self.recover();
            }
            if !self.joining.is_empty() {
                self.release_joins();
            }
            if last_sweep.elapsed() >= STALL_SWEEP {
                self.sweep_stalled();
                self.sweep_history();
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

    /// Lets go of history past `--history` in every topic, and of tracks
    /// with no subscriber whose hold has ended.
    fn sweep_history(&mut self) {
        if !self.history.enabled() {
            return;
        }
        for topic in &mut self.topics {
            if !topic.audiences.is_empty() {
                topic.sweep_history(self.clock_ns, &self.history, &mut self.history_totals);
            }
        }
        self.publish_history_totals();
    }

    /// See [`Command::Retain`].
    fn retain(&mut self, symbols: &[String], depth: usize, encoding: Encoding) -> Retained {
        self.sync_topics();
        let mut out = Retained { epoch: self.epoch, ..Retained::default() };
        for name in symbols {
            match self.symbols.lookup(name).filter(|&id| (id as usize) < self.topics.len()) {
                Some(id) => {
                    let topic = &mut self.topics[id as usize];
                    if self.history.enabled() {
                        topic.retain(depth, encoding, self.clock_ns, self.history.keep);
                    }
                    out.seqs.push((name.clone(), topic.state.seq));
                }
                None => out.unknown.push(name.clone()),
            }
        }
        out
    }

    /// Shows what history holds in `/metrics` (a few relaxed stores).
    fn publish_history_totals(&mut self) {
        if !self.history.enabled() {
            return;
        }
        let m = &self.metrics;
        m.history_bytes.store(self.history_totals.bytes as u64, Ordering::Relaxed);
        m.history_frames.store(self.history_totals.frames as u64, Ordering::Relaxed);
        let evicted = std::mem::take(&mut self.history_totals.evicted);
        if evicted > 0 {
            m.history_evicted.fetch_add(evicted, Ordering::Relaxed);
        }
    }

    /// Applies one command from a session.
    fn handle(&mut self, command: Command) {
        match command {
            Command::Register { outbox } => self.register(outbox),
            Command::Subscribe { id, symbols, depth, entitlements, resume, epoch, announce, done } => {
                if let Some(&slot) = self.slot_of.get(&id) {
                    let depth = depth.unwrap_or(self.book_depth);
                    self.subscribe(slot, &symbols, depth, entitlements, (&resume, epoch), announce);
                }
                let _ = done.send(());
            }
            Command::Unsubscribe { id, symbols, done } => {
                if let Some(&slot) = self.slot_of.get(&id) {
                    self.unsubscribe(slot, &symbols);
                }
                let _ = done.send(());
            }
            Command::Deregister { id } => self.deregister(id),
            Command::Retain { symbols, depth, encoding, reply } => {
                let _ = reply.send(self.retain(&symbols, depth, encoding));
            }
            Command::Image { symbol, reply } => {
                let _ = reply.send(self.image_of(&symbol));
            }
        }
    }
}

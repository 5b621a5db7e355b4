//! A session as the engine sees it ([`Slot`]): its outbox and encoding,
//! its subscriptions, the frames staged for it this batch, its write rate,
//! and where it stands on the slow-consumer ladder.
//!
//! The engine keeps one per registered session, in a slab indexed by
//! [`SlotId`](super::topic::SlotId). Its write pacing is kept apart, in
//! the dense `paces` array beside the slab (see `pacing.rs`), so that a
//! flush pass skips the sessions that are not due without touching their
//! slots.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::ladder::Missed;
use super::trace::Mark;
use crate::auth::Entitlements;
use crate::outbox::{Outbox, SlowMode};
use crate::wire::{Encoding, ResetReason};

/// How a pending topic joins, other than with a plain snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Join {
    /// Resume: the updates after `after` from the topic's history, then
    /// live. `since`: when the request came, to bound the wait for a topic
    /// that has not reached `after` yet (an edge behind the one the client
    /// left).
    From {
        /// The last seq the client holds (or was sent, mid-way).
        after: u64,
        /// When the resume was asked for.
        since: Instant,
    },
    /// A `reset` with this reason, then the snapshot: the client's seq
    /// cannot be resumed from.
    Reset(ResetReason),
}

/// A session as the engine sees it.
pub(super) struct Slot {
    /// Where its frames go: data at flush, acks and errors at once.
    pub(super) outbox: Arc<Outbox>,
    /// The encoding it gets; it is in its topics' subscriber list for it.
    pub(super) encoding: Encoding,
    /// Topics this session is subscribed to, with the book depth of each.
    pub(super) topics: HashMap<u32, usize>,
    /// Subscribed to every symbol, including ones that appear later, at
    /// this depth.
    pub(super) wildcard: Option<usize>,
    /// Topics subscribed to whose snapshot is not sent yet, oldest first:
    /// snapshots stream out as the client drains (`subscriptions.rs`).
    /// A topic here with no entry in `pending_depth` was unsubscribed.
    pub(super) pending: VecDeque<u32>,
    /// The depth each pending topic joins at.
    pub(super) pending_depth: HashMap<u32, usize>,
    /// How a pending topic joins when not with a plain snapshot: a resume
    /// (`from_seq`) or a `reset` first (see "Resume" in
    /// `subscriptions.rs`).
    pub(super) joins: HashMap<u32, Join>,
    /// In the engine's `joining` list.
    pub(super) joining: bool,
    /// Frames produced this batch, moved to the outbox at flush.
    pub(super) staged: Vec<Bytes>,
    /// Bytes in `staged`: flushed at once at a full buffer, and counted
    /// against the ladder's marks with what is queued.
    pub(super) staged_bytes: usize,
    /// In the engine's `dirty` list.
    pub(super) dirty: bool,
    /// `--trace-latency`: a sampled frame among `staged`, handed to the
    /// outbox with it at flush (`trace.rs`).
    pub(super) trace: Mark,
    /// When frames were last moved to the outbox.
    pub(super) last_flush: Instant,
    /// Frames per ms moved to the outbox, averaged over about
    /// `RATE_TAU_MS` (`pacing.rs`): decides whether the session is active.
    pub(super) rate_per_ms: f32,
    /// Counted in [`Engine::active`](super::Engine::active) (see
    /// `ACTIVE_FRAMES_PER_MS` in `pacing.rs`).
    pub(super) active: bool,
    /// What the client chose for falling behind.
    pub(super) mode: SlowMode,
    /// Over `--conflate-above`: every update is held in `missed`.
    pub(super) conflating: bool,
    /// Symbols with held updates, one record each, until recovery releases
    /// them. While any remain, their updates keep being held.
    pub(super) missed: Vec<Missed>,
    /// Topic -> index in `missed`.
    pub(super) missed_at: HashMap<u32, usize>,
    /// In the engine's `behind` list.
    pub(super) behind: bool,
    /// What the session's token entitles it to, as of its last subscribe
    /// (checked at subscribe and when `"*"` picks up a new symbol, never
    /// per update); `None`: an open server.
    pub(super) entitlements: Option<Arc<Entitlements>>,
}

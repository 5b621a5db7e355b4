//! Sessions coming and going, and what they subscribe to: a session's
//! slot (register, deregister), subscribe and unsubscribe by name or
//! `"*"` (every symbol, now and later), each at a book depth; joining a
//! topic with its snapshot staged first; and the acks and `unknown_symbol`
//! errors these requests produce, sent ahead of queued data.
//!
//! # Entitlements
//! With authentication on, each subscribe carries the session's
//! [`Entitlements`] and the slot keeps them. A named symbol they do not
//! grant, or one past their `max_subscriptions`, is refused with one
//! `forbidden` error naming it, while the rest of the request applies (as
//! with `unknown_symbol`). `"*"` expands only to granted symbols, now and
//! as new ones appear, up to the limit. This is the only place they are
//! checked: a subscribed topic's updates are fanned out without a look.
//!
//! # Snapshots that stream
//! A subscribe names up to 10,000 symbols, and `"*"` every symbol of the
//! universe (up to `--max-symbols`): their snapshots could be megabytes,
//! more than a session may queue before it counts as slow. So a subscribe
//! only queues the topics it names (the session's `pending` cursor) and
//! joins them as the client drains: whenever the session's queue is below
//! half of `--conflate-above`, snapshots until it reaches that half (the
//! low-water mark of conflation recovery, so releasing snapshots never
//! makes a session slow: live updates have the other half). A topic's live updates start
//! with its snapshot, so every symbol still reads snapshot, then seq + 1
//! on; symbols joined earlier keep flowing meanwhile. A small subscribe
//! fits in the first chunk and is joined at once. A client that stops
//! reading stops the cursor and meets the ladder's stall timeout as usual.

//!
//! # Resume
//! A subscribe may name, per symbol, the last seq the client holds
//! (`from_seq`) and the epoch it belongs to. Such a symbol joins through
//! the same cursor, without a snapshot: the frames after that seq from the
//! topic's history ([`super::history`]) are staged, as many per pass as
//! the snapshot budget above allows, and once the last one is staged the
//! session enters the topic's audience in the same step, so the next
//! update is the next seq: no gap, no duplicate. The ack says per symbol
//! whether it is recovered. It is not when the epoch differs, or the
//! history does not reach back (or was never kept for that depth and
//! encoding): the symbol then gets a `reset` (reason `epoch` or
//! `history`) and a snapshot. A client whose seq is ahead of this node
//! (it left an edge that was further along) waits for the topic to get
//! there, for at most [`RESUME_WAIT`]. If the client reads so slowly that
//! the history moves past its cursor mid-way, the rest is a `reset` and a
//! snapshot too: never a silent gap.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pacing::Pace;
use super::publish::stage;
use super::slot::{Join, Slot};
use super::topic::{SlotId, Topic};
use super::Engine;
use crate::auth::Entitlements;
use crate::outbox::Outbox;
use crate::wire::{encode_frame, ErrorCode, ResetReason, ServerMessage};

/// Longest a resume waits for a topic to reach the client's seq (on an
/// edge behind the one the client left) before it gets a `reset` and a
/// snapshot instead.
pub const RESUME_WAIT: Duration = Duration::from_secs(2);

/// What one pass of a resume did.
enum Step {
    /// Joined: live updates follow.
    Done,
    /// Staged up to this seq; the budget is spent for now.
    Partial(u64),
    /// The topic has not reached the client's seq yet.
    Wait,
}

impl Engine {
    /// A new session: gives it a slot (a freed one if any) and its write
    /// pacing, beside it in `paces`.
    pub(super) fn register(&mut self, outbox: Arc<Outbox>) {
        let now = Instant::now();
        let slot = Slot {
            encoding: outbox.encoding,
            outbox: outbox.clone(),
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
            last_flush: now,
            rate_per_ms: 0.0,
            active: false,
            mode: outbox.slow,
            conflating: false,
            missed: Vec::new(),
            missed_at: HashMap::new(),
            behind: false,
            entitlements: None,
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

    /// The session ended: drops its subscriptions and every reference to
    /// its slot, and frees the slot for reuse.
    pub(super) fn deregister(&mut self, id: u64) {
        if let Some(slot) = self.slot_of.remove(&id) {
            // Gone, maybe to come back: its history is held.
            self.unsubscribe_all(slot, true);
            // The slot id will be reused: drop every reference to it.
            self.dirty.retain(|&d| d != slot);
            self.behind.retain(|&b| b != slot);
            self.joining.retain(|&j| j != slot);
            if self.slots[slot as usize].take().is_some_and(|s| s.active) {
                self.active -= 1;
            }
            self.free_slots.push(slot);
        }
    }

    /// Creates topics for every symbol the table knows, in id order. New
    /// topics get the wildcard subscribers, each with an (empty) snapshot
    /// (at once, unless the session still has snapshots pending).
    pub(super) fn sync_topics(&mut self) {
        let known = self.symbols.len();
        while self.topics.len() < known {
            let id = self.topics.len() as u32;
            let name = self.symbols.name(id).unwrap_or_else(|| Arc::from("?"));
            self.topics.push(Topic::new(name));
            for i in 0..self.wildcard.len() {
                let slot = self.wildcard[i];
                let Some(s) = self.slots[slot as usize].as_ref() else { continue };
                let Some(depth) = s.wildcard else { continue };
                if let Some(e) = &s.entitlements {
                    let name = &self.topics[id as usize].sym;
                    if !e.allows_symbol(name) || !e.allows_count(held(s).len() + 1) {
                        continue;
                    }
                }
                self.want(slot, id, depth);
                self.release_joins_of(slot);
            }
        }
    }

    /// Queues `topic` at `depth` on the session's snapshot cursor (see
    /// "Snapshots that stream"), unless it is subscribed at that depth.
    fn want(&mut self, slot: SlotId, topic: u32, depth: usize) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        if s.topics.get(&topic) == Some(&depth) {
            if s.pending_depth.remove(&topic).is_some() {
                self.metrics.snapshots_pending.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        if s.pending_depth.insert(topic, depth).is_none() {
            s.pending.push_back(topic);
            self.metrics.snapshots_pending.fetch_add(1, Ordering::Relaxed);
        }
        if !s.joining {
            s.joining = true;
            self.joining.push(slot);
        }
    }

    /// Joins pending topics for every session with some, as far as each
    /// one's queue allows.
    pub(super) fn release_joins(&mut self) {
        let mut i = 0;
        while i < self.joining.len() {
            let slot = self.joining[i];
            if self.release_joins_of(slot) {
                self.joining.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Joins `slot`'s pending topics while its queue (queued and staged
    /// bytes) is below half of `--conflate-above` and it is not behind.
    /// Returns whether nothing is pending any more (the slot is then out
    /// of the engine's `joining` list, or must be taken out by the
    /// caller).
    fn release_joins_of(&mut self, slot: SlotId) -> bool {
        let low_water = self.slow.conflate_above / 2;
        let mut queued = None;
        // Resumes waiting for their topic, met in a row: once all that is
        // left waits, this pass is over.
        let mut waiting = 0;
        loop {
            let Some(s) = self.slots[slot as usize].as_mut() else { return true };
            if s.pending.is_empty() {
                s.joining = false;
                s.pending_depth.clear();
                s.joins.clear();
                return true;
            }
            // One atomic load per pass; the staged bytes grow as we join.
            let queued = *queued.get_or_insert_with(|| s.outbox.queued_bytes());
            if s.behind || queued + s.staged_bytes >= low_water || waiting >= s.pending.len() {
                return false;
            }
            let topic = s.pending.pop_front().expect("not empty");
            // No depth: unsubscribed while pending.
            let Some(depth) = s.pending_depth.remove(&topic) else {
                s.joins.remove(&topic);
                continue;
            };
            let join = s.joins.remove(&topic);
            let step = match join {
                None => {
                    self.join(slot, topic, depth);
                    Step::Done
                }
                Some(Join::Reset(reason)) => {
                    self.reset_join(slot, topic, depth, reason);
                    Step::Done
                }
                Some(Join::From { after, since }) => self.resume_step(slot, topic, depth, after, since, queued),
            };
            let Some(s) = self.slots[slot as usize].as_mut() else { return true };
            match step {
                Step::Done => {
                    waiting = 0;
                    self.metrics.snapshots_pending.fetch_sub(1, Ordering::Relaxed);
                }
                Step::Partial(after) => {
                    // First in line again: its budget is spent.
                    let since = self.now;
                    s.pending_depth.insert(topic, depth);
                    s.joins.insert(topic, Join::From { after, since });
                    s.pending.push_front(topic);
                    return false;
                }
                Step::Wait => {
                    waiting += 1;
                    s.pending_depth.insert(topic, depth);
                    s.joins.insert(topic, join.expect("only a resume waits"));
                    s.pending.push_back(topic);
                }
            }
        }
    }

    /// Decides how a `from_seq` symbol joins (see "Resume" above): whether
    /// it is recovered, and the [`Join`] to queue (`None`: already live at
    /// that depth, nothing to do).
    fn plan_resume(&self, s: &Slot, topic: u32, depth: usize, after: u64, epoch: Option<u64>) -> (bool, Option<Join>) {
        let t = &self.topics[topic as usize];
        if s.topics.get(&topic) == Some(&depth) {
            return (true, None);
        }
        if epoch.is_some_and(|e| e != self.epoch) {
            return (false, Some(Join::Reset(ResetReason::Epoch)));
        }
        let resume = Join::From { after, since: self.now };
        if after > t.state.seq {
            // Of this epoch (the client said so): this node is behind the
            // one it left and will get there. Without an epoch, a seq this
            // node never reached means it restarted.
            return match epoch {
                Some(_) => (true, Some(resume)),
                None => (false, Some(Join::Reset(ResetReason::Epoch))),
            };
        }
        if after == t.state.seq || t.track(depth, s.encoding).is_some_and(|tr| tr.since(after).is_some()) {
            (true, Some(resume))
        } else {
            (false, Some(Join::Reset(ResetReason::History)))
        }
    }

    /// One pass of a resume: stages the frames after `after` from history
    /// while the budget lasts (`queued`: the session's queued bytes at the
    /// start of this pass), and joins the audience once the last is staged.
    fn resume_step(
        &mut self,
        slot: SlotId,
        topic: u32,
        depth: usize,
        after: u64,
        since: Instant,
        queued: usize,
    ) -> Step {
        if self.live_at(slot, topic, depth) {
            return Step::Done;
        }
        let seq = self.topics[topic as usize].state.seq;
        if after > seq {
            if self.now.duration_since(since) < RESUME_WAIT {
                return Step::Wait;
            }
            self.reset_join(slot, topic, depth, ResetReason::Epoch);
            return Step::Done;
        }
        let low_water = self.slow.conflate_above / 2;
        let Some(s) = self.slots[slot as usize].as_mut() else { return Step::Done };
        let t = &mut self.topics[topic as usize];
        let mut last = after;
        if after < seq {
            let Some(frames) = t.track(depth, s.encoding).and_then(|tr| tr.since(after)) else {
                // The history moved on (or was never kept for this depth
                // and encoding).
                self.reset_join(slot, topic, depth, ResetReason::History);
                return Step::Done;
            };
            let pace = &mut self.paces[slot as usize];
            for (seq, frame) in frames {
                stage(s, &mut self.dirty, pace, slot, frame.clone(), self.now);
                last = seq;
                if queued + s.staged_bytes >= low_water {
                    break;
                }
            }
            pace.urgent = true;
            self.urgent = true;
            if last < seq {
                return Step::Partial(last);
            }
        }
        t.add(slot, s.encoding, depth, self.history.enabled());
        s.topics.insert(topic, depth);
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        self.metrics.resumes[0].fetch_add(1, Ordering::Relaxed);
        Step::Done
    }

    /// Joins with a `reset` naming `reason` ahead of the snapshot: the
    /// client must drop what it holds of the symbol.
    fn reset_join(&mut self, slot: SlotId, topic: u32, depth: usize, reason: ResetReason) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        if s.topics.get(&topic) == Some(&depth) {
            return; // Live already: no reset, no snapshot.
        }
        let t = &self.topics[topic as usize];
        let notice = ServerMessage::Reset { sym: Cow::Borrowed(&t.sym), seq: t.state.seq, reason };
        let frame = encode_frame(s.encoding, &notice, &mut self.scratch);
        stage(s, &mut self.dirty, &mut self.paces[slot as usize], slot, frame, self.now);
        self.metrics.resumes[1].fetch_add(1, Ordering::Relaxed);
        self.join(slot, topic, depth);
    }

    /// Adds `slot` to topic `topic` at `depth` and stages its snapshot
    /// first; moves it if it was subscribed at another depth.
    fn join(&mut self, slot: SlotId, topic: u32, depth: usize) {
        if self.live_at(slot, topic, depth) {
            return;
        }
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        let t = &mut self.topics[topic as usize];
        let frame = encode_frame(s.encoding, &t.snapshot(depth), &mut self.scratch);
        let pace = &mut self.paces[slot as usize];
        stage(s, &mut self.dirty, pace, slot, frame, self.now);
        pace.urgent = true;
        self.urgent = true;
        t.add(slot, s.encoding, depth, self.history.enabled());
        s.topics.insert(topic, depth);
        self.metrics.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `slot` already gets `topic` at `depth`; if it gets it at
    /// another depth, it leaves that one first (a join moves it).
    fn live_at(&mut self, slot: SlotId, topic: u32, depth: usize) -> bool {
        match self.slots[slot as usize].as_ref().and_then(|s| s.topics.get(&topic)) {
            Some(&d) if d == depth => true,
            Some(_) => {
                self.leave(slot, topic, false);
                false
            }
            None => false,
        }
    }

    fn leave(&mut self, slot: SlotId, topic: u32, linger: bool) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        if s.pending_depth.remove(&topic).is_some() {
            self.metrics.snapshots_pending.fetch_sub(1, Ordering::Relaxed);
        }
        s.joins.remove(&topic);
        let Some(depth) = s.topics.remove(&topic) else { return };
        s.forget(topic);
        let t = &mut self.topics[topic as usize];
        t.remove(slot, s.encoding, depth, (self.clock_ns, linger), &self.history, &mut self.history_totals);
        self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }

    /// Subscribes `slot` to `symbols` at `depth`, within `entitlements`
    /// (see "Entitlements" above), which the slot keeps for later `"*"`
    /// symbols.
    pub(super) fn subscribe(
        &mut self,
        slot: SlotId,
        symbols: &[String],
        depth: usize,
        entitlements: Option<Arc<Entitlements>>,
        (resume, epoch): (&[(String, u64)], Option<u64>),
        announce: bool,
    ) {
        self.sync_topics();
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        s.entitlements = entitlements.clone();
        // With a subscription limit: the topics held, to count against it.
        let limit = entitlements.as_ref().and_then(|e| e.max_subscriptions);
        let mut held = if limit.is_some() { held(s) } else { HashSet::new() };
        let mut admit = |topic: u32| match limit {
            None => true,
            Some(max) => held.contains(&topic) || (held.len() < max && held.insert(topic)),
        };
        let mut unknown = Vec::new();
        let mut forbidden = Vec::new();
        let mut over_limit = Vec::new();
        let mut applied = Vec::new();
        // Ack first, so the client reads it before the snapshots it announces.
        let mut targets = Vec::new();
        for name in symbols {
            if name == "*" {
                if s.wildcard.replace(depth).is_none() {
                    self.wildcard.push(slot);
                }
                let mut cut = false;
                for (topic, t) in self.topics.iter().enumerate() {
                    if entitlements.as_ref().is_none_or(|e| e.allows_symbol(&t.sym)) {
                        if admit(topic as u32) {
                            targets.push(topic as u32);
                        } else {
                            cut = true;
                        }
                    }
                }
                if cut {
                    over_limit.push(name.as_str());
                }
                applied.push(name.as_str());
            } else {
                match self.symbols.lookup(name) {
                    Some(id) if (id as usize) < self.topics.len() => {
                        if !entitlements.as_ref().is_none_or(|e| e.allows_symbol(name)) {
                            forbidden.push(name.as_str());
                        } else if !admit(id) {
                            over_limit.push(name.as_str());
                        } else {
                            targets.push(id);
                            applied.push(name.as_str());
                        }
                    }
                    _ => unknown.push(name.as_str()),
                }
            }
        }
        // Resumes: decided now, so the ack can say which are recovered.
        let mut recovered = BTreeMap::new();
        let mut joins = HashMap::new();
        if let Some(s) = self.slots[slot as usize].as_ref().filter(|_| !resume.is_empty()) {
            // A set: `from_seq` and `targets` may each name 10,000 symbols.
            let wanted: HashSet<u32> = targets.iter().copied().collect();
            for (name, after) in resume {
                let Some(topic) = self.symbols.lookup(name).filter(|t| wanted.contains(t)) else { continue };
                let (ok, join) = self.plan_resume(s, topic, depth, *after, epoch);
                recovered.insert(Cow::Owned(name.clone()), ok);
                if let Some(join) = join {
                    joins.insert(topic, join);
                }
            }
        }
        if announce && !applied.is_empty() {
            let ack = ServerMessage::Ack {
                op: "subscribe".into(),
                symbols: applied.iter().map(|&s| s.into()).collect(),
                epoch: Some(self.epoch),
                recovered,
            };
            self.stage_message(slot, &ack);
        }
        for topic in targets {
            self.want(slot, topic, depth);
            if let Some(s) = self.slots[slot as usize].as_mut() {
                if !s.pending_depth.contains_key(&topic) {
                    continue; // Live at this depth already.
                }
                // (A topic may be in `targets` twice: from "*" and by name.)
                match joins.get(&topic) {
                    Some(&join) => s.joins.insert(topic, join),
                    None => s.joins.remove(&topic),
                };
            }
        }
        if self.release_joins_of(slot) {
            self.joining.retain(|&j| j != slot);
        }
        if !unknown.is_empty() {
            self.unknown_symbols(slot, &unknown);
        }
        if !forbidden.is_empty() {
            self.refuse(
                slot,
                ErrorCode::Forbidden,
                "not entitled to symbol(s)",
                "(token claim \"symbols\")",
                &forbidden,
            );
        }
        if !over_limit.is_empty() {
            let max = limit.unwrap_or(0);
            let why = format!("(token claim \"max_subscriptions\": {max})");
            self.refuse(slot, ErrorCode::Forbidden, "subscription limit reached for", &why, &over_limit);
        }
    }

    pub(super) fn unsubscribe(&mut self, slot: SlotId, symbols: &[String]) {
        let mut unknown = Vec::new();
        let mut applied = Vec::new();
        for name in symbols {
            if name == "*" {
                self.unsubscribe_all(slot, false);
                applied.push(name.as_str());
            } else {
                match self.symbols.lookup(name) {
                    Some(id) if (id as usize) < self.topics.len() => {
                        self.leave(slot, id, false);
                        applied.push(name.as_str());
                    }
                    _ => unknown.push(name.as_str()),
                }
            }
        }
        if !applied.is_empty() {
            let ack = ServerMessage::ack("unsubscribe", applied.iter().map(|&s| s.into()).collect());
            self.stage_message(slot, &ack);
        }
        if !unknown.is_empty() {
            self.unknown_symbols(slot, &unknown);
        }
    }

    /// Drops every subscription of `slot`; `linger`: the session ended, and
    /// holds its history tracks (see `Topic::remove`).
    pub(super) fn unsubscribe_all(&mut self, slot: SlotId, linger: bool) {
        let topics: Vec<u32> = match self.slots[slot as usize].as_mut() {
            Some(s) => {
                if s.wildcard.take().is_some() {
                    self.wildcard.retain(|&x| x != slot);
                }
                s.pending.clear();
                s.joins.clear();
                let cancelled = std::mem::take(&mut s.pending_depth).len() as i64;
                self.metrics.snapshots_pending.fetch_sub(cancelled, Ordering::Relaxed);
                s.topics.keys().copied().collect()
            }
            None => return,
        };
        for topic in topics {
            self.leave(slot, topic, linger);
        }
    }

    fn unknown_symbols(&mut self, slot: SlotId, unknown: &[&str]) {
        self.refuse(
            slot,
            ErrorCode::UnknownSymbol,
            "unknown symbol(s)",
            "(not in the universe; without --symbols-file a symbol is known once the feed has sent it)",
            unknown,
        );
    }

    /// An `error` naming the symbols of a request that were refused (the
    /// message shows the first 20).
    fn refuse(&mut self, slot: SlotId, code: ErrorCode, what: &str, why: &str, names: &[&str]) {
        self.metrics.client_error(code);
        let shown: Vec<&str> = names.iter().take(20).copied().collect();
        let more =
            if names.len() > shown.len() { format!(" and {} more", names.len() - shown.len()) } else { String::new() };
        let msg = ServerMessage::Error {
            code: code.code().into(),
            message: format!("{what}: {}{more} {why}", shown.join(", ")).into(),
            symbols: names.iter().map(|&s| s.into()).collect(),
        };
        self.stage_message(slot, &msg);
    }

    /// Sends an ack or error ahead of queued data (see "Control before
    /// data" in the module doc).
    fn stage_message(&mut self, slot: SlotId, msg: &ServerMessage<'_>) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        let frame = encode_frame(s.encoding, msg, &mut self.scratch);
        s.outbox.push_control(frame);
    }
}

/// The topics a session holds or is about to (subscribed, or pending a
/// snapshot): what counts against a `max_subscriptions`.
fn held(s: &Slot) -> HashSet<u32> {
    s.topics.keys().chain(s.pending_depth.keys()).copied().collect()
}

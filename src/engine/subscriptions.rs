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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::pacing::Pace;
use super::publish::stage;
use super::slot::Slot;
use super::topic::{SlotId, Topic};
use super::Engine;
use crate::auth::Entitlements;
use crate::outbox::Outbox;
use crate::wire::{encode_frame, ErrorCode, ServerMessage};

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
            joining: false,
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
            self.unsubscribe_all(slot);
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
        loop {
            let Some(s) = self.slots[slot as usize].as_mut() else { return true };
            if s.pending.is_empty() {
                s.joining = false;
                s.pending_depth.clear();
                return true;
            }
            // One atomic load per pass; the staged bytes grow as we join.
            let queued = *queued.get_or_insert_with(|| s.outbox.queued_bytes());
            if s.behind || queued + s.staged_bytes >= low_water {
                return false;
            }
            let topic = s.pending.pop_front().expect("not empty");
            // No depth: unsubscribed while pending.
            if let Some(depth) = s.pending_depth.remove(&topic) {
                self.metrics.snapshots_pending.fetch_sub(1, Ordering::Relaxed);
                self.join(slot, topic, depth);
            }
        }
    }

    /// Adds `slot` to topic `topic` at `depth` and stages its snapshot
    /// first; moves it if it was subscribed at another depth.
    fn join(&mut self, slot: SlotId, topic: u32, depth: usize) {
        match self.slots[slot as usize].as_ref().and_then(|s| s.topics.get(&topic)) {
            Some(&d) if d == depth => return,
            Some(_) => self.leave(slot, topic),
            None => {}
        }
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        let t = &mut self.topics[topic as usize];
        let frame = encode_frame(s.encoding, &t.snapshot(depth), &mut self.scratch);
        let pace = &mut self.paces[slot as usize];
        stage(s, &mut self.dirty, pace, slot, frame, self.now);
        pace.urgent = true;
        self.urgent = true;
        t.add(slot, s.encoding, depth);
        s.topics.insert(topic, depth);
        self.metrics.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    fn leave(&mut self, slot: SlotId, topic: u32) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        if s.pending_depth.remove(&topic).is_some() {
            self.metrics.snapshots_pending.fetch_sub(1, Ordering::Relaxed);
        }
        let Some(depth) = s.topics.remove(&topic) else { return };
        s.forget(topic);
        self.topics[topic as usize].remove(slot, s.encoding, depth);
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
        if !applied.is_empty() {
            let ack =
                ServerMessage::Ack { op: "subscribe".into(), symbols: applied.iter().map(|&s| s.into()).collect() };
            self.stage_message(slot, &ack);
        }
        for topic in targets {
            self.want(slot, topic, depth);
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

    pub(super) fn unsubscribe_all(&mut self, slot: SlotId) {
        let topics: Vec<u32> = match self.slots[slot as usize].as_mut() {
            Some(s) => {
                if s.wildcard.take().is_some() {
                    self.wildcard.retain(|&x| x != slot);
                }
                s.pending.clear();
                let cancelled = std::mem::take(&mut s.pending_depth).len() as i64;
                self.metrics.snapshots_pending.fetch_sub(cancelled, Ordering::Relaxed);
                s.topics.keys().copied().collect()
            }
            None => return,
        };
        for topic in topics {
            self.leave(slot, topic);
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

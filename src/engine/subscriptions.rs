//! Sessions coming and going, and what they subscribe to: a session's
//! slot (register, deregister), subscribe and unsubscribe by name or
//! `"*"` (every symbol, now and later), each at a book depth; joining a
//! topic with its snapshot staged first; and the acks and `unknown_symbol`
//! errors these requests produce, sent ahead of queued data.
//!
//! # Snapshots that stream
//! A subscribe names up to 10,000 symbols, and `"*"` every symbol of the
//! universe (up to `--max-symbols`): their snapshots could be megabytes,
//! more than a session may queue before it counts as slow. So a subscribe
//! only queues the topics it names (the session's `pending` cursor) and
//! joins them as the client drains: a chunk of about a quarter of
//! `--conflate-above` of snapshots whenever the session's queue is below
//! half of it (the same marks as conflation recovery, so releasing
//! snapshots never makes a session slow). A topic's live updates start
//! with its snapshot, so every symbol still reads snapshot, then seq + 1
//! on; symbols joined earlier keep flowing meanwhile. A small subscribe
//! fits in the first chunk and is joined at once. A client that stops
//! reading stops the cursor and meets the ladder's stall timeout as usual.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::pacing::Pace;
use super::publish::stage;
use super::slot::Slot;
use super::topic::{SlotId, Topic};
use super::Engine;
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
                let Some(depth) = self.slots[slot as usize].as_ref().and_then(|s| s.wildcard) else { continue };
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
            s.pending_depth.remove(&topic);
            return;
        }
        if s.pending_depth.insert(topic, depth).is_none() {
            s.pending.push_back(topic);
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

    /// Joins `slot`'s pending topics, a chunk of about a quarter of
    /// `--conflate-above` of snapshots, if its queue is below half of it
    /// and it is not behind. Returns whether nothing is pending any more
    /// (the slot is then out of the engine's `joining` list, or must be
    /// taken out by the caller).
    fn release_joins_of(&mut self, slot: SlotId) -> bool {
        let low_water = self.slow.conflate_above / 2;
        let budget = self.slow.conflate_above / 4;
        let mut bytes = 0;
        loop {
            let Some(s) = self.slots[slot as usize].as_mut() else { return true };
            if s.pending.is_empty() {
                s.joining = false;
                s.pending_depth.clear();
                return true;
            }
            if s.behind || bytes >= budget || s.outbox.queued_bytes() + s.staged_bytes > low_water {
                return false;
            }
            let topic = s.pending.pop_front().expect("not empty");
            // No depth: unsubscribed while pending.
            if let Some(depth) = s.pending_depth.remove(&topic) {
                bytes += self.join(slot, topic, depth);
            }
        }
    }

    /// Adds `slot` to topic `topic` at `depth` and stages its snapshot
    /// first; moves it if it was subscribed at another depth. Returns the
    /// snapshot's size (0 if it was already there).
    fn join(&mut self, slot: SlotId, topic: u32, depth: usize) -> usize {
        match self.slots[slot as usize].as_ref().and_then(|s| s.topics.get(&topic)) {
            Some(&d) if d == depth => return 0,
            Some(_) => self.leave(slot, topic),
            None => {}
        }
        let Some(s) = self.slots[slot as usize].as_mut() else { return 0 };
        let t = &mut self.topics[topic as usize];
        let frame = encode_frame(s.encoding, &t.snapshot(depth), &mut self.scratch);
        let len = frame.len();
        let pace = &mut self.paces[slot as usize];
        stage(s, &mut self.dirty, pace, slot, frame, self.now);
        pace.urgent = true;
        self.urgent = true;
        t.add(slot, s.encoding, depth);
        s.topics.insert(topic, depth);
        self.metrics.snapshots_sent.fetch_add(1, Ordering::Relaxed);
        self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        len
    }

    fn leave(&mut self, slot: SlotId, topic: u32) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        s.pending_depth.remove(&topic);
        let Some(depth) = s.topics.remove(&topic) else { return };
        s.forget(topic);
        self.topics[topic as usize].remove(slot, s.encoding, depth);
        self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
    }

    pub(super) fn subscribe(&mut self, slot: SlotId, symbols: &[String], depth: usize) {
        self.sync_topics();
        let mut unknown = Vec::new();
        let mut applied = Vec::new();
        // Ack first, so the client reads it before the snapshots it announces.
        let mut targets = Vec::new();
        for name in symbols {
            if name == "*" {
                if let Some(s) = self.slots[slot as usize].as_mut() {
                    if s.wildcard.replace(depth).is_none() {
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
            self.want(slot, topic, depth);
        }
        if self.release_joins_of(slot) {
            self.joining.retain(|&j| j != slot);
        }
        if !unknown.is_empty() {
            self.unknown_symbols(slot, &unknown);
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
                s.pending_depth.clear();
                s.topics.keys().copied().collect()
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
            message: format!(
                "unknown symbol(s): {}{more} (not in the universe; without --symbols-file a symbol is known once \
                 the feed has sent it)",
                shown.join(", ")
            )
            .into(),
            symbols: unknown.iter().map(|&s| s.into()).collect(),
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

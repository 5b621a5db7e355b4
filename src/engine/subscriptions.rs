//! Sessions coming and going, and what they subscribe to: a session's
//! slot (register, deregister), subscribe and unsubscribe by name or
//! `"*"` (every symbol, now and later), joining a topic with its snapshot
//! staged first, and the acks and `unknown_symbol` errors these requests
//! produce, sent ahead of queued data.

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

    /// The session ended: drops its subscriptions and every reference to
    /// its slot, and frees the slot for reuse.
    pub(super) fn deregister(&mut self, id: u64) {
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

    /// Creates topics for every symbol the table knows, in id order. New
    /// topics get the wildcard subscribers, each with an (empty) snapshot.
    pub(super) fn sync_topics(&mut self) {
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

    pub(super) fn subscribe(&mut self, slot: SlotId, symbols: &[String]) {
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
    /// data" in the module doc).
    fn stage_message(&mut self, slot: SlotId, msg: &ServerMessage<'_>) {
        let Some(s) = self.slots[slot as usize].as_mut() else { return };
        let frame = encode_frame(s.encoding, msg, &mut self.scratch);
        s.outbox.push_control(frame);
    }
}

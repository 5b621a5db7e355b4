//! A cluster's topic images ([`crate::cluster`]): on an edge, installing a
//! sequencer's image of a topic and telling its subscribers; on a
//! sequencer, taking one for an edge's snapshot request.
//!
//! An image arrives through the ring like a tick, so it lands exactly
//! between the updates before and after it. Installing it replaces the
//! topic's state, seq included, and gives every subscriber of the topic a
//! `reset` notice naming the symbol, the image's seq and why, then a fresh
//! snapshot at its depth: encoded once per (depth, encoding) in use, like
//! any update. Updates then follow from the image's seq + 1. A
//! subscriber that was holding the topic's updates back (the ladder) drops
//! that record: the snapshot it gets now supersedes it.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use super::publish::stage;
use super::slot::Join;
use super::Engine;
use crate::model::{Image, Resync};
use crate::ring::ImageInput;
use crate::wire::{encode_frame, Encoding, ResetReason, ServerMessage};

impl Engine {
    /// Installs a sequencer's image of a topic (an edge) and queues
    /// `reset` + snapshot for each of its subscribers.
    pub(super) fn install_image(&mut self, input: ImageInput) {
        let index = input.symbol as usize;
        if index >= self.topics.len() {
            self.sync_topics();
            if index >= self.topics.len() {
                return; // Not in the symbol table: a feed bug.
            }
        }
        let (cause, reason) = match input.cause {
            Resync::Initial => (0, ResetReason::Gap),
            Resync::Gap => (1, ResetReason::Gap),
            Resync::Epoch => (2, ResetReason::Epoch),
            Resync::Reconnect => (3, ResetReason::Reconnect),
        };
        self.metrics.cluster_resyncs[cause].fetch_add(1, Ordering::Relaxed);
        self.epoch = input.epoch;
        let topic = &mut self.topics[index];
        topic.state.install(input.image);
        // The seqs before the image are not this topic's history any more:
        // a client resuming from one gets a reset and a snapshot.
        topic.clear_history(&mut self.history_totals);
        // Resumes still queued for it were asked in the old seqs: they get
        // the reset too, and the snapshot.
        for &slot in &self.joining {
            if let Some(s) = self.slots[slot as usize].as_mut() {
                if let Some(join @ Join::From { .. }) = s.joins.get_mut(&(index as u32)) {
                    *join = Join::Reset(reason);
                }
            }
        }
        let mut snapshots = 0;
        for audience in &topic.audiences {
            for encoding in Encoding::ALL {
                let subscribers = &audience.subscribers[encoding.index()];
                if subscribers.is_empty() {
                    continue;
                }
                let notice = ServerMessage::Reset { sym: Cow::Borrowed(&topic.sym), seq: topic.state.seq, reason };
                let head = encode_frame(encoding, &notice, &mut self.scratch);
                let snapshot = encode_frame(encoding, &topic.snapshot(audience.depth), &mut self.scratch);
                for &slot in subscribers {
                    let Some(s) = self.slots[slot as usize].as_mut() else { continue };
                    s.forget(index as u32);
                    let pace = &mut self.paces[slot as usize];
                    stage(s, &mut self.dirty, pace, slot, head.clone(), self.now);
                    stage(s, &mut self.dirty, pace, slot, snapshot.clone(), self.now);
                    snapshots += 1;
                }
            }
        }
        if snapshots > 0 {
            self.look = true;
            self.metrics.snapshots_sent.fetch_add(snapshots, Ordering::Relaxed);
        }
    }

    /// Seeds topics with the state restored from the tick log at start-up
    /// (`--record` on a directory that already holds one), before any
    /// session exists: seqs then continue from the log's, and the first
    /// snapshots carry the restored state.
    pub fn restore(&mut self, images: Vec<(crate::model::SymbolId, Image)>) {
        self.sync_topics();
        for (id, image) in images {
            if let Some(topic) = self.topics.get_mut(id as usize) {
                topic.state.install(image);
            }
        }
    }

    /// The whole state of `symbol` now, for an edge's snapshot request;
    /// `None` if this server does not know the symbol.
    pub(super) fn image_of(&mut self, symbol: &str) -> Option<Image> {
        let id = self.symbols.lookup(symbol)? as usize;
        if id >= self.topics.len() {
            self.sync_topics();
        }
        let image = self.topics.get(id)?.state.image();
        self.metrics.cluster_snapshots_served.fetch_add(1, Ordering::Relaxed);
        Some(image)
    }
}

//! Publishing a tick: sequence it in its topic, encode it once per
//! encoding that has subscribers, and stage the one shared frame (a
//! `Bytes` clone, a reference count) for each subscriber, or hold it back
//! from a session that is conflating it. [`stage`] is also how snapshots
//! and recovery frames are queued.

use std::time::Instant;

use bytes::Bytes;

use super::pacing::{Pace, FLUSH_BYTES};
use super::slot::Slot;
use super::topic::SlotId;
use super::Engine;
use crate::model::Tick;
use crate::wire::{encode_frame, Encoding, ServerMessage};

impl Engine {
    /// Sequences one tick and stages its frames for every subscriber.
    #[inline]
    pub(super) fn publish(&mut self, tick: Tick, encoded: &mut [u64; 3]) {
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
}

/// Stages `frame` for `slot`; `now` is the engine's clock for this pass.
/// Returns whether the session's staging buffer is now full (it is then
/// marked urgent).
#[inline]
pub(super) fn stage(
    slot: &mut Slot,
    dirty: &mut Vec<SlotId>,
    pace: &mut Pace,
    id: SlotId,
    frame: Bytes,
    now: Instant,
) -> bool {
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

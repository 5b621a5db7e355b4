//! Publishing a tick: sequence it in its topic, encode it once per
//! encoding that has subscribers (a book update once per depth and
//! encoding in use: each depth sees its own delta, see
//! [`crate::model::book`]), and stage the one shared frame (a `Bytes`
//! clone, a reference count) for each subscriber, or hold it back from a
//! session that is conflating it. [`stage`] is also how snapshots and
//! recovery frames are queued.

use std::time::Instant;

use bytes::Bytes;

use super::pacing::{Pace, FLUSH_BYTES};
use super::slot::Slot;
use super::topic::SlotId;
use super::Engine;
use crate::model::{Tick, Update, UpdateKind};
use crate::trace::frame_end;
use crate::wire::{encode_frame, Encoding, ServerMessage};

impl Engine {
    /// Sequences one tick (or takes the seq an upstream sequencer gave it)
    /// and stages its frames for every subscriber.
    #[inline]
    pub(super) fn publish(&mut self, tick: Tick, given_seq: Option<u64>, encoded: &mut [u64; 3]) {
        self.publish_staging(tick, given_seq, encoded, false);
    }

    /// [`publish`](Self::publish); with `traced` (a `--trace-latency`
    /// sample) it also lists who got which frame (`trace.rs`), at the cost
    /// of one branch per frame encoded.
    #[inline]
    pub(super) fn publish_staging(&mut self, tick: Tick, given_seq: Option<u64>, encoded: &mut [u64; 3], traced: bool) {
        let now = self.now;
        let index = tick.symbol as usize;
        if index >= self.topics.len() {
            self.sync_topics();
            if index >= self.topics.len() {
                return; // Not in the symbol table: a feed bug; nothing to publish to.
            }
        }
        let topic = &mut self.topics[index];
        let kind = tick.update.kind();
        if let Update::Book(_) = tick.update {
            if !topic.audiences.is_empty() {
                self.diff.before(&topic.state.book, topic.deepest_partial_view());
            }
        }
        let seq = match given_seq {
            None => topic.apply(&tick.update, tick.ts_event, tick.ts_ingest),
            Some(seq) => topic.apply_sequenced(&tick.update, seq, tick.ts_event, tick.ts_ingest),
        };
        let mut fan = Fan {
            slots: &mut self.slots,
            paces: &mut self.paces,
            dirty: &mut self.dirty,
            skipped: &mut self.skipped,
            urgent: &mut self.urgent,
            symbol: tick.symbol,
            seq,
            kind,
            now,
            traced: if traced { Some(self.trace.staged()) } else { None },
        };
        // History: each frame is also kept in its audience's track, if
        // one is kept (a reference count and a ring slot, no encoding).
        let policy = &self.history;
        let totals = &mut self.history_totals;
        let at = self.clock_ns;
        match &tick.update {
            // Each depth sees its own delta: one frame per audience and
            // encoding in use.
            Update::Book(raw) => {
                for audience in &mut topic.audiences {
                    let view = self.diff.view(&topic.state.book, raw, audience.depth);
                    let checksum = topic.state.book.checksum(audience.depth);
                    for encoding in Encoding::ALL {
                        if !audience.wants(encoding) {
                            continue;
                        }
                        let msg = ServerMessage::book(&*topic.sym, seq, tick.ts_event, tick.ts_ingest, view, checksum);
                        let frame = encode_frame(encoding, &msg, &mut self.scratch);
                        encoded[encoding.index()] += 1;
                        fan.stage_all(&audience.subscribers[encoding.index()], audience.depth, &frame);
                        if let Some(track) = audience.tracks[encoding.index()].as_mut() {
                            track.push(seq, at, &frame, policy, totals);
                        }
                    }
                }
            }
            // Trades and quotes are the same at every depth: one frame per
            // encoding in use, shared by every audience.
            update => {
                for encoding in Encoding::ALL {
                    if !topic.encodes(encoding) {
                        continue;
                    }
                    let msg = ServerMessage::update(&topic.sym, seq, tick.ts_event, tick.ts_ingest, update, 0);
                    let frame = encode_frame(encoding, &msg, &mut self.scratch);
                    encoded[encoding.index()] += 1;
                    for audience in &mut topic.audiences {
                        fan.stage_all(&audience.subscribers[encoding.index()], audience.depth, &frame);
                        if let Some(track) = audience.tracks[encoding.index()].as_mut() {
                            track.push(seq, at, &frame, policy, totals);
                        }
                    }
                }
            }
        }
        if let Some(tap) = self.cluster.as_mut() {
            tap.push(&topic.sym, seq, &tick);
        }
        if let Some(tap) = self.record.as_mut() {
            tap.push(tick, seq);
        }
    }
}

/// One update's fan-out: the engine state staging touches, borrowed apart
/// from the topic being read.
struct Fan<'e> {
    slots: &'e mut [Option<Slot>],
    paces: &'e mut [Pace],
    dirty: &'e mut Vec<SlotId>,
    skipped: &'e mut [u64; 3],
    urgent: &'e mut bool,
    symbol: u32,
    seq: u64,
    kind: UpdateKind,
    now: Instant,
    /// A sampled tick's fan-out: every subscriber staged, with the
    /// [`frame_end`] of the frame it got.
    traced: Option<&'e mut Vec<(SlotId, usize)>>,
}

impl Fan<'_> {
    /// Stages `frame` (a reference count each) for every subscriber in
    /// `subscribers`, or holds it back from one that is conflating; for a
    /// sampled tick, lists each subscriber it was staged for.
    #[inline]
    fn stage_all(&mut self, subscribers: &[SlotId], depth: usize, frame: &Bytes) {
        match self.traced.take() {
            None => self.stage_each(subscribers, depth, frame, |_| {}),
            Some(list) => {
                let end = frame_end(frame);
                self.stage_each(subscribers, depth, frame, |slot| list.push((slot, end)));
                self.traced = Some(list);
            }
        }
    }

    /// The loop of [`stage_all`](Self::stage_all); `staged` is told each
    /// subscriber the frame was staged for.
    #[inline(always)]
    fn stage_each(&mut self, subscribers: &[SlotId], depth: usize, frame: &Bytes, mut staged: impl FnMut(SlotId)) {
        for &slot in subscribers {
            if let Some(s) = self.slots[slot as usize].as_mut() {
                if s.behind && s.hold(self.symbol, self.seq, self.kind, depth) {
                    self.skipped[self.kind as usize] += 1;
                    continue;
                }
                if stage(s, self.dirty, &mut self.paces[slot as usize], slot, frame.clone(), self.now) {
                    *self.urgent = true;
                }
                staged(slot);
            }
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

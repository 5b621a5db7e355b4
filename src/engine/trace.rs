//! The engine's side of `--trace-latency` (see [`crate::trace`]): stamps a
//! sampled tick when it is popped and once it is staged for every
//! subscriber, marks each subscriber that got its frame, and hands each
//! mark to the session's outbox with the frame, at the flush that moves it.
//!
//! A subscriber holds one mark at a time: a second sampled frame staged
//! for it before its flush is not traced (counted as dropped). Marks keep
//! only the frame's identity and the sample's index in a small ring of
//! recent samples, so a session pays 16 bytes for tracing, on or off.

use bytes::Bytes;

use super::slot::Slot;
use super::topic::SlotId;
use super::Engine;
use crate::model::Tick;
use crate::outbox::Outbox;
use crate::trace::{self, FeedStamps, Sample, Tracer};

/// Recent samples kept for marks still waiting for their flush. A flush
/// comes within `MAX_BUDGET_INTERVAL` (10 ms) of staging, so this is
/// ample below 100k sampled ticks/s; a mark whose sample was overwritten
/// is dropped (counted).
const RECENT_SAMPLES: usize = 1024;

/// The engine's tracing state. Empty while tracing is off.
#[derive(Default)]
pub(super) struct EngineTrace {
    /// Subscribers the sampled tick being published was staged for, with
    /// the identity of the frame each got. Capacity reused.
    staged: Vec<(SlotId, usize)>,
    /// The last [`RECENT_SAMPLES`] samples' stamps, by number modulo the
    /// length; each with its number, so an overwritten one is told apart.
    recent: Vec<(u32, Sample)>,
    /// The number of the last sample.
    last: u32,
}

/// A sampled frame staged for a subscriber and not yet flushed: kept in
/// its [`Slot`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Mark {
    /// The frame's [`trace::frame_end`]; 0: no mark.
    frame_end: usize,
    /// The sample's number in [`EngineTrace::recent`].
    sample: u32,
}

impl Mark {
    /// Whether a sampled frame waits in the slot's staged frames.
    #[inline]
    pub(super) fn is_set(&self) -> bool {
        self.frame_end != 0
    }
}

impl EngineTrace {
    /// Where the fan-out of a sampled tick lists who got which frame.
    pub(super) fn staged(&mut self) -> &mut Vec<(SlotId, usize)> {
        &mut self.staged
    }

    /// Ends a sampled tick's fan-out: keeps its stamps and marks every
    /// subscriber its frame was staged for.
    fn mark(&mut self, slots: &mut [Option<Slot>], stamps: Sample, tracer: &Tracer) {
        if self.recent.is_empty() {
            self.recent = vec![(0, Sample::default()); RECENT_SAMPLES];
        }
        self.last = self.last.wrapping_add(1);
        self.recent[self.last as usize % RECENT_SAMPLES] = (self.last, stamps);
        let mut dropped = 0;
        for (slot, frame_end) in self.staged.drain(..) {
            let Some(s) = slots[slot as usize].as_mut() else { continue };
            if s.trace.is_set() {
                dropped += 1;
            } else {
                s.trace = Mark { frame_end, sample: self.last };
            }
        }
        if dropped > 0 {
            tracer.dropped(dropped);
        }
    }

    /// Moves `frames` to `outbox` like [`Outbox::push_data`], with the
    /// sampled frame `mark` names among them (stamped flushed now), and
    /// clears the mark.
    pub(super) fn flush_marked(
        &self,
        mark: &mut Mark,
        outbox: &Outbox,
        frames: &mut Vec<Bytes>,
        bytes: usize,
        now_ns: u64,
        tracer: &Tracer,
    ) {
        let Mark { frame_end, sample } = std::mem::take(mark);
        let stamps = self.recent.get(sample as usize % RECENT_SAMPLES).filter(|(n, _)| *n == sample);
        let Some(&(_, stamps)) = stamps else {
            tracer.dropped(1);
            outbox.push_data(frames, bytes, now_ns);
            return;
        };
        let sample = Sample { frame_end, flushed: trace::now(), ..stamps };
        if !outbox.push_data_traced(frames, bytes, now_ns, sample) {
            tracer.dropped(1);
        }
    }
}

impl Engine {
    /// [`publish`](Self::publish) for a tick the feed sampled: stamps it
    /// popped now and fanned out once staged for every subscriber, and
    /// marks each subscriber's frame.
    pub(super) fn publish_traced(&mut self, tick: Tick, feed: FeedStamps, encoded: &mut [u64; 3]) {
        let popped = trace::now();
        self.publish_staging(tick, None, encoded, true);
        let stamps = Sample { read: feed.read, pushed: feed.pushed, popped, fanned: trace::now(), ..Sample::default() };
        self.trace.mark(&mut self.slots, stamps, &self.metrics.trace);
    }
}

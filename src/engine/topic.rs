//! Per-symbol topic state: sequence numbers, last values and the book.
//!
//! In: ticks from the engine, one at a time, on the engine thread. Out: the
//! seq each update is published with, and snapshots consistent with a seq.
//! A topic also holds its audiences: one per book depth in use, each with a
//! subscriber list per encoding, so the engine knows which (depth,
//! encoding) frames to produce, and produces no others.
//!
//! Nothing here is shared: the engine thread owns every topic, so there are
//! no locks, and a snapshot taken between two updates is exactly the state
//! after the earlier one.

use std::borrow::Cow;
use std::sync::Arc;

use super::history::{HistoryPolicy, HistoryTotals, Track};
use crate::model::{TopicState, Update, FULL_DEPTH};
use crate::wire::{BookLevels, Encoding, ServerMessage};

/// Index of a session in the engine's session slab.
pub type SlotId = u32;

/// The subscribers of one topic at one book depth.
///
/// Trades and quotes are the same at every depth and are encoded once per
/// encoding for all audiences; a book update is encoded once per audience
/// and encoding, because each depth sees its own delta.
#[derive(Debug)]
pub struct Audience {
    /// Book levels per side these subscribers hold.
    pub depth: usize,
    /// Subscribers per encoding, indexed by [`Encoding::index`].
    pub subscribers: [Vec<SlotId>; 3],
    /// The history of what each encoding's subscribers received (see
    /// [`super::history`]); kept a while after the last one left, and
    /// encoded for meanwhile, so that it can resume.
    pub tracks: [Option<Track>; 3],
}

impl Audience {
    /// Whether no session is left in it.
    pub fn is_empty(&self) -> bool {
        self.subscribers.iter().all(Vec::is_empty)
    }

    /// Whether frames of `encoding` are produced for it: for subscribers,
    /// or for history.
    #[inline]
    pub fn wants(&self, encoding: Encoding) -> bool {
        !self.subscribers[encoding.index()].is_empty() || self.tracks[encoding.index()].is_some()
    }
}

/// One symbol's state and audience.
pub struct Topic {
    /// The symbol's name, shared with the symbol table.
    pub sym: Arc<str>,
    /// Seq, last values and the full book; the next update gets seq + 1.
    pub state: TopicState,
    /// One audience per depth in use, none empty (a handful at most: depths
    /// come from a fixed menu).
    pub audiences: Vec<Audience>,
}

impl Topic {
    /// An empty topic for `sym`.
    pub fn new(sym: Arc<str>) -> Topic {
        Topic { sym, state: TopicState::default(), audiences: Vec::new() }
    }

    /// Applies one update and returns the seq it is published with.
    #[inline]
    pub fn apply(&mut self, update: &Update, ts_event: u64, ts_ingest: u64) -> u64 {
        let seq = self.state.seq + 1;
        self.state.apply(update, seq, ts_event, ts_ingest);
        seq
    }

    /// Applies one update a sequencer already sequenced, with its `seq`
    /// (an edge: the ring's producer guarantees it is `seq + 1` of the
    /// last, and the topic takes it as given, so an edge never invents a
    /// seq).
    #[inline]
    pub fn apply_sequenced(&mut self, update: &Update, seq: u64, ts_event: u64, ts_ingest: u64) -> u64 {
        self.state.apply(update, seq, ts_event, ts_ingest);
        seq
    }

    /// The snapshot of this topic now, with the book cut to `depth` levels
    /// and its checksum at that depth.
    pub fn snapshot(&self, depth: usize) -> ServerMessage<'_> {
        let s = &self.state;
        ServerMessage::Snapshot {
            sym: Cow::Borrowed(&self.sym),
            seq: s.seq,
            ts_event: s.ts_event,
            ts_ingest: s.ts_ingest,
            quote: s.quote,
            trade: s.trade,
            depth: depth.min(FULL_DEPTH) as u32,
            book: BookLevels {
                bids: Cow::Borrowed(s.book.bids(depth)),
                asks: Cow::Borrowed(s.book.asks(depth)),
                checksum: s.book.checksum(depth),
            },
        }
    }

    /// Adds `slot` (of `encoding`) to the audience at `depth`, creating it,
    /// and starts (or keeps) that audience's history track if `history`.
    pub fn add(&mut self, slot: SlotId, encoding: Encoding, depth: usize, history: bool) {
        let i = self.audience_at(depth);
        let audience = &mut self.audiences[i];
        audience.subscribers[encoding.index()].push(slot);
        if history {
            audience.tracks[encoding.index()].get_or_insert_with(|| Track::new(self.state.seq));
        }
    }

    /// The index of the audience at `depth`, created if need be.
    fn audience_at(&mut self, depth: usize) -> usize {
        match self.audiences.iter().position(|a| a.depth == depth) {
            Some(i) => i,
            None => {
                self.audiences.push(Audience { depth, subscribers: Default::default(), tracks: Default::default() });
                self.audiences.len() - 1
            }
        }
    }

    /// Removes `slot` (of `encoding`) from the audience at `depth`. A
    /// session that ended (`linger`) holds the history track for
    /// `policy.linger` from `now` (engine clock, ns), to come back to. A
    /// track left with no subscriber and no hold goes at once (its frames
    /// out of `totals`), and an audience with neither subscribers nor
    /// tracks goes too, so that no depth is computed for no one.
    pub fn remove(
        &mut self,
        slot: SlotId,
        encoding: Encoding,
        depth: usize,
        (now, linger): (u64, bool),
        policy: &HistoryPolicy,
        totals: &mut HistoryTotals,
    ) {
        let Some(i) = self.audiences.iter().position(|a| a.depth == depth) else { return };
        let audience = &mut self.audiences[i];
        let subs = &mut audience.subscribers[encoding.index()];
        if let Some(j) = subs.iter().position(|&x| x == slot) {
            subs.swap_remove(j);
        }
        let empty = subs.is_empty();
        let track = &mut audience.tracks[encoding.index()];
        if let Some(t) = track.as_mut() {
            if linger {
                t.hold(now, policy.linger);
            }
            if empty && !t.held(now) {
                if let Some(t) = track.take() {
                    t.release(totals);
                }
            }
        }
        if audience.is_empty() && audience.tracks.iter().all(Option::is_none) {
            self.audiences.swap_remove(i);
        }
    }

    /// Starts the history track of (`depth`, `encoding`) if there is none,
    /// and holds it for at least `hold` from `now` even if no one
    /// subscribes (a rewind about to join it).
    pub fn retain(&mut self, depth: usize, encoding: Encoding, now: u64, hold: std::time::Duration) {
        let i = self.audience_at(depth);
        let seq = self.state.seq;
        self.audiences[i].tracks[encoding.index()].get_or_insert_with(|| Track::new(seq)).hold(now, hold);
    }

    /// The history track of (`depth`, `encoding`), if one is kept.
    pub fn track(&self, depth: usize, encoding: Encoding) -> Option<&Track> {
        self.audiences.iter().find(|a| a.depth == depth)?.tracks[encoding.index()].as_ref()
    }

    /// Lets go of history older than `policy.keep` before `now`, and of
    /// tracks with no subscriber whose hold has ended (with their
    /// audience, if nobody is left in it). Called from the engine's
    /// periodic sweep, so that a symbol that stopped ticking gives its
    /// history back too.
    pub fn sweep_history(&mut self, now: u64, policy: &HistoryPolicy, totals: &mut HistoryTotals) {
        let before = now.saturating_sub(policy.keep.as_nanos() as u64);
        for audience in &mut self.audiences {
            for (subs, slot) in audience.subscribers.iter().zip(&mut audience.tracks) {
                if subs.is_empty() && slot.as_ref().is_some_and(|t| !t.held(now)) {
                    if let Some(track) = slot.take() {
                        track.release(totals);
                    }
                } else if let Some(track) = slot.as_mut() {
                    track.expire(before, totals);
                }
            }
        }
        self.audiences.retain(|a| !a.is_empty() || a.tracks.iter().any(Option::is_some));
    }

    /// Empties every track: the topic's state was replaced (an edge's
    /// re-sync), and its history goes on from the new seq.
    pub fn clear_history(&mut self, totals: &mut HistoryTotals) {
        let seq = self.state.seq;
        for audience in &mut self.audiences {
            for track in audience.tracks.iter_mut().flatten() {
                track.clear(seq, totals);
            }
        }
    }

    /// Whether frames of `encoding` are produced, for a subscriber or for
    /// history, at any depth.
    #[inline]
    pub fn encodes(&self, encoding: Encoding) -> bool {
        self.audiences.iter().any(|a| a.wants(encoding))
    }

    /// Total subscribers over all depths and encodings.
    pub fn subscriber_count(&self) -> usize {
        self.audiences.iter().flat_map(|a| a.subscribers.iter()).map(Vec::len).sum()
    }

    /// The deepest view below full depth in use (0 if none): how much of
    /// the book a book update must remember to diff every view.
    pub fn deepest_partial_view(&self) -> usize {
        self.audiences.iter().map(|a| a.depth).filter(|&d| d < FULL_DEPTH).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Quote, Trade};

    #[test]
    fn seq_counts_every_update_and_snapshot_reflects_state() {
        let mut topic = Topic::new("AAPL".into());
        let q = Quote { bid: 1.0, bid_sz: 2.0, ask: 3.0, ask_sz: 4.0 };
        assert_eq!(topic.apply(&Update::Quote(q), 10, 11), 1);
        let t = Trade { px: 2.0, sz: 5.0, side: Default::default() };
        assert_eq!(topic.apply(&Update::Trade(t), 12, 13), 2);
        match topic.snapshot(5) {
            ServerMessage::Snapshot { seq, quote, trade, ts_event, .. } => {
                assert_eq!((seq, quote, trade, ts_event), (2, Some(q), Some(t), 12));
            }
            other => panic!("{other:?}"),
        }
    }
}

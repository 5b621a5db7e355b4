//! Per-symbol topic state: sequence numbers, last values and the book.
//!
//! In: ticks from the engine, one at a time, on the engine thread. Out: the
//! seq each update is published with, and snapshots consistent with a seq.
//! A topic also holds its subscriber lists, one per encoding, so the engine
//! knows which encodings to produce (and produces no others).
//!
//! Nothing here is shared: the engine thread owns every topic, so there are
//! no locks, and a snapshot taken between two updates is exactly the state
//! after the earlier one.

use std::borrow::Cow;
use std::sync::Arc;

use crate::model::{Book, Quote, Trade, Update};
use crate::wire::{BookLevels, Encoding, ServerMessage};

/// Index of a session in the engine's session slab.
pub type SlotId = u32;

/// One symbol's state and audience.
pub struct Topic {
    /// The symbol's name, shared with the symbol table.
    pub sym: Arc<str>,
    /// Seq of the last update; 0 before the first. The next update gets +1.
    pub seq: u64,
    /// Event time of the last update.
    pub ts_event: u64,
    /// Ingest time of the last update.
    pub ts_ingest: u64,
    /// Last quote, if any.
    pub last_quote: Option<Quote>,
    /// Last trade, if any.
    pub last_trade: Option<Trade>,
    /// The full book (bounded by [`MAX_BOOK_LEVELS`](crate::model::MAX_BOOK_LEVELS)).
    pub book: Book,
    /// Subscribers per encoding, indexed by [`Encoding::index`].
    pub subscribers: [Vec<SlotId>; 3],
}

impl Topic {
    /// An empty topic for `sym`.
    pub fn new(sym: Arc<str>) -> Topic {
        Topic {
            sym,
            seq: 0,
            ts_event: 0,
            ts_ingest: 0,
            last_quote: None,
            last_trade: None,
            book: Book::default(),
            subscribers: Default::default(),
        }
    }

    /// Applies one update and returns the seq it is published with.
    pub fn apply(&mut self, update: &Update, ts_event: u64, ts_ingest: u64) -> u64 {
        match update {
            Update::Trade(t) => self.last_trade = Some(*t),
            Update::Quote(q) => self.last_quote = Some(*q),
            Update::Book(delta) => self.book.apply(delta),
        }
        self.seq += 1;
        self.ts_event = ts_event;
        self.ts_ingest = ts_ingest;
        self.seq
    }

    /// The snapshot of this topic now, with the book cut to `depth` levels.
    pub fn snapshot(&self, depth: usize) -> ServerMessage<'_> {
        ServerMessage::Snapshot {
            sym: Cow::Borrowed(&self.sym),
            seq: self.seq,
            ts_event: self.ts_event,
            ts_ingest: self.ts_ingest,
            quote: self.last_quote,
            trade: self.last_trade,
            book: BookLevels { bids: Cow::Borrowed(self.book.bids(depth)), asks: Cow::Borrowed(self.book.asks(depth)) },
        }
    }

    /// Whether any session of `encoding` subscribes.
    pub fn has_subscribers(&self, encoding: Encoding) -> bool {
        !self.subscribers[encoding.index()].is_empty()
    }

    /// Total subscribers over all encodings.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

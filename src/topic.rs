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
use std::cmp::Ordering;
use std::sync::Arc;

use crate::codec::{BookLevels, Encoding, ServerMessage};
use crate::tick::{BookDelta, Level, Quote, Trade, Update};

/// Most levels a book keeps per side. Levels beyond it (the worst prices)
/// are dropped, so a feed that never deletes cannot grow memory without
/// bound. Snapshots show only `--book-depth` of them.
pub const MAX_BOOK_LEVELS: usize = 4096;

/// An L2 book: price levels per side, best first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Book {
    /// Bids, highest price first.
    bids: Vec<Level>,
    /// Asks, lowest price first.
    asks: Vec<Level>,
}

impl Book {
    /// Applies a delta: each level replaces the size at its price, size 0
    /// deletes the level (a delete of an absent level is a no-op).
    pub fn apply(&mut self, delta: &BookDelta) {
        for level in &delta.bids {
            // Bids sort descending: compare the probe against the element.
            upsert(&mut self.bids, *level, |l| level.px.total_cmp(&l.px));
        }
        for level in &delta.asks {
            upsert(&mut self.asks, *level, |l| l.px.total_cmp(&level.px));
        }
    }

    /// The best `depth` bids, highest first.
    pub fn bids(&self, depth: usize) -> &[Level] {
        &self.bids[..self.bids.len().min(depth)]
    }

    /// The best `depth` asks, lowest first.
    pub fn asks(&self, depth: usize) -> &[Level] {
        &self.asks[..self.asks.len().min(depth)]
    }
}

fn upsert(side: &mut Vec<Level>, level: Level, cmp: impl FnMut(&Level) -> Ordering) {
    match side.binary_search_by(cmp) {
        Ok(i) if level.sz == 0.0 => {
            side.remove(i);
        }
        Ok(i) => side[i].sz = level.sz,
        Err(_) if level.sz == 0.0 => {}
        Err(i) => {
            if i < MAX_BOOK_LEVELS {
                side.insert(i, level);
                side.truncate(MAX_BOOK_LEVELS);
            }
        }
    }
}

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
    /// The full book (bounded by [`MAX_BOOK_LEVELS`]).
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

    fn lv(px: f64, sz: f64) -> Level {
        Level { px, sz }
    }

    #[test]
    fn book_keeps_sides_sorted_and_deletes_on_zero() {
        let mut book = Book::default();
        book.apply(&BookDelta {
            bids: vec![lv(99.0, 1.0), lv(100.0, 2.0), lv(98.0, 3.0)],
            asks: vec![lv(102.0, 1.0), lv(101.0, 2.0), lv(103.0, 3.0)],
        });
        assert_eq!(book.bids(10), &[lv(100.0, 2.0), lv(99.0, 1.0), lv(98.0, 3.0)]);
        assert_eq!(book.asks(2), &[lv(101.0, 2.0), lv(102.0, 1.0)]);
        book.apply(&BookDelta { bids: vec![lv(100.0, 0.0), lv(99.0, 5.0), lv(97.5, 0.0)], asks: vec![] });
        assert_eq!(book.bids(10), &[lv(99.0, 5.0), lv(98.0, 3.0)]);
    }

    #[test]
    fn book_is_bounded() {
        let mut book = Book::default();
        let bids = (0..MAX_BOOK_LEVELS + 10).map(|i| lv(i as f64, 1.0)).collect();
        book.apply(&BookDelta { bids, asks: vec![] });
        assert_eq!(book.bids(usize::MAX).len(), MAX_BOOK_LEVELS);
        assert_eq!(book.bids(1)[0].px, (MAX_BOOK_LEVELS + 9) as f64, "the best levels are kept");
    }

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

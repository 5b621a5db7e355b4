//! One symbol's state, folded from its updates: what every node keeps of a
//! topic and what a snapshot or an image is taken from.
//!
//! The engine keeps one per topic ([`crate::engine::topic::Topic`]); the
//! tick-log restore folds a recording into one per symbol to seed it
//! (`recorded::ticklog::restore`). One fold serves both, so a restored
//! topic is exactly the one the engine had.

use super::book::{Book, FULL_DEPTH};
use super::record::Image;
use super::tick::{BookDelta, Quote, Trade, Update};

/// The state of one symbol after update `seq`.
#[derive(Clone, Debug, Default)]
pub struct TopicState {
    /// Seq of the last update; 0 before the first.
    pub seq: u64,
    /// Event time of the last update.
    pub ts_event: u64,
    /// Ingest time of the last update.
    pub ts_ingest: u64,
    /// Last quote, if any.
    pub quote: Option<Quote>,
    /// Last trade, if any.
    pub trade: Option<Trade>,
    /// The full book (bounded by [`MAX_BOOK_LEVELS`](super::MAX_BOOK_LEVELS)).
    pub book: Book,
}

impl TopicState {
    /// Folds one update in; `seq` becomes the state's seq (the caller
    /// decides it: the engine's next, a sequencer's, or a log's).
    #[inline]
    pub fn apply(&mut self, update: &Update, seq: u64, ts_event: u64, ts_ingest: u64) {
        match update {
            Update::Trade(t) => self.trade = Some(*t),
            Update::Quote(q) => self.quote = Some(*q),
            Update::Book(delta) => self.book.apply(delta),
        }
        self.seq = seq;
        self.ts_event = ts_event;
        self.ts_ingest = ts_ingest;
    }

    /// Replaces the whole state with `image`. The book is rebuilt through
    /// [`Book::apply`], so an image is held to the same order, bound and
    /// zero-size rules as any delta.
    pub fn install(&mut self, image: Image) {
        let Image { seq, ts_event, ts_ingest, quote, trade, bids, asks } = image;
        *self = TopicState { seq, ts_event, ts_ingest, quote, trade, book: Book::default() };
        self.book.apply(&BookDelta { bids, asks });
    }

    /// The whole state as an [`Image`]: an edge's snapshot reply, a
    /// restored topic.
    pub fn image(&self) -> Image {
        Image {
            seq: self.seq,
            ts_event: self.ts_event,
            ts_ingest: self.ts_ingest,
            quote: self.quote,
            trade: self.trade,
            bids: self.book.bids(FULL_DEPTH).to_vec(),
            asks: self.book.asks(FULL_DEPTH).to_vec(),
        }
    }
}

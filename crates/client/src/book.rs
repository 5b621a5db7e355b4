//! A client-side order book for one symbol at one depth, checked against
//! the server's checksum after every change.
//!
//! The rule (`docs/PROTOCOL.md`, "Books"): start from a snapshot's `book`;
//! for each `book` message set each listed level's size at its price,
//! deleting levels of size 0; keep the best `depth` levels per side; the
//! message's `checksum` must then match the book's. A mismatch means the
//! client's book is wrong (a lost message, a bug): the caller resubscribes.
//!
//! The checksum is computed here from the protocol's definition (CRC-32
//! over the best `min(depth, 10)` asks then bids, price and size as
//! little-endian binary64), not borrowed from the server's code, so that
//! the tests compare two independent implementations.
//!
//! Imports: `tickcast::model::Level` (the wire's level type) and
//! `tickcast::wire::BookLevels` (a snapshot's book).

use std::cmp::Ordering;

use tickcast::model::Level;
use tickcast::wire::BookLevels;

/// Levels per side the checksum covers at most (`docs/PROTOCOL.md`).
const CHECKSUM_LEVELS: usize = 10;

/// Why a book could not be taken or kept: the caller's cue to resubscribe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// The book after a snapshot or a `book` message does not hash to the
    /// checksum the server sent with it.
    #[error("book checksum mismatch: server sent {expected}, the client's book hashes to {got}")]
    ChecksumMismatch {
        /// The checksum the server sent.
        expected: u32,
        /// The checksum of the client's book.
        got: u32,
    },
}

/// The top `depth` levels per side of one symbol's book, as a client
/// following the protocol's book rule holds them.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientBook {
    depth: usize,
    /// Highest price first.
    bids: Vec<Level>,
    /// Lowest price first.
    asks: Vec<Level>,
}

impl ClientBook {
    /// An empty book seen at `depth` levels per side (a `"full"`
    /// subscription is depth 4096, what its snapshots say). A depth of 0 is
    /// taken as 1, so no input makes the book unusable.
    pub fn new(depth: usize) -> ClientBook {
        ClientBook { depth: depth.max(1), bids: Vec::new(), asks: Vec::new() }
    }

    /// A book loaded from a snapshot's `book` at the snapshot's `depth`,
    /// checked against its checksum. The levels are sorted and trimmed to
    /// `depth` whatever order they came in; a level of size 0 is dropped.
    pub fn from_snapshot(depth: usize, book: &BookLevels<'_>) -> Result<ClientBook, BookError> {
        let mut this = ClientBook::new(depth);
        this.apply_levels(&book.bids, &book.asks);
        this.verify(book.checksum)?;
        Ok(this)
    }

    /// Applies a `book` message's changed levels, then checks the book
    /// against the message's `checksum`. On a mismatch the levels stay
    /// applied (the book is wrong either way) and the caller should
    /// resubscribe.
    pub fn apply(&mut self, bids: &[Level], asks: &[Level], checksum: u32) -> Result<(), BookError> {
        self.apply_levels(bids, asks);
        self.verify(checksum)
    }

    /// Sets each level's size at its price (size 0 deletes), then keeps
    /// the best `depth` levels per side.
    fn apply_levels(&mut self, bids: &[Level], asks: &[Level]) {
        for level in bids {
            // Bids sort descending: compare the probe against the element.
            upsert(&mut self.bids, *level, |l| level.px.total_cmp(&l.px));
        }
        for level in asks {
            upsert(&mut self.asks, *level, |l| l.px.total_cmp(&level.px));
        }
        self.bids.truncate(self.depth);
        self.asks.truncate(self.depth);
    }

    fn verify(&self, expected: u32) -> Result<(), BookError> {
        let got = self.checksum();
        if got == expected {
            Ok(())
        } else {
            Err(BookError::ChecksumMismatch { expected, got })
        }
    }

    /// The protocol's checksum of this book at its depth.
    pub fn checksum(&self) -> u32 {
        let k = self.depth.min(CHECKSUM_LEVELS);
        let mut hasher = crc32fast::Hasher::new();
        for level in self.asks.iter().take(k).chain(self.bids.iter().take(k)) {
            hasher.update(&level.px.to_le_bytes());
            hasher.update(&level.sz.to_le_bytes());
        }
        hasher.finalize()
    }

    /// Bids, highest price first, at most `depth`.
    pub fn bids(&self) -> &[Level] {
        &self.bids
    }

    /// Asks, lowest price first, at most `depth`.
    pub fn asks(&self) -> &[Level] {
        &self.asks
    }

    /// Levels per side this book keeps.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// Sets `level` in `side` (sorted by `cmp`, which compares an element with
/// the probe): replaces the size at its price, inserts it, or deletes the
/// level when its size is 0.
fn upsert(side: &mut Vec<Level>, level: Level, cmp: impl Fn(&Level) -> Ordering) {
    match side.binary_search_by(cmp) {
        Ok(i) if level.sz == 0.0 => {
            side.remove(i);
        }
        Ok(i) => side[i].sz = level.sz,
        Err(_) if level.sz == 0.0 => {}
        Err(i) => side.insert(i, level),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn lv(px: f64, sz: f64) -> Level {
        Level { px, sz }
    }

    fn snapshot(bids: &[Level], asks: &[Level], depth: usize) -> BookLevels<'static> {
        BookLevels {
            bids: Cow::Owned(bids.to_vec()),
            asks: Cow::Owned(asks.to_vec()),
            checksum: tickcast::model::checksum(bids, asks, depth),
        }
    }

    #[test]
    fn the_worked_example_of_the_protocol_doc() {
        let book = BookLevels {
            bids: Cow::Owned(vec![lv(189.48, 100.0), lv(189.47, 500.0)]),
            asks: Cow::Owned(vec![lv(189.5, 200.0)]),
            checksum: 1650949194,
        };
        let mut b = ClientBook::from_snapshot(10, &book).expect("the doc's checksum");
        b.apply(&[lv(189.49, 300.0)], &[], 3261367760).expect("the doc's book message");
        assert_eq!(b.bids()[0], lv(189.49, 300.0));
        assert_eq!(ClientBook::new(10).checksum(), 0, "an empty book");
    }

    #[test]
    fn deletes_inserts_and_keeps_the_best_depth_levels() {
        let bids = [lv(10.0, 1.0), lv(9.0, 1.0), lv(8.0, 1.0), lv(7.0, 1.0), lv(6.0, 1.0)];
        let asks = [lv(11.0, 2.0), lv(12.0, 2.0), lv(13.0, 2.0), lv(14.0, 2.0), lv(15.0, 2.0)];
        let mut b = ClientBook::from_snapshot(5, &snapshot(&bids, &asks, 5)).unwrap();
        // The best bid leaves, a level below enters (what the server's depth
        // view sends); an ask is resized and a better one inserted, pushing
        // the worst out of the top 5.
        let new_bids = [lv(9.0, 1.0), lv(8.0, 1.0), lv(7.0, 1.0), lv(6.0, 1.0), lv(5.0, 4.0)];
        let new_asks = [lv(10.5, 1.0), lv(11.0, 3.0), lv(12.0, 2.0), lv(13.0, 2.0), lv(14.0, 2.0)];
        let ck = tickcast::model::checksum(&new_bids, &new_asks, 5);
        b.apply(&[lv(10.0, 0.0), lv(5.0, 4.0)], &[lv(11.0, 3.0), lv(10.5, 1.0)], ck).unwrap();
        assert_eq!(b.bids(), &new_bids);
        assert_eq!(b.asks(), &new_asks);
        // A delete of an absent level changes nothing.
        b.apply(&[lv(1.0, 0.0)], &[], ck).unwrap();
    }

    #[test]
    fn a_checksum_mismatch_is_a_typed_error() {
        let bids = [lv(100.0, 1.0)];
        let asks = [lv(101.0, 1.0)];
        let mut b = ClientBook::from_snapshot(10, &snapshot(&bids, &asks, 10)).unwrap();
        // The server's book has a bid at 99 the client never heard of.
        let server = tickcast::model::checksum(&[lv(100.0, 2.0), lv(99.0, 1.0)], &asks, 10);
        let err = b.apply(&[lv(100.0, 2.0)], &[], server).unwrap_err();
        let BookError::ChecksumMismatch { expected, got } = err;
        assert_eq!(expected, server);
        assert_eq!(got, tickcast::model::checksum(&[lv(100.0, 2.0)], &asks, 10));
        // A snapshot whose checksum disagrees with its own levels.
        let mut bad = snapshot(&bids, &asks, 10);
        bad.checksum ^= 1;
        assert!(ClientBook::from_snapshot(10, &bad).is_err());
    }

    #[test]
    fn agrees_with_the_server_checksum_over_random_books_and_depths() {
        let mut rng = fastrand::Rng::with_seed(7);
        for depth in [1, 5, 10, 20] {
            let mut server = tickcast::model::Book::default();
            let mut b = ClientBook::new(depth);
            for _ in 0..500 {
                let mut delta = tickcast::model::BookDelta::default();
                for _ in 0..rng.usize(1..4) {
                    let px = 100.0 + rng.u32(0..40) as f64 * 0.5;
                    let sz = if rng.bool() { 0.0 } else { rng.u32(1..9) as f64 };
                    if px < 110.0 {
                        delta.bids.push(lv(px, sz));
                    } else {
                        delta.asks.push(lv(px, sz));
                    }
                }
                // The view a depth subscriber gets: the diff of the server's
                // top `depth` before and after.
                let mut diff = tickcast::model::DepthDiff::default();
                diff.before(&server, depth);
                server.apply(&delta);
                let view = diff.view(&server, &delta, depth).clone();
                b.apply(&view.bids, &view.asks, server.checksum(depth)).expect("in step with the server");
                assert_eq!(b.bids(), server.bids(depth));
                assert_eq!(b.asks(), server.asks(depth));
            }
        }
    }

    #[test]
    fn odd_input_does_not_panic() {
        let mut b = ClientBook::new(0);
        assert_eq!(b.depth(), 1);
        let _ = b.apply(&[lv(f64::NAN, 1.0), lv(f64::INFINITY, 0.0)], &[lv(-0.0, f64::NAN)], 0);
    }
}

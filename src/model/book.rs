//! An L2 order book: price levels per side, best first, bounded.
//!
//! The engine keeps one per topic, and the replay feed one per symbol to
//! fold book changes before `--from`. Nothing here knows about seqs,
//! subscribers or encodings.

use std::cmp::Ordering;

use super::tick::{BookDelta, Level};

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
}

//! An L2 order book: price levels per side, best first, bounded; the
//! depth views clients subscribe to; and the book checksum.
//!
//! The engine keeps one full book per topic, and the replay feed one per
//! symbol to fold book changes before `--from`. Nothing here knows about
//! seqs, subscribers or encodings.
//!
//! # Depth views
//! A client subscribes at a depth ([`valid_depth`]: one of [`DEPTHS`], or
//! [`FULL_DEPTH`]). What it holds is the top `depth` levels per side of the
//! server's book, and every book update it gets is the delta that takes its
//! view from the previous top `depth` to the new one ([`DepthDiff`]):
//! levels that changed within it, levels that entered it (because better
//! ones were deleted, say), and levels that left it, with size 0. A client
//! that applies each delta and then keeps the best `depth` levels per side
//! holds exactly the server's top `depth` after every update, whichever
//! snapshot it started from. At full depth the delta is the feed's own;
//! keeping the best [`MAX_BOOK_LEVELS`] is then the rule the server's book
//! follows too.
//!
//! # Checksum
//! [`checksum`]: CRC-32 (IEEE, as zlib's `crc32`) over the best
//! `min(depth, CHECKSUM_LEVELS)` asks, lowest first, then as many bids,
//! highest first, each level as its price then its size in little-endian
//! IEEE-754 binary64 (16 bytes a level). Binary, so that every client
//! computes it from the exact doubles it received, with no decimal
//! formatting to agree on. docs/PROTOCOL.md has a worked example.

use std::cmp::Ordering;

use super::tick::{BookDelta, Level};

/// Most levels a book keeps per side. Levels beyond it (the worst prices)
/// are dropped, so a feed that never deletes cannot grow memory without
/// bound. It is also what a `"full"` depth subscription holds.
pub const MAX_BOOK_LEVELS: usize = 4096;

/// The depths (levels per side) a client may subscribe at, besides
/// [`FULL_DEPTH`]. A fixed menu, as exchanges offer, so that a topic keeps
/// at most this many views plus full, and encodes each book update at most
/// once per view and encoding in use, whatever its clients ask.
pub const DEPTHS: [usize; 9] = [1, 5, 10, 20, 25, 50, 100, 500, 1000];

/// The depth of a `"full"` subscription: the whole book the server keeps.
pub const FULL_DEPTH: usize = MAX_BOOK_LEVELS;

/// Levels per side the [`checksum`] covers at most (as Kraken's book
/// checksum): enough to catch a wrong book at the top, where clients look,
/// for a cost that does not grow with the depth.
pub const CHECKSUM_LEVELS: usize = 10;

/// Whether a client may subscribe at `depth` levels per side.
pub fn valid_depth(depth: usize) -> bool {
    depth == FULL_DEPTH || DEPTHS.contains(&depth)
}

/// The book checksum (see the module doc) of a book whose best levels are
/// `bids` and `asks`, seen at `depth`.
pub fn checksum(bids: &[Level], asks: &[Level], depth: usize) -> u32 {
    let k = depth.min(CHECKSUM_LEVELS);
    // The whole string on the stack, hashed in one call: one call per
    // field cost 10x more than the hashing itself (benches/books.rs).
    let mut bytes = [0u8; 2 * CHECKSUM_LEVELS * 16];
    let mut n = 0;
    for level in asks.iter().take(k).chain(bids.iter().take(k)) {
        bytes[n..n + 8].copy_from_slice(&level.px.to_le_bytes());
        bytes[n + 8..n + 16].copy_from_slice(&level.sz.to_le_bytes());
        n += 16;
    }
    crc32fast::hash(&bytes[..n])
}

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

    /// The [`checksum`] of this book seen at `depth`.
    pub fn checksum(&self, depth: usize) -> u32 {
        checksum(&self.bids, &self.asks, depth)
    }
}

/// Turns a full-depth delta into the delta of each depth view (see the
/// module doc), reusing its buffers from tick to tick.
///
/// Call [`before`](DepthDiff::before) with the book and the deepest view
/// in use, apply the delta to the book, then call
/// [`view`](DepthDiff::view) once per depth. Costs O(depth) per view: it
/// merges the old top with the new one.
#[derive(Debug, Default)]
pub struct DepthDiff {
    /// The top of the book before the delta, to the deepest view.
    old: BookDelta,
    /// The last view delta produced.
    out: BookDelta,
}

impl DepthDiff {
    /// Remembers the top `depth` levels of `book`, before a delta is
    /// applied to it. Full-depth views need nothing remembered.
    pub fn before(&mut self, book: &Book, depth: usize) {
        self.old.bids.clear();
        self.old.asks.clear();
        if depth < FULL_DEPTH {
            self.old.bids.extend_from_slice(book.bids(depth));
            self.old.asks.extend_from_slice(book.asks(depth));
        }
    }

    /// The delta a `depth` view sees, now that `raw` has been applied to
    /// `book`. `depth` must not exceed what [`before`](Self::before) was
    /// given, unless it is [`FULL_DEPTH`], whose view is `raw` itself.
    pub fn view<'a>(&'a mut self, book: &Book, raw: &'a BookDelta, depth: usize) -> &'a BookDelta {
        if depth >= FULL_DEPTH {
            return raw;
        }
        self.out.bids.clear();
        self.out.asks.clear();
        let old_bids = &self.old.bids[..self.old.bids.len().min(depth)];
        let old_asks = &self.old.asks[..self.old.asks.len().min(depth)];
        // A side no level of `raw` touched has the same top as before.
        if !raw.bids.is_empty() {
            diff_side(old_bids, book.bids(depth), |a, b| a.total_cmp(&b).is_gt(), &mut self.out.bids);
        }
        if !raw.asks.is_empty() {
            diff_side(old_asks, book.asks(depth), |a, b| a.total_cmp(&b).is_lt(), &mut self.out.asks);
        }
        &self.out
    }
}

/// Appends to `out` what takes the side `old` to `new` (both best first;
/// `better(a, b)`: price `a` ranks before price `b`): changed and new
/// levels at their new size, and vanished ones at size 0.
fn diff_side(old: &[Level], new: &[Level], better: impl Fn(f64, f64) -> bool, out: &mut Vec<Level>) {
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        let (o, n) = (old[i], new[j]);
        if o.px.to_bits() == n.px.to_bits() {
            if o.sz.to_bits() != n.sz.to_bits() {
                out.push(n);
            }
            i += 1;
            j += 1;
        } else if better(o.px, n.px) {
            out.push(Level { px: o.px, sz: 0.0 });
            i += 1;
        } else {
            out.push(n);
            j += 1;
        }
    }
    out.extend(old[i..].iter().map(|o| Level { px: o.px, sz: 0.0 }));
    out.extend_from_slice(&new[j..]);
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

    /// A client's view: apply a delta, then keep the best `depth` levels.
    fn client_apply(view: &mut Book, delta: &BookDelta, depth: usize) {
        view.apply(delta);
        view.bids.truncate(depth);
        view.asks.truncate(depth);
    }

    #[test]
    fn depth_views_follow_the_top_of_the_book_exactly() {
        // A small price grid, so that levels keep entering and leaving the
        // top; deterministic pseudo-random deltas (xorshift).
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let depths = [1, 5, 10, 25, FULL_DEPTH];
        let mut book = Book::default();
        let mut views: Vec<Book> = depths.iter().map(|_| Book::default()).collect();
        let mut diff = DepthDiff::default();
        let mut changed_without_touching_top = 0;
        for _ in 0..20_000 {
            let mut delta = BookDelta::default();
            for _ in 0..1 + next(4) {
                let sz = if next(3) == 0 { 0.0 } else { 1.0 + next(5) as f64 };
                if next(2) == 0 {
                    delta.bids.push(lv(50.0 + next(40) as f64, sz));
                } else {
                    delta.asks.push(lv(91.0 + next(40) as f64, sz));
                }
            }
            diff.before(&book, 25);
            book.apply(&delta);
            for (view, &depth) in views.iter_mut().zip(&depths) {
                let d = diff.view(&book, &delta, depth);
                if depth == 1 && d.bids.is_empty() && d.asks.is_empty() {
                    changed_without_touching_top += 1;
                }
                client_apply(view, d, depth);
                assert_eq!(view.bids(depth), book.bids(depth), "bids at depth {depth}");
                assert_eq!(view.asks(depth), book.asks(depth), "asks at depth {depth}");
                assert_eq!(view.checksum(depth), book.checksum(depth));
            }
        }
        assert!(changed_without_touching_top > 1000, "deltas below the top are empty views");
    }

    #[test]
    fn checksum_matches_the_documented_bytes() {
        // The worked example of docs/PROTOCOL.md: asks then bids, px then
        // sz, little-endian doubles, CRC-32 (IEEE).
        let bids = [lv(100.5, 2.0), lv(100.0, 1.25)];
        let asks = [lv(101.0, 3.0)];
        let mut bytes = Vec::new();
        for l in [asks[0], bids[0], bids[1]] {
            bytes.extend_from_slice(&l.px.to_le_bytes());
            bytes.extend_from_slice(&l.sz.to_le_bytes());
        }
        assert_eq!(checksum(&bids, &asks, 10), crc32fast::hash(&bytes));
        assert_eq!(checksum(&bids, &asks, 1), {
            let mut b = Vec::new();
            for l in [asks[0], bids[0]] {
                b.extend_from_slice(&l.px.to_le_bytes());
                b.extend_from_slice(&l.sz.to_le_bytes());
            }
            crc32fast::hash(&b)
        });
        assert_eq!(checksum(&[], &[], 10), 0);
        assert!(valid_depth(10) && valid_depth(FULL_DEPTH) && !valid_depth(7) && !valid_depth(0));
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

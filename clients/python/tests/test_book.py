"""Books: the protocol's worked checksum examples, deltas, deletes and the
keep-the-best-N rule."""

from __future__ import annotations

import struct
import zlib

from tickcast import BookUpdate, OrderBook, book_checksum


def test_the_documented_examples():
    book = OrderBook(10)
    book.load([(189.48, 100.0), (189.47, 500.0)], [(189.5, 200.0)])
    assert book.checksum() == 1650949194
    assert book.apply(BookUpdate("AAPL", 44, 0, 0, [(189.49, 300.0)], [], 3261367760))
    assert book.bids() == [(189.49, 300.0), (189.48, 100.0), (189.47, 500.0)]
    assert OrderBook(10).checksum() == 0, "an empty book hashes to 0"


def test_the_checksum_covers_min_depth_10_levels_asks_first():
    bids = [(100.0 - i, float(i + 1)) for i in range(15)]
    asks = [(101.0 + i, float(i + 1)) for i in range(15)]
    for depth, k in ((1, 1), (5, 5), (10, 10), (20, 10), ("full", 10)):
        raw = b"".join(struct.pack("<dd", px, sz) for px, sz in asks[:k] + bids[:k])
        assert book_checksum(bids, asks, depth) == zlib.crc32(raw)


def test_deletes_and_the_best_n_rule():
    book = OrderBook(5)
    book.load([(100.0 - i, 1.0) for i in range(5)], [(101.0 + i, 1.0) for i in range(5)])
    # A better bid enters: the worst one (96) leaves at depth 5.
    book.apply_levels([(100.5, 2.0)], [(101.0, 0.0)])
    assert book.bids() == [(100.5, 2.0), (100.0, 1.0), (99.0, 1.0), (98.0, 1.0), (97.0, 1.0)]
    assert book.asks(2) == [(102.0, 1.0), (103.0, 1.0)]
    assert book.best_bid == (100.5, 2.0) and book.best_ask == (102.0, 1.0) and book.mid == 101.25
    book.apply_levels([], [(999.0, 0.0)])  # deleting an absent level changes nothing
    assert len(book) == 5


def test_a_wrong_checksum_is_reported():
    book = OrderBook(10)
    book.load([(1.0, 1.0)], [(2.0, 1.0)])
    assert not book.apply(BookUpdate("X", 2, 0, 0, [(1.5, 1.0)], [], 12345))


def test_a_copy_is_independent():
    book = OrderBook(10)
    book.load([(1.0, 1.0)], [(2.0, 1.0)])
    snapshot = book.copy()
    book.apply_levels([(1.5, 3.0)], [(2.0, 0.0)])
    assert snapshot.bids() == [(1.0, 1.0)] and snapshot.asks() == [(2.0, 1.0)]
    assert snapshot.checksum() != book.checksum()

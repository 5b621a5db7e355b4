"""A client-side order book at a subscription's depth, with the server's
checksum (docs/PROTOCOL.md, "Books").

The rules a depth-N client follows:

1. start from the snapshot's book (at most ``depth`` levels per side);
2. for each book update, set each listed level's size at its price,
   deleting levels of size 0;
3. keep the best ``depth`` levels per side;
4. compare `checksum` with the update's: CRC-32 (zlib's) of the best
   K = min(depth, 10) asks (lowest first) then the best K bids (highest
   first), each level as its price then its size in little-endian IEEE-754
   doubles. An empty book hashes to 0.

Prices are kept sorted per side (``bisect``), so reading the top is a slice
and a deep book costs little per update.
"""

from __future__ import annotations

import bisect
import struct
import zlib
from collections.abc import Iterable

from .codec import Depth, depth_levels
from .messages import BookUpdate, Level, Snapshot

#: Levels per side the checksum covers at most.
CHECKSUM_LEVELS = 10

_LEVEL = struct.Struct("<dd")


def book_checksum(bids: Iterable[Level], asks: Iterable[Level], depth: Depth) -> int:
    """The checksum of a book given best first, at ``depth`` (a number or
    ``"full"``): CRC-32 of the top min(depth, 10) asks then bids."""
    k = min(depth_levels(depth), CHECKSUM_LEVELS)
    data = b"".join(_LEVEL.pack(px, sz) for side in (asks, bids) for px, sz in list(side)[:k])
    return zlib.crc32(data)


class OrderBook:
    """A two-sided price book as a depth-``depth`` subscriber holds it.

    >>> b = OrderBook(10)
    >>> b.load([(189.48, 100.0), (189.47, 500.0)], [(189.5, 200.0)])
    >>> b.checksum()
    1650949194
    """

    __slots__ = ("depth", "_bids", "_asks", "_bid_px", "_ask_px")

    def __init__(self, depth: Depth = 10) -> None:
        #: Levels per side kept (4096 for ``"full"``).
        self.depth: int = depth_levels(depth)
        self._bids: dict[float, float] = {}
        self._asks: dict[float, float] = {}
        self._bid_px: list[float] = []  # ascending: the best bid is last
        self._ask_px: list[float] = []  # ascending: the best ask is first

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> OrderBook:
        """The book of a `Snapshot`, at the snapshot's depth."""
        book = cls(snapshot.depth)
        book.load(snapshot.bids, snapshot.asks)
        return book

    def copy(self) -> OrderBook:
        """An independent copy of this book."""
        other = OrderBook(self.depth)
        other._bids, other._asks = dict(self._bids), dict(self._asks)
        other._bid_px, other._ask_px = list(self._bid_px), list(self._ask_px)
        return other

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Replaces the whole book (levels of size 0 are skipped)."""
        self._bids = {px: sz for px, sz in bids if sz != 0}
        self._asks = {px: sz for px, sz in asks if sz != 0}
        self._bid_px = sorted(self._bids)
        self._ask_px = sorted(self._asks)
        self._truncate()

    def apply(self, update: BookUpdate) -> bool:
        """Applies a `BookUpdate`; returns whether the book's checksum now
        matches the server's."""
        self.apply_levels(update.bids, update.asks)
        return self.checksum() == update.checksum

    def apply_levels(self, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Sets each level's size at its price (0 deletes), then keeps the
        best ``depth`` levels per side."""
        for px, sz in bids:
            _set(self._bids, self._bid_px, px, sz)
        for px, sz in asks:
            _set(self._asks, self._ask_px, px, sz)
        self._truncate()

    def _truncate(self) -> None:
        extra = len(self._bid_px) - self.depth
        if extra > 0:  # the worst bids are the lowest: the front
            for px in self._bid_px[:extra]:
                del self._bids[px]
            del self._bid_px[:extra]
        extra = len(self._ask_px) - self.depth
        if extra > 0:  # the worst asks are the highest: the back
            for px in self._ask_px[-extra:]:
                del self._asks[px]
            del self._ask_px[-extra:]

    # -- reading

    def bids(self, n: int | None = None) -> list[Level]:
        """The best ``n`` bids (all if ``None``), highest first."""
        prices = self._bid_px if n is None else self._bid_px[-n:] if n > 0 else []
        return [(px, self._bids[px]) for px in reversed(prices)]

    def asks(self, n: int | None = None) -> list[Level]:
        """The best ``n`` asks (all if ``None``), lowest first."""
        prices = self._ask_px if n is None else self._ask_px[:n]
        return [(px, self._asks[px]) for px in prices]

    @property
    def best_bid(self) -> Level | None:
        """The highest bid, or ``None`` when there is none."""
        return (self._bid_px[-1], self._bids[self._bid_px[-1]]) if self._bid_px else None

    @property
    def best_ask(self) -> Level | None:
        """The lowest ask, or ``None`` when there is none."""
        return (self._ask_px[0], self._asks[self._ask_px[0]]) if self._ask_px else None

    @property
    def mid(self) -> float | None:
        """The midpoint of the best bid and ask, when both exist."""
        if not self._bid_px or not self._ask_px:
            return None
        return (self._bid_px[-1] + self._ask_px[0]) / 2

    def checksum(self) -> int:
        """The protocol's CRC-32 of this book at its depth."""
        k = min(self.depth, CHECKSUM_LEVELS)
        return book_checksum(self.bids(k), self.asks(k), self.depth)

    def __len__(self) -> int:
        """Levels on the deeper side."""
        return max(len(self._bids), len(self._asks))

    def __repr__(self) -> str:
        return f"OrderBook(depth={self.depth}, bids={self.bids(3)}..., asks={self.asks(3)}...)"


def _set(levels: dict[float, float], prices: list[float], px: float, sz: float) -> None:
    if sz == 0:
        if levels.pop(px, None) is not None:
            del prices[bisect.bisect_left(prices, px)]
    else:
        if px not in levels:
            bisect.insort(prices, px)
        levels[px] = sz

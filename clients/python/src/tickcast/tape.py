"""A tape: market messages collected from a replay or a live window, and
their tables in pandas or Arrow.

`Tape.to_pandas` and `Tape.to_arrow` give one table per kind, with the
same columns in both:

========== ======================================================================
table      columns
========== ======================================================================
trades     ts_event, ts_ingest, ts_event_ns, ts_ingest_ns, sym, seq, px, sz, side
quotes     ts_event, ts_ingest, ts_event_ns, ts_ingest_ns, sym, seq, bid, bid_sz, ask, ask_sz
books      ts_event, ts_ingest, ts_event_ns, ts_ingest_ns, sym, seq, side, px, sz, checksum
========== ======================================================================

* ``ts_event``/``ts_ingest``: timestamps with nanosecond resolution
  (pandas ``datetime64[ns, UTC]``, Arrow ``timestamp[ns, tz=UTC]``);
  ``ts_event_ns``/``ts_ingest_ns``: the same instants as the exact integers
  the server sent (``uint64``).
* books: one row per changed level (``side`` ``bid`` or ``ask``; ``sz`` 0
  deletes the level); every row of one update has its ``seq`` and the
  book's ``checksum`` after it. An update that changed nothing within the
  depth has no row.

Snapshots are kept in `Tape.snapshots` (the state a window starts from);
other messages are not part of a tape.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .messages import BookUpdate, Quote, Snapshot, Trade

if TYPE_CHECKING:
    import pandas
    import pyarrow

T = TypeVar("T")


@dataclass
class Frames(Generic[T]):
    """The three tables of a tape (pandas DataFrames or Arrow Tables)."""

    trades: T
    quotes: T
    books: T


@dataclass
class Tape:
    """Market messages in arrival order, by kind."""

    trades: list[Trade] = field(default_factory=list)
    quotes: list[Quote] = field(default_factory=list)
    books: list[BookUpdate] = field(default_factory=list)
    #: Snapshots met on the way (one per symbol at a replay's start or seek).
    snapshots: list[Snapshot] = field(default_factory=list)

    @classmethod
    def from_messages(cls, messages: Iterable[Any]) -> Tape:
        """A tape of the market messages and snapshots among ``messages``."""
        tape = cls()
        for msg in messages:
            tape.add(msg)
        return tape

    def add(self, msg: Any) -> None:
        """Keeps ``msg`` if it is a trade, quote, book update or snapshot."""
        if isinstance(msg, Trade):
            self.trades.append(msg)
        elif isinstance(msg, Quote):
            self.quotes.append(msg)
        elif isinstance(msg, BookUpdate):
            self.books.append(msg)
        elif isinstance(msg, Snapshot):
            self.snapshots.append(msg)

    def __len__(self) -> int:
        """Market messages held (snapshots not counted)."""
        return len(self.trades) + len(self.quotes) + len(self.books)

    # -- columns, shared by both table builders

    def _columns(self) -> dict[str, dict[str, list[Any]]]:
        trades: dict[str, list[Any]] = {k: [] for k in ("ts_event", "ts_ingest", "sym", "seq", "px", "sz", "side")}
        for t in self.trades:
            trades["ts_event"].append(t.ts_event)
            trades["ts_ingest"].append(t.ts_ingest)
            trades["sym"].append(t.sym)
            trades["seq"].append(t.seq)
            trades["px"].append(t.px)
            trades["sz"].append(t.sz)
            trades["side"].append(t.side)
        quotes: dict[str, list[Any]] = {
            k: [] for k in ("ts_event", "ts_ingest", "sym", "seq", "bid", "bid_sz", "ask", "ask_sz")
        }
        for q in self.quotes:
            quotes["ts_event"].append(q.ts_event)
            quotes["ts_ingest"].append(q.ts_ingest)
            quotes["sym"].append(q.sym)
            quotes["seq"].append(q.seq)
            quotes["bid"].append(q.bid)
            quotes["bid_sz"].append(q.bid_sz)
            quotes["ask"].append(q.ask)
            quotes["ask_sz"].append(q.ask_sz)
        books: dict[str, list[Any]] = {
            k: [] for k in ("ts_event", "ts_ingest", "sym", "seq", "side", "px", "sz", "checksum")
        }
        for b in self.books:
            for side, levels in (("bid", b.bids), ("ask", b.asks)):
                for px, sz in levels:
                    books["ts_event"].append(b.ts_event)
                    books["ts_ingest"].append(b.ts_ingest)
                    books["sym"].append(b.sym)
                    books["seq"].append(b.seq)
                    books["side"].append(side)
                    books["px"].append(px)
                    books["sz"].append(sz)
                    books["checksum"].append(b.checksum)
        return {"trades": trades, "quotes": quotes, "books": books}

    # -- pandas

    def to_pandas(self, tz: str | None = "UTC") -> Frames[pandas.DataFrame]:
        """The tape as three pandas DataFrames (see the module doc).
        ``tz=None`` gives naive ``datetime64[ns]`` timestamps (UTC wall
        time). Needs ``pip install 'tickcast[pandas]'``."""
        try:
            import numpy as np
            import pandas as pd
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("to_pandas needs pandas: pip install 'tickcast[pandas]'") from e

        def frame(cols: dict[str, list[Any]]) -> pandas.DataFrame:
            out: dict[str, Any] = {}
            for name in ("ts_event", "ts_ingest"):
                ns = np.array(cols[name], dtype=np.uint64)
                stamps = pd.to_datetime(ns.astype(np.int64), unit="ns", utc=tz is not None)
                out[name] = stamps.tz_convert(tz) if tz is not None and tz != "UTC" else stamps
            out["ts_event_ns"] = np.array(cols["ts_event"], dtype=np.uint64)
            out["ts_ingest_ns"] = np.array(cols["ts_ingest"], dtype=np.uint64)
            for name, values in cols.items():
                if name in ("ts_event", "ts_ingest"):
                    continue
                if name in ("sym", "side"):
                    out[name] = pd.Categorical(values)
                elif name == "seq":
                    out[name] = np.array(values, dtype=np.uint64)
                elif name == "checksum":
                    out[name] = np.array(values, dtype=np.uint32)
                else:
                    out[name] = np.array(values, dtype=np.float64)
            return pd.DataFrame(out)

        cols = self._columns()
        return Frames(frame(cols["trades"]), frame(cols["quotes"]), frame(cols["books"]))

    # -- Arrow

    def to_arrow(self, tz: str | None = "UTC") -> Frames[pyarrow.Table]:
        """The tape as three Arrow Tables (see the module doc). Needs
        ``pip install 'tickcast[arrow]'``."""
        try:
            import pyarrow as pa
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("to_arrow needs pyarrow: pip install 'tickcast[arrow]'") from e

        def table(cols: dict[str, list[Any]]) -> pyarrow.Table:
            arrays: dict[str, Any] = {}
            for name in ("ts_event", "ts_ingest"):
                arrays[name] = pa.array(cols[name], pa.timestamp("ns", tz=tz))
            arrays["ts_event_ns"] = pa.array(cols["ts_event"], pa.uint64())
            arrays["ts_ingest_ns"] = pa.array(cols["ts_ingest"], pa.uint64())
            for name, values in cols.items():
                if name in ("ts_event", "ts_ingest"):
                    continue
                if name in ("sym", "side"):
                    arrays[name] = pa.array(values, pa.string())
                elif name == "seq":
                    arrays[name] = pa.array(values, pa.uint64())
                elif name == "checksum":
                    arrays[name] = pa.array(values, pa.uint32())
                else:
                    arrays[name] = pa.array(values, pa.float64())
            return pa.table(arrays)

        cols = self._columns()
        return Frames(table(cols["trades"]), table(cols["quotes"]), table(cols["books"]))


def to_pandas(messages: Iterable[Any], tz: str | None = "UTC") -> Frames[pandas.DataFrame]:
    """``Tape.from_messages(messages).to_pandas(tz)``: trades, quotes and
    book updates of any iterable of messages (a replay, a live window)."""
    return Tape.from_messages(messages).to_pandas(tz)


def to_arrow(messages: Iterable[Any], tz: str | None = "UTC") -> Frames[pyarrow.Table]:
    """``Tape.from_messages(messages).to_arrow(tz)``."""
    return Tape.from_messages(messages).to_arrow(tz)

"""Late joiners get the exact book at the depth they asked for (issue 14).

A client that joins from a snapshot must end up with the server's book, at
its depth, at every seq: ``snapshot + deltas = the book``. Checked here with
the real Binance captures in tests/data/binance (BTCUSDT and ETHUSDT, ~3.4k
depth updates each among ~35k trades and quotes) and nothing but the wire
contract (docs/PROTOCOL.md):

* **The reference** is a `/replay` of the whole capture from its first
  message at ``depth=full``: every book delta applied to a full book (kept
  to the server's 4,096-level bound) gives the book at every seq. Its own
  checksums are checked on the way, and after every book update its full
  book must equal the one rebuilt here from the raw capture (Binance's
  documented procedure), so the reference does not rest on the server.
* **Late joiners**, for depths 1, 10, 25 and ``full`` on both captures:
  ``/replay`` with ``from=`` mid-file; a ``seek`` mid-file; a ``/ws``
  subscriber of a ``--feed replay:`` server that subscribes once the feed
  is running (and one that moves its subscription to another depth); a
  ``--loop`` feed across pass boundaries (the book emptied in between); a
  ``/ws`` client forced into conflation (it stops reading until the server
  says it conflates), which must recover through ``conflated`` and a fresh
  snapshot. From its snapshot on, at every seq, the client's book
  (`DepthBook`: apply each level, keep the best ``depth``) must equal the
  reference's top ``depth`` at that seq, every checksum (snapshot and each
  book update) must equal our own CRC-32 of the client's book, updates must
  continue their seq by exactly 1 with the reference's kind and event time
  (so the live feed's seqs are the recording's), and at a finite depth a
  delta must describe the top N exactly: the keep-the-best-N rule never has
  anything to drop, and no level is deleted that the client does not hold.
* Every case counts the book updates it checked and requires > 1,000, so a
  check cannot pass vacuously.
* A depth outside the menu is refused: ``error`` ``bad_request`` on
  ``/ws`` (the connection stays usable) and HTTP 400 on ``/replay``.

Every wait is bounded; the module shares one replay server and one
reference per capture to keep the run short on a debug build.
"""

from __future__ import annotations

import bisect
import gzip
import json
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

import pytest
from websockets.exceptions import InvalidStatus

from tickcast_client import (
    subscribe_ack,
    FULL_DEPTH,
    REPO_ROOT,
    RESET_REASONS,
    DepthBook,
    Server,
    WsClient,
    book_checksum,
    decode_frame,
    depth_levels,
    http_request,
    start_server,
    wait_until,
)

BINANCE = REPO_ROOT / "tests" / "data" / "binance"
CAPTURES = {"btcusdt_20240808.gz": "BTCUSDT", "ethusdt_20240808.gz": "ETHUSDT"}
# The depths every late-join case checks.
DEPTHS = (1, 10, 25, "full")
# Book updates each case must check after the client's (last) snapshot.
MIN_BOOKS = 1000
# Book updates in a replay window: enough for MIN_BOOKS with room to spare.
WINDOW_BOOKS = 1200
# Levels per side the reference keeps per seq for finite-depth checks.
TOP_CACHED = 25
# Bound on one whole stream of a capture (a debug build on a loaded box).
STREAM_TIMEOUT = 40.0

# A client that stops reading cannot answer pings, and its stall must not
# trip --slow-timeout (see test_slow_consumers.py).
STALL_FLAGS = ["--ping-interval", "60s", "--pong-timeout", "60s", "--slow-timeout", "50s"]
# These tests check books, not heartbeats (test_protocol.py does): a
# Python follower replaying a capture can be a second behind its socket on
# a loaded 2-core box, which the default test servers' 1 s pong timeout
# would close.
QUIET_HEARTBEAT = ["--ping-interval", "60s", "--pong-timeout", "60s"]
RCVBUF = 4096
MAX_QUEUE = 4


# --------------------------------------------------------------------------
# The helper itself, by hand
# --------------------------------------------------------------------------


def test_depth_book_helper_by_hand():
    """DepthBook and book_checksum on hand-made books: the byte string is
    asks (best first) then bids (best first), ``<dd`` per level, K levels."""
    lv = lambda px, sz: struct.pack("<dd", px, sz)  # noqa: E731
    assert book_checksum([], [], 10) == 0 == DepthBook(10).checksum(), "empty book"
    assert book_checksum([(100.0, 1.0)], [], 1) == zlib.crc32(lv(100.0, 1.0))
    assert book_checksum([], [(101.0, 2.0)], 1) == zlib.crc32(lv(101.0, 2.0))
    # The example spelled out: asks first, then bids, K = min(depth, 10).
    bids = [(100.0, 1.5), (99.5, 2.0), (99.0, 3.0)]
    asks = [(100.5, 4.0), (101.0, 0.25), (102.0, 7.0)]
    assert book_checksum(bids, asks, 2) == zlib.crc32(lv(100.5, 4.0) + lv(101.0, 0.25) + lv(100.0, 1.5) + lv(99.5, 2.0))
    assert book_checksum(bids, asks, "full") == zlib.crc32(b"".join(lv(*l) for l in asks + bids))
    assert struct.pack("<d", 100.5).hex() == "0000000000205940", "little-endian IEEE-754"
    # docs/PROTOCOL.md's worked example (its snapshot, then its book message).
    doc = DepthBook.from_snapshot({"bids": [[189.48, 100.0], [189.47, 500.0]], "asks": [[189.5, 200.0]]}, 10)
    assert doc.checksum() == 1650949194
    doc.apply({"bids": [[189.49, 300.0]], "asks": []})
    assert doc.checksum() == 3261367760

    # Apply, delete, keep-the-best-N.
    b = DepthBook(2)
    assert b.apply({"bids": [[99.0, 3.0], [100.0, 1.5], [99.5, 2.0]], "asks": [[102.0, 7.0], [100.5, 4.0]]}) == 1
    assert b.top() == ([(100.0, 1.5), (99.5, 2.0)], [(100.5, 4.0), (102.0, 7.0)]), "the worst bid went"
    assert b.apply({"bids": [[100.0, 0.0]], "asks": [[101.0, 0.25]]}) == 1
    assert b.top() == ([(99.5, 2.0)], [(100.5, 4.0), (101.0, 0.25)]), "99.0 was dropped earlier: it does not come back"
    assert b.checksum() == zlib.crc32(lv(100.5, 4.0) + lv(101.0, 0.25) + lv(99.5, 2.0))
    assert b.apply({"bids": [[42.0, 0.0]], "asks": []}) == 0, "deleting an absent level is a no-op"
    # Full depth: K is 10, the bound 4096.
    f = DepthBook("full")
    assert f.depth == FULL_DEPTH == depth_levels("full")
    f.apply({"bids": [[float(p), 1.0] for p in range(1, 5001)], "asks": [[float(p), 2.0] for p in range(6000, 6020)]})
    assert len(f.bids) == FULL_DEPTH and f.top_bids(1) == [(5000.0, 1.0)] and min(f.bids) == 5001.0 - FULL_DEPTH
    want = b"".join(lv(float(p), 2.0) for p in range(6000, 6010)) + b"".join(lv(float(p), 1.0) for p in range(5000, 4990, -1))
    assert f.checksum() == zlib.crc32(want)
    # Snapshots are validated.
    s = DepthBook.from_snapshot({"bids": [[2.0, 1.0], [1.0, 1.0]], "asks": [[3.0, 1.0]], "checksum": 0}, 10)
    assert s.top() == ([(2.0, 1.0), (1.0, 1.0)], [(3.0, 1.0)])
    with pytest.raises(AssertionError):
        DepthBook.from_snapshot({"bids": [[1.0, 1.0], [2.0, 1.0]], "asks": []}, 10)
    with pytest.raises(AssertionError):
        DepthBook.from_snapshot({"bids": [[2.0, 1.0], [1.0, 1.0]], "asks": []}, 1)


def test_follower_takes_a_reset_then_exactly_its_snapshot():
    """The checker's ``reset`` rule, on a hand-made reference: the state is
    dropped and the very next message must be the symbol's snapshot at the
    reset's seq, even one below the last seq (an epoch change); updates then
    follow it. Anything else after a reset is a failure. (The server does
    not send ``reset`` yet.)"""
    ref = Reference("hand", "AAPL")
    full = DepthBook("full")
    deltas = [
        {"bids": [[100.0, 1.0]], "asks": []},
        {"bids": [], "asks": [[101.0, 2.0]]},
        {"bids": [[99.0, 3.0]], "asks": [[102.0, 1.0]]},
        {"bids": [[100.0, 0.0]], "asks": []},
    ]
    for seq, delta in enumerate(deltas, 1):
        ref.kinds.append("book")
        ref.ts.append(1_700_000_000_000_000_000 + seq)
        ref.deltas[seq] = delta
        ref.book_seqs.append(seq)
        full.apply(delta)
        ref.tops.append(full.top(TOP_CACHED))

    def top(seq):
        bids, asks = RefCursor(ref).at(seq).top(10)
        return [list(l) for l in bids], [list(l) for l in asks], book_checksum(bids, asks, 10)

    def snapshot(seq):
        bids, asks, crc = top(seq)
        book = {"bids": bids, "asks": asks, "checksum": crc}
        return {"type": "snapshot", "sym": "AAPL", "seq": seq, "ts_event": ref.ts[seq - 1], "ts_ingest": 1,
                "quote": None, "trade": None, "depth": 10, "book": book}

    def update(seq):
        crc = top(seq)[2]
        return {"type": "book", "sym": "AAPL", "seq": seq, "ts_event": ref.ts[seq - 1], "ts_ingest": 1, **ref.deltas[seq],
                "checksum": crc}

    def reset(seq, reason="epoch"):
        return {"type": "reset", "sym": "AAPL", "seq": seq, "reason": reason}

    f = Follower(ref, 10, "hand")
    for m in (snapshot(2), update(3), update(4), reset(1), snapshot(1), update(2), reset(3, "gap"), snapshot(3), update(4)):
        f.take(m)
    assert (f.last, f.stats["resets"], f.stats["snapshots"]) == (4, 2, 3), dict(f.stats)
    assert f.book.top() == RefCursor(ref).at(4).top(10)

    broken = {
        "an update after a reset": [reset(1), update(2)],
        "a snapshot at another seq": [reset(1), snapshot(2)],
        "another symbol's message": [reset(1), {**snapshot(1), "sym": "MSFT"}],
        "a second reset": [reset(1), reset(1)],
        "an unknown reason": [reset(1, "oops")],
        "a reset inside a conflated range": [
            {"type": "conflated", "symbols": [{"sym": "AAPL", "from_seq": 3, "to_seq": 3, "trades": 0, "quotes": 0, "books": 1}]},
            reset(3),
        ],
    }
    for what, msgs in broken.items():
        f = Follower(ref, 10, "hand")
        f.take(snapshot(2))
        with pytest.raises(AssertionError):
            for m in msgs:
                f.take(m)
            pytest.fail(f"accepted {what}")  # not an AssertionError: escapes pytest.raises


# --------------------------------------------------------------------------
# The reference: the whole capture from its first message, full depth
# --------------------------------------------------------------------------


@dataclass
class Reference:
    """One capture's symbol as a from-the-start full-depth replay saw it:
    per seq its kind and event time, and the book delta of each book seq."""

    capture: str
    sym: str
    kinds: list[str] = field(default_factory=list)  # [seq - 1]
    ts: list[int] = field(default_factory=list)  # [seq - 1]
    deltas: dict[int, dict] = field(default_factory=dict)  # book seq -> {"bids", "asks"}
    book_seqs: list[int] = field(default_factory=list)
    # The top TOP_CACHED levels per side after each book seq (same index as
    # book_seqs): a finite-depth check is then a slice, not a walk.
    tops: list[tuple[list, list]] = field(default_factory=list)
    max_levels: int = 0

    def top_at(self, seq: int, n: int) -> tuple[list, list]:
        """The top ``n`` (<= TOP_CACHED) levels per side after ``seq``."""
        i = bisect.bisect_right(self.book_seqs, seq) - 1
        if i < 0:
            return [], []
        bids, asks = self.tops[i]
        return bids[:n], asks[:n]

    @property
    def last_seq(self) -> int:
        return len(self.kinds)

    def book_ts(self, frac: float) -> int:
        """Event time of the book update ``frac`` of the way through."""
        return self.ts[self.book_seqs[int(frac * (len(self.book_seqs) - 1))] - 1]

    def book_seq_after(self, ts: int, n: int) -> int:
        """Event time of the ``n``-th book update from the first at or after ``ts``."""
        i = next(i for i, s in enumerate(self.book_seqs) if self.ts[s - 1] >= ts)
        return self.ts[self.book_seqs[min(i + n, len(self.book_seqs) - 1)] - 1]

    def last_seq_to(self, to: int) -> int:
        """The last seq a feed ending at event time ``to`` publishes: the one
        before the first event past it, in recording order."""
        return next((i for i, ts in enumerate(self.ts) if ts > to), self.last_seq)

    def counts(self, from_seq: int, to_seq: int) -> dict[str, int]:
        c = Counter(self.kinds[from_seq - 1 : to_seq])
        return {"trades": c["trade"], "quotes": c["quote"], "books": c["book"]}


class RefCursor:
    """The reference book walked to a seq (forward cheaply, backward by
    starting over)."""

    def __init__(self, ref: Reference):
        self.ref = ref
        self.book = DepthBook("full")
        self.seq = 0
        self._i = 0

    def at(self, seq: int) -> DepthBook:
        assert 0 <= seq <= self.ref.last_seq, f"{self.ref.sym}: seq {seq} beyond the recording ({self.ref.last_seq})"
        if seq < self.seq:
            self.book, self.seq, self._i = DepthBook("full"), 0, 0
        seqs = self.ref.book_seqs
        while self._i < len(seqs) and seqs[self._i] <= seq:
            self.book.apply(self.ref.deltas[seqs[self._i]])
            self._i += 1
        self.seq = seq
        return self.book


def independent_book_deltas(capture: str):
    """The capture's book updates straight from the gzip JSON lines, by
    Binance's documented local-book procedure (as test_replay.py counts
    them): depth updates before the REST snapshot wait for it, those with
    u <= lastUpdateId are dropped, the snapshot itself is one update.
    Yields {"bids", "asks"} deltas as floats, in order."""
    pending, snapshot_id = [], None
    with gzip.open(BINANCE / capture, "rt") as f:
        for line in f:
            msg = json.loads(line.partition(" ")[2])
            if "lastUpdateId" in msg:
                snapshot_id = msg["lastUpdateId"]
                yield {"bids": msg["bids"], "asks": msg["asks"]}
                yield from ({"bids": d["b"], "asks": d["a"]} for d in pending if d["u"] > snapshot_id)
                pending.clear()
                continue
            data = msg["data"]
            if "@depth" not in msg["stream"]:
                continue
            if snapshot_id is None:
                pending.append(data)
            elif data["u"] > snapshot_id:
                yield {"bids": data["b"], "asks": data["a"]}


def build_reference(server: Server, capture: str) -> Reference:
    sym = CAPTURES[capture]
    ref = Reference(capture, sym)
    client = server.connect("msgpack", path="/replay", query=f"source={capture}&speed=max&encoding=msgpack&depth=full")
    # The reference stream is itself a from-the-start client at full depth:
    # its checksums are checked like any other's.
    own = Follower(ref, "full", f"{capture} reference", building=True)
    own.start_empty()
    # And it must be the capture's own book: rebuilt here from the raw file.
    raw = independent_book_deltas(capture)
    raw_book = DepthBook("full")
    deadline = time.monotonic() + STREAM_TIMEOUT
    try:
        for m in messages(client, deadline):
            if m["type"] == "replay_end":
                assert m["reason"] == "end" and m["events"] == ref.last_seq, m
                break
            assert m["type"] in ("trade", "quote", "book") and m["sym"] == sym, f"reference: unexpected {m!r}"
            assert m["seq"] == ref.last_seq + 1, f"reference: seq {m['seq']} after {ref.last_seq}"
            ref.kinds.append(m["type"])
            ref.ts.append(m["ts_event"])
            if m["type"] == "book":
                ref.deltas[m["seq"]] = {"bids": m["bids"], "asks": m["asks"]}
                ref.book_seqs.append(m["seq"])
            own.take(m)
            if m["type"] == "book":
                delta = next(raw, None)
                assert delta is not None, f"reference: book update {m['seq']} is not in the capture"
                raw_book.apply({side: [(float(px), float(sz)) for px, sz in delta[side]] for side in ("bids", "asks")})
                assert raw_book.bids == own.book.bids and raw_book.asks == own.book.asks, (
                    f"reference: after seq {m['seq']} (book update {len(ref.book_seqs)}) the replayed book differs "
                    f"from the capture's: best {own.book.top(3)} vs {raw_book.top(3)}"
                )
                ref.tops.append(own.book.top(TOP_CACHED))
                ref.max_levels = max(ref.max_levels, len(own.book))
    finally:
        client.close()
    assert next(raw, None) is None, "the capture has book updates the replay did not send"
    assert len(ref.book_seqs) > 3000 and ref.last_seq > 30_000, (len(ref.book_seqs), ref.last_seq)
    print(
        f"reference {capture}: {ref.last_seq} seqs, {len(ref.book_seqs)} book updates, "
        f"up to {ref.max_levels} levels per side"
    )
    return ref


# --------------------------------------------------------------------------
# A client's book, checked at every message
# --------------------------------------------------------------------------


class Follower:
    """Applies what one client reads for the capture's symbol to its own
    `DepthBook`, checking the contract at every message against the
    reference (see the module docstring)."""

    def __init__(
        self, ref: Reference, depth: int | str, label: str, building: bool = False, pass_len: int | None = None
    ):
        self.ref, self.label = ref, f"{label} depth={depth}"
        # A --loop feed: each pass is the recording's first pass_len - 1
        # seqs, then one book update that empties the book.
        self.pass_len = pass_len
        self.depth = depth
        self.building = building  # the reference itself: it has no reference to compare to
        self.cursor = RefCursor(ref)
        self.book: DepthBook | None = None
        self.last: int | None = None  # last seq applied; None until a snapshot
        self.pending_to: int | None = None  # a conflated range awaiting its snapshot
        self.reset_to: int | None = None  # a reset's seq: its snapshot must be the next message
        self.next_depth: int | str | None = None  # a re-subscribe awaiting its snapshot
        self.checksum: int | None = None
        self.stats: Counter = Counter()
        self.books_since_snapshot = 0

    def recorded(self, seq: int) -> int:
        """The recording's seq for a wire seq; 0 (the empty book) for a
        --loop feed's emptying update between passes."""
        if self.pass_len is None:
            return seq
        k = (seq - 1) % self.pass_len + 1
        return 0 if k == self.pass_len else k

    def start_empty(self) -> None:
        """A stream from the recording's first message: an empty book at seq 0."""
        self.book, self.last, self.checksum = DepthBook(self.depth), 0, 0

    def move_to(self, depth: int | str) -> None:
        """The client re-subscribed at ``depth``: its next snapshot has it."""
        self.next_depth = depth

    # -- messages
    def take(self, m: dict) -> None:
        kind = m["type"]
        if self.reset_to is not None:
            assert (kind, m.get("sym"), m.get("seq")) == ("snapshot", self.ref.sym, self.reset_to), (
                f"{self.label}: a reset to seq {self.reset_to} not followed at once by that snapshot: {_short(m)}"
            )
        if kind == "conflated":
            return self._conflated(m)
        assert m.get("sym") == self.ref.sym, f"{self.label}: unexpected {m!r}"
        if kind == "reset":
            self._reset(m)
        elif kind == "snapshot":
            self._snapshot(m)
        elif kind in ("book", "trade", "quote"):
            self._update(m)
        else:
            raise AssertionError(f"{self.label}: unexpected {m!r}")

    def _snapshot(self, m: dict) -> None:
        seq = m["seq"]
        if self.next_depth is not None:
            self.depth, self.next_depth = self.next_depth, None
            self.label = f"{self.label.rsplit(' depth=', 1)[0]} depth={self.depth}"
        if self.pending_to is not None:
            assert seq == self.pending_to, f"{self.label}: snapshot at seq {seq}, the conflated range ended at {self.pending_to}"
            self.pending_to = None
        self.reset_to = None  # `take` checked its seq
        k = self.recorded(seq)
        assert 0 <= k <= self.ref.last_seq, f"{self.label}: snapshot seq {seq} beyond the recording"
        if k:
            assert m["ts_event"] == self.ref.ts[k - 1], f"{self.label}: snapshot {seq}'s ts_event is not the recording's"
        assert m.get("depth") == depth_levels(self.depth), f"{self.label}: snapshot depth {m.get('depth')!r}: {_short(m)}"
        assert "checksum" in m["book"], f"{self.label}: snapshot book without checksum: {_short(m)}"
        self.book = DepthBook.from_snapshot(m["book"], self.depth)
        own = self.book.checksum()
        assert m["book"]["checksum"] == own, (
            f"{self.label}: snapshot seq {seq}: checksum {m['book']['checksum']}, own CRC of its book {own}"
        )
        self.checksum = own
        self.last = seq
        self._compare(k, m)
        self.stats["snapshots"] += 1
        self.books_since_snapshot = 0

    def _update(self, m: dict) -> None:
        seq, kind = m["seq"], m["type"]
        assert self.pending_to is None, f"{self.label}: {kind} {seq} before the snapshot ending a conflated range"
        assert self.last is not None, f"{self.label}: {kind} {seq} before any snapshot"
        assert seq == self.last + 1, f"{self.label}: {kind} seq {seq} after {self.last}"
        k = self.recorded(seq)
        if self.building:
            pass
        elif k == 0:
            assert kind == "book", f"{self.label}: seq {seq} should empty the book between --loop passes: {_short(m)}"
            self.stats["passes"] += 1
        else:
            assert k <= self.ref.last_seq, f"{self.label}: seq {seq} beyond the recording"
            assert (kind, m["ts_event"]) == (self.ref.kinds[k - 1], self.ref.ts[k - 1]), (
                f"{self.label}: seq {seq} is {kind} at {m['ts_event']}, the recording's is "
                f"{self.ref.kinds[k - 1]} at {self.ref.ts[k - 1]}"
            )
        self.last = seq
        self.stats["seqs"] += 1
        if kind != "book":
            return  # neither book changes: the last comparison still holds
        assert "checksum" in m, f"{self.label}: book update without checksum: {_short(m)}"
        finite = self.book.depth < FULL_DEPTH
        absent = [
            (side, px) for side, held in (("bids", self.book.bids), ("asks", self.book.asks)) for px, sz in m[side]
            if sz == 0 and px not in held
        ]
        dropped = self.book.apply(m)
        if finite:
            assert not absent, (
                f"{self.label}: seq {seq} deletes levels the client does not hold {absent[:5]}: "
                f"not a top-{self.book.depth} delta ({_short(m)})"
            )
            assert dropped == 0, (
                f"{self.label}: seq {seq} leaves {dropped} levels beyond depth {self.book.depth} "
                f"after applying it ({_short(m)})"
            )
        else:
            self.stats["absent_deletes"] += len(absent)
            self.stats["dropped"] += dropped
        own = self.book.checksum()
        if not m["bids"] and not m["asks"]:
            self.stats["empty"] += 1
            assert m["checksum"] == self.checksum, f"{self.label}: seq {seq}: empty update changed the checksum"
        assert m["checksum"] == own, (
            f"{self.label}: seq {seq}: checksum {m['checksum']}, own CRC of the client's book {own} ({_short(m)})"
        )
        self.checksum = own
        self._compare(k, m)
        self.stats["books"] += 1
        self.books_since_snapshot += 1
        if self.stats["conflated"]:
            self.stats["books_after_conflated"] += 1

    def _conflated(self, m: dict) -> None:
        entries = [e for e in m["symbols"] if e["sym"] == self.ref.sym]
        assert len(entries) == 1, f"{self.label}: conflated without one entry for {self.ref.sym}: {m!r}"
        e = entries[0]
        assert self.last is not None and self.pending_to is None, f"{self.label}: conflated while not live: {m!r}"
        assert e["from_seq"] == self.last + 1, f"{self.label}: conflated from_seq {e['from_seq']} after seq {self.last}"
        assert e["from_seq"] <= e["to_seq"], f"{self.label}: {e!r}"
        if self.pass_len is None:
            assert e["to_seq"] <= self.ref.last_seq, f"{self.label}: {e!r}"
            got = {k: e[k] for k in ("trades", "quotes", "books")}
            assert got == self.ref.counts(e["from_seq"], e["to_seq"]), f"{self.label}: conflated counts {e!r}"
        self.pending_to, self.last = e["to_seq"], None
        self.stats["conflated"] += 1

    def _reset(self, m: dict) -> None:
        """Drops the symbol's state: its snapshot at the reset's seq (which
        may be below the last one) must be the next message."""
        assert set(m) == {"type", "sym", "seq", "reason"}, f"{self.label}: bad reset {m!r}"
        assert m["reason"] in RESET_REASONS, f"{self.label}: reset reason {m['reason']!r}"
        assert isinstance(m["seq"], int) and not isinstance(m["seq"], bool) and m["seq"] >= 0, f"{self.label}: {m!r}"
        assert self.pending_to is None, f"{self.label}: reset before the snapshot ending a conflated range: {m!r}"
        self.book, self.last, self.checksum = None, None, None
        self.reset_to = m["seq"]
        self.stats["resets"] += 1

    # -- the check
    def _compare(self, seq: int, m: dict) -> None:
        """The client's book against the reference after recorded ``seq``."""
        if self.building:
            return
        depth = self.book.depth
        if depth >= FULL_DEPTH:
            ref = self.cursor.at(seq)
            if self.book.bids == ref.bids and self.book.asks == ref.asks:
                return
            got, want = self.book.top(), ref.top()
        else:
            got = self.book.top()
            want = self.ref.top_at(seq, depth) if depth <= TOP_CACHED else self.cursor.at(seq).top(depth)
            if got == want:
                return
        lines = []
        for side, g, w in (("bids", got[0], want[0]), ("asks", got[1], want[1])):
            for i in range(max(len(g), len(w))):
                gi = g[i] if i < len(g) else None
                wi = w[i] if i < len(w) else None
                if gi != wi:
                    lines.append(f"{side}[{i}]: expected {wi}, got {gi} ({len(w)} expected levels, {len(g)} held)")
                    break
        raise AssertionError(
            f"{self.label}: book wrong at seq {m['seq']} (recording's {seq}; {m['type']}, ts_event {m['ts_event']}), "
            f"{self.books_since_snapshot} book updates after the snapshot: " + "; ".join(lines) + f"; message {_short(m)}"
        )


def _short(m: dict, n: int = 6) -> str:
    """A message for an assertion, long level lists cut."""
    out = dict(m)
    for side in ("bids", "asks"):
        if side in out and len(out[side]) > n:
            out[side] = out[side][:n] + [f"... {len(m[side])} levels"]
    if "book" in out:
        b = dict(out["book"])
        for side in ("bids", "asks"):
            if len(b[side]) > n:
                b[side] = b[side][:n] + [f"... {len(out['book'][side])} levels"]
        out["book"] = b
    return repr(out)


def messages(client: WsClient, deadline: float):
    """Decoded messages until ``deadline`` (then fails)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{client.encoding} client: stream not finished in time")
        try:
            data = client.ws.recv(timeout=left)
        except TimeoutError:
            continue
        yield decode_frame(client.encoding, data, client.pb2)


# --------------------------------------------------------------------------
# Fixtures: one replay server and one reference per capture, per module
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replay_server(tmp_path_factory, pb2):
    server = start_server(
        tmp_path_factory.mktemp("books"), pb2, feed="tcp", extra=["--replay-dir", str(BINANCE), "--max-replay-sessions", "16", *QUIET_HEARTBEAT]
    )
    yield server
    server.stop()
    print(f"--- tickcast log ({' '.join(server.args[1:])}) ---\n{server.log_tail()}")


@pytest.fixture(scope="module")
def references(replay_server):
    cache: dict[str, Reference] = {}

    def get(capture: str) -> Reference:
        if capture not in cache:
            cache[capture] = build_reference(replay_server, capture)
        return cache[capture]

    return get


def open_replays(server: Server, capture: str, encoding: str, query: str, speed: str = "max") -> dict:
    """One /replay session per depth, all opened at once (they run side by
    side; the library buffers what is not read yet)."""
    return {
        d: server.connect(encoding, path="/replay", query=f"source={capture}&speed={speed}&encoding={encoding}&depth={d}&{query}")
        for d in DEPTHS
    }


def check_counts(followers: dict, what: str) -> None:
    for d, f in followers.items():
        print(f"{what} depth={d}: {dict(f.stats)}; {f.books_since_snapshot} book updates after the last snapshot")
        assert f.books_since_snapshot > MIN_BOOKS, f"{what} depth={d}: only {f.books_since_snapshot} book updates checked"


# --------------------------------------------------------------------------
# 1. /replay?from= mid-file
# --------------------------------------------------------------------------


@pytest.mark.parametrize("capture,encoding", [("btcusdt_20240808.gz", "protobuf"), ("ethusdt_20240808.gz", "json")])
def test_replay_from_mid_file_gives_the_exact_book_at_every_depth(replay_server, references, capture, encoding):
    ref = references(capture)
    start = ref.book_ts(0.3)
    stop = ref.book_seq_after(start, WINDOW_BOOKS)
    clients = open_replays(replay_server, capture, encoding, f"from={start}&to={stop}")
    followers = {}
    for d, client in clients.items():
        f = followers[d] = Follower(ref, d, f"{capture} from={start}")
        deadline = time.monotonic() + STREAM_TIMEOUT
        first = True
        for m in messages(client, deadline):
            if m["type"] == "replay_end":
                assert m["reason"] == "to", m
                assert m["events"] == f.stats["seqs"], (m, f.stats)
                break
            if first:
                assert m["type"] == "snapshot", f"a mid-file replay starts with a snapshot, got {_short(m)}"
                assert m["seq"] > 0 and m["ts_event"] < start, _short(m)
                first = False
            f.take(m)
        client.close()
        assert f.stats["snapshots"] == 1, f.stats
    check_counts(followers, f"{capture} from=")


# --------------------------------------------------------------------------
# 2. seek mid-file
# --------------------------------------------------------------------------


@pytest.mark.parametrize("capture,encoding", [("btcusdt_20240808.gz", "msgpack"), ("ethusdt_20240808.gz", "protobuf")])
def test_seek_mid_file_gives_the_exact_book_at_every_depth(replay_server, references, capture, encoding):
    """Starts at 5% of the file at speed 20, checks about 100 book updates,
    then asks for speed max and seeks forward to 30%, and checks on to the
    window's end."""
    ref = references(capture)
    start, target = ref.book_ts(0.05), ref.book_ts(0.3)
    stop = ref.book_seq_after(target, WINDOW_BOOKS)
    clients = open_replays(replay_server, capture, encoding, f"from={start}&to={stop}", speed="20")
    followers = {}
    for d, client in clients.items():
        f = followers[d] = Follower(ref, d, f"{capture} seek")
        deadline = time.monotonic() + STREAM_TIMEOUT
        stream = messages(client, deadline)
        for m in stream:
            assert m["type"] != "replay_end", f"ended before the seek: {m!r}"
            f.take(m)
            if f.stats["books"] >= 100:
                break
        before = f.last
        client.send_json({"op": "speed", "value": "max"})
        client.send_json({"op": "seek", "ts": target})
        acks = []
        # Until the new snapshot: what the old pass had already queued, still
        # consistent with the old snapshot (on a slow box perhaps up to its
        # replay_end), and the acks (which jump ahead).
        for m in stream:
            if m["type"] == "ack":
                acks.append(m["op"])
                assert m == {"type": "ack", "op": m["op"], "symbols": []}, m
                continue
            if m["type"] == "replay_end":
                assert m["reason"] == "to" and f.last == ref.last_seq_to(stop), (m, f.last)
                continue
            if m["type"] == "snapshot":
                assert m["ts_event"] < target and m["seq"] > before, _short(m)
                f.take(m)
                break
            f.take(m)
        assert acks == ["speed", "seek"], f"the seek's snapshot came before its acks: {acks}"
        for m in stream:
            if m["type"] == "replay_end":
                assert m["reason"] == "to", m
                break
            f.take(m)
        client.close()
        assert f.stats["snapshots"] == 2, f.stats
    check_counts(followers, f"{capture} seek")


# --------------------------------------------------------------------------
# 3. /ws on a --feed replay: server, subscribing once the feed runs
# --------------------------------------------------------------------------

# Fast enough to keep the run short (the first 55% of a capture take about
# 2 s), slow enough that subscribers join early in the file.
LIVE_SPEED = "100"
LIVE_END = 0.55
# The live test's clients read side by side in one Python process and may
# fall behind the feed for a while: conflation off (--conflate-above equal
# to --disconnect-above), and a bound far above what a capture sends.
NO_CONFLATION = ["--conflate-above", "64MiB", "--disconnect-above", "64MiB"]


def start_live(tickcast, ref: Reference, extra=(), end: float = LIVE_END) -> tuple[Server, int]:
    """A server whose feed is the capture, paced at LIVE_SPEED, from its
    first event to ``end`` of its book updates (no --from, no --loop: its
    seqs are the recording's, which the followers check message by
    message). Returns it and the last seq it publishes."""
    heartbeat = [] if "--ping-interval" in extra else QUIET_HEARTBEAT
    window = []
    if end < 1:
        window = ["--to", str(ref.book_ts(end))]
    server = tickcast(feed=f"replay:{BINANCE / ref.capture}", extra=["--speed", LIVE_SPEED, *window, *heartbeat, *extra])
    server.wait_symbols(ref.sym, timeout=10)
    return server, ref.last_seq_to(int(window[1])) if window else ref.last_seq


def follow_until(client: WsClient, f: Follower, last_seq: int, timeout: float, on_ack=None) -> None:
    """Reads ``client`` into ``f`` until it has applied ``last_seq``."""
    deadline = time.monotonic() + timeout
    for m in messages(client, deadline):
        if m["type"] == "ack":
            assert m["op"] == "subscribe" and m["symbols"] == [f.ref.sym], m
            if on_ack:
                on_ack(m)
            continue
        f.take(m)
        if f.last == last_seq:
            return


def start_threads(jobs: dict) -> tuple[list, dict]:
    """Runs each job in its own thread (so no client waits on another's
    reading); see `join_threads`."""
    errors: dict = {}

    def wrap(key, job):
        try:
            job()
        except BaseException as e:  # noqa: BLE001 - reported by join_threads
            errors[key] = e

    threads = [threading.Thread(target=wrap, args=(k, j), daemon=True) for k, j in jobs.items()]
    for t in threads:
        t.start()
    return threads, errors


def join_threads(started: tuple[list, dict]) -> None:
    """Waits (bounded) for `start_threads`' threads; re-raises the first failure."""
    threads, errors = started
    deadline = time.monotonic() + STREAM_TIMEOUT + 5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for key, e in errors.items():
        raise AssertionError(f"{key}: {e}") from e
    assert not any(t.is_alive() for t in threads), "a reader thread did not finish"


def run_in_threads(jobs: dict) -> None:
    join_threads(start_threads(jobs))


@pytest.mark.parametrize("capture,encoding", [("btcusdt_20240808.gz", "json"), ("ethusdt_20240808.gz", "msgpack")])
def test_live_subscriber_of_a_replay_feed_gets_the_exact_book_at_every_depth(tickcast, references, capture, encoding):
    """Four subscribers (one per depth) join once the feed has published
    10% of the capture; a fifth starts at depth 10 and moves to depth 1,
    then to full, each move answered by an ack and a fresh snapshot (moves
    made while the feed runs, whatever the readers' lag)."""
    ref = references(capture)
    server, last = start_live(tickcast, ref, extra=NO_CONFLATION)
    server.wait_published(ref.last_seq // 10, timeout=20)
    clients, followers = {}, {}
    for d in (*DEPTHS, "moving"):
        clients[d] = server.connect(encoding)
        followers[d] = Follower(ref, 10 if d == "moving" else d, f"{capture} live ws")
        clients[d].subscribe(ref.sym, depth=10 if d == "moving" else d)
    joined = server.metric("tickcast_updates_published_total")
    assert joined < last * 0.5, f"the subscribers joined too late ({joined} of {last}): the box is too slow"

    moved = threading.Event()
    acks = []

    def moving():
        client, f = clients["moving"], followers["moving"]
        deadline = time.monotonic() + STREAM_TIMEOUT
        for m in messages(client, deadline):
            if m["type"] == "ack":
                assert subscribe_ack(m) == {"type": "ack", "op": "subscribe", "symbols": [ref.sym]}, m
                acks.append(m)
                continue
            f.take(m)
            if f.last == last and moved.is_set() and f.next_depth is None:
                return

    jobs = {d: (lambda d=d: follow_until(clients[d], followers[d], last, STREAM_TIMEOUT)) for d in DEPTHS}
    jobs["moving"] = moving
    threads = start_threads(jobs)
    try:
        f = followers["moving"]
        for frac, depth in ((0.2, 1), (0.35, "full")):
            server.wait_published(int(last * frac), timeout=20)
            wait_until(lambda: f.next_depth is None and f.stats["snapshots"], timeout=20, what="the previous move's snapshot")
            f.move_to(depth)
            clients["moving"].subscribe(ref.sym, depth=depth)
        moved.set()
    finally:
        join_threads(threads)
    m = followers["moving"]
    assert m.stats["snapshots"] == 3 and m.depth == "full", f"the moving subscriber: {dict(m.stats)}, depth {m.depth}"
    assert len(acks) == 3, acks
    assert m.stats["books"] > MIN_BOOKS, dict(m.stats)
    check_counts({d: followers[d] for d in DEPTHS}, f"{capture} live ws")
    print(f"{capture} live ws: joined at seq {joined}; moving subscriber {dict(m.stats)}")


# --------------------------------------------------------------------------
# 4. A forced conflation: a fresh snapshot, then exact again
# --------------------------------------------------------------------------


@pytest.mark.parametrize("capture,encoding", [("btcusdt_20240808.gz", "protobuf"), ("ethusdt_20240808.gz", "json")])
def test_conflated_subscriber_recovers_the_exact_book_at_every_depth(tickcast, references, capture, encoding):
    """Four subscribers (one per depth) with a 4 KiB TCP window stop reading
    once subscribed; when the server reports all four conflating, they read
    on (with a normal receive buffer, but four readers in one Python
    process may still be conflated again): each ``conflated``, a snapshot
    at its ``to_seq``, and from there the book must match again. The whole
    capture, so that plenty is checked after the recoveries."""
    ref = references(capture)
    server, last = start_live(tickcast, ref, extra=[*STALL_FLAGS, "--conflate-above", "64KiB"], end=1.0)
    clients, followers = {}, {}
    for d in DEPTHS:
        clients[d] = server.connect(encoding, rcvbuf=RCVBUF, max_queue=MAX_QUEUE)
        followers[d] = Follower(ref, d, f"{capture} conflated ws")
        clients[d].subscribe(ref.sym, depth=d)
    server.wait_metric("tickcast_conflation_episodes_total", lambda v: v >= len(DEPTHS), timeout=20)
    at = server.metric("tickcast_updates_published_total")
    assert at < last * 0.3, f"conflated too late ({at} of {last}): the box is too slow"
    for c in clients.values():
        c.ws.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    jobs = {d: (lambda d=d: follow_until(clients[d], followers[d], last, STREAM_TIMEOUT)) for d in DEPTHS}
    run_in_threads(jobs)
    for d, f in followers.items():
        print(f"{capture} conflated ws depth={d}: {dict(f.stats)}")
        assert f.stats["conflated"] >= 1, f"depth={d}: never conflated ({dict(f.stats)})"
        assert f.stats["snapshots"] == 1 + f.stats["conflated"], f"depth={d}: {dict(f.stats)}"
        # Readers side by side in one process may be conflated again and
        # again: every recovery counts, each checked from its snapshot on.
        assert f.stats["books_after_conflated"] > MIN_BOOKS, f"depth={d}: {dict(f.stats)}"
    print(f"{capture}: all conflating at seq {at}; metrics {server.metric('tickcast_conflation_episodes_total')} episodes")


# --------------------------------------------------------------------------
# 5. --loop passes: emptied between passes, exact across them
# --------------------------------------------------------------------------

LOOP_END = 0.12  # of the book updates: a pass of about 0.4 s at LIVE_SPEED
LOOP_PASSES = 3


@pytest.mark.parametrize("capture,encoding", [("ethusdt_20240808.gz", "msgpack")])
def test_loop_passes_keep_the_exact_book_at_every_depth(tickcast, references, capture, encoding):
    """A --loop feed of the capture's first 12%: subscribers (one per depth)
    join in the first pass (or so) and follow the feed across three pass
    boundaries. Between passes one book update (the next seq) must empty
    their book (checksum 0), and each new pass must rebuild it exactly from
    empty."""
    ref = references(capture)
    to = ref.book_ts(LOOP_END)
    events = ref.last_seq_to(to)
    server = tickcast(
        feed=f"replay:{BINANCE / capture}", extra=["--speed", LIVE_SPEED, "--loop", "--to", str(to), *NO_CONFLATION, *QUIET_HEARTBEAT]
    )
    server.wait_symbols(ref.sym, timeout=10)
    server.wait_published(events // 3, timeout=20)
    pass_len = events + 1
    clients, followers = {}, {}
    for d in DEPTHS:
        clients[d] = server.connect(encoding)
        followers[d] = Follower(ref, d, f"{capture} --loop", pass_len=pass_len)
        clients[d].subscribe(ref.sym, depth=d)

    def follow(d):
        """Reads until the last event of the pass LOOP_PASSES after the one
        the snapshot is in (wherever a slow box made the client join)."""
        client, f = clients[d], followers[d]
        end = None
        for m in messages(client, time.monotonic() + STREAM_TIMEOUT):
            if m["type"] == "ack":
                continue
            f.take(m)
            if m["type"] == "snapshot":
                end = (m["seq"] // pass_len + LOOP_PASSES + 1) * pass_len - 1
            if f.last == end:
                return

    run_in_threads({d: (lambda d=d: follow(d)) for d in DEPTHS})
    for d, f in followers.items():
        print(f"{capture} --loop depth={d}: {dict(f.stats)}")
        assert f.stats["passes"] == LOOP_PASSES and f.stats["snapshots"] == 1, (d, dict(f.stats))
        assert f.stats["books"] > MIN_BOOKS, (d, dict(f.stats))


# --------------------------------------------------------------------------
# 6. Depths outside the menu
# --------------------------------------------------------------------------

UPGRADE_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def test_a_depth_outside_the_menu_is_refused(tickcast, replay_server):
    server = tickcast(feed=f"replay:{BINANCE / 'ethusdt_20240808.gz'}", extra=["--speed", "max"])
    server.wait_symbols("ETHUSDT", timeout=10)
    client = server.connect("json")
    for bad in (7, "deep", 4096, 0, "10 ", [10]):
        client.subscribe("ETHUSDT", depth=bad)
        err = client.recv_type("error")
        assert err["code"] == "bad_request", (bad, err)
    # The connection is still usable: a valid depth subscribes.
    for depth in (5, "full"):
        client.subscribe("ETHUSDT", depth=depth)
        # (Updates at the previous depth may come first: the feed is running.)
        seen = client.recv_until(lambda m: m["type"] == "snapshot")
        assert [subscribe_ack(m) if m["type"] == "ack" else m for m in seen if m["type"] not in ("trade", "quote", "book")] == [
            {"type": "ack", "op": "subscribe", "symbols": ["ETHUSDT"]},
            seen[-1],
        ], [_short(m) for m in seen[-3:]]
        snap = seen[-1]
        assert snap["depth"] == depth_levels(depth), _short(snap)
        assert len(snap["book"]["bids"]) <= depth_levels(depth) and len(snap["book"]["asks"]) <= depth_levels(depth)
        book = DepthBook.from_snapshot(snap["book"], depth)
        assert snap["book"]["checksum"] == book.checksum()
    # Omitted: the server's --book-depth (10).
    other = server.connect("json")
    snap = other.subscribe_and_snapshots("ETHUSDT")["ETHUSDT"]
    assert snap["depth"] == 10, _short(snap)

    capture = "ethusdt_20240808.gz"
    for bad in ("7", "deep", "4096", "", "full,10"):
        status, _, body = http_request(replay_server.port, f"/replay?source={capture}&depth={bad}", headers=UPGRADE_HEADERS)
        assert status == 400, (bad, status, body)
        assert b"depth" in body, (bad, body)
    with pytest.raises(InvalidStatus) as info:
        replay_server.connect("json", path="/replay", query=f"source={capture}&depth=7")
    assert info.value.response.status_code == 400
    # A valid depth upgrades, and the default is --book-depth (a one-second
    # window 6 s into the capture: a snapshot, then a few updates).
    window = "from=1723161260000000000&to=1723161261000000000"
    for query, want in ((f"source={capture}&depth=25&{window}", 25), (f"source={capture}&{window}", 10)):
        c = replay_server.connect("json", path="/replay", query=query + "&speed=max&encoding=json")
        msgs = c.recv_until(lambda m: m["type"] == "replay_end", timeout=STREAM_TIMEOUT)
        c.close()
        snaps = [m for m in msgs if m["type"] == "snapshot"]
        assert len(snaps) == 1 and snaps[0]["depth"] == want, (query, [_short(s) for s in snaps])
        book = snaps[0]["book"]
        assert len(book["bids"]) == len(book["asks"]) == want, (query, _short(snaps[0]))  # a deep book
        assert book["checksum"] == DepthBook.from_snapshot(book, want).checksum(), _short(snaps[0])

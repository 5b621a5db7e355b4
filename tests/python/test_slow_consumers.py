"""Slow consumers and control-before-data, checked from the outside
(docs/PROTOCOL.md, "Ordering" and "Slow consumers").

A client that really stops reading (SO_RCVBUF 4096 set before it connects,
and websockets' reader thread held back by a small ``max_queue``) is made to
fall behind by a tcp feed the test drives itself. What the client reads when
it resumes is checked against the test's own record of every feed line it
sent, never against the server's view:

* default policy: a ``conflated`` message with well-formed entries, each
  followed by a snapshot at ``to_seq``; the client's rebuilt state (last
  quote, last trade, book) then equals the state the feed lines define, in
  every encoding;
* ``?slow=disconnect``: close 1008 "slow consumer", never conflated;
* ``?slow=bogus``: HTTP 400 naming the valid policies;
* an ack and an error overtake a backlog of queued market data.

Every wait is bounded: the feed is driven in rounds, and the server's metrics
are polled, never slept on.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import pytest
from websockets.exceptions import InvalidStatus

from tickcast_client import (
    subscribe_ack,
    ENCODINGS,
    RESET_REASONS,
    Server,
    WsClient,
    book,
    decode_frame,
    http_request,
    quote,
    trade,
    wait_until,
)

T0 = 1_700_000_000_000_000_000

# A client that stops reading cannot answer pings (the default 1 s pong
# timeout would close it first), and a stall must not trip --slow-timeout on
# a slow CI box: both are pushed well past any stall these tests make.
STALL_FLAGS = ["--ping-interval", "60s", "--pong-timeout", "60s", "--slow-timeout", "50s"]

# A stalled client: 4 KiB TCP window, and the library stops reading the
# socket once more than 4 frames wait in its queue.
RCVBUF = 4096
MAX_QUEUE = 4

CONFLATING = 'tickcast_sessions{state="conflating"}'
KINDS = ("trade", "quote", "book")

# Price levels per book side the feed uses. With --book-depth full the
# snapshot always holds the whole book and book messages carry the feed's
# own lines, so state and every message can be compared exactly (partial
# depths are checked against real captures in test_books.py).
GRID = 30
BOOK_DEPTH = "full"
FULL_DEPTH = 4096

# Generous bounds for a debug build on a loaded 2-core machine.
FILL_ROUNDS = 200
READ_TIMEOUT = 30.0


@pytest.fixture(params=ENCODINGS)
def enc(request) -> str:
    return request.param


# --------------------------------------------------------------------------
# The test's own model of the market: every line it sent, per symbol
# --------------------------------------------------------------------------


def fx(x, what: str) -> str:
    """A wire double as an exact, comparable string (bit-exact: hex)."""
    assert isinstance(x, float), f"{what}: expected a float, got {type(x).__name__} {x!r}"
    return x.hex()


@dataclass
class SymState:
    """Last quote, last trade and the book of one symbol."""

    quote: dict | None = None
    trade: dict | None = None
    bids: dict[float, float] = field(default_factory=dict)
    asks: dict[float, float] = field(default_factory=dict)

    def apply(self, kind: str, m: dict) -> None:
        """Applies an update (a feed line or a wire message: same fields)."""
        if kind == "trade":
            self.trade = {"px": m["px"], "sz": m["sz"], "side": m.get("side") or "unknown"}
        elif kind == "quote":
            self.quote = {f: m[f] for f in ("bid", "bid_sz", "ask", "ask_sz")}
        elif kind == "book":
            for side, levels in ((self.bids, m["bids"]), (self.asks, m["asks"])):
                for px, sz in levels:
                    if sz == 0:
                        side.pop(px, None)
                    else:
                        side[px] = sz
        else:  # pragma: no cover
            raise AssertionError(f"not an update: {kind!r}")

    @classmethod
    def from_snapshot(cls, snap: dict) -> SymState:
        s = cls()
        q, t = snap["quote"], snap["trade"]
        s.quote = None if q is None else {f: q[f] for f in ("bid", "bid_sz", "ask", "ask_sz")}
        s.trade = None if t is None else {"px": t["px"], "sz": t["sz"], "side": t["side"]}
        bids, asks = snap["book"]["bids"], snap["book"]["asks"]
        assert snap["depth"] == FULL_DEPTH and len(bids) <= GRID and len(asks) <= GRID, snap
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True), f"bids not best (highest) first: {bids}"
        assert [p for p, _ in asks] == sorted(p for p, _ in asks), f"asks not best (lowest) first: {asks}"
        for side, levels in ((s.bids, bids), (s.asks, asks)):
            for px, sz in levels:
                assert px not in side, f"level {px} twice in a snapshot: {snap}"
                assert sz != 0, f"a snapshot holds a deleted level: {snap}"
                side[px] = sz
        return s

    def view(self) -> tuple:
        q = None if self.quote is None else tuple(fx(self.quote[f], f"quote.{f}") for f in ("bid", "bid_sz", "ask", "ask_sz"))
        t = None if self.trade is None else (fx(self.trade["px"], "trade.px"), fx(self.trade["sz"], "trade.sz"), self.trade["side"])
        bids = [(fx(p, "bid px"), fx(s, "bid sz")) for p, s in sorted(self.bids.items(), reverse=True)]
        asks = [(fx(p, "ask px"), fx(s, "ask sz")) for p, s in sorted(self.asks.items())]
        return q, t, bids, asks


class Market:
    """A feed handler that records every line it sends: a symbol's N-th line
    is its update seq N (the server numbers each symbol's updates from 1)."""

    def __init__(self, server: Server, seed: int):
        self.server = server
        self.feed = server.feed()
        self.rng = random.Random(seed)
        self.lines: dict[str, list[dict]] = {}
        self.sent = 0
        self.ts = T0

    # -- sending
    def send(self, ticks: list[dict]) -> None:
        for t in ticks:
            self.ts += 1
            t["ts_event"] = self.ts
            self.lines.setdefault(t["sym"], []).append(t)
        self.feed.send(*ticks)
        self.sent += len(ticks)

    def sync(self, timeout: float = 30.0) -> None:
        """Waits until the engine has sequenced every line sent."""
        self.server.wait_published(self.sent, timeout)

    # -- tick builders (floats only, so every value on the wire is a double)
    @staticmethod
    def levels(base: float, side: str) -> list[float]:
        sign = -1 if side == "bids" else 1
        return [round(base + sign * 0.01 * i, 2) for i in range(1, GRID + 1)]

    def full_book(self, sym: str, base: float) -> dict:
        size = lambda: float(self.rng.randint(1, 1000))  # noqa: E731
        return book(sym, bids=[[p, size()] for p in self.levels(base, "bids")], asks=[[p, size()] for p in self.levels(base, "asks")])

    def book_change(self, sym: str, base: float, changes: int = 6) -> dict:
        n_bids = self.rng.randint(0, changes)
        out = {}
        for side, n in (("bids", n_bids), ("asks", changes - n_bids)):
            prices = self.rng.sample(self.levels(base, side), n)
            out[side] = [[p, 0.0 if self.rng.random() < 0.25 else float(self.rng.randint(1, 1000))] for p in prices]
        return book(sym, bids=out["bids"], asks=out["asks"])

    def random_tick(self, sym: str, base: float) -> dict:
        r = self.rng.random()
        if r < 0.25:
            side = self.rng.choice(["buy", "sell", None])
            return trade(sym, round(base + self.rng.randint(-20, 20) / 100, 2), float(self.rng.randint(1, 900)), side=side)
        if r < 0.5:
            bid = round(base - self.rng.randint(1, 5) / 100, 2)
            ask = round(base + self.rng.randint(1, 5) / 100, 2)
            return quote(sym, bid, float(self.rng.randint(1, 900)), ask, float(self.rng.randint(1, 900)))
        return self.book_change(sym, base)

    # -- derived truth
    def seq(self, sym: str) -> int:
        return len(self.lines.get(sym, []))

    def line(self, sym: str, seq: int) -> dict:
        assert 1 <= seq <= self.seq(sym), f"{sym}: no line for seq {seq} (sent {self.seq(sym)})"
        return self.lines[sym][seq - 1]

    def state(self, sym: str, seq: int) -> SymState:
        s = SymState()
        for t in self.lines.get(sym, [])[:seq]:
            s.apply(t["type"], t)
        return s

    def counts(self, sym: str, from_seq: int, to_seq: int) -> dict[str, int]:
        kinds = [t["type"] for t in self.lines[sym][from_seq - 1 : to_seq]]
        return {k + "s": kinds.count(k) for k in KINDS}


def check_update(msg: dict, line: dict) -> None:
    """A market update carries exactly what its feed line said."""
    kind = line["type"]
    assert msg["type"] == kind, (msg, line)
    assert msg["ts_event"] == line["ts_event"], (msg, line)
    if kind == "trade":
        assert (fx(msg["px"], "px"), fx(msg["sz"], "sz")) == (line["px"].hex(), line["sz"].hex()), (msg, line)
        assert msg["side"] == (line.get("side") or "unknown"), (msg, line)
    elif kind == "quote":
        for f in ("bid", "bid_sz", "ask", "ask_sz"):
            assert fx(msg[f], f) == line[f].hex(), (msg, line)
    else:
        for side in ("bids", "asks"):
            got = [(fx(p, side), fx(s, side)) for p, s in msg[side]]
            assert got == [(p.hex(), s.hex()) for p, s in line[side]], (msg, line)


def check_snapshot(snap: dict, market: Market) -> SymState:
    """A snapshot equals the state the feed lines define at its seq."""
    sym, seq = snap["sym"], snap["seq"]
    assert isinstance(seq, int) and 0 <= seq <= market.seq(sym), f"{sym}: snapshot seq {seq}, feed sent {market.seq(sym)}"
    if seq:
        assert snap["ts_event"] == market.line(sym, seq)["ts_event"], f"{sym}: snapshot ts_event is not update {seq}'s"
    state = SymState.from_snapshot(snap)
    assert state.view() == market.state(sym, seq).view(), f"{sym}: snapshot at seq {seq} differs from the feed's state"
    return state


def wire_len(data: str | bytes) -> int:
    """Bytes of one unmasked server frame carrying ``data``."""
    n = len(data.encode() if isinstance(data, str) else data)
    return n + (2 if n < 126 else 4 if n < 65536 else 10)


def recv_raw(client: WsClient, timeout: float) -> tuple[dict, str | bytes]:
    try:
        data = client.ws.recv(timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"{client.encoding} client: nothing within {timeout}s") from None
    return decode_frame(client.encoding, data, client.pb2), data


def drive_until(market: Market, make_round, done, what: str, rounds: int = FILL_ROUNDS) -> int:
    """Sends rounds of ticks, each sequenced before ``done()`` is asked,
    until it holds. Returns the rounds used."""
    for i in range(1, rounds + 1):
        market.send(make_round())
        market.sync()
        if done():
            return i
    pytest.fail(f"{what}: not reached after {rounds} rounds ({market.sent} ticks); metrics {market.server.metrics()}")


# --------------------------------------------------------------------------
# Rebuilding state from what a (recovering) client reads
# --------------------------------------------------------------------------


class Rebuilder:
    """Applies what a client reads to its own per-symbol state, checking the
    contract on the way: updates continue their symbol's seq by exactly 1
    and carry what the feed sent; a ``conflated`` entry starts right after
    the last seq received and counts its range by kind, exactly as the feed
    lines do; until its snapshot (seq == to_seq, equal to the feed's state)
    arrives, no update of that symbol may. A ``reset`` drops its symbol's
    state: the very next message must be that symbol's snapshot at the
    reset's seq (which may be below the last one), taken as the new state."""

    def __init__(self, client: WsClient, market: Market, snaps: dict[str, dict]):
        self.client, self.market = client, market
        self.states = {s: check_snapshot(snap, market) for s, snap in snaps.items()}
        self.last = {s: snap["seq"] for s, snap in snaps.items()}
        self.pending: dict[str, int] = {}  # sym -> to_seq, until its snapshot
        self.reset_due: tuple[str, int] | None = None  # (sym, seq) of a reset: its snapshot comes next
        self.resets: list[dict] = []
        self.conflated: list[dict] = []
        self.entries: list[dict] = []
        self.read = 0

    def take(self, msg: dict, raw: str | bytes) -> None:
        self.read += 1
        kind = msg["type"]
        if self.reset_due is not None:
            sym, seq = self.reset_due
            assert (kind, msg.get("sym"), msg.get("seq")) == ("snapshot", sym, seq), (
                f"a reset of {sym} to seq {seq} not followed at once by that snapshot: {msg!r}"
            )
        if kind in KINDS:
            sym = msg["sym"]
            assert sym in self.last, f"update of a symbol never subscribed: {msg!r}"
            assert sym not in self.pending, f"{sym}: update {msg['seq']} before the snapshot that ends its conflated range: {msg!r}"
            assert msg["seq"] == self.last[sym] + 1, f"{sym}: seq {msg['seq']} after {self.last[sym]} with no conflated entry"
            check_update(msg, self.market.line(sym, msg["seq"]))
            self.states[sym].apply(kind, msg)
            self.last[sym] = msg["seq"]
        elif kind == "conflated":
            self._conflated(msg, raw)
        elif kind == "reset":
            self._reset(msg)
        elif kind == "snapshot":
            sym = msg["sym"]
            if self.reset_due is not None:
                self.reset_due = None  # checked above: this symbol, the reset's seq
            else:
                assert sym in self.pending, f"snapshot of {sym} not announced by a conflated entry or a reset: {msg!r}"
                to_seq = self.pending.pop(sym)
                assert msg["seq"] == to_seq, f"{sym}: snapshot seq {msg['seq']} != conflated to_seq {to_seq}"
            self.states[sym] = check_snapshot(msg, self.market)
            self.last[sym] = msg["seq"]
        else:
            raise AssertionError(f"unexpected message while recovering: {msg!r}")

    def _reset(self, msg: dict) -> None:
        assert set(msg) == {"type", "sym", "seq", "reason"}, f"bad reset {msg!r}"
        assert msg["reason"] in RESET_REASONS, f"reset reason {msg['reason']!r}"
        seq = msg["seq"]
        assert isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0, f"reset seq {msg!r}"
        sym = msg["sym"]
        assert sym in self.last, f"reset of a symbol never subscribed: {msg!r}"
        assert sym not in self.pending, f"{sym}: reset before the snapshot that ends its conflated range: {msg!r}"
        # The state is dropped; the snapshot, next, replaces it.
        self.states.pop(sym, None)
        self.reset_due = (sym, seq)
        self.resets.append(msg)

    def _conflated(self, msg: dict, raw: str | bytes) -> None:
        enc = self.client.encoding
        if enc == "protobuf":
            pb = self.client.pb2.ServerMessage()
            pb.ParseFromString(raw)
            assert pb.type == "conflated" and pb.WhichOneof("body") == "conflated", pb
            assert len(pb.conflated.symbols) == len(msg["symbols"]), pb
        else:
            assert set(msg) == {"type", "symbols"}, f"{enc} conflated has other fields: {msg!r}"
        assert isinstance(msg["symbols"], list) and msg["symbols"], f"conflated names no symbol: {msg!r}"
        names = [e.get("sym") for e in msg["symbols"]]
        assert len(set(names)) == len(names), f"a symbol named twice in one conflated message: {msg!r}"
        for e in msg["symbols"]:
            assert set(e) == {"sym", "from_seq", "to_seq", "trades", "quotes", "books"}, f"bad entry {e!r}"
            for f in ("from_seq", "to_seq", "trades", "quotes", "books"):
                assert isinstance(e[f], int) and not isinstance(e[f], bool) and e[f] >= 0, f"{f} of {e!r}"
            sym = e["sym"]
            assert sym in self.last, f"conflated names a symbol never subscribed: {e!r}"
            assert sym not in self.pending, f"{sym} named again before its snapshot: {e!r}"
            assert e["from_seq"] == self.last[sym] + 1, f"{sym}: from_seq {e['from_seq']}, last seq received {self.last[sym]}"
            assert e["to_seq"] >= e["from_seq"], e
            assert e["trades"] + e["quotes"] + e["books"] == e["to_seq"] - e["from_seq"] + 1, f"counts do not add up: {e!r}"
            assert e["to_seq"] <= self.market.seq(sym), f"{sym}: to_seq {e['to_seq']} beyond what the feed sent"
            expected = self.market.counts(sym, e["from_seq"], e["to_seq"])
            got = {k: e[k] for k in ("trades", "quotes", "books")}
            assert got == expected, f"{sym} {e['from_seq']}..{e['to_seq']}: counts {got}, the feed sent {expected}"
            self.pending[sym] = e["to_seq"]
            self.entries.append(e)
        self.conflated.append(msg)

    def read_until(self, done, timeout: float = READ_TIMEOUT, limit: int = 1_000_000) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert self.read < limit, f"read {limit} messages without reaching the goal"
            left = deadline - time.monotonic()
            assert left > 0, (
                f"{self.client.encoding}: not caught up within {timeout}s: last {self.last}, "
                f"feed {({s: self.market.seq(s) for s in self.last})}, pending {self.pending}"
            )
            self.take(*recv_raw(self.client, left))

    def caught_up(self) -> bool:
        return not self.pending and all(self.last[s] == self.market.seq(s) for s in self.last)


class HandMarket(Market):
    """A `Market` whose lines are recorded, not sent: for the checker's own
    tests."""

    def __init__(self):  # no server, no feed
        self.lines, self.sent, self.ts = {}, 0, T0

    def record(self, *ticks: dict) -> None:
        for t in ticks:
            self.ts += 1
            t["ts_event"] = self.ts
            self.lines.setdefault(t["sym"], []).append(t)


def test_rebuilder_takes_a_reset_then_exactly_its_snapshot():
    """The checker's ``reset`` rule, on hand-made messages: the symbol's
    state is dropped and the very next message must be its snapshot at the
    reset's seq, even below the last one; anything else fails. (The server
    does not send ``reset`` yet.)"""
    market = HandMarket()
    market.record(
        quote("AAPL", 10.0, 1.0, 10.01, 2.0),
        quote("MSFT", 20.0, 1.0, 20.01, 2.0),
        trade("AAPL", 10.0, 5.0),
        book("AAPL", bids=[[9.99, 1.0]], asks=[[10.02, 3.0]]),
        trade("MSFT", 20.0, 1.0, side="sell"),
    )

    def snapshot(sym, seq):
        st = market.state(sym, seq)
        book_ = {"bids": [[p, z] for p, z in sorted(st.bids.items(), reverse=True)],
                 "asks": [[p, z] for p, z in sorted(st.asks.items())], "checksum": 0}
        return {"type": "snapshot", "sym": sym, "seq": seq, "ts_event": market.line(sym, seq)["ts_event"], "ts_ingest": 1,
                "quote": st.quote, "trade": st.trade, "depth": FULL_DEPTH, "book": book_}

    def update(sym, seq):
        return {**market.line(sym, seq), "seq": seq, "ts_ingest": 1}

    def reset(sym, seq, reason="epoch"):
        return {"type": "reset", "sym": sym, "seq": seq, "reason": reason}

    client = WsClient(None, "json", None)

    def rebuilder():
        return Rebuilder(client, market, {"AAPL": snapshot("AAPL", 1), "MSFT": snapshot("MSFT", 1)})

    r = rebuilder()
    good = [update("AAPL", 2), update("MSFT", 2), reset("AAPL", 1), snapshot("AAPL", 1), update("AAPL", 2),
            update("AAPL", 3), reset("AAPL", 3, "gap"), snapshot("AAPL", 3), reset("MSFT", 2, "reconnect"),
            snapshot("MSFT", 2)]
    for m in good:
        r.take(m, "")
    assert r.last == {"AAPL": 3, "MSFT": 2} and len(r.resets) == 3 and r.reset_due is None
    for sym in ("AAPL", "MSFT"):
        assert r.states[sym].view() == market.state(sym, r.last[sym]).view(), sym

    broken = {
        "an update after a reset": [reset("AAPL", 1), update("AAPL", 2)],
        "another symbol's update after a reset": [reset("AAPL", 1), update("MSFT", 2)],
        "a snapshot at another seq": [reset("AAPL", 1), snapshot("AAPL", 2)],
        "another symbol's snapshot": [reset("AAPL", 1), snapshot("MSFT", 1)],
        "an unknown reason": [reset("AAPL", 1, "oops")],
        "a symbol never subscribed": [reset("NOPE", 1)],
        "another field": [{**reset("AAPL", 1), "ts_event": 1}],
        "a reset inside a conflated range": [
            {"type": "conflated", "symbols": [{"sym": "AAPL", "from_seq": 2, "to_seq": 2, "trades": 1, "quotes": 0, "books": 0}]},
            reset("AAPL", 2),
        ],
    }
    for what, msgs in broken.items():
        r = rebuilder()
        with pytest.raises(AssertionError):
            for m in msgs:
                r.take(m, "")
            pytest.fail(f"accepted {what}")  # not an AssertionError: escapes pytest.raises


# --------------------------------------------------------------------------
# 1. Conflation: told what was missed, then state is exactly right again
# --------------------------------------------------------------------------

ACTIVE = {"AAPL": 190.0, "MSFT": 410.0, "IBM": 150.0, "ORCL": 120.0}
QUIET = "QUIET"  # subscribed, but silent while the client is behind


def test_stalled_client_is_conflated_and_rebuilds_the_exact_state(tickcast, enc):
    server = tickcast(extra=[*STALL_FLAGS, "--conflate-above", "256KiB", "--book-depth", str(BOOK_DEPTH)])
    market = Market(server, seed=ENCODINGS.index(enc))
    market.send([t for s, b in ACTIVE.items() for t in (market.full_book(s, b), market.random_tick(s, b), trade(s, b, 5.0))])
    market.send([quote(QUIET, 49.99, 10.0, 50.01, 20.0), market.book_change(QUIET, 50.0)])
    market.sync()
    syms = [*ACTIVE, QUIET]

    client = server.connect(enc, rcvbuf=RCVBUF, max_queue=MAX_QUEUE)
    rebuilt = Rebuilder(client, market, client.subscribe_and_snapshots(*syms))

    # The client stops reading; the feed runs until the server conflates it.
    def conflating() -> bool:
        m = server.metrics()
        assert m["tickcast_slow_disconnects_total"] == 0, f"closed instead of conflated: {m}"
        return m[CONFLATING] == 1

    t_fill = time.monotonic()
    rounds = drive_until(
        market,
        lambda: [market.random_tick(s, b) for _ in range(200) for s, b in ACTIVE.items()],
        conflating,
        "the stalled client conflating",
    )
    # More of every active symbol while it is conflating: all of it is held
    # (the exact per-kind totals are checked against the entries below).
    skipped = lambda: sum(server.metrics()[f'tickcast_skipped_updates_total{{kind="{k}"}}'] for k in KINDS)  # noqa: E731
    skipped_before = skipped()
    market.send([market.random_tick(s, b) for _ in range(50) for s, b in ACTIVE.items()])
    market.sync()
    wait_until(lambda: skipped() >= skipped_before + 50 * len(ACTIVE), timeout=10, what="updates held while conflating")
    m = server.metrics()
    assert m[CONFLATING] == 1 and m["tickcast_conflation_episodes_total"] == 1, m

    # It reads again: the backlog, then what it missed, then snapshots.
    t_read = time.monotonic()
    rebuilt.read_until(rebuilt.caught_up)
    t_done = time.monotonic()
    assert rebuilt.conflated, "caught up without a conflated message"
    named = [e["sym"] for e in rebuilt.entries]
    assert sorted(named) == sorted(ACTIVE), f"each active symbol must be named once, QUIET never: {named}"
    assert client.drain(quiet=0.2) == [], "nothing may follow once caught up (the feed is idle)"

    server.wait_metric(CONFLATING, lambda v: v == 0)
    m = server.metrics()
    assert m["tickcast_conflation_episodes_total"] == 1, m
    assert m["tickcast_conflated_messages_total"] == len(rebuilt.conflated), m
    for k in KINDS:
        assert m[f'tickcast_skipped_updates_total{{kind="{k}"}}'] == sum(e[k + "s"] for e in rebuilt.entries), k
    assert m["tickcast_slow_disconnects_total"] == 0, m

    # Live updates follow the snapshots, QUIET's too.
    market.send([market.random_tick(s, b) for _ in range(5) for s, b in {**ACTIVE, QUIET: 50.0}.items()])
    market.sync()
    conflated_so_far = len(rebuilt.conflated)
    rebuilt.read_until(rebuilt.caught_up, timeout=10)
    assert len(rebuilt.conflated) == conflated_so_far, "a healthy client was conflated again"
    assert client.drain(quiet=0.2) == []

    for sym in syms:
        want = market.state(sym, market.seq(sym)).view()
        assert rebuilt.states[sym].view() == want, f"{enc}: {sym}'s rebuilt state differs from the feed's"
    print(
        f"{enc}: conflated after {rounds} rounds ({market.sent} ticks, {t_read - t_fill:.1f}s); "
        f"{rebuilt.read} messages read after the stall in {t_done - t_read:.1f}s, "
        f"{len(rebuilt.conflated)} conflated, entries {[(e['sym'], e['from_seq'], e['to_seq']) for e in rebuilt.entries]}"
    )


# --------------------------------------------------------------------------
# 2. ?slow=disconnect: closed with 1008, never conflated
# --------------------------------------------------------------------------


def test_slow_disconnect_client_is_closed_with_1008_instead_of_conflated(tickcast, enc):
    # After a slow-consumer close the server waits up to --slow-timeout (not
    # --shutdown-grace, 1.5 s by default) for the close frame to get through,
    # so a client that only reads again 2.5 s later still learns why.
    server = tickcast(extra=[*STALL_FLAGS, "--conflate-above", "64KiB", "--book-depth", str(BOOK_DEPTH)])
    market = Market(server, seed=10 + ENCODINGS.index(enc))
    market.send([market.full_book("AAPL", 190.0), quote("AAPL", 189.99, 1.0, 190.01, 2.0)])
    market.sync()

    client = server.connect(enc, query=f"encoding={enc}&slow=disconnect", rcvbuf=RCVBUF, max_queue=MAX_QUEUE)
    snap = client.subscribe_and_snapshots("AAPL")["AAPL"]
    check_snapshot(snap, market)
    def closed() -> bool:
        m = server.metrics()
        assert m["tickcast_conflation_episodes_total"] == 0, f"conflated instead of closed: {m}"
        return m["tickcast_slow_disconnects_total"] == 1

    drive_until(market, lambda: [market.book_change("AAPL", 190.0) for _ in range(600)], closed, "the ?slow=disconnect client being closed")
    time.sleep(2.5)

    code, reason, seen = client.expect_close(timeout=15)
    assert (code, reason) == (1008, "slow consumer"), f"expected close 1008 'slow consumer', got {code} {reason!r}"
    last = snap["seq"]
    for msg in seen:  # whatever reached the client before the close: gapless, exact, never conflated
        assert msg["type"] == "book" and msg["sym"] == "AAPL", f"unexpected before the close: {msg!r}"
        assert msg["seq"] == last + 1, f"seq {msg['seq']} after {last}"
        check_update(msg, market.line("AAPL", msg["seq"]))
        last = msg["seq"]
    assert last < market.seq("AAPL"), "updates staged after the close decision must be dropped, not delivered"

    m = server.metrics()
    assert m["tickcast_slow_disconnects_total"] == 1, m
    assert m["tickcast_conflation_episodes_total"] == 0, m
    assert m["tickcast_conflated_messages_total"] == 0, m
    assert all(m[f'tickcast_skipped_updates_total{{kind="{k}"}}'] == 0 for k in KINDS), m
    assert m[CONFLATING] == 0, m
    server.wait_metric("tickcast_connections", lambda v: v == 0)
    server.wait_metric("tickcast_subscriptions", lambda v: v == 0)
    print(f"{enc}: {len(seen)} messages reached the client before the close; feed sent {market.seq('AAPL')}")


# --------------------------------------------------------------------------
# 3. ?slow= with an unknown policy
# --------------------------------------------------------------------------

UPGRADE_HEADERS = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


def test_unknown_slow_policy_is_http_400_naming_the_valid_ones(server):
    expected = 'unknown slow-consumer policy "bogus": valid policies are conflate, disconnect (?slow=)'
    for query in ("slow=bogus", "encoding=json&slow=bogus"):
        status, headers, body = http_request(server.port, f"/ws?{query}", headers=UPGRADE_HEADERS)
        assert status == 400, (query, status, body)
        assert headers["content-type"].startswith("text/plain"), headers
        assert body.decode().rstrip("\n") == expected, f"?{query}: {body!r}"
    with pytest.raises(InvalidStatus) as info:
        server.connect(query="encoding=protobuf&slow=bogus")
    assert info.value.response.status_code == 400
    assert info.value.response.body.decode().rstrip("\n") == expected
    assert server.metric("tickcast_http_rejected_total") == 3
    assert server.metric("tickcast_connections_total") == 0, "a refused upgrade is not a session"

    # The two valid policies upgrade and work.
    feed = server.feed()
    feed.send(quote("AAPL", 1.0, 1.0, 2.0, 1.0))
    server.wait_published(1)
    for query in ("slow=conflate", "encoding=json&slow=disconnect"):
        c = server.connect(query=query, decode_as="json" if "json" in query else "msgpack")
        assert c.subscribe_and_snapshots("AAPL")["AAPL"]["seq"] == 1
    assert server.metric("tickcast_connections_total") == 2


# --------------------------------------------------------------------------
# 4. Control (ack, error) overtakes queued market data
# --------------------------------------------------------------------------


def test_ack_and_error_overtake_a_backlog_of_queued_market_data(tickcast, enc):
    # A high conflation mark, so the backlog stays queued (not conflated).
    server = tickcast(extra=[*STALL_FLAGS, "--conflate-above", "6MiB", "--disconnect-above", "16MiB", "--book-depth", str(BOOK_DEPTH)])
    market = Market(server, seed=20 + ENCODINGS.index(enc))
    market.send([market.full_book("BULK", 100.0), quote("OTHER", 9.99, 1.0, 10.01, 1.0)])
    market.sync()

    client = server.connect(enc, rcvbuf=RCVBUF, max_queue=MAX_QUEUE)
    snap = client.subscribe_and_snapshots("BULK")["BULK"]
    check_snapshot(snap, market)

    # The client stops reading; at least 1 MiB of updates piles up in the
    # server's queue for it, beyond whatever the kernel buffers hold.
    backlog_mark = 1 << 20

    def backlogged() -> bool:
        m = server.metrics()
        assert m["tickcast_conflation_episodes_total"] == 0 and m["tickcast_slow_disconnects_total"] == 0, m
        return m["tickcast_queued_bytes"] >= backlog_mark

    drive_until(market, lambda: [market.book_change("BULK", 100.0, changes=20) for _ in range(300)], backlogged, "a 1 MiB backlog")
    last_before = market.seq("BULK")  # the feed is idle from here on

    client.subscribe("OTHER", "NOPE")

    def applied():
        m = server.metrics()
        return m["tickcast_subscriptions"] == 2 and m['tickcast_client_errors_total{code="unknown_symbol"}'] == 1 and m

    m = wait_until(applied, timeout=10, what="the subscribe being applied")
    # Bytes still in the server's queue for the client (outbox and writer):
    # the answers must overtake all of them.
    queued = m["tickcast_queued_bytes"]
    assert queued >= backlog_mark, m
    assert m[CONFLATING] == 0 and m["tickcast_conflation_episodes_total"] == 0, m

    # Resume reading: everything, up to OTHER's snapshot (after the backlog),
    # then whatever follows until the connection is quiet.
    got: list[tuple[dict, int]] = []
    deadline = time.monotonic() + READ_TIMEOUT
    while not got or got[-1][0]["type"] != "snapshot":
        left = deadline - time.monotonic()
        assert left > 0 and len(got) < 1_000_000, f"OTHER's snapshot not received ({len(got)} messages read)"
        msg, raw = recv_raw(client, left)
        got.append((msg, wire_len(raw)))
    i_snap = len(got) - 1
    while len(got) < 1_000_000:
        try:
            raw = client.ws.recv(timeout=0.2)
        except TimeoutError:
            break
        got.append((decode_frame(enc, raw, client.pb2), wire_len(raw)))
    msgs = [g[0] for g in got]

    acks = [i for i, x in enumerate(msgs) if x["type"] == "ack"]
    errors = [i for i, x in enumerate(msgs) if x["type"] == "error"]
    assert len(acks) == 1 and len(errors) == 1, [x for x in msgs if x["type"] not in KINDS]
    i_ack, i_err = acks[0], errors[0]
    assert subscribe_ack(msgs[i_ack]) == {"type": "ack", "op": "subscribe", "symbols": ["OTHER"]}, msgs[i_ack]
    err = msgs[i_err]
    assert (err["code"], err["symbols"]) == ("unknown_symbol", ["NOPE"]) and err["message"], err
    assert i_ack < i_err, "the ack comes first, then the error"

    # The backlog itself: exact and gapless, ending at the last update
    # produced before the request.
    market_idx = [i for i, x in enumerate(msgs) if x["type"] in KINDS]
    last = snap["seq"]
    for i in market_idx:
        assert msgs[i]["sym"] == "BULK" and msgs[i]["seq"] == last + 1, f"seq {msgs[i]['seq']} after {last}"
        check_update(msgs[i], market.line("BULK", msgs[i]["seq"]))
        last = msgs[i]["seq"]
    assert last == last_before, f"backlog ends at seq {last}, the feed sent {last_before}"
    i_last = market_idx[-1]

    # Control jumped the data: both answers arrive before the last queued
    # update, and nothing of what was still in the server's queue at the
    # request comes before the ack (slack: a frame the writer had started,
    # and the answers' own bytes counted in `queued`).
    assert i_err < i_last, f"ack/error at {i_ack}/{i_err}, after the last queued update at {i_last}: control waited for data"
    backlog_bytes = sum(got[i][1] for i in market_idx)
    before_ack = sum(got[i][1] for i in market_idx if i < i_ack)
    slack = 64 << 10
    assert before_ack <= backlog_bytes - queued + slack, (
        f"{before_ack} bytes of updates came before the ack, but only {backlog_bytes - queued} "
        f"(of {backlog_bytes}) had left the server's queue when the request was answered"
    )

    # Data order is kept: OTHER's snapshot was produced after the backlog;
    # and then nothing more (the feed is idle).
    assert i_snap > i_last and msgs[i_snap]["sym"] == "OTHER"
    assert i_snap == len(msgs) - 1, f"after OTHER's snapshot: {msgs[i_snap + 1 :]}"
    check_snapshot(msgs[i_snap], market)
    assert server.metric("tickcast_conflation_episodes_total") == 0
    print(
        f"{enc}: ack at message {i_ack} ({before_ack} B of updates before it), last queued update at {i_last} "
        f"({backlog_bytes} B backlog, {int(queued)} B in the server's queue and "
        f"{int(m['tickcast_kernel_queued_bytes'])} B in its kernel send queue at the request)"
    )

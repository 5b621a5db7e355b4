"""Live with rewind (``from_ts``) on a recording server, over real sockets
(docs/PROTOCOL.md, "Live with rewind").

A reference client subscribed from the start sees every update. A client
that subscribes later with ``from_ts`` must see the state at that time (a
snapshot equal to the reference's book at that seq), then every update
after it from the tick log, then live ones, with no gap and no duplicate at
the seam: each of its messages equal, field for field, to the reference's
message of the same seq.
"""

from __future__ import annotations

import threading
import time

import pytest

from tickcast_client import ENCODINGS, TIMEOUT, DepthBook, book, quote, trade, wait_until

SYMS = ["AAA", "BBB"]
DEPTH = 10
STEP_NS = 1_000_000  # 1 ms of event time per tick


class TimedFeeder(threading.Thread):
    """Ticks (trades, quotes, book changes) for SYMS with event times
    ``t0 + i ms``, about ``rate`` a second, until stopped."""

    def __init__(self, feed, t0: int, rate: float = 500.0):
        super().__init__(daemon=True)
        self.feed, self.t0, self.period = feed, t0, 1.0 / rate
        self.sent = 0
        self._halt = threading.Event()

    def tick(self, i: int) -> dict:
        sym, ts = SYMS[i % 2], self.t0 + i * STEP_NS
        px = 50.0 + (i % 11) * 0.5
        match i % 3:
            case 0:
                return trade(sym, px, 2.0, ts_event=ts)
            case 1:
                return quote(sym, px - 0.5, 4.0, px + 0.5, 6.0, ts_event=ts)
            case _:
                return book(sym, bids=[(px - 1.0, float(i % 5)), (40.0 + i % 7, 1.0)], asks=[(px + 1.0, float(i % 4))], ts_event=ts)

    def run(self) -> None:
        while not self._halt.is_set():
            self.feed.send(self.tick(self.sent))
            self.sent += 1
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join(TIMEOUT)


class Reference(threading.Thread):
    """A client subscribed from the start: every message by (sym, seq), and
    its book checksum after each seq."""

    def __init__(self, client):
        super().__init__(daemon=True)
        self.client = client
        self.by_seq: dict[tuple[str, int], dict] = {}
        self.checksum: dict[tuple[str, int], int] = {}
        self.last: dict[str, int] = {}
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        books: dict[str, DepthBook] = {}
        try:
            while not self._halt.is_set():
                try:
                    m = self.client.recv(timeout=0.2)
                except AssertionError:
                    continue
                t, sym = m["type"], m.get("sym")
                if t == "snapshot":
                    books[sym] = DepthBook.from_snapshot(m["book"], DEPTH)
                elif t in ("trade", "quote", "book"):
                    assert m["seq"] == self.last.get(sym, 0) + 1, m
                    if t == "book":
                        books[sym].apply(m)
                    self.by_seq[(sym, m["seq"])] = m
                else:
                    continue
                self.last[sym] = m["seq"]
                self.checksum[(sym, m["seq"])] = books[sym].checksum()
        except BaseException as e:  # surfaced by stop()
            self.error = e

    def stop(self) -> None:
        self._halt.set()
        self.join(TIMEOUT)
        if self.error:
            raise self.error


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_from_ts_replays_the_log_then_joins_live_without_gap_or_duplicate(tickcast, tmp_path, encoding):
    server = tickcast(extra=["--record", str(tmp_path / "rec")])
    ref_client = server.connect("json")
    feed = server.feed()
    t0 = time.time_ns() - 60 * 10**9
    feeder = TimedFeeder(feed, t0)
    feeder.start()
    ref = None
    try:
        server.wait_symbols(*SYMS)
        ref_client.subscribe(*SYMS, depth=DEPTH)
        # The reference starts from seq 0: subscribed before the first tick
        # of at least one symbol, it may see a snapshot with seq > 0 for the
        # other; it only compares what it saw.
        ref = Reference(ref_client)
        ref.start()
        wait_until(lambda: feeder.sent >= 600, what="600 ticks")
        # Start at tick 300's event time.
        from_ts = t0 + 300 * STEP_NS
        c = server.connect(encoding)
        c.send_json({"op": "subscribe", "symbols": SYMS, "depth": DEPTH, "from_ts": from_ts})
        ack = c.recv_type("ack")
        assert ack["symbols"] == SYMS and ack["epoch"] > 0, ack
        snaps = {}
        for _ in SYMS:
            s = c.recv_type("snapshot")
            snaps[s["sym"]] = s
        held = {sym: s["seq"] for sym, s in snaps.items()}
        books = {sym: DepthBook.from_snapshot(s["book"], DEPTH) for sym, s in snaps.items()}
        for sym, s in snaps.items():
            # The state after the last update before from_ts.
            assert s["ts_event"] < from_ts, s
            key = (sym, s["seq"])
            if key in ref.checksum:
                assert s["book"]["checksum"] == ref.checksum[key], (sym, s["seq"])
        # Read on through the seam into live: 300 more ticks go by meanwhile.
        target = feeder.sent + 300
        first = {}
        while True:
            m = c.recv()
            assert m["type"] in ("trade", "quote", "book"), f"unexpected at the seam: {m}"
            sym = m["sym"]
            assert m["seq"] == held[sym] + 1, f"{sym}: seq {m['seq']} after {held[sym]}"
            held[sym] = m["seq"]
            first.setdefault(sym, m)
            if m["type"] == "book":
                books[sym].apply(m)
                assert books[sym].checksum() == m["checksum"], (sym, m["seq"])
            # Field for field what the reference got at this seq.
            wait_until(lambda: (sym, m["seq"]) in ref.by_seq, what=f"reference at {sym} {m['seq']}")
            assert m == ref.by_seq[(sym, m["seq"])], (m, ref.by_seq[(sym, m["seq"])])
            if feeder.sent >= target and all(held[s] >= ref.last.get(s, 0) - 5 for s in SYMS):
                break
        for sym in SYMS:
            assert first[sym]["ts_event"] >= from_ts, first[sym]
        assert server.metric("tickcast_rewinds_total") >= 1
    finally:
        feeder.stop()
        if ref is not None:
            ref.stop()


def test_from_ts_outside_the_recording_or_without_one_is_a_bad_request(tickcast, tmp_path):
    plain = tickcast()
    c = plain.connect("json")
    c.send_json({"op": "subscribe", "symbols": ["AAA"], "from_ts": "2026-01-01T00:00:00Z"})
    err = c.recv_type("error")
    assert err["code"] == "bad_request" and "--record" in err["message"], err

    server = tickcast(extra=["--record", str(tmp_path / "rec")])
    feed = server.feed()
    t0 = time.time_ns() - 60 * 10**9
    feeder = TimedFeeder(feed, t0)
    feeder.start()
    try:
        server.wait_symbols(*SYMS)
        wait_until(lambda: feeder.sent >= 50, what="50 ticks")
        c = server.connect("json")
        for from_ts, says in [
            (t0 - 10**9, "before the recording starts"),
            (time.time_ns() + 3600 * 10**9, "in the future"),
            ("yesterday", "RFC 3339"),
        ]:
            c.send_json({"op": "subscribe", "symbols": SYMS, "from_ts": from_ts})
            err = c.recv_type("error")
            assert err["code"] == "bad_request" and says in err["message"], (from_ts, err)
        c.send_json({"op": "subscribe", "symbols": ["*"], "from_ts": t0})
        assert "not \"*\"" in c.recv_type("error")["message"]
        c.send_json({"op": "subscribe", "symbols": ["NOPE"], "from_ts": t0})
        assert c.recv_type("error")["code"] == "unknown_symbol"
        # The session is fine: a plain subscribe works.
        c.subscribe("AAA")
        assert c.recv_type("ack")["symbols"] == ["AAA"]
    finally:
        feeder.stop()

"""Resume by seq (``from_seq``) after a dropped connection, over real
sockets, in every encoding (docs/PROTOCOL.md, "Resume").

A feed thread keeps two symbols ticking (trades, quotes and book changes)
while a client disconnects, by a clean close or by a reset (RST), and comes
back with the last seq it processed per symbol and the epoch of its first
ack. It must get exactly the updates it missed, from the server's history,
then live ones: per symbol every seq once, in order, no snapshot, and a book
whose checksum matches every book message across the seam. When the history
no longer reaches back, or the epoch is another, it gets ``reset`` and a
snapshot instead, never a silent gap.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from tickcast_client import ENCODINGS, TIMEOUT, DepthBook, book, quote, trade, wait_until

SYMS = ["AAA", "BBB"]
DEPTH = 10


class Feeder(threading.Thread):
    """Sends a trade, a quote or a book change for each symbol in turn,
    about ``rate`` ticks a second, until stopped."""

    def __init__(self, feed, rate: float = 400.0):
        super().__init__(daemon=True)
        self.feed, self.period = feed, 1.0 / rate
        self.sent = 0
        self._halt = threading.Event()
        self.error: BaseException | None = None

    def tick(self, i: int) -> dict:
        sym = SYMS[i % len(SYMS)]
        px = 100.0 + (i % 17) * 0.25
        match i % 3:
            case 0:
                return trade(sym, px, 1.0 + i % 5)
            case 1:
                return quote(sym, px - 0.5, 10.0, px + 0.5, 12.0)
            case _:
                # A level that moves around the top, and one that comes and goes.
                return book(sym, bids=[(px - 1.0, float(i % 7)), (90.0 + i % 13, 1.0)], asks=[(px + 1.0, 3.0)])

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self.feed.send(self.tick(self.sent))
                self.sent += 1
                self._halt.wait(self.period)
        except BaseException as e:  # surfaced by stop()
            self.error = e

    def stop(self) -> None:
        self._halt.set()
        self.join(TIMEOUT)
        if self.error:
            raise self.error


class Follower:
    """What a client holds per symbol: last seq and book, checked message by
    message (seq + 1 each time; books checked against every checksum)."""

    def __init__(self):
        self.seq: dict[str, int] = {}
        self.books: dict[str, DepthBook] = {}
        self.updates = 0

    def take(self, m: dict) -> None:
        t, sym = m["type"], m.get("sym")
        if t == "snapshot":
            self.seq[sym] = m["seq"]
            self.books[sym] = DepthBook.from_snapshot(m["book"], DEPTH)
            assert self.books[sym].checksum() == m["book"]["checksum"], m
        elif t in ("trade", "quote", "book"):
            assert m["seq"] == self.seq[sym] + 1, f"{sym}: seq {m['seq']} after {self.seq[sym]}"
            self.seq[sym] = m["seq"]
            self.updates += 1
            if t == "book":
                self.books[sym].apply(m)
                assert self.books[sym].checksum() == m["checksum"], f"{sym} book at seq {m['seq']}"
        else:
            raise AssertionError(f"unexpected message {m}")


def start(tickcast, extra=()):
    server = tickcast(extra=list(extra))
    feed = server.feed()
    feeder = Feeder(feed)
    feeder.start()
    server.wait_symbols(*SYMS)
    return server, feeder


def first_session(server, encoding: str, updates: int = 60) -> tuple[Follower, int, object]:
    """Subscribes, follows ``updates`` updates, and returns (what it holds,
    the epoch of its ack, the client)."""
    c = server.connect(encoding)
    c.subscribe(*SYMS, depth=DEPTH)
    ack = c.recv_type("ack")
    epoch = ack["epoch"]
    assert isinstance(epoch, int) and epoch > 0, ack
    f = Follower()
    while f.updates < updates:
        f.take(c.recv())
    return f, epoch, c


def drop(client, how: str) -> None:
    if how == "close":
        client.close()
    else:
        # An RST: SO_LINGER 0, then close the socket under the library.
        sock = client.ws.socket
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        client.close()


def resume(server, encoding: str, f: Follower, epoch: int | None):
    c = server.connect(encoding)
    req = {"op": "subscribe", "symbols": SYMS, "depth": DEPTH, "from_seq": dict(f.seq)}
    if epoch is not None:
        req["epoch"] = epoch
    c.send_json(req)
    return c, c.recv_type("ack")


@pytest.mark.parametrize("how", ["close", "rst"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_dropped_client_resumes_with_exactly_what_it_missed(tickcast, encoding, how):
    server, feeder = start(tickcast)
    try:
        f, epoch, c = first_session(server, encoding)
        drop(c, how)
        left_at = dict(f.seq)
        # Miss some: the feed goes on while the client is away.
        sent = feeder.sent
        wait_until(lambda: feeder.sent >= sent + 100, what="100 more ticks")
        c, ack = resume(server, encoding, f, epoch)
        assert ack["recovered"] == {s: True for s in SYMS}, ack
        assert ack["epoch"] == epoch, ack
        # Exactly the missed updates, then live: Follower asserts every seq
        # is the last + 1 and every book checksum, and refuses a snapshot.
        target = {s: left_at[s] + 60 for s in SYMS}
        while any(f.seq[s] < target[s] for s in SYMS):
            m = c.recv()
            assert m["type"] != "snapshot", f"a recovered symbol got a snapshot: {m}"
            f.take(m)
        assert server.metric('tickcast_resumes_total{result="recovered"}') >= 2
    finally:
        feeder.stop()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_resume_past_the_history_gets_reset_then_a_snapshot_that_checks_out(tickcast, encoding):
    server, feeder = start(tickcast, ["--history-frames", "50"])
    try:
        f, epoch, c = first_session(server, encoding)
        c.close()
        sent = feeder.sent
        # Far more than 50 updates per symbol go by.
        wait_until(lambda: feeder.sent >= sent + 300, what="300 more ticks")
        c, ack = resume(server, encoding, f, epoch)
        assert ack["recovered"] == {s: False for s in SYMS}, ack
        for _ in SYMS:
            reset = c.recv_type("reset")
            assert reset["reason"] == "history", reset
            assert reset["seq"] > f.seq[reset["sym"]] + 50, (reset, f.seq)
            # The client rule: drop the symbol, take the snapshot that follows.
            snap = c.recv()
            while snap["type"] != "snapshot":  # the other symbol's live updates may come first
                f.take(snap)
                snap = c.recv()
            assert (snap["sym"], snap["seq"]) == (reset["sym"], reset["seq"]), (reset, snap)
            f.take(snap)
        for _ in range(100):
            f.take(c.recv())
        assert server.metric('tickcast_resumes_total{result="reset"}') >= 2
    finally:
        feeder.stop()


def test_another_epoch_or_a_seq_from_the_future_gets_reset_epoch(tickcast):
    server, feeder = start(tickcast)
    try:
        f, epoch, c = first_session(server, "json")
        c.close()
        c, ack = resume(server, "json", f, epoch + 1)
        assert ack["recovered"] == {s: False for s in SYMS}, ack
        resets = [m for m in c.recv_until(lambda m: m["type"] == "reset" and m["sym"] == SYMS[-1]) if m["type"] == "reset"]
        assert {(r["sym"], r["reason"]) for r in resets} == {(s, "epoch") for s in SYMS}, resets
        c.close()
        # No epoch, and a seq this server never reached: it restarted.
        ahead = Follower()
        ahead.seq = {s: 10**12 for s in SYMS}
        c, ack = resume(server, "json", ahead, None)
        assert ack["recovered"] == {s: False for s in SYMS}, ack
    finally:
        feeder.stop()


def test_history_is_let_go_after_the_window_and_shown_in_metrics(tickcast):
    server, feeder = start(tickcast, ["--history", "1s", "--history-linger", "1s"])
    try:
        f, epoch, c = first_session(server, "msgpack")
        assert server.metric("tickcast_history_frames") > 0
        assert server.metric("tickcast_history_bytes") > 0
        c.close()
        # Nobody subscribes any more: once the leaver's 1 s hold is over,
        # the tracks go, and with them every frame.
        server.wait_metric("tickcast_history_frames", lambda v: v == 0, timeout=10)
        assert server.metric("tickcast_history_bytes") == 0
        assert server.metric("tickcast_history_evicted_total") > 0
        c, ack = resume(server, "msgpack", f, epoch)
        assert ack["recovered"] == {s: False for s in SYMS}, ack
        assert c.recv_type("reset")["reason"] == "history"
    finally:
        feeder.stop()


def test_history_off_resumes_only_a_client_that_missed_nothing(tickcast):
    server, feeder = start(tickcast, ["--history", "0"])
    try:
        f, epoch, c = first_session(server, "json")
        c.close()
        sent = feeder.sent
        wait_until(lambda: feeder.sent >= sent + 20, what="20 more ticks")
        c, ack = resume(server, "json", f, epoch)
        assert ack["recovered"] == {s: False for s in SYMS}, ack
        assert server.metric("tickcast_history_frames") == 0
    finally:
        feeder.stop()


def test_bad_from_seq_is_a_bad_request_and_the_session_goes_on(tickcast):
    server, feeder = start(tickcast)
    try:
        c = server.connect("json")
        for bad in ({"AAA": -1}, {"ZZZ": 1}, [1], {"AAA": "7"}):
            c.send_json({"op": "subscribe", "symbols": SYMS, "from_seq": bad})
            err = c.recv_type("error")
            assert err["code"] == "bad_request" and "from_seq" in err["message"], err
        c.send_json({"op": "subscribe", "symbols": SYMS, "from_seq": {"AAA": 1}, "from_ts": 5})
        assert "not both" in c.recv_type("error")["message"]
        c.subscribe(*SYMS)
        assert c.recv_type("ack")["symbols"] == SYMS
    finally:
        feeder.stop()

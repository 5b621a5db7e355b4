"""The tickcast wire protocol, checked from the outside.

A real server binary, a real TCP feed handler, and WebSocket clients built
on third-party libraries (websockets, msgpack, protobuf generated from
proto/tickcast.proto, json). Most tests run once per encoding.
"""

from __future__ import annotations

import http.client
import json
import math
import signal
import socket
import subprocess
import time

import msgpack
import pytest
from websockets.exceptions import InvalidStatus

from tickcast_client import (
    subscribe_ack,
    ENCODINGS,
    RESET_REASONS,
    TIMEOUT,
    RawWs,
    Server,
    Ticker,
    WsClient,
    assert_same_float,
    book,
    decode_frame,
    free_port,
    http_request,
    parse_metrics,
    quote,
    trade,
    wait_until,
)

T0 = 1_700_000_000_123_456_789

# Doubles that break naive decimal printing/parsing, plus extremes.
AWKWARD = [
    0.1,
    189.51,
    0.30000000000000004,
    1e-9,
    123456789.123456789,
    5e-324,  # smallest subnormal
    2.2250738585072014e-308,  # smallest normal
    1.7976931348623157e308,  # largest finite
    -273.15,
    1 / 3,
    100.0,
]

# Event times that a double-based decoder would mangle (> 2**53), up to u64::MAX.
TS_EVENTS = [T0, 2**53 + 1, 2**63 - 1, 2**64 - 1, 1, 0]


@pytest.fixture(params=ENCODINGS)
def enc(request) -> str:
    return request.param


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def assert_levels(got, expected, what):
    assert len(got) == len(expected), f"{what}: {got!r} != {expected!r}"
    for i, (g, e) in enumerate(zip(got, expected)):
        assert len(g) == 2, f"{what}[{i}] is not a [px, sz] pair: {g!r}"
        assert_same_float(g[0], e[0], f"{what}[{i}].px")
        assert_same_float(g[1], e[1], f"{what}[{i}].sz")


def assert_update_matches(msg: dict, tick: dict, seq: int) -> None:
    """A market update on the wire carries exactly what the feed line said."""
    kind = tick["type"]
    assert msg["type"] == kind, (msg, tick)
    assert msg["sym"] == tick["sym"]
    assert msg["seq"] == seq, f"expected seq {seq}, got {msg['seq']} ({msg!r})"
    if "ts_event" in tick:
        assert msg["ts_event"] == tick["ts_event"], f"ts_event {msg['ts_event']} != {tick['ts_event']}"
    assert isinstance(msg["ts_ingest"], int) and abs(msg["ts_ingest"] - time.time_ns()) < 600 * 10**9, msg
    if kind == "trade":
        assert_same_float(msg["px"], tick["px"], "trade.px")
        assert_same_float(msg["sz"], tick["sz"], "trade.sz")
        assert msg["side"] == tick.get("side", "unknown")
    elif kind == "quote":
        for f in ("bid", "bid_sz", "ask", "ask_sz"):
            assert_same_float(msg[f], tick[f], f"quote.{f}")
    else:
        assert_levels(msg["bids"], tick["bids"], "book.bids")
        assert_levels(msg["asks"], tick["asks"], "book.asks")


def assert_seq_continuity(msgs: list[dict], start: dict[str, int]) -> dict[str, int]:
    """Every market update follows its symbol's last seq by exactly 1.
    Returns the last seq per symbol."""
    last = dict(start)
    for m in msgs:
        if m["type"] == "snapshot":
            assert m["sym"] not in last, f"second snapshot for {m['sym']}: {m!r}"
            last[m["sym"]] = m["seq"]
        elif m["type"] in ("trade", "quote", "book"):
            sym = m["sym"]
            assert sym in last, f"update for {sym} before its snapshot: {m!r}"
            assert m["seq"] == last[sym] + 1, f"{sym}: seq {m['seq']} after {last[sym]}"
            last[sym] = m["seq"]
    return last


def seed(server: Server, *syms: str):
    """A feed handler that has made ``syms`` known (one quote each), with
    the quotes sequenced by the engine."""
    feed = server.feed()
    before = server.metric("tickcast_updates_published_total")
    feed.send(*[quote(s, 10.0, 1.0, 10.01, 2.0, ts_event=T0) for s in syms])
    server.wait_published(before + len(syms))
    return feed


class Healthy:
    """One subscriber per encoding on AAPL while a ticker feeds AAPL trades
    every 2 ms. ``check()`` asserts every client has caught up with all the
    engine published so far, with no seq gap; ``finish()`` stops the feed
    and asserts each client got every update exactly once and its
    connection still answers pings."""

    SYM = "AAPL"

    def __init__(self, server: Server):
        self.server = server
        self.feed = seed(server, self.SYM)
        self.clients: list[WsClient] = []
        self.last: list[int] = []
        for e in ENCODINGS:
            c = server.connect(e)
            snap = c.subscribe_and_snapshots(self.SYM)[self.SYM]
            self.clients.append(c)
            self.last.append(snap["seq"])
        self.base = server.metric("tickcast_updates_published_total")
        self.ticker = Ticker(self.feed, self.SYM, period=0.002)
        self.ticker.start()

    def _take(self, i: int, msgs: list[dict]) -> None:
        for m in msgs:
            assert m["type"] == "trade" and m["sym"] == self.SYM, f"healthy {self.clients[i].encoding}: {m!r}"
            assert m["seq"] == self.last[i] + 1, f"healthy {self.clients[i].encoding}: seq gap {self.last[i]} -> {m['seq']}"
            self.last[i] = m["seq"]

    def check(self) -> None:
        # AAPL is the only symbol, so its seq is the number of updates the
        # engine has published: every client must catch up to it.
        target = int(self.server.metric("tickcast_updates_published_total"))
        for i, c in enumerate(self.clients):
            if self.last[i] < target:
                self._take(i, c.recv_until(lambda m: m.get("seq", 0) >= target, timeout=TIMEOUT))

    def finish(self) -> None:
        sent = self.ticker.stop()
        final = 1 + sent  # the seed quote, then every trade
        self.server.wait_published(self.base + sent)
        for i, c in enumerate(self.clients):
            if self.last[i] < final:
                self._take(i, c.recv_until(lambda m: m.get("seq") == final, timeout=TIMEOUT))
            assert self.last[i] == final, f"healthy {c.encoding}: last seq {self.last[i]}, expected {final}"
            assert c.drain(quiet=0.05) == [], "nothing may follow the last update"
            assert c.ws.ping().wait(TIMEOUT), f"healthy {c.encoding}: no pong"  # still open and responsive


# --------------------------------------------------------------------------
# Data path
# --------------------------------------------------------------------------


def test_snapshot_first_then_exact_updates_with_consecutive_seq(server, enc):
    feed = server.feed()
    seeded = [
        quote("AAPL", 189.49, 300, 189.51, 200, ts_event=T0),
        trade("AAPL", 189.5, 100, "sell", ts_event=T0 + 1),
        book("AAPL", bids=[[189.48, 100], [189.49, 300]], asks=[[189.53, 50], [189.51, 200]], ts_event=T0 + 2),
    ]
    feed.send(*seeded)
    server.wait_published(3)

    client = server.connect(enc)
    # Full depth: book messages carry the feed's own levels, bit for bit.
    snap = client.subscribe_and_snapshots("AAPL", depth="full")["AAPL"]
    assert snap["seq"] == 3
    assert snap["depth"] == 4096
    assert snap["ts_event"] == T0 + 2
    assert isinstance(snap["ts_ingest"], int) and snap["ts_ingest"] > 0
    q = snap["quote"]
    for f, v in (("bid", 189.49), ("bid_sz", 300), ("ask", 189.51), ("ask_sz", 200)):
        assert_same_float(q[f], v, f"snapshot.quote.{f}")
    t = snap["trade"]
    assert_same_float(t["px"], 189.5, "snapshot.trade.px")
    assert_same_float(t["sz"], 100, "snapshot.trade.sz")
    assert t["side"] == "sell"
    # Book sorted best first on both sides.
    assert_levels(snap["book"]["bids"], [[189.49, 300], [189.48, 100]], "snapshot.book.bids")
    assert_levels(snap["book"]["asks"], [[189.51, 200], [189.53, 50]], "snapshot.book.asks")

    sides = ["buy", "sell", None]
    ticks = []
    for i, x in enumerate(AWKWARD):
        ts = TS_EVENTS[i % len(TS_EVENTS)]
        ticks.append(trade("AAPL", x, abs(x), side=sides[i % 3], ts_event=ts))
        ticks.append(quote("AAPL", x, abs(x), -x, abs(x) + 1, ts_event=ts))
        ticks.append(book("AAPL", bids=[[x, abs(x)]], asks=[[-x, 7.0]] if i % 2 else [], ts_event=ts))
    ticks.append(trade("AAPL", 42.0, 1.0, side=None))  # no side, no ts_event: the server stamps it
    feed.send(*ticks)

    msgs = [client.recv() for _ in ticks]
    for k, (msg, tick) in enumerate(zip(msgs, ticks)):
        assert_update_matches(msg, tick, seq=snap["seq"] + 1 + k)
    assert abs(msgs[-1]["ts_event"] - time.time_ns()) < 600 * 10**9, "missing ts_event defaults to ingest time"
    assert client.drain() == []

    # A late subscriber's snapshot holds the exact last values.
    late = server.connect(enc)
    snap2 = late.subscribe_and_snapshots("AAPL")["AAPL"]
    assert snap2["seq"] == 3 + len(ticks)
    last_quote = ticks[-3]
    for f in ("bid", "bid_sz", "ask", "ask_sz"):
        assert_same_float(snap2["quote"][f], last_quote[f], f"late snapshot quote.{f}")
    assert_same_float(snap2["trade"]["px"], 42.0, "late snapshot trade.px")
    assert snap2["trade"]["side"] == "unknown"


def test_negative_zero_is_normalized_to_positive_zero_in_every_encoding(server, enc):
    """-0.0 has no market meaning, and proto3 cannot carry it (a double equal
    to its default is not encoded), so the feed normalizer turns it into
    +0.0: every encoding then delivers the same bits."""
    feed = seed(server, "ZERO")
    client = server.connect(enc)
    snap = client.subscribe_and_snapshots("ZERO")["ZERO"]
    feed.send(
        trade("ZERO", -0.0, 0.0, ts_event=T0),
        quote("ZERO", -0.0, 1.0, 0.0, -0.0, ts_event=T0),
        book("ZERO", bids=[[-0.0, 2.0]], ts_event=T0),
    )
    expected = [
        trade("ZERO", 0.0, 0.0, ts_event=T0),
        quote("ZERO", 0.0, 1.0, 0.0, 0.0, ts_event=T0),
        book("ZERO", bids=[[0.0, 2.0]], ts_event=T0),
    ]
    for k, tick in enumerate(expected):
        msg = client.recv()
        assert_update_matches(msg, tick, seq=snap["seq"] + 1 + k)
        values = [msg.get("px"), msg.get("bid"), msg.get("ask_sz")] + [lv[0] for lv in msg.get("bids", [])]
        assert all(math.copysign(1.0, v) > 0 for v in values if v is not None), msg


def test_book_level_deletes_reach_the_client(server, enc):
    feed = server.feed()
    feed.send(book("IBM", bids=[[10.0, 5], [9.5, 3], [9.0, 1]], asks=[[10.5, 2], [11.0, 4]], ts_event=T0))
    server.wait_published(1)
    client = server.connect(enc)
    # Full depth: the feed's deltas as sent, even a delete of a level that
    # was never there.
    snap = client.subscribe_and_snapshots("IBM", depth="full")["IBM"]
    assert snap["quote"] is None and snap["trade"] is None
    assert_levels(snap["book"]["bids"], [[10.0, 5], [9.5, 3], [9.0, 1]], "bids")
    assert_levels(snap["book"]["asks"], [[10.5, 2], [11.0, 4]], "asks")

    deletes = [
        book("IBM", bids=[[10.0, 0]], ts_event=T0 + 1),
        book("IBM", asks=[[10.5, 0], [11.0, 0]], ts_event=T0 + 2),
        book("IBM", bids=[[9.0, 0], [9.25, 8]], asks=[[12.0, 0]], ts_event=T0 + 3),  # 12.0 was never there
    ]
    feed.send(*deletes)
    for k, tick in enumerate(deletes):
        assert_update_matches(client.recv(), tick, seq=snap["seq"] + 1 + k)

    # The deletes were applied to the book, not just forwarded.
    late = server.connect(enc).subscribe_and_snapshots("IBM")["IBM"]
    assert late["seq"] == 4
    assert_levels(late["book"]["bids"], [[9.5, 3], [9.25, 8]], "bids after deletes")
    assert_levels(late["book"]["asks"], [], "asks after deletes")


def test_snapshot_book_is_cut_to_book_depth(tickcast, enc):
    server = tickcast(extra=["--book-depth", "5"])
    feed = server.feed()
    feed.send(book("DEEP", bids=[[100.0 - i, 1.0 + i] for i in range(8)], asks=[[101.0 + i, 2.0 + i] for i in range(8)]))
    server.wait_published(1)
    snap = server.connect(enc).subscribe_and_snapshots("DEEP")["DEEP"]
    assert snap["depth"] == 5
    assert_levels(snap["book"]["bids"], [[100.0 - i, 1.0 + i] for i in range(5)], "bids")
    assert_levels(snap["book"]["asks"], [[101.0 + i, 2.0 + i] for i in range(5)], "asks")
    # A subscription's own depth overrides --book-depth.
    one = server.connect(enc).subscribe_and_snapshots("DEEP", depth=1)["DEEP"]
    assert one["depth"] == 1
    assert_levels(one["book"]["bids"], [[100.0, 1.0]], "bids at depth 1")
    assert_levels(one["book"]["asks"], [[101.0, 2.0]], "asks at depth 1")


def test_unsubscribe_stops_delivery(server, enc):
    feed = seed(server, "AAPL", "MSFT")
    client = server.connect(enc)
    snaps = client.subscribe_and_snapshots("AAPL", "MSFT")
    last = {s: snaps[s]["seq"] for s in snaps}

    feed.send(trade("AAPL", 1.0, 1.0), trade("MSFT", 2.0, 1.0))
    last = assert_seq_continuity(client.recv_until(lambda m: m.get("sym") == "MSFT" and m["seq"] == 2), last)
    assert last == {"AAPL": 2, "MSFT": 2}

    # Unsubscribe while AAPL keeps ticking.
    ticker = Ticker(feed, "AAPL", period=0.001)
    ticker.start()
    try:
        time.sleep(0.02)
        client.unsubscribe("AAPL")
        before_ack = client.recv_until(lambda m: m["type"] == "ack", timeout=TIMEOUT)
    finally:
        sent = ticker.stop()
    assert before_ack[-1] == {"type": "ack", "op": "unsubscribe", "symbols": ["AAPL"]}
    last = assert_seq_continuity(before_ack[:-1], last)

    # The feed keeps sending both; only MSFT may arrive, ending at a marker.
    feed.send(*[t for i in range(50) for t in (trade("AAPL", 3.0, i), trade("MSFT", 4.0, i))])
    server.wait_published(2 + 2 + sent + 100)
    after = client.recv_until(lambda m: m.get("sym") == "MSFT" and m["seq"] == last["MSFT"] + 50)
    # The ack jumps queued data (PROTOCOL.md): AAPL updates already queued
    # when the unsubscribe was applied may follow it, in order, but they all
    # come before anything the feed sent after the ack.
    stragglers = [i for i, m in enumerate(after) if m.get("sym") == "AAPL"]
    assert_seq_continuity([after[i] for i in stragglers], {"AAPL": last["AAPL"]})
    first_msft = next(i for i, m in enumerate(after) if m.get("sym") == "MSFT")
    assert all(i < first_msft for i in stragglers), "AAPL produced after the unsubscribe ack was delivered"
    assert all(after[i]["seq"] <= 2 + sent for i in stragglers)
    assert_seq_continuity([m for m in after if m.get("sym") == "MSFT"], {"MSFT": last["MSFT"]})
    assert client.drain() == []

    # Unsubscribing from everything with "*" stops MSFT too.
    client.unsubscribe("*")
    assert client.recv_type("ack") == {"type": "ack", "op": "unsubscribe", "symbols": ["*"]}
    feed.send(trade("MSFT", 5.0, 1.0))
    server.wait_published(2 + 2 + sent + 101)
    assert client.drain(quiet=0.2) == []


def test_ping_op_is_acked_at_once_while_data_flows_and_changes_nothing(server, enc):
    """``{"op":"ping"}`` (PROTOCOL.md, the browser's liveness probe): acked
    with op ``ping`` even while updates are queued, and the subscription
    and its seqs go on untouched."""
    feed = seed(server, "AAPL")
    client = server.connect(enc)
    last = {s: m["seq"] for s, m in client.subscribe_and_snapshots("AAPL").items()}
    ticker = Ticker(feed, "AAPL", period=0.001)
    ticker.start()
    try:
        time.sleep(0.02)
        for _ in range(3):
            client.send_json({"op": "ping"})
            got = client.recv_until(lambda m: m["type"] == "ack", timeout=TIMEOUT)
            assert got[-1] == {"type": "ack", "op": "ping", "symbols": []}
            last = assert_seq_continuity(got[:-1], last)
    finally:
        sent = ticker.stop()
    server.wait_published(1 + sent)
    if last["AAPL"] < 1 + sent:  # else every update came before the last ack
        rest = client.recv_until(lambda m: m.get("sym") == "AAPL" and m["seq"] == 1 + sent)
        last = assert_seq_continuity(rest, last)
    assert last["AAPL"] == 1 + sent
    assert client.drain() == []


def test_wildcard_subscription_includes_symbols_that_appear_later(server, enc):
    feed = seed(server, "AAPL")
    client = server.connect(enc)
    client.subscribe("*")
    assert subscribe_ack(client.recv_type("ack")) == {"type": "ack", "op": "subscribe", "symbols": ["*"]}
    assert client.recv_type("snapshot")["sym"] == "AAPL"

    feed.send(trade("NEWCO", 7.25, 10, "buy", ts_event=T0))
    snap = client.recv_type("snapshot")
    assert (snap["sym"], snap["seq"], snap["quote"], snap["trade"]) == ("NEWCO", 0, None, None)
    assert snap["book"] == {"bids": [], "asks": [], "checksum": 0}
    assert_update_matches(client.recv(), trade("NEWCO", 7.25, 10, "buy", ts_event=T0), seq=1)

    # After unsubscribing "*", neither old nor new symbols are delivered.
    client.unsubscribe("*")
    assert client.recv_type("ack") == {"type": "ack", "op": "unsubscribe", "symbols": ["*"]}
    feed.send(trade("AAPL", 1.0, 1.0), trade("LATECO", 1.0, 1.0))
    server.wait_published(4)
    assert client.drain(quiet=0.2) == []
    assert server.metric("tickcast_subscriptions") == 0


def test_synthetic_feed_wildcard_snapshots_then_live_updates(tickcast):
    server = tickcast(feed="synthetic")
    names = server.symbols()
    assert len(names) == 100 and len(set(names)) == 100
    assert names[:2] == ["AAPL", "MSFT"]

    client = server.connect("json")
    client.subscribe("*")
    assert subscribe_ack(client.recv_type("ack")) == {"type": "ack", "op": "subscribe", "symbols": ["*"]}
    snaps = [client.recv_type("snapshot") for _ in names]
    assert sorted(s["sym"] for s in snaps) == sorted(names)
    for s in snaps:
        assert set(s) == {"type", "sym", "seq", "ts_event", "ts_ingest", "quote", "trade", "depth", "book"}
        assert len(s["book"]["bids"]) <= 10 and len(s["book"]["asks"]) <= 10
    last = {s["sym"]: s["seq"] for s in snaps}

    updates = [client.recv() for _ in range(3000)]
    assert all(m["type"] in ("trade", "quote", "book") for m in updates), {m["type"] for m in updates}
    end = assert_seq_continuity(updates, last)
    assert len({m["sym"] for m in updates}) >= 20, "updates should spread over many symbols"
    assert sum(end.values()) - sum(last.values()) == 3000
    for m in updates:
        if m["type"] == "quote":
            assert m["bid"] < m["ask"], m


def test_reset_decodes_to_the_same_message_in_every_encoding(pb2):
    """``reset`` as docs/PROTOCOL.md and proto/tickcast.proto define it: a
    map/object with type, sym, seq, reason; in protobuf, sym and seq in the
    envelope and the reason as ``ResetReason``. (The server does not send it
    yet: the frames are built here, from the documents alone.)"""
    for reason in RESET_REASONS:
        for seq in (1500, 0, 2**64 - 1):
            want = {"type": "reset", "sym": "AAPL", "seq": seq, "reason": reason}
            pb = pb2.ServerMessage(type="reset", sym="AAPL", seq=seq)
            pb.reset.reason = pb2.ResetReason.Value(f"RESET_REASON_{reason.upper()}")
            frames = {
                "json": json.dumps(want, separators=(",", ":")),
                "msgpack": msgpack.packb(want),
                "protobuf": pb.SerializeToString(),
            }
            for encoding, data in frames.items():
                assert decode_frame(encoding, data, pb2) == want, (encoding, reason, seq)
    # The documented example, as the server's JSON writes it.
    assert decode_frame("json", '{"type":"reset","sym":"AAPL","seq":1500,"reason":"gap"}', pb2)["reason"] == "gap"
    # UNSPECIFIED (never sent), an unknown reason, a body that is not the
    # type's, or times on a reset: not a valid reset.
    bad = []
    for reason in (pb2.RESET_REASON_UNSPECIFIED, 99):
        m = pb2.ServerMessage(type="reset", sym="AAPL", seq=1)
        m.reset.reason = reason
        bad.append(m)
    bad.append(pb2.ServerMessage(type="reset", sym="AAPL", seq=1, ack=pb2.Ack(op="subscribe")))
    timed = pb2.ServerMessage(type="reset", sym="AAPL", seq=1, ts_event=5)
    timed.reset.reason = pb2.RESET_REASON_GAP
    bad.append(timed)
    for m in bad:
        with pytest.raises(AssertionError):
            decode_frame("protobuf", m.SerializeToString(), pb2)


# --------------------------------------------------------------------------
# Encoding selection
# --------------------------------------------------------------------------


def test_subprotocol_selects_encoding_and_is_echoed(server, enc):
    seed(server, "AAPL")
    proto = f"tickcast.{enc}"
    for offered in ([proto], ["chat.v2", proto]):
        c = server.connect(None, subprotocols=offered, decode_as=enc)
        assert c.ws.subprotocol == proto, f"offered {offered}, server chose {c.ws.subprotocol!r}"
        snap = c.subscribe_and_snapshots("AAPL")["AAPL"]  # decodes as `enc`, checks the frame kind
        assert snap["seq"] == 1
    # ?encoding= and a matching subprotocol agree: fine, and echoed.
    c = server.connect(enc, subprotocols=[proto])
    assert c.ws.subprotocol == proto
    c.subscribe_and_snapshots("AAPL")
    # ?encoding= alone: no subprotocol in the answer.
    c = server.connect(enc)
    assert c.ws.subprotocol is None
    c.subscribe_and_snapshots("AAPL")


def test_default_encoding_is_msgpack(server):
    seed(server, "AAPL")
    c = server.connect(None, decode_as="msgpack")
    assert c.ws.subprotocol is None
    assert c.subscribe_and_snapshots("AAPL")["AAPL"]["seq"] == 1


@pytest.mark.parametrize(
    "query, protocols, needle",
    [
        ("encoding=xml", None, '"xml"'),
        ("encoding=", None, '""'),
        ("encoding=JSON", None, '"JSON"'),
        ("", "graphql-ws", "graphql-ws"),
        ("encoding=json", "tickcast.msgpack", "conflicts"),
    ],
    ids=["unknown-name", "empty-name", "wrong-case", "unknown-subprotocol", "query-vs-subprotocol-conflict"],
)
def test_bad_encoding_is_http_400_naming_the_valid_ones(server, query, protocols, needle):
    healthy = Healthy(server)
    before = server.metric("tickcast_http_rejected_total")
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    if protocols:
        headers["Sec-WebSocket-Protocol"] = protocols
    status, _, body = http_request(server.port, f"/ws?{query}", headers=headers)
    text = body.decode()
    assert status == 400, (status, text)
    for name in ("msgpack", "protobuf", "json"):
        assert name in text, f"400 body does not name {name}: {text!r}"
    assert needle in text, text
    # A real WebSocket client sees the same refusal.
    with pytest.raises(InvalidStatus) as info:
        server.connect(subprotocols=[protocols] if protocols else None, query=query)
    assert info.value.response.status_code == 400
    assert b"msgpack" in info.value.response.body
    assert server.metric("tickcast_http_rejected_total") == before + 2
    healthy.check()
    healthy.finish()
    assert server.metric("tickcast_connections_total") == 3, "a refused upgrade is not a session"


# --------------------------------------------------------------------------
# Bad input, while healthy clients keep receiving
# --------------------------------------------------------------------------


def assert_error(msg: dict, code: str, symbols=()):
    assert msg["type"] == "error", msg
    assert msg["code"] == code, msg
    assert isinstance(msg["message"], str) and msg["message"], msg
    assert msg["symbols"] == list(symbols), msg


def assert_still_usable(client: WsClient) -> None:
    snap = client.subscribe_and_snapshots("AAPL")["AAPL"]
    assert snap["sym"] == "AAPL"
    client.unsubscribe("AAPL")
    client.recv_until(lambda m: m["type"] == "ack")


def test_malformed_json_gets_bad_json(server, enc):
    healthy = Healthy(server)
    bad = server.connect(enc)
    for payload in ["{not json", "", '{"op":"subscribe","symbols":["AAPL"]', "\u00e9\u00e9"]:
        bad.send_text(payload)
        assert_error(bad.recv(), "bad_json")
        healthy.check()
    bad.ws.send(b"\xff\xfe\x00garbage")  # binary frames are control messages too
    assert_error(bad.recv(), "bad_json")
    assert_still_usable(bad)
    healthy.check()
    healthy.finish()
    assert server.metric('tickcast_client_errors_total{code="bad_json"}') == 5


def test_unknown_op_gets_unknown_op(server, enc):
    healthy = Healthy(server)
    bad = server.connect(enc)
    for op in ["dance", "Subscribe", "SUBSCRIBE", ""]:
        bad.send_json({"op": op, "symbols": ["AAPL"]})
        msg = bad.recv()
        assert_error(msg, "unknown_op")
        assert "subscribe" in msg["message"] and "unsubscribe" in msg["message"], msg
        healthy.check()
    assert_still_usable(bad)
    healthy.finish()
    assert server.metric('tickcast_client_errors_total{code="unknown_op"}') == 4


@pytest.mark.parametrize(
    "request_",
    [
        [1],
        "subscribe",
        {"symbols": ["AAPL"]},
        {"op": 1, "symbols": ["AAPL"]},
        {"op": "subscribe"},
        {"op": "subscribe", "symbols": []},
        {"op": "subscribe", "symbols": "AAPL"},
        {"op": "subscribe", "symbols": [1]},
        {"op": "unsubscribe", "symbols": None},
    ],
    ids=["array", "string", "no-op", "op-not-string", "no-symbols", "empty-symbols", "symbols-string", "symbol-number", "symbols-null"],
)
def test_invalid_request_gets_bad_request(server, enc, request_):
    healthy = Healthy(server)
    bad = server.connect(enc)
    bad.send_json(request_)
    assert_error(bad.recv(), "bad_request")
    healthy.check()
    assert_still_usable(bad)
    healthy.finish()
    assert server.metric('tickcast_client_errors_total{code="bad_request"}') == 1


def test_unknown_symbol_gets_unknown_symbol_with_the_names(server, enc):
    healthy = Healthy(server)
    bad = server.connect(enc)
    bad.subscribe("NOPE")
    assert_error(bad.recv(), "unknown_symbol", ["NOPE"])
    healthy.check()
    # Known and unknown mixed: the known one is applied and acked, then the
    # error; both are control messages, so they come before the snapshot.
    bad.subscribe("AAPL", "NOPE", "NADA")
    assert subscribe_ack(bad.recv()) == {"type": "ack", "op": "subscribe", "symbols": ["AAPL"]}
    assert_error(bad.recv(), "unknown_symbol", ["NOPE", "NADA"])
    assert bad.recv_type("snapshot")["sym"] == "AAPL"
    healthy.check()
    bad.unsubscribe("GONE")
    assert_error(bad.recv_until(lambda m: m["type"] == "error")[-1], "unknown_symbol", ["GONE"])
    healthy.check()
    healthy.finish()
    assert server.metric('tickcast_client_errors_total{code="unknown_symbol"}') == 3


def test_oversized_message_is_closed_with_1009(server, enc):
    healthy = Healthy(server)
    bad = server.connect(enc)
    bad.send_text("x" * (65536 + 1))
    code, _, before = bad.expect_close()
    assert code == 1009, f"expected close 1009, got {code} after {before!r}"
    healthy.check()
    healthy.finish()
    assert server.metric('tickcast_client_errors_total{code="message_too_big"}') == 1
    server.wait_metric("tickcast_connections", lambda v: v == 3)


def test_oversized_fragmented_message_is_closed_with_1009(server, enc):
    healthy = Healthy(server)
    bad = server.connect(enc)
    bad.ws.send(["y" * 40000, "y" * 40000])  # two fragments, each under the limit
    code, _, before = bad.expect_close()
    assert code == 1009, f"expected close 1009, got {code} after {before!r}"
    healthy.check()
    healthy.finish()
    assert server.metric('tickcast_client_errors_total{code="message_too_big"}') == 1


@pytest.mark.parametrize("size", [65535, 65536], ids=["just_under", "exactly"])
def test_message_up_to_the_limit_is_accepted(server, enc, size):
    seed(server, "AAPL")
    client = server.connect(enc)
    body = '{"op":"subscribe","symbols":["AAPL"]}'
    client.send_text(body + " " * (size - len(body)))
    assert client.recv_type("ack")["symbols"] == ["AAPL"]
    assert client.recv_type("snapshot")["sym"] == "AAPL"


def test_invalid_utf8_text_frame_is_closed_with_1007(server, enc):
    healthy = Healthy(server)
    bad = server.connect(enc)
    bad.ws.send(b'{"op":"subscribe","symbols":["\xff\xfe"]}', text=True)  # a text frame that is not UTF-8
    code, _, before = bad.expect_close()
    assert code == 1007, f"expected close 1007, got {code} after {before!r}"
    healthy.check()
    healthy.finish()
    assert server.metric('tickcast_client_errors_total{code="protocol_error"}') == 1


def test_client_close_is_echoed_and_the_session_freed(server, enc):
    seed(server, "AAPL")
    c = server.connect(enc)
    c.subscribe_and_snapshots("AAPL")
    assert server.metric("tickcast_subscriptions") == 1
    c.ws.close(4000, "bye")
    assert c.ws.protocol.close_rcvd is not None, "the server did not answer the close"
    assert (c.ws.protocol.close_rcvd.code, c.ws.protocol.close_rcvd.reason) == (4000, "bye")
    server.wait_metric("tickcast_connections", lambda v: v == 0)
    server.wait_metric("tickcast_subscriptions", lambda v: v == 0)


def test_repeated_subscriptions_never_duplicate_snapshots_or_updates(server, enc):
    feed = seed(server, "AAPL", "MSFT")
    c = server.connect(enc)
    c.subscribe("AAPL", "AAPL")
    assert c.recv_type("ack")["symbols"] == ["AAPL", "AAPL"]
    assert c.recv_type("snapshot")["sym"] == "AAPL"
    c.subscribe("AAPL")
    assert c.recv_type("ack")["symbols"] == ["AAPL"]
    c.subscribe("*")
    assert c.recv_type("ack")["symbols"] == ["*"]
    assert c.recv_type("snapshot")["sym"] == "MSFT"  # only the symbol not yet held
    assert c.drain() == []
    feed.send(*[trade(sym, 1.0 + i, 1.0) for i in range(10) for sym in ("AAPL", "MSFT")])
    msgs = c.recv_until(lambda m: m.get("sym") == "MSFT" and m["seq"] == 11)
    msgs += c.drain()
    assert len(msgs) == 20, msgs
    assert_seq_continuity(msgs, {"AAPL": 1, "MSFT": 1})
    assert server.metric("tickcast_subscriptions") == 2


# --------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------


def test_metrics_count_what_happened(server):
    m = server.metrics()
    for name in (
        "tickcast_connections",
        "tickcast_connections_total",
        "tickcast_subscriptions",
        "tickcast_symbols",
        "tickcast_ticks_ingested_total",
        "tickcast_updates_published_total",
        "tickcast_snapshots_sent_total",
        "tickcast_feed_errors_total",
        "tickcast_http_rejected_total",
    ):
        assert m[name] == 0, (name, m[name])
    for e in ENCODINGS:
        assert m[f'tickcast_frames_encoded_total{{encoding="{e}"}}'] == 0
    for code in ("bad_json", "unknown_op", "bad_request", "unknown_symbol", "message_too_big", "protocol_error", "pong_timeout"):
        assert m[f'tickcast_client_errors_total{{code="{code}"}}'] == 0

    feed = seed(server, "AAPL", "MSFT")
    jc = server.connect("json")
    jc.subscribe_and_snapshots("AAPL", "MSFT")
    m = server.metrics()
    assert m["tickcast_connections"] == 1 and m["tickcast_connections_total"] == 1
    assert m["tickcast_subscriptions"] == 2 and m["tickcast_snapshots_sent_total"] == 2
    assert m["tickcast_symbols"] == 2 and m["tickcast_feed_connections_total"] == 1

    # Only encodings with subscribers are encoded, once per update.
    feed.send(*[trade("AAPL", 1.0 + i, 1.0) for i in range(5)])
    jc.recv_until(lambda msg: msg.get("seq") == 6)
    m = server.metrics()
    assert m['tickcast_frames_encoded_total{encoding="json"}'] == 5
    assert m['tickcast_frames_encoded_total{encoding="msgpack"}'] == 0
    assert m['tickcast_frames_encoded_total{encoding="protobuf"}'] == 0

    mc, pc = server.connect("msgpack"), server.connect("protobuf")
    mc.subscribe_and_snapshots("AAPL")
    pc.subscribe_and_snapshots("AAPL")
    second = server.connect("json")
    second.subscribe_and_snapshots("AAPL")  # a second json subscriber shares the json frame
    feed.send(*[trade("AAPL", 10.0 + i, 1.0) for i in range(3)])
    for c in (jc, mc, pc, second):
        c.recv_until(lambda msg: msg.get("seq") == 9)
    m = server.metrics()
    assert m['tickcast_frames_encoded_total{encoding="json"}'] == 8
    assert m['tickcast_frames_encoded_total{encoding="msgpack"}'] == 3
    assert m['tickcast_frames_encoded_total{encoding="protobuf"}'] == 3
    assert m["tickcast_updates_published_total"] == 2 + 8
    assert m["tickcast_ticks_ingested_total"] == 2 + 8
    assert m["tickcast_connections"] == 4 and m["tickcast_connections_total"] == 4
    assert m["tickcast_subscriptions"] == 5 and m["tickcast_snapshots_sent_total"] == 5
    assert m["tickcast_frames_sent_total"] > 0 and m["tickcast_bytes_sent_total"] > 0

    # Client errors, by code.
    jc.send_text("{")
    jc.send_text("nope")
    mc.send_json({"op": "dance", "symbols": ["X"]})
    pc.send_json({"op": "subscribe"})
    second.subscribe("NOPE")
    for c in (mc, pc, second):
        c.recv_until(lambda msg: msg["type"] == "error")
    jc.recv_until(lambda msg: msg["type"] == "error")
    jc.recv_until(lambda msg: msg["type"] == "error")
    m = server.metrics()
    assert m['tickcast_client_errors_total{code="bad_json"}'] == 2
    assert m['tickcast_client_errors_total{code="unknown_op"}'] == 1
    assert m['tickcast_client_errors_total{code="bad_request"}'] == 1
    assert m['tickcast_client_errors_total{code="unknown_symbol"}'] == 1

    # Feed errors are counted and the feed connection goes on.
    feed.send_raw(b'not json\n{"type":"ohlc","sym":"AAPL"}\n{"type":"trade","sym":"AAPL","px":1,"sz":-1}\n')
    feed.send(trade("AAPL", 99.0, 1.0))
    jc.recv_until(lambda msg: msg.get("seq") == 10)
    m = server.metrics()
    assert m["tickcast_feed_errors_total"] == 3
    assert m["tickcast_ticks_ingested_total"] == 2 + 9

    # A client leaving is reflected in the gauges.
    second.close()
    server.wait_metric("tickcast_connections", lambda v: v == 3)
    server.wait_metric("tickcast_subscriptions", lambda v: v == 4)
    assert server.metric("tickcast_connections_total") == 4


# --------------------------------------------------------------------------
# Lifecycle: shutdown and heartbeats
# --------------------------------------------------------------------------


def test_sigterm_closes_every_client_with_1001_and_exits_within_2s(server):
    feed = seed(server, "AAPL")
    clients = [server.connect(e) for e in ENCODINGS]
    for c in clients:
        c.subscribe_and_snapshots("AAPL")
    idle = server.connect("json")  # connected, never subscribed
    ticker = Ticker(feed, "AAPL", period=0.002)
    ticker.start()
    try:
        for c in clients:
            c.recv_until(lambda m: m.get("seq", 0) >= 5)
    finally:
        ticker.stop()  # the feed handler stays connected, but idle (the next test keeps it busy)
    t0 = time.monotonic()
    server.signal(signal.SIGTERM)
    codes = [c.expect_close(timeout=3)[:2] for c in clients + [idle]]
    try:
        rc = server.proc.wait(timeout=max(0.0, 2.0 - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        pytest.fail("server still running 2 s after SIGTERM")
    elapsed = time.monotonic() - t0
    assert [c for c, _ in codes] == [1001] * 4, f"expected close 1001 for every client, got {codes}"
    assert rc == 0, f"exit status {rc}"
    assert elapsed < 2.0, elapsed


def test_sigterm_exits_within_2s_while_a_feed_handler_keeps_sending(server):
    feed = seed(server, "AAPL")
    client = server.connect("json")
    client.subscribe_and_snapshots("AAPL")
    ticker = Ticker(feed, "AAPL", period=0.002)
    ticker.start()
    try:
        client.recv_until(lambda m: m.get("seq", 0) >= 5)
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        code, _, _ = client.expect_close(timeout=3)
        assert code == 1001
        try:
            server.proc.wait(timeout=max(0.0, 2.0 - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            pytest.fail("server still running 2 s after SIGTERM while the feed handler keeps sending")
    finally:
        ticker.halt()


def test_sigterm_with_a_stalled_client_still_exits_within_2s(server):
    """A client that stopped reading cannot hold the server past 2 s."""
    feed = seed(server, "AAPL")
    stalled = RawWs(server.port, rcvbuf=4096)
    # Full depth, so that each of the identical 500-level lines below is a
    # 500-level frame (at depth 10 they would change nothing after the first).
    stalled.sock.sendall(_masked_text('{"op":"subscribe","symbols":["AAPL"],"depth":"full"}'))
    wait_until(lambda: server.metric("tickcast_subscriptions") == 1, what="the stalled client's subscription")
    line = book("AAPL", bids=[[100.0 + i / 100, 1.0] for i in range(500)], ts_event=T0)
    published = 1
    # Frames into a socket nobody reads, until the server has to queue them
    # (up to --conflate-above, 256 KiB: then it conflates).
    for _ in range(40):
        feed.send(*[line] * 100)
        published += 100
        server.wait_published(published, timeout=30)
        if server.metric("tickcast_queued_bytes") > 200_000:
            break
    else:
        pytest.fail("could not back up the stalled client's socket")
    t0 = time.monotonic()
    server.signal(signal.SIGTERM)
    try:
        rc = server.proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        pytest.fail("server still running 2 s after SIGTERM with a stalled client")
    elapsed = time.monotonic() - t0
    stalled.close()
    assert rc == 0
    assert elapsed < 2.0, elapsed
    print(f"exit {elapsed:.3f}s after SIGTERM with a stalled client")


def _masked_text(text: str) -> bytes:
    payload = text.encode()
    assert len(payload) < 126
    mask = b"\x01\x02\x03\x04"
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_client_that_never_answers_pings_is_closed_with_1008(server):
    responsive = server.connect("json")  # websockets answers pings by itself
    t_start = time.monotonic()
    raw = RawWs(server.port)
    pings = []
    close = None
    while close is None:
        frame = raw.read_frame(timeout=5)
        assert frame is not None, "connection ended without a close frame"
        opcode, payload = frame
        if opcode == 0x9:
            pings.append(time.monotonic())
        elif opcode == 0x8:
            close = payload
        else:
            pytest.fail(f"unexpected frame opcode {opcode:#x}")
    t_close = time.monotonic()
    assert pings, "the server never pinged"
    assert int.from_bytes(close[:2], "big") == 1008, close
    # --ping-interval 1s, --pong-timeout 1s: ping at ~1 s, close at ~2 s.
    assert 0.7 <= pings[0] - t_start <= 2.5, pings[0] - t_start
    assert 0.7 <= t_close - pings[0] <= 2.5, t_close - pings[0]
    assert raw.read_frame(timeout=5) is None, "the server must end the connection after the close frame"
    raw.close()

    # The responsive client outlives several ping rounds and still works.
    wait_until(lambda: time.monotonic() - t_start >= 3.2, timeout=5, interval=0.05)
    feed = seed(server, "AAPL")
    assert responsive.subscribe_and_snapshots("AAPL")["AAPL"]["seq"] == 1
    feed.send(trade("AAPL", 1.5, 1.0))
    assert responsive.recv_type("trade")["seq"] == 2
    assert server.metric('tickcast_client_errors_total{code="pong_timeout"}') == 1
    server.wait_metric("tickcast_connections", lambda v: v == 1)


# --------------------------------------------------------------------------
# Plain HTTP
# --------------------------------------------------------------------------


def test_connections_over_max_connections_get_http_503(tickcast):
    # Every TCP connection counts, a /metrics request too: read the metrics
    # on their own listener.
    metrics_port = free_port()
    server = tickcast(extra=["--max-connections", "2", "--metrics-listen", f"127.0.0.1:{metrics_port}"])

    def metric(name):
        return parse_metrics(http_request(metrics_port, "/metrics")[2].decode()).get(name)

    first, second = server.connect("json"), server.connect("msgpack")
    # A third connection is refused at accept: a best-effort 503, or the
    # connection closed (by hand: a WebSocket library may trip over a
    # socket closed mid-handshake).
    try:
        status, _, body = http_request(server.port, "/ws")
        assert (status, body) == (503, b"too many connections: try again later\n")
    except (http.client.HTTPException, OSError):
        pass
    assert metric("tickcast_connections_rejected_total") == 1
    first.close()
    wait_until(lambda: metric("tickcast_connections") == 1, what="one session left")
    third = server.connect("protobuf")  # a freed slot can be used again
    assert third.ws.ping().wait(TIMEOUT)
    assert second.ws.ping().wait(TIMEOUT)


def test_http_endpoints(server):
    status, _, body = http_request(server.port, "/healthz")
    assert (status, body) == (200, b"ok\n")
    status, headers, body = http_request(server.port, "/symbols")
    assert status == 200 and headers["content-type"].startswith("application/json") and body == b"[]"
    seed(server, "AAPL", "BRK.B")
    assert server.symbols() == ["AAPL", "BRK.B"]
    status, headers, body = http_request(server.port, "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert b"# TYPE tickcast_connections gauge" in body
    status, _, body = http_request(server.port, "/ws")  # not an upgrade
    assert status == 400
    assert http_request(server.port, "/nope")[0] == 404
    assert http_request(server.port, "/healthz", method="POST")[0] == 405


def test_invalid_feed_symbol_is_rejected_not_interned(server):
    feed = server.feed()
    feed.send(trade("has space", 1.0, 1.0), trade("X" * 33, 1.0, 1.0), trade("OK", 1.0, 1.0))
    server.wait_published(1)
    server.wait_metric("tickcast_feed_errors_total", lambda v: v == 2)
    assert server.symbols() == ["OK"]
    # An unknown/invalid name from a client is an unknown_symbol, not a crash.
    c = server.connect("json")
    c.subscribe("has space")
    assert_error(c.recv(), "unknown_symbol", ["has space"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT):
        pass  # a bare TCP connect/close does not disturb the server
    assert http_request(server.port, "/healthz")[0] == 200

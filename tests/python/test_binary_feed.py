"""Binary tick records on the ``tcp://`` feed, checked from the outside.

The records are built here with ``struct.pack`` from the byte table in
docs/PROTOCOL.md ("Binary records"; the layout of src/model/record.rs),
not with tickcast's own encoder, and read back by the independent
WebSocket client:

* trades, quotes and books sent as binary records reach a subscriber bit
  for bit, with the server's seqs 1, 2, 3... (the record's own seq and
  epoch are ignored), in every encoding;
* a malformed record (NaN price, unknown kind, bad symbol, an image) is
  skipped and counted in /metrics, and the next good record still arrives;
* a JSON-lines handler and a binary handler connected at once both work;
* a frame length of 0 or over 1 MiB closes that connection only, counted
  as ``reason="bad_frame"``;
* the first byte decides the format, even when a binary frame's length
  begins with ``{``; an auth line stays a text line before binary frames.

Every wait is bounded.
"""

from __future__ import annotations

import math
import socket
import struct
import time
from pathlib import Path

import pytest

from tickcast_client import ENCODINGS, TIMEOUT, assert_same_float, is_closed_by_peer, trade

T0 = 1_700_000_000_123_456_789  # > 2**53: a double would round it
MAX_FRAME = 1 << 20
TOKEN = "feed-secret-0123456789abcdef"

# docs/PROTOCOL.md, "Binary records": a 36-byte head, the symbol, the body.
HEAD = struct.Struct("<BBBBQQQQ")  # version, kind, flags, n, epoch, seq, ts_event, ts_ingest
KINDS = {"trade": 1, "quote": 2, "book": 3, "image": 4}
SIDES = {"unknown": 0, "buy": 1, "sell": 2}


def record(
    kind: str | int, sym: str, body: bytes, ts_event: int = 0, seq: int = 0, epoch: int = 0, ts_ingest: int = 0
) -> bytes:
    raw = sym.encode()
    kind_byte = KINDS[kind] if isinstance(kind, str) else kind
    return HEAD.pack(1, kind_byte, 0, len(raw), epoch, seq, ts_event, ts_ingest) + raw + body


def trade_rec(sym: str, px: float, sz: float, side: str = "buy", **kw) -> bytes:
    return record("trade", sym, struct.pack("<ddB", px, sz, SIDES[side]), **kw)


def quote_rec(sym: str, bid: float, bid_sz: float, ask: float, ask_sz: float, **kw) -> bytes:
    return record("quote", sym, struct.pack("<dddd", bid, bid_sz, ask, ask_sz), **kw)


def book_rec(sym: str, bids=(), asks=(), **kw) -> bytes:
    levels = b"".join(struct.pack("<dd", px, sz) for px, sz in [*bids, *asks])
    return record("book", sym, struct.pack("<HH", len(bids), len(asks)) + levels, **kw)


def frame(rec: bytes) -> bytes:
    return struct.pack("<I", len(rec)) + rec


class BinaryFeed:
    """A feed handler sending framed binary records over TCP."""

    def __init__(self, port: int, auth: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if auth is not None:
            self.sock.sendall(b'{"type":"auth","token":"' + auth.encode() + b'"}\n')

    def send(self, *records: bytes) -> None:
        self.sock.sendall(b"".join(frame(r) for r in records))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


def universe(tmp_path: Path, *names: str) -> list[str]:
    """``--symbols-file`` flags declaring ``names``, so a client can subscribe
    before their first tick."""
    path = tmp_path / "symbols.txt"
    path.write_text("".join(f"{n}\n" for n in names))
    return ["--symbols-file", str(path)]


def updates(client, n: int) -> list[dict]:
    """The next ``n`` market updates."""
    return [client.recv() for _ in range(n)]


def test_the_layout_matches_the_documented_sizes():
    # Trade 53 + n, quote 68 + n, book 40 + n + 16 per level.
    assert len(trade_rec("AAPL", 189.5, 100)) == 57
    assert len(quote_rec("AAPL", 1, 1, 2, 1)) == 72
    assert len(book_rec("AAPL", bids=[(1, 1)], asks=[(2, 1), (3, 1)])) == 44 + 48
    # The documented example frame, byte for byte.
    doc = (Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md").read_text()
    hexdump = doc.split("```text feed-binary\n")[1].split("```")[0]
    assert bytes.fromhex(hexdump) == frame(trade_rec("AAPL", 189.5, 100, "buy", ts_event=1_700_000_000_000_000_000))


@pytest.mark.parametrize("enc", ENCODINGS)
def test_binary_ticks_arrive_bit_for_bit_with_the_servers_seqs(tickcast, tmp_path, enc):
    server = tickcast(extra=universe(tmp_path, "AAPL"))
    client = server.connect(enc)
    snap = client.subscribe_and_snapshots("AAPL", depth="full")["AAPL"]
    assert snap["seq"] == 0, "declared, never ticked"
    feed = BinaryFeed(server.feed_port)
    # The handler's own seq and epoch are ignored: the server sequences.
    feed.send(
        trade_rec("AAPL", 0.1 + 0.2, 1e-9, "sell", ts_event=T0, seq=999, epoch=7, ts_ingest=1),
        quote_rec("AAPL", 189.49, 300.0, 5e-324, 1.7976931348623157e308, ts_event=2**64 - 1, seq=5),
        book_rec("AAPL", bids=[(189.48, 100.0), (1 / 3, 0.0)], asks=[(189.51, 200.0)], ts_event=T0 + 2),
        trade_rec("AAPL", -0.0, 2.0, "unknown"),  # ts_event 0: the server's clock
    )
    before = time.time_ns()
    t, q, b, late = updates(client, 4)
    assert [m["seq"] for m in (t, q, b, late)] == [1, 2, 3, 4]
    assert [m["type"] for m in (t, q, b, late)] == ["trade", "quote", "book", "trade"]
    assert t["sym"] == "AAPL" and t["side"] == "sell" and t["ts_event"] == T0
    assert_same_float(t["px"], 0.30000000000000004, "trade.px")
    assert_same_float(t["sz"], 1e-9, "trade.sz")
    assert abs(t["ts_ingest"] - before) < 60 * 10**9, "the server stamps ts_ingest, not the record's 1"
    assert q["ts_event"] == 2**64 - 1
    for field, v in (("bid", 189.49), ("bid_sz", 300.0), ("ask", 5e-324), ("ask_sz", 1.7976931348623157e308)):
        assert_same_float(q[field], v, f"quote.{field}")
    assert b["ts_event"] == T0 + 2
    assert len(b["bids"]) == 2 and len(b["asks"]) == 1
    for got, want in zip([*b["bids"], *b["asks"]], [(189.48, 100.0), (1 / 3, 0.0), (189.51, 200.0)]):
        assert_same_float(got[0], want[0], "book px")
        assert_same_float(got[1], want[1], "book sz")
    assert_same_float(late["px"], 0.0, "trade.px")
    assert math.copysign(1, late["px"]) == 1, "-0 becomes +0, as in JSON"
    assert abs(late["ts_event"] - before) < 60 * 10**9, "ts_event 0 is the server's clock"
    assert server.metric("tickcast_feed_errors_total") == 0
    feed.close()


def test_malformed_records_are_skipped_and_counted_and_the_next_arrives(server):
    feed = BinaryFeed(server.feed_port)
    feed.send(trade_rec("GOOD", 1.0, 1.0))
    server.wait_published(1)
    client = server.connect("json")
    client.subscribe_and_snapshots("GOOD")
    bad = [
        trade_rec("GOOD", math.nan, 1.0),  # NaN price
        trade_rec("GOOD", 1.0, -1.0),  # negative size
        record(9, "GOOD", struct.pack("<ddB", 1.0, 1.0, 1)),  # unknown kind
        trade_rec("BAD SYM", 1.0, 1.0),  # a space is not a symbol character
        record("image", "GOOD", struct.pack("<HH", 0, 0)),  # a sequencer's record
        trade_rec("GOOD", 1.0, 1.0)[:-1],  # a byte short of its kind's length
        book_rec("GOOD", bids=[(1.0, 1.0)] * 1001),  # over 1,000 levels a side
    ]
    feed.send(*bad, trade_rec("GOOD", 2.5, 3.0))
    server.wait_metric("tickcast_feed_errors_total", lambda v: v == len(bad))
    msg = client.recv_type("trade")
    assert (msg["seq"], msg["px"]) == (2, 2.5), "the good record after the bad ones"
    # The connection is still open and read normally.
    feed.send(trade_rec("GOOD", 3.5, 1.0))
    assert client.recv_type("trade")["seq"] == 3
    assert client.drain(0.1) == []
    assert "BAD SYM" not in server.symbols()
    assert server.metric('tickcast_feed_refused_total{reason="bad_frame"}') == 0
    feed.close()


def test_json_and_binary_handlers_side_by_side(server, tmp_path):
    json_feed = server.feed()
    binary = BinaryFeed(server.feed_port)
    json_feed.send(trade("JSN", 1.0, 1.0))
    binary.send(trade_rec("BIN", 1.0, 1.0))
    server.wait_published(2)
    client = server.connect("msgpack")
    client.subscribe_and_snapshots("JSN", "BIN")
    n = 50
    for i in range(n):
        # Both formats, interleaved, on their own symbols and on a shared one.
        json_feed.send(trade("JSN", 100.0 + i, 1.0), trade("BOTH", 0.5, 1.0))
        binary.send(trade_rec("BIN", 200.0 + i, 1.0), trade_rec("BOTH", 0.25, 1.0))
    seen: dict[str, list[tuple[int, float]]] = {"JSN": [], "BIN": []}
    deadline = time.monotonic() + TIMEOUT
    while len(seen["JSN"]) + len(seen["BIN"]) < 2 * n and time.monotonic() < deadline:
        m = client.recv()
        seen[m["sym"]].append((m["seq"], m["px"]))
    assert seen["JSN"] == [(2 + i, 100.0 + i) for i in range(n)]
    assert seen["BIN"] == [(2 + i, 200.0 + i) for i in range(n)]
    server.wait_metric("tickcast_ticks_ingested_total", lambda v: v == 2 + 4 * n)
    assert server.metric("tickcast_feed_errors_total") == 0


@pytest.mark.parametrize("length", [0, MAX_FRAME + 1, 2**32 - 1])
def test_a_bad_frame_length_closes_that_connection_only(server, length):
    json_feed = server.feed()
    good = BinaryFeed(server.feed_port)
    bad = BinaryFeed(server.feed_port)
    good.send(trade_rec("OK", 1.0, 1.0))
    json_feed.send(trade("OKJ", 1.0, 1.0))
    bad.send(trade_rec("OK", 1.0, 1.0))
    server.wait_published(3)
    client = server.connect("json")
    client.subscribe_and_snapshots("OK", "OKJ")
    # A frame length out of bounds, then a good frame nobody can find.
    bad.send_raw(struct.pack("<I", length) + frame(trade_rec("OK", 666.0, 1.0)))
    assert is_closed_by_peer(bad.sock), "the bad connection is closed"
    server.wait_metric('tickcast_feed_refused_total{reason="bad_frame"}', lambda v: v == 1)
    # The others go on.
    good.send(trade_rec("OK", 2.0, 1.0))
    json_feed.send(trade("OKJ", 3.0, 1.0))
    got = sorted((m["sym"], m["seq"], m["px"]) for m in [client.recv(), client.recv()])
    assert got == [("OK", 3, 2.0), ("OKJ", 2, 3.0)]
    assert client.drain(0.1) == [], "nothing after the bad length was taken"
    assert not is_closed_by_peer(good.sock, timeout=0.05)
    server.wait_metric("tickcast_feed_connections", lambda v: v == 2)


def test_a_first_frame_that_starts_with_a_brace_is_still_binary(tickcast, tmp_path):
    server = tickcast(extra=universe(tmp_path, "IBM"))
    client = server.connect("json")
    client.subscribe_and_snapshots("IBM", depth="full")
    # 36 + 3 + 4 + 5 levels x 16 = 123 bytes: the length prefix is `{ 00 00 00`.
    deep = book_rec("IBM", bids=[(100.0 - i, 1.0) for i in range(3)], asks=[(101.0, 1.0), (102.0, 2.0)])
    assert frame(deep)[:4] == b"{\x00\x00\x00"
    feed = BinaryFeed(server.feed_port)
    feed.send(deep, trade_rec("IBM", 100.5, 7.0))
    b, t = client.recv_type("book"), client.recv_type("trade")
    assert (b["seq"], len(b["bids"]), len(b["asks"]), t["seq"], t["px"]) == (1, 3, 2, 2, 100.5)
    assert server.metric("tickcast_feed_errors_total") == 0


def test_binary_records_after_the_auth_line(tickcast, tmp_path):
    server = tickcast(extra=["--feed-token", TOKEN, *universe(tmp_path, "AUTH")])
    client = server.connect("json")
    client.subscribe_and_snapshots("AUTH")
    feed = BinaryFeed(server.feed_port, auth=TOKEN)
    feed.send(quote_rec("AUTH", 1.25, 10.0, 1.5, 20.0))
    q = client.recv_type("quote")
    assert (q["seq"], q["bid"], q["ask"]) == (1, 1.25, 1.5)
    # Without the token, binary records are refused like JSON lines.
    intruder = BinaryFeed(server.feed_port)
    intruder.send(trade_rec("AUTH", 666.0, 1.0))
    # No newline in it: the server waits for its auth line until the 5 s auth timeout.
    assert is_closed_by_peer(intruder.sock, timeout=10)
    server.wait_metric('tickcast_feed_refused_total{reason="auth"}', lambda v: v == 1)
    assert client.drain(0.1) == []

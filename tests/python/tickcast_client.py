"""Client-side helpers for the independent-client test suite.

Everything here talks to a real `tickcast` binary over real sockets with
third-party libraries only (websockets, msgpack, protobuf): nothing from the
Rust crate is reused, so the suite checks the wire contract, not the code.

* `start_server`: runs the binary on free ports (``$TICKCAST_BIN``, default
  ``target/debug/tickcast`` under the repo root) and waits for ``/healthz``.
* `Server.feed()`: a feed handler on the server's ``tcp://`` feed that sends
  newline-delimited JSON ticks.
* `Server.connect(encoding)`: a WebSocket client that decodes every frame
  (msgpack / protobuf / json) into one normalized dict shape, the JSON one.
* `RawWs`: a hand-rolled client that completes the handshake and never
  answers a ping.
* `DepthBook`: the client's side of a depth-N book (snapshot, deltas, the
  keep-the-best-N rule) and `book_checksum`, the documented CRC-32, written
  from docs/PROTOCOL.md alone.

Every wait in here is bounded. Fixtures are in conftest.py.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import http.client
import inspect
import json
import os
import socket
import struct
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

REPO_ROOT = Path(__file__).resolve().parents[2]

# websockets >= 17 wants `legacy=True` to return the connection directly
# (without it, it warns); older versions have no such flag.
_CONNECT_EXTRA = {"legacy": True} if "legacy" in inspect.signature(ws_connect).parameters else {}
ENCODINGS = ("msgpack", "protobuf", "json")
SIDES = {0: "unknown", 1: "buy", 2: "sell"}
MARKET_TYPES = ("trade", "quote", "book", "snapshot")
# A reset's `reason` on the wire (JSON/msgpack); protobuf's ResetReason is
# RESET_REASON_ + the upper-case name (0, UNSPECIFIED, is never sent).
RESET_REASONS = ("gap", "epoch", "reconnect", "history")

# Generous default for one awaited event: debug builds on a loaded 2-core CI
# box are slow, but nothing legitimate takes seconds.
TIMEOUT = 5.0


def tickcast_bin() -> Path:
    raw = os.environ.get("TICKCAST_BIN", "target/debug/tickcast")
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], Any], timeout: float = TIMEOUT, interval: float = 0.01, what: str = "condition"):
    """Polls ``pred`` until it returns something truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def float_bits(x: float) -> bytes:
    return struct.pack("<d", x)


def assert_same_float(got: Any, expected: float, what: str = "value") -> None:
    """Exact equality, bit for bit, and the wire type must be a double."""
    assert isinstance(got, float), f"{what}: expected a float, got {type(got).__name__} {got!r}"
    assert got == expected, f"{what}: {got!r} != {expected!r}"
    assert float_bits(got) == float_bits(float(expected)), f"{what}: bits differ: {got!r} vs {expected!r}"


# --------------------------------------------------------------------------
# Protobuf module generation
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# Decoding: every encoding into the JSON shape
# --------------------------------------------------------------------------


def _levels(levels) -> list[list[float]]:
    return [[lvl.px, lvl.sz] for lvl in levels]


def pb_to_dict(msg) -> dict:
    """A protobuf ServerMessage in the JSON/msgpack shape, with checks."""
    body = msg.WhichOneof("body")
    assert body is not None, f"protobuf message without body: {msg}"
    assert body == msg.type, f"type {msg.type!r} does not match body case {body!r}"
    b = getattr(msg, body)
    if msg.type == "ack":
        assert (msg.sym, msg.seq, msg.ts_event, msg.ts_ingest) == ("", 0, 0, 0), msg
        out = {"type": "ack", "op": b.op, "symbols": list(b.symbols)}
        # Epoch 0 and an empty map are proto3's "absent": the JSON shape
        # leaves them out too.
        if b.epoch:
            out["epoch"] = b.epoch
        if b.recovered:
            out["recovered"] = dict(b.recovered)
        return out
    if msg.type == "error":
        assert (msg.sym, msg.seq, msg.ts_event, msg.ts_ingest) == ("", 0, 0, 0), msg
        return {"type": "error", "code": b.code, "message": b.message, "symbols": list(b.symbols)}
    if msg.type == "conflated":
        assert (msg.sym, msg.seq, msg.ts_event, msg.ts_ingest) == ("", 0, 0, 0), msg
        return {
            "type": "conflated",
            "symbols": [
                {"sym": e.sym, "from_seq": e.from_seq, "to_seq": e.to_seq, "trades": e.trades, "quotes": e.quotes, "books": e.books}
                for e in b.symbols
            ],
        }
    if msg.type == "reset":
        # sym and seq (of the snapshot that follows) are the envelope's.
        assert (msg.ts_event, msg.ts_ingest) == (0, 0), msg
        name = b.DESCRIPTOR.fields_by_name["reason"].enum_type.values_by_number.get(b.reason)
        assert name is not None and name.name.startswith("RESET_REASON_"), f"reset with unknown reason {b.reason}: {msg}"
        reason = name.name.removeprefix("RESET_REASON_").lower()
        assert reason in RESET_REASONS, f"reset reason {name.name} ({b.reason}): {msg}"
        return {"type": "reset", "sym": msg.sym, "seq": msg.seq, "reason": reason}
    if msg.type == "token_expiring":
        return {"type": "token_expiring", "expires_at": msg.token_expiring.expires_at}
    if msg.type == "replay_end":
        assert (msg.sym, msg.seq, msg.ts_ingest) == ("", 0, 0), msg
        return {"type": "replay_end", "source": b.source, "reason": b.reason, "events": b.events, "ts_event": msg.ts_event}
    out = {"type": msg.type, "sym": msg.sym, "seq": msg.seq, "ts_event": msg.ts_event, "ts_ingest": msg.ts_ingest}
    if msg.type == "trade":
        out.update(px=b.px, sz=b.sz, side=SIDES[b.side])
    elif msg.type == "quote":
        out.update(bid=b.bid, bid_sz=b.bid_sz, ask=b.ask, ask_sz=b.ask_sz)
    elif msg.type == "book":
        out.update(bids=_levels(b.bids), asks=_levels(b.asks), checksum=b.checksum)
    elif msg.type == "snapshot":
        q, t = b.quote, b.trade
        out["quote"] = (
            {"bid": q.bid, "bid_sz": q.bid_sz, "ask": q.ask, "ask_sz": q.ask_sz} if b.HasField("quote") else None
        )
        out["trade"] = {"px": t.px, "sz": t.sz, "side": SIDES[t.side]} if b.HasField("trade") else None
        assert b.HasField("book"), "snapshot without book"
        out["depth"] = b.depth
        out["book"] = {"bids": _levels(b.book.bids), "asks": _levels(b.book.asks), "checksum": b.book.checksum}
    else:  # pragma: no cover - a new type the suite does not know
        raise AssertionError(f"unknown protobuf message type {msg.type!r}")
    return out


def decode_frame(encoding: str, data: str | bytes, pb2_module) -> dict:
    """Decodes one WebSocket message; checks the frame kind (text for json,
    binary otherwise)."""
    if encoding == "json":
        assert isinstance(data, str), f"json must come in text frames, got binary {data[:40]!r}"
        msg = json.loads(data)
    elif encoding == "msgpack":
        assert isinstance(data, bytes), f"msgpack must come in binary frames, got text {data[:40]!r}"
        msg = msgpack.unpackb(data, raw=False, strict_map_key=True)
    elif encoding == "protobuf":
        assert isinstance(data, bytes), f"protobuf must come in binary frames, got text {data[:40]!r}"
        m = pb2_module.ServerMessage()
        m.ParseFromString(data)
        msg = pb_to_dict(m)
    else:  # pragma: no cover
        raise ValueError(encoding)
    assert isinstance(msg, dict) and "type" in msg, f"not a server message: {msg!r}"
    return msg


# --------------------------------------------------------------------------
# Books: a client's depth-N book and the book checksum
# --------------------------------------------------------------------------

# Depths a subscription (`"depth"`) or a replay (`?depth=`) may ask for.
DEPTHS = (1, 5, 10, 20, 25, 50, 100, 500, 1000, "full")
# Levels per side a "full" subscription keeps (the server's own bound), as
# snapshots report it in `depth`.
FULL_DEPTH = 4096
# Levels per side the checksum covers at most.
CHECKSUM_LEVELS = 10


def depth_levels(depth: int | str) -> int:
    """Levels per side of a depth as clients write it (1, 10, "full", ...)."""
    return FULL_DEPTH if depth == "full" else int(depth)


def book_checksum(bids: Iterable, asks: Iterable, depth: int | str) -> int:
    """CRC-32 (IEEE, zlib's) of the best K asks (lowest first) then the best
    K bids (highest first), each level as two little-endian doubles (price,
    size), K = min(depth, 10). ``bids``/``asks`` are best first; a side with
    fewer levels gives what it has; an empty book is 0."""
    k = min(depth_levels(depth), CHECKSUM_LEVELS)
    data = b"".join(struct.pack("<dd", px, sz) for side in (asks, bids) for px, sz in list(side)[:k])
    return zlib.crc32(data)


class DepthBook:
    """A two-sided price book as a depth-``depth`` client keeps it:
    apply each level of a delta (size 0 deletes, else sets the size at that
    price), then keep only the best ``depth`` levels per side.

    Prices per side are also held sorted (bisect), so ``top(n)`` is a slice
    and a 2,000-level book costs nothing per update. Independent of the
    server's code: only docs/PROTOCOL.md's rules."""

    def __init__(self, depth: int | str = "full"):
        self.depth = depth_levels(depth)
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self._bid_px: list[float] = []  # ascending: best bid last
        self._ask_px: list[float] = []  # ascending: best ask first

    # -- building
    @classmethod
    def from_snapshot(cls, book: dict, depth: int | str) -> "DepthBook":
        """A snapshot's ``book``, checked: best first, no duplicate price, no
        zero size, at most ``depth`` levels per side."""
        b = cls(depth)
        b.load(book)
        return b

    def load(self, book: dict) -> None:
        """Replaces the book with a snapshot's (see `from_snapshot`)."""
        bids, asks = book["bids"], book["asks"]
        assert len(bids) <= self.depth and len(asks) <= self.depth, (
            f"snapshot holds {len(bids)} bids / {len(asks)} asks, more than its depth {self.depth}"
        )
        assert all(a[0] > b[0] for a, b in zip(bids, bids[1:])), f"snapshot bids not strictly best (highest) first: {bids[:12]}"
        assert all(a[0] < b[0] for a, b in zip(asks, asks[1:])), f"snapshot asks not strictly best (lowest) first: {asks[:12]}"
        assert all(sz != 0 for _, sz in bids) and all(sz != 0 for _, sz in asks), "a snapshot holds a deleted level"
        self.bids = {px: sz for px, sz in bids}
        self.asks = {px: sz for px, sz in asks}
        self._bid_px = sorted(self.bids)
        self._ask_px = sorted(self.asks)

    @staticmethod
    def _set(levels: dict, prices: list, px: float, sz: float) -> None:
        if sz == 0:
            if levels.pop(px, None) is not None:
                del prices[bisect.bisect_left(prices, px)]
        else:
            if px not in levels:
                bisect.insort(prices, px)
            levels[px] = sz

    def apply(self, delta: dict) -> int:
        """Applies a book update's ``bids``/``asks``, then keeps the best
        ``depth`` levels per side; returns how many levels that dropped."""
        for px, sz in delta["bids"]:
            self._set(self.bids, self._bid_px, px, sz)
        for px, sz in delta["asks"]:
            self._set(self.asks, self._ask_px, px, sz)
        return self.truncate()

    def truncate(self) -> int:
        """Drops the worst levels beyond ``depth`` per side; returns how many."""
        dropped = 0
        extra = len(self._bid_px) - self.depth
        if extra > 0:  # worst bids are the lowest: the front
            for px in self._bid_px[:extra]:
                del self.bids[px]
            del self._bid_px[:extra]
            dropped += extra
        extra = len(self._ask_px) - self.depth
        if extra > 0:  # worst asks are the highest: the back
            for px in self._ask_px[-extra:]:
                del self.asks[px]
            del self._ask_px[-extra:]
            dropped += extra
        return dropped

    # -- reading
    def top_bids(self, n: int | None = None) -> list[tuple[float, float]]:
        prices = self._bid_px if n is None else self._bid_px[-n:] if n > 0 else []
        return [(px, self.bids[px]) for px in reversed(prices)]

    def top_asks(self, n: int | None = None) -> list[tuple[float, float]]:
        prices = self._ask_px if n is None else self._ask_px[:n]
        return [(px, self.asks[px]) for px in prices]

    def top(self, n: int | None = None) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """(bids, asks), best first, at most ``n`` per side (all if None)."""
        return self.top_bids(n), self.top_asks(n)

    def checksum(self) -> int:
        """`book_checksum` of this book at its depth."""
        k = CHECKSUM_LEVELS
        return book_checksum(self.top_bids(k), self.top_asks(k), self.depth)

    def __len__(self) -> int:
        return max(len(self.bids), len(self.asks))


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------


class WsClient:
    """A decoding WebSocket client (websockets' sync client: server pings are
    answered by its background thread)."""

    def __init__(self, ws: ClientConnection, encoding: str, pb2_module):
        self.ws = ws
        self.encoding = encoding
        self.pb2 = pb2_module

    # -- sending
    def send_json(self, obj: Any) -> None:
        self.ws.send(json.dumps(obj))

    def send_text(self, text: str) -> None:
        self.ws.send(text)

    def subscribe(self, *symbols: str, depth: int | str | None = None) -> None:
        """Subscribes; ``depth`` (a number of book levels or ``"full"``) is
        sent only when given, else the server's ``--book-depth`` applies."""
        req: dict[str, Any] = {"op": "subscribe", "symbols": list(symbols)}
        if depth is not None:
            req["depth"] = depth
        self.send_json(req)

    def unsubscribe(self, *symbols: str) -> None:
        self.send_json({"op": "unsubscribe", "symbols": list(symbols)})

    # -- receiving
    def recv(self, timeout: float = TIMEOUT) -> dict:
        try:
            data = self.ws.recv(timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"{self.encoding} client: no message within {timeout}s") from None
        return decode_frame(self.encoding, data, self.pb2)

    def recv_type(self, kind: str, timeout: float = TIMEOUT) -> dict:
        msg = self.recv(timeout)
        assert msg["type"] == kind, f"expected a {kind!r} message, got {msg!r}"
        return msg

    def recv_until(self, pred: Callable[[dict], bool], timeout: float = TIMEOUT, limit: int = 1_000_000) -> list[dict]:
        """Messages up to and including the first one matching ``pred``."""
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                data = self.ws.recv(timeout=left)
            except TimeoutError:
                break
            msg = decode_frame(self.encoding, data, self.pb2)
            out.append(msg)
            if pred(msg):
                return out
        tail = out[-3:]
        raise AssertionError(f"{self.encoding} client: no matching message within {timeout}s ({len(out)} seen, last {tail!r})")

    def drain(self, quiet: float = 0.05) -> list[dict]:
        """Everything that arrives until ``quiet`` seconds pass with nothing."""
        out = []
        while True:
            try:
                data = self.ws.recv(timeout=quiet)
            except TimeoutError:
                return out
            out.append(decode_frame(self.encoding, data, self.pb2))

    def subscribe_and_snapshots(
        self, *symbols: str, timeout: float = TIMEOUT, depth: int | str | None = None
    ) -> dict[str, dict]:
        """Subscribes, checks the ack, and returns the snapshots by symbol."""
        self.subscribe(*symbols, depth=depth)
        ack = subscribe_ack(self.recv_type("ack", timeout))
        assert ack == {"type": "ack", "op": "subscribe", "symbols": list(symbols)}, ack
        snaps = {}
        for _ in symbols:
            snap = self.recv_type("snapshot", timeout)
            snaps[snap["sym"]] = snap
        assert set(snaps) == set(symbols), snaps.keys()
        return snaps

    def expect_close(self, timeout: float = TIMEOUT) -> tuple[int | None, str | None, list[dict]]:
        """Reads until the server closes; returns (code, reason, messages
        received before the close)."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.encoding} client: not closed within {timeout}s")
            try:
                data = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            except ConnectionClosed as e:
                rcvd = e.rcvd
                return (rcvd.code if rcvd else None), (rcvd.reason if rcvd else None), seen
            seen.append(decode_frame(self.encoding, data, self.pb2))

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def subscribe_ack(ack: dict) -> dict:
    """A subscribe ack without its ``epoch`` (checked: an integer, nonzero
    on a server with its own feed), for comparing the rest exactly."""
    ack = dict(ack)
    epoch = ack.pop("epoch", None)
    assert isinstance(epoch, int) and epoch > 0, f"a subscribe ack names the epoch: {ack}"
    return ack


def is_closed_by_peer(sock: socket.socket, timeout: float = TIMEOUT) -> bool:
    """Whether the server closed the socket (EOF or reset) within ``timeout``;
    whatever it said before closing is skipped."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except (socket.timeout, TimeoutError):
        return False


class Feed:
    """A feed handler: newline-delimited JSON ticks over TCP."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.lock = threading.Lock()

    def send(self, *ticks: dict) -> None:
        lines = "".join(json.dumps(t, separators=(",", ":"), allow_nan=False) + "\n" for t in ticks)
        self.send_raw(lines.encode())

    def send_raw(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


# Tick builders for the feed's JSON line schema.
def trade(sym: str, px: float, sz: float, side: str | None = "buy", ts_event: int | None = None) -> dict:
    t = {"type": "trade", "sym": sym, "px": px, "sz": sz}
    if side is not None:
        t["side"] = side
    if ts_event is not None:
        t["ts_event"] = ts_event
    return t


def quote(sym: str, bid: float, bid_sz: float, ask: float, ask_sz: float, ts_event: int | None = None) -> dict:
    t = {"type": "quote", "sym": sym, "bid": bid, "bid_sz": bid_sz, "ask": ask, "ask_sz": ask_sz}
    if ts_event is not None:
        t["ts_event"] = ts_event
    return t


def book(sym: str, bids=(), asks=(), ts_event: int | None = None) -> dict:
    t = {"type": "book", "sym": sym, "bids": [list(l) for l in bids], "asks": [list(l) for l in asks]}
    if ts_event is not None:
        t["ts_event"] = ts_event
    return t


class Ticker(threading.Thread):
    """Sends a trade for ``sym`` every ``period`` seconds until stopped."""

    def __init__(self, feed: Feed, sym: str, period: float = 0.002):
        super().__init__(daemon=True)
        self.feed, self.sym, self.period = feed, sym, period
        self.sent = 0
        self._stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                self.sent += 1
                self.feed.send(trade(self.sym, 100.0 + self.sent / 100, 1.0, ts_event=1_700_000_000_000_000_000 + self.sent))
                self._stop_event.wait(self.period)
        except BaseException as e:  # surfaced by stop()
            self.error = e

    def halt(self) -> None:
        """Stops without reporting send errors (for when the server is gone)."""
        self._stop_event.set()
        self.join(TIMEOUT)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(TIMEOUT)
        assert not self.is_alive(), "ticker thread did not stop"
        if self.error:
            raise self.error
        return self.sent


# --------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------


def http_request(
    port: int,
    path: str,
    headers: dict | None = None,
    method: str = "GET",
    timeout: float = TIMEOUT,
    ssl_context=None,
):
    """(status, headers dict lower-cased, body bytes). With ``ssl_context``:
    HTTPS to ``localhost``."""
    if ssl_context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection("localhost", port, timeout=timeout, context=ssl_context)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to {"name" or "name{labels}": value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    feed_port: int | None
    log_path: Path
    args: list[str]
    _feeds: list[Feed] = field(default_factory=list)
    _clients: list[WsClient] = field(default_factory=list)
    _pb2: Any = None
    # A server started with --tls-cert: the client context trusting its CA.
    ssl_context: Any = None

    # -- HTTP
    def http(self, path: str, **kw):
        return http_request(self.port, path, ssl_context=self.ssl_context, **kw)

    def metrics(self) -> dict[str, float]:
        status, _, body = self.http("/metrics")
        assert status == 200, status
        return parse_metrics(body.decode())

    def metric(self, name: str) -> float:
        m = self.metrics()
        assert name in m, f"metric {name} not exposed; have {sorted(m)}"
        return m[name]

    def wait_metric(self, name: str, pred: Callable[[float], bool], timeout: float = TIMEOUT) -> float:
        last = {}

        def check():
            last["v"] = self.metrics().get(name)
            return last["v"] is not None and pred(last["v"])

        try:
            wait_until(check, timeout, interval=0.02, what=name)
        except AssertionError:
            raise AssertionError(f"metric {name}: condition not met within {timeout}s (last value {last.get('v')})") from None
        return last["v"]

    def wait_published(self, n: int, timeout: float = TIMEOUT) -> None:
        """Waits until the engine has sequenced at least ``n`` updates in total."""
        self.wait_metric("tickcast_updates_published_total", lambda v: v >= n, timeout)

    def symbols(self) -> list[str]:
        status, headers, body = self.http("/symbols")
        assert status == 200, status
        return json.loads(body)

    # -- WebSocket
    def ws_url(self, encoding: str | None = None, query: str | None = None, path: str = "/ws") -> str:
        url = f"ws://127.0.0.1:{self.port}{path}" if self.ssl_context is None else f"wss://localhost:{self.port}{path}"
        if query:
            url += "?" + query
        elif encoding is not None:
            url += f"?encoding={encoding}"
        return url

    def connect(
        self,
        encoding: str | None = None,
        *,
        subprotocols: Iterable[str] | None = None,
        query: str | None = None,
        decode_as: str | None = None,
        rcvbuf: int | None = None,
        max_queue: int | None = None,
        path: str = "/ws",
        headers: dict | None = None,
    ) -> WsClient:
        """``rcvbuf``: SO_RCVBUF set on the socket before it connects (a small
        TCP window). ``max_queue``: how many received frames the library
        buffers before its reader thread stops reading the socket (default
        unbounded); with both, a client that stops calling ``recv`` really
        stops reading, so the server's side of the socket fills up."""
        sock = None
        if rcvbuf is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: the window stays small
            sock.settimeout(TIMEOUT)
            sock.connect(("127.0.0.1", self.port))
        ws = ws_connect(
            self.ws_url(encoding, query, path),
            sock=sock,
            subprotocols=list(subprotocols) if subprotocols else None,
            compression=None,
            proxy=None,
            open_timeout=TIMEOUT,
            close_timeout=2,
            ping_interval=None,  # the server pings; the library answers
            max_size=None,
            max_queue=max_queue,
            additional_headers=headers,
            **({"ssl": self.ssl_context} if self.ssl_context is not None else {}),
            **_CONNECT_EXTRA,
        )
        client = WsClient(ws, decode_as or encoding or "msgpack", self._pb2)
        self._clients.append(client)
        return client

    def feed(self) -> Feed:
        assert self.feed_port is not None, "server was started without a tcp feed"
        f = Feed(self.feed_port)
        self._feeds.append(f)
        return f

    def wait_symbols(self, *names: str, timeout: float = TIMEOUT) -> None:
        wait_until(lambda: set(names) <= set(self.symbols()), timeout, interval=0.01, what=f"symbols {names}")

    # -- lifecycle
    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        for c in self._clients:
            c.close()
        for f in self._feeds:
            f.close()
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


def _child_env() -> dict[str, str]:
    # The server reads TICKCAST_* flags from the environment; keep the
    # caller's settings (including TICKCAST_BIN) out of it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.setdefault("RUST_BACKTRACE", "1")
    return env


def start_server(
    log_dir: Path, pb2_module, feed: str = "tcp", extra: Iterable[str] = (), attempts: int = 3, ssl_context=None
) -> Server:
    extra = list(extra)
    binary = tickcast_bin()
    if not binary.is_file():
        pytest.fail(f"tickcast binary not found at {binary}: run `cargo build` or set TICKCAST_BIN")
    last_error = ""
    for attempt in range(attempts):
        port = free_port()
        feed_port = free_port() if feed == "tcp" else None
        while feed_port == port:
            feed_port = free_port()
        args = [
            str(binary),
            "--listen",
            f"127.0.0.1:{port}",
            "--feed",
            f"tcp://127.0.0.1:{feed_port}" if feed == "tcp" else feed,
            # 1 s heartbeats unless the caller sets its own (a client that
            # stops reading on purpose cannot answer pings).
            *(["--ping-interval", "1s"] if "--ping-interval" not in extra else []),
            *(["--pong-timeout", "1s"] if "--pong-timeout" not in extra else []),
            *extra,
        ]
        log_path = log_dir / f"tickcast-{port}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=_child_env(), cwd=REPO_ROOT)
        log.close()
        server = Server(proc, port, feed_port, log_path, args, _pb2=pb2_module, ssl_context=ssl_context)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                status, _, body = http_request(port, "/healthz", timeout=1, ssl_context=ssl_context)
                if status == 200:
                    return server
            except OSError:
                pass
            time.sleep(0.02)
        last_error = f"attempt {attempt + 1}: exit={proc.poll()} args={args}\n{server.log_tail()}"
        server.stop()
    pytest.fail(f"tickcast did not become healthy:\n{last_error}")


# --------------------------------------------------------------------------
# Raw WebSocket (for a client that never answers pings)
# --------------------------------------------------------------------------

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawWs:
    """A minimal client: does the handshake by hand, then only reads. It
    never sends a pong (or anything else)."""

    def __init__(self, port: int, path: str = "/ws?encoding=json", rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window is small from the start
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "server closed during the handshake"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines[0]
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        assert headers.get("sec-websocket-accept") == expected, headers

    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError from None
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next frame, or None at EOF."""
        deadline = time.monotonic() + timeout
        head = self._read_exact(2, deadline)
        if head is None:
            return None
        b0, b1 = head
        assert b1 & 0x80 == 0, "server frames must not be masked"
        assert b0 & 0x80, "expected final frames"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read_exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read_exact(8, deadline))[0]
        payload = self._read_exact(n, deadline) if n else b""
        assert payload is not None, "EOF inside a frame"
        return b0 & 0x0F, payload

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass



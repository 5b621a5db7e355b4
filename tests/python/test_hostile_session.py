"""Hostile clients against one session (issue 15): each attack runs over a
real socket against the real binary, bounded in time, and checks the
documented answer (docs/PROTOCOL.md, "Close codes" and "Errors").

* A client that floods pings or 1-byte garbage and never reads is closed
  with 1008 ``control flood`` once ``--max-control-bytes`` of replies wait
  unread, quickly, while the server's RSS grows by at most a few MiB; on
  ``/ws`` and on ``/replay``.
* A client over ``--max-requests-per-sec`` gets ``rate_limited`` and, if
  it goes on, 1008 ``rate limited``; pings count.
* A ``/replay`` client that never reads is closed with 1008 ``slow
  consumer`` after ``--slow-timeout``.
* RFC 6455: an unmasked frame, and a close frame over 125 bytes, get 1002.
* Event times after 2554 (past u64 ns) get HTTP 400 (``from=``) and
  ``bad_request`` (``seek``).

While each flood runs, a healthy subscriber on the same server receives
every update of its symbol, seq after seq.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from pathlib import Path

from tickcast_client import TIMEOUT, RawWs, Server, Ticker, wait_until

BINANCE = Path(__file__).resolve().parents[1] / "data" / "binance"
CAPTURE = "btcusdt_20240808.gz"

# Heartbeats out of the way: every close here must be for the attack, not
# for a pong the raw client never sends.
QUIET_PINGS = ["--ping-interval", "60s", "--pong-timeout", "60s"]
# The rate limit off, so that the control-reply bound is what stops a flood.
NO_RATE_LIMIT = ["--max-requests-per-sec", "0"]

# How fast a flood must be stopped, from its first byte (debug build on a
# busy 2-core box; the server itself closes as soon as the bound is passed).
CLOSE_WITHIN = 3.0
# Most RSS growth one attacker may cause: a few MiB. The queue itself is
# bounded at 64 KiB of replies; a quiet run measures about 4 MiB in all
# (allocator pages first touched by the flood's reads and writes), a busy
# 2-core box up to 8.1 (a /replay flood, which also starts the replay's
# reader thread). Without the bound it was gigabytes.
RSS_GROWTH_MAX = 16 << 20

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes, masked: bool = True) -> bytes:
    """One final client frame; masked with a random key unless told not to."""
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    head = bytes([0x80 | opcode])
    if n <= 125:
        head += bytes([mask_bit | n])
    elif n <= 0xFFFF:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Attacker(RawWs):
    """A raw client that sends what it likes and reads only when told."""

    def send(self, data: bytes, timeout: float = TIMEOUT) -> bool:
        """Sends ``data``; False if the server stopped taking it in time or
        the connection is gone."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
            return True
        except (socket.timeout, ConnectionError, OSError):
            return False

    def frames_until_close(self, timeout: float = TIMEOUT) -> tuple[list[tuple[int, bytes]], tuple[int, str] | None]:
        """Every frame up to the close frame, and the close's (code, reason);
        None if the connection ended without one."""
        frames = []
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read_frame(max(0.01, deadline - time.monotonic()))
            if frame is None:
                return frames, None
            opcode, payload = frame
            if opcode == OP_CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                return frames, (code, payload[2:].decode())
            frames.append(frame)


class Healthy:
    """A well-behaved subscriber to ``sym``, fed a trade every 2 ms: at the
    end it must have every update, seq after seq, and no conflation."""

    def __init__(self, server: Server, sym: str):
        self.server, self.sym = server, sym
        self.feed = server.feed()
        self.feed.send({"type": "trade", "sym": sym, "px": 1.0, "sz": 1.0})
        server.wait_symbols(sym)
        self.client = server.connect("json")
        self.client.subscribe(sym)
        self.client.recv_type("ack")
        self.first_seq = self.client.recv_type("snapshot")["seq"] + 1
        self.ticker = Ticker(self.feed, sym)
        self.ticker.start()

    def check(self) -> int:
        """Stops the ticker; asserts every update arrived in order. Returns
        how many."""
        sent = self.ticker.stop() + 1  # plus the priming trade
        seq = self.first_seq
        while seq <= sent:
            msg = self.client.recv(timeout=TIMEOUT)
            assert msg["type"] == "trade" and msg["sym"] == self.sym, f"healthy subscriber got {msg!r}"
            assert msg["seq"] == seq, f"healthy subscriber: seq {msg['seq']}, expected {seq} (a gap)"
            seq += 1
        return seq - self.first_seq


class RssWatch:
    """Samples the server's RSS (/metrics) in the background; ``growth``
    is the peak over the baseline taken at start."""

    def __init__(self, server: Server):
        self.server = server
        self.base = server.metric("process_resident_memory_bytes")
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.peak = max(self.peak, self.server.metric("process_resident_memory_bytes"))
            except (OSError, AssertionError):
                pass

    def growth(self) -> float:
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.peak = max(self.peak, self.server.metric("process_resident_memory_bytes"))
        return self.peak - self.base


def flood_until_closed(server: Server, attacker: Attacker, unit: bytes, code: str) -> float:
    """Sends ``unit`` over and over, never reading, until the server counts
    the close for ``code`` (tickcast_client_errors_total); returns the
    seconds that took."""
    metric = f'tickcast_client_errors_total{{code="{code}"}}'
    before = server.metric(metric)
    batch = unit * max(1, 16384 // len(unit))
    start = time.monotonic()
    while time.monotonic() - start < 10:
        # Once the server stops reading, the sends block: stop then.
        if not attacker.send(batch, timeout=0.2) or server.metric(metric) > before:
            break
    wait_until(lambda: server.metric(metric) > before, timeout=CLOSE_WITHIN, what=f"the {code} close")
    return time.monotonic() - start


def flood_test(tickcast, unit: bytes, path: str = "/ws?encoding=json", extra=()) -> None:
    server = tickcast(extra=[*QUIET_PINGS, *NO_RATE_LIMIT, *extra])
    healthy = Healthy(server, "SAFE")
    attacker = Attacker(server.port, path=path, rcvbuf=8192)
    # The baseline after the session is up (a replay's reader thread and
    # read-ahead are its own, bounded, cost): what follows is the flood's.
    time.sleep(0.5)
    rss = RssWatch(server)
    took = flood_until_closed(server, attacker, unit, "control_flood")
    growth = rss.growth()
    print(f"closed after {took:.2f}s; RSS grew {growth / 1024:.0f} KiB")
    assert took < CLOSE_WITHIN, f"flood closed only after {took:.2f}s"
    assert growth <= RSS_GROWTH_MAX, f"RSS grew {growth / 2**20:.1f} MiB during one flood"
    # The attacker, reading at last, learns why: the replies already queued
    # (bounded), then 1008 "control flood".
    frames, close = attacker.frames_until_close(timeout=10)
    assert close == (1008, "control flood"), f"close {close} after {len(frames)} frames"
    assert healthy.check() > 0
    attacker.close()


def test_ping_flood_without_reading_is_closed(tickcast):
    flood_test(tickcast, client_frame(OP_PING, b"p" * 125))


def test_garbage_flood_without_reading_is_closed(tickcast):
    # 1-byte messages that are not JSON: each would get a bad_json error.
    flood_test(tickcast, client_frame(OP_TEXT, b"x"))


def test_replay_ping_flood_without_reading_is_closed(tickcast):
    flood_test(
        tickcast,
        client_frame(OP_PING, b"p" * 125),
        path=f"/replay?source={CAPTURE}&speed=0.001&encoding=json",
        extra=["--replay-dir", str(BINANCE)],
    )


def test_request_flood_is_rate_limited_then_closed(tickcast):
    server = tickcast(extra=QUIET_PINGS)
    healthy = Healthy(server, "SAFE")
    attacker = Attacker(server.port)
    request = client_frame(OP_TEXT, json.dumps({"op": "subscribe", "symbols": ["SAFE"]}).encode())
    assert attacker.send(request * 1000)
    frames, close = attacker.frames_until_close(timeout=15)
    messages = [json.loads(p) for op, p in frames if op == OP_TEXT]
    acks = [m for m in messages if m["type"] == "ack"]
    limited = [m for m in messages if m["type"] == "error" and m["code"] == "rate_limited"]
    # The burst (200) and what refilled while it was applied; then refusals
    # until the debt is a second burst; then the close.
    assert 200 <= len(acks) < 600, f"{len(acks)} acks"
    assert limited and "requests per second" in limited[0]["message"], messages[-3:]
    assert len(acks) + len(limited) < 1000, "the close comes before the flood is through"
    assert close == (1008, "rate limited"), close
    assert server.metric('tickcast_client_errors_total{code="rate_limited"}') >= len(limited) + 1
    assert healthy.check() > 0
    attacker.close()


def test_ping_flood_counts_toward_the_rate_limit(tickcast):
    server = tickcast(extra=QUIET_PINGS)
    attacker = Attacker(server.port)
    assert attacker.send(client_frame(OP_PING, b"hi") * 1000)
    frames, close = attacker.frames_until_close(timeout=15)
    pongs = [p for op, p in frames if op == OP_PONG]
    assert 200 <= len(pongs) < 600 and set(pongs) == {b"hi"}, f"{len(pongs)} pongs"
    assert close == (1008, "rate limited"), close
    attacker.close()


def test_a_steady_client_within_the_rate_is_never_limited(tickcast):
    server = tickcast(extra=[*QUIET_PINGS, "--max-requests-per-sec", "50", "--request-burst", "10"])
    client = server.connect("json")
    # 40 requests at 40/s: under the rate, though four times the burst.
    for _ in range(40):
        client.send_text("not json")
        assert client.recv_type("error")["code"] == "bad_json"
        time.sleep(0.025)
    assert server.metric('tickcast_client_errors_total{code="rate_limited"}') == 0


def test_replay_client_that_never_reads_is_closed(tickcast):
    server = tickcast(extra=[*QUIET_PINGS, "--replay-dir", str(BINANCE), "--slow-timeout", "1s"])
    rss = RssWatch(server)
    start = time.monotonic()
    attacker = Attacker(server.port, path=f"/replay?source={CAPTURE}&speed=max&encoding=json", rcvbuf=4096)
    server.wait_metric("tickcast_slow_disconnects_total", lambda v: v >= 1, timeout=10)
    took = time.monotonic() - start
    growth = rss.growth()
    print(f"stalled replay closed after {took:.2f}s; RSS grew {growth / 1024:.0f} KiB")
    frames, close = attacker.frames_until_close(timeout=10)
    assert frames, "the replay had started"
    assert close == (1008, "slow consumer"), close
    assert growth <= 4 * RSS_GROWTH_MAX, f"RSS grew {growth / 2**20:.1f} MiB for one stalled replay"
    attacker.close()


def test_unmasked_frame_fails_the_connection_with_1002(tickcast):
    server = tickcast(extra=QUIET_PINGS)
    server.feed().send({"type": "trade", "sym": "AAA", "px": 1.0, "sz": 1.0})
    server.wait_symbols("AAA")
    attacker = Attacker(server.port)
    subscribe = json.dumps({"op": "subscribe", "symbols": ["AAA"]}).encode()
    assert attacker.send(client_frame(OP_TEXT, subscribe, masked=False))
    frames, close = attacker.frames_until_close()
    assert close is not None and close[0] == 1002, close
    assert frames == [], f"the unmasked request was acted on: {frames}"
    # A masked one is fine (the test can fail the other way).
    ok = Attacker(server.port)
    assert ok.send(client_frame(OP_TEXT, subscribe))
    assert json.loads(ok.read_frame()[1])["type"] == "ack"
    for a in (attacker, ok):
        a.close()


def test_close_frame_over_125_bytes_gets_1002(tickcast):
    server = tickcast(extra=QUIET_PINGS)
    attacker = Attacker(server.port)
    assert attacker.send(client_frame(OP_CLOSE, struct.pack(">H", 1000) + b"x" * 124))  # 126 bytes
    _, close = attacker.frames_until_close()
    assert close is not None and close[0] == 1002, close
    # 125 bytes is the most a control frame may carry: echoed, 1000.
    ok = Attacker(server.port)
    reason = "y" * 123
    assert ok.send(client_frame(OP_CLOSE, struct.pack(">H", 1000) + reason.encode()))
    _, close = ok.frames_until_close()
    assert close == (1000, reason), close
    for a in (attacker, ok):
        a.close()


def upgrade_status(port: int, path: str) -> tuple[int, str]:
    """A WebSocket upgrade request for ``path``: (HTTP status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        s.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk, "server closed during the handshake"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")), 0)
        while len(body) < length:
            body += s.recv(4096)
        return status, body.decode()


def test_times_after_2554_are_refused_not_wrapped(tickcast):
    server = tickcast(feed="synthetic", extra=["--replay-dir", str(BINANCE)])
    for param in ("from=2600-01-01T00:00:00Z", "to=2554-07-21T23:34:33.709551616Z", "from=18446744073709551616"):
        status, body = upgrade_status(server.port, f"/replay?source={CAPTURE}&{param}")
        assert status == 400 and "out of range" in body, (param, status, body)
    # The last representable instant is fine.
    status, _ = upgrade_status(server.port, f"/replay?source={CAPTURE}&from=2554-07-21T23:34:33.709551615Z")
    assert status == 101, status
    client = server.connect("json", path="/replay", query=f"source={CAPTURE}&speed=0.001&encoding=json")
    client.send_json({"op": "seek", "ts": "2600-01-01T00:00:00Z"})
    error = client.recv_until(lambda m: m["type"] == "error")[-1]
    assert error["code"] == "bad_request" and "out of range" in error["message"], error

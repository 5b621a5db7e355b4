"""The HTTP front door under hostile clients (issue 15), over real sockets.

* slowloris: connections that send their request a byte at a time are
  closed by ``--handshake-timeout`` while a normal client still connects;
* request heads over ``--max-header-bytes`` get 431;
* pre-upgrade connections count against ``--max-connections`` and
  ``--max-connections-per-ip``: over either, a connection is closed at once
  (after a best-effort 503) and the server stays healthy;
* a FIFO in ``--replay-dir`` gets 400 without freezing the server;
* ``--allowed-origins``: allowed, forbidden (403), absent, ``null``;
* ``--metrics-listen`` serves ``/metrics`` there and 404 on the main port.

Every wait is bounded; each test takes a few seconds with a debug build.
"""

from __future__ import annotations

import base64
import os
import selectors
import socket
import threading
import time

from tickcast_client import TIMEOUT, free_port, http_request, parse_metrics, wait_until

UPGRADE_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
}


def raw_request(port: int, path: str, headers: dict | None = None, timeout: float = TIMEOUT, source: str | None = None):
    """Sends one GET by hand and reads the answer's head (and its body, if
    it has a content-length): (status, body). A 101 is not read further."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if source:
            sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if not head:
            return None, b""
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while status != 101 and len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, body
    finally:
        sock.close()


def refused_at_accept(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Reads what the server says to a connection it refuses at accept: a
    503 or nothing (closed or reset) -- never a wait past ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        pass
    assert data == b"" or data.startswith(b"HTTP/1.1 503"), data[:200]
    return data


def idle_connections(port: int, n: int, source: str | None = None) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source:
            s.bind((source, 0))
        s.settimeout(TIMEOUT)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def open_connections(metrics_port: int) -> float:
    """The server's own count of open main-port connections (the one
    ``--max-connections`` bounds), read on the monitoring door so that
    reading it does not change it."""
    status, _, body = http_request(metrics_port, "/metrics", timeout=1)
    assert status == 200
    return parse_metrics(body.decode())["tickcast_open_connections"]


def settled_idle_connections(port: int, metrics_port: int, n: int, source: str | None = None) -> list[socket.socket]:
    """``n`` idle connections, opened once the server counts none open (the
    start-up probe's slot may still be held for a moment), and returned
    once it counts all ``n``: a test of the bounds then starts from an
    exact count, not from a race with the server's accept loop."""
    wait_until(lambda: open_connections(metrics_port) == 0, what="no open connections")
    socks = idle_connections(port, n, source)
    wait_until(lambda: open_connections(metrics_port) == n, what=f"{n} open connections")
    return socks


def rss(port: int) -> float:
    status, _, body = http_request(port, "/metrics")
    assert status == 200
    return parse_metrics(body.decode()).get("process_resident_memory_bytes", 0.0)


def test_slowloris_connections_are_closed_at_the_handshake_timeout(tickcast):
    server = tickcast(extra=["--handshake-timeout", "1s"])
    rss_before = rss(server.port)
    n = 200
    request = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nX-Slow: " + b"a" * 10_000
    sel = selectors.DefaultSelector()
    opened = {}
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        s.connect(("127.0.0.1", server.port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        opened[i] = (s, time.monotonic())
    closed_after = {}
    sent = 0
    deadline = time.monotonic() + 8
    # Meanwhile, a normal client connects and is served.
    client = server.connect("json")
    client.subscribe("*")
    assert client.recv_type("ack")["op"] == "subscribe"
    rss_during = rss(server.port)
    next_byte = time.monotonic()
    while len(closed_after) < n and time.monotonic() < deadline:
        if time.monotonic() >= next_byte and sent < len(request):
            # One byte of the request to every connection still open, each second.
            for i, (s, _) in opened.items():
                if i not in closed_after:
                    try:
                        s.send(request[sent : sent + 1])
                    except OSError:
                        pass
            sent += 1
            next_byte += 1.0
        for key, _ in sel.select(timeout=0.05):
            s, started = opened[key.data]
            try:
                gone = s.recv(4096) == b""
            except (ConnectionResetError, BlockingIOError):
                gone = True
            if gone and key.data not in closed_after:
                closed_after[key.data] = time.monotonic() - started
                sel.unregister(s)
                s.close()
    for s, _ in opened.values():
        s.close()
    assert len(closed_after) == n, f"{n - len(closed_after)} slowloris connections still open after 8 s"
    times = sorted(closed_after.values())
    print(f"slowloris: {n} closed after {times[0]:.2f}..{times[-1]:.2f} s (median {times[n // 2]:.2f} s); "
          f"RSS {rss_before / 2**20:.1f} -> {rss_during / 2**20:.1f} MiB")
    assert times[0] >= 0.8, f"closed before the timeout: {times[0]:.2f} s"
    assert times[-1] < 4.0, f"slowest close {times[-1]:.2f} s"
    # The normal client is still served, and the server healthy.
    assert http_request(server.port, "/healthz")[0] == 200


def test_an_oversized_request_head_gets_431(tickcast):
    server = tickcast(extra=["--max-header-bytes", "16KiB"])
    status, _ = raw_request(server.port, "/ws", {**UPGRADE_HEADERS, "X-Big": "a" * 20_000})
    assert status == 431
    status, _ = raw_request(server.port, "/healthz", {"X-Fine": "a" * 4_000})
    assert status == 200


def test_pre_upgrade_connections_count_against_max_connections(tickcast):
    metrics_port = free_port()
    server = tickcast(
        extra=["--max-connections", "20", "--handshake-timeout", "3s", "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    )
    idle = settled_idle_connections(server.port, metrics_port, 20)
    try:
        # The 21st is closed at once, without waiting for anything.
        extra = idle_connections(server.port, 1)[0]
        started = time.monotonic()
        data = refused_at_accept(extra)
        assert time.monotonic() - started < 1.0
        if data:
            assert b"too many connections" in data
        extra.close()
        # Monitoring has its own door and stays reachable.
        assert http_request(metrics_port, "/healthz", timeout=1)[0] == 200
    finally:
        for s in idle:
            s.close()
    # Once they are gone the main door serves again.
    wait_until(lambda: http_request(server.port, "/healthz", timeout=1)[0] == 200, what="main /healthz")
    client = server.connect("json")
    client.subscribe("*")
    assert client.recv_type("ack")["op"] == "subscribe"
    status, _, body = http_request(metrics_port, "/metrics")
    assert parse_metrics(body.decode())["tickcast_connections_rejected_total"] >= 1


def test_idle_connections_are_closed_at_the_handshake_timeout_and_free_their_slots(tickcast):
    metrics_port = free_port()
    server = tickcast(
        extra=["--max-connections", "10", "--handshake-timeout", "2s", "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    )
    wait_until(lambda: open_connections(metrics_port) == 0, what="no open connections")
    started = time.monotonic()
    idle = idle_connections(server.port, 10)
    # All ten are admitted (the bound is exactly full) ...
    wait_until(lambda: open_connections(metrics_port) == 10, timeout=1.5, what="10 open connections")
    for s in idle:
        s.settimeout(5)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        s.close()
    # ... and closed by the timeout, not before it and not long after.
    elapsed = time.monotonic() - started
    assert 1.5 < elapsed < 4.5, elapsed
    wait_until(lambda: open_connections(metrics_port) == 0, what="the slots given back")
    assert http_request(server.port, "/healthz")[0] == 200


def test_connections_per_ip_are_bounded(tickcast):
    metrics_port = free_port()
    server = tickcast(
        extra=[
            "--max-connections-per-ip", "5", "--handshake-timeout", "3s", "--metrics-listen", f"127.0.0.1:{metrics_port}",
        ]
    )
    idle = settled_idle_connections(server.port, metrics_port, 5)
    try:
        sixth = idle_connections(server.port, 1)[0]
        data = refused_at_accept(sixth)
        if data:
            assert b"from your address" in data
        sixth.close()
        # Another address (all of 127/8 is loopback on Linux) is not affected.
        status, body = raw_request(server.port, "/healthz", source="127.0.0.2")
        assert status == 200, body
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: http_request(server.port, "/healthz", timeout=1)[0] == 200, what="/healthz from 127.0.0.1")


def test_a_fifo_in_the_replay_dir_gets_400_and_the_server_keeps_answering(tickcast, tmp_path):
    replay_dir = tmp_path / "recordings"
    replay_dir.mkdir()
    os.mkfifo(replay_dir / "pipe")
    server = tickcast(extra=["--replay-dir", str(replay_dir)])
    answers = []

    def ask():
        answers.append(raw_request(server.port, "/replay?source=pipe", UPGRADE_HEADERS, timeout=5))

    askers = [threading.Thread(target=ask) for _ in range(2)]
    for t in askers:
        t.start()
    started = time.monotonic()
    status, _, _ = http_request(server.port, "/healthz", timeout=1)
    healthz = time.monotonic() - started
    for t in askers:
        t.join(timeout=6)
    assert status == 200 and healthz < 1.0, healthz
    assert len(answers) == 2
    for status, body in answers:
        assert status == 400, (status, body)
        assert b"not a regular file" in body, body
    assert http_request(server.port, "/healthz", timeout=1)[0] == 200


def test_origins_are_checked_at_the_handshake(tickcast):
    server = tickcast(extra=["--allowed-origins", "https://app.example.com,https://*.example.org"])

    def upgrade(origin: str | None):
        headers = dict(UPGRADE_HEADERS)
        if origin is not None:
            headers["Origin"] = origin
        return raw_request(server.port, "/ws?encoding=json", headers)

    assert upgrade("https://app.example.com")[0] == 101
    assert upgrade("https://a.b.example.org")[0] == 101
    assert upgrade(None)[0] == 101, "no Origin: not a browser, allowed"
    for origin in ["https://evil.example", "null", "file://", "https://example.org", "http://app.example.com"]:
        status, body = upgrade(origin)
        assert status == 403, (origin, status)
        assert b"not allowed" in body, body


def test_without_allowed_origins_every_origin_is_accepted_with_a_warning(tickcast):
    server = tickcast()
    status, _ = raw_request(server.port, "/ws", {**UPGRADE_HEADERS, "Origin": "https://evil.example"})
    assert status == 101
    assert "no --allowed-origins" in server.log_path.read_text(errors="replace")


def test_metrics_listen_serves_metrics_there_and_404_on_the_main_port(tickcast):
    metrics_port = free_port()
    server = tickcast(extra=["--metrics-listen", f"127.0.0.1:{metrics_port}"])
    status, _, body = http_request(metrics_port, "/metrics")
    assert status == 200 and b"tickcast_connections" in body
    assert http_request(metrics_port, "/healthz")[0] == 200
    assert http_request(metrics_port, "/symbols")[0] == 404
    status, _, body = http_request(server.port, "/metrics")
    assert status == 404, body
    assert b"/metrics" not in body, "the main port's 404 does not offer /metrics"
    assert http_request(server.port, "/healthz")[0] == 200

"""Hostile input on the feed side (issue 15), over real sockets.

* 2,000 idle connections to the ``tcp://`` feed port: the server keeps a
  handful of threads and bounded memory, whether it admits them all or
  closes those over ``--max-feed-connections`` at once.
* ``--feed-token``: a handler without it is closed and injects nothing; one
  with it feeds normally.
* ``--feed-idle-timeout``: a silent handler is closed; blank-line
  heartbeats keep one open.
* A book line of 10,000 levels is a feed error, and an unrelated symbol's
  updates keep flowing while such lines arrive.
* ``--record DIR``: a second recorder on the same directory exits with the
  first one's PID; a failed bind leaves no segment behind.
* A feed port off loopback without a token or allow-list is refused.

Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tickcast_client import TIMEOUT, Ticker, book, free_port, is_closed_by_peer, tickcast_bin, trade, wait_until

TOKEN = "feed-secret-0123456789abcdef"
IDLE_CONNECTIONS = 2000


def universe(tmp_path: Path, *names: str) -> list[str]:
    """``--symbols-file`` flags declaring ``names``, so a client can subscribe
    before their first tick."""
    path = tmp_path / "symbols.txt"
    path.write_text("".join(f"{n}\n" for n in names))
    return ["--symbols-file", str(path)]


def proc_status(pid: int) -> tuple[int, int]:
    """(threads, RSS in bytes) of a process, from /proc/PID/status."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return int(fields["Threads"]), int(fields["VmRSS"].split()[0]) * 1024


@pytest.fixture
def many_fds():
    """Room for 2,000 client sockets in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, IDLE_CONNECTIONS + 1024)
    if want < IDLE_CONNECTIONS + 256:
        pytest.skip(f"the open-file hard limit ({hard}) is too low for {IDLE_CONNECTIONS} sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_idle(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        socks.append(s)
    return socks


def feed_line(sock: socket.socket, obj: dict) -> None:
    sock.sendall((json.dumps(obj, separators=(",", ":")) + "\n").encode())


def test_2000_idle_feed_connections_cost_no_thread(tickcast, many_fds, tmp_path):
    server = tickcast(extra=["--max-feed-connections", str(IDLE_CONNECTIONS + 100), *universe(tmp_path, "LIVE")])
    threads_before, rss_before = proc_status(server.proc.pid)
    socks = open_idle(server.feed_port, IDLE_CONNECTIONS)
    try:
        server.wait_metric("tickcast_feed_connections", lambda v: v == IDLE_CONNECTIONS)
        threads, rss = proc_status(server.proc.pid)
        print(f"threads {threads_before} -> {threads}, RSS {rss_before >> 20} -> {rss >> 20} MiB")
        assert threads <= threads_before + 2, f"{threads} threads for {IDLE_CONNECTIONS} idle feed connections"
        assert rss - rss_before < 64 << 20, f"RSS grew by {(rss - rss_before) >> 20} MiB"
        # The feed still works beside them.
        client = server.connect("json")
        client.subscribe_and_snapshots("LIVE")
        f = server.feed()
        f.send(trade("LIVE", 1.5, 10))
        update = client.recv_type("trade")
        assert (update["sym"], update["seq"]) == ("LIVE", 1)
    finally:
        for s in socks:
            s.close()
    server.wait_metric("tickcast_feed_connections", lambda v: v <= 1)


def test_connections_over_the_limit_are_closed_at_once(tickcast, many_fds, tmp_path):
    server = tickcast(extra=["--max-feed-connections", "16", *universe(tmp_path, "AFTER")])
    threads_before, rss_before = proc_status(server.proc.pid)
    socks = open_idle(server.feed_port, IDLE_CONNECTIONS)
    try:
        server.wait_metric('tickcast_feed_refused_total{reason="limit"}', lambda v: v >= IDLE_CONNECTIONS - 16)
        assert server.metric("tickcast_feed_connections") == 16
        threads, rss = proc_status(server.proc.pid)
        print(f"threads {threads_before} -> {threads}, RSS {rss_before >> 20} -> {rss >> 20} MiB")
        assert threads <= threads_before + 2
        assert rss - rss_before < 32 << 20
        assert is_closed_by_peer(socks[-1], timeout=2), "a connection over the limit is closed"
        assert not is_closed_by_peer(socks[0], timeout=0.2), "the first 16 are served"
    finally:
        for s in socks:
            s.close()
    # Their slots come back: a handler connecting now is served.
    server.wait_metric("tickcast_feed_connections", lambda v: v == 0)
    client = server.connect("json")
    client.subscribe_and_snapshots("AFTER")
    server.feed().send(trade("AFTER", 2.5, 1))
    assert client.recv_type("trade")["sym"] == "AFTER"


def test_without_the_token_a_feed_is_closed_and_injects_nothing(tickcast, tmp_path):
    server = tickcast(extra=["--feed-token", TOKEN, *universe(tmp_path, "GOOD", "EVIL")])
    client = server.connect("json")
    client.subscribe_and_snapshots("GOOD", "EVIL")

    # No auth line: the first line is a tick.
    intruder = socket.create_connection(("127.0.0.1", server.feed_port), timeout=TIMEOUT)
    feed_line(intruder, trade("EVIL", 666.0, 1))
    feed_line(intruder, trade("EVIL", 667.0, 1))
    assert is_closed_by_peer(intruder)
    # A wrong token.
    guesser = socket.create_connection(("127.0.0.1", server.feed_port), timeout=TIMEOUT)
    feed_line(guesser, {"type": "auth", "token": TOKEN[:-1] + "X"})
    feed_line(guesser, trade("EVIL", 668.0, 1))
    assert is_closed_by_peer(guesser)
    server.wait_metric('tickcast_feed_refused_total{reason="auth"}', lambda v: v == 2)

    # The right token: ticks flow.
    handler = socket.create_connection(("127.0.0.1", server.feed_port), timeout=TIMEOUT)
    feed_line(handler, {"type": "auth", "token": TOKEN})
    feed_line(handler, trade("GOOD", 101.0, 5))
    update = client.recv_type("trade")
    assert (update["sym"], update["seq"], update["px"]) == ("GOOD", 1, 101.0)
    assert client.drain(0.2) == [], "nothing of EVIL ever reached a subscriber"
    assert server.metric("tickcast_ticks_ingested_total") == 1
    handler.close()


def test_a_silent_feed_is_closed_and_a_heartbeat_keeps_one_open(tickcast):
    # An idle timeout well above a loaded machine's scheduling hiccups,
    # heartbeats well under it.
    server = tickcast(extra=["--feed-idle-timeout", "1s"])
    silent = socket.create_connection(("127.0.0.1", server.feed_port), timeout=TIMEOUT)
    beating = socket.create_connection(("127.0.0.1", server.feed_port), timeout=TIMEOUT)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        beating.sendall(b"\n")
        time.sleep(0.1)
    assert is_closed_by_peer(silent, timeout=1.0)
    assert not is_closed_by_peer(beating, timeout=0.05), "blank lines are heartbeats"
    assert server.metric('tickcast_feed_refused_total{reason="idle"}') == 1
    # And after the heartbeats stop, it too is closed.
    assert is_closed_by_peer(beating, timeout=4)
    assert server.metric("tickcast_feed_errors_total") == 0, "heartbeats are not errors"


def test_a_10000_level_book_line_is_rejected_while_others_flow(tickcast, tmp_path):
    server = tickcast(extra=universe(tmp_path, "FAST"))
    client = server.connect("json")
    client.subscribe_and_snapshots("FAST")
    fast = server.feed()
    ticker = Ticker(fast, "FAST", period=0.002)
    ticker.start()
    deep = server.feed()
    levels = [(1000.0 + i * 0.01, 1.0) for i in range(10_000)]
    line = json.dumps(book("DEEP", bids=levels, asks=[(2000.0 + i * 0.01, 1.0) for i in range(10_000)]))
    arrivals: list[float] = []
    seqs: list[int] = []

    def collect(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = client.recv(timeout=left)
            except AssertionError:  # nothing more within the window
                return
            arrivals.append(time.monotonic())
            seqs.append(msg["seq"])

    sender = threading.Thread(target=lambda: [deep.send_raw((line + "\n").encode()) for _ in range(20)], daemon=True)
    try:
        client.recv_type("trade")
        collect(0.3)
        sender.start()
        collect(1.5)
        server.wait_metric("tickcast_feed_errors_total", lambda v: v == 20)
    finally:
        sent = ticker.stop()
        sender.join(timeout=TIMEOUT)
    collect(0.3)
    assert sent > 0 and len(seqs) > 100, (sent, len(seqs))
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "FAST is gapless"
    gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
    p99 = gaps[int(len(gaps) * 0.99)]
    print(f"FAST: {len(seqs)} updates while 20 deep lines were rejected; inter-arrival p99 {p99 * 1000:.1f} ms, max {gaps[-1] * 1000:.1f} ms")
    assert gaps[-1] < 0.25, f"FAST stalled for {gaps[-1]:.3f}s"
    assert "DEEP" not in server.symbols(), "the rejected line introduced nothing"
    # A book at the bound is accepted.
    deep.send(book("DEEP", bids=levels[:1000]))
    server.wait_symbols("DEEP")


def run_tickcast(args: list[str], timeout: float = 15) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    return subprocess.run([str(tickcast_bin()), *args], capture_output=True, text=True, timeout=timeout, env=env)


def segments(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("ticks-*.tlog"))


def test_a_second_recorder_on_a_directory_is_refused_with_the_holders_pid(tickcast, tmp_path):
    record = tmp_path / "ticks"
    first = tickcast(extra=["--record", str(record), *universe(tmp_path, "REC")])
    assert (record / "tickcast.lock").read_text().strip() == str(first.proc.pid)
    before = segments(record)
    assert len(before) == 1
    second = run_tickcast(
        ["--listen", f"127.0.0.1:{free_port()}", "--feed", f"tcp://127.0.0.1:{free_port()}", "--record", str(record)]
    )
    assert second.returncode != 0
    assert f"process {first.proc.pid}" in second.stderr, second.stderr
    assert segments(record) == before, "the refused recorder wrote nothing"
    # The first one records on, undisturbed.
    client = first.connect("json")
    client.subscribe_and_snapshots("REC")
    first.feed().send(trade("REC", 1.0, 1))
    assert client.recv_type("trade")["seq"] == 1
    first.wait_metric("tickcast_record_ticks_total", lambda v: v >= 1)


def test_a_failed_bind_leaves_no_segment(tmp_path):
    record = tmp_path / "ticks"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        result = run_tickcast(["--listen", f"127.0.0.1:{port}", "--feed", "synthetic", "--record", str(record)])
        assert result.returncode != 0
        assert "cannot listen" in result.stderr, result.stderr
        assert segments(record) == [], "no empty segment from a server that never ran"
        # Same for a feed port that is taken.
        result = run_tickcast(
            ["--listen", f"127.0.0.1:{free_port()}", "--feed", f"tcp://127.0.0.1:{port}", "--record", str(record)]
        )
        assert result.returncode != 0
        assert "cannot start feed" in result.stderr, result.stderr
        assert segments(record) == []
    finally:
        taken.close()


def test_a_feed_port_off_loopback_needs_a_token_or_allow_list():
    result = run_tickcast(["--feed", f"tcp://0.0.0.0:{free_port()}", "--listen", f"127.0.0.1:{free_port()}"])
    assert result.returncode == 2
    assert "listens beyond loopback" in result.stderr, result.stderr


def test_the_allow_list_closes_other_peers(tickcast):
    server = tickcast(extra=["--feed-allow", "10.0.0.0/8"])
    s = socket.create_connection(("127.0.0.1", server.feed_port), timeout=TIMEOUT)
    assert is_closed_by_peer(s)
    server.wait_metric('tickcast_feed_refused_total{reason="not_allowed"}', lambda v: v == 1)
    assert server.metric("tickcast_feed_connections_total") == 0

"""Scale-out on NATS: one sequencer (``--publish nats://``), edges
(``--feed nats://``), a real ``nats-server`` on loopback.

Every client stream here goes through ``StreamChecker``, which asserts per
message what docs/CLUSTER.md promises a client: per symbol, a snapshot, then
every seq in order, or a ``reset`` notice immediately followed by that
symbol's snapshot at the announced seq; never a silent gap, a repeat or a
reorder. Prices are compared as the floats the decoders give (bit for bit:
every encoding carries IEEE doubles exactly).

The NATS side is driven by the server binary; the bad-input test speaks the
NATS text protocol over a plain socket (PUB), so nothing here shares code
with the server.
"""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tickcast_client import (
    REPO_ROOT,
    TIMEOUT,
    DepthBook,
    Feed,
    book,
    free_port,
    quote,
    trade,
    wait_until,
)

SYMS = ["AAA", "BRK.B", "CCC"]
DEPTH = 10


def nats_server_bin() -> str:
    for candidate in (shutil.which("nats-server"), "/usr/sbin/nats-server", "/usr/bin/nats-server"):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("nats-server not found: scripts/test.sh installs it (apt-get install nats-server)")


class NatsServer:
    """A real nats-server on a fixed loopback port, restartable."""

    def __init__(self, log_dir: Path, extra: list[str] | None = None):
        self.port = free_port()
        self.log_dir = log_dir
        self.extra = extra or []
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.log_dir / f"nats-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            [nats_server_bin(), "-a", "127.0.0.1", "-p", str(self.port), *self.extra], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    return s.recv(4).startswith(b"INFO")
            except OSError:
                return False

        wait_until(up, 10, interval=0.05, what="nats-server accepting")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)

    def publish_raw(self, subject: str, payload: bytes) -> None:
        """PUB over the NATS text protocol, then PING/PONG so it is processed."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
            s.recv(4096)  # INFO
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"user":"tc","pass":"s3cret-pw"}\r\n' if self.extra else b'CONNECT {"verbose":false,"pedantic":false}\r\n')
            s.sendall(f"PUB {subject} {len(payload)}\r\n".encode() + payload + b"\r\nPING\r\n")
            got = b""
            while b"PONG" not in got:
                chunk = s.recv(4096)
                assert chunk, "nats-server closed"
                got += chunk


@pytest.fixture
def nats(tmp_path):
    n = NatsServer(tmp_path)
    yield n
    n.stop()


# -- What a client sees ------------------------------------------------------


def key(m: dict) -> tuple:
    """An update as compared across nodes: type, times and every price."""
    t = m["type"]
    base = (t, m["ts_event"], m["ts_ingest"])
    if t == "trade":
        return base + (m["px"], m["sz"], m["side"])
    if t == "quote":
        return base + (m["bid"], m["bid_sz"], m["ask"], m["ask_sz"])
    return base + (tuple(map(tuple, m["bids"])), tuple(map(tuple, m["asks"])), m["checksum"])


class StreamChecker:
    """Per-message checks of one client's stream (see the module doc)."""

    def __init__(self, label: str):
        self.label = label
        self.last: dict[str, int] = {}
        self.awaiting: dict[str, int] = {}
        self.updates: dict[str, dict[int, tuple]] = {}
        self.snapshots: dict[str, list[dict]] = {}
        self.resets: list[dict] = []
        self.count = 0

    def check(self, m: dict) -> None:
        t = m.get("type")
        sym = m.get("sym")
        if t == "reset":
            assert sym in self.last, f"{self.label}: reset for {sym} before its first snapshot"
            assert sym not in self.awaiting, f"{self.label}: two resets for {sym} without a snapshot between"
            self.awaiting[sym] = m["seq"]
            self.resets.append(m)
        elif t == "snapshot":
            if sym in self.awaiting:
                want = self.awaiting.pop(sym)
                assert m["seq"] == want, f"{self.label}: {sym} snapshot at {m['seq']}, the reset announced {want}"
            else:
                assert sym not in self.last, f"{self.label}: a second snapshot of {sym} with no reset: {m}"
            self.last[sym] = m["seq"]
            self.snapshots.setdefault(sym, []).append(m)
        elif t in ("trade", "quote", "book"):
            assert sym not in self.awaiting, f"{self.label}: {sym} update before the snapshot its reset announced"
            assert sym in self.last, f"{self.label}: {sym} update before any snapshot"
            want = self.last[sym] + 1
            assert m["seq"] == want, f"{self.label}: {sym} seq {m['seq']} after {self.last[sym]} (gap, repeat or reorder)"
            self.last[sym] = m["seq"]
            self.updates.setdefault(sym, {})[m["seq"]] = key(m)
            self.count += 1
        elif t in ("conflated", "error"):
            raise AssertionError(f"{self.label}: unexpected {m}")


class Collector(threading.Thread):
    """Reads one client in the background, checking every message."""

    def __init__(self, client, label: str):
        super().__init__(daemon=True)
        self.client, self.checker = client, StreamChecker(label)
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                try:
                    m = self.client.recv(timeout=0.2)
                except AssertionError as e:  # the helper's "no message within" on a quiet moment
                    if "no message within" in str(e):
                        continue
                    raise
                self.checker.check(m)
        except BaseException as e:  # reported by finish()
            if not self._stop_event.is_set():
                self.error = e

    def finish(self) -> StreamChecker:
        self._stop_event.set()
        self.join(TIMEOUT)
        if self.error:
            raise self.error
        return self.checker


def subscribe_collect(server, encoding: str, label: str) -> Collector:
    c = server.connect(encoding)
    c.subscribe(*SYMS, depth=DEPTH)
    ack = c.recv_type("ack")
    assert sorted(ack["symbols"]) == sorted(SYMS), ack
    col = Collector(c, label)
    col.start()
    return col


class Market(threading.Thread):
    """Trades, quotes and book changes for SYMS at about ``rate``/s, into a
    tcp feed port; reconnects if the sequencer restarts."""

    def __init__(self, port: int, rate: float = 600.0):
        super().__init__(daemon=True)
        self.port, self.period = port, 1.0 / rate
        self.n = 0
        self._stop_event = threading.Event()

    def tick(self, i: int) -> dict:
        sym = SYMS[i % len(SYMS)]
        k = i // len(SYMS)
        px = 100.0 + (k % 50) * 0.01 + 0.1 + 0.2  # never a round binary fraction
        match k % 3:
            case 0:
                return trade(sym, px, 1.0 + k % 7, side=("buy", "sell")[k % 2], ts_event=1_700_000_000_000_000_000 + i)
            case 1:
                return quote(sym, px, 2.0, px + 0.01, 3.0, ts_event=1_700_000_000_000_000_000 + i)
            case _:
                lvl = k % 12
                return book(
                    sym,
                    bids=[(px - lvl * 0.01, float(k % 5))],
                    asks=[(px + 0.01 + lvl * 0.01, float((k + 1) % 5))],
                    ts_event=1_700_000_000_000_000_000 + i,
                )

    def run(self) -> None:
        feed = None
        while not self._stop_event.is_set():
            try:
                if feed is None:
                    feed = Feed(self.port)
                feed.send(self.tick(self.n))
                self.n += 1
            except OSError:
                if feed is not None:
                    feed.close()
                feed = None
                self._stop_event.wait(0.1)
                continue
            self._stop_event.wait(self.period)
        if feed is not None:
            feed.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(TIMEOUT)


def symbols_file(tmp_path: Path) -> Path:
    p = tmp_path / "symbols.txt"
    p.write_text("\n".join(SYMS) + "\n")
    return p


def start_sequencer(tickcast, nats, tmp_path, feed_port: int, extra=()):
    return tickcast(
        feed=f"tcp://127.0.0.1:{feed_port}",
        extra=["--publish", nats.url, "--symbols-file", str(symbols_file(tmp_path)), *extra],
    )


def start_edge(tickcast, nats, extra=()):
    return tickcast(feed=nats.url, extra=list(extra))


def state_at(checker: StreamChecker, sym: str, seq: int) -> dict:
    """The sequencer client's view of ``sym`` after update ``seq``: its
    first snapshot plus its updates, folded."""
    snap = checker.snapshots[sym][0]
    assert snap["seq"] <= seq, f"{sym}: the reference starts at {snap['seq']}, after {seq}"
    state = {"quote": snap["quote"], "trade": snap["trade"], "book": DepthBook.from_snapshot(snap["book"], DEPTH)}
    for s in range(snap["seq"] + 1, seq + 1):
        k = checker.updates[sym][s]
        if k[0] == "trade":
            state["trade"] = {"px": k[3], "sz": k[4], "side": k[5]}
        elif k[0] == "quote":
            state["quote"] = {"bid": k[3], "bid_sz": k[4], "ask": k[5], "ask_sz": k[6]}
        else:
            state["book"].apply({"bids": [list(l) for l in k[3]], "asks": [list(l) for l in k[4]]})
    return state


def assert_snapshot_matches(ref: StreamChecker, snap: dict, label: str) -> None:
    sym = snap["sym"]
    want = state_at(ref, sym, snap["seq"])
    assert snap["quote"] == want["quote"], f"{label}: {sym} snapshot quote at {snap['seq']}"
    assert snap["trade"] == want["trade"], f"{label}: {sym} snapshot trade at {snap['seq']}"
    bids, asks = want["book"].top(DEPTH)
    assert [tuple(l) for l in snap["book"]["bids"]] == bids, f"{label}: {sym} snapshot bids at {snap['seq']}"
    assert [tuple(l) for l in snap["book"]["asks"]] == asks, f"{label}: {sym} snapshot asks at {snap['seq']}"
    assert snap["book"]["checksum"] == want["book"].checksum(), f"{label}: {sym} checksum at {snap['seq']}"


def assert_same_updates(ref: StreamChecker, other: StreamChecker) -> int:
    """Every seq both saw carries the same update; returns how many."""
    common = 0
    for sym in SYMS:
        a, b = ref.updates.get(sym, {}), other.updates.get(sym, {})
        for seq in a.keys() & b.keys():
            assert a[seq] == b[seq], f"{other.label}: {sym} seq {seq}: {b[seq]} != sequencer's {a[seq]}"
            common += 1
    return common


def wait_caught_up(ref: Collector, cols: list[Collector], timeout: float = 15) -> None:
    """Until every collector's last seq of every symbol is the reference's
    (the feed has stopped, so the reference's are final)."""
    time.sleep(0.3)
    want = dict(ref.checker.last)
    for col in cols:
        wait_until(lambda: col.checker.last == want or col.error is not None, timeout, what=f"{col.checker.label} at {want}")


def resyncs(server) -> float:
    """tickcast_cluster_resyncs_total summed over its causes."""
    return sum(v for k, v in server.metrics().items() if k.startswith("tickcast_cluster_resyncs_total"))


# -- The tests ---------------------------------------------------------------


def test_two_edges_serve_the_sequencers_stream_exactly(tickcast, nats, tmp_path):
    feed_port = free_port()
    seq_server = start_sequencer(tickcast, nats, tmp_path, feed_port)
    edges = [start_edge(tickcast, nats), start_edge(tickcast, nats)]
    for e in edges:
        assert sorted(e.symbols()) == sorted(SYMS), "an edge learns the sequencer's universe before it serves"
    ref = subscribe_collect(seq_server, "msgpack", "sequencer/msgpack")
    cols = [
        subscribe_collect(edges[0], "json", "edge1/json"),
        subscribe_collect(edges[0], "protobuf", "edge1/protobuf"),
        subscribe_collect(edges[1], "msgpack", "edge2/msgpack"),
    ]
    market = Market(feed_port)
    market.start()
    time.sleep(3)
    # A client joining mid-stream on each edge: its snapshot must be the
    # sequencer's state at that seq.
    late = [subscribe_collect(e, "json", f"edge{i + 1}/late") for i, e in enumerate(edges)]
    time.sleep(1.5)
    market.stop()
    wait_caught_up(ref, cols + late)
    ref_c = ref.finish()
    assert ref_c.count > 1000, f"only {ref_c.count} updates reached the sequencer's client"
    for col in cols + late:
        c = col.finish()
        assert not c.resets, f"{c.label}: resets in a steady run: {c.resets[:3]}"
        common = assert_same_updates(ref_c, c)
        assert c.last == ref_c.last, f"{c.label}: ended at {c.last}, the sequencer at {ref_c.last}"
        if col in cols:
            assert common == ref_c.count, f"{c.label}: {common} of {ref_c.count} updates in common"
        for sym in SYMS:
            for snap in c.snapshots[sym]:
                assert_snapshot_matches(ref_c, snap, c.label)
    for e in edges:
        assert e.metric("tickcast_cluster_bad_records_total") == 0
        assert e.metric("tickcast_cluster_received_total") >= ref_c.count


def test_late_edge_serves_correct_snapshots_then_gapless_updates(tickcast, nats, tmp_path):
    feed_port = free_port()
    seq_server = start_sequencer(tickcast, nats, tmp_path, feed_port)
    ref = subscribe_collect(seq_server, "msgpack", "sequencer")
    market = Market(feed_port)
    market.start()
    time.sleep(10)
    edge = start_edge(tickcast, nats)
    col = subscribe_collect(edge, "protobuf", "late-edge")
    time.sleep(2)
    market.stop()
    wait_caught_up(ref, [col])
    ref_c, c = ref.finish(), col.finish()
    for sym in SYMS:
        snap = c.snapshots[sym][0]
        assert snap["seq"] > 500, f"{sym}: the late edge's snapshot at seq {snap['seq']} (10 s of data before)"
        assert_snapshot_matches(ref_c, snap, "late-edge")
    assert assert_same_updates(ref_c, c) > 300
    assert c.last == ref_c.last


def test_nats_restart_mid_stream_gives_gapless_or_announced_resets(tickcast, nats, tmp_path):
    feed_port = free_port()
    seq_server = start_sequencer(tickcast, nats, tmp_path, feed_port)
    edge = start_edge(tickcast, nats)
    ref = subscribe_collect(seq_server, "msgpack", "sequencer")
    col = subscribe_collect(edge, "json", "edge")
    market = Market(feed_port)
    market.start()
    time.sleep(1.5)
    nats.stop()
    time.sleep(1.0)
    nats.start()
    wait_until(lambda: resyncs(edge) >= 2 * len(SYMS), 15, interval=0.1, what="initial + reconnect re-syncs")
    time.sleep(1.5)
    market.stop()
    wait_caught_up(ref, [col])
    ref_c, c = ref.finish(), col.finish()
    assert not ref_c.resets, "the sequencer's own clients never see a reset"
    reasons = {r["reason"] for r in c.resets}
    assert reasons <= {"reconnect", "gap"}, reasons
    assert {r["sym"] for r in c.resets} == set(SYMS), f"every symbol re-synced after the reconnect: {c.resets}"
    assert c.last == ref_c.last
    assert_same_updates(ref_c, c)
    for sym in SYMS:
        for snap in c.snapshots[sym]:
            assert_snapshot_matches(ref_c, snap, "edge")


def test_edge_killed_and_restarted_serves_again(tickcast, nats, tmp_path):
    feed_port = free_port()
    seq_server = start_sequencer(tickcast, nats, tmp_path, feed_port)
    ref = subscribe_collect(seq_server, "msgpack", "sequencer")
    edge = start_edge(tickcast, nats)
    market = Market(feed_port)
    market.start()
    time.sleep(1)
    edge.proc.kill()
    edge.proc.wait(TIMEOUT)
    time.sleep(1)
    edge2 = start_edge(tickcast, nats)
    col = subscribe_collect(edge2, "msgpack", "restarted-edge")
    time.sleep(1.5)
    market.stop()
    wait_caught_up(ref, [col])
    ref_c, c = ref.finish(), col.finish()
    assert c.last == ref_c.last
    assert assert_same_updates(ref_c, c) > 100
    for sym in SYMS:
        assert_snapshot_matches(ref_c, c.snapshots[sym][0], "restarted-edge")


def test_sequencer_restarted_without_state_starts_a_new_epoch(tickcast, nats, tmp_path):
    feed_port = free_port()
    first = start_sequencer(tickcast, nats, tmp_path, feed_port)
    edge = start_edge(tickcast, nats)
    col = subscribe_collect(edge, "json", "edge")
    market = Market(feed_port)
    market.start()
    time.sleep(1.5)
    first.proc.kill()
    first.proc.wait(TIMEOUT)
    before = dict(col.checker.last)
    second = start_sequencer(tickcast, nats, tmp_path, feed_port)
    wait_until(lambda: resyncs(edge) >= 2 * len(SYMS), 15, interval=0.1, what="initial + epoch re-syncs")
    ref = subscribe_collect(second, "msgpack", "new-sequencer")
    time.sleep(1.5)
    market.stop()
    wait_caught_up(ref, [col])
    ref.finish()
    c = col.finish()
    epoch_resets = [r for r in c.resets if r["reason"] == "epoch"]
    assert {r["sym"] for r in epoch_resets} == set(SYMS), c.resets
    for r in epoch_resets:
        assert r["seq"] < before[r["sym"]], "a new epoch starts its seqs again; the reset says so"


def test_sequencer_restarted_with_record_continues_its_seqs(tickcast, nats, tmp_path):
    feed_port = free_port()
    record = tmp_path / "ticks"
    first = start_sequencer(tickcast, nats, tmp_path, feed_port, extra=["--record", str(record)])
    edge = start_edge(tickcast, nats)
    col = subscribe_collect(edge, "msgpack", "edge")
    market = Market(feed_port)
    market.start()
    time.sleep(1.5)
    first.signal(signal.SIGTERM)  # a clean stop: the recorder flushes everything
    first.proc.wait(TIMEOUT * 2)
    second = start_sequencer(tickcast, nats, tmp_path, feed_port, extra=["--record", str(record)])
    ref = subscribe_collect(second, "msgpack", "restarted-sequencer")
    time.sleep(2)
    market.stop()
    wait_caught_up(ref, [col])
    ref.finish()
    c = col.finish()
    assert not [r for r in c.resets if r["reason"] == "epoch"], f"same epoch after a clean restart: {c.resets}"
    for r in c.resets:  # a record lost in the restart: re-synced, never backwards
        assert r["seq"] >= c.snapshots[r["sym"]][0]["seq"]
    m = second.metrics()
    assert m["tickcast_updates_published_total"] > 0
    # The restarted sequencer went on from its log: the edge's client ends
    # on seqs above everything the first run published.
    for sym in SYMS:
        assert c.last[sym] > 300, c.last


@pytest.mark.parametrize("auth", ["user", "token"])
def test_nats_auth_is_passed_through(tickcast, tmp_path, auth):
    server_flags = ["--user", "tc", "--pass", "s3cret-pw"] if auth == "user" else ["--auth", "t0ken-for-the-cluster"]
    node_flags = (
        ["--nats-user", "tc", "--nats-password", "s3cret-pw"] if auth == "user" else ["--nats-token", "t0ken-for-the-cluster"]
    )
    secured = NatsServer(tmp_path, server_flags)
    try:
        feed_port = free_port()
        seq_server = start_sequencer(tickcast, secured, tmp_path, feed_port, extra=node_flags)
        edge = start_edge(tickcast, secured, extra=node_flags)
        assert sorted(edge.symbols()) == sorted(SYMS), "the edge reached the sequencer through the secured NATS"
        ref = subscribe_collect(seq_server, "msgpack", "sequencer")
        col = subscribe_collect(edge, "json", "edge")
        market = Market(feed_port, rate=300)
        market.start()
        time.sleep(1)
        market.stop()
        wait_caught_up(ref, [col])
        ref_c, c = ref.finish(), col.finish()
        assert c.count > 100 and assert_same_updates(ref_c, c) == ref_c.count
        # Without the credentials an edge is refused by NATS and says so.
        outsider = start_edge(tickcast, secured)
        wait_until(
            lambda: "uthoriz" in Path(outsider.log_path).read_text(errors="replace"),
            10,
            interval=0.1,
            what="an authorization error in the log of an edge without credentials",
        )
        assert outsider.symbols() == [], "no credentials, no data"
    finally:
        secured.stop()


def encode_record(kind: int, sym: str, epoch: int, seq: int, body: bytes, flags: int = 0, version: int = 1) -> bytes:
    """A binary tick record, framed, built from docs/CLUSTER.md's table."""
    s = sym.encode()
    rec = struct.pack("<BBBBQQQQ", version, kind, flags, len(s), epoch, seq, 1, 2) + s + body
    return struct.pack("<I", len(rec)) + rec


def test_bad_records_on_nats_are_counted_and_never_applied(tickcast, nats, tmp_path):
    feed_port = free_port()
    seq_server = start_sequencer(tickcast, nats, tmp_path, feed_port)
    edge = start_edge(tickcast, nats)
    ref = subscribe_collect(seq_server, "msgpack", "sequencer")
    col = subscribe_collect(edge, "json", "edge")
    market = Market(feed_port, rate=300)
    market.start()
    time.sleep(1)
    trade_body = struct.pack("<ddB", 1.5, 2.0, 1)
    epoch_now = int(time.time() * 1e9) + 10**15  # a "newer epoch" a forger would try
    bad = [
        ("tickcast.tick.AAA", b"\x00garbage"),
        ("tickcast.tick.AAA", b""),
        ("tickcast.tick.AAA", encode_record(1, "CCC", 1, 999_999, trade_body)),  # another symbol's subject
        ("tickcast.tick.AAA", encode_record(1, "AAA", 1, 999_999, trade_body, version=9)),
        ("tickcast.tick.AAA", encode_record(7, "AAA", 1, 999_999, trade_body)),
        ("tickcast.tick.AAA", encode_record(1, "AAA", 0, 0, trade_body)),  # unsequenced
        ("tickcast.tick.AAA", encode_record(1, "AAA", 1, 5, struct.pack("<ddB", float("nan"), 1.0, 0))),
        ("tickcast.tick.AAA", encode_record(1, "AAA", 1, 5, trade_body)[:-3]),  # truncated
        ("tickcast.tick.BRK%2EB", encode_record(4, "BRK.B", 1, 5, struct.pack("<HH", 0, 0))),  # an image
    ]
    for subject, payload in bad:
        nats.publish_raw(subject, payload)
    edge.wait_metric("tickcast_cluster_bad_records_total", lambda v: v >= len(bad) - 1, timeout=10)
    # A well-formed record of an OLDER epoch is stale: dropped, not applied.
    nats.publish_raw("tickcast.tick.AAA", encode_record(1, "AAA", 1, 10**9, trade_body))
    time.sleep(1)
    market.stop()
    wait_caught_up(ref, [col])
    ref_c, c = ref.finish(), col.finish()
    assert not c.resets, f"no bad record made the edge re-sync or apply anything: {c.resets}"
    assert c.last == ref_c.last
    assert assert_same_updates(ref_c, c) == ref_c.count
    assert edge.proc.poll() is None, "the edge is still running"
    assert "bad record" in Path(edge.log_path).read_text() or "record" in Path(edge.log_path).read_text()


def test_replayed_capture_through_the_cluster_matches_a_single_node(tickcast, nats, tmp_path):
    capture = REPO_ROOT / "tests" / "data" / "binance" / "ethusdt_20240808.gz"
    assert capture.is_file(), "tests/data/binance holds the capture"
    args = ["--speed", "4"]
    single = tickcast(feed=f"replay:{capture}", extra=args)
    seq_server = tickcast(feed=f"replay:{capture}", extra=[*args, "--publish", nats.url])
    edge = start_edge(tickcast, nats)
    sym = "ETHUSDT"
    assert sym in edge.symbols()
    cols = []
    for server, label in ((single, "single"), (edge, "edge")):
        c = server.connect("msgpack")
        c.subscribe(sym, depth=DEPTH)
        c.recv_type("ack")
        cols.append(Collector(c, label))
        cols[-1].start()
    time.sleep(4)
    a, b = (col.finish() for col in cols)
    common = 0
    for seq in a.updates.get(sym, {}).keys() & b.updates.get(sym, {}).keys():
        ka, kb = a.updates[sym][seq], b.updates[sym][seq]
        # ts_ingest is each node's own clock; everything else is the capture's.
        assert ka[0] == kb[0] and ka[1] == kb[1] and ka[3:] == kb[3:], f"{sym} seq {seq}: {ka} != {kb}"
        common += 1
    assert common > 100, f"only {common} seqs in common"


@pytest.mark.parametrize("encoding", ["msgpack", "protobuf", "json"])
def test_a_client_resumes_on_another_edge_by_the_sequencers_seqs(tickcast, nats, tmp_path, encoding):
    """Seqs and the epoch are the sequencer's, so a client that leaves one
    edge resumes on another from the last seq it held: exactly the missed
    updates (the other edge's history), then live, nothing twice."""
    feed_port = free_port()
    seq_server = start_sequencer(tickcast, nats, tmp_path, feed_port)
    edge_a, edge_b = start_edge(tickcast, nats), start_edge(tickcast, nats)
    ref = subscribe_collect(seq_server, "msgpack", "sequencer")
    # Edge B has users at this depth and encoding: it keeps their history.
    neighbour = subscribe_collect(edge_b, encoding, "edge-b/neighbour")
    market = Market(feed_port)
    market.start()
    try:
        leaving = edge_a.connect(encoding)
        leaving.subscribe(*SYMS, depth=DEPTH)
        ack = leaving.recv_type("ack")
        epoch = ack["epoch"]
        # The edge names its sequencer's epoch, as the sequencer does.
        probe = seq_server.connect("json")
        probe.subscribe(SYMS[0])
        assert probe.recv_type("ack")["epoch"] == epoch > 0
        probe.close()
        held = StreamChecker("edge-a/leaving")
        while held.count < 200:
            held.check(leaving.recv())
        leaving.close()
        left_at = dict(held.last)
        # Away while about 300 more updates go by.
        n = market.n
        wait_until(lambda: market.n >= n + 300, what="300 more ticks")
        back = edge_b.connect(encoding)
        back.send_json({"op": "subscribe", "symbols": SYMS, "depth": DEPTH, "from_seq": left_at, "epoch": epoch})
        ack = back.recv_type("ack")
        assert ack["recovered"] == {s: True for s in SYMS}, ack
        assert ack["epoch"] == epoch, ack
        books = {s: DepthBook.from_snapshot(held.snapshots[s][0]["book"], DEPTH) for s in SYMS}
        # The books held from edge A go on with edge B's messages.
        for sym in SYMS:
            for seq in range(held.snapshots[sym][0]["seq"] + 1, left_at[sym] + 1):
                k = held.updates[sym][seq]
                if k[0] == "book":
                    books[sym].apply({"bids": [list(l) for l in k[3]], "asks": [list(l) for l in k[4]]})
        target = {s: left_at[s] + 250 for s in SYMS}
        while any(held.last[s] < target[s] for s in SYMS):
            m = back.recv()
            assert m["type"] in ("trade", "quote", "book"), f"a recovered symbol got {m}"
            held.check(m)
            if m["type"] == "book":
                books[m["sym"]].apply(m)
                assert books[m["sym"]].checksum() == m["checksum"], (m["sym"], m["seq"])
    finally:
        market.stop()
    time.sleep(0.5)
    ref_c = ref.finish()
    neighbour.finish()
    # Every update it got, before and after the move, is the sequencer's.
    assert assert_same_updates(ref_c, held) == held.count
    assert edge_b.metric('tickcast_resumes_total{result="recovered"}') == len(SYMS)

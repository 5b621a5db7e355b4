"""Snapshots that stream: `subscribe ["*"]` over a 100,000-symbol universe.

The burst of 100,000 snapshots is several times `--disconnect-above`
(8 MiB); before snapshots streamed, the client got its ack and then 1008
"slow consumer" with no snapshot at all. Now the server releases snapshots
as the client drains (docs/PROTOCOL.md, "Subscribe flow"), so a client
reading at a normal pace gets every one, each symbol's updates start right
after its own snapshot, and the server never counts it as slow.

A real server with the synthetic feed declaring 100,000 symbols and
ticking them, and a Python `websockets` + `msgpack` client: nothing here
shares code with the server.
"""

from __future__ import annotations

import time

from tickcast_client import ConnectionClosed, subscribe_ack

UNIVERSE = 100_000


def test_wildcard_over_100k_symbols_delivers_every_snapshot(tickcast):
    server = tickcast(feed="synthetic", extra=["--symbols", str(UNIVERSE), "--rate", "5000"])
    names = server.symbols()
    assert len(names) == UNIVERSE and len(set(names)) == UNIVERSE

    client = server.connect("msgpack")
    client.subscribe("*")
    t0 = time.monotonic()
    assert subscribe_ack(client.recv_type("ack", timeout=30)) == {"type": "ack", "op": "subscribe", "symbols": ["*"]}
    snapshot_seq: dict[str, int] = {}
    last: dict[str, int] = {}
    updates = 0
    deadline = t0 + 240
    try:
        while len(snapshot_seq) < UNIVERSE:
            assert time.monotonic() < deadline, f"only {len(snapshot_seq)} snapshots in 240 s"
            m = client.recv(timeout=30)
            sym = m.get("sym")
            if m["type"] == "snapshot":
                assert sym not in snapshot_seq, f"a second snapshot of {sym}"
                assert m["depth"] == 10 and len(m["book"]["bids"]) <= 10
                snapshot_seq[sym] = last[sym] = m["seq"]
            elif m["type"] in ("trade", "quote", "book"):
                # A symbol's updates follow its own snapshot, gapless.
                assert sym in last, f"an update of {sym} before its snapshot: {m!r}"
                assert m["seq"] == last[sym] + 1, f"{sym}: seq {m['seq']} after {last[sym]}"
                last[sym] = m["seq"]
                updates += 1
            else:
                raise AssertionError(f"unexpected message while snapshots stream: {m!r}")
    except ConnectionClosed as e:
        raise AssertionError(f"closed after {len(snapshot_seq)} snapshots: {e}") from None
    elapsed = time.monotonic() - t0
    assert set(snapshot_seq) == set(names)
    # Updates of symbols already snapshotted kept flowing meanwhile.
    assert updates > 0
    assert server.metric("tickcast_slow_disconnects_total") == 0
    assert server.metric("tickcast_snapshots_pending") == 0
    assert server.metric("tickcast_subscriptions") == UNIVERSE
    print(f"{UNIVERSE} snapshots in {elapsed:.2f} s, {updates} updates interleaved")

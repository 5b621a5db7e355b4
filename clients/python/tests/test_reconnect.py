"""A Session comes back by itself: after the server is killed and
restarted on the same port, and after the server stops answering (the
heartbeat watchdog)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import tickcast

MARKET = (tickcast.Trade, tickcast.Quote, tickcast.BookUpdate)


def test_the_session_reconnects_after_the_server_is_killed_and_restarted(tickcast_server):
    server = tickcast_server(feed="synthetic", extra=["--symbols", "10", "--rate", "1000"])
    symbols = server.get("/symbols")[:2]
    seen: list[Any] = []

    async def run() -> None:
        async with tickcast.Session(server.url, symbols, encoding="msgpack", backoff_base=0.05, backoff_cap=0.5) as s:
            killed = False
            updates_after = 0
            last: dict[str, int] = {}

            async def consume() -> None:
                nonlocal killed, updates_after
                async for item in s:
                    seen.append(item)
                    assert not isinstance(item, (tickcast.Gap, tickcast.ChecksumMismatch)), item
                    if isinstance(item, tickcast.Snapshot):
                        last[item.sym] = item.seq
                    elif isinstance(item, MARKET):
                        assert item.seq == last[item.sym] + 1, "seqs stay gapless on both sides of the restart"
                        last[item.sym] = item.seq
                        if not killed and len(seen) > 50:
                            killed = True
                            # Kill and restart off the event loop: the session
                            # sees the connection die and retries meanwhile.
                            threading.Thread(target=server.restart, daemon=True).start()
                        elif killed and s.stats.connects >= 2:
                            updates_after += 1
                            if updates_after >= 50:
                                return

            await asyncio.wait_for(consume(), 60)

    asyncio.run(run())
    kinds = [type(i).__name__ for i in seen]
    first_drop = kinds.index("Disconnected")
    reconnected = kinds.index("Connected", first_drop)
    # The session asks to resume, but a synthetic server restarted without
    # a tick log is a new epoch: each symbol gets reset (reason epoch), then
    # its snapshot, and the seqs start over.
    after = seen[reconnected:]
    assert seen[reconnected].resumed == symbols
    ack = next(i for i in after if isinstance(i, tickcast.Ack))
    assert ack.recovered == {sym: False for sym in symbols}
    for sym in symbols:
        per_sym = [i for i in after if isinstance(i, (tickcast.Reset, tickcast.Snapshot)) and i.sym == sym]
        assert isinstance(per_sym[0], tickcast.Reset) and per_sym[0].reason == "epoch"
        assert isinstance(per_sym[1], tickcast.Snapshot) and per_sym[1].seq == per_sym[0].seq
    assert seen[reconnected].attempt >= 2
    for d in seen[first_drop:reconnected]:
        if isinstance(d, tickcast.Disconnected):
            assert 0 <= d.retry_in <= 0.5


def test_the_heartbeat_watchdog_reconnects_from_a_silent_server(tickcast_server):
    server = tickcast_server(feed="synthetic", extra=["--symbols", "5", "--rate", "200"])
    symbols = server.get("/symbols")[:1]
    events: list[Any] = []

    async def run() -> None:
        async with tickcast.Session(
            server.url, symbols, heartbeat_timeout=1.5, open_timeout=1.5, backoff_base=0.05, backoff_cap=0.2
        ) as s:
            stopped_at = None

            async def consume() -> None:
                nonlocal stopped_at
                async for item in s:
                    if isinstance(item, (tickcast.Connected, tickcast.Disconnected)):
                        events.append(item)
                    if stopped_at is None and isinstance(item, tickcast.Trade):
                        server.pause()  # SIGSTOP: the socket stays open, nothing comes
                        stopped_at = time.monotonic()
                    elif isinstance(item, tickcast.Disconnected) and "heartbeat" in item.reason:
                        server.cont()
                    elif isinstance(item, MARKET) and s.stats.connects >= 2:
                        return  # back, and resumed where it left off

            try:
                await asyncio.wait_for(consume(), 60)
            finally:
                server.cont()
            # The same server, with its history: the session resumed.
            assert s.stats.recovered == 1 and s.stats.gaps == 0

    asyncio.run(run())
    reasons = [e.reason for e in events if isinstance(e, tickcast.Disconnected)]
    assert any("heartbeat" in r for r in reasons), reasons
    assert isinstance(events[-1], tickcast.Connected) and events[-1].resumed == symbols

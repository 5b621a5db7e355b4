"""Live with rewind: a Session that starts in the past (``from_ts``) on a
recording server gets the state at that time, every update since, then
live ones, and still resumes by seq after a drop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import tickcast
from servers import Feed, book, quote, trade

MARKET = (tickcast.Trade, tickcast.Quote, tickcast.BookUpdate)
STEP_NS = 1_000_000  # 1 ms of event time per tick


def ticks(t0: int, first: int, count: int) -> list[dict[str, Any]]:
    """Ticks numbered ``first``.. with event times ``t0 + n ms``."""
    out = []
    for n in range(first, first + count):
        ts, px = t0 + n * STEP_NS, 50.0 + (n % 11) * 0.5
        if n % 3 == 0:
            out.append(trade("SOLUSDT", px, 2.0, ts_event=ts))
        elif n % 3 == 1:
            out.append(quote("SOLUSDT", px - 0.5, 4.0, px + 0.5, 6.0, ts_event=ts))
        else:
            tick = book("SOLUSDT", bids=[(px - 1.0, float(n % 5)), (40.0 + n % 7, 1.0)], asks=[(px + 1.0, 1.0 + n % 4)])
            out.append({**tick, "ts_event": ts})
    return out


def wait_published(server: Any, total: int) -> None:
    deadline = time.monotonic() + 20
    while (server.metric("tickcast_updates_published_total") or 0) < total:
        assert time.monotonic() < deadline, f"the server never sequenced {total} updates"
        time.sleep(0.02)


def test_a_session_rewinds_then_goes_live_then_resumes(tickcast_server, tmp_path):
    server = tickcast_server(feed="tcp", extra=["--record", str(tmp_path / "rec")])
    feed = Feed(server.feed_port)
    t0 = time.time_ns() - 60 * 10**9
    feed.send(*ticks(t0, 0, 200))  # seqs 1..200, tick n at seq n + 1
    wait_published(server, 200)
    from_ts = t0 + 100 * STEP_NS
    items: list[Any] = []

    async def run() -> None:
        async with tickcast.Session(server.url, ["SOLUSDT"], depth=10, from_ts=from_ts, backoff_base=0.05) as s:
            sent = 200

            async def consume() -> None:
                nonlocal sent
                async for item in s:
                    items.append(item)
                    if isinstance(item, MARKET) and item.seq == 200 and s.stats.connects == 1:
                        feed.send(*ticks(t0, sent, 20))  # live: 201..220
                        sent += 20
                    elif isinstance(item, MARKET) and item.seq == 210 and s.stats.disconnects == 0:
                        s.drop_connection()
                    elif isinstance(item, tickcast.Disconnected):
                        feed.send(*ticks(t0, sent, 20))  # missed while away: 221..240
                        sent += 20
                        wait_published(server, sent)
                    elif isinstance(item, MARKET) and item.seq == sent and s.stats.connects == 2:
                        return

            await asyncio.wait_for(consume(), 60)
            assert s.stats.gaps == 0 and s.stats.checksum_mismatches == 0 and s.stats.recovered == 1

    asyncio.run(run())
    feed.close()
    snapshot = next(i for i in items if isinstance(i, tickcast.Snapshot))
    assert snapshot.ts_event < from_ts, "the state after the last update before from_ts"
    assert snapshot.seq in (100, 101)
    seqs = [i.seq for i in items if isinstance(i, MARKET)]
    assert seqs == list(range(snapshot.seq + 1, 241)), "the log, then live, then the resumed ones: each seq once"
    first = next(i for i in items if isinstance(i, MARKET))
    assert first.ts_event >= from_ts
    assert sum(isinstance(i, tickcast.Snapshot) for i in items) == 1, "resumed after the drop, no second snapshot"

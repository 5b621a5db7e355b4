"""A Session that falls behind is conflated by the server (never silently
gapped) and comes back exact from the snapshots."""

from __future__ import annotations

import asyncio
import time

import tickcast

MARKET = (tickcast.Trade, tickcast.Quote, tickcast.BookUpdate)


def test_a_stalled_session_is_conflated_and_recovers_exactly(tickcast_server):
    server = tickcast_server(
        feed="synthetic", extra=["--symbols", "20", "--rate", "20000", "--conflate-above", "64KiB"]
    )
    symbols = server.get("/symbols")

    async def run() -> None:
        async with tickcast.Session(server.url, symbols, depth=10, max_queue=16) as s:
            last: dict[str, int] = {}
            stalled = False
            after = 0

            async def consume() -> None:
                nonlocal stalled, after
                async for item in s:
                    assert not isinstance(item, (tickcast.Gap, tickcast.ChecksumMismatch)), item
                    if isinstance(item, tickcast.Disconnected):
                        # A machine too loaded for the client to keep up even
                        # with conflated data may also see the next rung of
                        # the ladder; the session then comes back by itself.
                        assert "1008 slow consumer" in item.reason, item
                    if isinstance(item, tickcast.Snapshot):
                        last[item.sym] = item.seq
                    elif isinstance(item, MARKET):
                        assert item.seq == last[item.sym] + 1
                        last[item.sym] = item.seq
                        if not stalled and len(last) == len(symbols):
                            stalled = True
                            time.sleep(3)  # blocks the loop: nothing is read, the server's queue grows
                        elif s.stats.conflations:
                            after += 1
                            if after >= 2000:
                                return

            await asyncio.wait_for(consume(), 90)
            assert s.stats.conflations >= 1
            for sym in symbols:
                book = s.book(sym)
                assert book is not None, f"{sym} never got its snapshot back"

    asyncio.run(run())

"""Resume by seq against the real server (the resume extension of issue
17): a client that drops its connection mid-stream and comes back with
``from_seq`` and the last ack's ``epoch`` gets exactly the updates it
missed, then live ones, with no gap, no duplicate and no snapshot; a
stale epoch gets a reset and a snapshot instead."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import tickcast
from servers import TIMEOUT, Feed, book, quote, trade

ENCODINGS = ["msgpack", "protobuf", "json"]
MARKET = (tickcast.Trade, tickcast.Quote, tickcast.BookUpdate)
TS = 1_700_000_000_000_000_000


def send_trades(feed: Feed, sym: str, first: int, count: int) -> None:
    """``count`` trades whose price encodes their number (first, first+1...)."""
    feed.send(*(trade(sym, 100.0 + n / 1000, 1.0, ts_event=TS + n) for n in range(first, first + count)))


def send_mixed(feed: Feed, sym: str, first: int, count: int) -> None:
    """``count`` ticks numbered from ``first``: trades, quotes and book
    changes in turn (the book moves a level in and out each time)."""
    ticks = []
    for n in range(first, first + count):
        if n % 3 == 0:
            ticks.append(trade(sym, 100.0 + n / 1000, 1.0, ts_event=TS + n))
        elif n % 3 == 1:
            ticks.append(quote(sym, 99.0, float(n), 101.0, 1.0, ts_event=TS + n))
        else:
            px = 99.0 - (n % 7) / 10
            ticks.append(
                book(sym, bids=[(px, float(n)), (99.0 - ((n + 3) % 7) / 10, 0.0)], asks=[(101.0 + (n % 5) / 10, 1.0)])
            )
    feed.send(*ticks)


def wait_published(server: Any, total: int) -> None:
    """Waits until the server has sequenced ``total`` updates."""
    deadline = time.monotonic() + TIMEOUT
    while (server.metric("tickcast_updates_published_total") or 0) < total:
        assert time.monotonic() < deadline, f"the server never sequenced {total} updates"
        time.sleep(0.02)


async def next_of(conn: tickcast.Connection, kind: type[Any]) -> Any:
    async def find() -> Any:
        while True:
            msg = await conn.recv()
            if isinstance(msg, kind):
                return msg

    return await asyncio.wait_for(find(), TIMEOUT)


async def take(conn: tickcast.Connection, n: int) -> list[Any]:
    """The next ``n`` messages."""
    return [await conn.recv(timeout=TIMEOUT) for _ in range(n)]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_dropped_connection_resumes_with_exactly_the_missed_seqs(tickcast_server, encoding):
    server = tickcast_server(feed="tcp")
    feed = Feed(server.feed_port)
    send_trades(feed, "AAPL", 1, 1)
    server.wait_symbols("AAPL")
    wait_published(server, 1)

    async def run() -> None:
        async with tickcast.connect(server.url, encoding=encoding) as first:
            await first.subscribe(["AAPL"], depth=10)
            ack = await next_of(first, tickcast.Ack)
            assert ack.epoch is not None and ack.epoch > 0, "the server sends its epoch on every subscribe ack"
            snap = await next_of(first, tickcast.Snapshot)
            assert snap.seq == 1
            send_trades(feed, "AAPL", 2, 19)  # seqs 2..20
            held = [m.seq for m in await take(first, 9)]  # 2..10 read; the rest is left unread
            assert held == list(range(2, 11))
            first.abort()  # the network drops the connection mid-stream
        send_trades(feed, "AAPL", 21, 10)  # 21..30 while disconnected
        wait_published(server, 30)
        async with tickcast.connect(server.url, encoding=encoding) as second:
            await second.subscribe(["AAPL"], depth=10, from_seq={"AAPL": 10}, epoch=ack.epoch)
            resumed = await second.recv(timeout=TIMEOUT)
            assert isinstance(resumed, tickcast.Ack)
            assert resumed.recovered == {"AAPL": True} and resumed.epoch == ack.epoch
            missed = await take(second, 20)  # 11..30, from the server's history
            assert all(isinstance(m, tickcast.Trade) for m in missed), "no snapshot: the missed updates themselves"
            assert [m.seq for m in missed] == list(range(11, 31))
            assert [m.px for m in missed] == [100.0 + n / 1000 for n in range(11, 31)]
            assert [m.ts_event for m in missed] == [TS + n for n in range(11, 31)]
            send_trades(feed, "AAPL", 31, 5)  # then live, right after
            live = await take(second, 5)
            assert [m.seq for m in live] == list(range(31, 36))

    asyncio.run(run())
    feed.close()


def test_a_stale_epoch_gets_a_reset_and_a_snapshot(tickcast_server):
    server = tickcast_server(feed="tcp")
    feed = Feed(server.feed_port)
    send_trades(feed, "AAPL", 1, 5)
    server.wait_symbols("AAPL")
    wait_published(server, 5)

    async def run() -> None:
        async with tickcast.connect(server.url, encoding="json") as c:
            await c.subscribe(["AAPL"], from_seq={"AAPL": 2}, epoch=12345)
            ack = await c.recv(timeout=TIMEOUT)
            assert isinstance(ack, tickcast.Ack) and ack.recovered == {"AAPL": False}
            reset = await c.recv(timeout=TIMEOUT)
            assert reset == tickcast.Reset("AAPL", 5, "epoch")
            snap = await c.recv(timeout=TIMEOUT)
            assert isinstance(snap, tickcast.Snapshot) and (snap.sym, snap.seq) == ("AAPL", 5)

    asyncio.run(run())
    feed.close()


def test_a_session_resumes_by_itself_after_its_connection_drops(tickcast_server):
    server = tickcast_server(feed="tcp")
    feed = Feed(server.feed_port)
    send_mixed(feed, "AAPL", 1, 1)
    server.wait_symbols("AAPL")
    wait_published(server, 1)
    items: list[Any] = []

    async def run() -> None:
        async with tickcast.Session(server.url, ["AAPL"], depth=10, backoff_base=0.05, backoff_cap=0.2) as s:
            sent = 1

            async def consume() -> None:
                nonlocal sent
                async for item in s:
                    items.append(item)
                    if isinstance(item, tickcast.Snapshot) and s.stats.connects == 1:
                        send_mixed(feed, "AAPL", 2, 49)  # 2..50
                        sent = 50
                    elif isinstance(item, MARKET) and item.seq == 25 and s.stats.disconnects == 0:
                        s.drop_connection()
                    elif isinstance(item, tickcast.Disconnected):
                        # The session reconnects when iterated again: these
                        # 20 are sequenced while it is away.
                        send_mixed(feed, "AAPL", sent + 1, 20)
                        sent += 20
                        wait_published(server, sent)
                    elif isinstance(item, tickcast.Ack) and item.recovered:
                        send_mixed(feed, "AAPL", sent + 1, 10)  # and 10 live ones
                        sent += 10
                    elif isinstance(item, MARKET) and item.seq == sent and s.stats.connects == 2:
                        return

            await asyncio.wait_for(consume(), 60)
            assert s.stats.recovered == 1 and s.stats.gaps == 0
            assert s.stats.checksum_mismatches == 0, "the book kept across the seam matches every checksum"
            book_ = s.book("AAPL")
            assert book_ is not None and book_.best_bid is not None

    asyncio.run(run())
    feed.close()
    seqs = [i.seq for i in items if isinstance(i, MARKET)]
    assert seqs == list(range(2, 81)), "every seq once, in order, across the drop"
    reconnected = next(i for i in items if isinstance(i, tickcast.Connected) and i.attempt == 2)
    assert reconnected.resumed == ["AAPL"]
    after = items[items.index(reconnected) :]
    assert not any(isinstance(i, tickcast.Snapshot) for i in after), "resumed, not re-snapshotted"
    ack = next(i for i in after if isinstance(i, tickcast.Ack))
    assert ack.recovered == {"AAPL": True}

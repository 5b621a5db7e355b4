"""Live subscriptions against a real server: the asyncio connection and the
Session on the tcp and synthetic feeds in all three encodings, the
blocking iterator, and books verified against every checksum."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

import tickcast
from servers import BINANCE, TIMEOUT, Feed, book, quote, trade

ENCODINGS = ["msgpack", "protobuf", "json"]
TS = 1_700_000_000_000_000_001  # above 2**53: exact only as an int


async def recv_type(conn: tickcast.Connection, kind: type[Any]) -> Any:
    """The next message of ``kind`` (others skipped), bounded."""

    async def find() -> Any:
        while True:
            msg = await conn.recv()
            if isinstance(msg, kind):
                return msg

    return await asyncio.wait_for(find(), TIMEOUT)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_connect_subscribe_and_decode_every_market_message(tickcast_server, encoding):
    server = tickcast_server(feed="tcp")
    feed = Feed(server.feed_port)
    feed.send(quote("AAPL", 189.48, 100, 189.5, 200, ts_event=TS - 1))
    server.wait_symbols("AAPL")

    async def run() -> None:
        async with tickcast.connect(server.url, encoding=encoding) as c:
            await c.subscribe(["AAPL"], depth=10)
            ack = await recv_type(c, tickcast.Ack)
            assert (ack.op, ack.symbols) == ("subscribe", ["AAPL"])
            snap = await recv_type(c, tickcast.Snapshot)
            assert (snap.sym, snap.seq, snap.depth, snap.ts_event) == ("AAPL", 1, 10, TS - 1)
            assert snap.quote == tickcast.QuoteState(189.48, 100.0, 189.5, 200.0)
            book_ = tickcast.OrderBook.from_snapshot(snap)
            feed.send(
                trade("AAPL", 189.49, 100, "sell", ts_event=TS),
                quote("AAPL", 189.49, 300, 189.51, 200, ts_event=TS + 1),
                book("AAPL", bids=[(189.49, 300)], asks=[(189.51, 200)]),
                book("AAPL", bids=[(189.49, 0)]),
            )
            t = await recv_type(c, tickcast.Trade)
            assert t == tickcast.Trade("AAPL", 2, TS, t.ts_ingest, 189.49, 100.0, "sell")
            assert type(t.ts_event) is int and t.ts_ingest > 1_600_000_000_000_000_000
            q = await recv_type(c, tickcast.Quote)
            assert (q.seq, q.ts_event, q.bid, q.bid_sz, q.ask, q.ask_sz) == (3, TS + 1, 189.49, 300.0, 189.51, 200.0)
            for seq, bids in ((4, [(189.49, 300.0)]), (5, [(189.49, 0.0)])):
                b = await recv_type(c, tickcast.BookUpdate)
                assert (b.seq, b.bids) == (seq, bids)
                assert book_.apply(b), "the book matches the server's checksum"
            assert book_.bids() == [] and book_.asks() == [(189.51, 200.0)]
            await c.subscribe(["NOPE"])
            err = await recv_type(c, tickcast.Error)
            assert (err.code, err.symbols) == ("unknown_symbol", ["NOPE"])

    asyncio.run(run())
    feed.close()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_session_on_the_synthetic_feed_keeps_seqs_and_books_exact(tickcast_server, encoding):
    server = tickcast_server(feed="synthetic", extra=["--symbols", "20", "--rate", "4000"])
    symbols = server.get("/symbols")[:3]
    updates = 0
    books_checked = 0

    async def run() -> None:
        nonlocal updates, books_checked
        async with tickcast.Session(server.url, symbols, depth=5, encoding=encoding) as s:
            last: dict[str, int] = {}

            async def consume() -> None:
                nonlocal updates, books_checked
                async for item in s:
                    assert not isinstance(item, (tickcast.Gap, tickcast.ChecksumMismatch, tickcast.Disconnected)), item
                    if isinstance(item, tickcast.Snapshot):
                        last[item.sym] = item.seq
                    elif isinstance(item, (tickcast.Trade, tickcast.Quote, tickcast.BookUpdate)):
                        assert item.seq == last[item.sym] + 1
                        last[item.sym] = item.seq
                        updates += 1
                        if isinstance(item, tickcast.BookUpdate):
                            book_ = s.book(item.sym)
                            assert book_ is not None and book_.checksum() == item.checksum
                            assert len(book_.bids()) <= 5 and len(book_.asks()) <= 5
                            books_checked += 1
                        if updates >= 400 and books_checked >= 50:
                            return

            await asyncio.wait_for(consume(), 60)
            assert set(last) == set(symbols)
            assert s.stats.checksum_mismatches == 0 and s.stats.gaps == 0

    asyncio.run(run())


def test_the_blocking_stream(tickcast_server):
    server = tickcast_server(feed="synthetic", extra=["--symbols", "10", "--rate", "2000"])
    symbols = server.get("/symbols")[:2]
    with tickcast.stream(server.url, symbols=symbols, depth=10, encoding="json") as stream:
        items = list(itertools.islice(stream, 300))
        book_ = stream.book(symbols[0])
    assert isinstance(items[0], tickcast.Connected)
    assert {i.sym for i in items if isinstance(i, tickcast.Snapshot)} == set(symbols)
    assert not any(isinstance(i, (tickcast.Gap, tickcast.ChecksumMismatch)) for i in items)
    assert sum(isinstance(i, (tickcast.Trade, tickcast.Quote, tickcast.BookUpdate)) for i in items) > 250
    assert book_ is not None and book_.best_bid is not None


def test_a_refused_handshake_raises_with_the_servers_reason(tickcast_server):
    server = tickcast_server(feed="tcp", extra=["--replay-dir", str(BINANCE)])

    async def run() -> None:
        with pytest.raises(tickcast.HandshakeError) as e:
            await tickcast.connect_replay(server.url, "no-such-file.gz")
        assert e.value.status == 404

    asyncio.run(run())
    with pytest.raises(ValueError):
        tickcast.connect(server.url, encoding="xml")  # type: ignore[arg-type]


def test_a_stream_changes_its_symbols_while_it_runs(tickcast_server):
    server = tickcast_server(feed="synthetic", extra=["--symbols", "10", "--rate", "2000"])
    first, second = server.get("/symbols")[:2]
    with tickcast.stream(server.url, symbols=[first], encoding="protobuf") as stream:
        seen: list[Any] = []
        for item in stream:
            seen.append(item)
            if isinstance(item, tickcast.Snapshot) and item.sym == first:
                stream.subscribe([second])
            elif isinstance(item, tickcast.Snapshot) and item.sym == second:
                stream.unsubscribe([first])
            elif isinstance(item, tickcast.Ack) and item.op == "unsubscribe":
                break
        after = list(itertools.islice(stream, 100))
        assert stream.state(first) is None and stream.state(second) is not None
    assert not any(getattr(i, "sym", None) == first for i in after), "no update of an unsubscribed symbol"
    assert sum(getattr(i, "sym", None) == second for i in after) == 100

"""The Session's rules for seqs and books, against a scripted WebSocket
server (websockets' own) that sends exactly what each case needs: an
unannounced gap, a bad checksum, conflation and reset, a resume ack.
What the real server does with the same flows is in test_live.py and
test_resume.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

import tickcast
from tickcast import book_checksum

TS = 1_700_000_000_000_000_000


def snapshot(sym: str, seq: int, bids: list[list[float]], asks: list[list[float]]) -> dict[str, Any]:
    return {
        "type": "snapshot", "sym": sym, "seq": seq, "ts_event": TS, "ts_ingest": TS, "quote": None, "trade": None,
        "depth": 10, "book": {"bids": bids, "asks": asks, "checksum": book_checksum(bids, asks, 10)},
    }  # fmt: skip


def trade(sym: str, seq: int) -> dict[str, Any]:
    return {
        "type": "trade",
        "sym": sym,
        "seq": seq,
        "ts_event": TS + seq,
        "ts_ingest": TS,
        "px": 1.0,
        "sz": 1.0,
        "side": "buy",
    }


def book(sym: str, seq: int, bids: list[list[float]], checksum: int) -> dict[str, Any]:
    return {
        "type": "book",
        "sym": sym,
        "seq": seq,
        "ts_event": TS,
        "ts_ingest": TS,
        "bids": bids,
        "asks": [],
        "checksum": checksum,
    }


Script = Callable[[ServerConnection, "asyncio.Queue[dict[str, Any]]"], Awaitable[None]]


async def run_against(
    script: Script, until: Callable[[list[Any]], bool], **session_options: Any
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Runs a Session against a server playing ``script`` (once per
    connection) until ``until(items)``; returns the items yielded and the
    requests the server read."""
    requests: list[dict[str, Any]] = []

    async def handler(ws: ServerConnection) -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def read() -> None:
            async for text in ws:
                req = json.loads(text)
                requests.append(req)
                await inbox.put(req)

        reader = asyncio.create_task(read())
        try:
            await script(ws, inbox)
            await ws.wait_closed()  # stay open; the client ends the test
        finally:
            reader.cancel()

    async with serve(handler, "127.0.0.1", 0, close_timeout=1) as server:
        port = server.sockets[0].getsockname()[1]
        items: list[Any] = []
        options: dict[str, Any] = {"encoding": "json", "backoff_base": 0.01, "backoff_cap": 0.05, **session_options}
        async with tickcast.Session(f"ws://127.0.0.1:{port}", ["AAA"], **options) as session:

            async def consume() -> None:
                async for item in session:
                    items.append(item)
                    if until(items):
                        return

            await asyncio.wait_for(consume(), 20)
    return items, requests


async def send(ws: ServerConnection, *msgs: dict[str, Any]) -> None:
    for m in msgs:
        await ws.send(json.dumps(m))


def test_an_unannounced_gap_resubscribes_and_drops_updates_until_the_snapshot():
    async def script(ws: ServerConnection, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        assert (await inbox.get())["op"] == "subscribe"
        await send(ws, {"type": "ack", "op": "subscribe", "symbols": ["AAA"]}, snapshot("AAA", 5, [[1.0, 1.0]], []))
        await send(ws, trade("AAA", 6), trade("AAA", 8), trade("AAA", 9))  # 7 is missing
        assert (await inbox.get()) == {"op": "unsubscribe", "symbols": ["AAA"]}
        assert (await inbox.get()) == {"op": "subscribe", "symbols": ["AAA"]}
        await send(ws, snapshot("AAA", 20, [[1.0, 2.0]], []), trade("AAA", 21))

    items, _ = asyncio.run(run_against(script, lambda items: getattr(items[-1], "seq", 0) == 21))
    kinds = [(type(i).__name__, getattr(i, "seq", None)) for i in items]
    assert kinds == [
        ("Connected", None),
        ("Ack", None),
        ("Snapshot", 5),
        ("Trade", 6),
        ("Gap", None),
        ("Snapshot", 20),
        ("Trade", 21),
    ]
    assert items[4] == tickcast.Gap("AAA", 7, 8)


def test_a_checksum_mismatch_resubscribes():
    async def script(ws: ServerConnection, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        await inbox.get()
        good = book_checksum([[2.0, 1.0], [1.0, 1.0]], [], 10)
        await send(
            ws,
            snapshot("AAA", 1, [[1.0, 1.0]], []),
            book("AAA", 2, [[2.0, 1.0]], good),
            book("AAA", 3, [[3.0, 1.0]], 99),
        )
        assert (await inbox.get())["op"] == "unsubscribe"
        assert (await inbox.get())["op"] == "subscribe"
        await send(ws, snapshot("AAA", 3, [[3.0, 1.0]], []))

    items, _ = asyncio.run(
        run_against(
            script, lambda items: getattr(items[-1], "seq", 0) == 3 and isinstance(items[-1], tickcast.Snapshot)
        )
    )
    mismatch = [i for i in items if isinstance(i, tickcast.ChecksumMismatch)]
    assert len(mismatch) == 1 and (mismatch[0].seq, mismatch[0].checksum) == (3, 99)


def test_conflated_and_reset_take_the_snapshot_without_resubscribing():
    async def script(ws: ServerConnection, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        await inbox.get()
        await send(ws, snapshot("AAA", 1, [], []), trade("AAA", 2))
        await send(
            ws,
            {
                "type": "conflated",
                "symbols": [{"sym": "AAA", "from_seq": 3, "to_seq": 9, "trades": 7, "quotes": 0, "books": 0}],
            },
        )
        await send(ws, snapshot("AAA", 9, [], []), trade("AAA", 10))
        await send(
            ws,
            {"type": "reset", "sym": "AAA", "seq": 4, "reason": "epoch"},
            snapshot("AAA", 4, [], []),
            trade("AAA", 5),
        )

    items, requests = asyncio.run(
        run_against(script, lambda items: isinstance(items[-1], tickcast.Trade) and items[-1].seq == 5)
    )
    assert not any(isinstance(i, (tickcast.Gap, tickcast.ChecksumMismatch)) for i in items)
    assert [r["op"] for r in requests] == ["subscribe"], "no resubscribe"
    assert [getattr(i, "seq", None) for i in items if isinstance(i, (tickcast.Trade, tickcast.Snapshot))] == [
        1,
        2,
        9,
        10,
        4,
        5,
    ]


def test_a_reconnect_resumes_with_from_seq_and_the_last_epoch():
    connections = 0

    async def script(ws: ServerConnection, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        nonlocal connections
        connections += 1
        req = await inbox.get()
        if connections == 1:
            await send(
                ws,
                {"type": "ack", "op": "subscribe", "symbols": ["AAA"], "epoch": 77},
                snapshot("AAA", 3, [], []),
                trade("AAA", 4),
            )
            await ws.close(1001, "server shutting down")
        else:
            assert req == {"op": "subscribe", "symbols": ["AAA"], "from_seq": {"AAA": 4}, "epoch": 77}
            await send(
                ws,
                {"type": "ack", "op": "subscribe", "symbols": ["AAA"], "epoch": 77, "recovered": {"AAA": True}},
                trade("AAA", 5),
            )

    items, _ = asyncio.run(
        run_against(script, lambda items: isinstance(items[-1], tickcast.Trade) and items[-1].seq == 5)
    )
    connected = [i for i in items if isinstance(i, tickcast.Connected)]
    assert [c.resumed for c in connected] == [[], ["AAA"]]
    assert any(isinstance(i, tickcast.Disconnected) for i in items)
    assert [i.seq for i in items if isinstance(i, tickcast.Trade)] == [4, 5]
    assert not any(isinstance(i, tickcast.Snapshot) and i.seq > 3 for i in items), "resumed: no second snapshot"


def test_a_silent_server_trips_the_heartbeat_watchdog():
    async def script(ws: ServerConnection, inbox: asyncio.Queue[dict[str, Any]]) -> None:
        await inbox.get()
        await send(ws, snapshot("AAA", 1, [], []))
        ws.transport.pause_reading()  # no pong will ever be read, nor sent

    items, _ = asyncio.run(
        run_against(script, lambda items: isinstance(items[-1], tickcast.Disconnected), heartbeat_timeout=1.0)
    )
    assert "heartbeat" in items[-1].reason

"""Replays of the real Binance ETHUSDT capture (tests/data/binance) into
DataFrames and Arrow tables, and the replay controls.

The expected figures are computed here from the capture file itself
(gzip JSON lines: ``<recv_ns> <combined-stream message>``), not taken from
the server."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from functools import cache
from typing import Any

import pytest

import tickcast
from servers import BINANCE, Feed, quote, trade

CAPTURE = "ethusdt_20240808.gz"


@cache
def capture_trades() -> list[tuple[int, float, float]]:
    """(trade time ns, price, quantity) of every trade in the capture, in
    file order."""
    trades = []
    with gzip.open(BINANCE / CAPTURE, "rt") as f:
        for line in f:
            _, _, payload = line.rstrip("\n").partition(" ")
            msg = json.loads(payload)
            if msg.get("stream", "").endswith("@trade"):
                d = msg["data"]
                trades.append((d["T"] * 1_000_000, float(d["p"]), float(d["q"])))
    return trades


@pytest.fixture
def replay_server(tickcast_server):
    return tickcast_server(feed="synthetic", extra=["--replay-dir", str(BINANCE)])


def test_a_replay_into_pandas_has_every_trade_of_the_capture(replay_server):
    pd = pytest.importorskip("pandas")
    expected = capture_trades()
    assert len(expected) == 6_106
    tape = tickcast.fetch_replay(replay_server.url, CAPTURE)
    frames = tape.to_pandas()
    trades = frames.trades
    assert len(trades) == 6_106
    assert trades["px"].iloc[0] == expected[0][1] and trades["px"].iloc[-1] == expected[-1][1]
    assert trades["sz"].iloc[0] == expected[0][2] and trades["sz"].iloc[-1] == expected[-1][2]
    assert list(trades["px"]) == [px for _, px, _ in expected]
    # Nanosecond timestamps: the exact ints, and datetime64[ns] of them.
    assert str(trades["ts_event"].dtype) == "datetime64[ns, UTC]"
    assert trades["ts_event_ns"].dtype == "uint64"
    assert [int(x) for x in trades["ts_event_ns"]] == [ts for ts, _, _ in expected]
    assert trades["ts_event"].iloc[0] == pd.Timestamp(expected[0][0], unit="ns", tz="UTC")
    assert (trades["ts_event"].astype("int64").to_numpy() == trades["ts_event_ns"].astype("int64").to_numpy()).all()
    assert set(trades["sym"]) == {"ETHUSDT"} and set(trades["side"]) <= {"buy", "sell"}
    # Quotes and book levels come along, with gapless seqs over all kinds.
    assert len(frames.quotes) > 0 and len(frames.books) > 0
    assert set(frames.books["side"]) == {"bid", "ask"}
    seqs = sorted(m.seq for m in [*tape.trades, *tape.quotes, *tape.books])
    assert seqs == list(range(1, len(tape) + 1))
    assert set(frames.books["seq"]) <= {b.seq for b in tape.books}
    naive = tape.to_pandas(tz=None).trades
    assert str(naive["ts_event"].dtype) == "datetime64[ns]"


def test_a_replay_into_arrow(replay_server):
    pa = pytest.importorskip("pyarrow")
    expected = capture_trades()

    async def run() -> tickcast.Tape:
        async with tickcast.connect_replay(replay_server.url, CAPTURE, speed="max", encoding="protobuf") as r:
            tape = await asyncio.wait_for(r.collect(), 90)
            assert r.end is not None and r.end.reason == "end" and r.end.events == len(tape)
            return tape

    tables = asyncio.run(run()).to_arrow()
    trades = tables.trades
    assert trades.num_rows == 6_106
    assert trades.schema.field("ts_event").type == pa.timestamp("ns", tz="UTC")
    assert trades.schema.field("ts_event_ns").type == pa.uint64()
    assert trades.column("px")[0].as_py() == expected[0][1] and trades.column("px")[-1].as_py() == expected[-1][1]
    assert trades.column("ts_event_ns").to_pylist() == [ts for ts, _, _ in expected]


def test_a_window_and_a_symbol_filter(replay_server):
    start_ns = 1_723_161_374_000_000_000  # 2024-08-08T23:56:14Z
    end_ns = start_ns + 10_000_000_000
    with tickcast.replay(
        replay_server.url, CAPTURE, speed="max", start="2024-08-08T23:56:14Z", end=end_ns, symbols=["ETHUSDT"], depth=5
    ) as r:
        items = list(r)
        end = r.end
    assert end is not None and end.reason == "to"
    assert isinstance(items[0], tickcast.Snapshot) and items[0].depth == 5
    trades = [m for m in items if isinstance(m, tickcast.Trade)]
    expected = [t for t in capture_trades() if start_ns <= t[0] <= end_ns]
    # The window is cut in recording order, so a trade whose own time is a
    # little off the window's edge may come with its neighbours.
    assert abs(len(trades) - len(expected)) <= 5 and len(trades) > 0


def test_pause_resume_speed_and_seek(replay_server):
    async def run() -> None:
        async with tickcast.connect_replay(replay_server.url, CAPTURE, speed=2, encoding="json") as r:
            first = await r.recv(timeout=20)
            assert isinstance(first, tickcast.Trade | tickcast.Quote | tickcast.BookUpdate | tickcast.Snapshot)

            async def until(pred: Any, timeout: float = 20) -> list[Any]:
                out: list[Any] = []
                deadline = time.monotonic() + timeout
                while True:
                    msg = await r.recv(timeout=max(deadline - time.monotonic(), 0.01))
                    out.append(msg)
                    if pred(msg):
                        return out

            await r.pause()
            await until(lambda m: isinstance(m, tickcast.Ack) and m.op == "pause")
            # Paused: once what was already queued is read, nothing comes.
            deadline = time.monotonic() + 20
            while True:
                try:
                    await r.recv(timeout=0.5)
                except asyncio.TimeoutError:
                    break
                assert time.monotonic() < deadline, "the replay never went quiet while paused"
            await r.resume()
            await until(lambda m: isinstance(m, tickcast.Ack) and m.op == "resume")
            await r.seek("2024-08-08T23:58:00Z")
            seen = await until(lambda m: isinstance(m, tickcast.Snapshot))
            assert any(isinstance(m, tickcast.Ack) and m.op == "seek" for m in seen)
            snap = seen[-1]
            assert snap.ts_event <= 1_723_161_480_000_000_000 and snap.bids and snap.asks
            await r.set_speed("max")
            rest = await until(lambda m: isinstance(m, tickcast.ReplayEnd), timeout=60)
            updates = [m for m in rest if isinstance(m, tickcast.Trade | tickcast.Quote | tickcast.BookUpdate)]
            assert updates[0].seq == snap.seq + 1
            assert all(b.seq == a.seq + 1 for a, b in zip(updates, updates[1:], strict=False)), "gapless after the seek"
            assert rest[-1].events == len(updates)

    asyncio.run(run())


def test_a_recorded_live_window_into_pandas(tickcast_server, tmp_path):
    """Ticks fed to a recording server (--record) come back from its tick
    log, replayed by a second server, as exactly those trades and quotes."""
    pd = pytest.importorskip("pandas")
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    recorder = tickcast_server(feed="tcp", extra=["--record", str(recordings / "live")])
    feed = Feed(recorder.feed_port)
    base = 1_750_000_000_000_000_000
    sent = []
    for n in range(200):
        if n % 2 == 0:
            sent.append(("trade", base + n * 1_000_000, 50.0 + n / 64))
            feed.send(trade("SOLUSDT", 50.0 + n / 64, 0.5 + n, "sell", ts_event=base + n * 1_000_000))
        else:
            feed.send(quote("SOLUSDT", 49.0 + n / 64, 1.0, 51.0 + n / 64, 2.0, ts_event=base + n * 1_000_000))
    feed.close()
    deadline = time.monotonic() + 20
    while (recorder.metric("tickcast_updates_published_total") or 0) < 200:
        assert time.monotonic() < deadline, "the recorder never sequenced 200 ticks"
        time.sleep(0.05)
    recorder.terminate()  # a clean stop: every tick is in the log

    replayer = tickcast_server(feed="synthetic", extra=["--replay-dir", str(recordings)])
    # A window: the 50th to the 149th tick, by event time.
    frames = tickcast.fetch_replay(
        replayer.url, "live", start=base + 50 * 1_000_000, end=base + 149 * 1_000_000, encoding="protobuf"
    ).to_pandas()
    expected = [(ts, px) for kind, ts, px in sent if base + 50 * 1_000_000 <= ts <= base + 149 * 1_000_000]
    assert list(zip(frames.trades["ts_event_ns"].astype(int), frames.trades["px"], strict=True)) == expected
    assert len(frames.quotes) == 50
    assert list(frames.trades["seq"]) == list(range(51, 151, 2)), "seqs are the live server's"
    assert frames.trades["ts_event"].iloc[0] == pd.Timestamp(base + 50 * 1_000_000, unit="ns", tz="UTC")

"""The symbol universe, checked from the outside: symbols a server declares
(``--symbols-file``, or a replay feed's recording) can be subscribed to
before their first tick.

A real server binary, a real TCP feed handler and WebSocket clients on
third-party libraries, as in test_protocol.py. What a client of a declared
but silent symbol gets: an ack, a seq-0 snapshot (no quote, no trade, an
empty book), then the symbol's first update as seq 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tickcast_client import ENCODINGS, REPO_ROOT, WsClient, assert_same_float, quote, subscribe_ack

T0 = 1_700_000_000_123_456_789
ETH = REPO_ROOT / "tests" / "data" / "binance" / "ethusdt_20240808.gz"
DECLARED = ["AAPL", "MSFT", "BRK.B", "ESH1"]


@pytest.fixture(params=ENCODINGS)
def enc(request) -> str:
    return request.param


def symbols_file(tmp_path: Path, form: str, names=DECLARED) -> Path:
    """A symbols file in ``form``: "lines" (with comments, blank lines,
    padding and a duplicate) or "json" (what GET /symbols returns)."""
    if form == "lines":
        body = "# declared for the test\n\n" + "".join(f"  {n}\t\n" for n in names) + f"{names[0]}\n# end\n"
        path = tmp_path / "symbols.txt"
    else:
        body = json.dumps(list(names))
        path = tmp_path / "symbols.json"
    path.write_text(body)
    return path


def assert_empty_snapshot(snap: dict, sym: str) -> None:
    assert snap["type"] == "snapshot", snap
    assert (snap["sym"], snap["seq"], snap["quote"], snap["trade"]) == (sym, 0, None, None), snap
    assert snap["book"] == {"bids": [], "asks": [], "checksum": 0}, snap


def subscribe_before_first_tick(client: WsClient, sym: str) -> None:
    client.subscribe(sym)
    assert subscribe_ack(client.recv_type("ack")) == {"type": "ack", "op": "subscribe", "symbols": [sym]}
    assert_empty_snapshot(client.recv(), sym)


def test_a_declared_symbol_is_subscribable_before_its_first_tick(tickcast, tmp_path, enc):
    server = tickcast(extra=["--symbols-file", str(symbols_file(tmp_path, "lines"))])
    client = server.connect(enc)
    subscribe_before_first_tick(client, "AAPL")
    assert server.metric("tickcast_updates_published_total") == 0

    # The first tick of AAPL is seq 1, with exactly the values sent.
    feed = server.feed()
    feed.send(quote("AAPL", 189.51, 0.1, 189.52, 1 / 3, ts_event=T0))
    msg = client.recv()
    assert (msg["type"], msg["sym"], msg["seq"], msg["ts_event"]) == ("quote", "AAPL", 1, T0), msg
    for field, value in (("bid", 189.51), ("bid_sz", 0.1), ("ask", 189.52), ("ask_sz", 1 / 3)):
        assert_same_float(msg[field], value, f"quote.{field}")
    # A late joiner sees the same state at seq 1.
    late = server.connect(enc)
    snap = late.subscribe_and_snapshots("AAPL")["AAPL"]
    assert snap["seq"] == 1 and snap["quote"] is not None, snap


def test_a_symbol_neither_declared_nor_sent_is_unknown(tickcast, tmp_path, enc):
    server = tickcast(extra=["--symbols-file", str(symbols_file(tmp_path, "lines"))])
    client = server.connect(enc)
    client.subscribe("NOPE")
    err = client.recv_type("error")
    assert (err["code"], err["symbols"]) == ("unknown_symbol", ["NOPE"]), err
    # Declared and unknown mixed: the declared one is acked, then the error,
    # then its seq-0 snapshot.
    client.subscribe("MSFT", "NOPE")
    assert subscribe_ack(client.recv_type("ack")) == {"type": "ack", "op": "subscribe", "symbols": ["MSFT"]}
    err = client.recv_type("error")
    assert (err["code"], err["symbols"]) == ("unknown_symbol", ["NOPE"]), err
    assert_empty_snapshot(client.recv(), "MSFT")
    assert server.metric('tickcast_client_errors_total{code="unknown_symbol"}') == 2


@pytest.mark.parametrize("form", ["lines", "json"])
def test_symbols_lists_the_declared_universe_in_file_order(tickcast, tmp_path, form):
    server = tickcast(extra=["--symbols-file", str(symbols_file(tmp_path, form))])
    assert server.symbols() == DECLARED
    assert server.metric("tickcast_symbols") == len(DECLARED)
    # A symbol the feed sends later joins the universe after them.
    feed = server.feed()
    feed.send(quote("NEWCO", 1.0, 1.0, 1.5, 1.0, ts_event=T0))
    server.wait_published(1)
    assert server.symbols() == DECLARED + ["NEWCO"]
    # /symbols is itself a symbols file: a second server takes it as it is.
    saved = tmp_path / "saved.json"
    status, _, body = server.http("/symbols")
    assert status == 200
    saved.write_bytes(body)
    second = tickcast(extra=["--symbols-file", str(saved)])
    assert second.symbols() == DECLARED + ["NEWCO"]
    client = second.connect("json")
    subscribe_before_first_tick(client, "NEWCO")


def test_without_a_universe_symbols_appear_as_the_feed_sends_them(tickcast):
    server = tickcast()
    assert server.symbols() == []
    client = server.connect("json")
    client.subscribe("AAPL")
    assert client.recv_type("error")["code"] == "unknown_symbol"


def test_a_replay_feed_declares_its_recording_before_the_first_tick(tickcast, tmp_path, enc):
    # --from after the recording's end: every event is folded away and none
    # is published, so ETHUSDT is known only because the replay declared it.
    declared = symbols_file(tmp_path, "lines", ["AAPL"])
    server = tickcast(
        feed=f"replay:{ETH}",
        extra=["--from", "2030-01-01T00:00:00Z", "--symbols-file", str(declared)],
    )
    assert server.symbols() == ["AAPL", "ETHUSDT"]
    client = server.connect(enc)
    subscribe_before_first_tick(client, "ETHUSDT")
    assert server.metric("tickcast_updates_published_total") == 0


def test_a_replay_lists_its_symbol_at_once_and_plays_on_from_the_snapshot(tickcast):
    server = tickcast(feed=f"replay:{ETH}", extra=["--speed", "1"])
    # Checked the moment /healthz first answered (start_server waits for it).
    assert server.symbols() == ["ETHUSDT"]
    client = server.connect("json")
    snap = client.subscribe_and_snapshots("ETHUSDT")["ETHUSDT"]
    update = client.recv()
    assert (update["sym"], update["seq"]) == ("ETHUSDT", snap["seq"] + 1), (snap, update)

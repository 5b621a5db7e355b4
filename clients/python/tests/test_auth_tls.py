"""Tokens and TLS: the package against a server with JWT authentication
on ``wss://`` (a test CA made here with trustme, tokens signed here with
PyJWT)."""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

import pytest

import tickcast
from servers import BINANCE, TIMEOUT, Feed, trade

jwt = pytest.importorskip("jwt")
trustme = pytest.importorskip("trustme")

SECRET = "a-test-secret-that-is-at-least-32-bytes-long"


def token(**claims: Any) -> str:
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, SECRET, algorithm="HS256")


@pytest.fixture
def tls_server(tickcast_server, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert_pem, key_pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(key_pem))
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    extra = ["--tls-cert", str(cert_pem), "--tls-key", str(key_pem), "--auth-jwt-secret", SECRET]
    server = tickcast_server(feed="tcp", extra=[*extra, "--replay-dir", str(BINANCE)], tls_context=context)
    return server, context


def test_a_session_over_wss_with_a_token(tls_server):
    server, context = tls_server
    url = f"wss://localhost:{server.port}"
    feed = Feed(server.feed_port)
    feed.send(trade("BTCUSDT", 10.5, 2.0))
    deadline = time.monotonic() + TIMEOUT
    while (server.metric("tickcast_updates_published_total") or 0) < 1:  # the symbol exists, at seq 1
        assert time.monotonic() < deadline, "the first tick was never sequenced"
        time.sleep(0.02)

    async def run() -> None:
        with pytest.raises(tickcast.HandshakeError) as refused:
            await tickcast.connect(url, ssl=context)
        assert refused.value.status == 401
        async with tickcast.Session(url, ["BTCUSDT"], token=token(symbols=["BTC*"]), ssl=context) as s:

            async def first_trade() -> tickcast.Trade:
                async for item in s:
                    if isinstance(item, tickcast.Snapshot):
                        feed.send(trade("BTCUSDT", 11.25, 1.0))
                    if isinstance(item, tickcast.Trade):
                        return item
                raise AssertionError("the session ended")

            got = await asyncio.wait_for(first_trade(), TIMEOUT)
            assert (got.sym, got.seq, got.px) == ("BTCUSDT", 2, 11.25)

    asyncio.run(run())
    feed.close()


def test_a_replay_needs_the_replay_claim(tls_server):
    server, context = tls_server
    url = f"wss://localhost:{server.port}"
    with pytest.raises(tickcast.HandshakeError) as refused:
        tickcast.fetch_replay(url, "ethusdt_20240808.gz", token=token(symbols=["*"]), ssl=context)
    assert refused.value.status == 403
    tape = tickcast.fetch_replay(
        url, "ethusdt_20240808.gz", start="2024-08-08T23:56:14Z", end="2024-08-08T23:56:24Z",
        token=token(symbols=["*"], replay=True), ssl=context,
    )  # fmt: skip
    assert len(tape.trades) > 0 and tape.snapshots

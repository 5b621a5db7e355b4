"""The asyncio client: one WebSocket connection to a tickcast server.

`connect` opens a live connection (``/ws``), `connect_replay` a private
replay (``/replay``). Both yield typed messages (`tickcast.messages`)
decoded from the chosen encoding::

    async with tickcast.connect("ws://127.0.0.1:8080", encoding="msgpack") as c:
        await c.subscribe(["AAPL"], depth=10)
        async for msg in c:
            print(msg)

A `Connection` is one socket: when it drops, it is gone. For a subscription
that reconnects and resumes by itself, use `tickcast.Session`.

Requests are sent and not awaited: their `Ack` (or `Error`) arrives in the
stream, ahead of queued market data (docs/PROTOCOL.md, "Ordering").
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable, Mapping
from ssl import SSLContext
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import InvalidStatus
from websockets.protocol import State

from .codec import Depth, Encoding, check_depth, check_encoding, decode, encode_request, subscribe_request
from .errors import ConnectionClosed, HandshakeError
from .messages import Message, ReplayEnd
from .tape import Tape

#: Seconds allowed for the TCP connect, TLS and WebSocket handshake.
DEFAULT_OPEN_TIMEOUT = 10.0

#: Frames the websockets library buffers before it stops reading the socket
#: (TCP backpressure: a client that reads slower than the server sends is
#: then conflated, or closed, by the server rather than buffering without
#: bound here).
DEFAULT_MAX_QUEUE = 1024

# asyncio.timeout() arrived in Python 3.11.
_HAS_TIMEOUT = sys.version_info >= (3, 11)

# websockets >= 15 detects proxies from the environment unless told not to;
# older versions have no such parameter.
_NO_PROXY: dict[str, Any] = {"proxy": None} if "proxy" in inspect.signature(ws_connect).parameters else {}


def endpoint_url(url: str, path: str, query: Mapping[str, str]) -> str:
    """The URL of endpoint ``path`` (``/ws`` or ``/replay``) of the server
    at ``url`` (``ws://``, ``wss://``, ``http://`` or ``https://``), with
    ``query`` added.

    A URL without a path gets ``path``; one ending in ``/ws`` or
    ``/replay`` (behind a proxy prefix, say) gets that last part replaced;
    any other path is taken as the endpoint itself."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL: {url!r} (use ws://HOST:PORT or wss://HOST:PORT)")
    given = parts.path.rstrip("/")
    for endpoint in ("/ws", "/replay"):
        if given.endswith(endpoint):
            given = given[: -len(endpoint)] + path
            break
    else:
        given = given or path
    q = "&".join(p for p in (parts.query, urlencode(query, safe=",:")) if p)
    return urlunsplit((scheme, parts.netloc, given, q, ""))


async def _open(
    url: str, token: str | None, ssl: SSLContext | None, open_timeout: float, max_queue: int | None
) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # wss:// without a context of the caller's: the system's trust store.
    tls: dict[str, Any] = {"ssl": ssl} if ssl is not None else {}
    try:
        return await ws_connect(
            url,
            additional_headers=headers,
            compression=None,
            open_timeout=open_timeout,
            # The server pings; the library answers. Liveness is the caller's
            # (a Session's watchdog), not a library timer.
            ping_interval=None,
            ping_timeout=None,
            close_timeout=2,
            max_size=None,
            max_queue=max_queue,
            **_NO_PROXY,
            **tls,
        )
    except InvalidStatus as e:
        body = e.response.body.decode("utf-8", "replace") if e.response.body else ""
        raise HandshakeError(e.response.status_code, body) from None


class Connection:
    """One open connection to a tickcast server: send requests, receive
    typed messages. Use `connect` to make one.

    Iterating (``async for``) yields every message; it ends when the
    server closes normally (1000, or 1001 at shutdown) and raises
    `ConnectionClosed` for any other close."""

    def __init__(self, ws: ClientConnection, encoding: Encoding, url: str) -> None:
        self._ws = ws
        #: The encoding of server messages on this connection.
        self.encoding: Encoding = encoding
        #: The URL this connection was opened with.
        self.url = url
        #: ``time.monotonic()`` when the last message arrived (or the
        #: connection opened).
        self.last_message_at = time.monotonic()

    # -- requests

    async def send(self, request: Mapping[str, Any]) -> None:
        """Sends a raw request object (``{"op": ...}``)."""
        try:
            await self._ws.send(encode_request(request))
        except WsConnectionClosed as e:
            raise _closed(e) from None

    async def subscribe(
        self,
        symbols: Iterable[str],
        depth: Depth | None = None,
        *,
        from_seq: Mapping[str, int] | None = None,
        epoch: int | None = None,
        from_ts: int | str | None = None,
    ) -> None:
        """Subscribes to ``symbols`` (``["*"]``: every symbol) at ``depth``
        book levels per side (server default when ``None``).

        ``from_seq`` (symbol -> last seq held) and ``epoch`` (from the last
        `Ack`) resume instead of taking a snapshot, where the server's
        history allows (see the README's "Resume"). ``from_ts`` rewinds a
        recording server to that time (ns or RFC 3339)."""
        await self.send(subscribe_request(symbols, depth, from_seq=from_seq, epoch=epoch, from_ts=from_ts))

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        """Unsubscribes ``symbols`` (``["*"]``: every subscription)."""
        if isinstance(symbols, str):
            raise TypeError("symbols must be a list of symbols, not a string")
        await self.send({"op": "unsubscribe", "symbols": list(symbols)})

    async def refresh(self, token: str) -> None:
        """Replaces the session's token before it expires (after a
        `TokenExpiring`)."""
        await self.send({"op": "refresh", "token": token})

    async def start_ping(self) -> asyncio.Future[float]:
        """Sends a ping and returns at once; the future resolves with the
        round trip in seconds when the pong arrives."""
        try:
            waiter = await self._ws.ping()
        except WsConnectionClosed as e:
            raise _closed(e) from None
        return waiter  # type: ignore[return-value]

    async def ping(self, timeout: float = 10.0) -> float:
        """Pings the server; returns the round trip in seconds. Raises
        ``TimeoutError`` without a pong within ``timeout``."""
        try:
            waiter = await self._ws.ping()
            return await asyncio.wait_for(waiter, timeout)
        except WsConnectionClosed as e:
            raise _closed(e) from None

    # -- receiving

    async def recv(self, timeout: float | None = None) -> Message:
        """The next message. Raises ``TimeoutError`` when none arrives
        within ``timeout`` seconds (the connection stays usable), and
        `ConnectionClosed` once the connection has ended."""
        try:
            if timeout is None:
                data = await self._ws.recv()
            elif _HAS_TIMEOUT:  # no task per call, unlike wait_for before 3.12
                async with asyncio.timeout(timeout):  # type: ignore[attr-defined,unused-ignore]
                    data = await self._ws.recv()
            else:
                data = await asyncio.wait_for(self._ws.recv(), timeout)
        except WsConnectionClosed as e:
            raise _closed(e) from None
        self.last_message_at = time.monotonic()
        return decode(self.encoding, data)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self.recv()
        except ConnectionClosed as e:
            if e.code in (1000, 1001):
                raise StopAsyncIteration from None
            raise

    # -- lifecycle

    @property
    def closed(self) -> bool:
        """Whether the connection has ended."""
        return self._ws.state is State.CLOSED

    async def close(self) -> None:
        """Closes the connection (1000), waiting at most 2 s for the server."""
        await self._ws.close()

    def abort(self) -> None:
        """Drops the TCP connection at once, without a close handshake (as a
        network failure would)."""
        self._ws.transport.abort()

    async def __aenter__(self: _C) -> _C:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


_C = TypeVar("_C", bound=Connection)


def _closed(e: WsConnectionClosed) -> ConnectionClosed:
    """Our exception for the library's: the close frame the server sent, if
    any (none when the connection dropped, or when we closed it)."""
    if e.rcvd is not None:
        return ConnectionClosed(e.rcvd.code, e.rcvd.reason)
    return ConnectionClosed(None, "no close frame received")


class ReplayConnection(Connection):
    """A private replay (``/replay``): the recording's messages, paced, with
    controls. Use `connect_replay` to make one.

    Each control is answered by an `Ack` naming it (or an `Error`) in the
    stream. When the recording runs out (or passes ``to``) a `ReplayEnd`
    arrives and the connection stays open for a `seek`."""

    #: The recording's name (``?source=``).
    source: str = ""
    #: The last `ReplayEnd` that `until_end` met.
    end: ReplayEnd | None = None

    async def pause(self) -> None:
        """Stops the replay where it is."""
        await self.send({"op": "pause"})

    async def resume(self) -> None:
        """Goes on after `pause`."""
        await self.send({"op": "resume"})

    async def set_speed(self, speed: float | Literal["max"]) -> None:
        """Changes the pace: a factor of real time (0.001 to 1,000,000) or
        ``"max"``."""
        await self.send({"op": "speed", "value": speed})

    async def seek(self, ts: int | str) -> None:
        """Jumps to event time ``ts`` (ns since the epoch, or RFC 3339): a
        snapshot of each symbol with state then, then updates from there."""
        await self.send({"op": "seek", "ts": ts})

    async def until_end(self) -> AsyncIterator[Message]:
        """Yields messages up to the next `ReplayEnd`, which is kept in
        `end` and not yielded."""
        async for msg in self:
            if isinstance(msg, ReplayEnd):
                self.end = msg
                return
            yield msg

    async def collect(self) -> Tape:
        """Every message up to the next `ReplayEnd`, as a `tickcast.Tape`
        (``tape.to_pandas()``, ``tape.to_arrow()``)."""
        tape = Tape()
        async for msg in self.until_end():
            tape.add(msg)
        return tape


_T = TypeVar("_T", bound=Connection)


class _Connect(Generic[_T]):
    """What `connect` and `connect_replay` return: await it for the
    connection, or use it as ``async with``, which closes it at the end."""

    def __init__(self, opener: Callable[[], Coroutine[Any, Any, _T]]) -> None:
        self._opener = opener
        self._conn: _T | None = None

    def __await__(self) -> Generator[Any, None, _T]:
        return self._opener().__await__()

    async def __aenter__(self) -> _T:
        self._conn = await self._opener()
        return self._conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._conn is not None:
            await self._conn.close()


def connect(
    url: str,
    *,
    encoding: Encoding = "msgpack",
    token: str | None = None,
    slow: Literal["conflate", "disconnect"] | None = None,
    ssl: SSLContext | None = None,
    open_timeout: float = DEFAULT_OPEN_TIMEOUT,
    max_queue: int | None = DEFAULT_MAX_QUEUE,
) -> _Connect[Connection]:
    """Opens a live connection to ``url`` (``ws://HOST:PORT``; ``/ws`` is
    added when the URL names no path).

    ``encoding``: ``msgpack`` (default), ``protobuf`` or ``json``.
    ``token``: a JWT for a server with authentication (sent as
    ``Authorization: Bearer``). ``slow``: what the server does when this
    client falls behind (``conflate``, its default, or ``disconnect``).
    ``ssl``: the TLS context for ``wss://`` (default: the system's trust
    store). Raises `HandshakeError` when the server refuses."""
    enc = check_encoding(encoding)
    query = {"encoding": enc, **({"slow": slow} if slow else {})}
    full = endpoint_url(url, "/ws", query)

    async def opener() -> Connection:
        ws = await _open(full, token, ssl, open_timeout, max_queue)
        return Connection(ws, enc, full)

    return _Connect(opener)


def replay_url(
    url: str,
    source: str,
    *,
    encoding: Encoding = "msgpack",
    start: int | str | None = None,
    end: int | str | None = None,
    speed: float | str | None = None,
    symbols: Iterable[str] | None = None,
    depth: Depth | None = None,
) -> str:
    """The ``/replay`` URL of a replay of ``source`` (see `connect_replay`)."""
    query: dict[str, str] = {"source": source, "encoding": check_encoding(encoding)}
    if start is not None:
        query["from"] = str(start)
    if end is not None:
        query["to"] = str(end)
    if speed is not None:
        query["speed"] = str(speed)
    if symbols is not None:
        if isinstance(symbols, str):
            raise TypeError("symbols must be a list of symbols, not a string")
        query["symbols"] = ",".join(symbols)
    if depth is not None:
        query["depth"] = str(check_depth(depth))
    return endpoint_url(url, "/replay", query)


def connect_replay(
    url: str,
    source: str,
    *,
    encoding: Encoding = "msgpack",
    start: int | str | None = None,
    end: int | str | None = None,
    speed: float | str | None = None,
    symbols: Iterable[str] | None = None,
    depth: Depth | None = None,
    token: str | None = None,
    ssl: SSLContext | None = None,
    open_timeout: float = DEFAULT_OPEN_TIMEOUT,
    max_queue: int | None = DEFAULT_MAX_QUEUE,
) -> _Connect[ReplayConnection]:
    """Opens a private replay of recording ``source`` (a name in the
    server's ``--replay-dir``).

    ``start``/``end``: the event-time window (the protocol's ``from`` and
    ``to``: ns since the epoch or RFC 3339); ``speed``: a factor of real
    time or ``"max"`` (server default 1); ``symbols``: only these;
    ``depth``: book levels per side; ``token`` and ``ssl`` as for
    `connect`. Raises `HandshakeError` when the server refuses (404 unknown
    source, 400 bad parameter, 403 a token without the ``replay``
    claim, ...)."""
    full = replay_url(url, source, encoding=encoding, start=start, end=end, speed=speed, symbols=symbols, depth=depth)
    enc = check_encoding(encoding)

    async def opener() -> ReplayConnection:
        ws = await _open(full, token, ssl, open_timeout, max_queue)
        conn = ReplayConnection(ws, enc, full)
        conn.source = source
        return conn

    return _Connect(opener)

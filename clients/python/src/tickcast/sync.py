"""The blocking API: plain iterators over a live stream or a replay, for
scripts and notebooks that do not use asyncio::

    for msg in tickcast.stream("ws://127.0.0.1:8080", symbols=["AAPL"]):
        print(msg)

Each iterator runs the asyncio client (a `Session` or a
`ReplayConnection`) on an event loop in a background thread of its own and
hands messages over through a bounded queue: while the caller does not
iterate, the queue fills, the client stops reading, and the server sees a
slow reader (it conflates a live stream, and slows a replay down).
Closing the iterator (``close()``, a ``with`` block, or dropping it)
stops the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from ssl import SSLContext
from types import TracebackType
from typing import Any, Generic, Literal, TypeVar

from .book import OrderBook
from .client import ReplayConnection, connect_replay
from .codec import Depth, Encoding
from .messages import Message, ReplayEnd
from .session import Session, SessionItem, SymbolState
from .tape import Tape

T = TypeVar("T")
T2 = TypeVar("T2")
R = TypeVar("R")

#: Messages handed over between the client thread and the caller.
DEFAULT_BUFFER = 4096


class _End:
    """The producer finished (``error`` is why, if it failed)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class _Bridge(Generic[R, T]):
    """An event loop in a background thread that opens a resource ``R``
    and pumps its async iterator of ``T`` into a bounded queue."""

    def __init__(
        self,
        open_resource: Callable[[], Awaitable[R]],
        iterate: Callable[[R], AsyncIterator[T]],
        close_resource: Callable[[R], Awaitable[None]],
        buffer: int,
        open_timeout: float,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tickcast-client", daemon=True)
        self._thread.start()
        self._queue: queue.Queue[T | _End] = queue.Queue(buffer)
        self._close_resource = close_resource
        self._finished = False
        self._closed = False
        # The producer sleeps on `_space` while the queue is full; the
        # consumer wakes it after taking an item (see `_put`).
        self._space: asyncio.Event | None = None
        self._producer_waiting = False
        try:
            self.resource: R = self.call(open_resource(), timeout=open_timeout)
        except BaseException:
            self._stop_loop()
            raise
        self._pump_future = asyncio.run_coroutine_threadsafe(self._pump(iterate(self.resource)), self._loop)

    def call(self, coro: Coroutine[Any, Any, T2] | Awaitable[T2], timeout: float | None = 10.0) -> T2:
        """Runs ``coro`` on the client's loop; returns its result."""

        async def run() -> T2:
            return await coro

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    async def _pump(self, items: AsyncIterator[T]) -> None:
        self._space = asyncio.Event()
        try:
            async for item in items:
                await self._put(item)
        except asyncio.CancelledError:
            raise  # close(): the consumer is told by `_finished`
        except BaseException as e:  # handed to the consumer, raised there
            await self._put(_End(e))
        else:
            await self._put(_End(None))

    async def _put(self, item: T | _End) -> None:
        assert self._space is not None
        while not self._closed:
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                # Clear and flag before the re-check: a consumer that takes
                # an item after the re-check sees the flag and wakes us.
                self._space.clear()
                self._producer_waiting = True
                if not self._queue.full():
                    continue
                with contextlib.suppress(asyncio.TimeoutError):  # re-check now and then, as a backstop
                    await asyncio.wait_for(self._space.wait(), 1.0)

    def next(self) -> T:
        """The next item; ``StopIteration`` at the end; the producer's
        error, if it failed."""
        if self._finished:
            raise StopIteration
        while True:
            try:
                item = self._queue.get(timeout=0.5)  # wakes for Ctrl-C now and then
                break
            except queue.Empty:
                continue
        if self._producer_waiting:
            self._producer_waiting = False
            self._loop.call_soon_threadsafe(self._wake)
        if isinstance(item, _End):
            self._finished = True
            if item.error is not None:
                raise item.error
            raise StopIteration
        return item

    def _wake(self) -> None:
        if self._space is not None:
            self._space.set()

    def close(self) -> None:
        """Stops the producer, closes the resource, and stops the thread."""
        if self._closed or not self._thread.is_alive():
            return
        self._closed = True
        self._finished = True
        self._pump_future.cancel()
        with contextlib.suppress(Exception):  # closing is best effort; the loop goes away anyway
            self.call(self._close_resource(self.resource), timeout=5)
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()


class BlockingStream(Iterator[SessionItem]):
    """A `Session` as a plain iterator; see `stream`."""

    def __init__(self, session: Session, buffer: int = DEFAULT_BUFFER) -> None:
        async def open_session() -> Session:
            return session

        def iterate(s: Session) -> AsyncIterator[SessionItem]:
            return s.__aiter__()

        async def close_session(s: Session) -> None:
            await s.close()

        #: The underlying asyncio session (touch it only through `call`).
        self.session = session
        self._bridge: _Bridge[Session, SessionItem] = _Bridge(open_session, iterate, close_session, buffer, 10.0)

    def __next__(self) -> SessionItem:
        return self._bridge.next()

    def __iter__(self) -> BlockingStream:
        return self

    def book(self, sym: str) -> OrderBook | None:
        """A copy of ``sym``'s verified book, taken on the client's thread
        (it may run ahead of the messages read, by what the buffer holds)."""

        def copy() -> OrderBook | None:
            book = self.session.book(sym)
            return book.copy() if book is not None else None

        return self._bridge.call(_value(copy))

    def state(self, sym: str) -> SymbolState | None:
        """A copy of what the session holds of ``sym`` (see
        `Session.state`)."""

        def copy() -> SymbolState | None:
            st = self.session.state(sym)
            if st is None:
                return None
            return dataclasses.replace(st, book=st.book.copy() if st.book is not None else None)

        return self._bridge.call(_value(copy))

    def subscribe(self, symbols: Iterable[str]) -> None:
        """Adds symbols to the session."""
        self._bridge.call(self.session.subscribe(list(symbols)))

    def unsubscribe(self, symbols: Iterable[str]) -> None:
        """Removes symbols from the session."""
        self._bridge.call(self.session.unsubscribe(list(symbols)))

    def drop_connection(self) -> None:
        """Drops the connection; the session reconnects and resumes."""
        self._bridge.call(_value(self.session.drop_connection))

    def close(self) -> None:
        """Closes the session and stops its thread."""
        self._bridge.close()

    def __enter__(self) -> BlockingStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        _close_quietly(getattr(self, "_bridge", None))


def _close_quietly(bridge: _Bridge[Any, Any] | None) -> None:
    """Closes an iterator's bridge when the iterator is dropped unclosed
    (say, after a ``break``), so its thread and socket do not linger."""
    if bridge is not None:
        with contextlib.suppress(Exception):
            bridge.close()


async def _value(fn: Callable[[], T]) -> T:
    """``fn()`` evaluated on the client's loop (the session's state lives
    there)."""
    return fn()


def stream(
    url: str,
    symbols: Iterable[str],
    *,
    depth: Depth | None = None,
    encoding: Encoding = "msgpack",
    buffer: int = DEFAULT_BUFFER,
    **session_options: Any,
) -> BlockingStream:
    """A resilient live subscription as a blocking iterator: the messages
    and session events of a `Session` (same options: ``token``,
    ``backoff_base``, ``backoff_cap``, ``heartbeat_timeout``, ``resume``,
    ``verify_books``, ...). It never ends by itself; ``close()`` it or
    break out of a ``with`` block."""
    session = Session(url, symbols, depth=depth, encoding=encoding, **session_options)
    return BlockingStream(session, buffer)


class BlockingReplay(Iterator[Message]):
    """A `ReplayConnection` as a plain iterator; see `replay`."""

    def __init__(
        self, url: str, source: str, *, until_end: bool, open_timeout: float, buffer: int, **options: Any
    ) -> None:
        async def open_replay() -> ReplayConnection:
            return await connect_replay(url, source, open_timeout=open_timeout, **options)

        def iterate(r: ReplayConnection) -> AsyncIterator[Message]:
            return r.until_end() if until_end else r.__aiter__()

        async def close_replay(r: ReplayConnection) -> None:
            await r.close()

        self._bridge: _Bridge[ReplayConnection, Message] = _Bridge(
            open_replay, iterate, close_replay, buffer, open_timeout + 5
        )
        #: The underlying asyncio connection.
        self.connection = self._bridge.resource

    @property
    def end(self) -> ReplayEnd | None:
        """The `ReplayEnd` that ended the iteration (with ``until_end``)."""
        return self.connection.end

    def __next__(self) -> Message:
        return self._bridge.next()

    def __iter__(self) -> BlockingReplay:
        return self

    def pause(self) -> None:
        """Pauses the replay (its `Ack` arrives in the stream)."""
        self._bridge.call(self.connection.pause())

    def resume(self) -> None:
        """Resumes after `pause`."""
        self._bridge.call(self.connection.resume())

    def set_speed(self, speed: float | Literal["max"]) -> None:
        """Changes the pace (a factor of real time, or ``"max"``)."""
        self._bridge.call(self.connection.set_speed(speed))

    def seek(self, ts: int | str) -> None:
        """Jumps to event time ``ts`` (ns or RFC 3339)."""
        self._bridge.call(self.connection.seek(ts))

    def close(self) -> None:
        """Closes the replay and stops its thread."""
        self._bridge.close()

    def __enter__(self) -> BlockingReplay:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        _close_quietly(getattr(self, "_bridge", None))


def replay(
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
    until_end: bool = True,
    open_timeout: float = 10.0,
    buffer: int = DEFAULT_BUFFER,
) -> BlockingReplay:
    """A private replay of ``source`` as a blocking iterator (parameters as
    `tickcast.connect_replay`). With ``until_end`` (default) the iteration
    stops at the `ReplayEnd`, kept in ``.end``; without it, it goes on
    through seeks until ``close()``."""
    return BlockingReplay(
        url,
        source,
        until_end=until_end,
        open_timeout=open_timeout,
        buffer=buffer,
        encoding=encoding,
        start=start,
        end=end,
        speed=speed,
        symbols=list(symbols) if symbols is not None else None,
        depth=depth,
        token=token,
        ssl=ssl,
    )


def fetch_replay(
    url: str,
    source: str,
    *,
    encoding: Encoding = "msgpack",
    start: int | str | None = None,
    end: int | str | None = None,
    symbols: Iterable[str] | None = None,
    depth: Depth | None = None,
    token: str | None = None,
    ssl: SSLContext | None = None,
) -> Tape:
    """A whole replay window at max speed, as a `Tape`:
    ``fetch_replay(url, "day.gz").to_pandas().trades``."""
    with replay(
        url,
        source,
        encoding=encoding,
        start=start,
        end=end,
        speed="max",
        symbols=symbols,
        depth=depth,
        token=token,
        ssl=ssl,
    ) as r:
        return Tape.from_messages(r)

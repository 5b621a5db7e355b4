"""A resilient live subscription: reconnects, resumes, and keeps every
symbol's seq and book right.

`Session` connects, subscribes and reads. Iterating it (``async for``)
yields the server's messages and, in order with them, what happened to the
session (`Connected`, `Disconnected`, `Gap`, `ChecksumMismatch`). It:

* **reconnects by itself** when a connect fails, the server closes, or the
  heartbeat watchdog sees nothing for ``heartbeat_timeout`` seconds (after
  half of it in silence the session pings the server; the pong counts).
  The delay before retry ``n`` is `tickcast.backoff.backoff_delay`:
  exponential backoff with full jitter between ``backoff_base`` and
  ``backoff_cap``; a connection that delivered data starts the count again.
* **resumes**: on reconnect, each named symbol it holds a seq for is sent
  in ``from_seq`` with the ``epoch`` of the last ack, so the server sends
  exactly the missed updates (``recovered`` true) or a `Reset` and a fresh
  `Snapshot` (false). A server without resume ignores both fields and
  sends snapshots, which the session takes as usual.
* **rewinds** (``from_ts``): on a recording server, the first subscribe
  starts at a past event time: the state then, every update since from
  the tick log, then live, seamlessly.
* **tracks seq per symbol**: a `Snapshot` sets it, each update must be the
  next; an unannounced jump or repeat is a `Gap`: the symbol is
  resubscribed (unsubscribe, then subscribe: a plain subscribe at the same
  depth sends no new snapshot) and its updates are dropped until the new
  snapshot. `Conflated` and `Reset` are announced: the snapshot that
  follows is taken, with no resubscribe.
* **keeps books**: each symbol's `OrderBook` from its snapshot and book
  updates, checked against every checksum; a mismatch is a
  `ChecksumMismatch` and a resubscribe.

Only messages that apply cleanly are yielded: updates dropped while a
symbol waits for its snapshot are not (they are counted in `stats`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from ssl import SSLContext
from types import TracebackType
from typing import Literal

from websockets.exceptions import WebSocketException

from .backoff import backoff_delay
from .book import OrderBook
from .client import DEFAULT_MAX_QUEUE, DEFAULT_OPEN_TIMEOUT, Connection, connect
from .codec import DecodeError, Depth, Encoding, check_depth, check_encoding, subscribe_request
from .errors import ConnectionClosed, HandshakeError, TickcastError
from .messages import (
    Ack,
    BookUpdate,
    ChecksumMismatch,
    Conflated,
    Connected,
    Disconnected,
    Gap,
    Message,
    Quote,
    QuoteState,
    Reset,
    SessionEvent,
    Snapshot,
    Trade,
    TradeState,
)

#: A connection that stayed up this long (seconds) resets the backoff.
STABLE_AFTER = 10.0

#: What iterating a `Session` yields.
SessionItem = Message | SessionEvent


@dataclass
class SymbolState:
    """What a session holds of one symbol."""

    #: The last seq applied (``None`` before the first snapshot, and after
    #: a reset until the snapshot that follows).
    seq: int | None = None
    #: The book at the subscription's depth, checked against every
    #: checksum; ``None`` while the symbol waits for a snapshot.
    book: OrderBook | None = None
    #: The last quote (from the snapshot, then from each quote).
    quote: QuoteState | None = None
    #: The last trade.
    trade: TradeState | None = None
    #: True from a gap, mismatch, conflation or reset until the snapshot
    #: that replaces the state; updates are dropped meanwhile.
    awaiting_snapshot: bool = False


@dataclass
class SessionStats:
    """Counters of a session's life."""

    connects: int = 0
    disconnects: int = 0
    gaps: int = 0
    checksum_mismatches: int = 0
    conflations: int = 0
    resets: int = 0
    #: Symbols the server resumed (``recovered`` true) / could not.
    recovered: int = 0
    not_recovered: int = 0
    #: Updates dropped while their symbol waited for a snapshot.
    dropped: int = 0


class _Silent(Exception):
    """The heartbeat watchdog fired."""


class Session:
    """A live subscription that survives disconnects; see the module doc.

    ::

        async with tickcast.Session("ws://127.0.0.1:8080", ["AAPL", "MSFT"], depth=10) as s:
            async for msg in s:
                if isinstance(msg, tickcast.Trade):
                    print(msg.sym, msg.px)
                book = s.book("AAPL")

    Iteration ends only after `close`. A handshake the server refuses
    with a 4xx status (a bad token, say) raises `HandshakeError` from the
    iteration, since retrying would not help; 5xx (503 when full) is
    retried.

    Parameters: ``url`` (``ws://HOST:PORT``), ``symbols`` (``["*"]``: all;
    resume applies to named symbols only), ``depth`` (book levels per side,
    server default when ``None``), ``encoding``, ``token`` (JWT),
    ``backoff_base``/``backoff_cap`` (seconds, defaults 0.1 and 10),
    ``heartbeat_timeout`` (seconds without any frame before the connection
    is taken for dead, default 30: twice the server's default ping
    interval), ``resume`` (send ``from_seq`` on reconnect, default True),
    ``verify_books`` (check checksums, default True), ``from_ts`` (start
    in the past on a server run with ``--record``: ns since the epoch or
    RFC 3339; the first subscribe rewinds there, reconnects resume by seq
    as usual), ``slow`` and ``ssl`` (as for `tickcast.connect`), ``rng``
    (a ``random.Random`` for reproducible jitter).
    """

    def __init__(
        self,
        url: str,
        symbols: Iterable[str],
        *,
        depth: Depth | None = None,
        encoding: Encoding = "msgpack",
        token: str | None = None,
        backoff_base: float = 0.1,
        backoff_cap: float = 10.0,
        heartbeat_timeout: float = 30.0,
        resume: bool = True,
        verify_books: bool = True,
        slow: Literal["conflate", "disconnect"] | None = None,
        from_ts: int | str | None = None,
        ssl: SSLContext | None = None,
        open_timeout: float = DEFAULT_OPEN_TIMEOUT,
        max_queue: int | None = DEFAULT_MAX_QUEUE,
        rng: random.Random | None = None,
    ) -> None:
        if isinstance(symbols, str):
            raise TypeError("symbols must be a list of symbols, not a string")
        if backoff_base < 0 or backoff_cap < backoff_base:
            raise ValueError("need 0 <= backoff_base <= backoff_cap")
        if heartbeat_timeout <= 0:
            raise ValueError("heartbeat_timeout must be positive")
        self.url = url
        self.depth = None if depth is None else check_depth(depth)
        self.encoding = check_encoding(encoding)
        self.token = token
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.heartbeat_timeout = heartbeat_timeout
        self.resume = resume
        self.verify_books = verify_books
        self.slow = slow
        self.from_ts = from_ts
        self.ssl = ssl
        self.open_timeout = open_timeout
        self.max_queue = max_queue
        self._rng = rng or random.Random()
        self._symbols: list[str] = list(dict.fromkeys(symbols))
        #: Per symbol state; see `state`.
        self._states: dict[str, SymbolState] = {}
        #: The epoch of the last subscribe ack, sent back with ``from_seq``.
        self.epoch: int | None = None
        #: Counters; see `SessionStats`.
        self.stats = SessionStats()
        self._conn: Connection | None = None
        self._pending: deque[SessionItem] = deque()
        self._attempt = 0  # backoff attempt: failures since the last good connection
        self._retry_in: float | None = None
        self._connected_at = 0.0
        self._had_data = False
        self._alive_at = 0.0
        self._ping: asyncio.Future[float] | None = None
        self._closed = False

    # -- what the session holds

    def state(self, sym: str) -> SymbolState | None:
        """What the session holds of ``sym`` (seq, book, last quote and
        trade), or ``None`` if nothing."""
        return self._states.get(sym)

    def book(self, sym: str) -> OrderBook | None:
        """``sym``'s book, verified up to the last message yielded (``None``
        before its snapshot, or while it waits for one). It is the
        session's own object, updated in place: ``copy()`` it to keep it."""
        st = self._states.get(sym)
        return st.book if st is not None else None

    def last_seq(self, sym: str) -> int | None:
        """The last seq applied for ``sym``."""
        st = self._states.get(sym)
        return st.seq if st is not None else None

    @property
    def seqs(self) -> dict[str, int]:
        """The last seq applied per symbol (what a resume sends)."""
        return {s: st.seq for s, st in self._states.items() if st.seq is not None}

    @property
    def connected(self) -> bool:
        """Whether a connection is open now."""
        return self._conn is not None

    @property
    def symbols(self) -> list[str]:
        """The symbols this session subscribes to."""
        return list(self._symbols)

    # -- changing the subscription

    async def subscribe(self, symbols: Iterable[str]) -> None:
        """Adds ``symbols``; sent now if connected, and on every reconnect."""
        new = [s for s in symbols if s not in self._symbols]
        self._symbols.extend(new)
        if new and self._conn is not None:
            await self._send_or_drop(subscribe_request(new, self.depth))

    async def unsubscribe(self, symbols: Iterable[str]) -> None:
        """Removes ``symbols`` and forgets their state."""
        gone = [s for s in symbols if s in self._symbols]
        self._symbols = [s for s in self._symbols if s not in gone]
        for s in gone:
            self._states.pop(s, None)
        if gone and self._conn is not None:
            await self._send_or_drop({"op": "unsubscribe", "symbols": gone})

    def drop_connection(self) -> None:
        """Drops the current connection at once, as a network failure would:
        the session reconnects (after its backoff delay) and resumes."""
        if self._conn is not None:
            self._conn.abort()

    # -- lifecycle

    async def close(self) -> None:
        """Closes the connection and ends the iteration."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 3)
            except (asyncio.TimeoutError, OSError, WebSocketException):
                conn.abort()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[SessionItem]:
        return self

    async def __anext__(self) -> SessionItem:
        while True:
            if self._pending:
                return self._pending.popleft()
            if self._closed:
                raise StopAsyncIteration
            if self._conn is None:
                await self._connect()
                continue
            conn = self._conn
            try:
                msg = await self._recv(conn)
            except (ConnectionClosed, _Silent, DecodeError) as e:
                if self._closed:  # close() ended the connection under us
                    raise StopAsyncIteration from None
                if self._conn is not conn:  # a concurrent send already reported it lost
                    continue
                if isinstance(e, _Silent):
                    self._lost(f"no frame for {self.heartbeat_timeout:g} s (heartbeat watchdog)")
                elif isinstance(e, DecodeError):
                    self._lost(f"undecodable frame: {e}")
                else:
                    self._lost(f"connection lost: {e}")
                continue
            resubscribe = self._process(msg)
            if resubscribe:
                await self._resubscribe(resubscribe)

    # -- connecting

    async def _connect(self) -> None:
        if self._retry_in is not None:
            await asyncio.sleep(self._retry_in)
            self._retry_in = None
            if self._closed:
                return
        try:
            conn = await connect(
                self.url,
                encoding=self.encoding,
                token=self.token,
                slow=self.slow,
                ssl=self.ssl,
                open_timeout=self.open_timeout,
                max_queue=self.max_queue,
            )
        except HandshakeError as e:
            if 400 <= e.status < 500:
                raise  # a bad request or token: retrying would not help
            self._retry(f"connect: {e}")
            return
        except (OSError, asyncio.TimeoutError, WebSocketException, TickcastError) as e:
            self._retry(f"connect: {e or type(e).__name__}")
            return
        self._conn = conn
        self._connected_at = self._alive_at = time.monotonic()
        self._had_data = False
        self._ping = None
        request, resumed = self._subscribe_request()
        if self._symbols:  # a session may start empty and subscribe later
            try:
                await conn.send(request)
            except (ConnectionClosed, OSError) as e:
                self._lost(f"subscribe: {e}")
                return
        self.stats.connects += 1
        self._pending.append(Connected(conn.url, self.stats.connects, resumed))

    def _subscribe_request(self) -> tuple[dict[str, object], list[str]]:
        """The subscribe of a new connection, and the symbols it resumes.
        Symbols not resumed wait for their snapshot."""
        from_seq: dict[str, int] = {}
        if self.resume:
            for sym in self._symbols:
                st = self._states.get(sym)
                if st is not None and st.seq is not None and not st.awaiting_snapshot:
                    from_seq[sym] = st.seq
        for sym, st in self._states.items():
            if sym not in from_seq:
                st.awaiting_snapshot = True
                st.book = None
        if self.from_ts is not None and not any(st.seq is not None for st in self._states.values()):
            # Nothing held yet: start at from_ts (live with rewind).
            return subscribe_request(self._symbols, self.depth, from_ts=self.from_ts), []
        epoch = self.epoch if from_seq else None
        return subscribe_request(self._symbols, self.depth, from_seq=from_seq or None, epoch=epoch), list(from_seq)

    def _retry(self, reason: str) -> None:
        """Schedules the next connect after the backoff delay."""
        delay = backoff_delay(self.backoff_base, self.backoff_cap, self._attempt, self._rng)
        self._attempt += 1
        self._retry_in = delay
        self._pending.append(Disconnected(reason, delay))

    def _lost(self, reason: str) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        self.stats.disconnects += 1
        if self._had_data or time.monotonic() - self._connected_at > STABLE_AFTER:
            self._attempt = 0
        self._retry(reason)

    async def _send_or_drop(self, request: dict[str, object]) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            await conn.send(request)
        except (ConnectionClosed, OSError) as e:
            self._lost(f"send: {e}")

    async def _resubscribe(self, symbols: list[str]) -> None:
        """Unsubscribe, then subscribe: the server sends a fresh snapshot."""
        await self._send_or_drop({"op": "unsubscribe", "symbols": symbols})
        await self._send_or_drop(subscribe_request(symbols, self.depth))

    # -- reading

    async def _recv(self, conn: Connection) -> Message:
        """The next message, with the heartbeat watchdog: after half the
        timeout in silence, a ping; no message and no pong within the
        timeout raises `_Silent`."""
        half = self.heartbeat_timeout / 2
        while True:
            silent = time.monotonic() - self._alive_at
            if silent >= self.heartbeat_timeout:
                raise _Silent
            if silent >= half and self._ping is None:
                self._ping = await conn.start_ping()
            wait = self.heartbeat_timeout - silent if self._ping is not None else half - silent
            try:
                msg = await conn.recv(timeout=max(wait, 0.001))
            except asyncio.TimeoutError:
                ping = self._ping
                if ping is not None and ping.done():
                    # A pong (or a failed ping, whose closed connection the
                    # next recv reports).
                    if not ping.cancelled():
                        ping.exception()  # retrieved, so asyncio does not log it
                    self._alive_at = time.monotonic()
                    self._ping = None
                continue
            self._alive_at = time.monotonic()
            self._ping = None
            return msg

    def _process(self, msg: Message) -> list[str]:
        """Applies ``msg`` to the symbols' state and queues what to yield;
        returns the symbols to resubscribe."""
        out = self._pending
        if isinstance(msg, (Trade, Quote, BookUpdate)):
            st = self._states.get(msg.sym)
            if st is None or st.awaiting_snapshot or st.seq is None:
                self.stats.dropped += 1  # unsubscribed, or waiting for a snapshot
                return []
            self._had_data = True
            if msg.seq != st.seq + 1:
                self.stats.gaps += 1
                out.append(Gap(msg.sym, st.seq + 1, msg.seq))
                self._await_snapshot(st)
                return [msg.sym]
            st.seq = msg.seq
            if isinstance(msg, Trade):
                st.trade = TradeState(msg.px, msg.sz, msg.side)
            elif isinstance(msg, Quote):
                st.quote = QuoteState(msg.bid, msg.bid_sz, msg.ask, msg.ask_sz)
            elif st.book is not None:
                st.book.apply_levels(msg.bids, msg.asks)
                if self.verify_books:
                    computed = st.book.checksum()
                    if computed != msg.checksum:
                        out.append(msg)
                        return self._mismatch(st, msg.sym, msg.seq, msg.checksum, computed)
            out.append(msg)
            return []
        if isinstance(msg, Snapshot):
            self._had_data = True
            st = self._states.setdefault(msg.sym, SymbolState())
            st.seq = msg.seq
            st.quote, st.trade = msg.quote, msg.trade
            st.awaiting_snapshot = False
            st.book = OrderBook.from_snapshot(msg)
            out.append(msg)
            if self.verify_books:
                computed = st.book.checksum()
                if computed != msg.checksum:
                    return self._mismatch(st, msg.sym, msg.seq, msg.checksum, computed)
            return []
        if isinstance(msg, Conflated):
            self.stats.conflations += 1
            for skipped in msg.symbols:
                st = self._states.get(skipped.sym)
                if st is not None:
                    self._await_snapshot(st)
        elif isinstance(msg, Reset):
            self.stats.resets += 1
            st = self._states.get(msg.sym)
            if st is not None:
                self._await_snapshot(st)
                st.seq = None
                st.quote = st.trade = None
        elif isinstance(msg, Ack) and msg.op == "subscribe":
            if msg.epoch is not None:
                self.epoch = msg.epoch
            for ok in msg.recovered.values():
                if ok:
                    self.stats.recovered += 1
                else:
                    self.stats.not_recovered += 1
        out.append(msg)
        return []

    @staticmethod
    def _await_snapshot(st: SymbolState) -> None:
        st.awaiting_snapshot = True
        st.book = None

    def _mismatch(self, st: SymbolState, sym: str, seq: int, checksum: int, computed: int) -> list[str]:
        self.stats.checksum_mismatches += 1
        self._pending.append(ChecksumMismatch(sym, seq, checksum, computed))
        self._await_snapshot(st)
        return [sym]

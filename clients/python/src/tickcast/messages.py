"""Typed server messages: one dataclass per ``type`` of docs/PROTOCOL.md.

Every decoder in `tickcast.codec` produces these, whatever the encoding,
so code written against them works on msgpack, protobuf and json alike.

* Timestamps (``ts_event``, ``ts_ingest``) are ``int`` nanoseconds since
  the Unix epoch, exact (a float would round them to about 256 ns).
* Prices and sizes are ``float``: the doubles the feed sent, bit for bit.
* Book levels are ``(price, size)`` tuples, best first; in a `BookUpdate`
  a size of ``0.0`` deletes the level.

The market messages (`Trade`, `Quote`, `BookUpdate`) and `Snapshot` carry
``sym`` and ``seq``: per symbol, +1 for every update. `SessionEvent` types
(`Connected`, `Disconnected`, `Gap`, `ChecksumMismatch`) are not on the
wire: a `tickcast.Session` reports what happened to it with them, in order
with the messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

#: One book level: ``(price, size)``.
Level = tuple[float, float]


@dataclass(slots=True)
class Trade:
    """A trade print (``type`` ``trade``)."""

    type: ClassVar[str] = "trade"
    sym: str
    seq: int
    #: Event time at the source, ns since the Unix epoch.
    ts_event: int
    #: When the server took the tick in (or, in a replay, when the recorder
    #: received it), ns since the Unix epoch.
    ts_ingest: int
    px: float
    sz: float
    #: The aggressor: ``"buy"``, ``"sell"`` or ``"unknown"``.
    side: str


@dataclass(slots=True)
class Quote:
    """Best bid and offer (``type`` ``quote``)."""

    type: ClassVar[str] = "quote"
    sym: str
    seq: int
    ts_event: int
    ts_ingest: int
    bid: float
    bid_sz: float
    ask: float
    ask_sz: float


@dataclass(slots=True)
class BookUpdate:
    """Changed levels of the book at the subscription's depth (``type``
    ``book``); may be empty (nothing changed within the depth, ``seq`` still
    moves). ``checksum`` is the book's CRC-32 after the change (see
    `tickcast.book`)."""

    type: ClassVar[str] = "book"
    sym: str
    seq: int
    ts_event: int
    ts_ingest: int
    bids: list[Level]
    asks: list[Level]
    checksum: int


@dataclass(slots=True)
class QuoteState:
    """The last quote held in a `Snapshot`."""

    bid: float
    bid_sz: float
    ask: float
    ask_sz: float


@dataclass(slots=True)
class TradeState:
    """The last trade held in a `Snapshot`."""

    px: float
    sz: float
    side: str


@dataclass(slots=True)
class Snapshot:
    """A symbol's state after update ``seq`` (``type`` ``snapshot``): the
    next update of ``sym`` has ``seq + 1``. ``depth`` is the levels per side
    the subscription holds (4096 for ``"full"``); ``bids``/``asks`` the
    book to that depth, best first, with its ``checksum``."""

    type: ClassVar[str] = "snapshot"
    sym: str
    seq: int
    ts_event: int
    ts_ingest: int
    quote: QuoteState | None
    trade: TradeState | None
    depth: int
    bids: list[Level]
    asks: list[Level]
    checksum: int


@dataclass(slots=True)
class Ack:
    """A request was applied (``type`` ``ack``): ``op`` names it
    (``subscribe``, ``unsubscribe``, ``refresh``, or a replay control).

    On a subscribe, ``epoch`` is the server's epoch, to send back with
    ``from_seq`` when resuming (``None`` from a server without resume); on a
    subscribe with ``from_seq``, ``recovered`` says per symbol whether its
    missed updates follow (``True``) or a `Reset` and a `Snapshot` do."""

    type: ClassVar[str] = "ack"
    op: str
    symbols: list[str]
    epoch: int | None = None
    recovered: dict[str, bool] = field(default_factory=dict)


@dataclass(slots=True)
class Error:
    """A request the server could not honour (``type`` ``error``); the
    connection stays open. ``code`` is stable (``unknown_symbol``,
    ``bad_request``, ``rate_limited``, ...)."""

    type: ClassVar[str] = "error"
    code: str
    message: str
    symbols: list[str]


@dataclass(slots=True)
class Skipped:
    """One symbol of a `Conflated` message: updates ``from_seq`` to
    ``to_seq`` inclusive were not delivered; the counts by kind add up to
    ``to_seq - from_seq + 1``."""

    sym: str
    from_seq: int
    to_seq: int
    trades: int
    quotes: int
    books: int


@dataclass(slots=True)
class Conflated:
    """The client fell behind and has drained (``type`` ``conflated``): a
    `Snapshot` of each named symbol follows, at ``to_seq``."""

    type: ClassVar[str] = "conflated"
    symbols: list[Skipped]


@dataclass(slots=True)
class Reset:
    """The symbol's state was replaced (``type`` ``reset``): discard what is
    held for ``sym``; its next message is a `Snapshot` at ``seq`` (which may
    be lower than before). ``reason``: ``gap``, ``epoch``, ``reconnect`` or
    ``history``."""

    type: ClassVar[str] = "reset"
    sym: str
    seq: int
    reason: str


@dataclass(slots=True)
class ReplayEnd:
    """A replay ran out (``reason`` ``end``), passed its ``to`` (``to``) or
    failed (``error``) (``type`` ``replay_end``). ``events`` counts the market
    messages sent since the start or the last seek; ``ts_event`` is the last
    one's event time. The replay session stays open for a seek."""

    type: ClassVar[str] = "replay_end"
    source: str
    reason: str
    events: int
    ts_event: int


@dataclass(slots=True)
class TokenExpiring:
    """The session's token expires at ``expires_at`` (seconds since the
    epoch, ``type`` ``token_expiring``): send ``refresh`` with a new one."""

    type: ClassVar[str] = "token_expiring"
    expires_at: int


# --------------------------------------------------------------------------
# Session events: what a resilient Session reports, never on the wire.
# --------------------------------------------------------------------------


@dataclass(slots=True)
class Connected:
    """A `tickcast.Session` connected and sent its subscribe. ``attempt``
    counts the connects of this session, from 1; ``resumed`` names the
    symbols it asked to resume with ``from_seq``."""

    type: ClassVar[str] = "connected"
    url: str
    attempt: int
    resumed: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Disconnected:
    """A session's connection failed or was lost; the next attempt is in
    ``retry_in`` seconds (exponential backoff with full jitter)."""

    type: ClassVar[str] = "disconnected"
    reason: str
    retry_in: float


@dataclass(slots=True)
class Gap:
    """An unannounced gap (or repeat): ``sym`` went from ``expected - 1`` to
    ``got``. The session resubscribes the symbol and drops its updates until
    the new snapshot."""

    type: ClassVar[str] = "gap"
    sym: str
    expected: int
    got: int


@dataclass(slots=True)
class ChecksumMismatch:
    """``sym``'s book after ``seq`` hashes to ``computed``, not the server's
    ``checksum``. The session resubscribes the symbol."""

    type: ClassVar[str] = "checksum_mismatch"
    sym: str
    seq: int
    checksum: int
    computed: int


#: A market update: the messages that carry a symbol's ``seq`` forward.
MarketMessage = Trade | Quote | BookUpdate

#: Any message a tickcast server sends.
Message = Trade | Quote | BookUpdate | Snapshot | Ack | Error | Conflated | Reset | ReplayEnd | TokenExpiring

#: What a `tickcast.Session` reports besides the messages.
SessionEvent = Connected | Disconnected | Gap | ChecksumMismatch

"""tickcast: a Python client for tickcast market-data servers.

Module map (each module's doc says more):

* `tickcast.messages`: the typed messages (`Trade`, `Quote`, `BookUpdate`,
  `Snapshot`, `Ack`, `Error`, `Conflated`, `Reset`, `ReplayEnd`, ...) and
  the session events (`Connected`, `Disconnected`, `Gap`,
  `ChecksumMismatch`).
* `tickcast.codec`: msgpack, protobuf and json frames into messages;
  requests out.
* `tickcast.client`: the asyncio connection (`connect`) and replay
  (`connect_replay`, with pause, resume, speed and seek).
* `tickcast.session`: `Session`, the resilient subscription (reconnect
  with backoff and jitter, heartbeat watchdog, resume by seq, books).
* `tickcast.book`: `OrderBook` and the protocol's checksum.
* `tickcast.backoff`: the reconnect delay, a pure function.
* `tickcast.tape`: `Tape`, `to_pandas`, `to_arrow`.
* `tickcast.sync`: the blocking iterators (`stream`, `replay`,
  `fetch_replay`).

Imports flow one way: messages and codec at the bottom, then book and
backoff, then client, session and tape, then sync.
"""

from .backoff import backoff_bound, backoff_delay
from .book import OrderBook, book_checksum
from .client import Connection, ReplayConnection, connect, connect_replay
from .codec import DEPTHS, ENCODINGS, DecodeError, Depth, Encoding, decode
from .errors import ConnectionClosed, HandshakeError, TickcastError
from .messages import (
    Ack,
    BookUpdate,
    ChecksumMismatch,
    Conflated,
    Connected,
    Disconnected,
    Error,
    Gap,
    Level,
    MarketMessage,
    Message,
    Quote,
    QuoteState,
    ReplayEnd,
    Reset,
    SessionEvent,
    Skipped,
    Snapshot,
    TokenExpiring,
    Trade,
    TradeState,
)
from .session import Session, SessionItem, SessionStats, SymbolState
from .sync import BlockingReplay, BlockingStream, fetch_replay, replay, stream
from .tape import Frames, Tape, to_arrow, to_pandas

__version__ = "0.1.0"

__all__ = [
    "DEPTHS",
    "ENCODINGS",
    "Ack",
    "BlockingReplay",
    "BlockingStream",
    "BookUpdate",
    "ChecksumMismatch",
    "Conflated",
    "Connected",
    "Connection",
    "ConnectionClosed",
    "DecodeError",
    "Depth",
    "Disconnected",
    "Encoding",
    "Error",
    "Frames",
    "Gap",
    "HandshakeError",
    "Level",
    "MarketMessage",
    "Message",
    "OrderBook",
    "Quote",
    "QuoteState",
    "ReplayConnection",
    "ReplayEnd",
    "Reset",
    "Session",
    "SessionEvent",
    "SessionItem",
    "SessionStats",
    "Skipped",
    "Snapshot",
    "SymbolState",
    "Tape",
    "TickcastError",
    "TokenExpiring",
    "Trade",
    "TradeState",
    "backoff_bound",
    "backoff_delay",
    "book_checksum",
    "connect",
    "connect_replay",
    "decode",
    "fetch_replay",
    "replay",
    "stream",
    "to_arrow",
    "to_pandas",
]

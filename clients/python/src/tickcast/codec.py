"""Decoding server frames (msgpack, protobuf, json) into `tickcast.messages`,
and encoding client requests.

* msgpack: maps with the JSON keys; integers stay exact 64-bit ints.
* json: text frames; Python's ``json`` keeps big integers exact, and
  parses each price back to the double the server sent.
* protobuf: one ``tickcast.v1.ServerMessage`` per frame (the generated
  module ships in ``tickcast._proto``; protobuf is imported on first use).

Client requests are JSON objects in text frames, whatever the encoding.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import msgpack

from .messages import (
    Ack,
    BookUpdate,
    Conflated,
    Error,
    Level,
    Message,
    Quote,
    QuoteState,
    ReplayEnd,
    Reset,
    Skipped,
    Snapshot,
    TokenExpiring,
    Trade,
    TradeState,
)

#: The three encodings a server speaks.
Encoding = Literal["msgpack", "protobuf", "json"]
ENCODINGS: tuple[Encoding, ...] = ("msgpack", "protobuf", "json")

#: Book depths a subscribe (``depth``) or a replay (``?depth=``) may ask for.
DEPTHS: tuple[int | str, ...] = (1, 5, 10, 20, 25, 50, 100, 500, 1000, "full")
#: Levels per side a ``"full"`` subscription holds (the server's bound).
FULL_DEPTH = 4096

Depth = int | Literal["full"]


class DecodeError(ValueError):
    """A frame that is not a valid tickcast server message."""


def check_encoding(encoding: str) -> Encoding:
    """``encoding`` if it is one of `ENCODINGS`, else ``ValueError``."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
    return encoding


def check_depth(depth: Depth) -> Depth:
    """``depth`` if the server offers it (`DEPTHS`), else ``ValueError``."""
    if depth not in DEPTHS or isinstance(depth, bool):
        raise ValueError(f"depth {depth!r} is not offered: use one of {', '.join(map(str, DEPTHS))}")
    return depth


def depth_levels(depth: Depth) -> int:
    """Levels per side of a depth as written in a request (``"full"``: 4096)."""
    return FULL_DEPTH if depth == "full" else int(depth)


# --------------------------------------------------------------------------
# msgpack and json: the same maps
# --------------------------------------------------------------------------


def _levels(raw: Iterable[Any]) -> list[Level]:
    return [(float(px), float(sz)) for px, sz in raw]


def _trade(m: Mapping[str, Any]) -> Trade:
    return Trade(m["sym"], m["seq"], m["ts_event"], m["ts_ingest"], float(m["px"]), float(m["sz"]), m["side"])


def _quote(m: Mapping[str, Any]) -> Quote:
    return Quote(
        m["sym"], m["seq"], m["ts_event"], m["ts_ingest"],
        float(m["bid"]), float(m["bid_sz"]), float(m["ask"]), float(m["ask_sz"]),
    )  # fmt: skip


def _book(m: Mapping[str, Any]) -> BookUpdate:
    return BookUpdate(
        m["sym"], m["seq"], m["ts_event"], m["ts_ingest"], _levels(m["bids"]), _levels(m["asks"]), m["checksum"]
    )


def _snapshot(m: Mapping[str, Any]) -> Snapshot:
    q, t, b = m["quote"], m["trade"], m["book"]
    return Snapshot(
        sym=m["sym"],
        seq=m["seq"],
        ts_event=m["ts_event"],
        ts_ingest=m["ts_ingest"],
        quote=None
        if q is None
        else QuoteState(float(q["bid"]), float(q["bid_sz"]), float(q["ask"]), float(q["ask_sz"])),
        trade=None if t is None else TradeState(float(t["px"]), float(t["sz"]), t["side"]),
        depth=m["depth"],
        bids=_levels(b["bids"]),
        asks=_levels(b["asks"]),
        checksum=b["checksum"],
    )


def _ack(m: Mapping[str, Any]) -> Ack:
    return Ack(m["op"], list(m["symbols"]), m.get("epoch"), dict(m.get("recovered") or {}))


def _error(m: Mapping[str, Any]) -> Error:
    return Error(m["code"], m["message"], list(m.get("symbols") or []))


def _conflated(m: Mapping[str, Any]) -> Conflated:
    return Conflated(
        [Skipped(e["sym"], e["from_seq"], e["to_seq"], e["trades"], e["quotes"], e["books"]) for e in m["symbols"]]
    )


def _reset(m: Mapping[str, Any]) -> Reset:
    return Reset(m["sym"], m["seq"], m["reason"])


def _replay_end(m: Mapping[str, Any]) -> ReplayEnd:
    return ReplayEnd(m["source"], m["reason"], m["events"], m["ts_event"])


def _token_expiring(m: Mapping[str, Any]) -> TokenExpiring:
    return TokenExpiring(m["expires_at"])


_FROM_MAP: dict[str, Callable[[Mapping[str, Any]], Message]] = {
    "trade": _trade,
    "quote": _quote,
    "book": _book,
    "snapshot": _snapshot,
    "ack": _ack,
    "error": _error,
    "conflated": _conflated,
    "reset": _reset,
    "replay_end": _replay_end,
    "token_expiring": _token_expiring,
}


def from_map(m: Mapping[str, Any]) -> Message:
    """A message from its JSON/msgpack map (``{"type": ..., ...}``)."""
    try:
        build = _FROM_MAP[m["type"]]
    except (KeyError, TypeError):
        kind = m.get("type") if isinstance(m, Mapping) else type(m).__name__
        raise DecodeError(f"not a tickcast server message (type {kind!r})") from None
    try:
        return build(m)
    except (KeyError, TypeError, ValueError) as e:
        raise DecodeError(f"malformed {m['type']} message: {e!r}") from None


# --------------------------------------------------------------------------
# protobuf
# --------------------------------------------------------------------------

_SIDES = {0: "unknown", 1: "buy", 2: "sell"}
# ResetReason numbers: the wire names of JSON/msgpack (0 is never sent).
_RESET_REASONS = {1: "gap", 2: "epoch", 3: "reconnect", 4: "history"}


def _pb_levels(levels: Iterable[Any]) -> list[Level]:
    return [(lvl.px, lvl.sz) for lvl in levels]


class _Protobuf:
    """The protobuf decoder; built on first use, so msgpack and json users
    never import protobuf."""

    def __init__(self) -> None:
        # Generated code without type information: typed as Any here.
        tickcast_pb2: Any = importlib.import_module("tickcast._proto.tickcast_pb2")
        self.server_message = tickcast_pb2.ServerMessage

    def decode(self, data: bytes) -> Message:
        msg = self.server_message()
        try:
            msg.ParseFromString(data)
        except Exception as e:  # protobuf's DecodeError has no stable import path across backends
            raise DecodeError(f"not a protobuf ServerMessage: {e}") from None
        body = msg.WhichOneof("body")
        if body is None or body != msg.type:
            raise DecodeError(f"protobuf message of type {msg.type!r} with body {body!r}")
        b = getattr(msg, body)
        if body == "trade":
            return Trade(msg.sym, msg.seq, msg.ts_event, msg.ts_ingest, b.px, b.sz, _SIDES.get(b.side, "unknown"))
        if body == "quote":
            return Quote(msg.sym, msg.seq, msg.ts_event, msg.ts_ingest, b.bid, b.bid_sz, b.ask, b.ask_sz)
        if body == "book":
            return BookUpdate(
                msg.sym, msg.seq, msg.ts_event, msg.ts_ingest, _pb_levels(b.bids), _pb_levels(b.asks), b.checksum
            )
        if body == "snapshot":
            q, t = b.quote, b.trade
            return Snapshot(
                sym=msg.sym,
                seq=msg.seq,
                ts_event=msg.ts_event,
                ts_ingest=msg.ts_ingest,
                quote=QuoteState(q.bid, q.bid_sz, q.ask, q.ask_sz) if b.HasField("quote") else None,
                trade=TradeState(t.px, t.sz, _SIDES.get(t.side, "unknown")) if b.HasField("trade") else None,
                depth=b.depth,
                bids=_pb_levels(b.book.bids),
                asks=_pb_levels(b.book.asks),
                checksum=b.book.checksum,
            )
        if body == "ack":
            # proto3 cannot tell an absent epoch from 0: every subscribe ack
            # names one (0 on a cluster edge not synced yet), no other does.
            epoch = b.epoch if b.op == "subscribe" else None
            return Ack(b.op, list(b.symbols), epoch, dict(b.recovered))
        if body == "error":
            return Error(b.code, b.message, list(b.symbols))
        if body == "conflated":
            return Conflated([Skipped(e.sym, e.from_seq, e.to_seq, e.trades, e.quotes, e.books) for e in b.symbols])
        if body == "reset":
            reason = _RESET_REASONS.get(b.reason)
            if reason is None:
                raise DecodeError(f"reset with unknown reason {b.reason}")
            return Reset(msg.sym, msg.seq, reason)
        if body == "replay_end":
            return ReplayEnd(b.source, b.reason, b.events, msg.ts_event)
        if body == "token_expiring":
            return TokenExpiring(b.expires_at)
        raise DecodeError(f"unknown protobuf message type {body!r}")  # pragma: no cover - a newer schema


_protobuf: _Protobuf | None = None


def _protobuf_decoder() -> _Protobuf:
    global _protobuf
    if _protobuf is None:
        _protobuf = _Protobuf()
    return _protobuf


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------


def decode(encoding: Encoding, data: str | bytes) -> Message:
    """Decodes one WebSocket message of ``encoding`` into a typed message.

    Raises `DecodeError` for a frame that is not a tickcast message (json
    in a binary frame is accepted, as any UTF-8 bytes)."""
    if encoding == "msgpack":
        if isinstance(data, str):
            raise DecodeError("msgpack comes in binary frames, got a text frame")
        try:
            m = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several unrelated types
            raise DecodeError(f"not msgpack: {e}") from None
        return from_map(m)
    if encoding == "json":
        try:
            m = json.loads(data)
        except ValueError as e:
            raise DecodeError(f"not JSON: {e}") from None
        return from_map(m)
    if encoding == "protobuf":
        if isinstance(data, str):
            raise DecodeError("protobuf comes in binary frames, got a text frame")
        return _protobuf_decoder().decode(data)
    raise ValueError(f"unknown encoding {encoding!r}")


def subscribe_request(
    symbols: Iterable[str],
    depth: Depth | None = None,
    *,
    from_seq: Mapping[str, int] | None = None,
    epoch: int | None = None,
    from_ts: int | str | None = None,
) -> dict[str, Any]:
    """The JSON object of a subscribe (see docs/PROTOCOL.md and the resume
    extension): ``from_seq`` maps symbols (each also in ``symbols``) to the
    last seq held; ``epoch`` is the last ack's; ``from_ts`` rewinds a live
    subscription (ns or RFC 3339) on a server that records."""
    if isinstance(symbols, str):
        raise TypeError("symbols must be a list of symbols, not a string")
    syms = list(symbols)
    req: dict[str, Any] = {"op": "subscribe", "symbols": syms}
    if depth is not None:
        req["depth"] = check_depth(depth)
    if from_seq:
        unknown = set(from_seq) - set(syms)
        if unknown:
            raise ValueError(f"from_seq names symbols not in the subscribe: {sorted(unknown)}")
        req["from_seq"] = dict(from_seq)
    if epoch is not None:
        req["epoch"] = epoch
    if from_ts is not None:
        if from_seq:
            raise ValueError("from_ts and from_seq cannot be combined")
        req["from_ts"] = from_ts
    return req


def encode_request(request: Mapping[str, Any]) -> str:
    """A client request as the text frame the server reads."""
    return json.dumps(request, separators=(",", ":"))

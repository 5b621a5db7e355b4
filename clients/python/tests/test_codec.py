"""Decoding: the protocol's examples in all three encodings give the same
typed messages, with exact 64-bit timestamps and bit-exact doubles."""

from __future__ import annotations

import json
import struct

import msgpack
import pytest

import tickcast
from tickcast._proto import tickcast_pb2 as pb
from tickcast.codec import DecodeError, encode_request, subscribe_request

BIG_TS = 18_446_744_073_709_551_615  # u64::MAX: a float would round it


TRADE = {"type": "trade", "sym": "AAPL", "seq": 42, "ts_event": BIG_TS, "ts_ingest": 1700000000000012345,
         "px": 189.5, "sz": 100.0, "side": "buy"}  # fmt: skip
SNAPSHOT = {
    "type": "snapshot", "sym": "AAPL", "seq": 41, "ts_event": 1699999999999900000, "ts_ingest": 1699999999999912345,
    "quote": {"bid": 189.48, "bid_sz": 100.0, "ask": 189.5, "ask_sz": 200.0},
    "trade": {"px": 189.49, "sz": 100.0, "side": "sell"}, "depth": 10,
    "book": {"bids": [[189.48, 100.0], [189.47, 500.0]], "asks": [[189.5, 200.0]], "checksum": 1650949194},
}  # fmt: skip


def pb_trade() -> bytes:
    m = pb.ServerMessage(type="trade", sym="AAPL", seq=42, ts_event=BIG_TS, ts_ingest=1700000000000012345)
    m.trade.px, m.trade.sz, m.trade.side = 189.5, 100.0, pb.SIDE_BUY
    return m.SerializeToString()


def pb_snapshot() -> bytes:
    m = pb.ServerMessage(
        type="snapshot", sym="AAPL", seq=41, ts_event=1699999999999900000, ts_ingest=1699999999999912345
    )
    s = m.snapshot
    s.quote.bid, s.quote.bid_sz, s.quote.ask, s.quote.ask_sz = 189.48, 100.0, 189.5, 200.0
    s.trade.px, s.trade.sz, s.trade.side = 189.49, 100.0, pb.SIDE_SELL
    s.depth = 10
    s.book.bids.add(px=189.48, sz=100.0)
    s.book.bids.add(px=189.47, sz=500.0)
    s.book.asks.add(px=189.5, sz=200.0)
    s.book.checksum = 1650949194
    return m.SerializeToString()


@pytest.mark.parametrize(
    "encoding,frame",
    [("json", json.dumps(TRADE)), ("msgpack", msgpack.packb(TRADE)), ("protobuf", pb_trade())],
)
def test_a_trade_decodes_the_same_in_every_encoding(encoding, frame):
    msg = tickcast.decode(encoding, frame)
    assert msg == tickcast.Trade("AAPL", 42, BIG_TS, 1700000000000012345, 189.5, 100.0, "buy")
    assert type(msg.ts_event) is int and msg.ts_event == BIG_TS


@pytest.mark.parametrize(
    "encoding,frame",
    [("json", json.dumps(SNAPSHOT)), ("msgpack", msgpack.packb(SNAPSHOT)), ("protobuf", pb_snapshot())],
)
def test_a_snapshot_decodes_the_same_in_every_encoding(encoding, frame):
    msg = tickcast.decode(encoding, frame)
    assert isinstance(msg, tickcast.Snapshot)
    assert msg.quote == tickcast.QuoteState(189.48, 100.0, 189.5, 200.0)
    assert msg.trade == tickcast.TradeState(189.49, 100.0, "sell")
    assert msg.bids == [(189.48, 100.0), (189.47, 500.0)] and msg.asks == [(189.5, 200.0)]
    assert (msg.depth, msg.checksum) == (10, 1650949194)
    assert tickcast.OrderBook.from_snapshot(msg).checksum() == msg.checksum


def test_doubles_arrive_bit_for_bit_through_json():
    # The server writes the shortest decimal that parses back to the double.
    for x in (0.1, 189.49, 1e-300, 2.0**53 + 2, 5e-324):
        msg = tickcast.decode("json", json.dumps({**TRADE, "px": x}))
        assert struct.pack("<d", msg.px) == struct.pack("<d", x)


def test_every_other_message_type_decodes_from_json():
    cases = {
        '{"type":"ack","op":"subscribe","symbols":["AAPL"],"epoch":1764770000000000000,"recovered":{"AAPL":true}}':
            tickcast.Ack("subscribe", ["AAPL"], 1764770000000000000, {"AAPL": True}),
        '{"type":"ack","op":"unsubscribe","symbols":["MSFT"]}': tickcast.Ack("unsubscribe", ["MSFT"]),
        '{"type":"error","code":"unknown_symbol","message":"nope","symbols":["NOPE"]}':
            tickcast.Error("unknown_symbol", "nope", ["NOPE"]),
        '{"type":"conflated","symbols":[{"sym":"AAPL","from_seq":1201,"to_seq":1460,"trades":12,"quotes":198,"books":50}]}':
            tickcast.Conflated([tickcast.Skipped("AAPL", 1201, 1460, 12, 198, 50)]),
        '{"type":"reset","sym":"AAPL","seq":1500,"reason":"gap"}': tickcast.Reset("AAPL", 1500, "gap"),
        '{"type":"replay_end","source":"x.gz","reason":"end","events":41247,"ts_event":1723161599999231384}':
            tickcast.ReplayEnd("x.gz", "end", 41247, 1723161599999231384),
        '{"type":"token_expiring","expires_at":1767225600}': tickcast.TokenExpiring(1767225600),
        '{"type":"quote","sym":"AAPL","seq":43,"ts_event":1,"ts_ingest":2,"bid":189.49,"bid_sz":300.0,"ask":189.51,"ask_sz":200.0}':
            tickcast.Quote("AAPL", 43, 1, 2, 189.49, 300.0, 189.51, 200.0),
        '{"type":"book","sym":"AAPL","seq":44,"ts_event":1,"ts_ingest":2,"bids":[[189.49,300.0]],"asks":[],"checksum":3261367760}':
            tickcast.BookUpdate("AAPL", 44, 1, 2, [(189.49, 300.0)], [], 3261367760),
    }  # fmt: skip
    for text, expected in cases.items():
        assert tickcast.decode("json", text) == expected
        assert tickcast.decode("msgpack", msgpack.packb(json.loads(text))) == expected


def test_protobuf_acks_carry_the_epoch_and_recovered_map():
    m = pb.ServerMessage(type="ack")
    m.ack.op = "subscribe"
    m.ack.symbols.extend(["AAPL", "MSFT"])
    m.ack.epoch = 1764770000000000000
    m.ack.recovered["AAPL"] = True
    m.ack.recovered["MSFT"] = False
    assert tickcast.decode("protobuf", m.SerializeToString()) == tickcast.Ack(
        "subscribe", ["AAPL", "MSFT"], 1764770000000000000, {"AAPL": True, "MSFT": False}
    )
    m = pb.ServerMessage(type="ack")
    m.ack.op = "unsubscribe"
    assert tickcast.decode("protobuf", m.SerializeToString()) == tickcast.Ack("unsubscribe", [])


def test_protobuf_reset_and_replay_end_use_the_envelope():
    m = pb.ServerMessage(type="reset", sym="AAPL", seq=1500)
    m.reset.reason = pb.RESET_REASON_EPOCH
    assert tickcast.decode("protobuf", m.SerializeToString()) == tickcast.Reset("AAPL", 1500, "epoch")
    m = pb.ServerMessage(type="replay_end", ts_event=1723161599999231384)
    m.replay_end.source, m.replay_end.reason, m.replay_end.events = "x.gz", "to", 7
    assert tickcast.decode("protobuf", m.SerializeToString()) == tickcast.ReplayEnd(
        "x.gz", "to", 7, 1723161599999231384
    )


def test_bad_frames_raise_decode_error():
    for encoding, frame in [
        ("json", "not json"),
        ("json", '{"type":"wat"}'),
        ("json", '{"type":"trade","sym":"A"}'),
        ("msgpack", "text frame"),
        ("msgpack", b"\xc1"),
        ("protobuf", b"\xff\xff\xff"),
        ("protobuf", pb.ServerMessage(type="trade").SerializeToString()),  # no body
    ]:
        with pytest.raises(DecodeError):
            tickcast.decode(encoding, frame)


def test_requests():
    req = subscribe_request(["AAPL", "MSFT"], 10, from_seq={"AAPL": 1234}, epoch=17)
    assert json.loads(encode_request(req)) == {
        "op": "subscribe", "symbols": ["AAPL", "MSFT"], "depth": 10, "from_seq": {"AAPL": 1234}, "epoch": 17
    }  # fmt: skip
    assert subscribe_request(["BTCUSDT"], "full")["depth"] == "full"
    with pytest.raises(ValueError):
        subscribe_request(["AAPL"], 7)
    with pytest.raises(ValueError):
        subscribe_request(["AAPL"], from_seq={"MSFT": 1})
    with pytest.raises(ValueError):
        subscribe_request(["AAPL"], from_seq={"AAPL": 1}, from_ts=5)
    with pytest.raises(TypeError):
        subscribe_request("AAPL")

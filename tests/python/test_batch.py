"""Batched frames (``?batch=1``, docs/PROTOCOL.md "Batches"), read with
independent libraries: a batch is one valid document of its encoding (a
JSON array, a MessagePack array, a protobuf ``ServerMessage`` of type
``batch``), and the messages inside are exactly the unbatched stream's."""

from __future__ import annotations

import json
import time

import msgpack
import pytest
from websockets.exceptions import InvalidStatus

from tickcast_client import ENCODINGS, decode_frame, pb_to_dict

pytestmark = pytest.mark.timeout(120)


def unbatch(encoding: str, data, pb2) -> list[dict]:
    """The messages of one WebSocket message: a batch's, in order, or the
    one message it is."""
    if encoding == "json":
        assert isinstance(data, str), "json batches come in text frames"
        value = json.loads(data)
        if isinstance(value, list):
            assert value, "an empty batch"
            return value
        return [decode_frame(encoding, data, pb2)]
    assert isinstance(data, bytes)
    if encoding == "msgpack":
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
        if isinstance(value, list):
            assert value, "an empty batch"
            return value
        return [decode_frame(encoding, data, pb2)]
    m = pb2.ServerMessage()
    m.ParseFromString(data)
    if m.type == "batch":
        assert m.WhichOneof("body") is None and (m.sym, m.seq, m.ts_event) == ("", 0, 0), m
        assert len(m.batch) > 0, "an empty batch"
        return [pb_to_dict(x) for x in m.batch]
    assert len(m.batch) == 0, "batch set on a single message"
    return [pb_to_dict(m)]


def read_for(client, seconds: float, pb2) -> tuple[list[dict], list[int]]:
    """Every message a client gets for ``seconds``, and the size of each
    WebSocket message it came in."""
    msgs: list[dict] = []
    sizes: list[int] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            data = client.ws.recv(timeout=left)
        except TimeoutError:
            break
        got = unbatch(client.encoding, data, pb2)
        sizes.append(len(got))
        msgs.extend(got)
    return msgs, sizes


def check_stream(msgs: list[dict]) -> dict[tuple[str, int], dict]:
    """Every symbol opens with its snapshot, then consecutive seqs; returns
    the market messages by (sym, seq)."""
    last: dict[str, int] = {}
    market: dict[tuple[str, int], dict] = {}
    for m in msgs:
        if m["type"] == "snapshot":
            assert m["sym"] not in last, f"second snapshot for {m['sym']} without a conflated or reset"
            last[m["sym"]] = m["seq"]
        elif m["type"] in ("trade", "quote", "book"):
            assert m["sym"] in last, f"{m['sym']} update before its snapshot"
            assert m["seq"] == last[m["sym"]] + 1, f"{m['sym']}: seq {m['seq']} after {last[m['sym']]}"
            last[m["sym"]] = m["seq"]
            market[(m["sym"], m["seq"])] = m
        else:
            assert m["type"] == "ack", f"unexpected {m}"
    return market


@pytest.mark.parametrize("enc", ENCODINGS)
def test_batched_stream_is_the_unbatched_stream_regrouped(tickcast, pb2, enc):
    server = tickcast(feed="synthetic", extra=["--rate", "3000"])
    plain = server.connect(enc)
    batched = server.connect(enc, query=f"encoding={enc}&batch=1")
    for c in (plain, batched):
        c.send_json({"op": "subscribe", "symbols": ["*"], "depth": 10})
    got, sizes = read_for(batched, 3.0, pb2)
    ref, ref_sizes = read_for(plain, 0.5, pb2)
    more, more_sizes = read_for(plain, 3.0, pb2)
    ref += more
    assert set(ref_sizes + more_sizes) == {1}, "a client that did not ask gets no batch"

    assert sum(1 for s in sizes if s >= 2) >= 5, f"hardly any batches: {sizes[:50]}"
    assert len(got) > len(sizes), "batching regrouped nothing"
    batched_market = check_stream(got)
    plain_market = check_stream(ref)
    common = batched_market.keys() & plain_market.keys()
    assert len(common) > 1000, f"only {len(common)} updates in common"
    for key in common:
        assert batched_market[key] == plain_market[key], key
    snapshots = [m for m in got if m["type"] == "snapshot"]
    assert len(snapshots) == 100, "one snapshot per symbol, batched or not"


def test_bad_batch_value_is_http_400(tickcast):
    server = tickcast()
    with pytest.raises(InvalidStatus) as err:
        server.connect(query="encoding=json&batch=yes")
    assert err.value.response.status_code == 400
    assert b"batch" in err.value.response.body

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encode } from '@msgpack/msgpack';
import protobuf from 'protobufjs';
import { msgpackDecoder, jsonDecoder, encodeRequest } from '../src/index.js';
import { protobufDecoder } from '../src/protobuf.js';
import { readFileSync } from 'node:fs';

const TICKCAST_PROTO = readFileSync(new URL('../../../proto/tickcast.proto', import.meta.url), 'utf8');

const TS = 1700000000000012345n; // above 2^53: a double would round it

test('msgpack: 64-bit times exact as bigint, seq a number', () => {
  const frame = encode(
    { type: 'trade', sym: 'AAPL', seq: 42, ts_event: TS, ts_ingest: TS + 1n, px: 189.5, sz: 100.0, side: 'buy' },
    { useBigInt64: true },
  );
  const m = msgpackDecoder()(frame);
  assert.deepEqual(m, { type: 'trade', sym: 'AAPL', seq: 42, ts_event: TS, ts_ingest: TS + 1n, px: 189.5, sz: 100, side: 'buy' });
  const snap = msgpackDecoder()(encode({ type: 'snapshot', sym: 'X', seq: 0, ts_event: 0, ts_ingest: 0, quote: null, trade: null, depth: 10, book: { bids: [], asks: [], checksum: 0 } }));
  assert.equal(snap.ts_event, 0n);
});

test('json: the digits of 64-bit times are kept', () => {
  const m = jsonDecoder()(`{"type":"quote","sym":"AAPL","seq":43,"ts_event":${TS},"ts_ingest":${TS},"bid":189.49,"bid_sz":300.0,"ask":189.51,"ask_sz":200.0}`);
  assert.equal(m.ts_event, TS);
  assert.equal(m.bid, 189.49);
  const ack = jsonDecoder()('{"type":"ack","op":"subscribe","symbols":["AAPL"],"epoch":1764770000000000001,"recovered":{"AAPL":true}}');
  assert.equal(ack.epoch, 1764770000000000001n);
  assert.deepEqual(ack.recovered, { AAPL: true });
});

test('requests: an epoch goes out as a plain integer', () => {
  const text = encodeRequest({ op: 'subscribe', symbols: ['A'], from_seq: { A: 12 }, epoch: 1764770000000000001n });
  assert.equal(text, '{"op":"subscribe","symbols":["A"],"from_seq":{"A":12},"epoch":1764770000000000001}');
});

test('protobuf: the same objects as msgpack and JSON', () => {
  const root = protobuf.parse(TICKCAST_PROTO, { keepCase: true }).root;
  const T = root.lookupType('tickcast.v1.ServerMessage');
  const decode = protobufDecoder();
  const frame = (o) => T.encode(T.fromObject(o)).finish();
  const book = decode(frame({ type: 'book', sym: 'AAPL', seq: 44, ts_event: TS.toString(), ts_ingest: TS.toString(), book: { bids: [{ px: 189.49, sz: 300 }], asks: [], checksum: 3261367760 } }));
  assert.deepEqual(book, { type: 'book', sym: 'AAPL', seq: 44, ts_event: TS, ts_ingest: TS, bids: [[189.49, 300]], asks: [], checksum: 3261367760 });
  const snap = decode(frame({ type: 'snapshot', sym: 'AAPL', seq: 41, ts_event: '1', ts_ingest: '2', snapshot: { quote: { bid: 1, bid_sz: 2, ask: 3, ask_sz: 4 }, depth: 10, book: { bids: [{ px: 1, sz: 2 }], asks: [], checksum: 7 } } }));
  assert.deepEqual(snap.quote, { bid: 1, bid_sz: 2, ask: 3, ask_sz: 4 });
  assert.equal(snap.trade, null);
  assert.deepEqual(snap.book, { bids: [[1, 2]], asks: [], checksum: 7 });
  const ack = decode(frame({ type: 'ack', ack: { op: 'subscribe', symbols: ['A'], epoch: '1764770000000000001', recovered: { A: false } } }));
  assert.deepEqual(ack, { type: 'ack', op: 'subscribe', symbols: ['A'], epoch: 1764770000000000001n, recovered: { A: false } });
  const reset = decode(frame({ type: 'reset', sym: 'A', seq: 1500, reset: { reason: 4 } }));
  assert.deepEqual(reset, { type: 'reset', sym: 'A', seq: 1500, reason: 'history' });
  const trade = decode(frame({ type: 'trade', sym: 'A', seq: 1, ts_event: '5', ts_ingest: '6', trade: { px: 2, sz: 3, side: 2 } }));
  assert.equal(trade.side, 'sell');
});

test('batches (?batch=1) decode to { type: "batch", messages } in every encoding', () => {
  const trade = (seq) => ({ type: 'trade', sym: 'A', seq, ts_event: TS + BigInt(seq), ts_ingest: TS, px: 2, sz: 3, side: 'buy' });
  const mp = msgpackDecoder()(encode([trade(1), trade(2)], { useBigInt64: true }));
  assert.equal(mp.type, 'batch');
  assert.deepEqual(mp.messages.map((m) => [m.seq, m.ts_event]), [[1, TS + 1n], [2, TS + 2n]]);
  const js = jsonDecoder()(`[{"type":"trade","sym":"A","seq":1,"ts_event":${TS},"ts_ingest":${TS},"px":2,"sz":3,"side":"buy"},{"type":"ack","op":"ping","symbols":[]}]`);
  assert.deepEqual(js.messages.map((m) => m.type), ['trade', 'ack']);
  assert.equal(js.messages[0].ts_event, TS);
  const root = protobuf.parse(TICKCAST_PROTO, { keepCase: true }).root;
  const T = root.lookupType('tickcast.v1.ServerMessage');
  const one = (seq) => ({ type: 'trade', sym: 'A', seq, ts_event: (TS + BigInt(seq)).toString(), ts_ingest: '6', trade: { px: 2, sz: 3, side: 1 } });
  const pb = protobufDecoder()(T.encode(T.fromObject({ type: 'batch', batch: [one(1), one(2), one(3)] })).finish());
  assert.equal(pb.type, 'batch');
  assert.deepEqual(pb.messages.map((m) => [m.seq, m.ts_event, m.side]), [[1, TS + 1n, 'buy'], [2, TS + 2n, 'buy'], [3, TS + 3n, 'buy']]);
});

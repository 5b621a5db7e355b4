import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TickcastClient } from '../src/index.js';
import { FakeClock, fakeWebSocketClass } from '../test-support/fakes.js';

const EPOCH = 1764770000000000001n;

function setup(options = {}) {
  const WebSocket = fakeWebSocketClass();
  const clock = new FakeClock();
  const client = new TickcastClient('ws://server:8080/', {
    encoding: 'json',
    WebSocket,
    clock,
    random: () => 0.5,
    backoff: { initialMs: 200, maxMs: 1000 },
    idleTimeoutMs: 8000,
    ...options,
  });
  const events = [];
  for (const e of ['state', 'gap', 'reset', 'conflated', 'checksum', 'error']) client.on(e, (x) => events.push([e, x]));
  const ws = () => WebSocket.sockets[WebSocket.sockets.length - 1];
  return { client, clock, ws, events, sockets: WebSocket.sockets };
}

const snapshot = (sym, seq, bids = [[10, 1]], asks = [[11, 1]], checksum) => ({
  type: 'snapshot', sym, seq, ts_event: 1n, ts_ingest: 1n, quote: null, trade: null, depth: 10,
  book: { bids, asks, checksum: checksum ?? 0 },
});
const quote = (sym, seq) => ({ type: 'quote', sym, seq, ts_event: 2n, ts_ingest: 2n, bid: 10, bid_sz: 1, ask: 11, ask_sz: 1 });

function bookMsg(client, sym, seq, bids, asks) {
  // The checksum the server would send: computed on a copy of our book.
  const st = client.symbol(sym);
  const copy = new st.book.constructor(st.book.depth, st.book.bids, st.book.asks);
  copy.apply(bids, asks);
  return { type: 'book', sym, seq, ts_event: 3n, ts_ingest: 3n, bids, asks, checksum: copy.checksum() };
}

test('connects with the encoding and the token as subprotocols, then subscribes', () => {
  const { client, ws } = setup({ token: 'aaa.bbb.ccc', depth: 25 });
  client.connect();
  client.subscribe(['AAPL']);
  assert.equal(ws().url, 'ws://server:8080/ws?encoding=json&batch=1');
  assert.deepEqual(ws().protocols, ['tickcast.json', 'base64url.bearer.aaa.bbb.ccc']);
  ws().serverOpen();
  assert.deepEqual(ws().sent, [{ op: 'subscribe', symbols: ['AAPL'], depth: 25 }]);
  const q = setup({ token: 'aaa.bbb.ccc', tokenVia: 'query' });
  q.client.connect();
  assert.equal(q.ws().url, 'ws://server:8080/ws?encoding=json&batch=1&token=aaa.bbb.ccc');
  const single = setup({ batch: false });
  single.client.connect();
  assert.equal(single.ws().url, 'ws://server:8080/ws?encoding=json');
  assert.deepEqual(q.ws().protocols, ['tickcast.json']);
});

test('snapshot then updates; a seq jump is a gap, resynced with a fresh snapshot', () => {
  const { client, ws, events } = setup();
  client.subscribe(['AAPL']);
  client.connect();
  ws().serverOpen();
  ws().serverSend({ type: 'ack', op: 'subscribe', symbols: ['AAPL'], epoch: EPOCH });
  ws().serverSend(snapshot('AAPL', 41));
  ws().serverSend(quote('AAPL', 42));
  ws().serverSend(bookMsg(client, 'AAPL', 43, [[10.5, 2]], []));
  const st = client.symbol('AAPL');
  assert.equal(st.seq, 43);
  assert.deepEqual(st.book.bids, [[10.5, 2], [10, 1]]);
  assert.equal(client.epoch, EPOCH);
  ws().sent.length = 0;
  ws().serverSend(quote('AAPL', 45));
  assert.deepEqual(events.filter((e) => e[0] === 'gap').map((e) => e[1]), [{ sym: 'AAPL', expected: 44, got: 45 }]);
  assert.deepEqual(ws().sent, [{ op: 'unsubscribe', symbols: ['AAPL'] }, { op: 'subscribe', symbols: ['AAPL'] }]);
  ws().serverSend(quote('AAPL', 46)); // queued before the resync: ignored
  assert.equal(client.symbol('AAPL').seq, 43);
  ws().serverSend(snapshot('AAPL', 50));
  assert.equal(client.symbol('AAPL').seq, 50);
  assert.equal(client.counters.gaps, 1);
  assert.equal(client.counters.recovered, 1);
});

test('a checksum mismatch resyncs the symbol', () => {
  const { client, ws } = setup();
  client.subscribe(['AAPL']);
  client.connect();
  ws().serverOpen();
  ws().serverSend(snapshot('AAPL', 1));
  ws().sent.length = 0;
  ws().serverSend({ type: 'book', sym: 'AAPL', seq: 2, ts_event: 1n, ts_ingest: 1n, bids: [[10, 3]], asks: [], checksum: 12345 });
  assert.equal(client.counters.checksumErrors, 1);
  assert.deepEqual(ws().sent.map((r) => r.op), ['unsubscribe', 'subscribe']);
});

test('conflated and reset: the snapshot that follows is taken, whatever its seq', () => {
  const { client, ws } = setup();
  client.subscribe(['*']);
  client.connect();
  ws().serverOpen();
  ws().serverSend(snapshot('A', 10));
  ws().serverSend(snapshot('B', 20));
  ws().serverSend({ type: 'conflated', symbols: [{ sym: 'A', from_seq: 11, to_seq: 30, trades: 1, quotes: 19, books: 0 }] });
  ws().serverSend(quote('A', 11)); // cannot come, but would be ignored
  ws().serverSend(snapshot('A', 30));
  ws().serverSend(quote('A', 31));
  assert.equal(client.symbol('A').seq, 31);
  ws().serverSend({ type: 'reset', sym: 'B', seq: 5, reason: 'epoch' });
  assert.equal(client.symbol('B').book, null);
  ws().serverSend(snapshot('B', 5));
  ws().serverSend(quote('B', 6));
  assert.equal(client.symbol('B').seq, 6);
  assert.deepEqual([client.counters.gaps, client.counters.conflated, client.counters.resets, client.counters.recovered], [0, 1, 1, 2]);
});

test('reconnects with backoff and full jitter, then resumes by seq with the epoch', () => {
  const { client, ws, clock, sockets, events } = setup();
  client.subscribe(['AAPL', 'MSFT', '*']);
  client.connect();
  ws().serverOpen();
  ws().serverSend({ type: 'ack', op: 'subscribe', symbols: ['AAPL', 'MSFT'], epoch: EPOCH });
  ws().serverSend(snapshot('AAPL', 100));
  ws().serverSend(snapshot('MSFT', 7));
  ws().serverSend(quote('AAPL', 101));
  ws().serverClose(1001, 'server shutting down');
  assert.equal(client.state, 'reconnecting');
  // random() = 0.5: attempt n waits half of min(1000, 200 * 2^n).
  const delays = [];
  for (let attempt = 0; attempt < 5; attempt++) {
    const before = sockets.length;
    const wait = client.nextRetryAt - clock.now();
    delays.push(wait);
    clock.advance(wait - 1);
    assert.equal(sockets.length, before, 'not before the delay');
    clock.advance(1);
    assert.equal(sockets.length, before + 1);
    if (attempt < 4) ws().serverClose(1006);
  }
  assert.deepEqual(delays, [100, 200, 400, 500, 500]);
  assert.ok(events.some(([e, x]) => e === 'state' && x.state === 'reconnecting' && x.nextRetryAt !== null));
  ws().serverOpen();
  assert.deepEqual(ws().sent, [
    { op: 'subscribe', symbols: ['AAPL', 'MSFT'], from_seq: { AAPL: 101, MSFT: 7 }, epoch: Number(EPOCH) },
    { op: 'subscribe', symbols: ['*'] },
  ]);
  // The raw text carries the epoch's every digit.
  ws().serverSend({ type: 'ack', op: 'subscribe', symbols: ['AAPL', 'MSFT'], epoch: EPOCH, recovered: { AAPL: true, MSFT: false } });
  ws().serverSend(quote('AAPL', 102)); // the missed updates follow
  ws().serverSend({ type: 'reset', sym: 'MSFT', seq: 9, reason: 'history' });
  ws().serverSend(snapshot('MSFT', 9));
  assert.equal(client.symbol('AAPL').seq, 102);
  assert.equal(client.symbol('MSFT').seq, 9);
  assert.deepEqual([client.counters.resumed, client.counters.gaps, client.counters.resets], [1, 0, 1]);
  // An answered subscribe starts the backoff over.
  ws().serverClose(1006);
  assert.equal(client.nextRetryAt - clock.now(), 100);
});

test('the epoch goes out with all its digits', () => {
  const { client, ws } = setup();
  client.subscribe(['A']);
  client.connect();
  ws().serverOpen();
  ws().serverSend({ type: 'ack', op: 'subscribe', symbols: ['A'], epoch: EPOCH });
  ws().serverSend(snapshot('A', 3));
  const sent = [];
  const original = ws().constructor.prototype.send;
  ws().serverClose(1006);
  ws().constructor.prototype.send = function (text) {
    sent.push(text);
    original.call(this, text);
  };
  client.clock.advance(1000);
  ws().serverOpen();
  assert.match(sent[0], /"epoch":1764770000000000001\}$/);
});

test('without resume, a reconnect resubscribes for snapshots', () => {
  const { client, ws, clock } = setup({ resume: false });
  client.subscribe(['A']);
  client.connect();
  ws().serverOpen();
  ws().serverSend({ type: 'ack', op: 'subscribe', symbols: ['A'], epoch: EPOCH });
  ws().serverSend(snapshot('A', 3));
  ws().serverClose(1006);
  clock.advance(1000);
  ws().serverOpen();
  assert.deepEqual(ws().sent, [{ op: 'subscribe', symbols: ['A'] }]);
  ws().serverSend(quote('A', 9)); // before its snapshot: ignored, no gap
  assert.equal(client.counters.gaps, 0);
});

test('a handshake that never completes is given up after the idle timeout, then retried', () => {
  const { client, clock, sockets } = setup();
  client.subscribe(['A']);
  client.connect();
  clock.advance(7000);
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].closed, null, 'not yet');
  clock.advance(3000);
  assert.equal(sockets[0].closed?.code, 4000, 'no open within 8 s: dropped');
  assert.equal(client.state, 'reconnecting');
  clock.advance(1000);
  assert.equal(sockets.length, 2, 'retried within the backoff');
});

test('a batch is handled as its messages, in order, and counted one by one', () => {
  const { client, ws, events } = setup();
  client.subscribe(['AAPL']);
  client.connect();
  ws().serverOpen();
  const ticks = [];
  client.on('update', (e) => ticks.push(e.message.seq));
  const batch = [
    { type: 'ack', op: 'subscribe', symbols: ['AAPL'], epoch: EPOCH },
    snapshot('AAPL', 41),
    quote('AAPL', 42),
    quote('AAPL', 43),
  ];
  ws().onmessage({ data: JSON.stringify(batch, (_, v) => (typeof v === 'bigint' ? Number(v) : v)) });
  assert.equal(client.counters.messages, 4);
  assert.deepEqual(ticks, [42, 43]);
  assert.equal(client.symbol('AAPL').seq, 43);
  assert.equal(client.counters.gaps, 0);
  assert.deepEqual(events.filter(([e]) => e === 'gap'), []);
});

test('the watchdog probes a silent connection at half the timeout, then drops it', () => {
  const { client, ws, clock, sockets } = setup();
  client.subscribe(['A']);
  client.connect();
  ws().serverOpen();
  clock.advance(4000);
  assert.deepEqual(ws().sent.at(-1), { op: 'ping' });
  // An answer keeps it alive, and is not reported.
  let acks = 0;
  client.on('ack', () => acks++);
  ws().serverSend({ type: 'ack', op: 'ping', symbols: [] });
  assert.equal(acks, 0, 'the probe\'s ack is not reported');
  clock.advance(6000);
  assert.equal(sockets.length, 1);
  clock.advance(4000);
  assert.equal(sockets[0].closed?.code, 4000, 'silent for 8 s: dropped');
  assert.equal(client.state, 'reconnecting');
  clock.advance(1000);
  assert.equal(sockets.length, 2);
});

test('close() stops for good', () => {
  const { client, ws, clock, sockets } = setup();
  client.connect();
  ws().serverOpen();
  client.close();
  assert.equal(client.state, 'closed');
  clock.advance(60_000);
  assert.equal(sockets.length, 1);
});

test('replay: updates from seq 1 without a snapshot, controls, and seek', () => {
  const { client, ws } = setup({ replay: { source: 'eth.gz', speed: 10, depth: 10 } });
  client.connect();
  assert.equal(ws().url, 'ws://server:8080/replay?encoding=json&batch=1&source=eth.gz&speed=10&depth=10');
  ws().serverOpen();
  assert.deepEqual(ws().sent, []);
  ws().serverSend({ type: 'book', sym: 'ETHUSDT', seq: 1, ts_event: 5n, ts_ingest: 5n, bids: [[1, 1]], asks: [[2, 1]], checksum: 0 });
  assert.equal(client.counters.checksumErrors, 1, 'a wrong checksum is caught');
  // A replay resyncs by seeking to where it was.
  assert.deepEqual(ws().sent, [{ op: 'seek', ts: 5 }]);
  client.pause();
  client.setSpeed('max');
  client.seek(1723161300000000000n);
  assert.deepEqual(ws().sent.slice(1, 3), [{ op: 'pause' }, { op: 'speed', value: 'max' }]);
  assert.equal(ws().sent.at(-1).op, 'seek');
  ws().serverSend(snapshot('ETHUSDT', 500));
  ws().serverSend(quote('ETHUSDT', 501));
  assert.equal(client.symbol('ETHUSDT').seq, 501);
});

test('a refreshed token is sent and used on reconnect', async () => {
  const { client, ws } = setup({ token: 'old.t.k', refreshToken: () => 'new.t.k' });
  client.connect();
  ws().serverOpen();
  ws().serverSend({ type: 'token_expiring', expires_at: 1767225600 });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(ws().sent.at(-1), { op: 'refresh', token: 'new.t.k' });
  assert.deepEqual(client.protocols(), ['tickcast.json', 'base64url.bearer.new.t.k']);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Book, crc32, backoffDelay } from '../src/index.js';

test('crc32 is zlib crc32', () => {
  assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
});

test('the checksum of the worked example in docs/PROTOCOL.md', () => {
  const book = new Book(10, [[189.48, 100.0], [189.47, 500.0]], [[189.5, 200.0]]);
  assert.equal(book.checksum(), 1650949194);
  book.apply([[189.49, 300.0]], []);
  assert.deepEqual(book.bids.map((l) => l[0]), [189.49, 189.48, 189.47]);
  assert.equal(book.checksum(), 3261367760);
  assert.equal(new Book(10).checksum(), 0);
});

test('levels are set, deleted at size 0, kept sorted and trimmed to depth', () => {
  const book = new Book(3);
  book.apply([[10, 1], [12, 1], [11, 1], [9, 1]], [[13, 1], [15, 1], [14, 1], [16, 1]]);
  assert.deepEqual(book.bids, [[12, 1], [11, 1], [10, 1]]);
  assert.deepEqual(book.asks, [[13, 1], [14, 1], [15, 1]]);
  book.apply([[11, 0], [12, 5], [8, 0]], [[13, 0]]);
  assert.deepEqual(book.bids, [[12, 5], [10, 1]]);
  assert.deepEqual(book.asks, [[14, 1], [15, 1]]);
});

test('the checksum covers at most 10 levels a side, asks first', () => {
  const bids = Array.from({ length: 20 }, (_, i) => [100 - i, 1]);
  const asks = Array.from({ length: 20 }, (_, i) => [101 + i, 2]);
  const deep = new Book(20, bids, asks);
  const ten = new Book(10, bids.slice(0, 10), asks.slice(0, 10));
  assert.equal(deep.checksum(), ten.checksum());
  const bytes = new Uint8Array(320);
  const view = new DataView(bytes.buffer);
  let off = 0;
  for (const [px, sz] of [...asks.slice(0, 10), ...bids.slice(0, 10)]) {
    view.setFloat64(off, px, true);
    view.setFloat64(off + 8, sz, true);
    off += 16;
  }
  assert.equal(deep.checksum(), crc32(bytes));
});

test('backoff is full jitter under an exponential ceiling', () => {
  const policy = { initialMs: 100, maxMs: 5000 };
  assert.equal(backoffDelay(0, policy, () => 0), 0);
  assert.equal(backoffDelay(0, policy, () => 0.999999), 99);
  assert.equal(backoffDelay(3, policy, () => 0.5), 400);
  assert.equal(backoffDelay(10, policy, () => 0.999999), 4999);
  assert.equal(backoffDelay(1000, policy, () => 0.5), 2500);
  for (let a = 0; a < 40; a++) {
    const d = backoffDelay(a, policy);
    assert.ok(d >= 0 && d < Math.min(5000, 100 * 2 ** a));
  }
});

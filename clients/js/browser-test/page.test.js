// The trading page in headless Chromium against a real tickcast:
// it loads cleanly and prices move; during a replay of the Binance capture
// the ETHUSDT ladder it shows is the server's book at the seq it shows; and
// a server killed and restarted is reconnected to, within the backoff
// bound, without an unannounced gap. Screenshots go to target/browser-artifacts.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ARTIFACTS, freePort, startServer, launchBrowser, openPage, until, sleep } from '../test-support/harness.js';

let browser;
let server;

before(async () => {
  browser = await launchBrowser();
  server = await startServer(await freePort(), ['--replay-dir', 'tests/data/binance']);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const text = (page, id) => page.evaluate((i) => document.getElementById(i).textContent, id);
// A click that does not wait for animation frames (a loaded machine may
// paint slowly; the handler is what is tested).
const click = (page, id) => page.evaluate((i) => document.getElementById(i).click(), id);

const clientState = (page) => page.evaluate(() => {
  const c = window.tickcastPage.client;
  return { state: c.state, counters: { ...c.counters }, symbols: c.symbols.size };
});

test('the page loads with no console error, fills the watchlist, and prices change', async () => {
  const { page, problems } = await openPage(browser, `${server.url}/?sym=AAPL`);
  await until('a watchlist of the synthetic symbols', () => page.evaluate(() => document.querySelectorAll('#watchlist tbody tr').length >= 100));
  await until('AAPL priced', () => page.evaluate(() => window.tickcastPage.watch('AAPL')?.[1] !== '—'));
  const first = await page.evaluate(() => window.tickcastPage.watch('AAPL')[1]);
  const seq0 = await page.evaluate(() => window.tickcastPage.ladder().seq);
  await until('AAPL to tick', () => page.evaluate((s) => window.tickcastPage.ladder().seq > s, seq0));
  await until('some last price to change', () => page.evaluate((p) => {
    return window.tickcastPage.watch('AAPL')[1] !== p || [...document.querySelectorAll('#watchlist td.up, #watchlist td.down')].length > 0;
  }, first));
  assert.equal(await text(page, 'st-state'), 'open');
  assert.equal(await text(page, 'st-enc'), 'msgpack');
  const ladder = await page.evaluate(() => window.tickcastPage.ladder());
  assert.equal(ladder.sym, 'AAPL');
  assert.ok(ladder.bids.length > 0 && ladder.asks.length > 0, 'the ladder shows both sides');
  assert.ok(ladder.bids[0][0] < ladder.asks[0][0], 'best bid below best ask');
  await sleep(1500); // a status bar with rates in it
  await page.screenshot({ path: join(ARTIFACTS, 'page-live.png') });
  const { counters } = await clientState(page);
  assert.equal(counters.gaps, 0, 'no unannounced gap');
  assert.equal(counters.checksumErrors, 0);
  assert.deepEqual(problems, []);
  await page.close();
});

test('every encoding decodes on the page (json, protobuf)', async () => {
  for (const encoding of ['json', 'protobuf']) {
    const { page, problems } = await openPage(browser, `${server.url}/?sym=MSFT&encoding=${encoding}`);
    await until(`MSFT ticking over ${encoding}`, () => page.evaluate(() => window.tickcastPage.ladder().seq > 0));
    const seq = await page.evaluate(() => window.tickcastPage.ladder().seq);
    await until(`MSFT ticking again over ${encoding}`, () => page.evaluate((s) => window.tickcastPage.ladder().seq > s, seq));
    assert.equal(await text(page, 'st-enc'), encoding);
    const { counters } = await clientState(page);
    assert.equal(counters.checksumErrors, 0);
    assert.deepEqual(problems, []);
    await page.close();
  }
});

test('during a replay of the capture, the ETHUSDT ladder is the server\'s book at the displayed seq', async () => {
  const { page, problems } = await openPage(browser, `${server.url}/?replay=ethusdt_20240808.gz&sym=ETHUSDT`);
  await until('replay mode', () => page.evaluate(() => window.tickcastPage.mode === 'replay'));
  let compared = 0;
  for (let attempt = 0; attempt < 6 && compared === 0; attempt++) {
    // Let it play, then pause and let the last frames land.
    await until('the replay to move on', () => page.evaluate(() => window.tickcastPage.ladder().seq > 500));
    await sleep(300 + 200 * attempt);
    await click(page, 'replay-play');
    assert.equal(await text(page, 'replay-play'), 'Play');
    let shown = await page.evaluate(() => window.tickcastPage.ladder());
    await until('the paused ladder to settle', async () => {
      await sleep(400);
      const now = await page.evaluate(() => window.tickcastPage.ladder());
      const settled = now.seq === shown.seq;
      shown = now;
      return settled;
    });
    const held = await page.evaluate(() => {
      const st = window.tickcastPage.client.symbol('ETHUSDT');
      return { seq: st.seq, ts: st.tsEvent.toString(), bids: st.book.bids.slice(0, 10), asks: st.book.asks.slice(0, 10) };
    });
    assert.equal(shown.sym, 'ETHUSDT');
    assert.equal(shown.seq, held.seq, 'the page shows the seq it holds');
    assert.deepEqual({ bids: shown.bids, asks: shown.asks }, { bids: held.bids, asks: held.asks }, 'the ladder shows the book it holds');
    // The server's own book at that seq: a fresh replay starting just after
    // that event begins with a snapshot of the state it left.
    const server_ = await page.evaluate(async (ts) => {
      const from = (BigInt(ts) + 1n).toString();
      const ws = new WebSocket(`ws://${location.host}/replay?source=ethusdt_20240808.gz&symbols=ETHUSDT&depth=10&speed=max&encoding=json&from=${from}`);
      return await new Promise((res, rej) => {
        const timer = setTimeout(() => rej(new Error('no snapshot within 15 s')), 15_000);
        ws.onmessage = (e) => {
          const m = JSON.parse(e.data);
          if (m.type !== 'snapshot') return;
          clearTimeout(timer);
          ws.close();
          res({ seq: m.seq, bids: m.book.bids, asks: m.book.asks });
        };
        ws.onerror = () => rej(new Error('replay socket failed'));
      });
    }, held.ts);
    if (server_.seq !== held.seq) {
      // Several events at that same ns: the snapshot lands after the last
      // of them. Play on and compare at another seq.
      await click(page, 'replay-play');
      continue;
    }
    assert.deepEqual({ bids: shown.bids, asks: shown.asks }, { bids: server_.bids, asks: server_.asks });
    assert.ok(shown.bids.length === 10 && shown.asks.length === 10, 'a full ten-level ladder');
    compared++;
  }
  assert.equal(compared, 1, 'compared the ladder with the server\'s book');
  await page.screenshot({ path: join(ARTIFACTS, 'page-replay-ethusdt.png') });
  const { counters } = await clientState(page);
  assert.deepEqual([counters.gaps, counters.checksumErrors], [0, 0]);
  // Seek back to the start and play at max: the ladder follows.
  await page.evaluate(() => {
    const s = document.getElementById('replay-seek');
    s.value = '60000';
    s.dispatchEvent(new Event('change'));
  });
  await click(page, 'replay-play');
  await until('the replay to play from the seek', () => page.evaluate(() => window.tickcastPage.client.symbol('ETHUSDT')?.seq > 0));
  assert.deepEqual(problems, []);
  await page.close();
});

test('a server killed and restarted: the page shows it, reconnects within the backoff bound, and resumes without a gap', async () => {
  const port = await freePort();
  let live = await startServer(port);
  const BACKOFF_MAX = 2000;
  const { page } = await openPage(browser, `http://127.0.0.1:${port}/?sym=AAPL&backoff_max=${BACKOFF_MAX}`);
  try {
    await until('every symbol held', async () => (await clientState(page)).symbols >= 100);
    await until('AAPL ticking', () => page.evaluate(() => window.tickcastPage.ladder().seq > 5));
    await live.stop('SIGKILL');
    await until('the page to show the reconnect', async () => {
      const shown = await text(page, 'st-state');
      return shown === 'reconnecting';
    }, 60_000).catch(async (e) => {
      throw new Error(`${e.message}; status bar ${await text(page, 'st-state')}, client ${JSON.stringify(await clientState(page))}`);
    });
    await until('a retry countdown', async () => /retry in/.test(await text(page, 'st-retry')), 30_000);
    await page.screenshot({ path: join(ARTIFACTS, 'page-reconnecting.png') });
    await sleep(1000);
    const before = await clientState(page);
    live = await startServer(port);
    const upAt = Date.now();
    await until('the page to come back', async () => (await clientState(page)).state === 'open', 30_000, 25);
    const took = Date.now() - upAt;
    // The attempt after the server is back starts at most BACKOFF_MAX
    // later; allow the handshake time on a loaded machine on top.
    assert.ok(took <= BACKOFF_MAX + 5000, `reconnected ${took} ms after the server was back`);
    // Every symbol is made whole again: resumed, or announced (a reset, or
    // conflation) and its snapshot taken.
    await until('every symbol recovered', async () => {
      const now = await clientState(page);
      return now.counters.recovered - before.counters.recovered >= 100;
    }, 60_000);
    const seq = await page.evaluate(() => window.tickcastPage.ladder().seq);
    await until('AAPL ticking again', () => page.evaluate((s) => window.tickcastPage.ladder().seq > s, seq));
    const after = await clientState(page);
    assert.equal(after.counters.gaps, 0, 'no unannounced gap');
    assert.equal(after.counters.checksumErrors, 0);
    // A restarted server has a new epoch: the resume is answered with a
    // reset (announced) and a snapshot per symbol the page held.
    const announced = after.counters.resets + after.counters.resumed - before.counters.resets - before.counters.resumed;
    assert.ok(announced >= 1, 'the resume was answered');
    assert.equal(await text(page, 'st-state'), 'open');
  } finally {
    await page.close();
    await live.stop();
  }
});

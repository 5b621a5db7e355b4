// Browser benchmark of the JavaScript client and the trading page, in
// Debian's headless Chromium against a real tickcast:
//
//   1. decode+apply: frames captured from the server (synthetic feed, all
//      symbols, depth 10) are fed to a TickcastClient in the page, msgpack
//      and JSON; ns per message, median of 7 passes.
//   2. main-thread time per second: the trading page on the live feed at
//      --rate 10000 and 50000 updates/s; Chromium's own counters
//      (Performance.getMetrics: TaskDuration, ScriptDuration, layout and
//      style) over a 10 s window, median of 3 windows.
//
// node bench/run.mjs [--bin target/release/tickcast] [--seconds 10]
// Prints a Markdown table for BENCHMARKS.md.

import { join } from 'node:path';
import { freePort, startServer, launchBrowser, until, sleep, REPO } from '../test-support/harness.js';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
process.env.TICKCAST_BIN = arg('--bin', process.env.TICKCAST_BIN ?? join(REPO, 'target/release/tickcast'));
const SECONDS = Number(arg('--seconds', '10'));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const browser = await launchBrowser();

async function decodeApply() {
  const server = await startServer(await freePort(), ['--rate', '20000']);
  const page = await browser.newPage();
  await page.goto(`${server.url}/?sym=AAPL`);
  await until('the page', () => page.evaluate(() => window.tickcastPage?.client?.state === 'open'));
  // Only the capture runs: the page's own client stops.
  await page.evaluate(() => window.tickcastPage.client.close());
  const out = {};
  for (const encoding of ['msgpack', 'json']) {
    out[encoding] = await page.evaluate(async ({ encoding, count }) => {
      const { TickcastClient } = window.tickcastPage.lib;
      const frames = await new Promise((res, rej) => {
        const got = [];
        const ws = new WebSocket(`ws://${location.host}/ws?encoding=${encoding}`);
        ws.binaryType = 'arraybuffer';
        ws.onopen = () => ws.send(JSON.stringify({ op: 'subscribe', symbols: ['*'], depth: 10 }));
        ws.onmessage = (e) => {
          got.push(e.data);
          if (got.length === count) {
            ws.close();
            res(got);
          }
        };
        ws.onerror = () => rej(new Error('capture failed'));
        setTimeout(() => rej(new Error(`captured only ${got.length} frames`)), 60_000);
      });
      class NoSocket {}
      const passes = [];
      for (let pass = 0; pass < 7; pass++) {
        const client = new TickcastClient('ws://x', { encoding, WebSocket: NoSocket, idleTimeoutMs: 0 });
        client.wanted.add('*');
        const t0 = performance.now();
        for (const f of frames) client.receive(f);
        const ms = performance.now() - t0;
        if (client.counters.gaps || client.counters.checksumErrors) throw new Error('the capture has a gap');
        passes.push((ms * 1e6) / frames.length);
      }
      const bytes = frames.reduce((a, f) => a + (typeof f === 'string' ? f.length : f.byteLength), 0);
      passes.sort((a, b) => a - b);
      return { nsPerMsg: passes[3], bytesPerMsg: bytes / frames.length, frames: frames.length };
    }, { encoding, count: 50_000 });
  }
  await page.close();
  await server.stop();
  return out;
}

async function mainThread(rate) {
  const server = await startServer(await freePort(), ['--rate', String(rate)]);
  const page = await browser.newPage({ viewport: { width: 1280, height: 760 } });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable', { timeDomain: 'threadTicks' });
  await page.goto(`${server.url}/?sym=AAPL`);
  await until('the page', () => page.evaluate(() => window.tickcastPage?.client?.state === 'open'));
  await sleep(3000);
  const sample = async () => {
    const { metrics } = await cdp.send('Performance.getMetrics');
    const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
    const c = await page.evaluate(() => ({ ...window.tickcastPage.client.counters }));
    return { t: Date.now(), m, c };
  };
  const windows = [];
  for (let w = 0; w < 3; w++) {
    const a = await sample();
    await sleep(SECONDS * 1000);
    const b = await sample();
    const s = (b.t - a.t) / 1000;
    const per = (k) => (1000 * (b.m[k] - a.m[k])) / s; // ms per second
    windows.push({
      task: per('TaskDuration'),
      script: per('ScriptDuration'),
      layoutStyle: per('LayoutDuration') + per('RecalcStyleDuration'),
      msgs: (b.c.messages - a.c.messages) / s,
      conflated: b.c.conflated - a.c.conflated,
    });
  }
  await page.close();
  await server.stop();
  const pick = (k) => median(windows.map((x) => x[k]));
  return { rate, task: pick('task'), script: pick('script'), layoutStyle: pick('layoutStyle'), msgs: pick('msgs'), conflated: windows.reduce((a, x) => a + x.conflated, 0) };
}

const da = await decodeApply();
const rows = [];
for (const rate of [10_000, 50_000]) rows.push(await mainThread(rate));
await browser.close();

console.log('\n| encoding | decode+apply per message (median of 7) | bytes per message |');
console.log('|---|---|---|');
for (const [enc, r] of Object.entries(da)) console.log(`| ${enc} | ${(r.nsPerMsg / 1000).toFixed(2)} µs | ${r.bytesPerMsg.toFixed(0)} |`);
console.log('\n| feed rate | messages/s reaching the page | main-thread busy ms per s | of which script | layout + style | conflations in 3 windows |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.rate.toLocaleString('en-US')} updates/s | ${Math.round(r.msgs).toLocaleString('en-US')} | ${r.task.toFixed(0)} | ${r.script.toFixed(0)} | ${r.layoutStyle.toFixed(0)} | ${r.conflated} |`);
}

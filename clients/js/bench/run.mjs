// Browser benchmark of the JavaScript client and the trading page, in
// Debian's headless Chromium against a real tickcast:
//
//   1. decode+apply: frames captured from the server (synthetic feed, all
//      symbols, depth 10) are fed to a TickcastClient in the page, msgpack
//      and JSON; ns per message, median of 7 passes.
//   2. main-thread time per second: the trading page on the live feed at
//      --rate 10000 and 50000 updates/s; Chromium's own counters
//      (Performance.getMetrics: TaskDuration, ScriptDuration, layout and
//      style) over a 10 s window, median of 3 windows. Baseline: what a bare
//      WebSocket (no decoding, no page) receives in the same Chromium.
//      This part drives Chromium over a bare DevTools connection
//      (launchBareChromium): playwright-core's Network domain copies every
//      WebSocket frame to the driver, which caps what the page receives
//      (the figure with playwright is printed beside it).
//
// node bench/run.mjs [--bin target/release/tickcast] [--seconds 10]
// Prints a Markdown table for BENCHMARKS.md.

import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { freePort, startServer, launchBrowser, launchBareChromium, until, sleep, REPO } from '../test-support/harness.js';

const arg = (name, dflt) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
};
process.env.TICKCAST_BIN = resolve(arg('--bin', process.env.TICKCAST_BIN ?? join(REPO, 'target/release/tickcast')));
const SECONDS = Number(arg('--seconds', '10'));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const browser = await launchBrowser();

async function decodeApply() {
  const server = await startServer(await freePort(), ['--rate', '20000']);
  const page = await browser.newPage();
  const cdp = await page.context().newCDPSession(page);
  // Main-thread CPU time (thread ticks), so a machine shared with other
  // work does not count the time this thread was not running.
  await cdp.send('Performance.enable', { timeDomain: 'threadTicks' });
  const cpuMs = async () => {
    const { metrics } = await cdp.send('Performance.getMetrics');
    return 1000 * metrics.find((m) => m.name === 'TaskDuration').value;
  };
  await page.goto(`${server.url}/?sym=AAPL`);
  await until('the page', () => page.evaluate(() => window.tickcastPage?.client?.state === 'open'));
  // Only the capture runs: the page's own client stops.
  await page.evaluate(() => window.tickcastPage.client.close());
  const out = {};
  for (const encoding of ['msgpack', 'json']) {
    const info = await page.evaluate(async ({ encoding, count }) => {
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
        setTimeout(() => rej(new Error(`captured only ${got.length} frames`)), 120_000);
      });
      window.benchFrames = frames;
      const bytes = frames.reduce((a, f) => a + (typeof f === 'string' ? f.length : f.byteLength), 0);
      return { frames: frames.length, bytesPerMsg: bytes / frames.length };
    }, { encoding, count: 30_000 });
    const cpu = [];
    const wall = [];
    for (let pass = 0; pass < 7; pass++) {
      const before = await cpuMs();
      const ms = await page.evaluate((encoding) => {
        const { TickcastClient } = window.tickcastPage.lib;
        class NoSocket {}
        const client = new TickcastClient('ws://x', { encoding, WebSocket: NoSocket, idleTimeoutMs: 0 });
        client.wanted.add('*');
        const t0 = performance.now();
        for (const f of window.benchFrames) client.receive(f);
        const took = performance.now() - t0;
        if (client.counters.gaps || client.counters.checksumErrors) throw new Error('the capture has a gap');
        return took;
      }, encoding);
      cpu.push(((await cpuMs()) - before) * 1e6 / info.frames);
      wall.push((ms * 1e6) / info.frames);
    }
    out[encoding] = { ...info, cpuNs: median(cpu), wallNs: median(wall) };
  }
  await page.close();
  await server.stop();
  return out;
}

/**
 * CPU time of every thread of the Chromium whose processes name `profile`,
 * summed by thread name (Linux /proc; clock ticks converted to ms).
 */
function chromiumThreadsMs(profile) {
  const out = {};
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let cmd;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (!cmd.includes(profile)) continue;
    let tasks = [];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      try {
        const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const ms = ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, USER_HZ 100
        // Group a pool's numbered threads (ThreadPoolForeg, CompositorTileW...).
        const group = name.replace(/\d+$/, '');
        out[group] = (out[group] ?? 0) + ms;
      } catch {
        // the thread ended
      }
    }
  }
  return out;
}

/** In-page code: messages/s a bare WebSocket receives over `seconds`. */
const bareRateExpr = (seconds) => `new Promise((res) => {
  const ws = new WebSocket('ws://' + location.host + '/ws?encoding=msgpack');
  ws.binaryType = 'arraybuffer';
  let n = 0;
  let t0 = 0;
  ws.onopen = () => ws.send(JSON.stringify({ op: 'subscribe', symbols: ['*'] }));
  ws.onmessage = () => {
    if (++n === 1000) t0 = performance.now();
  };
  setTimeout(() => {
    ws.close();
    res(((n - 1000) * 1000) / (performance.now() - t0));
  }, ${seconds} * 1000);
})`;

/** Messages/s a bare WebSocket receives on a page that does nothing else,
 * in a bare-DevTools Chromium and in a playwright-driven one. */
async function bareSocket(server, bare) {
  const page = await bare.open(`${server.url}/healthz`);
  const rate = await page.evaluate(bareRateExpr(SECONDS));
  await page.close();
  const pw = await browser.newPage();
  await pw.goto(`${server.url}/healthz`);
  const withPlaywright = await pw.evaluate(bareRateExpr(SECONDS));
  await pw.close();
  return { rate, withPlaywright };
}

async function mainThread(rate, bare) {
  const server = await startServer(await freePort(), ['--rate', String(rate)]);
  const baseline = await bareSocket(server, bare);
  const page = await bare.open('about:blank');
  await page.send('Emulation.setDeviceMetricsOverride', { width: 1280, height: 760, deviceScaleFactor: 1, mobile: false });
  await page.send('Performance.enable', { timeDomain: 'threadTicks' });
  await page.goto(`${server.url}/?sym=AAPL`);
  await until('the page', () => page.evaluate("window.tickcastPage?.client?.state === 'open'"));
  await sleep(3000);
  // Animation frames the page gets: smooth is ~60 per second.
  await page.evaluate('(() => { window.benchFrames = 0; const f = () => { window.benchFrames++; requestAnimationFrame(f); }; requestAnimationFrame(f); })()');
  const sample = async () => {
    const { metrics } = await page.send('Performance.getMetrics');
    const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
    const c = await page.evaluate('({ ...window.tickcastPage.client.counters, frames: window.benchFrames })');
    return { t: Date.now(), m, c, threads: chromiumThreadsMs(bare.profile) };
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
      fps: (b.c.frames - a.c.frames) / s,
      conflated: b.c.conflated - a.c.conflated,
      threads: Object.fromEntries(Object.keys(b.threads).map((k) => [k, (b.threads[k] - (a.threads[k] ?? 0)) / s])),
    });
  }
  await page.close();
  await server.stop();
  const pick = (k) => median(windows.map((x) => x[k]));
  return {
    rate,
    bare: baseline.rate,
    bareWithPlaywright: baseline.withPlaywright,
    task: pick('task'),
    script: pick('script'),
    layoutStyle: pick('layoutStyle'),
    msgs: pick('msgs'),
    fps: pick('fps'),
    conflated: windows.reduce((a, x) => a + x.conflated, 0),
    // The middle window's busiest Chromium threads, CPU ms per second.
    threads: Object.entries(windows[1].threads).sort((x, y) => y[1] - x[1]).slice(0, 8),
  };
}

const da = await decodeApply();
const bare = await launchBareChromium();
const rows = [];
for (const rate of [10_000, 50_000]) rows.push(await mainThread(rate, bare));
await bare.close();
await browser.close();

console.log('\n| encoding | decode+apply per message, main-thread CPU (median of 7) | wall clock (median of 7) | bytes per message |');
console.log('|---|---|---|---|');
for (const [enc, r] of Object.entries(da)) {
  console.log(`| ${enc} | ${(r.cpuNs / 1000).toFixed(2)} µs | ${(r.wallNs / 1000).toFixed(2)} µs | ${r.bytesPerMsg.toFixed(0)} |`);
}
console.log('\n| feed rate | msgs/s to a bare WebSocket (baseline) | the same under playwright | msgs/s reaching the page | animation frames/s | main-thread busy ms per s | of which script | layout + style | conflations in 3 windows |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.rate.toLocaleString('en-US')} updates/s | ${Math.round(r.bare).toLocaleString('en-US')} | ${Math.round(r.bareWithPlaywright).toLocaleString('en-US')} | ${Math.round(r.msgs).toLocaleString('en-US')} | ${r.fps.toFixed(0)} | ${r.task.toFixed(0)} | ${r.script.toFixed(0)} | ${r.layoutStyle.toFixed(0)} | ${r.conflated} |`);
}
console.log('\nBusiest Chromium threads on the page (CPU ms per second, middle window):');
for (const r of rows) {
  console.log(`- ${r.rate.toLocaleString('en-US')} updates/s: ${r.threads.map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}`);
}

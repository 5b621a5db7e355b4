// What the browser tests and the benchmark share: a real tickcast on a free
// loopback port, and Debian's Chromium driven by playwright-core. Every
// wait is bounded.

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
/** The server binary: $TICKCAST_BIN when the server starts (the benchmark
 * sets it from --bin after importing this), else the debug build. */
export const tickcastBin = () => process.env.TICKCAST_BIN ?? join(REPO, 'target/debug/tickcast');
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const ARTIFACTS = process.env.ARTIFACTS ?? join(REPO, 'target/browser-artifacts');
mkdirSync(ARTIFACTS, { recursive: true });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Polls `probe` until it returns a truthy value, at most `ms`. */
export async function until(what, probe, ms = 20_000, every = 100) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await probe();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await sleep(every);
  }
}

/** A tickcast process on `port` with `args`; resolves once /healthz answers. */
export async function startServer(port, args = []) {
  const proc = spawn(tickcastBin(), ['--listen', `127.0.0.1:${port}`, '--log', 'warn', ...args], {
    cwd: REPO,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const exited = new Promise((r) => proc.once('exit', r));
  await until(`tickcast on ${port} (${stderr})`, async () => {
    if (proc.exitCode !== null) throw new Error(`tickcast exited ${proc.exitCode}: ${stderr}`);
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    return res.ok;
  }, 30_000);
  return {
    proc,
    url: `http://127.0.0.1:${port}`,
    /** Stops it (SIGTERM, or SIGKILL to drop every connection at once). */
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      await Promise.race([exited, sleep(5000)]);
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** Headless Chromium (Debian's), never a downloaded browser. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
    timeout: 60_000,
  });
}

/** A page that records console errors and uncaught exceptions. */
export async function openPage(browser, url) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 760 } });
  const problems = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console.error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`uncaught: ${e.message}`));
  await page.goto(url, { timeout: 30_000 });
  return { page, problems };
}

/**
 * Headless Chromium driven over a bare DevTools connection that enables
 * only what it is asked to (Runtime, Performance). For measuring throughput:
 * playwright-core enables the Network domain on every page, and with it
 * Chromium copies every WebSocket frame to the DevTools client
 * (`Network.webSocketFrameReceived`, binary frames base64-encoded), which
 * costs the browser far more than the page's own work. Returns
 * `{ open(url) -> page, close() }`; a page has `evaluate(expr)` (awaits
 * promises, returns the JSON value) and `send(method, params)`.
 */
export async function launchBareChromium() {
  const { default: WebSocket } = await import('ws');
  const { mkdtempSync, readFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const profile = mkdtempSync(join(tmpdir(), 'tickcast-chromium-'));
  const proc = spawn(CHROMIUM, [
    '--headless', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu', '--no-first-run',
    '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
    '--disable-backgrounding-occluded-windows', '--window-size=1280,760',
    '--remote-debugging-port=0', `--user-data-dir=${profile}`, 'about:blank',
  ], { stdio: 'ignore' });
  const exited = new Promise((r) => proc.once('exit', r));
  const port = await until('Chromium\'s DevTools port', () => {
    try {
      return readFileSync(join(profile, 'DevToolsActivePort'), 'utf8').split('\n')[0];
    } catch {
      return null;
    }
  }, 30_000);
  const version = await (await fetch(`http://127.0.0.1:${port}/json/version`)).json();
  const ws = new WebSocket(version.webSocketDebuggerUrl, { perMessageDeflate: false, maxPayload: 256 << 20 });
  await new Promise((res, rej) => {
    ws.once('open', res);
    ws.once('error', rej);
  });
  let next = 0;
  const waiting = new Map();
  ws.on('message', (data) => {
    const m = JSON.parse(data);
    const w = m.id !== undefined && waiting.get(m.id);
    if (!w) return;
    waiting.delete(m.id);
    if (m.error) w.rej(new Error(`${w.method}: ${m.error.message}`));
    else w.res(m.result);
  });
  const send = (method, params = {}, sessionId) => new Promise((res, rej) => {
    const id = ++next;
    waiting.set(id, { res, rej, method });
    ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    setTimeout(() => {
      if (waiting.delete(id)) rej(new Error(`${method}: no answer in 120 s`));
    }, 120_000);
  });
  return {
    /** Its profile directory: every Chromium process names it. */
    profile,
    async open(url) {
      const { targetId } = await send('Target.createTarget', { url: 'about:blank' });
      const { sessionId } = await send('Target.attachToTarget', { targetId, flatten: true });
      const page = {
        send: (method, params) => send(method, params, sessionId),
        async evaluate(expression) {
          const r = await page.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
          if (r.exceptionDetails) throw new Error(r.exceptionDetails.exception?.description ?? r.exceptionDetails.text);
          return r.result.value;
        },
        async goto(to) {
          await page.send('Page.navigate', { url: to });
          await until(`${to} to load`, async () => (await page.evaluate('document.readyState')) === 'complete', 30_000);
        },
        close: () => send('Target.closeTarget', { targetId }),
      };
      await page.send('Page.enable');
      await page.goto(url);
      return page;
    },
    async close() {
      ws.close();
      proc.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

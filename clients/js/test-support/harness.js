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
export const TICKCAST_BIN = process.env.TICKCAST_BIN ?? join(REPO, 'target/debug/tickcast');
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
  const proc = spawn(TICKCAST_BIN, ['--listen', `127.0.0.1:${port}`, '--log', 'warn', ...args], {
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

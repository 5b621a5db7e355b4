// Rolling counters for a status bar: messages per second and the lag of
// each market message behind its `ts_ingest`, as p50/p99 over the last
// few seconds. Bounded: at most SAMPLES_PER_SECOND lag samples per second.

const WINDOW_SECONDS = 5;
const SAMPLES_PER_SECOND = 2000;

/** Message rate and lag percentiles over the last seconds. */
export class RollingStats {
  constructor(now = () => Date.now()) {
    this.now = now;
    this.buckets = []; // { second, count, lags: Float64Array, n }
  }

  bucket() {
    const second = Math.floor(this.now() / 1000);
    let b = this.buckets[this.buckets.length - 1];
    if (!b || b.second !== second) {
      b = { second, count: 0, lags: new Float64Array(SAMPLES_PER_SECOND), n: 0, seen: 0 };
      this.buckets.push(b);
      while (this.buckets.length > WINDOW_SECONDS + 1) this.buckets.shift();
    }
    return b;
  }

  /** Counts one message; `lagMs` when it had a `ts_ingest`. */
  record(lagMs) {
    const b = this.bucket();
    b.count++;
    if (lagMs === undefined) return;
    b.seen++;
    if (b.n < SAMPLES_PER_SECOND) b.lags[b.n++] = lagMs;
    else {
      // Reservoir sampling keeps the sample uniform over the second.
      const j = Math.floor(Math.random() * b.seen);
      if (j < SAMPLES_PER_SECOND) b.lags[j] = lagMs;
    }
  }

  /** Messages per second over the last complete seconds. */
  rate() {
    const current = Math.floor(this.now() / 1000);
    const done = this.buckets.filter((b) => b.second < current && b.second >= current - WINDOW_SECONDS);
    if (done.length === 0) return 0;
    const span = Math.min(WINDOW_SECONDS, current - done[0].second);
    return done.reduce((a, b) => a + b.count, 0) / span;
  }

  /** Lag percentiles (ms) over the window, or null without samples. */
  lag() {
    const current = Math.floor(this.now() / 1000);
    const all = [];
    for (const b of this.buckets) if (b.second >= current - WINDOW_SECONDS) for (let i = 0; i < b.n; i++) all.push(b.lags[i]);
    if (all.length === 0) return null;
    all.sort((a, b) => a - b);
    const at = (q) => all[Math.min(all.length - 1, Math.floor(q * all.length))];
    return { p50: at(0.5), p99: at(0.99), samples: all.length };
  }
}

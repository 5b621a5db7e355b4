// The tickcast client: one WebSocket, per-symbol state (seq, book, last
// quote and trade), gap detection and recovery, a liveness watchdog, and
// reconnect with exponential backoff and full jitter that resumes by seq.
// See README.md for the API and docs/PROTOCOL.md for the contract.

import { Book, FULL_DEPTH } from './book.js';
import { backoffDelay } from './backoff.js';
import { msgpackDecoder, jsonDecoder, encodeRequest } from './codec.js';
import { RollingStats } from './stats.js';

const DEFAULTS = {
  encoding: 'msgpack',
  batch: true,
  depth: undefined,
  backoff: { initialMs: 250, maxMs: 10_000 },
  idleTimeoutMs: 20_000,
  tokenVia: 'protocol',
  resume: true,
};

/** Wall clock in ms with sub-ms precision where the platform has it. */
const nowMs = typeof performance !== 'undefined' && performance.timeOrigin
  ? () => performance.timeOrigin + performance.now()
  : () => Date.now();

/** base64url of a string (the token subprotocol form for non-JWT tokens). */
function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** One symbol as the client holds it. */
class SymbolState {
  constructor(sym) {
    this.sym = sym;
    this.seq = -1;
    this.book = null;
    this.quote = null;
    this.trade = null;
    this.tsEvent = 0n;
    this.tsIngest = 0n;
    /** Waiting for a snapshot: updates are ignored until it comes. */
    this.awaiting = true;
    /** Why we wait ('gap', 'checksum', 'conflated', 'reset', 'resume'), or null. */
    this.recovering = null;
  }
}

/**
 * A tickcast client. Live (`/ws`) unless `replay` is given (`/replay`).
 * Events: see `on()` and index.d.ts.
 */
export class TickcastClient {
  constructor(url, options = {}) {
    this.options = { ...DEFAULTS, ...options, backoff: { ...DEFAULTS.backoff, ...options.backoff } };
    this.baseUrl = url.replace(/\/+$/, '');
    this.WebSocket = this.options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) throw new Error('no WebSocket implementation: pass options.WebSocket');
    this.random = this.options.random ?? Math.random;
    this.clock = this.options.clock ?? {
      setTimeout: (f, ms) => setTimeout(f, ms),
      clearTimeout: (t) => clearTimeout(t),
      setInterval: (f, ms) => setInterval(f, ms),
      clearInterval: (t) => clearInterval(t),
      now: () => Date.now(),
    };
    this.decode = this.makeDecoder();
    this.listeners = new Map();
    /** @type {Map<string, SymbolState>} */
    this.symbols = new Map();
    /** Symbols asked for (may hold "*"), in order. */
    this.wanted = new Set();
    this.epoch = null;
    this.state = 'idle';
    this.attempt = 0;
    this.nextRetryAt = null;
    this.ws = null;
    this.closedByUser = false;
    this.lastRx = 0;
    this.probeSent = false;
    this.replay = this.options.replay ? { ...this.options.replay } : null;
    this.counters = {
      messages: 0,
      gaps: 0,
      checksumErrors: 0,
      conflated: 0,
      resets: 0,
      recovered: 0,
      resumed: 0,
      reconnects: 0,
    };
    this.stats = new RollingStats(() => this.clock.now());
  }

  makeDecoder() {
    const { encoding, protobuf } = this.options;
    if (encoding === 'msgpack') return msgpackDecoder();
    if (encoding === 'json') return jsonDecoder();
    if (encoding === 'protobuf') {
      if (!protobuf) throw new Error('encoding "protobuf" needs options.protobuf: import { protobufDecoder } from "tickcast-client/protobuf"');
      return protobuf();
    }
    throw new Error(`unknown encoding ${JSON.stringify(encoding)}: msgpack, json or protobuf`);
  }

  /** Subscribes `fn` to `event`; returns a function that unsubscribes it. */
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event)?.delete(fn);
  }

  emit(event, payload) {
    const set = this.listeners.get(event);
    if (set) for (const fn of set) fn(payload);
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', { state, attempt: this.attempt, nextRetryAt: this.nextRetryAt });
  }

  /** The URL of the next connection (token in the query only if asked). */
  url() {
    const q = new URLSearchParams();
    q.set('encoding', this.options.encoding);
    if (this.options.batch) q.set('batch', '1');
    if (this.options.token && this.options.tokenVia === 'query') q.set('token', this.options.token);
    if (this.replay) {
      const r = this.replay;
      q.set('source', r.source);
      if (r.from !== undefined) q.set('from', String(r.from));
      if (r.to !== undefined) q.set('to', String(r.to));
      if (r.speed !== undefined) q.set('speed', String(r.speed));
      if (r.symbols) q.set('symbols', r.symbols.join(','));
      q.set('depth', String(r.depth ?? this.options.depth ?? 10));
      return `${this.baseUrl}/replay?${q}`;
    }
    return `${this.baseUrl}/ws?${q}`;
  }

  /** Subprotocols offered: the encoding, and the token the browser way. */
  protocols() {
    const list = [`tickcast.${this.options.encoding}`];
    const { token, tokenVia } = this.options;
    if (token && tokenVia === 'protocol') {
      list.push(`base64url.bearer.${token.includes('.') ? token : base64url(token)}`);
    }
    return list;
  }

  /** Opens the connection (and keeps it open until close()). */
  connect() {
    this.closedByUser = false;
    this.open();
    if (!this.watchdog && this.options.idleTimeoutMs > 0) {
      const every = Math.max(50, Math.floor(this.options.idleTimeoutMs / 4));
      this.watchdog = this.clock.setInterval(() => this.checkIdle(), every);
    }
    return this;
  }

  open() {
    this.nextRetryAt = null;
    if (this.replay && this.symbols.size > 0) {
      // Come back where the replay was: the snapshots at `from` carry on
      // from the last event held.
      let last = 0n;
      for (const st of this.symbols.values()) if (st.tsEvent > last) last = st.tsEvent;
      this.replay.from = String(last + 1n);
      this.symbols.clear();
    }
    this.setState(this.attempt === 0 && this.counters.reconnects === 0 ? 'connecting' : 'reconnecting');
    let ws;
    try {
      ws = new this.WebSocket(this.url(), this.protocols());
    } catch (e) {
      this.emit('error', { code: 'connect', message: String(e?.message ?? e), symbols: [] });
      this.scheduleReconnect();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.lastRx = this.clock.now();
    this.probeSent = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.lastRx = this.clock.now();
      this.setState('open');
      this.sendSubscriptions();
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      this.receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.emit('close', { code: ev.code, reason: ev.reason });
      this.scheduleReconnect();
    };
    ws.onerror = () => {};
  }

  /** Closes for good (no reconnect). */
  close() {
    this.closedByUser = true;
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer);
    if (this.watchdog) this.clock.clearInterval(this.watchdog);
    this.retryTimer = null;
    this.watchdog = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
    this.nextRetryAt = null;
    this.setState('closed');
  }

  scheduleReconnect() {
    if (this.closedByUser) return;
    const delay = backoffDelay(this.attempt, this.options.backoff, this.random);
    this.attempt++;
    this.counters.reconnects++;
    this.nextRetryAt = this.clock.now() + delay;
    this.state = 'reconnecting';
    this.emit('state', { state: 'reconnecting', attempt: this.attempt, nextRetryAt: this.nextRetryAt });
    this.retryTimer = this.clock.setTimeout(() => {
      this.retryTimer = null;
      if (!this.closedByUser) this.open();
    }, delay);
  }

  /** Drops a connection that went silent, and reconnects. */
  dropConnection(why) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    try {
      ws.close(4000, why);
    } catch {
      // already closing
    }
    this.emit('close', { code: 4000, reason: why });
    this.scheduleReconnect();
  }

  checkIdle() {
    if (!this.ws) return;
    const idle = this.clock.now() - this.lastRx;
    const limit = this.options.idleTimeoutMs;
    if (this.state !== 'open') {
      // A handshake that hangs (a blackholed address, a stuck proxy) is
      // given up after the same time: the browser's own limit is minutes.
      if (idle > limit) this.dropConnection(`not connected within ${limit} ms`);
      return;
    }
    if (idle > limit) {
      this.dropConnection(`no message for ${limit} ms`);
    } else if (idle >= limit / 2 && !this.probeSent) {
      // A browser cannot see the server's pings: ask for a reply instead
      // (the `ping` op, answered with ack `ping` in live and replay
      // sessions alike).
      this.probeSent = true;
      this.send({ op: 'ping' });
    }
  }

  send(request) {
    if (this.ws && this.ws.readyState === 1) this.ws.send(encodeRequest(request));
  }

  depthField() {
    return this.options.depth === undefined ? {} : { depth: this.options.depth };
  }

  /** Sends what the client wants after a (re)connect, resuming by seq. */
  sendSubscriptions() {
    if (this.replay || this.wanted.size === 0) return;
    const held = [];
    const fromSeq = {};
    if (this.options.resume && this.epoch !== null) {
      for (const st of this.symbols.values()) {
        if (!st.awaiting && st.seq >= 0) {
          held.push(st.sym);
          fromSeq[st.sym] = st.seq;
        }
      }
    }
    for (const st of this.symbols.values()) {
      if (!held.includes(st.sym)) {
        st.awaiting = true;
      } else {
        st.recovering = 'resume';
      }
    }
    if (held.length > 0) {
      this.send({ op: 'subscribe', symbols: held, ...this.depthField(), from_seq: fromSeq, epoch: this.epoch });
    }
    const rest = [...this.wanted].filter((s) => !Object.prototype.hasOwnProperty.call(fromSeq, s));
    if (rest.length > 0) this.send({ op: 'subscribe', symbols: rest, ...this.depthField() });
  }

  /** Subscribes to symbols ("*" for all). */
  subscribe(symbols) {
    for (const s of symbols) this.wanted.add(s);
    if (this.state === 'open' && !this.replay) this.send({ op: 'subscribe', symbols, ...this.depthField() });
  }

  /** Unsubscribes; their state is dropped. */
  unsubscribe(symbols) {
    for (const s of symbols) {
      this.wanted.delete(s);
      if (s === '*') this.symbols.clear();
      else this.symbols.delete(s);
    }
    if (this.state === 'open' && !this.replay) this.send({ op: 'unsubscribe', symbols });
  }

  /** Replay sessions: pause, resume, speed, seek. */
  pause() {
    this.send({ op: 'pause' });
  }

  resume() {
    this.send({ op: 'resume' });
  }

  setSpeed(value) {
    if (this.replay) this.replay.speed = value;
    this.send({ op: 'speed', value });
  }

  /** Seeks a replay to `ts` (ns since the epoch, bigint, or RFC 3339). */
  seek(ts) {
    if (!this.replay) return;
    // Every symbol restarts from a snapshot (or, without state then, seq 1).
    this.symbols.clear();
    this.replay.from = String(ts);
    this.send({ op: 'seek', ts: typeof ts === 'string' ? ts : BigInt(ts) });
  }

  /** The held state of `sym`, or undefined. */
  symbol(sym) {
    return this.symbols.get(sym);
  }

  /** Starts over one symbol from a fresh snapshot (gap or bad checksum). */
  resync(st, why) {
    st.awaiting = true;
    st.recovering = why;
    if (this.replay) {
      // A replay has no subscribe: a seek to the same time gives snapshots.
      this.symbols.clear();
      this.send({ op: 'seek', ts: st.tsEvent });
    } else {
      this.send({ op: 'unsubscribe', symbols: [st.sym] });
      this.send({ op: 'subscribe', symbols: [st.sym], ...this.depthField() });
    }
  }

  receive(data) {
    const now = this.clock.now();
    this.lastRx = now;
    this.probeSent = false;
    let m;
    try {
      m = this.decode(data);
    } catch (e) {
      this.emit('error', { code: 'decode', message: String(e?.message ?? e), symbols: [] });
      return;
    }
    if (m.type === 'batch') {
      for (const one of m.messages) {
        this.counters.messages++;
        this.handle(one);
      }
    } else {
      this.counters.messages++;
      this.handle(m);
    }
  }

  handle(m) {
    switch (m.type) {
      case 'trade':
      case 'quote':
      case 'book':
        this.onUpdate(m);
        break;
      case 'snapshot':
        this.onSnapshot(m);
        break;
      case 'ack':
        this.onAck(m);
        break;
      case 'error':
        this.emit('error', m);
        break;
      case 'conflated':
        for (const s of m.symbols) {
          const st = this.symbols.get(s.sym);
          if (st) {
            st.awaiting = true;
            st.recovering = 'conflated';
          }
        }
        this.counters.conflated++;
        this.emit('conflated', m);
        break;
      case 'reset': {
        const st = new SymbolState(m.sym);
        st.recovering = 'reset';
        this.symbols.set(m.sym, st);
        this.counters.resets++;
        this.emit('reset', m);
        break;
      }
      case 'replay_end':
        this.emit('replay_end', m);
        break;
      case 'token_expiring':
        this.onTokenExpiring(m);
        break;
      default:
        break;
    }
    this.emit('message', m);
  }

  onAck(m) {
    // The watchdog's probe: it only had to be answered.
    if (m.op === 'ping') return;
    // The server answered: this connection works, so the next outage
    // starts the backoff from the bottom again.
    this.attempt = 0;
    if (m.op === 'subscribe' && m.epoch !== undefined) this.epoch = m.epoch;
    if (m.recovered) {
      for (const [sym, ok] of Object.entries(m.recovered)) {
        const st = this.symbols.get(sym);
        if (!st) continue;
        if (ok) {
          st.awaiting = false;
          st.recovering = null;
          this.counters.resumed++;
          this.counters.recovered++;
        } else {
          // A reset and a snapshot follow.
          st.awaiting = true;
        }
      }
    }
    this.emit('ack', m);
  }

  onSnapshot(m) {
    if (!this.replay && !this.wanted.has('*') && !this.wanted.has(m.sym)) return;
    let st = this.symbols.get(m.sym);
    const why = st?.recovering ?? null;
    if (!st) {
      st = new SymbolState(m.sym);
      this.symbols.set(m.sym, st);
    }
    st.seq = m.seq;
    st.tsEvent = m.ts_event;
    st.tsIngest = m.ts_ingest;
    st.quote = m.quote;
    st.trade = m.trade;
    const depth = m.depth ?? FULL_DEPTH;
    st.book = new Book(depth, m.book?.bids ?? [], m.book?.asks ?? []);
    st.awaiting = false;
    st.recovering = null;
    if (why) this.counters.recovered++;
    this.emit('snapshot', { state: st, message: m, recovered: why });
  }

  onUpdate(m) {
    let st = this.symbols.get(m.sym);
    if (!st) {
      // A replay from its start (or a seek to before a symbol's first
      // event) sends no snapshot for a symbol without state: its updates
      // start at seq 1 from an empty book.
      if (!this.replay || m.seq !== 1) return;
      st = new SymbolState(m.sym);
      st.seq = 0;
      st.book = new Book(this.replay.depth ?? this.options.depth ?? 10);
      st.awaiting = false;
      this.symbols.set(m.sym, st);
    }
    if (st.awaiting) return;
    if (m.seq !== st.seq + 1) {
      this.counters.gaps++;
      this.emit('gap', { sym: m.sym, expected: st.seq + 1, got: m.seq });
      this.resync(st, 'gap');
      return;
    }
    st.seq = m.seq;
    st.tsEvent = m.ts_event;
    st.tsIngest = m.ts_ingest;
    if (m.type === 'book') {
      if (!st.book) st.book = new Book(this.options.depth === 'full' ? FULL_DEPTH : this.options.depth ?? 10);
      st.book.apply(m.bids, m.asks);
      if (m.checksum !== undefined && st.book.checksum() !== m.checksum) {
        this.counters.checksumErrors++;
        this.emit('checksum', { sym: m.sym, seq: m.seq, expected: m.checksum, got: st.book.checksum() });
        this.resync(st, 'checksum');
        return;
      }
    } else if (m.type === 'quote') {
      st.quote = { bid: m.bid, bid_sz: m.bid_sz, ask: m.ask, ask_sz: m.ask_sz };
    } else {
      st.trade = { px: m.px, sz: m.sz, side: m.side };
    }
    if (!this.replay) this.stats.record(nowMs() - Number(m.ts_ingest) / 1e6);
    else this.stats.record();
    this.emit('update', { state: st, message: m });
  }

  onTokenExpiring(m) {
    this.emit('token_expiring', m);
    const refresh = this.options.refreshToken;
    if (!refresh) return;
    Promise.resolve(refresh()).then((token) => {
      if (!token) return;
      this.options.token = token;
      this.send({ op: 'refresh', token });
    }, (e) => this.emit('error', { code: 'refresh', message: String(e?.message ?? e), symbols: [] }));
  }
}

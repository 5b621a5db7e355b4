// The trading page tickcast serves at `/`: a watchlist, the selected
// symbol's depth ladder and trade tape, a status bar, and a replay mode.
// Built on tickcast-client. Rendering happens once per animation frame:
// messages only mark their symbol dirty, so 10,000 updates/s cost a few
// hundred DOM writes per frame at most, never one per message.
//
// URL parameters: encoding (msgpack, json, protobuf), token (a JWT, sent as
// a subprotocol entry), sym (the symbol selected first), replay (a
// recording to open in replay mode), backoff_max and idle (ms).

import { TickcastClient, Book, msgpackDecoder, jsonDecoder, crc32 } from '../src/index.js';
import { protobufDecoder } from '../src/protobuf.js';

const params = new URLSearchParams(location.search);
const ENCODING = ['msgpack', 'json', 'protobuf'].includes(params.get('encoding')) ? params.get('encoding') : 'msgpack';
const LADDER_LEVELS = 10;
const TAPE_ROWS = 30;
const base = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

function fmtPx(px) {
  if (px === undefined || px === null || Number.isNaN(px)) return '—';
  const a = Math.abs(px);
  return px.toFixed(a >= 1000 ? 2 : a >= 10 ? 2 : a >= 1 ? 4 : 6);
}
/** A change in the decimals its reference price is shown with. */
function fmtChg(chg, ref) {
  const a = Math.abs(ref);
  return chg.toFixed(a >= 10 ? 2 : a >= 1 ? 4 : 6);
}
function fmtSz(sz) {
  return sz >= 1000 ? sz.toFixed(0) : sz >= 1 ? sz.toFixed(3).replace(/\.?0+$/, '') : sz.toPrecision(3);
}
function fmtTime(ns) {
  if (!ns) return '—';
  const ms = Number(ns / 1_000_000n);
  const d = new Date(ms);
  return d.toISOString().slice(11, 23);
}
function lastPrice(st) {
  if (st.trade) return st.trade.px;
  if (st.quote) return (st.quote.bid + st.quote.ask) / 2;
  return undefined;
}

// ---------------------------------------------------------------------------
// Page state

const page = {
  client: null,
  mode: 'live',
  selected: params.get('sym'),
  rows: new Map(), // sym -> { tr, cells, ref, last }
  dirty: new Set(),
  tape: [],
  tapeDirty: true,
  ladderDirty: true,
  recordings: [],
  replay: null, // { rec, startMs, endMs, playing, lastTs, dragging, ended }
};

// ---------------------------------------------------------------------------
// Watchlist

// Rows scrolled out of view are not written: a changed one stays dirty
// until it scrolls in, and is then written once. Text in a table costs
// layout; at 10,000 updates/s every row changes every frame (BENCHMARKS.md,
// "The JavaScript client in Chromium": 44 frames/s before, 49 and 56 after).
const onScreen = new Set();
const viewWatch =
  typeof IntersectionObserver === 'function'
    ? new IntersectionObserver(
        (entries) => {
          for (const e of entries) {
            const sym = e.target.dataset.sym;
            if (e.isIntersecting) {
              onScreen.add(sym);
              page.dirty.add(sym);
            } else {
              onScreen.delete(sym);
            }
          }
        },
        { root: $('watchlist-panel') },
      )
    : null;

function row(sym) {
  let r = page.rows.get(sym);
  if (r) return r;
  const tr = el('tr');
  tr.dataset.sym = sym;
  const cells = ['sym', 'last', 'bid', 'ask', 'chg', 'pct'].map((k) => {
    const td = el('td', k === 'sym' ? '' : 'num', k === 'sym' ? sym : '—');
    tr.appendChild(td);
    return td;
  });
  tr.addEventListener('click', () => select(sym));
  $('watchlist').tBodies[0].appendChild(tr);
  viewWatch?.observe(tr);
  r = { tr, cells, ref: undefined, last: undefined };
  page.rows.set(sym, r);
  if (!page.selected) select(sym);
  else if (page.selected === sym) {
    tr.classList.add('selected');
    $('sel-sym').textContent = sym;
  }
  return r;
}

// Writes text only when it changed: an unchanged cell costs no layout.
function put(cell, value) {
  if (cell.textContent !== value) cell.textContent = value;
}

const FLASH_MS = 600;

function renderRow(sym) {
  const st = page.client?.symbol(sym);
  if (!st) return;
  const r = row(sym);
  const last = lastPrice(st);
  if (last !== undefined) {
    if (r.ref === undefined) r.ref = last;
    const now = performance.now();
    // One flash at a time per row: a busy symbol does not pile them up.
    if (r.last !== undefined && last !== r.last && !(r.flashEnd > now)) {
      const up = last > r.last;
      r.cells[1].className = `num ${up ? 'up' : 'down'}`;
      r.cells[1].animate(
        [{ backgroundColor: up ? 'rgba(46,189,133,0.45)' : 'rgba(240,80,110,0.45)' }, { backgroundColor: 'transparent' }],
        { duration: FLASH_MS, easing: 'ease-out' },
      );
      r.flashEnd = now + FLASH_MS;
    }
    r.last = last;
    put(r.cells[1], fmtPx(last));
    const chg = last - r.ref;
    put(r.cells[4], (chg >= 0 ? '+' : '') + fmtChg(chg, r.ref));
    put(r.cells[5], r.ref ? `${((100 * chg) / r.ref).toFixed(2)}%` : '—');
    const cls = chg > 0 ? 'num up' : chg < 0 ? 'num down' : 'num';
    r.cells[4].className = cls;
    r.cells[5].className = cls;
  }
  const q = st.quote;
  const bids = st.book?.bids;
  const asks = st.book?.asks;
  const bid = q ? q.bid : bids?.[0]?.[0];
  const ask = q ? q.ask : asks?.[0]?.[0];
  put(r.cells[2], fmtPx(bid));
  put(r.cells[3], fmtPx(ask));
}

function select(sym) {
  if (page.selected && page.rows.get(page.selected)) page.rows.get(page.selected).tr.classList.remove('selected');
  page.selected = sym;
  page.rows.get(sym)?.tr.classList.add('selected');
  page.tape = [];
  page.tapeDirty = true;
  page.ladderDirty = true;
  $('sel-sym').textContent = sym;
}

// ---------------------------------------------------------------------------
// Ladder and tape

const ladderRows = [];
function buildLadder() {
  const body = $('ladder').tBodies[0];
  for (let i = 0; i < 2 * LADDER_LEVELS; i++) {
    const side = i < LADDER_LEVELS ? 'ask' : 'bid';
    const tr = el('tr', side);
    const bid = el('td', 'bid');
    const px = el('td', 'px mono');
    const ask = el('td', 'ask');
    for (const td of [bid, ask]) {
      td.appendChild(el('div', 'bar'));
      td.appendChild(el('span'));
    }
    tr.append(bid, px, ask);
    body.appendChild(tr);
    ladderRows.push({ tr, side, bid, px, ask });
  }
}

function renderLadder() {
  const st = page.selected ? page.client?.symbol(page.selected) : undefined;
  const book = st?.book;
  const asks = book ? book.asks.slice(0, LADDER_LEVELS) : [];
  const bids = book ? book.bids.slice(0, LADDER_LEVELS) : [];
  let max = 0;
  for (const l of asks) max = Math.max(max, l[1]);
  for (const l of bids) max = Math.max(max, l[1]);
  const put = (r, level) => {
    const cell = r.side === 'ask' ? r.ask : r.bid;
    const other = r.side === 'ask' ? r.bid : r.ask;
    other.children[0].style.width = '0';
    other.children[1].textContent = '';
    if (!level) {
      delete r.tr.dataset.px;
      delete r.tr.dataset.sz;
      r.px.textContent = '';
      cell.children[0].style.width = '0';
      cell.children[1].textContent = '';
      return;
    }
    r.tr.dataset.px = String(level[0]);
    r.tr.dataset.sz = String(level[1]);
    r.px.textContent = fmtPx(level[0]);
    cell.children[0].style.width = `${max ? (100 * level[1]) / max : 0}%`;
    cell.children[1].textContent = fmtSz(level[1]);
  };
  // Asks best at the bottom, next to the bids.
  for (let i = 0; i < LADDER_LEVELS; i++) put(ladderRows[LADDER_LEVELS - 1 - i], asks[i]);
  for (let i = 0; i < LADDER_LEVELS; i++) put(ladderRows[LADDER_LEVELS + i], bids[i]);
  const seqEl = $('ladder-seq');
  seqEl.dataset.sym = page.selected ?? '';
  seqEl.dataset.seq = st ? String(st.seq) : '';
  seqEl.textContent = st ? `seq ${st.seq}` : '';
  $('ladder-check').textContent = book ? `crc ${book.checksum().toString(16).padStart(8, '0')}` : '';
}

function renderTape() {
  const body = $('tape').tBodies[0];
  while (body.rows.length < TAPE_ROWS) {
    const tr = el('tr');
    for (const c of ['mono', 'num', 'num', '']) tr.appendChild(el('td', c));
    body.appendChild(tr);
  }
  for (let i = 0; i < TAPE_ROWS; i++) {
    const t = page.tape[i];
    const cells = body.rows[i].cells;
    if (!t) {
      for (const c of cells) c.textContent = '';
      continue;
    }
    cells[0].textContent = fmtTime(t.ts);
    cells[1].textContent = fmtPx(t.px);
    cells[1].className = `num ${t.side === 'buy' ? 'up' : t.side === 'sell' ? 'down' : ''}`;
    cells[2].textContent = fmtSz(t.sz);
    cells[3].textContent = t.side;
  }
}

// ---------------------------------------------------------------------------
// Frames: everything the messages of the last frame changed, written once.

function frame() {
  if (page.client) {
    for (const sym of page.dirty) {
      // A new row is made (and written) at once; a known one when in view.
      if (!viewWatch || onScreen.has(sym) || !page.rows.has(sym)) {
        renderRow(sym);
        page.dirty.delete(sym);
      }
    }
    if (page.ladderDirty) renderLadder();
    page.ladderDirty = false;
    if (page.tapeDirty) renderTape();
    page.tapeDirty = false;
    if (page.replay) renderReplayPosition();
  }
  requestAnimationFrame(frame);
}

// ---------------------------------------------------------------------------
// Status bar, four times a second.

function renderStatus() {
  const c = page.client;
  if (!c) return;
  $('st-dot').className = `dot ${c.state}`;
  $('st-state').textContent = page.replay?.ended && c.state === 'open' ? 'replay ended' : c.state;
  $('st-retry').textContent = c.state === 'reconnecting' && c.nextRetryAt
    ? `retry in ${Math.max(0, (c.nextRetryAt - Date.now()) / 1000).toFixed(1)} s (attempt ${c.attempt})`
    : '';
  $('st-enc').textContent = ENCODING;
  $('st-rate').textContent = Math.round(c.stats.rate()).toLocaleString('en-US');
  const lag = c.stats.lag();
  $('st-p50').textContent = lag && !page.replay ? `${lag.p50.toFixed(1)} ms` : '—';
  $('st-p99').textContent = lag && !page.replay ? `${lag.p99.toFixed(1)} ms` : '—';
  $('st-recovered').textContent = String(c.counters.recovered);
  const k = c.counters;
  $('st-detail').textContent = `reconnects ${k.reconnects} · resumed ${k.resumed} · resets ${k.resets} · conflated ${k.conflated} · gaps ${k.gaps} · checksum errors ${k.checksumErrors}`;
}

// ---------------------------------------------------------------------------
// Clients

const consoleErrors = [];

function attach(client) {
  client.on('update', ({ state, message }) => {
    page.dirty.add(state.sym);
    if (state.sym === page.selected) {
      page.ladderDirty = true;
      if (message.type === 'trade') {
        page.tape.unshift({ ts: message.ts_event, px: message.px, sz: message.sz, side: message.side });
        if (page.tape.length > TAPE_ROWS) page.tape.length = TAPE_ROWS;
        page.tapeDirty = true;
      }
    }
  });
  client.on('snapshot', ({ state }) => {
    row(state.sym);
    page.dirty.add(state.sym);
    if (state.sym === page.selected) page.ladderDirty = true;
  });
  client.on('reset', (m) => {
    page.dirty.add(m.sym);
    if (m.sym === page.selected) page.ladderDirty = true;
  });
  client.on('error', (e) => {
    if (e.code !== 'unknown_symbol') consoleErrors.push(e);
    console.warn(`tickcast: ${e.code}: ${e.message}`);
  });
  client.on('replay_end', () => {
    if (page.replay) {
      page.replay.ended = true;
      page.replay.playing = false;
      $('replay-play').textContent = 'Play';
    }
  });
}

function clientOptions() {
  const o = { encoding: ENCODING, depth: LADDER_LEVELS };
  if (ENCODING === 'protobuf') o.protobuf = protobufDecoder;
  if (params.get('token')) o.token = params.get('token');
  const backoffMax = Number(params.get('backoff_max'));
  if (backoffMax > 0) o.backoff = { initialMs: Math.min(250, backoffMax), maxMs: backoffMax };
  const idle = Number(params.get('idle'));
  if (idle > 0) o.idleTimeoutMs = idle;
  return o;
}

function startLive() {
  stopClient();
  page.mode = 'live';
  page.replay = null;
  $('replay-bar').hidden = true;
  $('mode-live').classList.add('active');
  $('mode-replay').classList.remove('active');
  const client = new TickcastClient(base, clientOptions());
  attach(client);
  page.client = client;
  client.connect();
  client.subscribe(['*']);
}

function stopClient() {
  if (page.client) page.client.close();
  page.client = null;
  page.rows.clear();
  viewWatch?.disconnect();
  onScreen.clear();
  $('watchlist').tBodies[0].replaceChildren();
  page.tape = [];
  page.tapeDirty = true;
  page.ladderDirty = true;
}

function startReplay(name) {
  const rec = page.recordings.find((r) => r.name === name) ?? page.recordings[0];
  if (!rec) return;
  stopClient();
  page.mode = 'replay';
  $('replay-bar').hidden = false;
  $('mode-replay').classList.add('active');
  $('mode-live').classList.remove('active');
  $('replay-source').value = rec.name;
  const speed = $('replay-speed').value;
  page.replay = {
    rec,
    startMs: Number(BigInt(rec.first_ts_event) / 1_000_000n),
    endMs: Number(BigInt(rec.last_ts_event) / 1_000_000n),
    playing: true,
    lastTs: 0n,
    dragging: false,
    ended: false,
  };
  const seek = $('replay-seek');
  seek.min = '0';
  seek.max = String(Math.max(1, page.replay.endMs - page.replay.startMs));
  seek.value = '0';
  $('replay-play').textContent = 'Pause';
  if (!page.selected || !rec.symbols.includes(page.selected)) page.selected = null;
  const client = new TickcastClient(base, {
    ...clientOptions(),
    replay: { source: rec.name, speed: speed === 'max' ? 'max' : Number(speed), depth: LADDER_LEVELS },
  });
  attach(client);
  client.on('message', (m) => {
    if (m.ts_event && m.type !== 'replay_end' && page.replay) page.replay.lastTs = m.ts_event;
  });
  page.client = client;
  for (const sym of rec.symbols) row(sym);
  if (page.selected) select(page.selected);
  client.connect();
}

function renderReplayPosition() {
  const r = page.replay;
  if (!r.lastTs) return;
  const ms = Number(r.lastTs / 1_000_000n);
  if (!r.dragging) $('replay-seek').value = String(ms - r.startMs);
  $('replay-time').textContent = `${new Date(ms).toISOString().replace('T', ' ').slice(0, 23)}Z`;
}

function wireReplayControls() {
  $('mode-live').addEventListener('click', () => page.mode !== 'live' && startLive());
  $('mode-replay').addEventListener('click', () => page.mode !== 'replay' && startReplay($('replay-source').value));
  $('replay-source').addEventListener('change', (e) => startReplay(e.target.value));
  $('replay-play').addEventListener('click', () => {
    const r = page.replay;
    if (!r || !page.client) return;
    if (r.ended) {
      r.ended = false;
      page.client.seek(BigInt(r.startMs) * 1_000_000n);
      r.playing = true;
    } else if (r.playing) {
      page.client.pause();
      r.playing = false;
    } else {
      page.client.resume();
      r.playing = true;
    }
    $('replay-play').textContent = r.playing ? 'Pause' : 'Play';
  });
  $('replay-speed').addEventListener('change', (e) => {
    const v = e.target.value;
    page.client?.setSpeed(v === 'max' ? 'max' : Number(v));
  });
  const seek = $('replay-seek');
  seek.addEventListener('input', () => {
    if (page.replay) page.replay.dragging = true;
  });
  seek.addEventListener('change', () => {
    const r = page.replay;
    if (!r || !page.client) return;
    r.dragging = false;
    r.ended = false;
    const ns = (BigInt(r.startMs) + BigInt(seek.value)) * 1_000_000n;
    page.client.seek(ns);
    r.lastTs = ns;
    page.tape = [];
    page.tapeDirty = true;
    page.ladderDirty = true;
    if (!r.playing) page.client.pause();
  });
}

async function loadRecordings() {
  const q = params.get('token') ? `?token=${encodeURIComponent(params.get('token'))}` : '';
  // The server summarizes its recordings once; until then it answers
  // "pending" at once, and we ask again (for at most a minute).
  for (let attempt = 0; attempt < 60; attempt++) {
    try {
      const res = await fetch(`/recordings${q}`);
      if (!res.ok) return;
      const listing = await res.json();
      if (!listing.pending) {
        page.recordings = listing.recordings;
        break;
      }
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  if (page.recordings.length === 0) return;
  const sel = $('replay-source');
  for (const r of page.recordings) sel.appendChild(el('option', '', r.name)).value = r.name;
  $('mode-replay').hidden = false;
  if (params.get('replay') !== null) startReplay(params.get('replay'));
}

// ---------------------------------------------------------------------------
// What tests and benchmarks read (window.tickcastPage).

window.tickcastPage = {
  get client() {
    return page.client;
  },
  get mode() {
    return page.mode;
  },
  get replay() {
    return page.replay;
  },
  select,
  startReplay,
  errors: consoleErrors,
  /** The ladder as displayed: symbol, seq, and each side's [price, size], best first. */
  ladder() {
    const seqEl = $('ladder-seq');
    const side = (cls) => [...document.querySelectorAll(`#ladder tr.${cls}`)]
      .filter((tr) => tr.dataset.px !== undefined)
      .map((tr) => [Number(tr.dataset.px), Number(tr.dataset.sz)]);
    return { sym: seqEl.dataset.sym, seq: Number(seqEl.dataset.seq), bids: side('bid'), asks: side('ask').reverse() };
  },
  /** Text of a watchlist row's cells. */
  watch(sym) {
    const r = page.rows.get(sym);
    return r ? r.cells.map((c) => c.textContent) : null;
  },
  lib: { TickcastClient, Book, msgpackDecoder, jsonDecoder, protobufDecoder, crc32 },
};

buildLadder();
wireReplayControls();
startLive();
loadRecordings();
setInterval(renderStatus, 250);
requestAnimationFrame(frame);

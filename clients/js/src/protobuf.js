// The protobuf decoder (`?encoding=protobuf`), optional: import it from
// `tickcast-client/protobuf` only if you use that encoding; it needs
// `protobufjs` (its minimal runtime, and `long`). The decoding code is
// ./tickcast_pb.js, generated from proto/tickcast.proto by protobufjs-cli
// (`npm run build`): static code, so it runs under a Content-Security-Policy
// without 'unsafe-eval', which protobufjs's reflection needs.

import Long from 'long';
import { tickcast } from './tickcast_pb.js';

const SIDES = ['unknown', 'buy', 'sell'];
const RESET_REASONS = ['unspecified', 'gap', 'epoch', 'reconnect', 'history'];

const big = (v) => (v == null ? 0n : typeof v === 'number' ? BigInt(v) : (BigInt(v.high >>> 0) << 32n) | BigInt(v.low >>> 0));
const num = (v) => (v == null ? 0 : typeof v === 'number' ? v : Long.fromValue(v).toNumber());
const levels = (ls) => ls.map((l) => [l.px, l.sz]);

/**
 * A protobuf decoder producing the same objects as the msgpack and JSON
 * decoders (field names as in JSON, `seq` a number, times bigints).
 * @returns {(data: ArrayBuffer | Uint8Array) => object}
 */
export function protobufDecoder() {
  // 64-bit fields arrive as Long (protobufjs finds `long`), exact.
  const ServerMessage = tickcast.v1.ServerMessage;
  const one = (p) => {
    const m = { type: p.type };
    if (p.sym) m.sym = p.sym;
    const envelope = () => {
      m.seq = num(p.seq);
      m.ts_event = big(p.ts_event);
      m.ts_ingest = big(p.ts_ingest);
    };
    switch (p.body) {
      case 'trade':
        envelope();
        Object.assign(m, { px: p.trade.px, sz: p.trade.sz, side: SIDES[p.trade.side] ?? 'unknown' });
        break;
      case 'quote':
        envelope();
        Object.assign(m, { bid: p.quote.bid, bid_sz: p.quote.bid_sz, ask: p.quote.ask, ask_sz: p.quote.ask_sz });
        break;
      case 'book':
        envelope();
        Object.assign(m, { bids: levels(p.book.bids), asks: levels(p.book.asks), checksum: p.book.checksum >>> 0 });
        break;
      case 'snapshot': {
        envelope();
        const s = p.snapshot;
        const has = (f) => Object.prototype.hasOwnProperty.call(s, f) && s[f] != null;
        m.quote = has('quote') ? { bid: s.quote.bid, bid_sz: s.quote.bid_sz, ask: s.quote.ask, ask_sz: s.quote.ask_sz } : null;
        m.trade = has('trade') ? { px: s.trade.px, sz: s.trade.sz, side: SIDES[s.trade.side] ?? 'unknown' } : null;
        m.depth = s.depth;
        const b = s.book ?? { bids: [], asks: [], checksum: 0 };
        m.book = { bids: levels(b.bids), asks: levels(b.asks), checksum: b.checksum >>> 0 };
        break;
      }
      case 'ack':
        m.op = p.ack.op;
        m.symbols = p.ack.symbols;
        if (p.ack.op === 'subscribe') m.epoch = big(p.ack.epoch);
        if (p.ack.recovered && Object.keys(p.ack.recovered).length > 0) m.recovered = { ...p.ack.recovered };
        break;
      case 'error':
        Object.assign(m, { code: p.error.code, message: p.error.message, symbols: p.error.symbols });
        break;
      case 'conflated':
        m.symbols = p.conflated.symbols.map((s) => ({
          sym: s.sym,
          from_seq: num(s.from_seq),
          to_seq: num(s.to_seq),
          trades: num(s.trades),
          quotes: num(s.quotes),
          books: num(s.books),
        }));
        break;
      case 'reset':
        m.seq = num(p.seq);
        m.reason = RESET_REASONS[p.reset.reason] ?? 'unspecified';
        break;
      case 'replay_end':
        Object.assign(m, { source: p.replay_end.source, reason: p.replay_end.reason, events: num(p.replay_end.events) });
        m.ts_event = big(p.ts_event);
        break;
      case 'token_expiring':
        m.expires_at = num(p.token_expiring.expires_at);
        break;
      default:
        break;
    }
    return m;
  };
  return (data) => {
    const p = ServerMessage.decode(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
    // A batch (`?batch=1`): type "batch", the messages in field 20.
    return p.type === 'batch' ? { type: 'batch', messages: p.batch.map(one) } : one(p);
  };
}

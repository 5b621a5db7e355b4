// Server messages in, plain objects out. Every decoder returns the shape of
// the JSON examples in docs/PROTOCOL.md, with these normalizations:
// `seq` and the counts are numbers; `ts_event`, `ts_ingest` and `epoch` are
// bigints (exact to the nanosecond in msgpack and protobuf, and in JSON
// too: the digits are read as text before JSON.parse could round them).
// A batch (`?batch=1`) comes out as `{ type: 'batch', messages: [...] }`.

import { Decoder } from '@msgpack/msgpack';

/** The encodings the server speaks. */
export const ENCODINGS = ['msgpack', 'json', 'protobuf'];

const BIG_FIELDS = ['ts_event', 'ts_ingest', 'epoch'];

/**
 * A batch (`?batch=1`: several messages in one WebSocket message, an array
 * in msgpack and JSON) as the decoders return it: `{ type: 'batch',
 * messages }`, each message normalized.
 */
function batchOrOne(v) {
  return Array.isArray(v) ? { type: 'batch', messages: v.map(normalize) } : normalize(v);
}

/** Normalizes numeric fields in place (see the module doc). */
export function normalize(m) {
  if (m.seq !== undefined && typeof m.seq !== 'number') m.seq = Number(m.seq);
  for (const f of BIG_FIELDS) {
    const v = m[f];
    if (v !== undefined && typeof v !== 'bigint') m[f] = BigInt(v);
  }
  return m;
}

/**
 * A MessagePack decoder: 64-bit integers come out as bigint.
 * @returns {(data: ArrayBuffer | Uint8Array) => object}
 */
export function msgpackDecoder() {
  const decoder = new Decoder({ useBigInt64: true });
  return (data) => batchOrOne(decoder.decode(data instanceof ArrayBuffer ? new Uint8Array(data) : data));
}

// Quotes the big integers so JSON.parse keeps every digit.
const BIG_INT = /"(ts_event|ts_ingest|epoch)":(\d+)/g;

/**
 * A JSON decoder (text frames), exact for 64-bit timestamps.
 * @returns {(data: string | ArrayBuffer | Uint8Array) => object}
 */
export function jsonDecoder() {
  const utf8 = new TextDecoder();
  return (data) => {
    const text = typeof data === 'string' ? data : utf8.decode(data);
    return batchOrOne(JSON.parse(text.replace(BIG_INT, '"$1":"$2"')));
  };
}

/**
 * Encodes a client request as the JSON text the server reads, bigints
 * (an `epoch`) as plain integers.
 * @param {object} request
 * @returns {string}
 */
export function encodeRequest(request) {
  return JSON.stringify(request, (_, v) => (typeof v === 'bigint' ? `${v}n#` : v)).replace(/"(\d+)n#"/g, '$1');
}

// One symbol's order book at a subscription's depth, kept the way
// docs/PROTOCOL.md ("Books") says: start from the snapshot, set each listed
// level, delete size 0, keep the best `depth` per side, check the CRC-32.

import { crc32 } from './crc32.js';

/** Levels per side a `"full"` subscription holds. */
export const FULL_DEPTH = 4096;

/** Levels per side the checksum covers at most. */
const CHECKSUM_LEVELS = 10;

// One scratch buffer for checksums: 2 sides x 10 levels x 16 bytes.
const scratch = new ArrayBuffer(2 * CHECKSUM_LEVELS * 16);
const scratchView = new DataView(scratch);
const scratchBytes = new Uint8Array(scratch);

/**
 * Sets `size` at `price` in `side` (sorted best first; `desc` for bids),
 * deleting the level when `size` is 0.
 */
function setLevel(side, price, size, desc) {
  let lo = 0;
  let hi = side.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const p = side[mid][0];
    if (desc ? p > price : p < price) lo = mid + 1;
    else hi = mid;
  }
  const found = lo < side.length && side[lo][0] === price;
  if (size === 0) {
    if (found) side.splice(lo, 1);
  } else if (found) {
    side[lo][1] = size;
  } else {
    side.splice(lo, 0, [price, size]);
  }
}

/** A book: `bids` best (highest) first, `asks` best (lowest) first. */
export class Book {
  /**
   * @param {number} depth levels per side the subscription holds
   * @param {Array<[number, number]>} [bids]
   * @param {Array<[number, number]>} [asks]
   */
  constructor(depth, bids = [], asks = []) {
    this.depth = depth;
    this.bids = bids.map(([p, s]) => [p, s]);
    this.asks = asks.map(([p, s]) => [p, s]);
  }

  /**
   * Applies one `book` message's changed levels.
   * @param {Array<[number, number]>} bids
   * @param {Array<[number, number]>} asks
   */
  apply(bids, asks) {
    for (let i = 0; i < bids.length; i++) setLevel(this.bids, bids[i][0], bids[i][1], true);
    for (let i = 0; i < asks.length; i++) setLevel(this.asks, asks[i][0], asks[i][1], false);
    if (this.bids.length > this.depth) this.bids.length = this.depth;
    if (this.asks.length > this.depth) this.asks.length = this.depth;
  }

  /**
   * The protocol's checksum: CRC-32 of the best min(depth, 10) asks then
   * bids, each level's price and size as little-endian doubles.
   * @returns {number}
   */
  checksum() {
    const k = Math.min(this.depth, CHECKSUM_LEVELS);
    let off = 0;
    for (const side of [this.asks, this.bids]) {
      const n = Math.min(k, side.length);
      for (let i = 0; i < n; i++) {
        scratchView.setFloat64(off, side[i][0], true);
        scratchView.setFloat64(off + 8, side[i][1], true);
        off += 16;
      }
    }
    return off === 0 ? 0 : crc32(scratchBytes, off);
  }
}

// CRC-32 (IEEE 802.3, zlib's crc32), table-driven.

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/**
 * CRC-32 of `bytes[0..length)`.
 * @param {Uint8Array} bytes
 * @param {number} [length]
 * @returns {number} unsigned 32-bit
 */
export function crc32(bytes, length = bytes.length) {
  let c = 0xffffffff;
  for (let i = 0; i < length; i++) c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

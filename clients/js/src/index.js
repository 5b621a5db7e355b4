// tickcast-client: the public API. See README.md.
export { TickcastClient } from './client.js';
export { Book, FULL_DEPTH } from './book.js';
export { crc32 } from './crc32.js';
export { backoffDelay } from './backoff.js';
export { msgpackDecoder, jsonDecoder, encodeRequest, normalize, ENCODINGS } from './codec.js';
export { RollingStats } from './stats.js';

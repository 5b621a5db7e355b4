import type { Decoder } from './index.js';
/** A decoder of `?encoding=protobuf` frames (needs protobufjs). */
export function protobufDecoder(): Decoder;

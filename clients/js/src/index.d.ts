// Types of tickcast-client's public API.

/** Server encodings. */
export type Encoding = 'msgpack' | 'json' | 'protobuf';
/** A price level: [price, size]; size 0 deletes it in a `book` update. */
export type Level = [number, number];
/** Book levels per side a subscription holds. */
export type Depth = 1 | 5 | 10 | 20 | 25 | 50 | 100 | 500 | 1000 | 'full';

interface MarketFields {
  sym: string;
  /** Per-symbol sequence number: +1 per update. */
  seq: number;
  /** Event time at the source, ns since the Unix epoch (exact). */
  ts_event: bigint;
  /** The server's clock when it took the tick in, ns (exact). */
  ts_ingest: bigint;
}
export interface TradeMessage extends MarketFields { type: 'trade'; px: number; sz: number; side: 'buy' | 'sell' | 'unknown' }
export interface QuoteMessage extends MarketFields { type: 'quote'; bid: number; bid_sz: number; ask: number; ask_sz: number }
export interface BookMessage extends MarketFields { type: 'book'; bids: Level[]; asks: Level[]; checksum: number }
export interface Quote { bid: number; bid_sz: number; ask: number; ask_sz: number }
export interface Trade { px: number; sz: number; side: 'buy' | 'sell' | 'unknown' }
export interface SnapshotMessage extends MarketFields {
  type: 'snapshot';
  quote: Quote | null;
  trade: Trade | null;
  depth: number;
  book: { bids: Level[]; asks: Level[]; checksum: number };
}
export interface AckMessage { type: 'ack'; op: string; symbols: string[]; epoch?: bigint; recovered?: Record<string, boolean> }
export interface ErrorMessage { type: 'error'; code: string; message: string; symbols: string[] }
export interface Skipped { sym: string; from_seq: number; to_seq: number; trades: number; quotes: number; books: number }
export interface ConflatedMessage { type: 'conflated'; symbols: Skipped[] }
export interface ResetMessage { type: 'reset'; sym: string; seq: number; reason: 'gap' | 'epoch' | 'reconnect' | 'history' | string }
export interface ReplayEndMessage { type: 'replay_end'; source: string; reason: 'end' | 'to' | 'error' | string; events: number; ts_event: bigint }
export interface TokenExpiringMessage { type: 'token_expiring'; expires_at: number }
export type MarketMessage = TradeMessage | QuoteMessage | BookMessage;
export type ServerMessage =
  | MarketMessage | SnapshotMessage | AckMessage | ErrorMessage | ConflatedMessage
  | ResetMessage | ReplayEndMessage | TokenExpiringMessage;

/** Several messages sent as one WebSocket message (`?batch=1`), in order. */
export interface BatchMessage { type: 'batch'; messages: ServerMessage[] }

/** A decoder of one server frame: one message, or a batch of them. */
export type Decoder = (data: ArrayBuffer | Uint8Array | string) => ServerMessage | BatchMessage;

/** A book at a subscription's depth: bids best (highest) first, asks best (lowest) first. */
export class Book {
  constructor(depth: number, bids?: Level[], asks?: Level[]);
  depth: number;
  bids: Level[];
  asks: Level[];
  /** Applies a `book` message's changed levels (size 0 deletes). */
  apply(bids: Level[], asks: Level[]): void;
  /** The protocol's CRC-32 of the best min(depth, 10) asks then bids. */
  checksum(): number;
}
/** Levels per side of a `"full"` subscription. */
export const FULL_DEPTH: number;

/** What the client holds of one symbol. */
export interface SymbolState {
  readonly sym: string;
  /** Last seq applied (-1: none yet). */
  seq: number;
  book: Book | null;
  quote: Quote | null;
  trade: Trade | null;
  tsEvent: bigint;
  tsIngest: bigint;
  /** Waiting for a snapshot; updates are ignored meanwhile. */
  awaiting: boolean;
  /** Why it waits, or null. */
  recovering: null | 'gap' | 'checksum' | 'conflated' | 'reset' | 'resume';
}

export type ConnectionState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface ReplayOptions {
  /** A recording's plain name in the server's --replay-dir. */
  source: string;
  /** First event time: ns since the epoch or RFC 3339. */
  from?: string | bigint;
  to?: string | bigint;
  speed?: number | 'max';
  symbols?: string[];
  depth?: Depth;
}

export interface ClientOptions {
  /** Default 'msgpack'. */
  encoding?: Encoding;
  /**
   * Ask for batched frames (`?batch=1`): the messages waiting at each of the
   * server's writes come as one WebSocket message, which costs a browser far
   * less than one message each. Events are the same either way. Default true.
   */
  batch?: boolean;
  /** Protobuf decoder factory (from 'tickcast-client/protobuf'); needed for 'protobuf'. */
  protobuf?: () => Decoder;
  /** Book depth to subscribe at (default: the server's --book-depth). */
  depth?: Depth;
  /** Reconnect backoff: attempt n waits uniform [0, min(maxMs, initialMs * 2^n)). Default 250 / 10000. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** No message for this long → reconnect; a `ping` request is sent at half. 0 disables. Default 20000. */
  idleTimeoutMs?: number;
  /** JWT for a server with authentication on. */
  token?: string;
  /** How the token travels: a Sec-WebSocket-Protocol entry (default) or ?token=. */
  tokenVia?: 'protocol' | 'query';
  /** Called on `token_expiring`; the token it returns is sent as a `refresh` and used on reconnects. */
  refreshToken?: () => string | Promise<string>;
  /** Resume by seq after a reconnect (default true); else resubscribe with snapshots. */
  resume?: boolean;
  /** Open a private replay (/replay) instead of the live feed. */
  replay?: ReplayOptions;
  /** WebSocket constructor (default globalThis.WebSocket). */
  WebSocket?: unknown;
  /** Uniform [0, 1) source for the jitter (tests). */
  random?: () => number;
}

export interface Counters {
  messages: number;
  /** Seq jumps or repeats not announced by the server (each resynced). */
  gaps: number;
  checksumErrors: number;
  conflated: number;
  resets: number;
  /** Symbols made whole again: snapshots after a gap, conflation or reset, and recovered resumes. */
  recovered: number;
  /** Symbols resumed by seq with nothing lost. */
  resumed: number;
  reconnects: number;
}

export interface ClientEvents {
  state: { state: ConnectionState; attempt: number; nextRetryAt: number | null };
  message: ServerMessage;
  update: { state: SymbolState; message: MarketMessage };
  snapshot: { state: SymbolState; message: SnapshotMessage; recovered: SymbolState['recovering'] };
  ack: AckMessage;
  error: ErrorMessage | { code: 'decode' | 'connect' | 'refresh'; message: string; symbols: string[] };
  gap: { sym: string; expected: number; got: number };
  checksum: { sym: string; seq: number; expected: number; got: number };
  conflated: ConflatedMessage;
  reset: ResetMessage;
  replay_end: ReplayEndMessage;
  token_expiring: TokenExpiringMessage;
  close: { code: number; reason: string };
}

/** Message rate and lag percentiles over the last seconds. */
export class RollingStats {
  constructor(now?: () => number);
  record(lagMs?: number): void;
  rate(): number;
  lag(): { p50: number; p99: number; samples: number } | null;
}

export class TickcastClient {
  /** `url`: the server's base, e.g. 'ws://127.0.0.1:8080'. */
  constructor(url: string, options?: ClientOptions);
  readonly state: ConnectionState;
  /** When the next reconnect attempt starts (ms, Date.now() clock), while reconnecting. */
  readonly nextRetryAt: number | null;
  /** The epoch of the last subscribe ack. */
  readonly epoch: bigint | null;
  readonly counters: Counters;
  readonly stats: RollingStats;
  readonly symbols: ReadonlyMap<string, SymbolState>;
  on<K extends keyof ClientEvents>(event: K, fn: (e: ClientEvents[K]) => void): () => void;
  connect(): this;
  close(): void;
  subscribe(symbols: string[]): void;
  unsubscribe(symbols: string[]): void;
  symbol(sym: string): SymbolState | undefined;
  /** Replay sessions only. */
  pause(): void;
  resume(): void;
  setSpeed(value: number | 'max'): void;
  seek(ts: bigint | string): void;
}

export function crc32(bytes: Uint8Array, length?: number): number;
export function backoffDelay(attempt: number, policy: { initialMs: number; maxMs: number }, random?: () => number): number;
export function msgpackDecoder(): Decoder;
export function jsonDecoder(): Decoder;
export function normalize<T extends object>(m: T): T;
export function encodeRequest(request: object): string;
export const ENCODINGS: Encoding[];

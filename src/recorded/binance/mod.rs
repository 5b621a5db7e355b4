//! Binance spot combined-stream captures, normalized the way a live Binance
//! source normalizes the websocket.
//!
//! In: a capture file of `<local_recv_ns> <json>` lines, plain or gzip
//! (told apart by the gzip magic `1f 8b`, never by the name). Out:
//! [`Event`](crate::recorded::Event)s in file order, and the
//! [`Gap`](crate::recorded::Gap)s Binance's own ids reveal.
//!
//! The work is split in two so a live source can reuse the second half:
//! - [`BinanceReader`] reads lines (one reusable buffer, gzip or not), keeps
//!   byte offsets and line numbers, and turns failures into
//!   [`SourceError`](crate::recorded::SourceError)s;
//! - [`BinanceNormalizer`] turns one message (the JSON of one line, or of one
//!   websocket frame) into events and keeps the per-symbol state that needs:
//!   trade ids, the local order book and its update ids.
//!
//! # What each message becomes
//! | message | event | `ts_event` |
//! |---|---|---|
//! | `<sym>@trade` (`e` = `trade`) | `Trade { px: p, sz: q, side }`; `m` (buyer is maker) means the seller crossed: `Sell`, else `Buy` | `T` ms × 10⁶ |
//! | `<sym>@bookTicker` | `Quote { bid: b, bid_sz: B, ask: a, ask_sz: A }` | the line's receive time on the exchange's clock (below) |
//! | `<sym>@depth[@100ms]` (`e` = `depthUpdate`) | `Book` with its `b` / `a` levels, once the book is synced (below) | `E` ms × 10⁶ |
//! | REST snapshot `{lastUpdateId, bids, asks}` | one `Book` with every snapshot level, plus a delete for every level the book had that the snapshot lacks | the line's receive time on the exchange's clock |
//! | any other stream (`@aggTrade`, `@kline_1m`, `@depth5`, …) | nothing; counted in [`BinanceStats::skipped_messages`] | |
//!
//! bookTicker messages and REST snapshots carry no exchange time. Their
//! `ts_event` is the line's receive time moved onto the exchange's clock by
//! the offset (exchange send time `E` minus receive time) of the latest
//! trade or depth message before it in the capture; before the first such message it
//! is the receive time itself. Without this, a capture host whose clock is
//! off (about 1.27 s in the samples) would give `ts_event`s that jump back
//! and forth between kinds, and event-time windows (`--from`, `--to`, seek)
//! would cut the stream in the wrong places.
//!
//! Every event's `ts_recv` is the receive time of the line that carried the
//! message (for a buffered depth update, its own line, not the snapshot's).
//! Prices and sizes are parsed with `str::parse::<f64>` (the double nearest
//! the decimal) and -0.0 becomes +0.0. Symbols are `data.s` (`BTCUSDT`),
//! interned to ids in order of first appearance.
//!
//! # Local order book
//! Binance's documented procedure: depth updates that arrive before a
//! symbol's snapshot are buffered (at most [`MAX_PENDING_DEPTH`] per symbol;
//! beyond that the oldest is dropped and counted). On the snapshot, updates
//! with `u <= lastUpdateId` are dropped (counted as stale), the first one
//! applied should satisfy `U <= lastUpdateId + 1 <= u`, and each later one
//! must start at the previous `u + 1`. A break is reported as a
//! `"depth update id"` gap (expected id, id received) and the update is
//! still applied, so the book stays as close to the exchange as the capture
//! allows. Released buffered updates follow the snapshot's event, so their
//! `ts_recv` is earlier than the snapshot's.
//!
//! A snapshot line names no symbol. It belongs to the symbol that is
//! awaiting one; if several are, to the one whose depth stream the file
//! showed most recently (a recorder fetches the snapshot right after
//! subscribing). If none is awaiting and exactly one symbol has a depth
//! stream, it is a re-sync of that symbol. Otherwise it cannot be placed: it
//! is skipped with a warning and counted in
//! [`BinanceStats::skipped_snapshots`]. A live source knows the symbol it
//! asked for and calls [`BinanceNormalizer::on_snapshot`] instead.
//!
//! Trade ids `t` are consecutive per symbol; a break is a `"trade id"` gap.
//!
//! # Errors
//! A line that is not `<digits> <json>`, JSON that is malformed or lacks a
//! field, a number that is not a finite decimal (or a negative size), an
//! invalid symbol: [`SourceError::Corrupt`](crate::recorded::SourceError::Corrupt) with the byte offset of the line
//! start in the (decompressed) stream and `line N` in the reason. The line
//! is consumed, so calling [`Source::next_event`](crate::recorded::Source::next_event) again carries on with the
//! next one. A gzip stream that ends early, or a last line without a newline
//! that does not parse: [`SourceError::Truncated`](crate::recorded::SourceError::Truncated), after which the reader
//! is finished. A line longer than [`MAX_LINE_BYTES`] is corrupt and also
//! ends the reading (there is no telling where the next line starts).
//!
//! # Files
//! | file | what it owns |
//! |---|---|
//! | `reader.rs` | [`BinanceReader`]: lines, gzip, offsets, line numbers, errors |
//! | `normalizer.rs` | [`BinanceNormalizer`]: one message to events; trade ids, clock offset, snapshot attribution |
//! | `book.rs` | one symbol's local book and its sync with snapshots and update ids |
//! | `message.rs` | the JSON shapes, parsed with serde visitors |
//! | `stats.rs` | [`BinanceStats`] |
//!
//! Imports flow one way: `message` and `stats` import only
//! [`crate::model`]; `book` imports them; `normalizer` imports `book`,
//! `message` and `stats`; `reader` imports `normalizer` and `stats`. All may
//! use `crate::recorded::source`; the reader also uses
//! `crate::recorded::watched`. None imports this file, which only declares
//! them and re-exports what a user needs.

mod book;
mod message;
mod normalizer;
mod reader;
mod stats;

pub use book::MAX_PENDING_DEPTH;
pub use normalizer::{BinanceError, BinanceNormalizer};
pub use reader::{BinanceReader, MAX_LINE_BYTES};
pub use stats::BinanceStats;

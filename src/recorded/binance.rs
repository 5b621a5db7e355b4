//! Binance spot combined-stream captures, normalized the way a live Binance
//! source normalizes the websocket.
//!
//! In: a capture file of `<local_recv_ns> <json>` lines, plain or gzip
//! (told apart by the gzip magic `1f 8b`, never by the name). Out:
//! [`Event`]s in file order, and the [`Gap`]s Binance's own ids reveal.
//!
//! The work is split in two so a live source can reuse the second half:
//! - [`BinanceReader`] reads lines (one reusable buffer, gzip or not), keeps
//!   byte offsets and line numbers, and turns failures into [`SourceError`]s;
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
//! invalid symbol: [`SourceError::Corrupt`] with the byte offset of the line
//! start in the (decompressed) stream and `line N` in the reason. The line
//! is consumed, so calling [`Source::next_event`] again carries on with the
//! next one. A gzip stream that ends early, or a last line without a newline
//! that does not parse: [`SourceError::Truncated`], after which the reader
//! is finished. A line longer than [`MAX_LINE_BYTES`] is corrupt and also
//! ends the reading (there is no telling where the next line starts).

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::source::{Event, Format, Gap, Source, SourceError};
use super::watched::Watched;
use crate::model::{is_valid_symbol, BookDelta, Level, Quote, Side, Trade, Update};

/// Most depth updates buffered per symbol while it waits for a snapshot.
/// Bounded so a capture without a snapshot cannot grow memory without end.
pub const MAX_PENDING_DEPTH: usize = 10_000;

/// Longest line accepted, in bytes. A REST snapshot of 5,000 levels a side is
/// about 400 KB; anything past this bound is not a capture line.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// Read buffer size for the file and for the decompressed stream.
const READ_BUFFER: usize = 256 << 10;

/// Counters of what the normalizer did, for `inspect` and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinanceStats {
    /// Trade events emitted.
    pub trades: u64,
    /// Quote events emitted.
    pub quotes: u64,
    /// Book events emitted (snapshots and applied depth updates).
    pub books: u64,
    /// Snapshots applied.
    pub snapshots: u64,
    /// Messages of streams we do not normalize (`@aggTrade`, `@kline`, ...).
    pub skipped_messages: u64,
    /// Snapshots that could not be attributed to a symbol.
    pub skipped_snapshots: u64,
    /// Depth updates dropped because the book already covered them
    /// (`u <= lastUpdateId`, or a repeat).
    pub stale_depth: u64,
    /// Buffered depth updates dropped because the buffer was full.
    pub dropped_pending: u64,
    /// Gaps reported (trade ids and depth update ids).
    pub gaps: u64,
}

/// Why one message could not be normalized.
#[derive(Debug, thiserror::Error)]
pub enum BinanceError {
    /// Not JSON, not a message we know the shape of, a field missing or of
    /// the wrong type, or a level that is not a pair of decimal strings.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A price or size that is not a finite decimal (sizes also >= 0).
    #[error("field {field:?}: {value:?} is not a valid {what}")]
    BadNumber {
        /// The JSON field.
        field: &'static str,
        /// Its text (truncated).
        value: String,
        /// "price" or "size".
        what: &'static str,
    },
    /// An event time too large to be in nanoseconds.
    #[error("field {field:?}: {value} ms is out of range")]
    BadTime {
        /// The JSON field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// `data.e` does not match the stream.
    #[error("event type {found:?} on a {stream} stream (expected {expected:?})")]
    WrongEvent {
        /// The kind of stream.
        stream: &'static str,
        /// The `e` it should carry.
        expected: &'static str,
        /// The `e` it carried (truncated).
        found: String,
    },
    /// The symbol breaks [`is_valid_symbol`].
    #[error("invalid symbol {0:?}: 1-32 characters of A-Z a-z 0-9 . - _ / :")]
    BadSymbol(String),
    /// [`BinanceNormalizer::on_snapshot`] got a message that is not a REST
    /// depth snapshot.
    #[error("not a depth snapshot (lastUpdateId, bids, asks)")]
    NotSnapshot,
}

/// The per-message half of the Binance source: JSON in, events out, with the
/// per-symbol state that takes (trade ids, the local book and its update
/// ids). Separate from the file reading so a live websocket source uses the
/// very same rules.
#[derive(Default)]
pub struct BinanceNormalizer {
    names: Vec<Arc<str>>,
    ids: HashMap<Box<str>, u32>,
    syms: Vec<SymState>,
    /// Counts depth messages, so snapshot attribution can tell which
    /// symbol's depth stream came most recently.
    depth_clock: u64,
    /// Exchange clock minus the capture host's clock, in ns, from the
    /// latest message that carried an exchange time (trade `T`, depth `E`).
    clock_offset_ns: Option<i64>,
    gaps: Vec<Gap>,
    stats: BinanceStats,
}

#[derive(Default)]
struct SymState {
    last_trade_id: Option<u64>,
    /// `None` until the symbol's depth stream (or a snapshot) shows up.
    depth: Option<DepthState>,
}

struct DepthState {
    /// `depth_clock` at the symbol's latest depth message.
    seen_at: u64,
    sync: DepthSync,
    /// Live levels: price bits to size, so a re-sync can delete what the
    /// new snapshot lacks.
    bids: HashMap<u64, f64>,
    asks: HashMap<u64, f64>,
}

enum DepthSync {
    /// No snapshot yet: updates wait here, oldest first.
    Awaiting(VecDeque<PendingDepth>),
    /// Synced: `last_id` is the last update id the book reflects; `first`
    /// until one update has been applied after the snapshot.
    Synced { last_id: u64, first: bool },
}

/// A parsed depth update, kept whole while it waits for a snapshot.
struct PendingDepth {
    recv_ns: u64,
    ts_event: u64,
    first_id: u64,
    last_id: u64,
    bids: Vec<Level>,
    asks: Vec<Level>,
}

/// Where the per-update work writes, borrowed apart from the symbol state.
struct Sink<'a> {
    gaps: &'a mut Vec<Gap>,
    stats: &'a mut BinanceStats,
    out: &'a mut VecDeque<Event>,
}

impl DepthState {
    fn new(seen_at: u64) -> DepthState {
        DepthState { seen_at, sync: DepthSync::Awaiting(VecDeque::new()), bids: HashMap::new(), asks: HashMap::new() }
    }

    fn is_awaiting(&self) -> bool {
        matches!(self.sync, DepthSync::Awaiting(_))
    }

    /// Buffers `update` (no snapshot yet) or applies it per the procedure.
    fn on_update(&mut self, sym: u32, update: PendingDepth, sink: &mut Sink<'_>) {
        match &mut self.sync {
            DepthSync::Awaiting(pending) => {
                if pending.len() >= MAX_PENDING_DEPTH {
                    pending.pop_front();
                    sink.stats.dropped_pending += 1;
                }
                pending.push_back(update);
            }
            DepthSync::Synced { last_id, first } => {
                if update.last_id <= *last_id {
                    sink.stats.stale_depth += 1;
                    return;
                }
                let expected = last_id.saturating_add(1);
                let in_sequence = if *first { update.first_id <= expected } else { update.first_id == expected };
                if !in_sequence {
                    sink.gaps.push(Gap {
                        sym,
                        what: "depth update id",
                        expected,
                        got: update.first_id,
                        ts_event: update.ts_event,
                    });
                    sink.stats.gaps += 1;
                }
                *last_id = update.last_id;
                *first = false;
                apply_levels(&mut self.bids, &update.bids);
                apply_levels(&mut self.asks, &update.asks);
                sink.stats.books += 1;
                sink.out.push_back(Event {
                    sym,
                    ts_event: update.ts_event,
                    ts_recv: update.recv_ns,
                    seq: None,
                    update: Update::Book(BookDelta { bids: update.bids, asks: update.asks }),
                });
            }
        }
    }

    /// Replaces the book with a snapshot: one event with every snapshot
    /// level and a delete for every live level it lacks, then the buffered
    /// updates it releases.
    fn on_snapshot(&mut self, sym: u32, recv_ns: u64, ts_event: u64, snap: Snapshot, sink: &mut Sink<'_>) {
        let Snapshot { last_update_id, mut bids, mut asks } = snap;
        replace_side(&mut self.bids, &mut bids, true);
        replace_side(&mut self.asks, &mut asks, false);
        sink.stats.snapshots += 1;
        sink.stats.books += 1;
        sink.out.push_back(Event {
            sym,
            ts_event,
            ts_recv: recv_ns,
            seq: None,
            update: Update::Book(BookDelta { bids, asks }),
        });
        let synced = DepthSync::Synced { last_id: last_update_id, first: true };
        if let DepthSync::Awaiting(pending) = std::mem::replace(&mut self.sync, synced) {
            for update in pending {
                self.on_update(sym, update, sink);
            }
        }
    }
}

fn apply_levels(live: &mut HashMap<u64, f64>, levels: &[Level]) {
    for l in levels {
        if l.sz == 0.0 {
            live.remove(&l.px.to_bits());
        } else {
            live.insert(l.px.to_bits(), l.sz);
        }
    }
}

/// Makes `levels` (a snapshot side) the live side, appending to `levels` a
/// delete for each live level the snapshot lacks, best first so the event
/// is the same on every run.
fn replace_side(live: &mut HashMap<u64, f64>, levels: &mut Vec<Level>, bids: bool) {
    let mut next = HashMap::with_capacity(levels.len());
    apply_levels(&mut next, levels);
    let mut gone: Vec<Level> = live
        .keys()
        .filter(|bits| !next.contains_key(*bits))
        .map(|&bits| Level { px: f64::from_bits(bits), sz: 0.0 })
        .collect();
    gone.sort_by(|a, b| if bids { b.px.total_cmp(&a.px) } else { a.px.total_cmp(&b.px) });
    levels.extend(gone);
    *live = next;
}

impl BinanceNormalizer {
    /// A normalizer with no symbols and no books yet.
    pub fn new() -> BinanceNormalizer {
        BinanceNormalizer::default()
    }

    /// Normalizes one message received at `recv_ns`: a combined-stream
    /// message or a REST depth snapshot (attributed as the module doc says).
    /// Events go to the back of `out`: none (a buffered depth update, a
    /// skipped stream), one, or several (a snapshot releasing buffered
    /// updates). On error nothing has changed.
    pub fn on_message(&mut self, recv_ns: u64, msg: &[u8], out: &mut VecDeque<Event>) -> Result<(), BinanceError> {
        let parsed: Parsed<'_> = serde_json::from_slice(msg)?;
        match parsed {
            Parsed::Trade(d) => self.on_trade(recv_ns, &d, out),
            Parsed::Ticker(d) => self.on_ticker(recv_ns, &d, out),
            Parsed::Depth(d) => self.on_depth(recv_ns, d, out),
            Parsed::Snapshot(snap) => {
                self.on_unnamed_snapshot(recv_ns, snap, out);
                Ok(())
            }
            Parsed::Skipped => {
                self.stats.skipped_messages += 1;
                Ok(())
            }
            Parsed::Deferred { stream, data } => match classify(&stream) {
                StreamKind::Trade => self.on_trade(recv_ns, &TradeData::deserialize(&data)?, out),
                StreamKind::Ticker => self.on_ticker(recv_ns, &TickerData::deserialize(&data)?, out),
                StreamKind::Depth => self.on_depth(recv_ns, DepthData::deserialize(&data)?, out),
                StreamKind::Other => {
                    self.stats.skipped_messages += 1;
                    Ok(())
                }
            },
        }
    }

    /// Applies a REST depth snapshot (`GET /api/v3/depth`) for `symbol`,
    /// received at `recv_ns`: what a live source calls after fetching one.
    pub fn on_snapshot(
        &mut self,
        symbol: &str,
        recv_ns: u64,
        msg: &[u8],
        out: &mut VecDeque<Event>,
    ) -> Result<(), BinanceError> {
        let Parsed::Snapshot(snap) = serde_json::from_slice(msg)? else {
            return Err(BinanceError::NotSnapshot);
        };
        let sym = self.intern(symbol)?;
        self.apply_snapshot(sym, recv_ns, snap, out);
        Ok(())
    }

    /// The name of a symbol id this normalizer returned.
    pub fn symbol(&self, id: u32) -> Option<&Arc<str>> {
        self.names.get(id as usize)
    }

    /// Moves the gaps found since the last call into `out`.
    pub fn take_gaps(&mut self, out: &mut Vec<Gap>) {
        out.append(&mut self.gaps);
    }

    /// What has been done so far.
    pub fn stats(&self) -> &BinanceStats {
        &self.stats
    }

    /// Depth updates still waiting for a snapshot, over all symbols (at the
    /// end of a file, updates that were never emitted).
    pub fn pending_depth(&self) -> usize {
        self.syms
            .iter()
            .filter_map(|s| match &s.depth {
                Some(DepthState { sync: DepthSync::Awaiting(p), .. }) => Some(p.len()),
                _ => None,
            })
            .sum()
    }

    fn intern(&mut self, name: &str) -> Result<u32, BinanceError> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        if !is_valid_symbol(name) {
            return Err(BinanceError::BadSymbol(truncated(name)));
        }
        let id = self.names.len() as u32;
        self.names.push(Arc::from(name));
        self.ids.insert(Box::from(name), id);
        self.syms.push(SymState::default());
        Ok(id)
    }

    fn on_trade(&mut self, recv_ns: u64, d: &TradeData<'_>, out: &mut VecDeque<Event>) -> Result<(), BinanceError> {
        expect_event("trade", "trade", &d.e)?;
        let px = price("p", &d.p)?;
        let sz = size("q", &d.q)?;
        let ts_event = ms_to_ns("T", d.trade_time)?;
        let sym = self.intern(&d.s)?;
        if let Some(sent) = d.event_time {
            self.observe_clock(recv_ns, ms_to_ns("E", sent)?);
        }
        let state = &mut self.syms[sym as usize];
        if let Some(prev) = state.last_trade_id {
            let expected = prev.saturating_add(1);
            if d.t != expected {
                self.gaps.push(Gap { sym, what: "trade id", expected, got: d.t, ts_event });
                self.stats.gaps += 1;
            }
        }
        state.last_trade_id = Some(d.t);
        // `m`: the buyer was the maker, so the seller crossed the spread.
        let side = if d.m { Side::Sell } else { Side::Buy };
        self.stats.trades += 1;
        out.push_back(Event {
            sym,
            ts_event,
            ts_recv: recv_ns,
            seq: None,
            update: Update::Trade(Trade { px, sz, side }),
        });
        Ok(())
    }

    fn on_ticker(&mut self, recv_ns: u64, d: &TickerData<'_>, out: &mut VecDeque<Event>) -> Result<(), BinanceError> {
        let quote = Quote {
            bid: price("b", &d.b)?,
            bid_sz: size("B", &d.bid_sz)?,
            ask: price("a", &d.a)?,
            ask_sz: size("A", &d.ask_sz)?,
        };
        let sym = self.intern(&d.s)?;
        self.stats.quotes += 1;
        // bookTicker carries no event time: its receive time, on the
        // exchange's clock, stands in (see the module doc).
        let ts_event = self.exchange_time(recv_ns);
        out.push_back(Event { sym, ts_event, ts_recv: recv_ns, seq: None, update: Update::Quote(quote) });
        Ok(())
    }

    fn on_depth(&mut self, recv_ns: u64, d: DepthData<'_>, out: &mut VecDeque<Event>) -> Result<(), BinanceError> {
        expect_event("depth", "depthUpdate", &d.e)?;
        let ts_event = ms_to_ns("E", d.event_time)?;
        let sym = self.intern(&d.s)?;
        self.observe_clock(recv_ns, ts_event);
        self.depth_clock += 1;
        let clock = self.depth_clock;
        let update =
            PendingDepth { recv_ns, ts_event, first_id: d.first_id, last_id: d.last_id, bids: d.b.0, asks: d.a.0 };
        let mut sink = Sink { gaps: &mut self.gaps, stats: &mut self.stats, out };
        let depth = self.syms[sym as usize].depth.get_or_insert_with(|| DepthState::new(clock));
        depth.seen_at = clock;
        depth.on_update(sym, update, &mut sink);
        Ok(())
    }

    /// Notes the offset between the exchange's clock and the capture
    /// host's from a message that carries both.
    fn observe_clock(&mut self, recv_ns: u64, exchange_ns: u64) {
        self.clock_offset_ns =
            Some((exchange_ns as i128 - recv_ns as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64);
    }

    /// A receive time moved onto the exchange's clock (unchanged before
    /// any message has shown the offset).
    fn exchange_time(&self, recv_ns: u64) -> u64 {
        let offset = self.clock_offset_ns.unwrap_or(0) as i128;
        (recv_ns as i128 + offset).clamp(0, u64::MAX as i128) as u64
    }

    fn apply_snapshot(&mut self, sym: u32, recv_ns: u64, snap: Snapshot, out: &mut VecDeque<Event>) {
        let ts_event = self.exchange_time(recv_ns);
        let clock = self.depth_clock;
        let mut sink = Sink { gaps: &mut self.gaps, stats: &mut self.stats, out };
        let depth = self.syms[sym as usize].depth.get_or_insert_with(|| DepthState::new(clock));
        depth.on_snapshot(sym, recv_ns, ts_event, snap, &mut sink);
    }

    /// A snapshot line of a capture: attributed per the module doc.
    fn on_unnamed_snapshot(&mut self, recv_ns: u64, snap: Snapshot, out: &mut VecDeque<Event>) {
        let depth_syms = || self.syms.iter().enumerate().filter_map(|(i, s)| s.depth.as_ref().map(|d| (i as u32, d)));
        let awaiting = depth_syms().filter(|(_, d)| d.is_awaiting()).max_by_key(|(_, d)| d.seen_at).map(|(i, _)| i);
        let target = awaiting.or_else(|| {
            let mut all = depth_syms();
            match (all.next(), all.next()) {
                (Some((i, _)), None) => Some(i),
                _ => None,
            }
        });
        match target {
            Some(sym) => self.apply_snapshot(sym, recv_ns, snap, out),
            None => {
                self.stats.skipped_snapshots += 1;
                tracing::warn!(
                    last_update_id = snap.last_update_id,
                    depth_symbols = depth_syms().count(),
                    "binance: skipping a depth snapshot that belongs to no symbol awaiting one"
                );
            }
        }
    }
}

fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

fn expect_event(stream: &'static str, expected: &'static str, found: &str) -> Result<(), BinanceError> {
    if found == expected {
        Ok(())
    } else {
        Err(BinanceError::WrongEvent { stream, expected, found: truncated(found) })
    }
}

/// Parses a decimal string; `None` unless finite (and >= 0 for a size).
/// Adding +0.0 turns -0.0 into +0.0 and leaves every other value alone.
fn decimal(s: &str, is_size: bool) -> Option<f64> {
    let v = s.parse::<f64>().ok()?;
    (v.is_finite() && (!is_size || v >= 0.0)).then_some(v + 0.0)
}

fn price(field: &'static str, s: &str) -> Result<f64, BinanceError> {
    decimal(s, false).ok_or_else(|| BinanceError::BadNumber { field, value: truncated(s), what: "price" })
}

fn size(field: &'static str, s: &str) -> Result<f64, BinanceError> {
    decimal(s, true).ok_or_else(|| BinanceError::BadNumber { field, value: truncated(s), what: "size" })
}

fn ms_to_ns(field: &'static str, ms: u64) -> Result<u64, BinanceError> {
    ms.checked_mul(1_000_000).ok_or(BinanceError::BadTime { field, value: ms })
}

// ---------------------------------------------------------------------------
// Message shapes. The envelope is read by hand so `data` is parsed straight
// into the struct its stream calls for (no intermediate tree); strings
// borrow from the line unless they hold escapes.

/// Which normalization a stream name calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamKind {
    Trade,
    Ticker,
    Depth,
    Other,
}

/// `btcusdt@trade`, `btcusdt@bookTicker`, `btcusdt@depth` and
/// `btcusdt@depth@100ms` (diff depth); everything else, partial-depth
/// `@depth5@100ms` included, is skipped.
fn classify(stream: &str) -> StreamKind {
    let Some((_, kind)) = stream.split_once('@') else {
        return StreamKind::Other;
    };
    match kind {
        "trade" => StreamKind::Trade,
        "bookTicker" => StreamKind::Ticker,
        "depth" => StreamKind::Depth,
        _ if kind.strip_prefix("depth@").is_some_and(|speed| speed.ends_with("ms")) => StreamKind::Depth,
        _ => StreamKind::Other,
    }
}

/// A JSON string, borrowed from the input unless it holds escapes.
struct Text<'a>(Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// A `[["px","qty"], ...]` array, parsed straight into levels.
struct Levels(Vec<Level>);

impl<'de> Deserialize<'de> for Levels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Levels;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of [price, size] string pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Levels, A::Error> {
                let mut levels = Vec::new();
                while let Some(OneLevel(l)) = seq.next_element()? {
                    levels.push(l);
                }
                Ok(Levels(levels))
            }
        }
        d.deserialize_seq(V)
    }
}

struct OneLevel(Level);

impl<'de> Deserialize<'de> for OneLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneLevel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [price, size] pair of decimal strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneLevel, A::Error> {
                let px: Text<'_> = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let sz: Text<'_> = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let bad = |what: &str, s: &str| {
                    de::Error::custom(format_args!("level {what} {:?} is not valid", truncated(s)))
                };
                let px_v = decimal(&px, false).ok_or_else(|| bad("price", &px))?;
                let sz_v = decimal(&sz, true).ok_or_else(|| bad("size", &sz))?;
                Ok(OneLevel(Level { px: px_v, sz: sz_v }))
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
struct TradeData<'a> {
    #[serde(borrow)]
    e: Text<'a>,
    #[serde(borrow)]
    s: Text<'a>,
    t: u64,
    #[serde(borrow)]
    p: Text<'a>,
    #[serde(borrow)]
    q: Text<'a>,
    #[serde(rename = "T")]
    trade_time: u64,
    /// When the exchange sent the message (`E`): sets the clock offset.
    #[serde(rename = "E", default)]
    event_time: Option<u64>,
    m: bool,
}

#[derive(Deserialize)]
struct TickerData<'a> {
    #[serde(borrow)]
    s: Text<'a>,
    #[serde(borrow)]
    b: Text<'a>,
    #[serde(rename = "B", borrow)]
    bid_sz: Text<'a>,
    #[serde(borrow)]
    a: Text<'a>,
    #[serde(rename = "A", borrow)]
    ask_sz: Text<'a>,
}

#[derive(Deserialize)]
struct DepthData<'a> {
    #[serde(borrow)]
    e: Text<'a>,
    #[serde(rename = "E")]
    event_time: u64,
    #[serde(borrow)]
    s: Text<'a>,
    #[serde(rename = "U")]
    first_id: u64,
    #[serde(rename = "u")]
    last_id: u64,
    b: Levels,
    a: Levels,
}

struct Snapshot {
    last_update_id: u64,
    bids: Vec<Level>,
    asks: Vec<Level>,
}

/// One line's JSON, classified.
enum Parsed<'a> {
    Trade(TradeData<'a>),
    Ticker(TickerData<'a>),
    Depth(DepthData<'a>),
    Snapshot(Snapshot),
    /// A stream we do not normalize.
    Skipped,
    /// `data` came before `stream` (a re-serialized capture with sorted
    /// keys): kept as a tree and converted once the stream is known.
    Deferred {
        stream: String,
        data: serde_json::Value,
    },
}

enum Key {
    Stream,
    Data,
    LastUpdateId,
    Bids,
    Asks,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "stream" => Key::Stream,
                    "data" => Key::Data,
                    "lastUpdateId" => Key::LastUpdateId,
                    "bids" => Key::Bids,
                    "asks" => Key::Asks,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Parsed<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Parsed<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a combined-stream message {stream, data} or a depth snapshot {lastUpdateId, bids, asks}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<'a>, A::Error> {
                let mut stream: Option<Text<'a>> = None;
                let mut parsed: Option<Parsed<'a>> = None;
                let mut deferred: Option<serde_json::Value> = None;
                let mut last_update_id: Option<u64> = None;
                let mut bids: Option<Levels> = None;
                let mut asks: Option<Levels> = None;
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Stream => stream = Some(map.next_value()?),
                        Key::Data => match stream.as_deref().map(classify) {
                            Some(StreamKind::Trade) => parsed = Some(Parsed::Trade(map.next_value()?)),
                            Some(StreamKind::Ticker) => parsed = Some(Parsed::Ticker(map.next_value()?)),
                            Some(StreamKind::Depth) => parsed = Some(Parsed::Depth(map.next_value()?)),
                            Some(StreamKind::Other) => {
                                map.next_value::<IgnoredAny>()?;
                                parsed = Some(Parsed::Skipped);
                            }
                            None => deferred = Some(map.next_value()?),
                        },
                        Key::LastUpdateId => last_update_id = Some(map.next_value()?),
                        Key::Bids => bids = Some(map.next_value()?),
                        Key::Asks => asks = Some(map.next_value()?),
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                if let Some(parsed) = parsed {
                    return Ok(parsed);
                }
                if let Some(data) = deferred {
                    let stream = stream.ok_or_else(|| de::Error::missing_field("stream"))?;
                    return Ok(Parsed::Deferred { stream: stream.0.into_owned(), data });
                }
                if stream.is_some() {
                    return Err(de::Error::missing_field("data"));
                }
                let Some(last_update_id) = last_update_id else {
                    return Err(de::Error::custom(
                        "neither a combined-stream message {stream, data} nor a depth snapshot {lastUpdateId, bids, asks}",
                    ));
                };
                Ok(Parsed::Snapshot(Snapshot {
                    last_update_id,
                    bids: bids.ok_or_else(|| de::Error::missing_field("bids"))?.0,
                    asks: asks.ok_or_else(|| de::Error::missing_field("asks"))?.0,
                }))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------------------
// The file reader.

/// Reader of one Binance capture file (plain or gzip), yielding the events
/// of [`BinanceNormalizer`] with errors that name the file, line and offset.
pub struct BinanceReader {
    path: PathBuf,
    input: Box<dyn BufRead + Send>,
    file_failed: Arc<AtomicBool>,
    /// The current line, reused.
    line: Vec<u8>,
    /// Offset of the next line in the (decompressed) stream.
    offset: u64,
    /// Lines read so far.
    line_no: u64,
    norm: BinanceNormalizer,
    queue: VecDeque<Event>,
    finished: bool,
}

impl BinanceReader {
    /// Opens the file, telling gzip from plain text by its first two bytes.
    pub fn open(path: &Path) -> Result<BinanceReader, SourceError> {
        let io_err = |source| SourceError::Io { path: path.to_owned(), source };
        let file_failed = Arc::new(AtomicBool::new(false));
        let file = File::open(path).map_err(io_err)?;
        let mut raw = BufReader::with_capacity(READ_BUFFER, Watched { inner: file, failed: file_failed.clone() });
        let gzip = raw.fill_buf().map_err(io_err)?.starts_with(&[0x1f, 0x8b]);
        let input: Box<dyn BufRead + Send> = if gzip {
            Box::new(BufReader::with_capacity(READ_BUFFER, flate2::bufread::MultiGzDecoder::new(raw)))
        } else {
            Box::new(raw)
        };
        Ok(BinanceReader {
            path: path.to_owned(),
            input,
            file_failed,
            line: Vec::with_capacity(4096),
            offset: 0,
            line_no: 0,
            norm: BinanceNormalizer::new(),
            queue: VecDeque::new(),
            finished: false,
        })
    }

    /// What the normalizer has done so far.
    pub fn stats(&self) -> &BinanceStats {
        self.norm.stats()
    }

    /// Lines read so far.
    pub fn lines(&self) -> u64 {
        self.line_no
    }

    /// Reads the next line into `self.line`: `Some((start offset, ends with
    /// a newline))`, or `None` at the end.
    fn read_line(&mut self) -> Result<Option<(u64, bool)>, SourceError> {
        self.line.clear();
        let start = self.offset;
        let limit = MAX_LINE_BYTES as u64 + 1;
        match self.input.by_ref().take(limit).read_until(b'\n', &mut self.line) {
            Ok(0) => Ok(None),
            Ok(n) => {
                self.offset += n as u64;
                self.line_no += 1;
                let newline = self.line.last() == Some(&b'\n');
                if !newline && self.line.len() > MAX_LINE_BYTES {
                    self.finished = true;
                    return Err(self.corrupt(start, format_args!("line longer than {MAX_LINE_BYTES} bytes")));
                }
                Ok(Some((start, newline)))
            }
            Err(e) => {
                self.finished = true;
                let line = self.line_no + 1;
                Err(if self.file_failed.load(Ordering::Relaxed) {
                    SourceError::Io { path: self.path.clone(), source: e }
                } else if e.kind() == io::ErrorKind::UnexpectedEof {
                    SourceError::Truncated {
                        path: self.path.clone(),
                        offset: start,
                        reason: format!("line {line}: the gzip stream ends early ({e})"),
                    }
                } else {
                    SourceError::Corrupt {
                        path: self.path.clone(),
                        offset: start,
                        reason: format!("line {line}: the gzip stream is corrupt ({e})"),
                    }
                })
            }
        }
    }

    fn corrupt(&self, offset: u64, what: impl fmt::Display) -> SourceError {
        SourceError::Corrupt { path: self.path.clone(), offset, reason: format!("line {}: {what}", self.line_no) }
    }

    /// Normalizes the line in `self.line`.
    fn process_line(&mut self, start: u64, newline: bool) -> Result<(), SourceError> {
        let mut body = self.line.as_slice();
        if let Some(rest) = body.strip_suffix(b"\n") {
            body = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        if body.is_empty() {
            return Ok(());
        }
        let result = match split_line(body) {
            Ok((recv_ns, json)) => self.norm.on_message(recv_ns, json, &mut self.queue).map_err(|e| e.to_string()),
            Err(reason) => Err(reason),
        };
        let Err(reason) = result else {
            return Ok(());
        };
        if newline {
            Err(self.corrupt(start, reason))
        } else {
            self.finished = true;
            Err(SourceError::Truncated {
                path: self.path.clone(),
                offset: start,
                reason: format!("line {}: the last line has no newline and does not parse: {reason}", self.line_no),
            })
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        let pending = self.norm.pending_depth();
        if pending > 0 {
            tracing::warn!(
                path = %self.path.display(),
                pending,
                "binance: depth updates never released: no snapshot followed them"
            );
        }
    }
}

/// Splits `<recv_ns> <json>`.
fn split_line(line: &[u8]) -> Result<(u64, &[u8]), String> {
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return Err("expected `<recv_ns> <json>`: no space in the line".to_owned());
    };
    let (digits, json) = (&line[..space], &line[space + 1..]);
    let recv_ns = digits.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    });
    match recv_ns {
        Some(ns) if !digits.is_empty() => Ok((ns, json)),
        _ => Err(format!(
            "expected `<recv_ns> <json>`: {:?} is not a receive time in ns",
            String::from_utf8_lossy(&digits[..digits.len().min(40)])
        )),
    }
}

impl Source for BinanceReader {
    fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(event));
            }
            if self.finished {
                return Ok(None);
            }
            match self.read_line()? {
                Some((start, newline)) => self.process_line(start, newline)?,
                None => self.finish(),
            }
        }
    }

    /// An id this source never returned gets an empty name.
    fn symbol(&self, id: u32) -> Arc<str> {
        self.norm.symbol(id).cloned().unwrap_or_else(|| Arc::from(""))
    }

    fn take_gaps(&mut self, out: &mut Vec<Gap>) {
        self.norm.take_gaps(out);
    }

    fn format(&self) -> Format {
        Format::Binance
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::io::Write;

    use super::*;
    use crate::model::UpdateKind;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/binance");
    const SAMPLES: [(&str, &str); 2] = [("btcusdt_20240808.gz", "BTCUSDT"), ("ethusdt_20240808.gz", "ETHUSDT")];

    fn sample(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    fn decompressed(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(File::open(sample(name)).unwrap()).read_to_end(&mut out).unwrap();
        out
    }

    /// A file under the system temp dir, unique to this process and test.
    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("tickcast-binance-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn read_all(path: &Path) -> (Vec<Event>, Vec<Gap>, BinanceReader) {
        let mut reader = BinanceReader::open(path).unwrap();
        let mut events = Vec::new();
        while let Some(e) = reader.next_event().unwrap() {
            events.push(e);
        }
        let mut gaps = Vec::new();
        reader.take_gaps(&mut gaps);
        (events, gaps, reader)
    }

    /// The number after `"key":` in `s`.
    fn number_after(s: &str, key: &str) -> u64 {
        let pat = format!("\"{key}\":");
        let at = s.find(&pat).unwrap() + pat.len();
        s[at..].bytes().take_while(u8::is_ascii_digit).fold(0, |n, b| n * 10 + u64::from(b - b'0'))
    }

    /// Per-kind counts computed from the raw text with string checks only.
    fn expected_counts(name: &str) -> [u64; 3] {
        let text = String::from_utf8(decompressed(name)).unwrap();
        let (mut trades, mut quotes, mut depth_ids, mut snapshot_id) = (0, 0, Vec::new(), None);
        for line in text.lines() {
            let json = line.split_once(' ').unwrap().1;
            if json.starts_with("{\"lastUpdateId\"") {
                assert!(snapshot_id.is_none(), "the samples hold one snapshot each");
                snapshot_id = Some(number_after(json, "lastUpdateId"));
            } else if json.contains("@trade\"") {
                trades += 1;
            } else if json.contains("@bookTicker\"") {
                quotes += 1;
            } else if json.contains("@depth@100ms\"") {
                depth_ids.push(number_after(json, "u"));
            } else {
                panic!("unexpected line {line}");
            }
        }
        let snapshot_id = snapshot_id.unwrap();
        let books = depth_ids.iter().filter(|&&u| u > snapshot_id).count() as u64 + 1;
        [trades, quotes, books]
    }

    #[test]
    fn per_symbol_counts_match_the_raw_files() {
        for (file, symbol) in SAMPLES {
            let (events, gaps, reader) = read_all(&sample(file));
            let mut counts: HashMap<(Arc<str>, usize), u64> = HashMap::new();
            for e in &events {
                *counts.entry((reader.symbol(e.sym), e.update.kind() as usize)).or_default() += 1;
            }
            let got = UpdateKind::ALL.map(|k| counts.get(&(Arc::from(symbol), k as usize)).copied().unwrap_or(0));
            println!("{symbol}: trades/quotes/books {got:?}, gaps {gaps:?}, stats {:?}", reader.stats());
            assert_eq!(got, expected_counts(file), "{symbol}");
            assert_eq!(counts.len(), 3, "one symbol per sample");
            assert_eq!(reader.stats().snapshots, 1);
            assert_eq!(reader.stats().skipped_messages, 0);
            assert_eq!(reader.stats().skipped_snapshots, 0);
            assert_eq!(reader.norm.pending_depth(), 0);
            assert!(events.iter().all(|e| e.seq.is_none() && e.ts_recv > 1_723_161_000_000_000_000));
        }
    }

    #[test]
    fn first_and_last_event_times() {
        // btcusdt: lines 1-2 are depth updates buffered until the snapshot
        // on line 8, so the first event is line 3's bookTicker. Its
        // ts_event is its receive time on the exchange's clock: line 2's
        // depth update (E 1723161255308 ms, received 1723161254036059768)
        // shows the exchange 1,271,940,232 ns ahead of the capture host.
        let (events, _, _) = read_all(&sample("btcusdt_20240808.gz"));
        let (first, last) = (events.first().unwrap(), events.last().unwrap());
        assert_eq!(first.ts_recv, 1723161254087891268);
        assert_eq!(first.ts_event, 1723161254087891268 + 1_271_940_232);
        assert!(
            matches!(first.update, Update::Quote(q) if q == Quote { bid: 61837.63, bid_sz: 3.78826, ask: 61837.64, ask_sz: 1.54698 })
        );
        assert_eq!(last.ts_recv, 1723161599999231384);
        assert!(last.ts_event.abs_diff(last.ts_recv + 1_271_940_232) < 50_000_000, "the offset holds all day");
        // ethusdt: the first line is a bookTicker, before any exchange time:
        // its own receive time.
        let (events, _, _) = read_all(&sample("ethusdt_20240808.gz"));
        assert_eq!(events.first().unwrap().ts_event, 1723161254024619568);
        assert_eq!(events.last().unwrap().ts_recv, 1723161599900862584);
        // Event times now follow file order, up to network jitter.
        // (A trade's ts_event is its trade time `T`, which can precede the
        // message's send time by some hundreds of ms.)
        let mut worst = 0;
        for w in events.windows(2) {
            worst = worst.max(w[0].ts_event.saturating_sub(w[1].ts_event));
        }
        assert!(worst < 500_000_000, "event time goes back by {worst} ns at most");
    }

    #[test]
    fn trade_side_and_fields() {
        let (events, _, reader) = read_all(&sample("btcusdt_20240808.gz"));
        let trades: Vec<(&Event, Trade)> = events
            .iter()
            .filter_map(|e| match e.update {
                Update::Trade(t) => Some((e, t)),
                _ => None,
            })
            .collect();
        // Line 4: "t":3735683259,"p":"61837.63000000","q":"0.02000000",
        // "T":1723161255342,"m":true -> the buyer was the maker: a sell.
        let (e, t) = trades[0];
        assert_eq!(t, Trade { px: 61837.63, sz: 0.02, side: Side::Sell });
        assert_eq!((e.ts_event, e.ts_recv), (1723161255342000000, 1723161254087896568));
        assert_eq!(&*reader.symbol(e.sym), "BTCUSDT");
        // "t":3735683305,"p":"61828.02000000","q":"0.00810000",
        // "T":1723161255856,"m":false -> a buy.
        let (e, t) = trades.iter().find(|(e, _)| e.ts_recv == 1723161254585058867).unwrap();
        assert_eq!(*t, Trade { px: 61828.02, sz: 0.0081, side: Side::Buy });
        assert_eq!(e.ts_event, 1723161255856000000);
    }

    #[test]
    fn snapshot_emits_every_level_and_releases_buffered_updates() {
        let (events, _, _) = read_all(&sample("btcusdt_20240808.gz"));
        let text = String::from_utf8(decompressed("btcusdt_20240808.gz")).unwrap();
        let snap_line = text.lines().nth(7).unwrap();
        let (recv, json) = snap_line.split_once(' ').unwrap();
        let value: serde_json::Value = serde_json::from_str(json).unwrap();
        let n_bids = value["bids"].as_array().unwrap().len();
        let n_asks = value["asks"].as_array().unwrap().len();
        let recv: u64 = recv.parse().unwrap();
        let i = events.iter().position(|e| matches!(e.update, Update::Book(_))).unwrap();
        let Update::Book(book) = &events[i].update else { unreachable!() };
        assert_eq!(events[i].ts_recv, recv);
        // On the exchange's clock, by the offset of the depth update on
        // line 7 (E 1723161255408 ms, received 1723161254137307667).
        assert_eq!(events[i].ts_event, recv + (1_723_161_255_408_000_000 - 1_723_161_254_137_307_667));
        assert_eq!((book.bids.len(), book.asks.len()), (n_bids, n_asks));
        assert_eq!(book.bids[0], Level { px: 61837.63, sz: 3.78826 });
        // lastUpdateId 50093239218: line 6's update (U 50093239208, u
        // 50093239224) is the first applied, straight after the snapshot.
        let next = &events[i + 1];
        assert!(matches!(next.update, Update::Book(_)));
        assert_eq!((next.ts_event, next.ts_recv), (1723161255408000000, 1723161254137307667));
    }

    fn best(book: &BTreeMap<u64, f64>, highest: bool) -> f64 {
        let key = if highest { book.keys().next_back() } else { book.keys().next() };
        f64::from_bits(*key.unwrap())
    }

    #[test]
    fn the_book_ends_with_a_positive_spread() {
        for (file, _) in SAMPLES {
            let (events, _, _) = read_all(&sample(file));
            // Positive prices: the bit patterns sort like the values.
            let (mut bids, mut asks) = (BTreeMap::<u64, f64>::new(), BTreeMap::<u64, f64>::new());
            let mut crossed_after_first_book = 0;
            for e in &events {
                if let Update::Book(d) = &e.update {
                    for (side, levels) in [(&mut bids, &d.bids), (&mut asks, &d.asks)] {
                        for l in levels {
                            if l.sz == 0.0 {
                                side.remove(&l.px.to_bits());
                            } else {
                                side.insert(l.px.to_bits(), l.sz);
                            }
                        }
                    }
                    if best(&bids, true) >= best(&asks, false) {
                        crossed_after_first_book += 1;
                    }
                }
            }
            let (bid, ask) = (best(&bids, true), best(&asks, false));
            println!("{file}: final book {} bids / {} asks, {bid} x {ask}", bids.len(), asks.len());
            assert!(bid < ask, "{file}: crossed book at the end: {bid} >= {ask}");
            // And the top agrees with the last bookTicker of the capture.
            let Some(Update::Quote(q)) = events.iter().rev().map(|e| &e.update).find(|u| matches!(u, Update::Quote(_)))
            else {
                panic!("no quote")
            };
            assert_eq!((bid, ask), (q.bid, q.ask), "{file}");
            assert_eq!(crossed_after_first_book, 0, "{file}");
        }
    }

    #[test]
    fn plain_copy_gives_the_same_events_as_gzip() {
        let path = temp_file("plain.txt", &decompressed("ethusdt_20240808.gz"));
        let (plain, plain_gaps, _) = read_all(&path);
        let (gz, gz_gaps, _) = read_all(&sample("ethusdt_20240808.gz"));
        std::fs::remove_file(&path).unwrap();
        assert!(!plain.is_empty());
        assert_eq!(plain, gz);
        assert_eq!(plain_gaps, gz_gaps);
        assert_eq!(super::super::detect(&sample("ethusdt_20240808.gz")).unwrap(), Format::Binance);
    }

    #[test]
    fn gzip_cut_in_the_middle_is_truncated() {
        let bytes = std::fs::read(sample("btcusdt_20240808.gz")).unwrap();
        let path = temp_file("cut.gz", &bytes[..bytes.len() / 2]);
        let mut reader = BinanceReader::open(&path).unwrap();
        let mut n = 0;
        let err = loop {
            match reader.next_event() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("a cut file read to the end after {n} events"),
                Err(e) => break e,
            }
        };
        std::fs::remove_file(&path).unwrap();
        assert!(n > 1000, "{n}");
        let SourceError::Truncated { path: p, .. } = &err else { panic!("{err}") };
        assert_eq!(p, &path);
        assert!(err.to_string().contains("cut.gz"), "{err}");
        assert!(matches!(reader.next_event(), Ok(None)), "finished after a truncation");
    }

    #[test]
    fn garbage_line_is_corrupt_at_its_offset_and_reading_goes_on() {
        let text = decompressed("ethusdt_20240808.gz");
        let starts: Vec<usize> = std::iter::once(0)
            .chain(text.iter().enumerate().filter(|(_, &b)| b == b'\n').map(|(i, _)| i + 1))
            .collect();
        let at = starts[1000]; // line 1001 becomes the garbage
        for (name, garbage) in [
            ("garbage.txt", &b"this is not a capture line\n"[..]),
            ("badjson.gz", b"1723161254024619568 {\"stream\":\n"),
        ] {
            let mut bytes = text[..at].to_vec();
            bytes.extend_from_slice(garbage);
            bytes.extend_from_slice(&text[at..]);
            let bytes = if name.ends_with(".gz") { gzip(&bytes) } else { bytes };
            let path = temp_file(name, &bytes);
            let mut reader = BinanceReader::open(&path).unwrap();
            let (mut before, mut after) = (0, 0);
            let err = loop {
                match reader.next_event() {
                    Ok(Some(_)) => before += 1,
                    Ok(None) => panic!("no error"),
                    Err(e) => break e,
                }
            };
            while reader.next_event().unwrap().is_some() {
                after += 1;
            }
            std::fs::remove_file(&path).unwrap();
            let SourceError::Corrupt { path: p, offset, reason } = &err else { panic!("{err}") };
            assert_eq!((p, *offset), (&path, at as u64), "{err}");
            assert!(reason.starts_with("line 1001: "), "{err}");
            assert!(err.to_string().contains(name), "{err}");
            let (all, _, _) = read_all(&sample("ethusdt_20240808.gz"));
            assert_eq!(before + after, all.len(), "{name}: every other line still read");
        }
    }

    #[test]
    fn last_line_without_newline() {
        let text = decompressed("ethusdt_20240808.gz");
        let cut = text.len() - 40; // inside the last line's JSON
        let path = temp_file("nolf.txt", &text[..cut]);
        let mut reader = BinanceReader::open(&path).unwrap();
        let err = loop {
            match reader.next_event() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        let last_start = text[..text.len() - 1].iter().rposition(|&b| b == b'\n').unwrap() + 1;
        assert!(matches!(err, SourceError::Truncated { offset, .. } if offset == last_start as u64), "{err}");
        // A complete last line without its newline is fine.
        std::fs::write(&path, &text[..text.len() - 1]).unwrap();
        let (events, _, _) = read_all(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(events.last().unwrap().ts_recv, 1723161599900862584);
    }

    fn feed(norm: &mut BinanceNormalizer, lines: &[&str]) -> Vec<Event> {
        let mut out = VecDeque::new();
        for (i, line) in lines.iter().enumerate() {
            norm.on_message(1000 + i as u64, line.as_bytes(), &mut out).unwrap();
        }
        out.into_iter().collect()
    }

    fn depth(sym: &str, first: u64, last: u64, bids: &str, asks: &str) -> String {
        format!(
            r#"{{"stream":"{}@depth@100ms","data":{{"e":"depthUpdate","E":5,"s":"{sym}","U":{first},"u":{last},"b":{bids},"a":{asks}}}}}"#,
            sym.to_lowercase()
        )
    }

    fn book(e: &Event) -> &BookDelta {
        match &e.update {
            Update::Book(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resync_deletes_levels_the_new_snapshot_lacks_and_gaps_are_reported() {
        let mut norm = BinanceNormalizer::new();
        let events = feed(
            &mut norm,
            &[
                &depth("XYZ", 8, 10, "[]", "[]"),                // stale after the snapshot
                &depth("XYZ", 11, 12, r#"[["1.5","2"]]"#, "[]"), // spans 11: applied
                r#"{"lastUpdateId":10,"bids":[["1.0","1"],["0.9","3"]],"asks":[["2.0","1"]]}"#,
                &depth("XYZ", 14, 15, r#"[["1.0","0"]]"#, "[]"), // gap: expected 13
                r#"{"lastUpdateId":20,"bids":[["0.9","4"]],"asks":[["2.5","1"]]}"#,
                &depth("XYZ", 21, 22, "[]", r#"[["2.5","0"]]"#),
            ],
        );
        assert_eq!(events.len(), 5);
        assert_eq!(book(&events[0]).bids, vec![Level { px: 1.0, sz: 1.0 }, Level { px: 0.9, sz: 3.0 }]);
        assert_eq!(events[0].ts_recv, 1002, "the snapshot's receive time");
        // ... on the exchange's clock: the depth update before it was
        // received at 1001 with E = 5 ms.
        assert_eq!(events[0].ts_event, 1002 + (5_000_000 - 1001));
        assert_eq!(book(&events[1]).bids, vec![Level { px: 1.5, sz: 2.0 }]);
        assert_eq!((events[1].ts_event, events[1].ts_recv), (5_000_000, 1001));
        // Re-sync: 0.9 stays, 1.5 (from an update) is deleted, best first;
        // 2.0 is deleted from the asks.
        assert_eq!(book(&events[3]).bids, vec![Level { px: 0.9, sz: 4.0 }, Level { px: 1.5, sz: 0.0 }]);
        assert_eq!(book(&events[3]).asks, vec![Level { px: 2.5, sz: 1.0 }, Level { px: 2.0, sz: 0.0 }]);
        let mut gaps = Vec::new();
        norm.take_gaps(&mut gaps);
        assert_eq!(gaps, vec![Gap { sym: 0, what: "depth update id", expected: 13, got: 14, ts_event: 5_000_000 }]);
        assert_eq!(norm.stats().stale_depth, 1);
        assert_eq!(norm.stats().snapshots, 2);
    }

    #[test]
    fn snapshot_goes_to_the_most_recent_awaiting_symbol_or_is_skipped() {
        let mut norm = BinanceNormalizer::new();
        let snap = r#"{"lastUpdateId":1,"bids":[],"asks":[]}"#;
        let events = feed(&mut norm, &[&depth("AAA", 2, 3, "[]", "[]"), &depth("BBB", 2, 3, "[]", "[]"), snap]);
        assert_eq!(events.len(), 2, "BBB's snapshot and its update");
        assert!(events.iter().all(|e| e.sym == 1));
        let events = feed(&mut norm, &[snap]);
        assert_eq!(events.iter().map(|e| e.sym).collect::<Vec<_>>(), vec![0, 0], "then AAA's");
        // Nobody awaiting, two depth symbols: ambiguous.
        assert!(feed(&mut norm, &[snap]).is_empty());
        assert_eq!(norm.stats().skipped_snapshots, 1);
        // A live source names the symbol.
        let mut out = VecDeque::new();
        norm.on_snapshot("AAA", 7, snap.as_bytes(), &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(norm.on_snapshot("AAA", 7, depth("AAA", 1, 1, "[]", "[]").as_bytes(), &mut out).is_err());
    }

    #[test]
    fn pending_updates_are_bounded() {
        let mut norm = BinanceNormalizer::new();
        let mut out = VecDeque::new();
        for i in 0..MAX_PENDING_DEPTH as u64 + 5 {
            norm.on_message(i, depth("XYZ", i + 1, i + 1, "[]", "[]").as_bytes(), &mut out).unwrap();
        }
        assert!(out.is_empty());
        assert_eq!(norm.pending_depth(), MAX_PENDING_DEPTH);
        assert_eq!(norm.stats().dropped_pending, 5);
        norm.on_message(0, br#"{"lastUpdateId":0,"bids":[],"asks":[]}"#, &mut out).unwrap();
        assert_eq!(out.len(), MAX_PENDING_DEPTH + 1);
        let mut gaps = Vec::new();
        norm.take_gaps(&mut gaps);
        assert_eq!(gaps.len(), 1, "the dropped ones: {gaps:?}");
        assert_eq!((gaps[0].expected, gaps[0].got), (1, 6));
    }

    #[test]
    fn messages_other_shapes_and_errors() {
        let mut norm = BinanceNormalizer::new();
        // Sorted keys (data before stream), escapes, unknown streams.
        let events = feed(
            &mut norm,
            &[
                r#"{"data":{"A":"1","B":"2","a":"10.5","b":"10.25","s":"BTC\u0055SDT","u":1},"stream":"btcusdt@bookTicker"}"#,
                r#"{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","a":5,"p":"1","q":"1"}}"#,
                r#"{"stream":"btcusdt@depth5@100ms","data":{"lastUpdateId":5,"bids":[],"asks":[]}}"#,
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":7,"p":"-0.0","q":"0","T":3,"m":false}}"#,
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":9,"p":"1","q":"1","T":3,"m":true}}"#,
            ],
        );
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].update, Update::Quote(Quote { bid: 10.25, bid_sz: 2.0, ask: 10.5, ask_sz: 1.0 }));
        assert_eq!(&**norm.symbol(0).unwrap(), "BTCUSDT");
        let Update::Trade(t) = events[1].update else { panic!() };
        assert_eq!(t.px.to_bits(), 0.0f64.to_bits(), "-0.0 becomes +0.0");
        assert_eq!(norm.stats().skipped_messages, 2);
        let mut gaps = Vec::new();
        norm.take_gaps(&mut gaps);
        assert_eq!(gaps, vec![Gap { sym: 0, what: "trade id", expected: 8, got: 9, ts_event: 3_000_000 }]);

        let mut out = VecDeque::new();
        for (bad, why) in [
            (
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":7,"p":"1","T":3,"m":false}}"#,
                "missing field `q`",
            ),
            (
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":7,"p":"abc","q":"1","T":3,"m":false}}"#,
                "\"abc\" is not a valid price",
            ),
            (
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":7,"p":"1","q":"-1","T":3,"m":false}}"#,
                "not a valid size",
            ),
            (
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":7,"p":"inf","q":"1","T":3,"m":false}}"#,
                "not a valid price",
            ),
            (
                r#"{"stream":"btcusdt@trade","data":{"e":"aggTrade","s":"BTCUSDT","t":7,"p":"1","q":"1","T":3,"m":false}}"#,
                "event type",
            ),
            (
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTC USDT","t":7,"p":"1","q":"1","T":3,"m":false}}"#,
                "invalid symbol",
            ),
            (
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":7,"p":"1","q":"1","T":18446744073709551615,"m":false}}"#,
                "out of range",
            ),
            (
                r#"{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1"]],"a":[]}}"#,
                "invalid length 1",
            ),
            (
                r#"{"stream":"x@depth","data":{"e":"depthUpdate","E":1,"s":"X","U":1,"u":2,"b":[["1","x"]],"a":[]}}"#,
                "level size \"x\"",
            ),
            (r#"{"lastUpdateId":1,"bids":[]}"#, "missing field `asks`"),
            (r#"{"stream":"btcusdt@trade"}"#, "missing field `data`"),
            (r#"{"hello":1}"#, "neither"),
            (r#"[1,2]"#, "invalid type"),
            (r#"{"stream":"btcusdt@kline_1m","data":{}} x"#, "trailing characters"),
        ] {
            let err = norm.on_message(1, bad.as_bytes(), &mut out).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(out.is_empty());
        assert_eq!(norm.stats().trades, 2);
    }

    #[test]
    fn line_shape_errors() {
        assert_eq!(split_line(b"12 {}").unwrap(), (12, &b"{}"[..]));
        for bad in [&b"{}"[..], b" {}", b"12a {}", b"99999999999999999999999 {}"] {
            assert!(split_line(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(classify("btcusdt@depth"), StreamKind::Depth);
        assert_eq!(classify("btcusdt@depth@1000ms"), StreamKind::Depth);
        assert_eq!(classify("btcusdt@depth20@100ms"), StreamKind::Other);
        assert_eq!(classify("btcusdt@kline_1m"), StreamKind::Other);
        assert_eq!(classify("trade"), StreamKind::Other);
    }

    /// Throughput of the whole reader on the samples (gzip and plain), on
    /// one core: `cargo test --release --lib recorded::binance -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        let plain: Vec<(PathBuf, Vec<u8>)> = SAMPLES
            .iter()
            .map(|(f, _)| {
                let text = decompressed(f);
                (temp_file(&format!("tp-{f}.txt"), &text), text)
            })
            .collect();
        for gz in [true, false] {
            let (mut lines, mut bytes, mut events) = (0u64, 0u64, 0u64);
            let start = std::time::Instant::now();
            for _ in 0..10 {
                for (i, (f, _)) in SAMPLES.iter().enumerate() {
                    let path = if gz { sample(f) } else { plain[i].0.clone() };
                    let mut reader = BinanceReader::open(&path).unwrap();
                    while reader.next_event().unwrap().is_some() {
                        events += 1;
                    }
                    lines += reader.lines();
                    bytes += plain[i].1.len() as u64;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            println!(
                "binance {}: {lines} lines, {events} events in {secs:.3} s: {:.0} lines/s, {:.0} MB/s of text",
                if gz { "gzip" } else { "plain" },
                lines as f64 / secs,
                bytes as f64 / secs / 1e6
            );
        }
        for (path, _) in plain {
            std::fs::remove_file(path).unwrap();
        }
    }
}

//! Databento DBN files, normalized the way a live Databento source
//! normalizes its records.
//!
//! In: a DBN file (versions 1 to 3), plain or zstd, decoded with the `dbn`
//! crate. Out: [`Event`]s in file order.
//!
//! As for Binance, reading and normalizing are apart: [`DbnReader`] decodes
//! the file and keeps offsets for errors; [`DbnNormalizer`] turns one
//! record into events and keeps the per-instrument books that takes, so a
//! live source (which gets the same records) reuses it.
//!
//! # What each record becomes
//! | schema (record) | event(s) |
//! |---|---|
//! | `trades` (`TradeMsg`) | `Trade` |
//! | `mbp-1` (`Mbp1Msg`) | `Quote` from `levels[0]`; a `Trade` first when `action` is `T` |
//! | `tbbo` (`TbboMsg`, the MBP-1 layout with `action` `T`) | `Trade`, then `Quote` |
//! | `mbp-10` (`Mbp10Msg`) | a `Trade` first when `action` is `T`; a `Book` of the levels that differ from the instrument's previous ten: new or resized prices with their size, prices no longer among the ten with size 0 (nothing when no level changed) |
//! | `mbo` (`MboMsg`) | `Book` with the new aggregate size of each price level the order changed (0 = gone), or a `Trade` for `action` `T` |
//! | symbol mapping (live) | nothing; updates the symbol map |
//! | definitions, statistics, status, imbalance, OHLCV, BBO, … | nothing (counted in [`DbnStats::skipped_records`]) |
//!
//! Prices are fixed-point with a 1e-9 scale: `px = price as f64 / 1e9`, the
//! double nearest the decimal for any price below 9,007,199 (2^53 units).
//! `UNDEF_PRICE` means no price: that level is left out, an empty quote side
//! is `0.0 @ 0.0`, and a trade without a price is skipped. Sizes are `u32`,
//! exact in `f64`. `ts_event` is the header's `ts_event`; `ts_recv` is the
//! record's `ts_recv` (`ts_event` if it is undefined).
//!
//! Trade sides: the side of the aggressor, as Databento documents it:
//! `A` (ask: a sell aggressor hit the bid) is [`Side::Sell`], `B` (bid: a
//! buy aggressor lifted the offer) is [`Side::Buy`], `N` is
//! [`Side::Unknown`].
//!
//! # MBO to L2
//! Orders are kept by (publisher, order id) per instrument, with the
//! aggregate size of each price per side. `A` adds (an order id already
//! live is replaced), `C` takes its size off the order (removing it at 0),
//! `M` moves or resizes it (an unknown order is added, as Databento's book
//! example does), `R` clears the publisher's orders for the instrument, `T`
//! is a trade print (the book changes through the `C`/`M` records that
//! follow), `F` and `N` change nothing. Cancels and modifies of orders the
//! file never added (a capture started mid-session) are counted in
//! [`DbnStats::unknown_orders`] and change nothing. Every record is applied
//! on its own: the `F_LAST` flag, which marks the last record of a venue
//! packet, is ignored, so a client can see the book between the records
//! of one packet, as the venue sent them.
//!
//! # Symbols
//! The name of `instrument_id` is, in order: the raw symbol the metadata's
//! symbol mappings (or, live, the symbol-mapping records) give for the
//! record's index time (`ts_recv`, the `dbn` crate's rule for these
//! schemas); else the one symbol of the metadata's `symbols` when there is
//! exactly one; else `ID<instrument_id>`. A name that breaks
//! [`is_valid_symbol`] (OPRA symbols hold spaces) also becomes
//! `ID<instrument_id>`.
//!
//! # Sequence numbers
//! No `"sequence"` gaps are reported: DBN's `sequence` is the venue's
//! message sequence number, per channel and shared by the records of one
//! packet (the ESH1 samples step 1170352, 1170353, 1170356, 1170362, ...
//! across schemas), so consecutive numbers are expected neither per
//! instrument nor per file.
//!
//! # Errors
//! A decoder error is [`SourceError::Corrupt`] with the offset of the
//! record in the decompressed stream and its number in the reason. A zstd
//! stream that ends mid-frame, or a file that ends inside a record, is
//! [`SourceError::Truncated`] (the `dbn` decoder alone would report a clean
//! end: the reader counts the decompressed bytes to tell). Either ends the
//! reading. A record shorter than its type is `Corrupt` too, but only that
//! record is skipped.
//!
//! Imports: its siblings `source` and `watched`, [`crate::model`], and the
//! `dbn` crate.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dbn::decode::{DbnDecoder, DbnMetadata, DecodeRecordRef, DynReader};
use dbn::{rtype, Action, MboMsg, Mbp10Msg, Mbp1Msg, Metadata, Record, RecordRef, SymbolIndex, TradeMsg, TsSymbolMap};

use super::source::{Event, Format, Gap, Source, SourceError};
use super::watched::Watched;
use crate::model::{is_valid_symbol, BookDelta, Level, Quote, Side, Trade, Update};

/// Counters of what the normalizer did, for `inspect` and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbnStats {
    /// Records seen.
    pub records: u64,
    /// Trade events emitted.
    pub trades: u64,
    /// Quote events emitted.
    pub quotes: u64,
    /// Book events emitted.
    pub books: u64,
    /// Records of types that carry no market event here (definitions,
    /// statistics, status, ...).
    pub skipped_records: u64,
    /// Book records that changed no level (e.g. an MBP-10 trade record).
    pub unchanged_books: u64,
    /// MBO cancels and modifies of orders never added, and records with an
    /// action or side the normalizer cannot place.
    pub unknown_orders: u64,
    /// Records left out for an undefined price or size.
    pub undefined: u64,
}

/// Why one record could not be normalized.
#[derive(Debug, thiserror::Error)]
pub enum DbnError {
    /// The record is shorter than its type (the `dbn` crate's own check).
    #[error("{0}")]
    Record(#[from] dbn::Error),
}

/// The per-record half of the DBN source: records in, events out, with the
/// symbol map and the per-instrument books that takes. Separate from the
/// file reading so a live Databento source uses the very same rules.
pub struct DbnNormalizer {
    symbol_map: TsSymbolMap,
    /// The metadata's only requested symbol, if it has exactly one.
    only_symbol: Option<String>,
    names: Vec<Arc<str>>,
    ids: HashMap<Box<str>, u32>,
    /// MBP-10: each instrument's previous ten levels a side.
    ladders: HashMap<u32, Ladder>,
    /// MBO: each instrument's orders and price levels.
    books: HashMap<u32, OrderBook>,
    stats: DbnStats,
}

/// Up to ten (price, size) pairs a side, best first, defined prices only.
#[derive(Default)]
struct Ladder {
    bids: Vec<(i64, u32)>,
    asks: Vec<(i64, u32)>,
}

#[derive(Clone, Copy)]
struct Order {
    bid: bool,
    price: i64,
    size: u32,
}

#[derive(Default)]
struct OrderBook {
    /// (publisher id, order id) to the order.
    orders: HashMap<(u16, u64), Order>,
    /// Aggregate size per price.
    bids: HashMap<i64, u64>,
    asks: HashMap<i64, u64>,
}

impl OrderBook {
    fn level(&mut self, bid: bool) -> &mut HashMap<i64, u64> {
        if bid {
            &mut self.bids
        } else {
            &mut self.asks
        }
    }

    /// Adds `size` at `price` and records the new aggregate in `delta`.
    fn add(&mut self, bid: bool, price: i64, size: u32, delta: &mut Delta) {
        let levels = self.level(bid);
        let agg = levels.get(&price).copied().unwrap_or(0) + u64::from(size);
        if agg == 0 {
            levels.remove(&price);
        } else {
            levels.insert(price, agg);
        }
        delta.set(bid, price, agg);
    }

    /// Takes `size` off `price` and records the new aggregate in `delta`.
    fn remove(&mut self, bid: bool, price: i64, size: u32, delta: &mut Delta) {
        let levels = self.level(bid);
        let left = match levels.get_mut(&price) {
            Some(agg) => {
                *agg = agg.saturating_sub(u64::from(size));
                *agg
            }
            None => 0,
        };
        if left == 0 {
            levels.remove(&price);
        }
        delta.set(bid, price, left);
    }
}

/// The levels one record changed: price to new aggregate size, per side.
#[derive(Default)]
struct Delta {
    bids: Vec<(i64, u64)>,
    asks: Vec<(i64, u64)>,
}

impl Delta {
    fn set(&mut self, bid: bool, price: i64, size: u64) {
        let side = if bid { &mut self.bids } else { &mut self.asks };
        match side.iter_mut().find(|(p, _)| *p == price) {
            Some(level) => level.1 = size,
            None => side.push((price, size)),
        }
    }

    fn into_book(self) -> Option<BookDelta> {
        let to_levels = |side: Vec<(i64, u64)>| -> Vec<Level> {
            side.into_iter().map(|(p, s)| Level { px: scale(p), sz: s as f64 }).collect()
        };
        if self.bids.is_empty() && self.asks.is_empty() {
            None
        } else {
            Some(BookDelta { bids: to_levels(self.bids), asks: to_levels(self.asks) })
        }
    }
}

/// A fixed-point price (1e-9 units) as a double. The division is correctly
/// rounded, so below 2^53 units this is the double nearest the decimal;
/// `+ 0.0` turns -0.0 into +0.0.
fn scale(price: i64) -> f64 {
    price as f64 / 1e9 + 0.0
}

/// `None` for `UNDEF_PRICE`.
fn price(price: i64) -> Option<f64> {
    (price != dbn::UNDEF_PRICE).then(|| scale(price))
}

fn aggressor(side: u8) -> Side {
    match side {
        b'A' => Side::Sell,
        b'B' => Side::Buy,
        _ => Side::Unknown,
    }
}

/// `c_char` is `i8` or `u8` depending on the target; both fit a `u8`.
#[allow(clippy::unnecessary_cast)]
fn byte(c: std::ffi::c_char) -> u8 {
    c as u8
}

fn ts_recv_or(ts_recv: u64, ts_event: u64) -> u64 {
    if ts_recv == dbn::UNDEF_TIMESTAMP {
        ts_event
    } else {
        ts_recv
    }
}

impl DbnNormalizer {
    /// A normalizer resolving symbols with `metadata` (a live source passes
    /// the session's metadata; symbol-mapping records then add to it).
    pub fn new(metadata: &Metadata) -> DbnNormalizer {
        let symbol_map = match metadata.symbol_map() {
            Ok(map) => map,
            Err(e) => {
                tracing::debug!(error = %e, "dbn: no symbol map from the metadata; names fall back");
                TsSymbolMap::new()
            }
        };
        let only_symbol = match metadata.symbols.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        };
        DbnNormalizer {
            symbol_map,
            only_symbol,
            names: Vec::new(),
            ids: HashMap::new(),
            ladders: HashMap::new(),
            books: HashMap::new(),
            stats: DbnStats::default(),
        }
    }

    /// Normalizes one record; its events go to the back of `out`. On error
    /// nothing has changed.
    pub fn on_record(&mut self, rec: RecordRef<'_>, out: &mut VecDeque<Event>) -> Result<(), DbnError> {
        match rec.header().rtype {
            rtype::MBP_0 => self.on_trade(rec.try_get::<TradeMsg>()?, out),
            rtype::MBP_1 => self.on_mbp1(rec.try_get::<Mbp1Msg>()?, out),
            rtype::MBP_10 => self.on_mbp10(rec.try_get::<Mbp10Msg>()?, out),
            rtype::MBO => self.on_mbo(rec.try_get::<MboMsg>()?, out),
            rtype::SYMBOL_MAPPING => {
                self.symbol_map.on_record(rec)?;
                self.stats.skipped_records += 1;
            }
            _ => self.stats.skipped_records += 1,
        }
        self.stats.records += 1;
        Ok(())
    }

    /// The name of a symbol id this normalizer returned.
    pub fn symbol(&self, id: u32) -> Option<&Arc<str>> {
        self.names.get(id as usize)
    }

    /// See [`DbnReader::declared_symbols`].
    pub fn declared_symbols(&self) -> Option<Vec<Arc<str>>> {
        let map = self.symbol_map.inner();
        if map.is_empty() {
            return self.only_symbol.as_deref().filter(|n| is_valid_symbol(n)).map(|n| vec![Arc::from(n)]);
        }
        let mut iids: Vec<u32> = map.keys().copied().collect();
        iids.sort_unstable();
        let mut seen = std::collections::HashSet::new();
        let mut names = Vec::new();
        for iid in iids {
            for interval in map[&iid].intervals() {
                let name = if is_valid_symbol(&interval.symbol) { interval.symbol.clone() } else { format!("ID{iid}") };
                if seen.insert(name.clone()) {
                    names.push(Arc::from(name));
                }
            }
        }
        Some(names)
    }

    /// What has been done so far.
    pub fn stats(&self) -> &DbnStats {
        &self.stats
    }

    /// The local id of the record's instrument, named per the module doc.
    fn sym<R: Record>(&mut self, rec: &R, iid: u32) -> u32 {
        let mapped = self.symbol_map.get_for_rec(rec).or(self.only_symbol.as_ref());
        if let Some(name) = mapped.filter(|n| is_valid_symbol(n)) {
            if let Some(&id) = self.ids.get(name.as_str()) {
                return id;
            }
            let name = name.clone();
            return self.intern(&name);
        }
        if let Some(name) = mapped {
            tracing::debug!(instrument_id = iid, name = %name, "dbn: symbol is not a valid tickcast name");
        }
        self.intern(&format!("ID{iid}"))
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(Arc::from(name));
        self.ids.insert(Box::from(name), id);
        id
    }

    fn push(&mut self, out: &mut VecDeque<Event>, sym: u32, ts_event: u64, ts_recv: u64, update: Update) {
        match update {
            Update::Trade(_) => self.stats.trades += 1,
            Update::Quote(_) => self.stats.quotes += 1,
            Update::Book(_) => self.stats.books += 1,
        }
        out.push_back(Event { sym, ts_event, ts_recv, seq: None, update });
    }

    /// A trade print, unless its price is undefined.
    fn trade(&mut self, out: &mut VecDeque<Event>, sym: u32, ts: (u64, u64), px: i64, sz: u32, side: u8) {
        match price(px) {
            Some(px) => {
                let trade = Trade { px, sz: f64::from(sz), side: aggressor(side) };
                self.push(out, sym, ts.0, ts.1, Update::Trade(trade));
            }
            None => self.stats.undefined += 1,
        }
    }

    fn on_trade(&mut self, r: &TradeMsg, out: &mut VecDeque<Event>) {
        let sym = self.sym(r, r.hd.instrument_id);
        let ts = (r.hd.ts_event, ts_recv_or(r.ts_recv, r.hd.ts_event));
        self.trade(out, sym, ts, r.price, r.size, byte(r.side));
    }

    fn on_mbp1(&mut self, r: &Mbp1Msg, out: &mut VecDeque<Event>) {
        let sym = self.sym(r, r.hd.instrument_id);
        let ts = (r.hd.ts_event, ts_recv_or(r.ts_recv, r.hd.ts_event));
        if byte(r.action) == b'T' {
            self.trade(out, sym, ts, r.price, r.size, byte(r.side));
        }
        let l = &r.levels[0];
        let (bid, bid_sz) = price(l.bid_px).map_or((0.0, 0.0), |px| (px, f64::from(l.bid_sz)));
        let (ask, ask_sz) = price(l.ask_px).map_or((0.0, 0.0), |px| (px, f64::from(l.ask_sz)));
        self.push(out, sym, ts.0, ts.1, Update::Quote(Quote { bid, bid_sz, ask, ask_sz }));
    }

    fn on_mbp10(&mut self, r: &Mbp10Msg, out: &mut VecDeque<Event>) {
        let sym = self.sym(r, r.hd.instrument_id);
        let ts = (r.hd.ts_event, ts_recv_or(r.ts_recv, r.hd.ts_event));
        if byte(r.action) == b'T' {
            self.trade(out, sym, ts, r.price, r.size, byte(r.side));
        }
        let bids: Vec<(i64, u32)> = r
            .levels
            .iter()
            .filter(|l| l.bid_px != dbn::UNDEF_PRICE && l.bid_sz > 0)
            .map(|l| (l.bid_px, l.bid_sz))
            .collect();
        let asks: Vec<(i64, u32)> = r
            .levels
            .iter()
            .filter(|l| l.ask_px != dbn::UNDEF_PRICE && l.ask_sz > 0)
            .map(|l| (l.ask_px, l.ask_sz))
            .collect();
        let ladder = self.ladders.entry(r.hd.instrument_id).or_default();
        let delta = BookDelta { bids: ladder_delta(&ladder.bids, &bids), asks: ladder_delta(&ladder.asks, &asks) };
        ladder.bids = bids;
        ladder.asks = asks;
        if delta.bids.is_empty() && delta.asks.is_empty() {
            self.stats.unchanged_books += 1;
        } else {
            self.push(out, sym, ts.0, ts.1, Update::Book(delta));
        }
    }

    fn on_mbo(&mut self, r: &MboMsg, out: &mut VecDeque<Event>) {
        let sym = self.sym(r, r.hd.instrument_id);
        let ts = (r.hd.ts_event, ts_recv_or(r.ts_recv, r.hd.ts_event));
        let key = (r.hd.publisher_id, r.order_id);
        let side = byte(r.side);
        let action = match r.action() {
            Ok(action) => action,
            Err(_) => {
                self.stats.unknown_orders += 1;
                return;
            }
        };
        let book = self.books.entry(r.hd.instrument_id).or_default();
        let mut delta = Delta::default();
        let placeable =
            (side == b'B' || side == b'A') && r.price != dbn::UNDEF_PRICE && r.size != dbn::UNDEF_ORDER_SIZE;
        match action {
            Action::Trade => return self.trade(out, sym, ts, r.price, r.size, side),
            Action::Fill | Action::None => {}
            Action::Add if placeable => {
                if let Some(old) = book.orders.remove(&key) {
                    book.remove(old.bid, old.price, old.size, &mut delta);
                }
                let order = Order { bid: side == b'B', price: r.price, size: r.size };
                book.orders.insert(key, order);
                book.add(order.bid, order.price, order.size, &mut delta);
            }
            Action::Cancel => match book.orders.get_mut(&key) {
                Some(order) => {
                    let cut = r.size.min(order.size);
                    order.size -= cut;
                    let (bid, price, left) = (order.bid, order.price, order.size);
                    if left == 0 {
                        book.orders.remove(&key);
                    }
                    book.remove(bid, price, cut, &mut delta);
                }
                None => self.stats.unknown_orders += 1,
            },
            Action::Modify => match book.orders.get(&key).copied() {
                Some(old) if r.price != dbn::UNDEF_PRICE && r.size != dbn::UNDEF_ORDER_SIZE => {
                    let new = Order { size: r.size, price: r.price, ..old };
                    book.remove(old.bid, old.price, old.size, &mut delta);
                    book.add(new.bid, new.price, new.size, &mut delta);
                    if new.size == 0 {
                        book.orders.remove(&key);
                    } else {
                        book.orders.insert(key, new);
                    }
                }
                None if placeable => {
                    self.stats.unknown_orders += 1;
                    let order = Order { bid: side == b'B', price: r.price, size: r.size };
                    book.orders.insert(key, order);
                    book.add(order.bid, order.price, order.size, &mut delta);
                }
                _ => self.stats.undefined += 1,
            },
            Action::Clear => {
                let publisher = r.hd.publisher_id;
                let gone: Vec<Order> = book.orders.iter().filter(|(k, _)| k.0 == publisher).map(|(_, o)| *o).collect();
                book.orders.retain(|k, _| k.0 != publisher);
                for o in gone {
                    book.remove(o.bid, o.price, o.size, &mut delta);
                }
                // Deterministic order: best first.
                delta.bids.sort_by_key(|l| std::cmp::Reverse(l.0));
                delta.asks.sort_by_key(|l| l.0);
            }
            Action::Add => self.stats.undefined += 1,
        }
        match delta.into_book() {
            Some(book) => self.push(out, sym, ts.0, ts.1, Update::Book(book)),
            None if matches!(action, Action::Fill | Action::None) => {}
            None => self.stats.unchanged_books += 1,
        }
    }
}

/// Levels of `new` that `old` lacks or sizes differently, then sz 0 for the
/// prices of `old` that `new` lacks.
fn ladder_delta(old: &[(i64, u32)], new: &[(i64, u32)]) -> Vec<Level> {
    let changed =
        new.iter().filter(|level| !old.contains(level)).map(|&(p, s)| Level { px: scale(p), sz: f64::from(s) });
    let gone =
        old.iter().filter(|(p, _)| !new.iter().any(|(q, _)| q == p)).map(|&(p, _)| Level { px: scale(p), sz: 0.0 });
    changed.chain(gone).collect()
}

// ---------------------------------------------------------------------------
// The file reader.

/// Most metadata accepted, in bytes: a full-universe OPRA file's symbol
/// mappings run to a few hundred MB; a larger length is a corrupt prefix
/// (and the decoder would allocate it up front).
const MAX_METADATA_BYTES: u32 = 1 << 30;

/// Sits between the decompressor and the `dbn` decoder and checks what the
/// decoder takes on trust:
/// - counts the decompressed bytes handed over, so the reader knows where
///   each record starts and whether the input ended inside one;
/// - turns a zstd frame cut short (which the decoder would take for a clean
///   end) into the `cut` flag;
/// - walks the record framing and refuses a record whose length is not a
///   whole number of 8-byte words: the decoder would go on to build
///   misaligned record references (a debug assertion in `dbn`, undefined
///   behaviour without it). The records before it are handed over first.
struct Checked<R> {
    inner: R,
    /// Decompressed bytes handed to the decoder.
    read: u64,
    /// The first 8 bytes: `DBN`, the version, the metadata length (LE u32).
    prefix: [u8; 8],
    /// Offset of the next record header, once the prefix is known.
    next_record: Option<u64>,
    /// An error to return on the next read (after the good records).
    pending: Option<io::Error>,
    /// The zstd stream ended inside a frame.
    cut: bool,
}

impl<R> Checked<R> {
    fn new(inner: R) -> Checked<R> {
        Checked { inner, read: 0, prefix: [0; 8], next_record: None, pending: None, cut: false }
    }

    /// How many of the `n` bytes just read into `buf` (at offset
    /// `self.read`) may go to the decoder; sets `pending` for the rest.
    fn check(&mut self, buf: &[u8], n: usize) -> usize {
        let start = self.read;
        let end = start + n as u64;
        if start < 8 {
            let take = (8 - start as usize).min(n);
            self.prefix[start as usize..start as usize + take].copy_from_slice(&buf[..take]);
        }
        if self.next_record.is_none() && end >= 8 {
            let meta_len = u32::from_le_bytes([self.prefix[4], self.prefix[5], self.prefix[6], self.prefix[7]]);
            if meta_len > MAX_METADATA_BYTES {
                self.pending = Some(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the DBN prefix declares {meta_len} bytes of metadata (at most {MAX_METADATA_BYTES})"),
                ));
                return 0;
            }
            self.next_record = Some(8 + u64::from(meta_len));
        }
        while let Some(at) = self.next_record.filter(|&at| at < end) {
            let len = u64::from(buf[(at - start) as usize]) * 4;
            if len < 16 || len % 8 != 0 {
                self.pending = Some(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the record at offset {at} declares a length of {len} bytes, not a whole number of 8-byte words"),
                ));
                return (at - start) as usize;
            }
            self.next_record = Some(at + len);
        }
        n
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.cut = true;
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        let keep = self.check(buf, n);
        self.read += keep as u64;
        match self.pending.take() {
            // Nothing good to hand over: fail now (0 would mean the end).
            Some(e) if keep == 0 => Err(e),
            pending => {
                self.pending = pending;
                Ok(keep)
            }
        }
    }
}

type Input = Checked<DynReader<'static, BufReader<Watched<Box<dyn Read + Send>>>>>;

/// Reader of one DBN file (plain or zstd), yielding the events of
/// [`DbnNormalizer`] with errors that name the file, record and offset.
pub struct DbnReader {
    path: PathBuf,
    decoder: DbnDecoder<Input>,
    file_failed: Arc<AtomicBool>,
    norm: DbnNormalizer,
    queue: VecDeque<Event>,
    /// Records decoded so far.
    records: u64,
    /// Offset of the next record in the decompressed stream.
    offset: u64,
    finished: bool,
}

impl DbnReader {
    /// Opens the file and decodes its metadata. Records of DBN versions 1
    /// and 2 are read as they are: the market records have one layout in
    /// all three versions.
    pub fn open(path: &Path) -> Result<DbnReader, SourceError> {
        let file = File::open(path).map_err(|source| SourceError::Io { path: path.to_owned(), source })?;
        DbnReader::from_reader(path, Box::new(file))
    }

    /// Reads a DBN stream (plain or zstd) from `input`, as [`open`] reads a
    /// file; `path` only names it in errors. For streams that are not
    /// files, and for fuzzing the reader in memory.
    ///
    /// [`open`]: DbnReader::open
    pub fn from_reader(path: &Path, input: Box<dyn Read + Send>) -> Result<DbnReader, SourceError> {
        let file_failed = Arc::new(AtomicBool::new(false));
        let watched = BufReader::new(Watched { inner: input, failed: file_failed.clone() });
        let failure = |e: dbn::Error, cut: bool| -> SourceError {
            if file_failed.load(Ordering::Relaxed) {
                return SourceError::Io { path: path.to_owned(), source: into_io(e) };
            }
            let eof = matches!(&e, dbn::Error::Io { source, .. } if source.kind() == io::ErrorKind::UnexpectedEof);
            if cut || eof {
                SourceError::Truncated {
                    path: path.to_owned(),
                    offset: 0,
                    reason: format!("the metadata is cut short: {e}"),
                }
            } else {
                SourceError::Corrupt { path: path.to_owned(), offset: 0, reason: format!("metadata: {e}") }
            }
        };
        let dyn_reader = DynReader::inferred_with_buffer(watched).map_err(|e| failure(e, false))?;
        let input = Checked::new(dyn_reader);
        let decoder =
            DbnDecoder::with_upgrade_policy(input, dbn::VersionUpgradePolicy::AsIs).map_err(|e| failure(e, false))?;
        let prefix = decoder.get_ref().prefix;
        let meta_len = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]);
        let norm = DbnNormalizer::new(decoder.metadata());
        Ok(DbnReader {
            path: path.to_owned(),
            decoder,
            file_failed,
            norm,
            queue: VecDeque::new(),
            records: 0,
            offset: 8 + u64::from(meta_len),
            finished: false,
        })
    }

    /// The file's metadata.
    pub fn metadata(&self) -> &Metadata {
        self.decoder.metadata()
    }

    /// The names the file's metadata gives its instruments, by the rules
    /// the normalizer names them with (see "Symbols" in the module doc), in
    /// instrument-id order, without reading a record: each mapped symbol
    /// (`ID<instrument_id>` for one that is not a valid name), else the
    /// metadata's only symbol. `None` when the metadata maps nothing and
    /// names several symbols or none: the names then come from the records
    /// (`ID<instrument_id>`), which only a full read finds.
    pub fn declared_symbols(&self) -> Option<Vec<Arc<str>>> {
        self.norm.declared_symbols()
    }

    /// What the normalizer has done so far.
    pub fn stats(&self) -> &DbnStats {
        self.norm.stats()
    }

    fn truncated(&self, reason: String) -> SourceError {
        SourceError::Truncated { path: self.path.clone(), offset: self.offset, reason }
    }

    /// Decodes and normalizes the next record; `false` at the end. Sets
    /// `finished` at the end and on decoder errors.
    fn step(&mut self) -> Result<bool, SourceError> {
        let n = self.records + 1;
        match self.decoder.decode_record_ref() {
            Ok(Some(rec)) => {
                let size = rec.record_size() as u64;
                let result = self.norm.on_record(rec, &mut self.queue);
                self.records = n;
                let at = self.offset;
                self.offset += size;
                // A record the normalizer rejects is skipped: the decoder
                // is fine and reading can go on.
                result.map(|()| true).map_err(|e| SourceError::Corrupt {
                    path: self.path.clone(),
                    offset: at,
                    reason: format!("record {n}: {e}"),
                })
            }
            Ok(None) => {
                self.finished = true;
                let input = self.decoder.get_ref();
                if input.cut {
                    return Err(self.truncated(format!("record {n}: the zstd stream ends inside a frame")));
                }
                if input.read > self.offset {
                    let left = input.read - self.offset;
                    return Err(self.truncated(format!("record {n}: the file ends {left} bytes into a record")));
                }
                Ok(false)
            }
            Err(e) => {
                self.finished = true;
                if self.file_failed.load(Ordering::Relaxed) {
                    return Err(SourceError::Io { path: self.path.clone(), source: into_io(e) });
                }
                Err(SourceError::Corrupt {
                    path: self.path.clone(),
                    offset: self.offset,
                    reason: format!("record {n}: {e}"),
                })
            }
        }
    }
}

fn into_io(e: dbn::Error) -> io::Error {
    match e {
        dbn::Error::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

impl Source for DbnReader {
    fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Ok(Some(event));
            }
            if self.finished {
                return Ok(None);
            }
            self.step()?;
        }
    }

    /// An id this source never returned gets an empty name.
    fn symbol(&self, id: u32) -> Arc<str> {
        self.norm.symbol(id).cloned().unwrap_or_else(|| Arc::from(""))
    }

    /// DBN reports no gaps (see the module doc on sequence numbers).
    fn take_gaps(&mut self, out: &mut Vec<Gap>) {
        let _ = out;
    }

    fn format(&self) -> Format {
        Format::Dbn
    }
}

#[cfg(test)]
mod tests;

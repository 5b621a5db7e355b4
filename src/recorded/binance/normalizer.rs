//! [`BinanceNormalizer`]: one Binance message in, normalized events out,
//! with the per-symbol state that takes (trade ids, the clock offset that
//! puts receive times on the exchange's clock, snapshot attribution, and
//! each symbol's local book, kept by `book`). The `binance` module doc
//! says what each message becomes.
//!
//! Separate from the file reading so a live websocket source uses the
//! very same rules.
//!
//! Imports: its siblings `book`, `message` and `stats`,
//! `crate::recorded::source` and [`crate::model`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use serde::Deserialize;

use super::book::{DepthState, PendingDepth, Sink};
use super::message::{classify, decimal, truncated, DepthData, Parsed, Snapshot, StreamKind, TickerData, TradeData};
use super::stats::BinanceStats;
use crate::model::{is_valid_symbol, Quote, Side, Trade, Update};
use crate::recorded::source::{Event, Gap};

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

/// What the normalizer keeps per symbol.
#[derive(Default)]
struct SymState {
    last_trade_id: Option<u64>,
    /// `None` until the symbol's depth stream (or a snapshot) shows up.
    depth: Option<DepthState>,
}

impl BinanceNormalizer {
    /// A normalizer with no symbols and no books yet.
    pub fn new() -> BinanceNormalizer {
        BinanceNormalizer::default()
    }

    /// Normalizes one message received at `recv_ns`: a combined-stream
    /// message or a REST depth snapshot (attributed as the `binance` module doc says).
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
        self.syms.iter().map(|s| s.depth.as_ref().map_or(0, DepthState::pending)).sum()
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
        // exchange's clock, stands in (see the `binance` module doc).
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

    /// A snapshot line of a capture: attributed per the `binance` module doc.
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

fn expect_event(stream: &'static str, expected: &'static str, found: &str) -> Result<(), BinanceError> {
    if found == expected {
        Ok(())
    } else {
        Err(BinanceError::WrongEvent { stream, expected, found: truncated(found) })
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BookDelta, Level};
    use crate::recorded::binance::book::MAX_PENDING_DEPTH;

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
}

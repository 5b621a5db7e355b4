//! The normalized JSON tick schema that feed handlers send over `tcp://`.
//!
//! In: one JSON object per line. Out: `(symbol, ts_event, Update)`, or a
//! [`FeedError`] that says exactly what is wrong with the line.
//!
//! ```text
//! {"type":"trade","sym":"AAPL","px":189.5,"sz":100,"side":"buy","ts_event":1700000000000000000}
//! {"type":"quote","sym":"AAPL","bid":189.49,"bid_sz":300,"ask":189.51,"ask_sz":200,"ts_event":1700000000000000000}
//! {"type":"book","sym":"AAPL","bids":[[189.49,300]],"asks":[[189.52,0]],"ts_event":1700000000000000000}
//! ```
//!
//! `ts_event` (ns since the Unix epoch) is optional; without it the ingest
//! time is used. `side` is optional (`buy`, `sell` or `unknown`). Unknown
//! fields are ignored, so handlers may add their own. Numbers must be finite
//! and sizes non-negative. The full contract is in docs/PROTOCOL.md.

use serde::Deserialize;

use crate::model::{BookDelta, Level, Quote, Side, Trade, Update};

/// Longest line accepted, in bytes; longer lines are skipped and counted.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Most levels per side in one book line. A deeper book goes in several
/// lines (they apply in order). The bound keeps one line's cost to the
/// engine small: a 10,000-level line used to stall every other symbol's
/// updates for over a second; the server keeps at most
/// [`MAX_BOOK_LEVELS`](crate::model::book::MAX_BOOK_LEVELS) a side anyway.
pub const MAX_LEVELS_PER_LINE: usize = 1_000;

/// Why a feed line (or a binary feed record, [`super::binary`]) was
/// rejected.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Not JSON, or a field of the wrong type.
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `type` is not trade, quote or book.
    #[error("unknown type {0:?}: expected trade, quote or book")]
    UnknownType(String),
    /// A field the type requires is absent.
    #[error("{kind} needs field {field:?}")]
    Missing {
        /// The tick type.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// NaN or infinite (from a lenient encoder), or a negative size.
    #[error("field {0:?} must be a finite number (sizes >= 0)")]
    BadNumber(&'static str),
    /// A book line with no levels.
    #[error("book needs at least one level in bids/asks")]
    BadBook,
    /// A book line (or record) with more than [`MAX_LEVELS_PER_LINE`]
    /// levels on a side.
    #[error("book line has {0} levels on one side; at most {MAX_LEVELS_PER_LINE} a side per line or record (split a deeper book over several)")]
    TooManyLevels(usize),
    /// A line longer than [`MAX_LINE_BYTES`].
    #[error("line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    /// The symbol name is invalid or the table is full.
    #[error(transparent)]
    Symbol(#[from] crate::model::SymbolError),
    /// A binary feed record that does not decode ([`crate::model::record`]).
    #[error("bad binary record: {0}")]
    Record(#[from] crate::model::RecordError),
    /// A binary feed record of a kind a feed handler may not send (an
    /// image: only a sequencer sends those).
    #[error("binary record of kind image: a feed handler sends trade, quote or book records")]
    NotATick,
}

#[derive(Deserialize)]
struct RawTick<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    sym: std::borrow::Cow<'a, str>,
    ts_event: Option<u64>,
    px: Option<f64>,
    sz: Option<f64>,
    side: Option<Side>,
    bid: Option<f64>,
    bid_sz: Option<f64>,
    ask: Option<f64>,
    ask_sz: Option<f64>,
    bids: Option<BoundedLevels>,
    asks: Option<BoundedLevels>,
}

/// One side of a book line as parsed: at most [`MAX_LEVELS_PER_LINE`]
/// levels are kept; any beyond are only counted, never converted or
/// stored, so an oversized line costs a byte scan, not a parse of every
/// level (the feed thread serves every handler).
struct BoundedLevels {
    levels: Vec<Level>,
    count: usize,
}

impl<'de> Deserialize<'de> for BoundedLevels {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(BoundedLevelsVisitor)
    }
}

struct BoundedLevelsVisitor;

impl<'de> serde::de::Visitor<'de> for BoundedLevelsVisitor {
    type Value = BoundedLevels;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of [px, sz] levels")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<BoundedLevels, A::Error> {
        let mut levels = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while levels.len() < MAX_LEVELS_PER_LINE {
            match seq.next_element::<Level>()? {
                Some(level) => levels.push(level),
                None => return Ok(BoundedLevels { count: levels.len(), levels }),
            }
        }
        let mut count = levels.len();
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
            count += 1;
        }
        Ok(BoundedLevels { levels, count })
    }
}

/// A parsed line: symbol name, optional event time, and the update.
#[derive(Debug, PartialEq)]
pub struct ParsedTick<'a> {
    /// Symbol as sent.
    pub sym: std::borrow::Cow<'a, str>,
    /// Event time, if the line had one.
    pub ts_event: Option<u64>,
    /// The normalized update.
    pub update: Update,
}

fn need(kind: &'static str, field: &'static str, v: Option<f64>) -> Result<f64, FeedError> {
    v.ok_or(FeedError::Missing { kind, field })
}

// Adding +0.0 turns -0.0 into +0.0 and leaves every other value alone:
// -0.0 means nothing in a market, and proto3 cannot carry it (a double equal
// to its default is not encoded), so all encodings get the same bits.
fn price(field: &'static str, v: f64) -> Result<f64, FeedError> {
    if v.is_finite() {
        Ok(v + 0.0)
    } else {
        Err(FeedError::BadNumber(field))
    }
}

fn size(field: &'static str, v: f64) -> Result<f64, FeedError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v + 0.0)
    } else {
        Err(FeedError::BadNumber(field))
    }
}

fn levels(
    side: Option<BoundedLevels>,
    px_field: &'static str,
    sz_field: &'static str,
) -> Result<Vec<Level>, FeedError> {
    let Some(BoundedLevels { mut levels, count }) = side else { return Ok(Vec::new()) };
    if count > MAX_LEVELS_PER_LINE {
        return Err(FeedError::TooManyLevels(count));
    }
    for l in &mut levels {
        l.px = price(px_field, l.px)?;
        l.sz = size(sz_field, l.sz)?;
    }
    Ok(levels)
}

/// Parses and validates one line (without its newline).
pub fn parse_line(line: &[u8]) -> Result<ParsedTick<'_>, FeedError> {
    let raw: RawTick<'_> = serde_json::from_slice(line)?;
    let update = match &*raw.kind {
        "trade" => Update::Trade(Trade {
            px: price("px", need("trade", "px", raw.px)?)?,
            sz: size("sz", need("trade", "sz", raw.sz)?)?,
            side: raw.side.unwrap_or_default(),
        }),
        "quote" => Update::Quote(Quote {
            bid: price("bid", need("quote", "bid", raw.bid)?)?,
            bid_sz: size("bid_sz", need("quote", "bid_sz", raw.bid_sz)?)?,
            ask: price("ask", need("quote", "ask", raw.ask)?)?,
            ask_sz: size("ask_sz", need("quote", "ask_sz", raw.ask_sz)?)?,
        }),
        "book" => {
            let bids = levels(raw.bids, "bids[].px", "bids[].sz")?;
            let asks = levels(raw.asks, "asks[].px", "asks[].sz")?;
            if bids.is_empty() && asks.is_empty() {
                return Err(FeedError::BadBook);
            }
            Update::Book(BookDelta { bids, asks })
        }
        other => return Err(FeedError::UnknownType(other.chars().take(32).collect())),
    };
    Ok(ParsedTick { sym: raw.sym, ts_event: raw.ts_event, update })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples_parse() {
        let t = parse_line(
            br#"{"type":"trade","sym":"AAPL","px":189.5,"sz":100,"side":"buy","ts_event":1700000000000000000}"#,
        )
        .unwrap();
        assert_eq!(t.sym, "AAPL");
        assert_eq!(t.ts_event, Some(1_700_000_000_000_000_000));
        assert_eq!(t.update, Update::Trade(Trade { px: 189.5, sz: 100.0, side: Side::Buy }));
        let q = parse_line(br#"{"type":"quote","sym":"AAPL","bid":189.49,"bid_sz":300,"ask":189.51,"ask_sz":200}"#)
            .unwrap();
        assert_eq!(q.update, Update::Quote(Quote { bid: 189.49, bid_sz: 300.0, ask: 189.51, ask_sz: 200.0 }));
        let b = parse_line(br#"{"type":"book","sym":"AAPL","bids":[[189.49,300]],"asks":[[189.52,0]],"ts_event":1}"#)
            .unwrap();
        assert_eq!(
            b.update,
            Update::Book(BookDelta {
                bids: vec![Level { px: 189.49, sz: 300.0 }],
                asks: vec![Level { px: 189.52, sz: 0.0 }]
            })
        );
    }

    #[test]
    fn floats_parse_to_the_exact_double() {
        let t = parse_line(br#"{"type":"trade","sym":"X","px":0.30000000000000004,"sz":1e-9}"#).unwrap();
        let Update::Trade(trade) = t.update else { panic!() };
        assert_eq!(trade.px.to_bits(), 0.30000000000000004f64.to_bits());
        assert_eq!(trade.sz.to_bits(), 1e-9f64.to_bits());
    }

    #[test]
    fn negative_zero_becomes_positive_zero() {
        let t = parse_line(br#"{"type":"trade","sym":"X","px":-0.0,"sz":-0.0}"#).unwrap();
        let Update::Trade(trade) = t.update else { panic!() };
        assert_eq!((trade.px.to_bits(), trade.sz.to_bits()), (0, 0));
        let b = parse_line(br#"{"type":"book","sym":"X","bids":[[-0.0,1]]}"#).unwrap();
        let Update::Book(delta) = b.update else { panic!() };
        assert_eq!(delta.bids[0].px.to_bits(), 0);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        let err = |l: &str| parse_line(l.as_bytes()).unwrap_err().to_string();
        assert!(err("not json").contains("malformed JSON"));
        assert!(err(r#"{"type":"trade","sym":"A","px":1}"#).contains("trade needs field \"sz\""));
        assert!(err(r#"{"type":"ohlc","sym":"A"}"#).contains("unknown type \"ohlc\""));
        assert!(err(r#"{"type":"trade","sym":"A","px":1,"sz":-1}"#).contains("\"sz\" must be a finite"));
        assert!(err(r#"{"type":"book","sym":"A","bids":[],"asks":[]}"#).contains("book needs"));
        let deep = |n: usize| format!(r#"{{"type":"book","sym":"A","asks":[{}]}}"#, vec!["[1.5,1]"; n].join(","));
        assert!(parse_line(deep(MAX_LEVELS_PER_LINE).as_bytes()).is_ok());
        assert!(err(&deep(MAX_LEVELS_PER_LINE + 1)).contains("1001 levels on one side"));
        assert!(err(r#"{"type":"trade","sym":"A","px":"1","sz":1}"#).contains("malformed JSON"));
        assert!(err(r#"{"type":"trade","sym":"A","px":1,"sz":1,"side":"up"}"#).contains("malformed JSON"));
    }
}

//! The JSON of one Binance message, parsed with serde visitors straight
//! into the struct its stream calls for: combined-stream envelopes
//! `{stream, data}` of trades, book tickers and diff depth, and REST depth
//! snapshots `{lastUpdateId, bids, asks}`.
//!
//! The envelope is read by hand so `data` is parsed without an
//! intermediate tree (unless `data` comes before `stream`); strings borrow
//! from the line unless they hold escapes; levels are parsed straight from
//! their decimal strings. Errors are `serde_json` errors, whose text says
//! which field is wrong.
//!
//! Imports: [`crate::model`] only.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::model::Level;

/// At most the first 64 characters of `s`, for an error message.
pub(super) fn truncated(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Parses a decimal string; `None` unless finite (and >= 0 for a size).
/// Adding +0.0 turns -0.0 into +0.0 and leaves every other value alone.
pub(super) fn decimal(s: &str, is_size: bool) -> Option<f64> {
    let v = s.parse::<f64>().ok()?;
    (v.is_finite() && (!is_size || v >= 0.0)).then_some(v + 0.0)
}

/// Which normalization a stream name calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StreamKind {
    Trade,
    Ticker,
    Depth,
    Other,
}

/// `btcusdt@trade`, `btcusdt@bookTicker`, `btcusdt@depth` and
/// `btcusdt@depth@100ms` (diff depth); everything else, partial-depth
/// `@depth5@100ms` included, is skipped.
pub(super) fn classify(stream: &str) -> StreamKind {
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
pub(super) struct Text<'a>(Cow<'a, str>);

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
pub(super) struct Levels(pub(super) Vec<Level>);

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

/// The `data` of a `<sym>@trade` message.
#[derive(Deserialize)]
pub(super) struct TradeData<'a> {
    #[serde(borrow)]
    pub(super) e: Text<'a>,
    #[serde(borrow)]
    pub(super) s: Text<'a>,
    pub(super) t: u64,
    #[serde(borrow)]
    pub(super) p: Text<'a>,
    #[serde(borrow)]
    pub(super) q: Text<'a>,
    #[serde(rename = "T")]
    pub(super) trade_time: u64,
    /// When the exchange sent the message (`E`): sets the clock offset.
    #[serde(rename = "E", default)]
    pub(super) event_time: Option<u64>,
    pub(super) m: bool,
}

/// The `data` of a `<sym>@bookTicker` message.
#[derive(Deserialize)]
pub(super) struct TickerData<'a> {
    #[serde(borrow)]
    pub(super) s: Text<'a>,
    #[serde(borrow)]
    pub(super) b: Text<'a>,
    #[serde(rename = "B", borrow)]
    pub(super) bid_sz: Text<'a>,
    #[serde(borrow)]
    pub(super) a: Text<'a>,
    #[serde(rename = "A", borrow)]
    pub(super) ask_sz: Text<'a>,
}

/// The `data` of a `<sym>@depth` message (a diff depth update).
#[derive(Deserialize)]
pub(super) struct DepthData<'a> {
    #[serde(borrow)]
    pub(super) e: Text<'a>,
    #[serde(rename = "E")]
    pub(super) event_time: u64,
    #[serde(borrow)]
    pub(super) s: Text<'a>,
    #[serde(rename = "U")]
    pub(super) first_id: u64,
    #[serde(rename = "u")]
    pub(super) last_id: u64,
    pub(super) b: Levels,
    pub(super) a: Levels,
}

/// A REST depth snapshot `{lastUpdateId, bids, asks}`.
pub(super) struct Snapshot {
    pub(super) last_update_id: u64,
    pub(super) bids: Vec<Level>,
    pub(super) asks: Vec<Level>,
}

/// One line's JSON, classified.
pub(super) enum Parsed<'a> {
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

/// The envelope and snapshot fields the parser looks for.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names() {
        assert_eq!(classify("btcusdt@trade"), StreamKind::Trade);
        assert_eq!(classify("btcusdt@bookTicker"), StreamKind::Ticker);
        assert_eq!(classify("btcusdt@depth"), StreamKind::Depth);
        assert_eq!(classify("btcusdt@depth@1000ms"), StreamKind::Depth);
        assert_eq!(classify("btcusdt@depth20@100ms"), StreamKind::Other);
        assert_eq!(classify("btcusdt@kline_1m"), StreamKind::Other);
        assert_eq!(classify("trade"), StreamKind::Other);
    }
}

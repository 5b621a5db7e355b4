//! Binary tick records that feed handlers may send over `tcp://` instead
//! of JSON lines: the same ticks, without the parse.
//!
//! In: one record, the content of one frame (`len u32 LE`, then `len`
//! bytes). Out: the same [`ParsedTick`] a JSON line gives, or a
//! [`FeedError`] that says what is wrong with the record.
//!
//! The layout is [`crate::model::record`]'s (specified in
//! `docs/CLUSTER.md#the-binary-tick-record`); this module adds the feed's
//! rules on top of what [`decode`] already checks (version, kind, lengths,
//! symbol, finite prices, sizes not negative):
//! - Only trade, quote and book records: an image is a sequencer's, not a
//!   feed handler's ([`FeedError::NotATick`]).
//! - At most [`MAX_LEVELS_PER_LINE`] levels a side, as a JSON book line.
//! - `epoch` and `seq` are ignored: the server sequences every tick itself
//!   (a handler may put its own numbering there; nothing reads it).
//! - `ts_ingest` is ignored: the server stamps the ingest time.
//! - `ts_event` 0 means "not given": the ingest time is used, as for a
//!   JSON line without `ts_event`.
//!
//! The symbol is borrowed from the input; the only allocations are a
//! book's level vectors.

use std::borrow::Cow;

use super::json::{FeedError, ParsedTick, MAX_LEVELS_PER_LINE};
use crate::model::record::{decode, Body, RecordError};
use crate::model::Update;

/// Decodes and checks one feed record (a frame's content, without its
/// length prefix).
pub fn parse_record(bytes: &[u8]) -> Result<ParsedTick<'_>, FeedError> {
    let record = decode(bytes).map_err(|e| match e {
        // Past the record's own bound (MAX_BOOK_LEVELS): the feed's
        // message, with the feed's bound.
        RecordError::TooManyLevels(n) => FeedError::TooManyLevels(n),
        e => FeedError::Record(e),
    })?;
    let update = match record.body {
        Body::Update(update) => update,
        Body::Image(_) => return Err(FeedError::NotATick),
    };
    if let Update::Book(book) = &update {
        let deepest = book.bids.len().max(book.asks.len());
        if deepest > MAX_LEVELS_PER_LINE {
            return Err(FeedError::TooManyLevels(deepest));
        }
    }
    let ts_event = (record.ts_event != 0).then_some(record.ts_event);
    Ok(ParsedTick { sym: Cow::Borrowed(record.sym), ts_event, update })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::{encode_image, encode_tick, Image, FRAME_PREFIX_LEN};
    use crate::model::{BookDelta, Level, Quote, Side, Trade};

    fn record(seq: u64, sym: &str, ts_event: u64, update: &Update) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_tick(&mut buf, 9, seq, sym, ts_event, 12345, update);
        buf.split_off(FRAME_PREFIX_LEN)
    }

    #[test]
    fn ticks_parse_as_their_json_lines_do() {
        let trade = Update::Trade(Trade { px: 0.1 + 0.2, sz: 100.0, side: Side::Buy });
        let bytes = record(77, "AAPL", 1_700_000_000_000_000_000, &trade);
        let t = parse_record(&bytes).unwrap();
        assert_eq!((&*t.sym, t.ts_event), ("AAPL", Some(1_700_000_000_000_000_000)));
        assert_eq!(t.update, trade);
        let json = crate::feed::json::parse_line(
            br#"{"type":"trade","sym":"AAPL","px":0.30000000000000004,"sz":100,"side":"buy","ts_event":1700000000000000000}"#,
        )
        .unwrap();
        assert_eq!(t, json, "the same tick, either way");
        // Seq, epoch and ts_ingest are the sender's business; ts_event 0 is "not given".
        let quote = Update::Quote(Quote { bid: 1.0, bid_sz: 2.0, ask: 1.5, ask_sz: 3.0 });
        let bytes = record(0, "X", 0, &quote);
        let q = parse_record(&bytes).unwrap();
        assert_eq!((q.ts_event, q.update), (None, quote));
    }

    #[test]
    fn the_feed_rules_hold() {
        let level = Level { px: 1.0, sz: 1.0 };
        let at_bound = Update::Book(BookDelta { bids: vec![level; MAX_LEVELS_PER_LINE], asks: vec![level] });
        assert!(parse_record(&record(0, "B", 0, &at_bound)).is_ok());
        let over = Update::Book(BookDelta { bids: vec![], asks: vec![level; MAX_LEVELS_PER_LINE + 1] });
        let err = parse_record(&record(0, "B", 0, &over)).unwrap_err();
        assert!(matches!(err, FeedError::TooManyLevels(1001)), "{err}");
        let mut image = Vec::new();
        encode_image(&mut image, 1, "B", &Image { seq: 3, ..Image::default() });
        assert!(matches!(parse_record(&image[FRAME_PREFIX_LEN..]), Err(FeedError::NotATick)));
        let mut nan = record(0, "B", 0, &Update::Trade(Trade { px: 1.0, sz: 1.0, side: Side::Sell }));
        let at = crate::model::record::HEAD_LEN + 1;
        nan[at..at + 8].copy_from_slice(&f64::NAN.to_le_bytes());
        let err = parse_record(&nan).unwrap_err();
        assert!(err.to_string().contains("trade px"), "{err}");
        assert!(parse_record(b"").is_err());
    }
}

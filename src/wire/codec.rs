//! Encoding and decoding a [`ServerMessage`] in each [`Encoding`].
//!
//! The server only encodes: each update once per encoding in use, into a
//! caller's reusable scratch buffer, then framed once ([`encode_frame`]).
//! Clients and tests decode.

use bytes::Bytes;
use prost::Message as _;

use super::frame::frame;
use super::message::ServerMessage;
use super::protobuf::{from_protobuf, pb, to_protobuf};
use super::Encoding;

/// Why a payload could not be decoded (clients and tests only; the server
/// never decodes its own output).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not valid MessagePack for a server message.
    #[error("msgpack: {0}")]
    Msgpack(#[from] rmp_serde::decode::Error),
    /// Not valid JSON for a server message.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Not a valid protobuf `ServerMessage`.
    #[error("protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A protobuf message whose body does not match a known type.
    #[error("protobuf: missing or mismatched body for type {0:?}")]
    ProtobufBody(String),
    /// A protobuf enum field holding a value this build does not know, or
    /// the `..._UNSPECIFIED` zero, which the server never sends.
    #[error("protobuf: {field} {value} is not a known value")]
    ProtobufEnum {
        /// The field, e.g. `Reset.reason`.
        field: &'static str,
        /// The value received.
        value: i32,
    },
}

/// Encodes `msg` in `encoding` and frames it: one allocation, shared by
/// every subscriber that receives it. `scratch` is the caller's reusable
/// buffer for the payload, so steady-state encoding allocates only the
/// frame itself.
pub fn encode_frame(encoding: Encoding, msg: &ServerMessage<'_>, scratch: &mut Vec<u8>) -> Bytes {
    scratch.clear();
    encode_payload(encoding, msg, scratch);
    frame(encoding.opcode(), scratch)
}

/// Encodes the payload of `msg` (no WebSocket header) into `out`.
pub fn encode_payload(encoding: Encoding, msg: &ServerMessage<'_>, out: &mut Vec<u8>) {
    match encoding {
        // Writing to a Vec cannot fail and every field type is supported by
        // both serializers, so an error here would be a bug in this module.
        Encoding::Msgpack => rmp_serde::encode::write_named(out, msg).expect("msgpack encoding of a ServerMessage"),
        Encoding::Json => serde_json::to_writer(&mut *out, msg).expect("json encoding of a ServerMessage"),
        Encoding::Protobuf => {
            let pb = to_protobuf(msg);
            out.reserve(pb.encoded_len());
            pb.encode_raw(out);
        }
    }
}

/// Decodes a payload in `encoding` into an owned message.
pub fn decode(encoding: Encoding, payload: &[u8]) -> Result<ServerMessage<'static>, DecodeError> {
    match encoding {
        Encoding::Msgpack => Ok(rmp_serde::from_slice(payload)?),
        Encoding::Json => Ok(serde_json::from_slice(payload)?),
        Encoding::Protobuf => from_protobuf(pb::ServerMessage::decode(payload)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BookDelta, Level, Quote, Side, Trade, Update};
    use crate::wire::frame::tests::strip_header;
    use crate::wire::{BookLevels, ResetReason, Skipped};

    fn samples() -> Vec<ServerMessage<'static>> {
        let awkward = [0.1, 189.51, 1e-9, 123_456_789.123_456_79, f64::MIN_POSITIVE, 0.30000000000000004, 5e-324];
        let mut out = Vec::new();
        for (i, &px) in awkward.iter().enumerate() {
            let seq = u64::MAX - i as u64;
            let ts = 1_700_000_000_123_456_789 + i as u64;
            let trade = Update::Trade(Trade { px, sz: px * 3.0, side: Side::Sell });
            let quote = Update::Quote(Quote { bid: px, bid_sz: 1.5, ask: px + 0.01, ask_sz: 0.000123 });
            let book = Update::Book(BookDelta {
                bids: vec![Level { px, sz: 0.0 }, Level { px: px / 3.0, sz: 7.0 }],
                asks: vec![],
            });
            for u in [trade, quote, book] {
                out.push(ServerMessage::update("BTC-USDT", seq, ts, ts + 1, &u, u32::MAX - i as u32).into_owned());
            }
        }
        out.push(ServerMessage::Snapshot {
            sym: "AAPL".into(),
            seq: 42,
            ts_event: 1,
            ts_ingest: 2,
            quote: Some(Quote { bid: 189.49, bid_sz: 300.0, ask: 189.51, ask_sz: 200.0 }),
            trade: None,
            depth: 10,
            book: BookLevels {
                bids: vec![Level { px: 189.49, sz: 300.0 }].into(),
                asks: Vec::new().into(),
                checksum: 0xDEAD_BEEF,
            },
        });
        out.push(ServerMessage::ack("subscribe", vec!["AAPL".into(), "MSFT".into()]));
        out.push(ServerMessage::Error {
            code: "unknown_symbol".into(),
            message: "unknown symbol: NOPE".into(),
            symbols: vec!["NOPE".into()],
        });
        out.push(ServerMessage::Conflated {
            symbols: vec![
                Skipped { sym: "AAPL".into(), from_seq: 43, to_seq: 900, trades: 100, quotes: 700, books: 58 },
                Skipped { sym: "MSFT".into(), from_seq: 1, to_seq: 1, trades: 0, quotes: 1, books: 0 },
            ],
        });
        for (i, reason) in ResetReason::ALL.into_iter().enumerate() {
            // Any seq, even below the last one sent (an epoch change), and
            // the extremes of the range.
            let seq = [1500, 0, u64::MAX, 1][i];
            out.push(ServerMessage::reset(if i % 2 == 0 { "AAPL" } else { "BTC-USDT-PERP" }, seq, reason).into_owned());
        }
        out.push(ServerMessage::TokenExpiring { expires_at: 1_767_225_600 });
        out.push(ServerMessage::ReplayEnd {
            source: "btcusdt_20240808.gz".into(),
            reason: "end".into(),
            events: 41_247,
            ts_event: 1_723_161_599_999_231_384,
        });
        out
    }

    #[test]
    fn every_message_round_trips_exactly_in_every_encoding() {
        let mut scratch = Vec::new();
        for msg in samples() {
            for enc in Encoding::ALL {
                let frame = encode_frame(enc, &msg, &mut scratch);
                let payload = strip_header(&frame);
                let back = decode(enc, payload).unwrap_or_else(|e| panic!("{enc:?} {msg:?}: {e}"));
                assert_eq!(back, msg, "{enc:?}");
                // Bit-exact, not just ==.
                if let (ServerMessage::Trade { px: a, .. }, ServerMessage::Trade { px: b, .. }) = (&back, &msg) {
                    assert_eq!(a.to_bits(), b.to_bits());
                }
            }
        }
    }

    #[test]
    fn msgpack_uses_named_keys() {
        let u = Update::Trade(Trade { px: 1.0, sz: 2.0, side: Side::Buy });
        let msg = ServerMessage::update("AAPL", 7, 1, 2, &u, 7);
        let mut scratch = Vec::new();
        encode_payload(Encoding::Msgpack, &msg, &mut scratch);
        let value: serde_json::Value = rmp_serde::from_slice(&scratch).unwrap();
        assert_eq!(value["type"], "trade");
        assert_eq!(value["sym"], "AAPL");
        assert_eq!(value["seq"], 7);
        assert_eq!(value["side"], "buy");
    }

    #[test]
    fn reset_has_the_documented_shape_in_json_and_msgpack() {
        let msg = ServerMessage::reset("AAPL", 1500, ResetReason::Gap);
        let mut scratch = Vec::new();
        encode_payload(Encoding::Json, &msg, &mut scratch);
        assert_eq!(
            std::str::from_utf8(&scratch).unwrap(),
            r#"{"type":"reset","sym":"AAPL","seq":1500,"reason":"gap"}"#
        );
        for reason in ResetReason::ALL {
            let msg = ServerMessage::reset("AAPL", 7, reason);
            assert_eq!(msg.kind(), "reset");
            assert_eq!(msg.sym_seq(), None, "a reset is not a market message");
            scratch.clear();
            encode_payload(Encoding::Msgpack, &msg, &mut scratch);
            let value: serde_json::Value = rmp_serde::from_slice(&scratch).unwrap();
            assert_eq!(value, serde_json::json!({"type": "reset", "sym": "AAPL", "seq": 7, "reason": reason.name()}));
        }
        let unknown = br#"{"type":"reset","sym":"AAPL","seq":1,"reason":"nope"}"#;
        assert!(decode(Encoding::Json, unknown).is_err(), "an unknown reason is rejected");
    }
}

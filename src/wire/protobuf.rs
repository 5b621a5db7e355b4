//! The mapping between the message model and `proto/tickcast.proto`.
//!
//! prost generates the types at build time (`build.rs`, with a pure-Rust
//! proto compiler, so no `protoc` is needed); this module converts.

use std::borrow::Cow;

use super::codec::DecodeError;
use super::message::{BookLevels, ResetReason, ServerMessage, Skipped};
use crate::model::{Level, Quote, Side, Trade};

/// Protobuf types generated from `proto/tickcast.proto` at build time.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tickcast.v1.rs"));
}

fn pb_side(side: Side) -> i32 {
    match side {
        Side::Unknown => pb::Side::Unknown as i32,
        Side::Buy => pb::Side::Buy as i32,
        Side::Sell => pb::Side::Sell as i32,
    }
}

fn side_from_pb(side: i32) -> Side {
    match pb::Side::try_from(side) {
        Ok(pb::Side::Buy) => Side::Buy,
        Ok(pb::Side::Sell) => Side::Sell,
        _ => Side::Unknown,
    }
}

fn pb_reset_reason(reason: ResetReason) -> i32 {
    match reason {
        ResetReason::Gap => pb::ResetReason::Gap as i32,
        ResetReason::Epoch => pb::ResetReason::Epoch as i32,
        ResetReason::Reconnect => pb::ResetReason::Reconnect as i32,
        ResetReason::History => pb::ResetReason::History as i32,
    }
}

/// A reset's reason; `UNSPECIFIED` (never sent) and values this build does
/// not know are errors, as an unknown `reason` string is in JSON.
fn reset_reason_from_pb(reason: i32) -> Result<ResetReason, DecodeError> {
    match pb::ResetReason::try_from(reason) {
        Ok(pb::ResetReason::Gap) => Ok(ResetReason::Gap),
        Ok(pb::ResetReason::Epoch) => Ok(ResetReason::Epoch),
        Ok(pb::ResetReason::Reconnect) => Ok(ResetReason::Reconnect),
        Ok(pb::ResetReason::History) => Ok(ResetReason::History),
        Ok(pb::ResetReason::Unspecified) | Err(_) => {
            Err(DecodeError::ProtobufEnum { field: "Reset.reason", value: reason })
        }
    }
}

fn pb_levels(levels: &[Level]) -> Vec<pb::Level> {
    levels.iter().map(|l| pb::Level { px: l.px, sz: l.sz }).collect()
}

fn levels_from_pb(levels: Vec<pb::Level>) -> Cow<'static, [Level]> {
    Cow::Owned(levels.into_iter().map(|l| Level { px: l.px, sz: l.sz }).collect())
}

fn pb_trade(t: &Trade) -> pb::Trade {
    pb::Trade { px: t.px, sz: t.sz, side: pb_side(t.side) }
}

fn pb_quote(q: &Quote) -> pb::Quote {
    pb::Quote { bid: q.bid, bid_sz: q.bid_sz, ask: q.ask, ask_sz: q.ask_sz }
}

/// Converts a message to its protobuf envelope.
pub fn to_protobuf(msg: &ServerMessage<'_>) -> pb::ServerMessage {
    use pb::server_message::Body;
    let mut out = pb::ServerMessage { r#type: msg.kind().to_owned(), ..Default::default() };
    let (sym, seq, ts_event, ts_ingest, body) = match msg {
        ServerMessage::Trade { sym, seq, ts_event, ts_ingest, px, sz, side } => {
            (sym, *seq, *ts_event, *ts_ingest, Body::Trade(pb_trade(&Trade { px: *px, sz: *sz, side: *side })))
        }
        ServerMessage::Quote { sym, seq, ts_event, ts_ingest, bid, bid_sz, ask, ask_sz } => (
            sym,
            *seq,
            *ts_event,
            *ts_ingest,
            Body::Quote(pb::Quote { bid: *bid, bid_sz: *bid_sz, ask: *ask, ask_sz: *ask_sz }),
        ),
        ServerMessage::Book { sym, seq, ts_event, ts_ingest, bids, asks, checksum } => (
            sym,
            *seq,
            *ts_event,
            *ts_ingest,
            Body::Book(pb::Book { bids: pb_levels(bids), asks: pb_levels(asks), checksum: *checksum }),
        ),
        ServerMessage::Snapshot { sym, seq, ts_event, ts_ingest, quote, trade, depth, book } => (
            sym,
            *seq,
            *ts_event,
            *ts_ingest,
            Body::Snapshot(pb::Snapshot {
                quote: quote.as_ref().map(pb_quote),
                trade: trade.as_ref().map(pb_trade),
                book: Some(pb::Book {
                    bids: pb_levels(&book.bids),
                    asks: pb_levels(&book.asks),
                    checksum: book.checksum,
                }),
                depth: *depth,
            }),
        ),
        ServerMessage::Ack { op, symbols, epoch, recovered } => {
            out.body = Some(Body::Ack(pb::Ack {
                op: op.to_string(),
                symbols: symbols.iter().map(|s| s.to_string()).collect(),
                epoch: epoch.unwrap_or(0),
                recovered: recovered.iter().map(|(k, &v)| (k.to_string(), v)).collect(),
            }));
            return out;
        }
        ServerMessage::Error { code, message, symbols } => {
            out.body = Some(Body::Error(pb::Error {
                code: code.to_string(),
                message: message.to_string(),
                symbols: symbols.iter().map(|s| s.to_string()).collect(),
            }));
            return out;
        }
        ServerMessage::Conflated { symbols } => {
            out.body = Some(Body::Conflated(pb::Conflated {
                symbols: symbols
                    .iter()
                    .map(|s| pb::Skipped {
                        sym: s.sym.to_string(),
                        from_seq: s.from_seq,
                        to_seq: s.to_seq,
                        trades: s.trades,
                        quotes: s.quotes,
                        books: s.books,
                    })
                    .collect(),
            }));
            return out;
        }
        ServerMessage::Reset { sym, seq, reason } => {
            // Symbol and seq in the envelope, as for a snapshot; no times.
            out.sym = sym.to_string();
            out.seq = *seq;
            out.body = Some(Body::Reset(pb::Reset { reason: pb_reset_reason(*reason) }));
            return out;
        }
        ServerMessage::ReplayEnd { source, reason, events, ts_event } => {
            out.ts_event = *ts_event;
            out.body = Some(Body::ReplayEnd(pb::ReplayEnd {
                source: source.to_string(),
                reason: reason.to_string(),
                events: *events,
            }));
            return out;
        }
        ServerMessage::TokenExpiring { expires_at } => {
            out.body = Some(Body::TokenExpiring(pb::TokenExpiring { expires_at: *expires_at }));
            return out;
        }
    };
    out.sym = sym.to_string();
    out.seq = seq;
    out.ts_event = ts_event;
    out.ts_ingest = ts_ingest;
    out.body = Some(body);
    out
}

/// Converts a protobuf envelope back to the message model.
pub fn from_protobuf(msg: pb::ServerMessage) -> Result<ServerMessage<'static>, DecodeError> {
    use pb::server_message::Body;
    let sym = Cow::Owned(msg.sym);
    let (seq, ts_event, ts_ingest) = (msg.seq, msg.ts_event, msg.ts_ingest);
    let out = match (msg.r#type.as_str(), msg.body) {
        ("trade", Some(Body::Trade(t))) => {
            ServerMessage::Trade { sym, seq, ts_event, ts_ingest, px: t.px, sz: t.sz, side: side_from_pb(t.side) }
        }
        ("quote", Some(Body::Quote(q))) => ServerMessage::Quote {
            sym,
            seq,
            ts_event,
            ts_ingest,
            bid: q.bid,
            bid_sz: q.bid_sz,
            ask: q.ask,
            ask_sz: q.ask_sz,
        },
        ("book", Some(Body::Book(b))) => ServerMessage::Book {
            sym,
            seq,
            ts_event,
            ts_ingest,
            bids: levels_from_pb(b.bids),
            asks: levels_from_pb(b.asks),
            checksum: b.checksum,
        },
        ("snapshot", Some(Body::Snapshot(s))) => {
            let book = s.book.unwrap_or_default();
            ServerMessage::Snapshot {
                sym,
                seq,
                ts_event,
                ts_ingest,
                quote: s.quote.map(|q| Quote { bid: q.bid, bid_sz: q.bid_sz, ask: q.ask, ask_sz: q.ask_sz }),
                trade: s.trade.map(|t| Trade { px: t.px, sz: t.sz, side: side_from_pb(t.side) }),
                depth: s.depth,
                book: BookLevels {
                    bids: levels_from_pb(book.bids),
                    asks: levels_from_pb(book.asks),
                    checksum: book.checksum,
                },
            }
        }
        ("ack", Some(Body::Ack(a))) => {
            // Epoch 0 is "none": a plain ack, or an edge not synced yet.
            ServerMessage::Ack {
                op: Cow::Owned(a.op),
                symbols: a.symbols.into_iter().map(Cow::Owned).collect(),
                epoch: (a.epoch != 0).then_some(a.epoch),
                recovered: a.recovered.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect(),
            }
        }
        ("error", Some(Body::Error(e))) => ServerMessage::Error {
            code: Cow::Owned(e.code),
            message: Cow::Owned(e.message),
            symbols: e.symbols.into_iter().map(Cow::Owned).collect(),
        },
        ("conflated", Some(Body::Conflated(c))) => ServerMessage::Conflated {
            symbols: c
                .symbols
                .into_iter()
                .map(|s| Skipped {
                    sym: Cow::Owned(s.sym),
                    from_seq: s.from_seq,
                    to_seq: s.to_seq,
                    trades: s.trades,
                    quotes: s.quotes,
                    books: s.books,
                })
                .collect(),
        },
        ("reset", Some(Body::Reset(r))) => ServerMessage::Reset { sym, seq, reason: reset_reason_from_pb(r.reason)? },
        ("replay_end", Some(Body::ReplayEnd(r))) => ServerMessage::ReplayEnd {
            source: Cow::Owned(r.source),
            reason: Cow::Owned(r.reason),
            events: r.events,
            ts_event,
        },
        ("token_expiring", Some(Body::TokenExpiring(t))) => ServerMessage::TokenExpiring { expires_at: t.expires_at },
        (other, _) => return Err(DecodeError::ProtobufBody(other.to_owned())),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn reset_puts_sym_and_seq_in_the_envelope_and_round_trips() {
        let expected = [
            (ResetReason::Gap, pb::ResetReason::Gap),
            (ResetReason::Epoch, pb::ResetReason::Epoch),
            (ResetReason::Reconnect, pb::ResetReason::Reconnect),
            (ResetReason::History, pb::ResetReason::History),
        ];
        for (reason, pb_reason) in expected {
            let msg = ServerMessage::reset("AAPL", 1500, reason);
            let out = to_protobuf(&msg);
            assert_eq!((out.r#type.as_str(), out.sym.as_str(), out.seq), ("reset", "AAPL", 1500));
            assert_eq!((out.ts_event, out.ts_ingest), (0, 0));
            assert_eq!(out.body, Some(pb::server_message::Body::Reset(pb::Reset { reason: pb_reason as i32 })));
            let bytes = out.encode_to_vec();
            let back = from_protobuf(pb::ServerMessage::decode(&bytes[..]).unwrap()).unwrap();
            assert_eq!(back, msg.into_owned());
        }
    }

    #[test]
    fn reset_without_a_known_reason_is_rejected() {
        for value in [pb::ResetReason::Unspecified as i32, 99, -1] {
            let msg = pb::ServerMessage {
                r#type: "reset".into(),
                sym: "AAPL".into(),
                seq: 1,
                body: Some(pb::server_message::Body::Reset(pb::Reset { reason: value })),
                ..Default::default()
            };
            let err = from_protobuf(msg).unwrap_err();
            assert!(
                matches!(err, DecodeError::ProtobufEnum { field: "Reset.reason", value: v } if v == value),
                "{err}"
            );
        }
        // A reset type with another body, or none, is a mismatch as for
        // every type.
        let msg = pb::ServerMessage { r#type: "reset".into(), ..Default::default() };
        assert!(matches!(from_protobuf(msg), Err(DecodeError::ProtobufBody(t)) if t == "reset"));
    }
}

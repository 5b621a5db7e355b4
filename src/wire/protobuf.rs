//! The mapping between the message model and `proto/tickcast.proto`.
//!
//! prost generates the types at build time (`build.rs`, with a pure-Rust
//! proto compiler, so no `protoc` is needed); this module converts.

use std::borrow::Cow;

use super::codec::DecodeError;
use super::message::{BookLevels, ServerMessage, Skipped};
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
        ServerMessage::Ack { op, symbols } => {
            out.body = Some(Body::Ack(pb::Ack {
                op: op.to_string(),
                symbols: symbols.iter().map(|s| s.to_string()).collect(),
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
            ServerMessage::Ack { op: Cow::Owned(a.op), symbols: a.symbols.into_iter().map(Cow::Owned).collect() }
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

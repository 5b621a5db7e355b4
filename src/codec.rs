//! Wire encodings: one message model, three encodings, one framing.
//!
//! In: a borrowed [`ServerMessage`] built by the engine or a session.
//! Out: a complete, unmasked WebSocket frame (header and payload) as
//! [`Bytes`], ready to be written as-is to every subscriber of that encoding.
//! Server frames are never masked (RFC 6455 §5.1), which is what lets one
//! frame be shared by thousands of sockets without a copy.
//!
//! MessagePack messages are maps with named string keys (rmp-serde's
//! `write_named`), so any MessagePack library reads them without a schema.
//! JSON uses the same names. Protobuf uses `proto/tickcast.proto`.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload};
use prost::Message as _;
use serde::{Deserialize, Serialize};

use crate::pb;
use crate::tick::{Level, Quote, Side, Trade, Update};

/// A wire encoding a client can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// MessagePack maps with named keys; binary frames. The default.
    Msgpack,
    /// `tickcast.v1.ServerMessage` from `proto/`; binary frames.
    Protobuf,
    /// JSON objects; text frames.
    Json,
}

impl Encoding {
    /// Every encoding, in [`Encoding::index`] order.
    pub const ALL: [Encoding; 3] = [Encoding::Msgpack, Encoding::Protobuf, Encoding::Json];

    /// Dense index, for per-encoding arrays on the hot path.
    pub fn index(self) -> usize {
        match self {
            Encoding::Msgpack => 0,
            Encoding::Protobuf => 1,
            Encoding::Json => 2,
        }
    }

    /// The name used in `?encoding=` and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Msgpack => "msgpack",
            Encoding::Protobuf => "protobuf",
            Encoding::Json => "json",
        }
    }

    /// The `Sec-WebSocket-Protocol` value that selects this encoding.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Msgpack => "tickcast.msgpack",
            Encoding::Protobuf => "tickcast.protobuf",
            Encoding::Json => "tickcast.json",
        }
    }

    /// Parses an `?encoding=` value.
    pub fn from_name(name: &str) -> Option<Encoding> {
        Encoding::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Parses a `Sec-WebSocket-Protocol` value.
    pub fn from_subprotocol(name: &str) -> Option<Encoding> {
        Encoding::ALL.into_iter().find(|e| e.subprotocol() == name)
    }

    /// Frame opcode: text for JSON, binary otherwise.
    pub fn opcode(self) -> OpCode {
        match self {
            Encoding::Json => OpCode::Text,
            _ => OpCode::Binary,
        }
    }
}

/// The book part of a snapshot: levels to the server's `--book-depth`,
/// bids best (highest) first, asks best (lowest) first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BookLevels<'a> {
    /// Bid levels, best first.
    pub bids: Cow<'a, [Level]>,
    /// Ask levels, best first.
    pub asks: Cow<'a, [Level]>,
}

/// What a slow client missed of one symbol, in a [`ServerMessage::Conflated`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped<'a> {
    /// Symbol.
    pub sym: Cow<'a, str>,
    /// First seq not delivered.
    pub from_seq: u64,
    /// Last seq not delivered (inclusive); the snapshot that follows has
    /// this seq.
    pub to_seq: u64,
    /// Trades not delivered: trades cannot be merged, so they are lost to
    /// this client (the snapshot carries only the last one).
    pub trades: u64,
    /// Quotes not delivered, superseded by the snapshot's quote.
    pub quotes: u64,
    /// Book changes not delivered, folded into the snapshot's book.
    pub books: u64,
}

impl Skipped<'_> {
    fn into_owned(self) -> Skipped<'static> {
        Skipped { sym: Cow::Owned(self.sym.into_owned()), ..self }
    }
}

/// Every message the server sends. Borrowed when the engine encodes it,
/// owned (`'static`) when a client decodes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// A trade print.
    Trade {
        /// Symbol.
        sym: Cow<'a, str>,
        /// Per-symbol sequence number.
        seq: u64,
        /// Source event time, ns since the Unix epoch.
        ts_event: u64,
        /// Engine ingest time, ns since the Unix epoch.
        ts_ingest: u64,
        /// Price.
        px: f64,
        /// Size.
        sz: f64,
        /// Aggressor side.
        side: Side,
    },
    /// A new best bid and offer.
    Quote {
        /// Symbol.
        sym: Cow<'a, str>,
        /// Per-symbol sequence number.
        seq: u64,
        /// Source event time, ns since the Unix epoch.
        ts_event: u64,
        /// Engine ingest time, ns since the Unix epoch.
        ts_ingest: u64,
        /// Best bid.
        bid: f64,
        /// Size at the best bid.
        bid_sz: f64,
        /// Best ask.
        ask: f64,
        /// Size at the best ask.
        ask_sz: f64,
    },
    /// Price-level changes; size 0 deletes a level.
    Book {
        /// Symbol.
        sym: Cow<'a, str>,
        /// Per-symbol sequence number.
        seq: u64,
        /// Source event time, ns since the Unix epoch.
        ts_event: u64,
        /// Engine ingest time, ns since the Unix epoch.
        ts_ingest: u64,
        /// Changed bid levels.
        bids: Cow<'a, [Level]>,
        /// Changed ask levels.
        asks: Cow<'a, [Level]>,
    },
    /// The whole state of a symbol, consistent with `seq`.
    Snapshot {
        /// Symbol.
        sym: Cow<'a, str>,
        /// The seq this state includes; the next update carries `seq + 1`.
        seq: u64,
        /// Event time of the last update (0 if none yet).
        ts_event: u64,
        /// Ingest time of the last update (0 if none yet).
        ts_ingest: u64,
        /// Last quote, if any.
        quote: Option<Quote>,
        /// Last trade, if any.
        trade: Option<Trade>,
        /// The book to `--book-depth` levels.
        book: BookLevels<'a>,
    },
    /// A subscribe or unsubscribe was applied.
    Ack {
        /// `subscribe` or `unsubscribe`.
        op: Cow<'a, str>,
        /// The symbols it applied to.
        symbols: Vec<Cow<'a, str>>,
    },
    /// A request could not be honoured; the connection stays open.
    Error {
        /// Stable code, see docs/PROTOCOL.md.
        code: Cow<'a, str>,
        /// Human-readable explanation.
        message: Cow<'a, str>,
        /// The symbols concerned, if any.
        symbols: Vec<Cow<'a, str>>,
    },
    /// The client fell behind and has drained: these symbols' updates in
    /// the named seq ranges were not delivered. A snapshot of each follows.
    Conflated {
        /// One entry per affected symbol.
        symbols: Vec<Skipped<'a>>,
    },
    /// A replay session's stream ended (`/replay` only); `ts_event` is the
    /// event time of the last market message sent (0 if none).
    ReplayEnd {
        /// The recording's name (`?source=`).
        source: Cow<'a, str>,
        /// `end`: the recording ran out; `to`: it passed the session's `to`.
        reason: Cow<'a, str>,
        /// Market messages sent since the session started or last seeked.
        events: u64,
        /// Event time of the last market message sent.
        ts_event: u64,
    },
}

impl<'a> ServerMessage<'a> {
    /// The market message for one sequenced update of `sym`.
    pub fn update(sym: &'a str, seq: u64, ts_event: u64, ts_ingest: u64, update: &'a Update) -> Self {
        let sym = Cow::Borrowed(sym);
        match update {
            Update::Trade(t) => {
                ServerMessage::Trade { sym, seq, ts_event, ts_ingest, px: t.px, sz: t.sz, side: t.side }
            }
            Update::Quote(q) => ServerMessage::Quote {
                sym,
                seq,
                ts_event,
                ts_ingest,
                bid: q.bid,
                bid_sz: q.bid_sz,
                ask: q.ask,
                ask_sz: q.ask_sz,
            },
            Update::Book(b) => ServerMessage::Book {
                sym,
                seq,
                ts_event,
                ts_ingest,
                bids: Cow::Borrowed(&b.bids),
                asks: Cow::Borrowed(&b.asks),
            },
        }
    }

    /// An error message with no symbols attached.
    pub fn error(code: &'a str, message: impl Into<Cow<'a, str>>) -> Self {
        ServerMessage::Error { code: Cow::Borrowed(code), message: message.into(), symbols: Vec::new() }
    }

    /// Detaches the message from the buffers it borrows.
    pub fn into_owned(self) -> ServerMessage<'static> {
        fn own(s: Cow<'_, str>) -> Cow<'static, str> {
            Cow::Owned(s.into_owned())
        }
        fn own_levels(l: Cow<'_, [Level]>) -> Cow<'static, [Level]> {
            Cow::Owned(l.into_owned())
        }
        match self {
            ServerMessage::Trade { sym, seq, ts_event, ts_ingest, px, sz, side } => {
                ServerMessage::Trade { sym: own(sym), seq, ts_event, ts_ingest, px, sz, side }
            }
            ServerMessage::Quote { sym, seq, ts_event, ts_ingest, bid, bid_sz, ask, ask_sz } => {
                ServerMessage::Quote { sym: own(sym), seq, ts_event, ts_ingest, bid, bid_sz, ask, ask_sz }
            }
            ServerMessage::Book { sym, seq, ts_event, ts_ingest, bids, asks } => ServerMessage::Book {
                sym: own(sym),
                seq,
                ts_event,
                ts_ingest,
                bids: own_levels(bids),
                asks: own_levels(asks),
            },
            ServerMessage::Snapshot { sym, seq, ts_event, ts_ingest, quote, trade, book } => ServerMessage::Snapshot {
                sym: own(sym),
                seq,
                ts_event,
                ts_ingest,
                quote,
                trade,
                book: BookLevels { bids: own_levels(book.bids), asks: own_levels(book.asks) },
            },
            ServerMessage::Ack { op, symbols } => {
                ServerMessage::Ack { op: own(op), symbols: symbols.into_iter().map(own).collect() }
            }
            ServerMessage::Error { code, message, symbols } => ServerMessage::Error {
                code: own(code),
                message: own(message),
                symbols: symbols.into_iter().map(own).collect(),
            },
            ServerMessage::Conflated { symbols } => {
                ServerMessage::Conflated { symbols: symbols.into_iter().map(Skipped::into_owned).collect() }
            }
            ServerMessage::ReplayEnd { source, reason, events, ts_event } => {
                ServerMessage::ReplayEnd { source: own(source), reason: own(reason), events, ts_event }
            }
        }
    }

    /// The `type` of this message on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Trade { .. } => "trade",
            ServerMessage::Quote { .. } => "quote",
            ServerMessage::Book { .. } => "book",
            ServerMessage::Snapshot { .. } => "snapshot",
            ServerMessage::Ack { .. } => "ack",
            ServerMessage::Error { .. } => "error",
            ServerMessage::Conflated { .. } => "conflated",
            ServerMessage::ReplayEnd { .. } => "replay_end",
        }
    }

    /// `(sym, seq)` of a market message or snapshot.
    pub fn sym_seq(&self) -> Option<(&str, u64)> {
        match self {
            ServerMessage::Trade { sym, seq, .. }
            | ServerMessage::Quote { sym, seq, .. }
            | ServerMessage::Book { sym, seq, .. }
            | ServerMessage::Snapshot { sym, seq, .. } => Some((sym, *seq)),
            _ => None,
        }
    }

    /// `ts_ingest` of a market message or snapshot.
    pub fn ts_ingest(&self) -> Option<u64> {
        match self {
            ServerMessage::Trade { ts_ingest, .. }
            | ServerMessage::Quote { ts_ingest, .. }
            | ServerMessage::Book { ts_ingest, .. }
            | ServerMessage::Snapshot { ts_ingest, .. } => Some(*ts_ingest),
            _ => None,
        }
    }

    /// `ts_event` of a market message or snapshot.
    pub fn ts_event(&self) -> Option<u64> {
        match self {
            ServerMessage::Trade { ts_event, .. }
            | ServerMessage::Quote { ts_event, .. }
            | ServerMessage::Book { ts_event, .. }
            | ServerMessage::Snapshot { ts_event, .. }
            | ServerMessage::ReplayEnd { ts_event, .. } => Some(*ts_event),
            _ => None,
        }
    }
}

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

/// Frames `payload` as one final, unmasked server frame.
pub fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut head = [0u8; 14];
    let head_len = Frame::new(true, opcode, None, Payload::Borrowed(payload)).fmt_head(&mut head);
    let mut out = BytesMut::with_capacity(head_len + payload.len());
    out.extend_from_slice(&head[..head_len]);
    out.extend_from_slice(payload);
    out.freeze()
}

/// A close frame with `code` and a short UTF-8 `reason` (at most 123 bytes,
/// as RFC 6455 allows for control frames; longer reasons are cut).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(OpCode::Close, &payload)
}

/// Decodes a payload in `encoding` into an owned message.
pub fn decode(encoding: Encoding, payload: &[u8]) -> Result<ServerMessage<'static>, DecodeError> {
    match encoding {
        Encoding::Msgpack => Ok(rmp_serde::from_slice(payload)?),
        Encoding::Json => Ok(serde_json::from_slice(payload)?),
        Encoding::Protobuf => from_protobuf(pb::ServerMessage::decode(payload)?),
    }
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
        ServerMessage::Book { sym, seq, ts_event, ts_ingest, bids, asks } => {
            (sym, *seq, *ts_event, *ts_ingest, Body::Book(pb::Book { bids: pb_levels(bids), asks: pb_levels(asks) }))
        }
        ServerMessage::Snapshot { sym, seq, ts_event, ts_ingest, quote, trade, book } => (
            sym,
            *seq,
            *ts_event,
            *ts_ingest,
            Body::Snapshot(pb::Snapshot {
                quote: quote.as_ref().map(pb_quote),
                trade: trade.as_ref().map(pb_trade),
                book: Some(pb::Book { bids: pb_levels(&book.bids), asks: pb_levels(&book.asks) }),
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
                book: BookLevels { bids: levels_from_pb(book.bids), asks: levels_from_pb(book.asks) },
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
        (other, _) => return Err(DecodeError::ProtobufBody(other.to_owned())),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tick::BookDelta;

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
                out.push(ServerMessage::update("BTC-USDT", seq, ts, ts + 1, &u).into_owned());
            }
        }
        out.push(ServerMessage::Snapshot {
            sym: "AAPL".into(),
            seq: 42,
            ts_event: 1,
            ts_ingest: 2,
            quote: Some(Quote { bid: 189.49, bid_sz: 300.0, ask: 189.51, ask_sz: 200.0 }),
            trade: None,
            book: BookLevels { bids: vec![Level { px: 189.49, sz: 300.0 }].into(), asks: Vec::new().into() },
        });
        out.push(ServerMessage::Ack { op: "subscribe".into(), symbols: vec!["AAPL".into(), "MSFT".into()] });
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
        let msg = ServerMessage::update("AAPL", 7, 1, 2, &u);
        let mut scratch = Vec::new();
        encode_payload(Encoding::Msgpack, &msg, &mut scratch);
        let value: serde_json::Value = rmp_serde::from_slice(&scratch).unwrap();
        assert_eq!(value["type"], "trade");
        assert_eq!(value["sym"], "AAPL");
        assert_eq!(value["seq"], 7);
        assert_eq!(value["side"], "buy");
    }

    #[test]
    fn frames_are_final_unmasked_with_the_right_opcode_and_length() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![b'x'; len];
            let f = frame(OpCode::Binary, &payload);
            assert_eq!(f[0], 0x82);
            assert_eq!(f[1] & 0x80, 0, "server frames are unmasked");
            assert_eq!(strip_header(&f).len(), len);
        }
        let f = frame(OpCode::Text, b"{}");
        assert_eq!(f[0], 0x81);
        let c = close_frame(1009, "message too big");
        assert_eq!(c[0], 0x88);
        assert_eq!(&c[2..4], &1009u16.to_be_bytes());
    }

    /// The payload of an unmasked frame.
    fn strip_header(frame: &[u8]) -> &[u8] {
        let len = frame[1] & 0x7f;
        let start = match len {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &frame[start..]
    }
}

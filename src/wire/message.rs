//! The message model: every message the server sends, in one enum that
//! all three encodings serialize.
//!
//! Borrowed (`'a`) when the engine builds one to encode, so building it
//! copies nothing; owned (`'static`) when a client decodes one.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{BookDelta, Level, Quote, Side, Trade, Update};

/// The book part of a snapshot: levels to the subscription's depth, bids
/// best (highest) first, asks best (lowest) first, and their checksum.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BookLevels<'a> {
    /// Bid levels, best first.
    pub bids: Cow<'a, [Level]>,
    /// Ask levels, best first.
    pub asks: Cow<'a, [Level]>,
    /// The [book checksum](crate::model::checksum) of these levels, so a
    /// client can check the book it starts from.
    pub checksum: u32,
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
    pub(crate) fn into_owned(self) -> Skipped<'static> {
        Skipped { sym: Cow::Owned(self.sym.into_owned()), ..self }
    }
}

/// Why a [`ServerMessage::Reset`] replaced a symbol's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// Updates were lost upstream, between the sequencer and this node.
    Gap,
    /// The sequencer restarted without its state (a new epoch): the
    /// snapshot's seq may be lower than the last seq the client saw.
    Epoch,
    /// This node lost its connection to the message bus and re-synced.
    Reconnect,
    /// Reserved for resume: the requested seq is no longer in history.
    History,
}

impl ResetReason {
    /// Every reason, in declaration order.
    pub const ALL: [ResetReason; 4] =
        [ResetReason::Gap, ResetReason::Epoch, ResetReason::Reconnect, ResetReason::History];

    /// The name on the wire (JSON and msgpack `reason`), e.g. for metrics
    /// labels.
    pub fn name(self) -> &'static str {
        match self {
            ResetReason::Gap => "gap",
            ResetReason::Epoch => "epoch",
            ResetReason::Reconnect => "reconnect",
            ResetReason::History => "history",
        }
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
    /// Price-level changes at the subscription's depth; size 0 deletes a
    /// level. Empty when the update changed nothing within that depth.
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
        /// The [book checksum](crate::model::checksum) of the subscriber's
        /// book after this change.
        checksum: u32,
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
        /// Levels per side this subscription holds: the depth asked for,
        /// [`FULL_DEPTH`](crate::model::FULL_DEPTH) for `"full"`.
        depth: u32,
        /// The book to `depth` levels.
        book: BookLevels<'a>,
    },
    /// A subscribe or unsubscribe was applied.
    Ack {
        /// `subscribe` or `unsubscribe`.
        op: Cow<'a, str>,
        /// The symbols it applied to.
        symbols: Vec<Cow<'a, str>>,
        /// On a subscribe: the server's epoch (its sequencer's, on a
        /// cluster edge; 0 before an edge has synced), for the client to
        /// send back with `from_seq` when it resumes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
        /// On a subscribe with `from_seq`: per symbol named there, whether
        /// its missed updates follow (`true`) or a `reset` and a snapshot
        /// do (`false`).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        recovered: BTreeMap<Cow<'a, str>, bool>,
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
    /// The symbol's state was replaced upstream: the client must discard
    /// what it holds of `sym`. The next message of `sym` is its snapshot at
    /// `seq` (which may be lower than the last seq the client saw), then
    /// updates from `seq + 1`.
    Reset {
        /// Symbol.
        sym: Cow<'a, str>,
        /// The seq of the snapshot that follows.
        seq: u64,
        /// Why the state was replaced.
        reason: ResetReason,
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
    /// The session's token expires soon (sent `--auth-expiry-warning`
    /// before): send `{"op":"refresh","token":...}` with a new one, or be
    /// closed with 4001 at `expires_at`.
    TokenExpiring {
        /// The token's `exp`, seconds since the Unix epoch.
        expires_at: u64,
    },
}

impl<'a> ServerMessage<'a> {
    /// A plain `ack` of `op` for `symbols`: no epoch, nothing recovered
    /// (unsubscribe, refresh, replay controls).
    pub fn ack(op: impl Into<Cow<'a, str>>, symbols: Vec<Cow<'a, str>>) -> Self {
        ServerMessage::Ack { op: op.into(), symbols, epoch: None, recovered: BTreeMap::new() }
    }

    /// The market message for one sequenced update of `sym`. A book
    /// update carries `checksum`, the subscriber's book checksum after it
    /// (the other kinds ignore it).
    pub fn update(sym: &'a str, seq: u64, ts_event: u64, ts_ingest: u64, update: &'a Update, checksum: u32) -> Self {
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
            Update::Book(b) => ServerMessage::book(sym, seq, ts_event, ts_ingest, b, checksum),
        }
    }

    /// The `book` message of one update as a subscriber at some depth sees
    /// it: `view` is that depth's delta (see
    /// [`DepthDiff`](crate::model::DepthDiff)), `checksum` the subscriber's
    /// book checksum after it.
    pub fn book(
        sym: impl Into<Cow<'a, str>>,
        seq: u64,
        ts_event: u64,
        ts_ingest: u64,
        view: &'a BookDelta,
        checksum: u32,
    ) -> Self {
        ServerMessage::Book {
            sym: sym.into(),
            seq,
            ts_event,
            ts_ingest,
            bids: Cow::Borrowed(&view.bids),
            asks: Cow::Borrowed(&view.asks),
            checksum,
        }
    }

    /// An error message with no symbols attached.
    pub fn error(code: &'a str, message: impl Into<Cow<'a, str>>) -> Self {
        ServerMessage::Error { code: Cow::Borrowed(code), message: message.into(), symbols: Vec::new() }
    }

    /// A `reset` of `sym`: its snapshot at `seq` follows.
    pub fn reset(sym: impl Into<Cow<'a, str>>, seq: u64, reason: ResetReason) -> Self {
        ServerMessage::Reset { sym: sym.into(), seq, reason }
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
            ServerMessage::Book { sym, seq, ts_event, ts_ingest, bids, asks, checksum } => ServerMessage::Book {
                sym: own(sym),
                seq,
                ts_event,
                ts_ingest,
                bids: own_levels(bids),
                asks: own_levels(asks),
                checksum,
            },
            ServerMessage::Snapshot { sym, seq, ts_event, ts_ingest, quote, trade, depth, book } => {
                ServerMessage::Snapshot {
                    sym: own(sym),
                    seq,
                    ts_event,
                    ts_ingest,
                    quote,
                    trade,
                    depth,
                    book: BookLevels {
                        bids: own_levels(book.bids),
                        asks: own_levels(book.asks),
                        checksum: book.checksum,
                    },
                }
            }
            ServerMessage::Ack { op, symbols, epoch, recovered } => ServerMessage::Ack {
                op: own(op),
                symbols: symbols.into_iter().map(own).collect(),
                epoch,
                recovered: recovered.into_iter().map(|(k, v)| (own(k), v)).collect(),
            },
            ServerMessage::Error { code, message, symbols } => ServerMessage::Error {
                code: own(code),
                message: own(message),
                symbols: symbols.into_iter().map(own).collect(),
            },
            ServerMessage::Conflated { symbols } => {
                ServerMessage::Conflated { symbols: symbols.into_iter().map(Skipped::into_owned).collect() }
            }
            ServerMessage::Reset { sym, seq, reason } => ServerMessage::Reset { sym: own(sym), seq, reason },
            ServerMessage::ReplayEnd { source, reason, events, ts_event } => {
                ServerMessage::ReplayEnd { source: own(source), reason: own(reason), events, ts_event }
            }
            ServerMessage::TokenExpiring { expires_at } => ServerMessage::TokenExpiring { expires_at },
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
            ServerMessage::Reset { .. } => "reset",
            ServerMessage::ReplayEnd { .. } => "replay_end",
            ServerMessage::TokenExpiring { .. } => "token_expiring",
        }
    }

    /// `(sym, seq)` of a market message or snapshot; not of a `reset`,
    /// whose seq is that of the snapshot it announces.
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

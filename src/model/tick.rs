//! The normalized tick model every feed produces and every encoding carries.
//!
//! In: nothing (pure data). Out: [`Tick`]s, which feeds push into the
//! [`ring`](crate::ring) and the [`engine`](crate::engine) turns into
//! sequenced updates.
//!
//! # Prices
//! Prices and sizes are `f64` (IEEE-754 binary64) from the feed to the wire.
//! The engine never does arithmetic on them: it only compares them to keep a
//! book sorted. MessagePack carries them as float64, protobuf as `double` and
//! JSON as the shortest decimal that parses back to the same double, so the
//! value a feed sends is the value a client receives, bit for bit (feeds
//! normalize -0.0 to +0.0, which proto3 could not carry otherwise). A feed
//! with fixed-point prices (e.g. DBN's 1e-9 units) converts once, at the edge.

use serde::{Deserialize, Serialize};

use super::symbol::SymbolId;

/// One price level: a price and the total size resting there.
///
/// On the wire (MessagePack and JSON) a level is the pair `[px, sz]`, which
/// is what trading grids and most exchange APIs use.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "[f64; 2]", into = "[f64; 2]")]
pub struct Level {
    /// Price of the level.
    pub px: f64,
    /// Size at the level; 0 in a book update deletes the level.
    pub sz: f64,
}

impl From<[f64; 2]> for Level {
    fn from([px, sz]: [f64; 2]) -> Self {
        Level { px, sz }
    }
}

impl From<Level> for [f64; 2] {
    fn from(level: Level) -> Self {
        [level.px, level.sz]
    }
}

/// The aggressor side of a trade, when the source knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The buyer crossed the spread.
    Buy,
    /// The seller crossed the spread.
    Sell,
    /// The source does not say.
    #[default]
    Unknown,
}

/// A trade print.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trade {
    /// Trade price.
    pub px: f64,
    /// Trade size.
    pub sz: f64,
    /// Aggressor side.
    #[serde(default)]
    pub side: Side,
}

/// Best bid and offer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    /// Best bid price.
    pub bid: f64,
    /// Size at the best bid.
    pub bid_sz: f64,
    /// Best ask price.
    pub ask: f64,
    /// Size at the best ask.
    pub ask_sz: f64,
}

/// L2 changes: each level replaces the size at its price; size 0 deletes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BookDelta {
    /// Changed bid levels.
    pub bids: Vec<Level>,
    /// Changed ask levels.
    pub asks: Vec<Level>,
}

/// What happened to a symbol.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// A trade print.
    Trade(Trade),
    /// A new best bid and offer.
    Quote(Quote),
    /// Price-level changes to the book.
    Book(BookDelta),
}

impl Update {
    /// This update's kind; its `name()` is the wire `type`.
    pub fn kind(&self) -> UpdateKind {
        match self {
            Update::Trade(_) => UpdateKind::Trade,
            Update::Quote(_) => UpdateKind::Quote,
            Update::Book(_) => UpdateKind::Book,
        }
    }
}

/// The kinds of market update, for per-kind counters and records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    /// A trade print.
    Trade = 0,
    /// A best bid and offer.
    Quote = 1,
    /// A book change.
    Book = 2,
}

impl UpdateKind {
    /// Every kind, in index order.
    pub const ALL: [UpdateKind; 3] = [UpdateKind::Trade, UpdateKind::Quote, UpdateKind::Book];

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            UpdateKind::Trade => "trade",
            UpdateKind::Quote => "quote",
            UpdateKind::Book => "book",
        }
    }
}

/// A normalized tick, as it travels through the ring. The per-symbol `seq`
/// is not here: the engine assigns it, so nothing a feed does can make a gap.
#[derive(Clone, Debug, PartialEq)]
pub struct Tick {
    /// The symbol, interned in the server's [`SymbolTable`](super::SymbolTable).
    pub symbol: SymbolId,
    /// Event time at the source, ns since the Unix epoch.
    pub ts_event: u64,
    /// Engine wall clock when the tick was taken in, ns since the Unix epoch.
    pub ts_ingest: u64,
    /// The change itself.
    pub update: Update,
}

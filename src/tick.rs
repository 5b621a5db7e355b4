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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

/// Dense id of a symbol, assigned by the [`SymbolTable`] in order of first
/// appearance. Topics are indexed by it, so the engine never hashes a name
/// on the hot path.
pub type SymbolId = u32;

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
    /// The symbol, interned in the server's [`SymbolTable`].
    pub symbol: SymbolId,
    /// Event time at the source, ns since the Unix epoch.
    pub ts_event: u64,
    /// Engine wall clock when the tick was taken in, ns since the Unix epoch.
    pub ts_ingest: u64,
    /// The change itself.
    pub update: Update,
}

/// Nanoseconds since the Unix epoch on the wall clock (0 if the clock is
/// before 1970, which no sane host is).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Longest symbol name accepted from a feed or a client.
pub const MAX_SYMBOL_LEN: usize = 32;

/// Whether `name` is an acceptable symbol: 1 to [`MAX_SYMBOL_LEN`] bytes of
/// ASCII letters, digits and `. - _ / :` (enough for equities, futures,
/// crypto pairs and options roots).
pub fn is_valid_symbol(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SYMBOL_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b':'))
}

/// The server-wide symbol universe: names to dense ids and back.
///
/// Feeds intern a name once (they keep their own cache), the engine looks up
/// the name of an id once when it creates the topic, and sessions resolve
/// client requests against it. Reads vastly outnumber writes, hence the
/// `RwLock`; no one holds it on a per-tick path.
#[derive(Default)]
pub struct SymbolTable {
    inner: RwLock<SymbolTableInner>,
}

#[derive(Default)]
struct SymbolTableInner {
    by_name: HashMap<Arc<str>, SymbolId>,
    names: Vec<Arc<str>>,
}

/// Why a symbol could not be interned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SymbolError {
    /// The name breaks [`is_valid_symbol`].
    #[error("invalid symbol name {0:?}: 1-32 characters of A-Z a-z 0-9 . - _ / :")]
    Invalid(String),
    /// The table already holds `--max-symbols` names.
    #[error("symbol table full ({0} symbols): raise --max-symbols")]
    Full(usize),
}

impl SymbolTable {
    /// Returns the id of `name`, adding it if it is new and fewer than
    /// `limit` symbols exist.
    pub fn intern(&self, name: &str, limit: usize) -> Result<SymbolId, SymbolError> {
        if let Some(&id) = self.inner.read().by_name.get(name) {
            return Ok(id);
        }
        if !is_valid_symbol(name) {
            return Err(SymbolError::Invalid(name.chars().take(64).collect()));
        }
        let mut inner = self.inner.write();
        if let Some(&id) = inner.by_name.get(name) {
            return Ok(id);
        }
        if inner.names.len() >= limit {
            return Err(SymbolError::Full(inner.names.len()));
        }
        let id = inner.names.len() as SymbolId;
        let name: Arc<str> = Arc::from(name);
        inner.names.push(name.clone());
        inner.by_name.insert(name, id);
        Ok(id)
    }

    /// The id of a known symbol.
    pub fn lookup(&self, name: &str) -> Option<SymbolId> {
        self.inner.read().by_name.get(name).copied()
    }

    /// The name of a known id.
    pub fn name(&self, id: SymbolId) -> Option<Arc<str>> {
        self.inner.read().names.get(id as usize).cloned()
    }

    /// Every known symbol, in id order.
    pub fn names(&self) -> Vec<Arc<str>> {
        self.inner.read().names.clone()
    }

    /// How many symbols are known.
    pub fn len(&self) -> usize {
        self.inner.read().names.len()
    }

    /// Whether no symbol is known yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_bounded() {
        let table = SymbolTable::default();
        assert_eq!(table.intern("AAPL", 2), Ok(0));
        assert_eq!(table.intern("MSFT", 2), Ok(1));
        assert_eq!(table.intern("AAPL", 2), Ok(0));
        assert_eq!(table.intern("GOOG", 2), Err(SymbolError::Full(2)));
        assert_eq!(table.name(1).as_deref(), Some("MSFT"));
        assert_eq!(table.lookup("GOOG"), None);
    }

    #[test]
    fn symbol_names_are_validated() {
        assert!(is_valid_symbol("BTC-USDT"));
        assert!(is_valid_symbol("ESH1"));
        assert!(is_valid_symbol("BRK.B"));
        assert!(!is_valid_symbol(""));
        assert!(!is_valid_symbol("has space"));
        assert!(!is_valid_symbol("*"));
        assert!(!is_valid_symbol(&"X".repeat(33)));
        let table = SymbolTable::default();
        assert!(matches!(table.intern("a b", 10), Err(SymbolError::Invalid(_))));
    }
}

//! [`BinanceStats`]: what the Binance normalizer counted, for `inspect`
//! and for tests. Its own file because both the normalizer and the order
//! book sync (`book`) count into it.
//!
//! Imports: nothing.

/// Counters of what the normalizer did, for `inspect` and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinanceStats {
    /// Trade events emitted.
    pub trades: u64,
    /// Quote events emitted.
    pub quotes: u64,
    /// Book events emitted (snapshots and applied depth updates).
    pub books: u64,
    /// Snapshots applied.
    pub snapshots: u64,
    /// Messages of streams we do not normalize (`@aggTrade`, `@kline`, ...).
    pub skipped_messages: u64,
    /// Snapshots that could not be attributed to a symbol.
    pub skipped_snapshots: u64,
    /// Depth updates dropped because the book already covered them
    /// (`u <= lastUpdateId`, or a repeat).
    pub stale_depth: u64,
    /// Buffered depth updates dropped because the buffer was full.
    pub dropped_pending: u64,
    /// Gaps reported (trade ids and depth update ids).
    pub gaps: u64,
}

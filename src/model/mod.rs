//! The normalized market model every stage shares: ticks, symbols, books
//! and wall-clock time.
//!
//! Owns the data types only; it imports nothing else of tickcast's, so
//! every stage above can use it and none of it can reach back up.
//!
//! - [`tick`]: [`Tick`], the [`Update`]s it carries, and their parts.
//! - [`symbol`]: the [`SymbolTable`] (names to dense ids) and what a valid
//!   symbol name is.
//! - [`universe`]: a declared universe, the names a `--symbols-file`
//!   lists, parsed and checked.
//! - [`book`]: the bounded L2 [`Book`], the depth views clients subscribe
//!   to ([`DepthDiff`]) and the book [`checksum`].
//! - [`time`]: `now_ns` and the event-time syntax users write.

pub mod book;
pub mod record;
pub mod state;
pub mod symbol;
pub mod tick;
pub mod time;
pub mod universe;

pub use book::{checksum, valid_depth, Book, DepthDiff, CHECKSUM_LEVELS, DEPTHS, FULL_DEPTH, MAX_BOOK_LEVELS};
pub use record::{Image, RecordError, Resync};
pub use state::TopicState;
pub use symbol::{is_valid_symbol, SymbolError, SymbolId, SymbolTable, MAX_SYMBOL_LEN};
pub use tick::{BookDelta, Level, Quote, Side, Tick, Trade, Update, UpdateKind};
pub use time::{now_ns, parse_event_time, EventTimeError};

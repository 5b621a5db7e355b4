//! The tick log's byte layout: the segment header, the record framing
//! (`len u32, crc32c u32, body`) and the four body kinds, with their
//! encoders and decoders.
//!
//! The layout is specified in `docs/TICKLOG.md` (at the repository root):
//! that document is the contract, this file its one implementation, and a
//! test here checks the sizes the document states. Change both together.
//!
//! Everything here works on bytes in memory; files, segments and their
//! errors belong to the siblings (`segment`, `writer`, `reader`). A bad
//! header or record body is reported as a [`BadHeader`] or [`BadRecord`],
//! which the segment reader turns into a
//! [`SourceError::Corrupt`](crate::recorded::SourceError::Corrupt) with the
//! file and offset.
//!
//! Imports: [`crate::model`] only.

use crate::model::{record, BookDelta, Level, Quote, Side, Trade, Update};

/// First bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"TICKLOG\0";
/// Format version written in each segment header.
pub const VERSION: u16 = 1;
/// Length of a segment header in bytes: records start here.
pub const HEADER_LEN: usize = 32;
/// Largest record body in bytes. A larger length prefix is corruption (or
/// a torn write), so a damaged length can never make a reader allocate or
/// skip gigabytes.
pub const MAX_BODY_LEN: usize = 1 << 20;

/// Record prefix: body length, then CRC32C of the body.
pub(super) const PREFIX_LEN: usize = 8;
pub(super) const KIND_SYMBOL: u8 = 0;
pub(super) const KIND_TRADE: u8 = 1;
pub(super) const KIND_QUOTE: u8 = 2;
pub(super) const KIND_BOOK: u8 = 3;
/// kind, sym, seq, ts_event, ts_ingest: the start of every tick body.
pub(super) const TICK_FIXED_LEN: usize = 1 + 4 + 8 + 8 + 8;
pub(super) const TRADE_BODY_LEN: usize = TICK_FIXED_LEN + 8 + 8 + 1;
pub(super) const QUOTE_BODY_LEN: usize = TICK_FIXED_LEN + 4 * 8;
pub(super) const BOOK_FIXED_LEN: usize = TICK_FIXED_LEN + 2 + 2;
pub(super) const LEVEL_LEN: usize = 16;
/// kind, id, name_len.
pub(super) const SYMBOL_FIXED_LEN: usize = 1 + 4 + 1;

/// One sequenced tick as the recorder appends it: the content of one tick
/// record, borrowed from the caller so appending copies nothing first.
pub struct LogTick<'a> {
    /// Symbol name.
    pub sym: &'a str,
    /// Per-symbol seq the engine assigned.
    pub seq: u64,
    /// Event time, ns since the Unix epoch.
    pub ts_event: u64,
    /// Ingest time, ns since the Unix epoch.
    pub ts_ingest: u64,
    /// The change.
    pub update: &'a Update,
}

/// A tick the format cannot hold, so the writer refuses it (and writes
/// nothing for it) instead of writing a record no reader accepts. The
/// caller can drop that one tick and go on appending.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unencodable {
    /// The symbol name is longer than a definition's one-byte length.
    #[error("symbol name of {len} bytes: the tick log holds at most 255")]
    SymbolTooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// A book update with more than 65,535 levels on a side, or more than
    /// a [`MAX_BODY_LEN`] body holds.
    #[error(
        "book update for {symbol} with {bids} bids and {asks} asks: a record holds at most 65535 levels a side \
         and {max} bytes",
        max = MAX_BODY_LEN
    )]
    BookTooLarge {
        /// The symbol of the update.
        symbol: String,
        /// Its bid levels.
        bids: usize,
        /// Its ask levels.
        asks: usize,
    },
}

/// Why a complete 32-byte segment header is not one this build reads; the
/// text is the reason of the reader's `Corrupt` error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum BadHeader {
    #[error("not a tick log segment: bad magic (expected \"TICKLOG\\0\")")]
    Magic,
    #[error("segment format version {0} is newer than this reader, which reads version {VERSION}")]
    NewerVersion(u16),
    #[error("segment format version 0 does not exist")]
    VersionZero,
    #[error("unknown header flags {0:#06x}")]
    Flags(u16),
    #[error("header length {0}, expected {HEADER_LEN}")]
    HeaderLen(u32),
}

impl BadHeader {
    /// Offset in the file of the field at fault.
    pub(super) fn offset(&self) -> u64 {
        match self {
            BadHeader::Magic => 0,
            BadHeader::NewerVersion(_) | BadHeader::VersionZero => 8,
            BadHeader::Flags(_) => 10,
            BadHeader::HeaderLen(_) => 12,
        }
    }
}

/// Why a record body whose CRC matched is still not a valid record; the
/// text is the reason of the reader's `Corrupt` error at the record's
/// start.
#[derive(Debug, thiserror::Error)]
pub(super) enum BadRecord {
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("symbol definition of {len} bytes, at least {SYMBOL_FIXED_LEN} needed")]
    ShortSymbol { len: usize },
    #[error("symbol definition of {len} bytes holds a name of {name_len} bytes")]
    SymbolLength { len: usize, name_len: usize },
    #[error("symbol id {id} defined out of order: the next id in this segment is {next}")]
    SymbolOutOfOrder { id: u32, next: usize },
    #[error("symbol name of id {id} is not UTF-8: {source}")]
    SymbolNotUtf8 { id: u32, source: std::str::Utf8Error },
    #[error("symbol id {0} is not defined in this segment")]
    UndefinedSymbol(u32),
    #[error("record of kind {kind} with {len} bytes, at least {TICK_FIXED_LEN} needed")]
    ShortTick { kind: u8, len: usize },
    #[error("{what} record of {len} bytes, expected {want}")]
    Length { what: &'static str, len: usize, want: usize },
    #[error("unknown trade side {0}")]
    TradeSide(u8),
    #[error("book record of {len} bytes, at least {BOOK_FIXED_LEN} needed")]
    ShortBook { len: usize },
    #[error("book record of {len} bytes, but {bids} bids and {asks} asks take {want}")]
    BookLength { len: usize, bids: usize, asks: usize, want: usize },
}

/// A tick record's fields, decoded; `local` is the segment-local symbol id.
pub(super) struct TickRecord {
    pub(super) local: u32,
    pub(super) seq: u64,
    pub(super) ts_event: u64,
    pub(super) ts_ingest: u64,
    pub(super) update: Update,
}

/// The header of segment `index`, created at `created_ns`.
pub(super) fn encode_header(index: u64, created_ns: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION.to_le_bytes());
    h[10..12].copy_from_slice(&0u16.to_le_bytes());
    h[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
    h[16..24].copy_from_slice(&created_ns.to_le_bytes());
    h[24..32].copy_from_slice(&index.to_le_bytes());
    h
}

/// Checks a complete 32-byte header (a shorter `h` has a bad magic).
pub(super) fn check_header(h: &[u8]) -> Result<(), BadHeader> {
    if h.len() < HEADER_LEN || h[0..8] != MAGIC {
        return Err(BadHeader::Magic);
    }
    let version = le_u16(h, 8);
    if version > VERSION {
        return Err(BadHeader::NewerVersion(version));
    }
    if version == 0 {
        return Err(BadHeader::VersionZero);
    }
    let flags = le_u16(h, 10);
    if flags != 0 {
        return Err(BadHeader::Flags(flags));
    }
    let header_len = le_u32(h, 12);
    if header_len as usize != HEADER_LEN {
        return Err(BadHeader::HeaderLen(header_len));
    }
    Ok(())
}

/// Whether `tick` fits a record; [`encode_tick`] relies on it.
pub(super) fn check_encodable(tick: &LogTick<'_>) -> Result<(), Unencodable> {
    if tick.sym.len() > u8::MAX as usize {
        return Err(Unencodable::SymbolTooLong { len: tick.sym.len() });
    }
    if let Update::Book(b) = tick.update {
        let (nb, na) = (b.bids.len(), b.asks.len());
        let body = BOOK_FIXED_LEN.saturating_add(LEVEL_LEN.saturating_mul(nb.saturating_add(na)));
        if nb > u16::MAX as usize || na > u16::MAX as usize || body > MAX_BODY_LEN {
            return Err(Unencodable::BookTooLarge { symbol: tick.sym.to_owned(), bids: nb, asks: na });
        }
    }
    Ok(())
}

/// Reserves the record prefix; returns the record's start.
fn begin_record(buf: &mut Vec<u8>, body_len: usize) -> usize {
    buf.reserve(PREFIX_LEN + body_len);
    let start = buf.len();
    buf.extend_from_slice(&[0u8; PREFIX_LEN]);
    start
}

/// Fills in the prefix (length, CRC32C) of the record begun at `start`.
fn end_record(buf: &mut [u8], start: usize) {
    let body = &buf[start + PREFIX_LEN..];
    let len = body.len() as u32;
    let crc = crc32c::crc32c(body);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends a symbol definition record to `buf`. The name must be at most
/// 255 bytes ([`check_encodable`]).
pub(super) fn encode_symbol(buf: &mut Vec<u8>, id: u32, name: &str) {
    let start = begin_record(buf, SYMBOL_FIXED_LEN + name.len());
    buf.push(KIND_SYMBOL);
    buf.extend_from_slice(&id.to_le_bytes());
    buf.push(name.len() as u8);
    buf.extend_from_slice(name.as_bytes());
    end_record(buf, start);
}

/// Appends a tick record for segment-local symbol id `sym` to `buf`. The
/// tick must have passed [`check_encodable`].
pub(super) fn encode_tick(buf: &mut Vec<u8>, sym: u32, tick: &LogTick<'_>) {
    let (kind, body_len) = match tick.update {
        Update::Trade(_) => (KIND_TRADE, TRADE_BODY_LEN),
        Update::Quote(_) => (KIND_QUOTE, QUOTE_BODY_LEN),
        Update::Book(b) => (KIND_BOOK, BOOK_FIXED_LEN + LEVEL_LEN * (b.bids.len() + b.asks.len())),
    };
    let start = begin_record(buf, body_len);
    buf.push(kind);
    buf.extend_from_slice(&sym.to_le_bytes());
    buf.extend_from_slice(&tick.seq.to_le_bytes());
    buf.extend_from_slice(&tick.ts_event.to_le_bytes());
    buf.extend_from_slice(&tick.ts_ingest.to_le_bytes());
    // The binary tick record's bodies, byte for byte; check_encodable
    // bounded the book's counts to a u16 each.
    record::encode_body(buf, tick.update);
    end_record(buf, start);
}

/// The name a symbol definition body gives, checked: `next` is the id the
/// segment's next definition must have (ids are dense, from 0).
pub(super) fn decode_symbol(body: &[u8], next: usize) -> Result<&str, BadRecord> {
    if body.len() < SYMBOL_FIXED_LEN {
        return Err(BadRecord::ShortSymbol { len: body.len() });
    }
    let id = le_u32(body, 1);
    let name_len = body[5] as usize;
    if body.len() != SYMBOL_FIXED_LEN + name_len {
        return Err(BadRecord::SymbolLength { len: body.len(), name_len });
    }
    if id as usize != next {
        return Err(BadRecord::SymbolOutOfOrder { id, next });
    }
    std::str::from_utf8(&body[SYMBOL_FIXED_LEN..]).map_err(|source| BadRecord::SymbolNotUtf8 { id, source })
}

/// Decodes a trade, quote or book body (`kind` is its first byte, one of
/// the three).
#[inline]
pub(super) fn decode_tick(kind: u8, body: &[u8]) -> Result<TickRecord, BadRecord> {
    if body.len() < TICK_FIXED_LEN {
        return Err(BadRecord::ShortTick { kind, len: body.len() });
    }
    let local = le_u32(body, 1);
    let seq = le_u64(body, 5);
    let ts_event = le_u64(body, 13);
    let ts_ingest = le_u64(body, 21);
    let p = TICK_FIXED_LEN;
    let update = match kind {
        KIND_TRADE => {
            expect_len(body, TRADE_BODY_LEN, "trade")?;
            let side = match body[p + 16] {
                0 => Side::Unknown,
                1 => Side::Buy,
                2 => Side::Sell,
                s => return Err(BadRecord::TradeSide(s)),
            };
            Update::Trade(Trade { px: le_f64(body, p), sz: le_f64(body, p + 8), side })
        }
        KIND_QUOTE => {
            expect_len(body, QUOTE_BODY_LEN, "quote")?;
            Update::Quote(Quote {
                bid: le_f64(body, p),
                bid_sz: le_f64(body, p + 8),
                ask: le_f64(body, p + 16),
                ask_sz: le_f64(body, p + 24),
            })
        }
        _ => {
            if body.len() < BOOK_FIXED_LEN {
                return Err(BadRecord::ShortBook { len: body.len() });
            }
            let nb = le_u16(body, p) as usize;
            let na = le_u16(body, p + 2) as usize;
            let want = BOOK_FIXED_LEN + LEVEL_LEN * (nb + na);
            if body.len() != want {
                return Err(BadRecord::BookLength { len: body.len(), bids: nb, asks: na, want });
            }
            let level = |i: usize| {
                let at = BOOK_FIXED_LEN + LEVEL_LEN * i;
                Level { px: le_f64(body, at), sz: le_f64(body, at + 8) }
            };
            Update::Book(BookDelta { bids: (0..nb).map(level).collect(), asks: (nb..nb + na).map(level).collect() })
        }
    };
    Ok(TickRecord { local, seq, ts_event, ts_ingest, update })
}

fn expect_len(body: &[u8], want: usize, what: &'static str) -> Result<(), BadRecord> {
    if body.len() != want {
        return Err(BadRecord::Length { what, len: body.len(), want });
    }
    Ok(())
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The little-endian `u32` at `b[at..at + 4]`.
pub(super) fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le_f64(b: &[u8], at: usize) -> f64 {
    f64::from_bits(le_u64(b, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_castagnoli() {
        // The check value docs/TICKLOG.md quotes.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    /// docs/TICKLOG.md states the sizes this file implements.
    #[test]
    fn the_spec_states_these_sizes() {
        let spec = include_str!("../../../docs/TICKLOG.md");
        for line in [
            format!("## Segment header ({HEADER_LEN} bytes)"),
            "| 0      | 8    | `magic`      | `TICKLOG\\0` = `54 49 43 4B 4C 4F 47 00`".to_owned(),
            format!("| 8      | 2    | `version`    | u16, `{VERSION}`"),
            format!("Every tick body (kinds 1 to 3) starts with the same {TICK_FIXED_LEN} bytes:"),
            format!("#### Kind {KIND_SYMBOL}: symbol definition ({SYMBOL_FIXED_LEN} + `name_len` bytes)"),
            format!("#### Kind {KIND_TRADE}: trade ({TRADE_BODY_LEN} bytes)"),
            format!("#### Kind {KIND_QUOTE}: quote ({QUOTE_BODY_LEN} bytes)"),
            format!("With its {PREFIX_LEN}-byte prefix a quote takes {} bytes on disk.", PREFIX_LEN + QUOTE_BODY_LEN),
            format!("#### Kind {KIND_BOOK}: book delta ({BOOK_FIXED_LEN} + {LEVEL_LEN} × (`n_bids` + `n_asks`) bytes)"),
        ] {
            assert!(spec.contains(&line), "docs/TICKLOG.md does not say {line:?}");
        }
        assert_eq!(MAX_BODY_LEN, 1_048_576, "the spec says 1 MiB");
        assert_eq!((MAX_BODY_LEN - BOOK_FIXED_LEN) / LEVEL_LEN, 65_533);
        assert!(spec.contains("record at 65,533 levels in all"), "the book limit the spec states");
        assert_eq!(&MAGIC, b"\x54\x49\x43\x4B\x4C\x4F\x47\x00");
    }

    #[test]
    fn header_round_trip_and_faults() {
        let h = encode_header(7, 42);
        assert_eq!(check_header(&h), Ok(()));
        let cases: [(usize, u8, BadHeader); 4] = [
            (0, b'X', BadHeader::Magic),
            (8, 2, BadHeader::NewerVersion(2)),
            (10, 1, BadHeader::Flags(1)),
            (12, 33, BadHeader::HeaderLen(33)),
        ];
        for (at, byte, want) in cases {
            let mut bad = h;
            bad[at] = byte;
            let got = check_header(&bad).unwrap_err();
            assert_eq!(got.offset(), at as u64);
            assert_eq!(got, want);
        }
        let mut zero = h;
        zero[8] = 0;
        assert_eq!(check_header(&zero), Err(BadHeader::VersionZero));
        assert_eq!(check_header(&h[..HEADER_LEN - 1]), Err(BadHeader::Magic));
    }
}

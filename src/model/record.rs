//! The binary tick record: one tick, or one topic's whole state, in a
//! compact and versioned byte layout that every tickcast process shares.
//!
//! It exists because JSON is the wrong thing to put between two tickcast
//! processes: a sequencer publishes every sequenced tick to NATS in this
//! layout and answers snapshot requests with an image in it; an edge
//! decodes both; a feed handler may send the same records over `tcp://`
//! instead of JSON lines, which saves the parse (see BENCHMARKS.md). The
//! layout is specified in `docs/CLUSTER.md`, with this file its one
//! implementation; a test here checks the sizes the document states.
//!
//! # Layout (little-endian)
//! A record travels in a *frame*: `len u32`, then `len` bytes of record.
//! A NATS message or a `tcp://` stream holds one or more frames back to
//! back. A record is a fixed 36-byte head, the symbol, and the body of its
//! kind:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | version, [`VERSION`] |
//! | 1 | 1 | kind: 1 trade, 2 quote, 3 book, 4 image |
//! | 2 | 1 | flags: image only, bit 0 has a quote, bit 1 has a trade; else 0 |
//! | 3 | 1 | symbol length `n`, 1..=[`MAX_SYMBOL_LEN`] |
//! | 4 | 8 | epoch of the sequencer (0: not sequenced) |
//! | 12 | 8 | seq (0: not sequenced, e.g. from a feed handler) |
//! | 20 | 8 | ts_event, ns since the Unix epoch |
//! | 28 | 8 | ts_ingest, ns (0 from a feed handler: the server stamps it) |
//! | 36 | n | symbol, ASCII |
//!
//! Bodies: trade `px f64, sz f64, side u8` (0 unknown, 1 buy, 2 sell);
//! quote `bid, bid_sz, ask, ask_sz` (f64 each); book `nb u16, na u16`,
//! then `nb` bid and `na` ask levels of `px f64, sz f64`; image: the quote
//! (if flagged), the trade (if flagged), then a book body holding the
//! whole book, bids best first, asks best first.
//!
//! A record is decoded in full or refused with a [`RecordError`] that says
//! why: an unknown version or kind, a length that does not match, a bad
//! symbol, a price that is not finite, a size below zero, more levels than
//! [`MAX_BOOK_LEVELS`] a side. Nothing in a record can make a reader
//! allocate more than [`MAX_RECORD_LEN`] bytes' worth.
//!
//! Imports: nothing outside [`crate::model`].

use super::book::MAX_BOOK_LEVELS;
use super::symbol::{is_valid_symbol, MAX_SYMBOL_LEN};
use super::tick::{BookDelta, Level, Quote, Side, Trade, Update};

/// The layout version this build writes and reads.
pub const VERSION: u8 = 1;
/// Length of the fixed head, before the symbol.
pub const HEAD_LEN: usize = 36;
/// Length of a frame's length prefix.
pub const FRAME_PREFIX_LEN: usize = 4;
/// Largest record a reader accepts: a full image of [`MAX_BOOK_LEVELS`]
/// levels a side with quote and trade fits with room to spare.
pub const MAX_RECORD_LEN: usize = 1 << 20;

const KIND_TRADE: u8 = 1;
const KIND_QUOTE: u8 = 2;
const KIND_BOOK: u8 = 3;
const KIND_IMAGE: u8 = 4;
const FLAG_QUOTE: u8 = 1;
const FLAG_TRADE: u8 = 2;
const TRADE_LEN: usize = 17;
const QUOTE_LEN: usize = 32;
const LEVEL_LEN: usize = 16;

/// A topic's whole state after update `seq`: what a sequencer's snapshot
/// reply carries and what an edge installs before it applies the records
/// that follow.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Image {
    /// Seq of the last update applied (0: none yet).
    pub seq: u64,
    /// Event time of that update.
    pub ts_event: u64,
    /// Ingest time of that update.
    pub ts_ingest: u64,
    /// Last quote, if any.
    pub quote: Option<Quote>,
    /// Last trade, if any.
    pub trade: Option<Trade>,
    /// The whole book's bids, best (highest) first.
    pub bids: Vec<Level>,
    /// The whole book's asks, best (lowest) first.
    pub asks: Vec<Level>,
}

/// Why a node following a sequencer replaces a topic's state with an
/// [`Image`]; its clients are told with a `reset` notice naming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resync {
    /// The first image of a topic this node serves.
    Initial,
    /// A seq jumped: updates were lost between the sequencer and here.
    Gap,
    /// The sequencer restarted without its state: a new epoch.
    Epoch,
    /// This node lost its connection to the bus and came back.
    Reconnect,
}

/// What a record carries besides its head.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// One update of the symbol.
    Update(Update),
    /// The symbol's whole state (its `seq`, `ts_event` and `ts_ingest`
    /// are the record's).
    Image(Image),
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq)]
pub struct Record<'a> {
    /// The sequencer's epoch; 0 if not sequenced.
    pub epoch: u64,
    /// Per-symbol seq; 0 if not sequenced.
    pub seq: u64,
    /// The symbol, borrowed from the input.
    pub sym: &'a str,
    /// Event time, ns.
    pub ts_event: u64,
    /// Ingest time, ns; 0 if the sender left it to the server.
    pub ts_ingest: u64,
    /// The update or image.
    pub body: Body,
}

/// Why bytes are not a record; the text says what was wrong and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than the fixed head plus the symbol.
    #[error("record of {0} bytes is shorter than its head")]
    Short(usize),
    /// A version this build does not read.
    #[error("record version {0}, this build reads version {VERSION}")]
    Version(u8),
    /// Not one of the four kinds.
    #[error("unknown record kind {0}")]
    Kind(u8),
    /// Flags set that the kind does not define.
    #[error("record flags {0:#04x} not defined for its kind")]
    Flags(u8),
    /// The symbol is empty, too long, or has characters symbols cannot.
    #[error("record symbol is not a valid symbol")]
    Symbol,
    /// The body's length is not what its kind and counts make it.
    #[error("record body of {got} bytes, its kind and level counts make it {want}")]
    Length {
        /// Bytes present.
        got: usize,
        /// Bytes the kind and counts require.
        want: usize,
    },
    /// A trade side byte other than 0, 1, 2.
    #[error("trade side byte {0}, expected 0, 1 or 2")]
    Side(u8),
    /// A price that is NaN or infinite, or a size that is negative too.
    #[error("{0} is not a finite number (sizes also not negative)")]
    Number(&'static str),
    /// More than [`MAX_BOOK_LEVELS`] levels on a side.
    #[error("{0} levels on a side, at most {MAX_BOOK_LEVELS}")]
    TooManyLevels(usize),
    /// A book update with no level at all.
    #[error("book record with no level")]
    EmptyBook,
    /// A frame's length prefix over [`MAX_RECORD_LEN`] (or zero).
    #[error("frame length {0}: a record is 1 to {MAX_RECORD_LEN} bytes")]
    FrameLength(usize),
    /// A frame cut short: its prefix promises more bytes than are left.
    #[error("frame promises {want} bytes, {got} left")]
    Truncated {
        /// Bytes left in the input.
        got: usize,
        /// Bytes the prefix promised.
        want: usize,
    },
}

/// Appends a frame holding one tick record to `buf`.
///
/// `sym` must be a valid symbol and a book must have at most
/// [`MAX_BOOK_LEVELS`] levels a side (the engine's ticks always do); a
/// record breaking these would be refused by every reader.
pub fn encode_tick(buf: &mut Vec<u8>, epoch: u64, seq: u64, sym: &str, ts_event: u64, ts_ingest: u64, update: &Update) {
    let start = begin(buf);
    let kind = match update {
        Update::Trade(_) => KIND_TRADE,
        Update::Quote(_) => KIND_QUOTE,
        Update::Book(_) => KIND_BOOK,
    };
    head(buf, kind, 0, epoch, seq, sym, ts_event, ts_ingest);
    encode_body(buf, update);
    end(buf, start);
}

/// Appends a frame holding `image` of `sym` to `buf`.
pub fn encode_image(buf: &mut Vec<u8>, epoch: u64, sym: &str, image: &Image) {
    let start = begin(buf);
    let flags = if image.quote.is_some() { FLAG_QUOTE } else { 0 } | if image.trade.is_some() { FLAG_TRADE } else { 0 };
    head(buf, KIND_IMAGE, flags, epoch, image.seq, sym, image.ts_event, image.ts_ingest);
    if let Some(q) = &image.quote {
        quote(buf, q);
    }
    if let Some(t) = &image.trade {
        trade(buf, t);
    }
    levels(buf, &image.bids, &image.asks);
    end(buf, start);
}

/// Appends the body of a trade, quote or book update, as the layout above
/// gives it. The tick log's records carry the same bodies
/// (`docs/TICKLOG.md`), so its writer appends them with this too.
pub fn encode_body(buf: &mut Vec<u8>, update: &Update) {
    match update {
        Update::Trade(t) => trade(buf, t),
        Update::Quote(q) => quote(buf, q),
        Update::Book(b) => levels(buf, &b.bids, &b.asks),
    }
}

fn begin(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_PREFIX_LEN]);
    start
}

fn end(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start - FRAME_PREFIX_LEN) as u32;
    buf[start..start + FRAME_PREFIX_LEN].copy_from_slice(&len.to_le_bytes());
}

#[allow(clippy::too_many_arguments)]
fn head(buf: &mut Vec<u8>, kind: u8, flags: u8, epoch: u64, seq: u64, sym: &str, ts_event: u64, ts_ingest: u64) {
    buf.extend_from_slice(&[VERSION, kind, flags, sym.len().min(255) as u8]);
    for v in [epoch, seq, ts_event, ts_ingest] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&sym.as_bytes()[..sym.len().min(255)]);
}

fn trade(buf: &mut Vec<u8>, t: &Trade) {
    buf.extend_from_slice(&t.px.to_le_bytes());
    buf.extend_from_slice(&t.sz.to_le_bytes());
    buf.push(match t.side {
        Side::Unknown => 0,
        Side::Buy => 1,
        Side::Sell => 2,
    });
}

fn quote(buf: &mut Vec<u8>, q: &Quote) {
    for v in [q.bid, q.bid_sz, q.ask, q.ask_sz] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

fn levels(buf: &mut Vec<u8>, bids: &[Level], asks: &[Level]) {
    let nb = bids.len().min(u16::MAX as usize);
    let na = asks.len().min(u16::MAX as usize);
    buf.extend_from_slice(&(nb as u16).to_le_bytes());
    buf.extend_from_slice(&(na as u16).to_le_bytes());
    for l in bids[..nb].iter().chain(&asks[..na]) {
        buf.extend_from_slice(&l.px.to_le_bytes());
        buf.extend_from_slice(&l.sz.to_le_bytes());
    }
}

/// A frame's record and the input after it.
pub type Split<'a> = (&'a [u8], &'a [u8]);

/// Splits the first frame off `input`: its record, and the rest. `Ok(None)`
/// when `input` is empty.
pub fn next_frame(input: &[u8]) -> Result<Option<Split<'_>>, RecordError> {
    if input.is_empty() {
        return Ok(None);
    }
    if input.len() < FRAME_PREFIX_LEN {
        return Err(RecordError::Truncated { got: input.len(), want: FRAME_PREFIX_LEN });
    }
    let len = u32::from_le_bytes(input[..4].try_into().expect("4 bytes")) as usize;
    if len == 0 || len > MAX_RECORD_LEN {
        return Err(RecordError::FrameLength(len));
    }
    let rest = &input[FRAME_PREFIX_LEN..];
    if rest.len() < len {
        return Err(RecordError::Truncated { got: rest.len(), want: len });
    }
    Ok(Some(rest.split_at(len)))
}

/// A cursor over a record's bytes whose reads are bounds-checked once, up
/// front, by the length checks in [`decode`].
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn u16(&mut self) -> u16 {
        let v = u16::from_le_bytes(self.bytes[self.at..self.at + 2].try_into().expect("2 bytes"));
        self.at += 2;
        v
    }
    fn u64(&mut self) -> u64 {
        let v = u64::from_le_bytes(self.bytes[self.at..self.at + 8].try_into().expect("8 bytes"));
        self.at += 8;
        v
    }
    fn price(&mut self, field: &'static str) -> Result<f64, RecordError> {
        let v = f64::from_bits(self.u64());
        // +0.0 turns -0.0 into +0.0, as the JSON feed does.
        if v.is_finite() {
            Ok(v + 0.0)
        } else {
            Err(RecordError::Number(field))
        }
    }
    fn size(&mut self, field: &'static str) -> Result<f64, RecordError> {
        let v = self.price(field)?;
        if v >= 0.0 {
            Ok(v)
        } else {
            Err(RecordError::Number(field))
        }
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
    fn need(&self, want: usize) -> Result<(), RecordError> {
        if self.remaining() < want {
            Err(RecordError::Length { got: self.bytes.len(), want: self.at + want })
        } else {
            Ok(())
        }
    }
    fn trade(&mut self) -> Result<Trade, RecordError> {
        self.need(TRADE_LEN)?;
        let px = self.price("trade px")?;
        let sz = self.size("trade sz")?;
        let side = match self.bytes[self.at] {
            0 => Side::Unknown,
            1 => Side::Buy,
            2 => Side::Sell,
            s => return Err(RecordError::Side(s)),
        };
        self.at += 1;
        Ok(Trade { px, sz, side })
    }
    fn quote(&mut self) -> Result<Quote, RecordError> {
        self.need(QUOTE_LEN)?;
        Ok(Quote {
            bid: self.price("quote bid")?,
            bid_sz: self.size("quote bid_sz")?,
            ask: self.price("quote ask")?,
            ask_sz: self.size("quote ask_sz")?,
        })
    }
    fn levels(&mut self) -> Result<(Vec<Level>, Vec<Level>), RecordError> {
        self.need(4)?;
        let nb = self.u16() as usize;
        let na = self.u16() as usize;
        for n in [nb, na] {
            if n > MAX_BOOK_LEVELS {
                return Err(RecordError::TooManyLevels(n));
            }
        }
        let want = self.at + LEVEL_LEN * (nb + na);
        if self.bytes.len() != want {
            return Err(RecordError::Length { got: self.bytes.len(), want });
        }
        let mut side = |n: usize| -> Result<Vec<Level>, RecordError> {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(Level { px: self.price("level px")?, sz: self.size("level sz")? });
            }
            Ok(v)
        };
        let bids = side(nb)?;
        let asks = side(na)?;
        Ok((bids, asks))
    }
    fn end(&self) -> Result<(), RecordError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(RecordError::Length { got: self.bytes.len(), want: self.at })
        }
    }
}

/// Decodes one record (a frame's content, without its length prefix).
pub fn decode(bytes: &[u8]) -> Result<Record<'_>, RecordError> {
    if bytes.len() < HEAD_LEN {
        return Err(RecordError::Short(bytes.len()));
    }
    if bytes[0] != VERSION {
        return Err(RecordError::Version(bytes[0]));
    }
    let (kind, flags, sym_len) = (bytes[1], bytes[2], bytes[3] as usize);
    if !(KIND_TRADE..=KIND_IMAGE).contains(&kind) {
        return Err(RecordError::Kind(kind));
    }
    if (kind != KIND_IMAGE && flags != 0) || flags & !(FLAG_QUOTE | FLAG_TRADE) != 0 {
        return Err(RecordError::Flags(flags));
    }
    if sym_len == 0 || sym_len > MAX_SYMBOL_LEN {
        return Err(RecordError::Symbol);
    }
    if bytes.len() < HEAD_LEN + sym_len {
        return Err(RecordError::Short(bytes.len()));
    }
    let sym = std::str::from_utf8(&bytes[HEAD_LEN..HEAD_LEN + sym_len]).map_err(|_| RecordError::Symbol)?;
    if !is_valid_symbol(sym) {
        return Err(RecordError::Symbol);
    }
    let mut c = Cursor { bytes, at: 4 };
    let (epoch, seq, ts_event, ts_ingest) = (c.u64(), c.u64(), c.u64(), c.u64());
    c.at = HEAD_LEN + sym_len;
    let body = match kind {
        KIND_TRADE => {
            let t = c.trade()?;
            c.end()?;
            Body::Update(Update::Trade(t))
        }
        KIND_QUOTE => {
            let q = c.quote()?;
            c.end()?;
            Body::Update(Update::Quote(q))
        }
        KIND_BOOK => {
            let (bids, asks) = c.levels()?;
            if bids.is_empty() && asks.is_empty() {
                return Err(RecordError::EmptyBook);
            }
            Body::Update(Update::Book(BookDelta { bids, asks }))
        }
        _ => {
            let quote = if flags & FLAG_QUOTE != 0 { Some(c.quote()?) } else { None };
            let trade = if flags & FLAG_TRADE != 0 { Some(c.trade()?) } else { None };
            let (bids, asks) = c.levels()?;
            Body::Image(Image { seq, ts_event, ts_ingest, quote, trade, bids, asks })
        }
    };
    Ok(Record { epoch, seq, sym, ts_event, ts_ingest, body })
}

/// Every record in `input` (back-to-back frames), in order; stops at the
/// first bad frame, which is the last item.
pub fn decode_all(mut input: &[u8]) -> impl Iterator<Item = Result<Record<'_>, RecordError>> {
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed {
            return None;
        }
        match next_frame(input) {
            Ok(None) => None,
            Ok(Some((record, rest))) => {
                input = rest;
                let r = decode(record);
                failed = r.is_err();
                Some(r)
            }
            Err(e) => {
                failed = true;
                Some(Err(e))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> Record<'_> {
        let mut all: Vec<_> = decode_all(buf).collect();
        assert_eq!(all.len(), 1);
        all.pop().unwrap().unwrap()
    }

    #[test]
    fn ticks_round_trip_bit_for_bit_with_the_documented_sizes() {
        let updates = [
            Update::Trade(Trade { px: 0.1 + 0.2, sz: 3.0, side: Side::Sell }),
            Update::Quote(Quote { bid: 1.0, bid_sz: 2.0, ask: 1.5, ask_sz: 0.000123 }),
            Update::Book(BookDelta { bids: vec![Level { px: 9.0, sz: 0.0 }], asks: vec![Level { px: 10.0, sz: 1.0 }] }),
        ];
        let sizes = [HEAD_LEN + 5 + 17, HEAD_LEN + 5 + 32, HEAD_LEN + 5 + 4 + 32];
        for (u, size) in updates.iter().zip(sizes) {
            let mut buf = Vec::new();
            encode_tick(&mut buf, 7, 42, "BRK.B", 1_700_000_000_000_000_001, u64::MAX, u);
            assert_eq!(buf.len(), FRAME_PREFIX_LEN + size, "{u:?}");
            let r = one(&buf);
            assert_eq!(
                (r.epoch, r.seq, r.sym, r.ts_event, r.ts_ingest),
                (7, 42, "BRK.B", 1_700_000_000_000_000_001, u64::MAX)
            );
            assert_eq!(r.body, Body::Update(u.clone()));
        }
    }

    #[test]
    fn images_round_trip_with_and_without_quote_and_trade() {
        let full = Image {
            seq: 9,
            ts_event: 1,
            ts_ingest: 2,
            quote: Some(Quote { bid: 1.0, bid_sz: 2.0, ask: 1.5, ask_sz: 3.0 }),
            trade: Some(Trade { px: 1.25, sz: 1.0, side: Side::Buy }),
            bids: (0..100).map(|i| Level { px: 100.0 - i as f64, sz: 1.0 }).collect(),
            asks: vec![Level { px: 101.0, sz: 2.0 }],
        };
        for image in [full, Image::default()] {
            let mut buf = Vec::new();
            encode_image(&mut buf, 3, "ETHUSDT", &image);
            let r = one(&buf);
            assert_eq!((r.epoch, r.seq), (3, image.seq));
            assert_eq!(r.body, Body::Image(image));
        }
    }

    #[test]
    fn several_frames_decode_in_order() {
        let mut buf = Vec::new();
        for seq in 1..=3 {
            encode_tick(&mut buf, 1, seq, "A", 0, 0, &Update::Trade(Trade { px: 1.0, sz: 1.0, side: Side::Unknown }));
        }
        let seqs: Vec<u64> = decode_all(&buf).map(|r| r.unwrap().seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn bad_records_are_refused_with_the_reason() {
        let mut good = Vec::new();
        encode_tick(
            &mut good,
            1,
            1,
            "AAPL",
            0,
            0,
            &Update::Quote(Quote { bid: 1.0, bid_sz: 1.0, ask: 2.0, ask_sz: 1.0 }),
        );
        let record = &good[FRAME_PREFIX_LEN..];
        let mut bad = record.to_vec();
        bad[0] = 2;
        assert_eq!(decode(&bad), Err(RecordError::Version(2)));
        let mut bad = record.to_vec();
        bad[1] = 9;
        assert_eq!(decode(&bad), Err(RecordError::Kind(9)));
        let mut bad = record.to_vec();
        bad[2] = 1;
        assert_eq!(decode(&bad), Err(RecordError::Flags(1)));
        let mut bad = record.to_vec();
        bad[HEAD_LEN] = b' ';
        assert_eq!(decode(&bad), Err(RecordError::Symbol));
        let mut bad = record.to_vec();
        bad.push(0);
        assert!(matches!(decode(&bad), Err(RecordError::Length { .. })));
        assert!(matches!(decode(&record[..record.len() - 1]), Err(RecordError::Length { .. })));
        let mut bad = record.to_vec();
        let at = HEAD_LEN + 4;
        bad[at..at + 8].copy_from_slice(&f64::NAN.to_le_bytes());
        assert_eq!(decode(&bad), Err(RecordError::Number("quote bid")));
        bad[at + 8..at + 16].copy_from_slice(&(-1.0f64).to_le_bytes());
        bad[at..at + 8].copy_from_slice(&1.0f64.to_le_bytes());
        assert_eq!(decode(&bad), Err(RecordError::Number("quote bid_sz")));
        assert_eq!(decode(&record[..10]), Err(RecordError::Short(10)));
        // Frames: a zero, huge or cut-short length prefix.
        assert_eq!(next_frame(&[0, 0, 0, 0]), Err(RecordError::FrameLength(0)));
        assert_eq!(next_frame(&[0xff, 0xff, 0xff, 0xff]), Err(RecordError::FrameLength(u32::MAX as usize)));
        assert!(matches!(next_frame(&good[..good.len() - 1]), Err(RecordError::Truncated { .. })));
        // Level counts past the bound are refused before any allocation.
        let mut book = Vec::new();
        encode_tick(
            &mut book,
            1,
            1,
            "A",
            0,
            0,
            &Update::Book(BookDelta { bids: vec![Level { px: 1.0, sz: 1.0 }], asks: vec![] }),
        );
        let mut bad = book[FRAME_PREFIX_LEN..].to_vec();
        let at = HEAD_LEN + 1;
        bad[at..at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(decode(&bad), Err(RecordError::TooManyLevels(65535)));
    }

    #[test]
    fn negative_zero_is_normalized_as_the_json_feed_does() {
        let mut buf = Vec::new();
        encode_tick(&mut buf, 0, 0, "A", 0, 0, &Update::Trade(Trade { px: -0.0, sz: 1.0, side: Side::Unknown }));
        let Body::Update(Update::Trade(t)) = one(&buf).body else { panic!() };
        assert_eq!(t.px.to_bits(), 0.0f64.to_bits());
    }
}

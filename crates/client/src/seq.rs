//! The per-symbol sequence tracker: what a client keeps to know it missed
//! nothing, or was told what it missed.
//!
//! tickcast numbers every update of a symbol: `seq` goes up by one. A
//! snapshot carries the seq of the last update it includes, so the next
//! update follows it. A client that falls behind gets a `conflated` entry
//! per symbol, `from_seq..=to_seq`, starting right after the last seq it
//! received, and then a snapshot at `to_seq`; after that, updates follow
//! the snapshot again (`docs/PROTOCOL.md`, "Slow consumers"). A `reset`
//! of a symbol (its state was replaced upstream) drops what the client
//! knows of it: the snapshot that follows, at the reset's seq, is the new
//! baseline even when its seq is lower than the last one (`docs/PROTOCOL.md`,
//! "Resets").
//!
//! [`SeqTracker`] checks each message against those rules and says what
//! it was ([`SeqEvent`]); what counts as an error is the caller's choice (a
//! healthy subscriber must never see `conflated`; a peer server that sends
//! no snapshots starts each symbol at its first update).
//!
//! It is on the load generator's hot path (millions of updates a second):
//! a subscriber has a handful of symbols, so it keeps them in a vector and
//! finds them by a linear scan on an 8-byte tag, with no hashing and no
//! allocation after a symbol's first message.
//!
//! Imports: nothing.

/// What a message did to its symbol's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqEvent {
    /// The symbol's first message: its seq is the baseline.
    First,
    /// An update that followed the last seq by one.
    InOrder,
    /// An update that did not follow the last seq by one, with no
    /// `conflated` announcing it: a lost, repeated or reordered update.
    /// The tracker takes `got` as the new last seq, so a gap is reported
    /// once, not again for every update after it.
    Gap {
        /// The seq that should have come: last + 1.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// An update while a recovery snapshot is due (after a `conflated`
    /// entry or a `reset`, before its snapshot). The seq is not taken.
    BeforeRecovery,
    /// A `conflated` entry that starts right after the last seq: the gap is
    /// announced, and a snapshot at its `to_seq` is due.
    Announced,
    /// A `conflated` entry that does not start right after the last seq,
    /// ends before it starts, names a symbol never seen, or comes while a
    /// recovery snapshot is still due. Nothing is taken.
    BadAnnouncement,
    /// A `reset`: the symbol's state is dropped, whatever its last seq,
    /// and a snapshot at the reset's seq is due. A symbol never seen may be
    /// reset too: its snapshot is then its first message.
    Reset,
    /// A `reset` while a recovery snapshot is still due (after a
    /// `conflated` entry or another `reset`): the snapshot promised did not
    /// come. The reset is taken all the same: its snapshot is now the one
    /// due.
    BadReset,
    /// The snapshot a `conflated` entry promised, at its `to_seq`, or the
    /// one a `reset` promised, at its seq.
    Recovered,
    /// A recovery snapshot at another seq than the `conflated` entry's
    /// `to_seq` or the `reset`'s seq. Its seq is taken as the new baseline.
    WrongRecovery {
        /// The `to_seq` or seq announced.
        expected: u64,
        /// The snapshot's seq.
        got: u64,
    },
    /// A snapshot of a known symbol that no `conflated` entry announced
    /// (e.g. after a re-subscribe). Its seq is taken as the new baseline.
    Rebaseline,
}

/// A symbol's place in its sequence, found by the symbol's first 8 bytes as
/// a number: most lookups are then settled by one integer compare instead
/// of a `memcmp` call, which cost the load generator 5 % of its time at 2M
/// msgs/s.
#[derive(Debug)]
struct Entry {
    /// [`sym_tag`] of `sym`.
    tag: u64,
    sym: Box<str>,
    /// Last seq received (or announced by a `conflated` entry or a
    /// `reset`).
    last: u64,
    /// A `conflated` entry or a `reset` was received and its snapshot has
    /// not come.
    recovery_due: bool,
}

/// Per-symbol sequence state of one connection.
#[derive(Debug, Default)]
pub struct SeqTracker {
    entries: Vec<Entry>,
}

impl SeqTracker {
    /// A tracker with room for `symbols` symbols before it allocates again.
    pub fn with_capacity(symbols: usize) -> SeqTracker {
        SeqTracker { entries: Vec::with_capacity(symbols) }
    }

    /// Checks a market update (trade, quote or book) of `sym` at `seq`.
    #[inline]
    pub fn update(&mut self, sym: &str, seq: u64) -> SeqEvent {
        match self.find(sym) {
            Some(entry) if entry.recovery_due => SeqEvent::BeforeRecovery,
            Some(entry) => {
                let expected = entry.last.wrapping_add(1);
                entry.last = seq;
                if seq == expected {
                    SeqEvent::InOrder
                } else {
                    SeqEvent::Gap { expected, got: seq }
                }
            }
            None => {
                self.insert(sym, seq, false);
                SeqEvent::First
            }
        }
    }

    /// Checks a snapshot of `sym` at `seq`, which becomes the baseline the
    /// next update must follow.
    pub fn snapshot(&mut self, sym: &str, seq: u64) -> SeqEvent {
        match self.find(sym) {
            Some(entry) => {
                let event = match (entry.recovery_due, entry.last) {
                    (true, expected) if expected == seq => SeqEvent::Recovered,
                    (true, expected) => SeqEvent::WrongRecovery { expected, got: seq },
                    (false, _) => SeqEvent::Rebaseline,
                };
                entry.last = seq;
                entry.recovery_due = false;
                event
            }
            None => {
                self.insert(sym, seq, false);
                SeqEvent::First
            }
        }
    }

    /// Checks one entry of a `conflated` message: `sym`'s updates
    /// `from_seq..=to_seq` were skipped.
    pub fn conflated(&mut self, sym: &str, from_seq: u64, to_seq: u64) -> SeqEvent {
        match self.find(sym) {
            Some(entry) if !entry.recovery_due && from_seq == entry.last.wrapping_add(1) && to_seq >= from_seq => {
                entry.last = to_seq;
                entry.recovery_due = true;
                SeqEvent::Announced
            }
            _ => SeqEvent::BadAnnouncement,
        }
    }

    /// Checks a `reset` of `sym`: its snapshot at `seq` comes next, and
    /// becomes the baseline even if `seq` is not above the last seq (the
    /// sequencer may have restarted).
    pub fn reset(&mut self, sym: &str, seq: u64) -> SeqEvent {
        match self.find(sym) {
            Some(entry) => {
                let event = if entry.recovery_due { SeqEvent::BadReset } else { SeqEvent::Reset };
                entry.last = seq;
                entry.recovery_due = true;
                event
            }
            None => {
                self.insert(sym, seq, true);
                SeqEvent::Reset
            }
        }
    }

    /// The last seq of `sym` (received, or announced by a `conflated`
    /// entry or a `reset` whose snapshot is due), if it was seen.
    pub fn last(&self, sym: &str) -> Option<u64> {
        let tag = sym_tag(sym);
        self.entries.iter().find(|e| same(e, tag, sym)).map(|e| e.last)
    }

    /// Symbols seen.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no symbol was seen yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `sym`'s entry, if it has one.
    #[inline]
    fn find(&mut self, sym: &str) -> Option<&mut Entry> {
        let tag = sym_tag(sym);
        self.entries.iter_mut().find(|e| same(e, tag, sym))
    }

    fn insert(&mut self, sym: &str, seq: u64, recovery_due: bool) {
        self.entries.push(Entry { tag: sym_tag(sym), sym: sym.into(), last: seq, recovery_due });
    }
}

/// Whether `entry` is `sym`'s, given `tag = sym_tag(sym)`: equal tags and
/// lengths settle symbols of 8 bytes or fewer; longer ones compare the rest.
#[inline]
fn same(entry: &Entry, tag: u64, sym: &str) -> bool {
    entry.tag == tag
        && entry.sym.len() == sym.len()
        && (sym.len() <= 8 || entry.sym.as_bytes()[8..] == sym.as_bytes()[8..])
}

/// Up to the first 8 bytes of `sym`, zero-padded, as a number; symbols of
/// different tags differ, and symbols of 8 bytes or fewer with equal tags
/// and lengths are equal.
#[inline]
fn sym_tag(sym: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let n = sym.len().min(8);
    bytes[..n].copy_from_slice(&sym.as_bytes()[..n]);
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_told_apart_by_tag_length_and_tail() {
        let names = ["AB", "AB\0", "BTC-USDT", "BTC-USDT-PERP", "BTC-USDT-SWAP", "S007"];
        let mut seqs = SeqTracker::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            assert_eq!(seqs.snapshot(name, 10 * i as u64), SeqEvent::First);
        }
        assert_eq!(seqs.len(), names.len(), "each name has its own entry");
        for (i, name) in names.iter().enumerate() {
            assert_eq!(seqs.update(name, 10 * i as u64 + 1), SeqEvent::InOrder, "{name}");
        }
        assert_eq!(seqs.update("BTC-USDT-SWAP", 99), SeqEvent::Gap { expected: 42, got: 99 });
        assert_eq!(seqs.update("BTC-USDT-SWAP", 100), SeqEvent::InOrder, "a gap is reported once");
        assert_eq!(seqs.last("BTC-USDT-PERP"), Some(31), "its prefix twin is untouched");
        assert_eq!(seqs.last("BTC-USDT-"), None);
        assert_eq!(seqs.last("A"), None);
    }

    #[test]
    fn a_peer_without_snapshots_starts_at_the_first_update() {
        let mut seqs = SeqTracker::default();
        assert!(seqs.is_empty());
        assert_eq!(seqs.update("AAPL", 7), SeqEvent::First);
        assert_eq!(seqs.update("AAPL", 8), SeqEvent::InOrder);
        assert_eq!(seqs.update("AAPL", 8), SeqEvent::Gap { expected: 9, got: 8 }, "a repeat");
    }

    #[test]
    fn an_announced_gap_is_healed_by_the_snapshot_at_its_end() {
        let mut seqs = SeqTracker::default();
        assert_eq!(seqs.snapshot("AAPL", 2), SeqEvent::First);
        assert_eq!(seqs.conflated("MSFT", 1, 2), SeqEvent::BadAnnouncement, "never seen");
        assert_eq!(seqs.conflated("AAPL", 4, 9), SeqEvent::BadAnnouncement, "does not follow 2");
        assert_eq!(seqs.conflated("AAPL", 3, 2), SeqEvent::BadAnnouncement, "ends before it starts");
        assert_eq!(seqs.conflated("AAPL", 3, 9), SeqEvent::Announced);
        assert_eq!(seqs.conflated("AAPL", 10, 11), SeqEvent::BadAnnouncement, "named again before its snapshot");
        assert_eq!(seqs.update("AAPL", 10), SeqEvent::BeforeRecovery);
        assert_eq!(seqs.snapshot("AAPL", 9), SeqEvent::Recovered);
        assert_eq!(seqs.update("AAPL", 10), SeqEvent::InOrder);
        assert_eq!(seqs.snapshot("AAPL", 20), SeqEvent::Rebaseline);
        assert_eq!(seqs.conflated("AAPL", 21, 25), SeqEvent::Announced);
        assert_eq!(seqs.snapshot("AAPL", 24), SeqEvent::WrongRecovery { expected: 25, got: 24 });
        assert_eq!(seqs.update("AAPL", 25), SeqEvent::InOrder, "the snapshot is the new baseline");
    }

    #[test]
    fn a_reset_makes_its_snapshot_the_baseline_even_below_the_last_seq() {
        let mut seqs = SeqTracker::default();
        assert_eq!(seqs.snapshot("AAPL", 2), SeqEvent::First);
        assert_eq!(seqs.update("AAPL", 3), SeqEvent::InOrder);
        // An epoch change: the sequencer restarted and counts from 1 again.
        assert_eq!(seqs.reset("AAPL", 1), SeqEvent::Reset);
        assert_eq!(seqs.last("AAPL"), Some(1));
        assert_eq!(seqs.update("AAPL", 2), SeqEvent::BeforeRecovery, "no update before the snapshot");
        assert_eq!(seqs.conflated("AAPL", 2, 5), SeqEvent::BadAnnouncement, "nor a conflated entry");
        assert_eq!(seqs.snapshot("AAPL", 1), SeqEvent::Recovered);
        assert_eq!(seqs.update("AAPL", 2), SeqEvent::InOrder);
        // A gap upstream: the snapshot is ahead of the last seq.
        assert_eq!(seqs.reset("AAPL", 1500), SeqEvent::Reset);
        assert_eq!(seqs.snapshot("AAPL", 1499), SeqEvent::WrongRecovery { expected: 1500, got: 1499 });
        assert_eq!(seqs.update("AAPL", 1500), SeqEvent::InOrder, "the snapshot is the new baseline");
        // A reset whose snapshot has not come, reset again: the promise was
        // broken, the second reset's snapshot is the one due.
        assert_eq!(seqs.reset("AAPL", 7), SeqEvent::Reset);
        assert_eq!(seqs.reset("AAPL", 9), SeqEvent::BadReset);
        assert_eq!(seqs.snapshot("AAPL", 9), SeqEvent::Recovered);
        // So is a reset while a conflated entry's snapshot is due.
        assert_eq!(seqs.conflated("AAPL", 10, 12), SeqEvent::Announced);
        assert_eq!(seqs.reset("AAPL", 3), SeqEvent::BadReset);
        assert_eq!(seqs.snapshot("AAPL", 3), SeqEvent::Recovered);
        // A symbol never seen: its reset's snapshot is its first message.
        assert_eq!(seqs.reset("MSFT", 40), SeqEvent::Reset);
        assert_eq!(seqs.update("MSFT", 41), SeqEvent::BeforeRecovery);
        assert_eq!(seqs.snapshot("MSFT", 40), SeqEvent::Recovered);
        assert_eq!(seqs.update("MSFT", 41), SeqEvent::InOrder);
        assert_eq!(seqs.last("AAPL"), Some(3), "one symbol's reset leaves the other alone");
    }
}

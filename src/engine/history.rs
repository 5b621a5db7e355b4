//! Per-topic history: the last updates of each symbol, kept as the frames
//! the engine already encoded for them, so that a client that reconnects
//! with `from_seq` gets exactly what it missed at the cost of a reference
//! count per frame and no encoding (see "Resume" in `subscriptions.rs`).
//!
//! # What is kept
//! A [`Track`] is the frames one (depth, encoding) audience of one topic
//! receives, in seq order with no hole: every update of the topic since the
//! track began. A topic keeps a track for each (depth, encoding) it
//! encodes for a subscriber, and keeps encoding into it for
//! [`HistoryPolicy::keep`] after that audience's last subscriber left, so a
//! client that drops off and comes back within that window resumes. No
//! other (depth, encoding) is encoded for history: an unused pair costs
//! nothing, and a resume at it gets `reset` reason `history` and a
//! snapshot.
//!
//! # Bounds
//! Three, checked where a frame is added (and by age in the engine's
//! sweep, for quiet symbols):
//! - age: frames older than [`HistoryPolicy::keep`] go (`--history`);
//! - count: at most [`HistoryPolicy::max_frames`] frames per track
//!   (`--history-frames`);
//! - bytes, over every track of every topic: [`HistoryPolicy::max_bytes`]
//!   (`--history-bytes`). At the bound, the track being added to gives up
//!   its oldest frames: the symbols that tick pay for their history, and a
//!   quiet symbol's short history survives a busy one.
//!
//! A frame shared by several tracks (a trade's frame is the same at every
//! depth) is counted in each: the byte figure is an upper bound of what
//! history holds alive.
//!
//! # Growing without a stall
//! A track's entries live in [`Chunks`]: blocks that are allocated once
//! and never moved, each as large as the track was when it was added (16
//! to 1,024 entries), with one emptied block kept to be refilled. A track
//! grows by one small allocation, never by copying what it holds: a
//! `VecDeque` that doubled copied all it held into fresh memory on the
//! engine thread, and the tracks of symbols that tick at the same rate
//! doubled together (BENCHMARKS.md, "History and resume", d).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

/// Bytes each kept frame costs beyond its payload: its entry in the
/// track's ring (seq, time, the `Bytes` handle) and the frame's own
/// allocation header, rounded up.
pub const ENTRY_OVERHEAD: usize = 64;

/// How much history to keep (`--history`, `--history-frames`,
/// `--history-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// How far back frames are kept. Zero: no history.
    pub keep: Duration,
    /// How long a session that ended holds its tracks (and keeps them
    /// encoded) for its resume.
    pub linger: Duration,
    /// Most frames one track keeps.
    pub max_frames: usize,
    /// Most bytes all tracks together keep.
    pub max_bytes: usize,
}

impl HistoryPolicy {
    /// No history at all: every resume gets a snapshot.
    pub const OFF: HistoryPolicy =
        HistoryPolicy { keep: Duration::ZERO, linger: Duration::ZERO, max_frames: 0, max_bytes: 0 };

    /// Whether any history is kept.
    pub fn enabled(&self) -> bool {
        !self.keep.is_zero() && self.max_frames > 0 && self.max_bytes > 0
    }
}

impl Default for HistoryPolicy {
    /// The flags' defaults: five minutes, held a minute after a drop,
    /// 100,000 frames a track, 256 MiB.
    fn default() -> Self {
        HistoryPolicy {
            keep: Duration::from_secs(300),
            linger: Duration::from_secs(60),
            max_frames: 100_000,
            max_bytes: 256 << 20,
        }
    }
}

/// What all tracks hold together, kept by the engine thread and published
/// to `/metrics` once per batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HistoryTotals {
    /// Bytes held, payload plus [`ENTRY_OVERHEAD`] per frame.
    pub bytes: usize,
    /// Frames held.
    pub frames: usize,
    /// Frames let go by a bound since the last time this was read.
    pub evicted: u64,
}

/// One kept frame.
#[derive(Debug)]
struct Entry {
    seq: u64,
    /// The engine's clock when it was kept (ns since the engine started).
    at: u64,
    frame: Bytes,
}

/// Entries in the first block of a track's [`Chunks`].
const CHUNK_MIN: usize = 16;
/// Most entries in one block of a track's [`Chunks`] (48 KiB): a track
/// past this size grows (and, evicting, recycles) one block of this size
/// at a time.
const CHUNK_MAX: usize = 1024;

/// A track's entries, oldest first, in blocks that are never reallocated:
/// pushing at the back and popping at the front never copies an entry
/// (see "Growing without a stall" above). Each new block is as large as
/// the whole track (from [`CHUNK_MIN`] up to [`CHUNK_MAX`]), so a quiet
/// symbol's track stays small, and the slack is at most what a doubling
/// `VecDeque` would have.
#[derive(Debug, Default)]
struct Chunks {
    /// Blocks, oldest first; all but the last are filled to their
    /// capacity at the time they were left (the front one may have been
    /// popped from). Each block's `VecDeque` is never pushed past its
    /// capacity, so it never reallocates.
    blocks: VecDeque<VecDeque<Entry>>,
    /// Entries over all blocks.
    len: usize,
    /// The last block emptied at the front, kept to be the next block at
    /// the back: a track evicting at a bound allocates nothing.
    spare: Option<VecDeque<Entry>>,
    /// Blocks allocated so far (tests check that eviction reuses them).
    #[cfg(test)]
    allocated: usize,
}

impl Chunks {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn front(&self) -> Option<&Entry> {
        self.blocks.front().and_then(VecDeque::front)
    }

    #[inline]
    fn push_back(&mut self, entry: Entry) {
        let room = self.blocks.back().is_some_and(|b| b.len() < b.capacity());
        if !room {
            let want = self.len.clamp(CHUNK_MIN, CHUNK_MAX);
            let block = match self.spare.take() {
                Some(spare) if spare.capacity() >= want => spare,
                _ => {
                    #[cfg(test)]
                    {
                        self.allocated += 1;
                    }
                    VecDeque::with_capacity(want)
                }
            };
            self.blocks.push_back(block);
        }
        if let Some(back) = self.blocks.back_mut() {
            back.push_back(entry);
            self.len += 1;
        }
    }

    #[inline]
    fn pop_front(&mut self) -> Option<Entry> {
        let front = self.blocks.front_mut()?;
        let entry = front.pop_front();
        if front.is_empty() {
            if let Some(block) = self.blocks.pop_front() {
                if self.spare.as_ref().is_none_or(|s| s.capacity() < block.capacity()) {
                    self.spare = Some(block);
                }
            }
        }
        if entry.is_some() {
            self.len -= 1;
        }
        entry
    }

    /// Drops every entry and gives every block back.
    fn clear(&mut self) {
        *self = Chunks::default();
    }

    /// The entries after the first `skip` (`skip <= len`), oldest first.
    fn iter_from(&self, mut skip: usize) -> impl Iterator<Item = &Entry> + '_ {
        let mut first = 0;
        for block in &self.blocks {
            if skip < block.len() {
                break;
            }
            skip -= block.len();
            first += 1;
        }
        let blocks = self.blocks.range(first.min(self.blocks.len())..);
        blocks.enumerate().flat_map(move |(i, b)| b.range(if i == 0 { skip.min(b.len()) } else { 0 }..))
    }
}

/// The frames of one (depth, encoding) audience of a topic, gapless in seq.
#[derive(Debug)]
pub struct Track {
    entries: Chunks,
    /// The seq the next frame must carry: the track covers
    /// `[next_seq - entries.len(), next_seq - 1]`.
    next_seq: u64,
    /// Bytes this track holds (payload plus overhead).
    bytes: usize,
    /// Until when (engine clock, ns) the track is kept even with no
    /// subscriber: the latest hold of a subscriber that dropped off, or of
    /// a rewind about to join it. 0: none.
    held_until: u64,
}

impl Track {
    /// An empty track for a topic whose last update has seq `seq`.
    pub fn new(seq: u64) -> Track {
        Track { entries: Chunks::default(), next_seq: seq + 1, bytes: 0, held_until: 0 }
    }

    /// Keeps `frame`, the update `seq`, kept at `at`, then applies the
    /// bounds. A seq that does not follow the last one (which the engine
    /// never produces) starts the track over rather than leave a hole.
    #[inline]
    pub fn push(&mut self, seq: u64, at: u64, frame: &Bytes, policy: &HistoryPolicy, totals: &mut HistoryTotals) {
        if seq != self.next_seq {
            self.clear(seq - 1, totals);
        }
        let size = frame.len() + ENTRY_OVERHEAD;
        self.entries.push_back(Entry { seq, at, frame: frame.clone() });
        self.next_seq = seq + 1;
        self.bytes += size;
        totals.bytes += size;
        totals.frames += 1;
        let too_old = at.saturating_sub(policy.keep.as_nanos() as u64);
        while let Some(front) = self.entries.front() {
            let over = self.entries.len() > policy.max_frames || totals.bytes > policy.max_bytes || front.at < too_old;
            if !over {
                break;
            }
            self.pop(totals);
        }
    }

    /// Lets go of frames kept before `before` (engine clock, ns); returns
    /// whether the track is now empty.
    pub fn expire(&mut self, before: u64, totals: &mut HistoryTotals) -> bool {
        while self.entries.front().is_some_and(|e| e.at < before) {
            self.pop(totals);
        }
        if self.entries.is_empty() {
            // A quiet symbol: give its blocks back too.
            self.entries.clear();
        }
        self.entries.is_empty()
    }

    fn pop(&mut self, totals: &mut HistoryTotals) {
        if let Some(e) = self.entries.pop_front() {
            let size = e.frame.len() + ENTRY_OVERHEAD;
            self.bytes -= size;
            totals.bytes -= size;
            totals.frames -= 1;
            totals.evicted += 1;
        }
    }

    /// Drops every frame; the track goes on from the update after `seq`
    /// (a topic whose state was replaced, on a cluster edge).
    pub fn clear(&mut self, seq: u64, totals: &mut HistoryTotals) {
        totals.bytes -= self.bytes;
        totals.frames -= self.entries.len();
        self.entries.clear();
        self.bytes = 0;
        self.next_seq = seq + 1;
    }

    /// The frames of the updates after `seq`, or `None` if the track does
    /// not reach back that far (or `seq` is past its end).
    pub fn since(&self, seq: u64) -> Option<impl Iterator<Item = (u64, &Bytes)> + '_> {
        let first = self.next_seq - self.entries.len() as u64;
        if seq + 1 < first || seq >= self.next_seq {
            return None;
        }
        let skip = (seq + 1 - first) as usize;
        Some(self.entries.iter_from(skip).map(|e| (e.seq, &e.frame)))
    }

    /// The oldest seq it holds, or the next one if it holds none.
    pub fn first_seq(&self) -> u64 {
        self.next_seq - self.entries.len() as u64
    }

    /// Bytes it holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps the track for at least `hold` from `now`, subscribers or not
    /// (a subscriber dropped off, or a rewind will join it).
    pub fn hold(&mut self, now: u64, hold: Duration) {
        self.held_until = self.held_until.max(now + hold.as_nanos() as u64);
    }

    /// Whether a hold still keeps it at `now`.
    pub fn held(&self, now: u64) -> bool {
        now < self.held_until
    }

    /// Drops every frame, counting them out of `totals`.
    pub fn release(mut self, totals: &mut HistoryTotals) {
        let seq = self.next_seq - 1;
        self.clear(seq, totals);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    fn seqs(t: &Track, from: u64) -> Option<Vec<u64>> {
        t.since(from).map(|it| it.map(|(s, _)| s).collect())
    }

    #[test]
    fn a_track_answers_exactly_the_updates_after_a_seq_it_reaches() {
        let policy = HistoryPolicy::default();
        let mut totals = HistoryTotals::default();
        let mut t = Track::new(10);
        for seq in 11..=15 {
            t.push(seq, seq * 1000, &frame(10), &policy, &mut totals);
        }
        assert_eq!(seqs(&t, 12), Some(vec![13, 14, 15]));
        assert_eq!(seqs(&t, 10), Some(vec![11, 12, 13, 14, 15]), "the seq just before the first frame");
        assert_eq!(seqs(&t, 15), Some(vec![]), "nothing missed");
        assert_eq!(seqs(&t, 9), None, "reaches back to 10 only");
        assert_eq!(seqs(&t, 16), None, "past the end");
        assert_eq!((totals.frames, totals.bytes), (5, 5 * (10 + ENTRY_OVERHEAD)));
        assert_eq!(Track::new(0).since(0).map(|i| i.count()), Some(0), "an empty track at its seq");
    }

    #[test]
    fn each_bound_evicts_oldest_first_and_counts() {
        let mut totals = HistoryTotals::default();
        let by_count = HistoryPolicy { max_frames: 3, ..HistoryPolicy::default() };
        let mut t = Track::new(0);
        for seq in 1..=5 {
            t.push(seq, 0, &frame(1), &by_count, &mut totals);
        }
        assert_eq!((t.first_seq(), totals.frames, totals.evicted), (3, 3, 2));

        let mut totals = HistoryTotals::default();
        let by_bytes = HistoryPolicy { max_bytes: 2 * (100 + ENTRY_OVERHEAD), ..HistoryPolicy::default() };
        let mut t = Track::new(0);
        for seq in 1..=4 {
            t.push(seq, 0, &frame(100), &by_bytes, &mut totals);
        }
        assert_eq!((t.first_seq(), totals.frames), (3, 2));
        assert!(totals.bytes <= by_bytes.max_bytes);

        let mut totals = HistoryTotals::default();
        let by_age = HistoryPolicy { keep: Duration::from_nanos(100), ..HistoryPolicy::default() };
        let mut t = Track::new(0);
        for (seq, at) in [(1, 1_000), (2, 1_050), (3, 1_120), (4, 1_200)] {
            t.push(seq, at, &frame(1), &by_age, &mut totals);
        }
        assert_eq!(t.first_seq(), 3, "frames older than 100 ns before the newest are gone");
        assert!(!t.expire(1_150, &mut totals));
        assert_eq!(t.first_seq(), 4);
        assert!(t.expire(10_000, &mut totals));
        assert_eq!((t.first_seq(), totals.frames, totals.bytes), (5, 0, 0));
    }

    #[test]
    fn a_hole_or_a_clear_starts_over_and_release_gives_the_bytes_back() {
        let policy = HistoryPolicy::default();
        let mut totals = HistoryTotals::default();
        let mut t = Track::new(0);
        t.push(1, 0, &frame(5), &policy, &mut totals);
        t.push(7, 0, &frame(5), &policy, &mut totals);
        assert_eq!((t.first_seq(), seqs(&t, 6)), (7, Some(vec![7])));
        t.clear(20, &mut totals);
        assert_eq!((t.first_seq(), totals.frames, totals.bytes), (21, 0, 0));
        t.push(21, 0, &frame(5), &policy, &mut totals);
        t.release(&mut totals);
        assert_eq!((totals.frames, totals.bytes), (0, 0));
    }

    #[test]
    fn chunks_keep_order_across_blocks_and_never_move_an_entry() {
        let entry = |seq| Entry { seq, at: 0, frame: Bytes::new() };
        let mut chunks = Chunks::default();
        let mut model = VecDeque::new();
        let mut next = 0;
        // Grow to 5,000, shrink to 100, grow past 3,000 again, then evict
        // one per push as a track at its bound does.
        for (pushes, pops) in [(5_000, 0), (0, 4_900), (3_000, 0), (10_000, 10_000)] {
            for i in 0..pushes.max(pops) {
                if i < pushes {
                    let block_ptrs: Vec<_> = chunks.blocks.iter().map(|b| b.as_slices().0.as_ptr()).collect();
                    chunks.push_back(entry(next));
                    model.push_back(next);
                    next += 1;
                    let moved = chunks.blocks.iter().zip(&block_ptrs).any(|(b, &p)| b.as_slices().0.as_ptr() != p);
                    assert!(!moved, "a push reallocated a block");
                }
                if i < pops {
                    assert_eq!(chunks.pop_front().map(|e| e.seq), model.pop_front());
                }
            }
            assert_eq!(chunks.len(), model.len());
            assert_eq!(chunks.front().map(|e| e.seq), model.front().copied());
            let skips = [0, 1, 15, 16, 17, 1023, 1024, 1025, model.len() / 2, model.len() - 1, model.len()];
            for skip in skips.into_iter().filter(|&s| s <= model.len()) {
                let got: Vec<u64> = chunks.iter_from(skip).map(|e| e.seq).collect();
                let want: Vec<u64> = model.range(skip..).copied().collect();
                assert_eq!(got, want, "from {skip} of {}", model.len());
            }
        }
        let blocks = chunks.blocks.len();
        assert!(blocks <= 3_100 / CHUNK_MAX + 3, "{blocks} blocks for {} entries", chunks.len());
        while chunks.pop_front().is_some() {}
        assert!(chunks.is_empty() && chunks.blocks.is_empty() && chunks.iter_from(0).next().is_none());
    }

    #[test]
    fn a_track_at_its_bound_reuses_its_blocks() {
        let policy = HistoryPolicy { max_frames: 3_000, ..HistoryPolicy::default() };
        let mut totals = HistoryTotals::default();
        let mut t = Track::new(0);
        let f = frame(10);
        for seq in 1..=3_000 {
            t.push(seq, 0, &f, &policy, &mut totals);
        }
        // Its first, small blocks are replaced by full-size ones once...
        for seq in 3_001..=6_000 {
            t.push(seq, 0, &f, &policy, &mut totals);
        }
        let grown = t.entries.allocated;
        assert!(grown <= 3_000 / CHUNK_MAX + 9, "{grown} blocks");
        // ...and from then on the emptied block is refilled.
        for seq in 6_001..=20_000 {
            t.push(seq, 0, &f, &policy, &mut totals);
        }
        assert_eq!(t.entries.allocated, grown, "14,000 evicting pushes allocated blocks");
        assert_eq!((t.first_seq(), totals.frames), (17_001, 3_000));
        assert_eq!(t.since(19_990).map(|i| i.count()), Some(10));
    }

    #[test]
    fn holds_keep_a_track_until_the_latest_one_ends() {
        let mut t = Track::new(0);
        assert!(!t.held(0));
        t.hold(1_000, Duration::from_nanos(500));
        t.hold(1_100, Duration::from_nanos(100));
        assert!(t.held(1_499), "an earlier, shorter hold does not cut a longer one");
        assert!(!t.held(1_500));
    }
}

//! The local order book of one Binance symbol, kept in sync with the
//! exchange's by Binance's documented procedure: depth updates buffered
//! until a REST snapshot, then applied in update-id order, with breaks
//! reported as `"depth update id"` gaps (see "Local order book" in the
//! `binance` module doc for the rules).
//!
//! Imports: its siblings `message` (the parsed [`Snapshot`]) and `stats`,
//! `crate::recorded::source` and [`crate::model`].

use std::collections::{HashMap, VecDeque};

use super::message::Snapshot;
use super::stats::BinanceStats;
use crate::model::{BookDelta, Level, Update};
use crate::recorded::source::{Event, Gap};

/// Most depth updates buffered per symbol while it waits for a snapshot.
/// Bounded so a capture without a snapshot cannot grow memory without end.
pub const MAX_PENDING_DEPTH: usize = 10_000;

/// One symbol's local order book and where it stands in Binance's sync
/// procedure.
pub(super) struct DepthState {
    /// The normalizer's `depth_clock` at the symbol's latest depth
    /// message, for snapshot attribution.
    pub(super) seen_at: u64,
    sync: DepthSync,
    /// Live levels: price bits to size, so a re-sync can delete what the
    /// new snapshot lacks.
    bids: HashMap<u64, f64>,
    asks: HashMap<u64, f64>,
}

/// Where a symbol's book stands: waiting for a snapshot, or synced.
enum DepthSync {
    /// No snapshot yet: updates wait here, oldest first.
    Awaiting(VecDeque<PendingDepth>),
    /// Synced: `last_id` is the last update id the book reflects; `first`
    /// until one update has been applied after the snapshot.
    Synced { last_id: u64, first: bool },
}

/// A parsed depth update, kept whole while it waits for a snapshot.
pub(super) struct PendingDepth {
    /// Receive time of its line.
    pub(super) recv_ns: u64,
    /// `E` in ns.
    pub(super) ts_event: u64,
    /// `U`: the first update id it covers.
    pub(super) first_id: u64,
    /// `u`: the last update id it covers.
    pub(super) last_id: u64,
    /// `b`.
    pub(super) bids: Vec<Level>,
    /// `a`.
    pub(super) asks: Vec<Level>,
}

/// Where the per-update work writes, borrowed apart from the symbol state.
pub(super) struct Sink<'a> {
    /// Update-id gaps found.
    pub(super) gaps: &'a mut Vec<Gap>,
    /// Counters.
    pub(super) stats: &'a mut BinanceStats,
    /// Events out.
    pub(super) out: &'a mut VecDeque<Event>,
}

impl DepthState {
    /// A book first seen at depth clock `seen_at`, awaiting its snapshot.
    pub(super) fn new(seen_at: u64) -> DepthState {
        DepthState { seen_at, sync: DepthSync::Awaiting(VecDeque::new()), bids: HashMap::new(), asks: HashMap::new() }
    }

    /// Whether the book still waits for a snapshot.
    pub(super) fn is_awaiting(&self) -> bool {
        matches!(self.sync, DepthSync::Awaiting(_))
    }

    /// Depth updates buffered while awaiting a snapshot (0 once synced).
    pub(super) fn pending(&self) -> usize {
        match &self.sync {
            DepthSync::Awaiting(pending) => pending.len(),
            DepthSync::Synced { .. } => 0,
        }
    }

    /// Buffers `update` (no snapshot yet) or applies it per the procedure.
    pub(super) fn on_update(&mut self, sym: u32, update: PendingDepth, sink: &mut Sink<'_>) {
        match &mut self.sync {
            DepthSync::Awaiting(pending) => {
                if pending.len() >= MAX_PENDING_DEPTH {
                    pending.pop_front();
                    sink.stats.dropped_pending += 1;
                }
                pending.push_back(update);
            }
            DepthSync::Synced { last_id, first } => {
                if update.last_id <= *last_id {
                    sink.stats.stale_depth += 1;
                    return;
                }
                let expected = last_id.saturating_add(1);
                let in_sequence = if *first { update.first_id <= expected } else { update.first_id == expected };
                if !in_sequence {
                    sink.gaps.push(Gap {
                        sym,
                        what: "depth update id",
                        expected,
                        got: update.first_id,
                        ts_event: update.ts_event,
                    });
                    sink.stats.gaps += 1;
                }
                *last_id = update.last_id;
                *first = false;
                apply_levels(&mut self.bids, &update.bids);
                apply_levels(&mut self.asks, &update.asks);
                sink.stats.books += 1;
                sink.out.push_back(Event {
                    sym,
                    ts_event: update.ts_event,
                    ts_recv: update.recv_ns,
                    seq: None,
                    update: Update::Book(BookDelta { bids: update.bids, asks: update.asks }),
                });
            }
        }
    }

    /// Replaces the book with a snapshot: one event with every snapshot
    /// level and a delete for every live level it lacks, then the buffered
    /// updates it releases.
    pub(super) fn on_snapshot(&mut self, sym: u32, recv_ns: u64, ts_event: u64, snap: Snapshot, sink: &mut Sink<'_>) {
        let Snapshot { last_update_id, mut bids, mut asks } = snap;
        replace_side(&mut self.bids, &mut bids, true);
        replace_side(&mut self.asks, &mut asks, false);
        sink.stats.snapshots += 1;
        sink.stats.books += 1;
        sink.out.push_back(Event {
            sym,
            ts_event,
            ts_recv: recv_ns,
            seq: None,
            update: Update::Book(BookDelta { bids, asks }),
        });
        let synced = DepthSync::Synced { last_id: last_update_id, first: true };
        if let DepthSync::Awaiting(pending) = std::mem::replace(&mut self.sync, synced) {
            for update in pending {
                self.on_update(sym, update, sink);
            }
        }
    }
}

/// Applies depth levels to a live side: size 0 deletes the price.
fn apply_levels(live: &mut HashMap<u64, f64>, levels: &[Level]) {
    for l in levels {
        if l.sz == 0.0 {
            live.remove(&l.px.to_bits());
        } else {
            live.insert(l.px.to_bits(), l.sz);
        }
    }
}

/// Makes `levels` (a snapshot side) the live side, appending to `levels` a
/// delete for each live level the snapshot lacks, best first so the event
/// is the same on every run.
fn replace_side(live: &mut HashMap<u64, f64>, levels: &mut Vec<Level>, bids: bool) {
    let mut next = HashMap::with_capacity(levels.len());
    apply_levels(&mut next, levels);
    let mut gone: Vec<Level> = live
        .keys()
        .filter(|bits| !next.contains_key(*bits))
        .map(|&bits| Level { px: f64::from_bits(bits), sz: 0.0 })
        .collect();
    gone.sort_by(|a, b| if bids { b.px.total_cmp(&a.px) } else { a.px.total_cmp(&b.px) });
    levels.extend(gone);
    *live = next;
}

//! The producer side of the ring, shared by every source: interns
//! symbols, stamps `ts_ingest`, opens and closes bursts, counts, applies
//! the ring's full policy (wait, count, log), and samples ticks for
//! `--trace-latency` (1 in N per producer, see [`crate::trace`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::FeedContext;
use crate::metrics::Metrics;
use crate::model::{now_ns, SymbolError, SymbolId, Tick, Update};
use crate::ring::{Closed, Input};
use crate::trace::{self, FeedStamps, Stamp};

/// Inside a burst, how many ticks a producer pushes between two wake-ups
/// of the engine: it works on a burst while the rest is still arriving,
/// without a fence and a possible unpark per tick.
pub const WAKE_EVERY: u32 = 32;

/// A producer's handle on the ring: one per source thread, and one per
/// tcp feed connection, so each producer's ticks keep their order.
///
/// A source that has several ticks at once (a read of many lines, a step
/// of the synthetic market) pushes them with
/// [`publish_in_burst`](Self::publish_in_burst) and then calls
/// [`end_burst`](Self::end_burst) once its input is drained: the engine
/// writes to subscribers when no burst is open, so a subscriber touched
/// many times by one burst gets it in one write (see [`crate::ring`]).
pub struct Publisher {
    ctx: FeedContext,
    /// Local intern cache: the shared table is consulted once per new name.
    cache: HashMap<Box<str>, SymbolId>,
    last_full_log: Option<Instant>,
    full_since_log: u64,
    /// Whether this producer has a burst open on the ring.
    in_burst: bool,
    /// Ticks pushed since the engine was last woken.
    unwoken: u32,
    /// `--trace-latency`: sample 1 tick in this many (0: off).
    trace_every: u32,
    /// Ticks until the next sample.
    trace_countdown: u32,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // A source that stops mid-burst must not leave the engine waiting
        // for the rest of it.
        self.end_burst();
    }
}

impl Publisher {
    /// A producer for one source thread or feed connection.
    pub fn new(ctx: FeedContext) -> Publisher {
        let trace_every = ctx.metrics.trace.every();
        Publisher {
            ctx,
            cache: HashMap::new(),
            last_full_log: None,
            full_since_log: 0,
            in_burst: false,
            unwoken: 0,
            trace_every,
            trace_countdown: trace_every,
        }
    }

    /// The context this publisher writes to.
    pub fn context(&self) -> &FeedContext {
        &self.ctx
    }

    /// The id of `name`, interning it if new.
    pub fn symbol(&mut self, name: &str) -> Result<SymbolId, SymbolError> {
        if let Some(&id) = self.cache.get(name) {
            return Ok(id);
        }
        let id = self.ctx.symbols.intern(name, self.ctx.max_symbols)?;
        self.cache.insert(name.into(), id);
        Ok(id)
    }

    /// Stamps `ts_ingest` and pushes one tick on its own (no burst), waiting
    /// while the ring is full (counted, and logged at most once a second),
    /// then wakes the engine.
    pub fn publish(&mut self, symbol: SymbolId, ts_event: u64, update: Update) -> Result<(), Closed> {
        self.push(symbol, ts_event, update, 0)?;
        self.unwoken = 0;
        self.ctx.ring.wake_consumer();
        Ok(())
    }

    /// Pushes one tick of a burst, opening one if none is open; the engine
    /// is woken every [`WAKE_EVERY`] ticks and at
    /// [`end_burst`](Self::end_burst).
    pub fn publish_in_burst(&mut self, symbol: SymbolId, ts_event: u64, update: Update) -> Result<(), Closed> {
        self.publish_read_in_burst(symbol, ts_event, update, 0)
    }

    /// [`publish_in_burst`](Self::publish_in_burst) for a tick that a
    /// socket read brought at `read` (a [`trace`] stamp; 0 if not
    /// stamped): a sampled tick's trace starts at the read.
    pub fn publish_read_in_burst(
        &mut self,
        symbol: SymbolId,
        ts_event: u64,
        update: Update,
        read: Stamp,
    ) -> Result<(), Closed> {
        if !self.in_burst {
            self.ctx.ring.begin_burst();
            self.in_burst = true;
        }
        self.push(symbol, ts_event, update, read)?;
        self.unwoken += 1;
        if self.unwoken >= WAKE_EVERY {
            self.unwoken = 0;
            self.ctx.ring.wake_consumer();
        }
        Ok(())
    }

    /// Closes the open burst, if any: this producer's input is drained for
    /// now. Wakes the engine. Call it before anything that may wait (a
    /// blocking read, a pacing sleep).
    pub fn end_burst(&mut self) {
        if std::mem::take(&mut self.in_burst) {
            self.unwoken = 0;
            self.ctx.ring.end_burst();
        }
    }

    /// Pushes an input that is already stamped (and maybe sequenced) as
    /// part of a burst: an edge forwarding a sequencer's ticks, with their
    /// seq and `ts_ingest`, and its images. Same burst, wake and full
    /// policy as [`publish_in_burst`](Self::publish_in_burst).
    pub fn forward_in_burst(&mut self, input: Input) -> Result<(), Closed> {
        if !self.in_burst {
            self.ctx.ring.begin_burst();
            self.in_burst = true;
        }
        self.push_input(input)?;
        self.unwoken += 1;
        if self.unwoken >= WAKE_EVERY {
            self.unwoken = 0;
            self.ctx.ring.wake_consumer();
        }
        Ok(())
    }

    /// Stamps and pushes one tick; every `trace_every`-th one goes as
    /// [`Input::Traced`], with its read time and the time now.
    #[inline]
    fn push(&mut self, symbol: SymbolId, ts_event: u64, update: Update, read: Stamp) -> Result<(), Closed> {
        let tick = Tick { symbol, ts_event, ts_ingest: now_ns(), update };
        // Off: this one branch. On: a countdown per tick, a clock read
        // per sampled one.
        if self.trace_every != 0 {
            self.trace_countdown -= 1;
            if self.trace_countdown == 0 {
                self.trace_countdown = self.trace_every;
                self.ctx.metrics.trace.sampled();
                return self.push_input(Input::Traced(tick, FeedStamps { read, pushed: trace::now() }));
            }
        }
        self.push_input(Input::Tick(tick))
    }

    fn push_input(&mut self, input: Input) -> Result<(), Closed> {
        if self.ctx.ring.is_closed() {
            return Err(Closed);
        }
        if self.ctx.ring.push_input_quiet(input)? {
            self.full_since_log += 1;
            let due = self.last_full_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if due {
                tracing::warn!(
                    full_events = self.full_since_log,
                    capacity = self.ctx.ring.capacity(),
                    "tick ring full: the feed waited for the engine (consider --ring-capacity or fewer subscribers)"
                );
                self.last_full_log = Some(Instant::now());
                self.full_since_log = 0;
            }
        }
        self.ctx.metrics.ticks_ingested.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Counts a rejected input and logs it at most once a second per source.
pub struct ErrorLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl ErrorLog {
    /// A fresh limiter.
    pub fn new() -> ErrorLog {
        ErrorLog { last: None, suppressed: 0 }
    }

    /// Counts the error in `metrics` and logs it unless one was logged in
    /// the last second.
    pub fn report(&mut self, metrics: &Metrics, source: &str, error: &dyn fmt::Display) {
        metrics.feed_errors.fetch_add(1, Ordering::Relaxed);
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(source, suppressed = self.suppressed, "feed input rejected: {error}");
            self.last = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

impl Default for ErrorLog {
    fn default() -> Self {
        Self::new()
    }
}

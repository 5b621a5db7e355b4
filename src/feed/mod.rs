//! Feed sources and their normalizers.
//!
//! In: market data from a source (`--feed`). Out: normalized [`Tick`]s
//! pushed into the [`TickRing`], stamped with `ts_ingest`.
//!
//! Every source runs on its own dedicated OS thread(s), never on the tokio
//! runtime, so ingest never competes with socket writes for a worker and a
//! blocked source cannot stall the server. Sources share one producer
//! handle, the [`Publisher`], which interns symbols, stamps the ingest
//! time, counts, and applies the ring's full policy.
//!
//! Sources: `synthetic` (the default; see [`synthetic`]), `tcp://ADDR`
//! (newline-delimited JSON from feed handlers; see [`tcp`] and [`json`])
//! and `replay:PATH` (a recording played back; see [`replay`]). Further
//! sources (NATS) plug in as new [`FeedSpec`] variants that drive a
//! [`Publisher`].

pub mod json;
pub mod replay;
pub mod synthetic;
pub mod tcp;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::metrics::Metrics;
use crate::ring::{Closed, TickRing};
use crate::tick::{now_ns, SymbolError, SymbolId, SymbolTable, Tick, Update};

/// Which source feeds the server, parsed from `--feed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedSpec {
    /// Built-in random-walk market for `--symbols` symbols at `--rate`.
    Synthetic,
    /// Listen on this address for feed handlers sending JSON lines.
    Tcp(SocketAddr),
    /// Play back a recording (tick log, Binance capture or DBN file).
    Replay(PathBuf),
}

impl FromStr for FeedSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "synthetic" {
            return Ok(FeedSpec::Synthetic);
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            return addr
                .parse()
                .map(FeedSpec::Tcp)
                .map_err(|_| format!("--feed {s:?}: {addr:?} is not an IP:PORT address (e.g. tcp://127.0.0.1:9000)"));
        }
        if let Some(path) = s.strip_prefix("replay:") {
            if path.is_empty() {
                return Err(format!("--feed {s:?}: name the recording, e.g. replay:./ticks or replay:day.dbn.zst"));
            }
            return Ok(FeedSpec::Replay(PathBuf::from(path)));
        }
        Err(format!("--feed {s:?}: expected \"synthetic\", \"tcp://IP:PORT\" or \"replay:PATH\""))
    }
}

impl fmt::Display for FeedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedSpec::Synthetic => f.write_str("synthetic"),
            FeedSpec::Tcp(addr) => write!(f, "tcp://{addr}"),
            FeedSpec::Replay(path) => write!(f, "replay:{}", path.display()),
        }
    }
}

/// What every source needs: where ticks go and when to stop.
#[derive(Clone)]
pub struct FeedContext {
    /// The ring into the engine.
    pub ring: Arc<TickRing>,
    /// The server's symbol universe.
    pub symbols: Arc<SymbolTable>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// `--max-symbols`: the symbol table's bound.
    pub max_symbols: usize,
    /// Raised at shutdown; sources poll it at least every 100 ms.
    pub shutdown: Arc<AtomicBool>,
}

impl FeedContext {
    /// Whether the server is shutting down.
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }
}

/// The running source: its threads, and the address it listens on, if any.
pub struct FeedHandle {
    /// Threads to join at shutdown.
    pub threads: Vec<JoinHandle<()>>,
    /// For `tcp://`: the bound address (useful with port 0).
    pub local_addr: Option<SocketAddr>,
}

/// Inside a burst, how many ticks a producer pushes between two wake-ups
/// of the engine: it works on a burst while the rest is still arriving,
/// without a fence and a possible unpark per tick.
pub const WAKE_EVERY: u32 = 32;

/// Per-thread producer handle shared by every source.
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
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // A source that stops mid-burst must not leave the engine waiting
        // for the rest of it.
        self.end_burst();
    }
}

impl Publisher {
    /// A producer for one source thread.
    pub fn new(ctx: FeedContext) -> Publisher {
        Publisher { ctx, cache: HashMap::new(), last_full_log: None, full_since_log: 0, in_burst: false, unwoken: 0 }
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
        self.push(symbol, ts_event, update)?;
        self.unwoken = 0;
        self.ctx.ring.wake_consumer();
        Ok(())
    }

    /// Pushes one tick of a burst, opening one if none is open; the engine
    /// is woken every [`WAKE_EVERY`] ticks and at
    /// [`end_burst`](Self::end_burst).
    pub fn publish_in_burst(&mut self, symbol: SymbolId, ts_event: u64, update: Update) -> Result<(), Closed> {
        if !self.in_burst {
            self.ctx.ring.begin_burst();
            self.in_burst = true;
        }
        self.push(symbol, ts_event, update)?;
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

    fn push(&mut self, symbol: SymbolId, ts_event: u64, update: Update) -> Result<(), Closed> {
        if self.ctx.ring.is_closed() {
            return Err(Closed);
        }
        let tick = Tick { symbol, ts_event, ts_ingest: now_ns(), update };
        if self.ctx.ring.push_quiet(tick)? {
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

/// Settings of the synthetic source.
#[derive(Clone, Debug)]
pub struct SyntheticSettings {
    /// How many symbols.
    pub symbols: usize,
    /// Updates per second over all symbols.
    pub rate: f64,
    /// Random seed, for reproducible runs.
    pub seed: u64,
}

/// How a `replay:` feed plays its recording (`--speed`, `--loop`,
/// `--from`, `--to`).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayOptions {
    /// Pace.
    pub speed: replay::Speed,
    /// Start again at the end.
    pub looped: bool,
    /// First event time, ns.
    pub from: Option<u64>,
    /// Last event time, ns (inclusive).
    pub to: Option<u64>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions { speed: replay::Speed::Times(1.0), looped: false, from: None, to: None }
    }
}

/// Starts the source described by `spec`.
pub fn start(
    spec: &FeedSpec,
    synthetic: &SyntheticSettings,
    replay_options: &ReplayOptions,
    ctx: FeedContext,
) -> std::io::Result<FeedHandle> {
    match spec {
        FeedSpec::Synthetic => synthetic::start(synthetic.clone(), ctx),
        FeedSpec::Tcp(addr) => tcp::start(*addr, ctx),
        FeedSpec::Replay(path) => {
            let o = replay_options.clone();
            let settings =
                replay::ReplaySettings { path: path.clone(), speed: o.speed, looped: o.looped, from: o.from, to: o.to };
            replay::start(settings, ctx)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_specs_parse_with_clear_errors() {
        assert_eq!("synthetic".parse(), Ok(FeedSpec::Synthetic));
        assert_eq!("tcp://127.0.0.1:9000".parse(), Ok(FeedSpec::Tcp("127.0.0.1:9000".parse().unwrap())));
        assert!("tcp://nowhere".parse::<FeedSpec>().unwrap_err().contains("IP:PORT"));
        assert!("kafka://x".parse::<FeedSpec>().unwrap_err().contains("expected"));
        assert_eq!("replay:/data/day.tlog".parse(), Ok(FeedSpec::Replay("/data/day.tlog".into())));
        assert!("replay:".parse::<FeedSpec>().unwrap_err().contains("name the recording"));
    }
}

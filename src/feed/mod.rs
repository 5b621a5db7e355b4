//! Feed sources and their normalizers.
//!
//! In: market data from a source (`--feed`). Out: normalized [`Tick`](crate::model::Tick)s
//! pushed into the [`TickRing`], stamped with `ts_ingest`.
//!
//! Every source runs on its own dedicated OS thread, never on the session
//! workers' runtime, so ingest never competes with socket writes for a
//! worker and a blocked source cannot stall the server (the tcp feed's
//! thread runs a small runtime of its own for its connections). Every
//! producer (a source thread, a tcp connection) has its own
//! [`Publisher`], which interns symbols, stamps the ingest time, counts,
//! and applies the ring's full policy.
//!
//! Sources: `synthetic` (the default; see [`synthetic`]), `tcp://ADDR`
//! (newline-delimited JSON or binary tick records from feed handlers; see
//! [`tcp`], [`json`] and [`binary`]), `replay:PATH` (a recording played
//! back; see [`replay`]) and `nats://HOST:PORT` (an edge following a
//! sequencer; see [`nats`]).
//!
//! Imports: [`crate::model`], [`crate::ring`], [`crate::recorded`] (the
//! replay source), [`crate::metrics`] and [`crate::cluster`] (the edge's
//! NATS settings).

pub mod binary;
pub mod json;
pub mod nats;
pub mod pacing;
pub mod publisher;
pub mod replay;
pub mod synthetic;
pub mod tcp;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::metrics::Metrics;
use crate::model::SymbolTable;
use crate::ring::TickRing;

pub use pacing::Speed;
pub use publisher::{ErrorLog, Publisher};
pub use tcp::{FeedFormat, TcpFeedSettings};

/// Which source feeds the server, parsed from `--feed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedSpec {
    /// Built-in random-walk market for `--symbols` symbols at `--rate`.
    Synthetic,
    /// Listen on this address for feed handlers sending JSON lines or
    /// binary tick records.
    Tcp(SocketAddr),
    /// Play back a recording (tick log, Binance capture or DBN file).
    Replay(PathBuf),
    /// Follow a sequencer over NATS (an edge): `nats://HOST:PORT`.
    Nats(String),
}

/// Why `--feed` could not be parsed; the message names the flag and shows
/// the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedSpecError {
    /// `tcp://` followed by something that is not `IP:PORT`.
    #[error("--feed {0:?}: {1:?} is not an IP:PORT address (e.g. tcp://127.0.0.1:9000)")]
    BadAddress(String, String),
    /// `replay:` with no path.
    #[error("--feed {0:?}: name the recording, e.g. replay:./ticks or replay:day.dbn.zst")]
    NoRecording(String),
    /// `nats://` or `tls://` with no host.
    #[error("--feed {0:?}: {1}")]
    BadNats(String, String),
    /// Not one of the known forms.
    #[error("--feed {0:?}: expected \"synthetic\", \"tcp://IP:PORT\", \"replay:PATH\" or \"nats://HOST:PORT\"")]
    Unknown(String),
}

impl FromStr for FeedSpec {
    type Err = FeedSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "synthetic" {
            return Ok(FeedSpec::Synthetic);
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            return addr.parse().map(FeedSpec::Tcp).map_err(|_| FeedSpecError::BadAddress(s.into(), addr.into()));
        }
        if s.starts_with("nats://") || s.starts_with("tls://") {
            return s
                .parse::<crate::cluster::NatsUrl>()
                .map(|u| FeedSpec::Nats(u.0))
                .map_err(|e| FeedSpecError::BadNats(s.chars().take(64).collect(), e));
        }
        if let Some(path) = s.strip_prefix("replay:") {
            if path.is_empty() {
                return Err(FeedSpecError::NoRecording(s.into()));
            }
            return Ok(FeedSpec::Replay(PathBuf::from(path)));
        }
        Err(FeedSpecError::Unknown(s.chars().take(64).collect()))
    }
}

impl fmt::Display for FeedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedSpec::Synthetic => f.write_str("synthetic"),
            FeedSpec::Tcp(addr) => write!(f, "tcp://{addr}"),
            FeedSpec::Replay(path) => write!(f, "replay:{}", path.display()),
            FeedSpec::Nats(url) => f.write_str(url),
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
    /// Resolves once the source has declared its universe on its own
    /// thread (replay: every symbol of the recording is interned, before
    /// its first tick). The server awaits it before it listens, so the
    /// first client can subscribe to any of them. `None`: nothing to wait
    /// for (synthetic interns its symbols in `start`; tcp learns them as
    /// they come). A dropped sender counts as ready.
    pub declared: Option<tokio::sync::oneshot::Receiver<()>>,
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
    pub speed: Speed,
    /// Start again at the end.
    pub looped: bool,
    /// First event time, ns.
    pub from: Option<u64>,
    /// Last event time, ns (inclusive).
    pub to: Option<u64>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions { speed: Speed::Times(1.0), looped: false, from: None, to: None }
    }
}

/// Starts the source described by `spec`, with the settings of its kind.
pub fn start(
    spec: &FeedSpec,
    synthetic: &SyntheticSettings,
    replay_options: &ReplayOptions,
    tcp_settings: &TcpFeedSettings,
    nats: &crate::cluster::NatsSettings,
    ctx: FeedContext,
) -> std::io::Result<FeedHandle> {
    match spec {
        FeedSpec::Nats(url) => nats::start(crate::cluster::NatsSettings { url: url.clone(), ..nats.clone() }, ctx),
        FeedSpec::Synthetic => synthetic::start(synthetic.clone(), ctx),
        FeedSpec::Tcp(addr) => tcp::start(*addr, tcp_settings.clone(), ctx),
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
        assert!("tcp://nowhere".parse::<FeedSpec>().unwrap_err().to_string().contains("IP:PORT"));
        assert!("kafka://x".parse::<FeedSpec>().unwrap_err().to_string().contains("expected"));
        assert_eq!("replay:/data/day.tlog".parse(), Ok(FeedSpec::Replay("/data/day.tlog".into())));
        assert!("replay:".parse::<FeedSpec>().unwrap_err().to_string().contains("name the recording"));
        assert_eq!("nats://127.0.0.1:4222".parse(), Ok(FeedSpec::Nats("nats://127.0.0.1:4222".into())));
        assert!("nats://".parse::<FeedSpec>().unwrap_err().to_string().contains("NATS URL"));
    }
}

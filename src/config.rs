//! The validated server configuration, and its defaults.
//!
//! In: built by the binary's flag parser (`src/cli.rs`, which validates
//! every flag and reports all bad values at once) or directly by tests and
//! embedders. Out: a [`Config`] the server runs with; the server hands each
//! stage its own part.
//!
//! Imports: the settings types and defaults of the stages it configures
//! ([`crate::feed`], [`crate::engine`], [`crate::record`], [`crate::ring`],
//! [`crate::outbox`], [`crate::auth`]), nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Verifier;
use crate::cluster::NatsSettings;
use crate::engine::history::HistoryPolicy;
use crate::engine::SlowConsumerPolicy;
use crate::feed::{FeedSpec, ReplayOptions, SyntheticSettings, TcpFeedSettings};
use crate::record::RecordSettings;

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP/WebSocket listen address.
    pub listen: SocketAddr,
    /// The feed source.
    pub feed: FeedSpec,
    /// The `tcp://` feed's doors: connection limit, token, allow-list,
    /// idle timeout (used when `feed` is `tcp://`).
    pub tcp_feed: TcpFeedSettings,
    /// Synthetic feed settings (used when `feed` is synthetic).
    pub synthetic: SyntheticSettings,
    /// Replay feed settings (used when `feed` is `replay:`).
    pub replay: ReplayOptions,
    /// Where and how to record, with `--record`.
    pub record: Option<RecordSettings>,
    /// `--publish nats://`: this node is a sequencer and publishes every
    /// sequenced tick there.
    pub publish: Option<String>,
    /// NATS options shared by `--publish` and `--feed nats://` (prefix,
    /// auth, TLS, batching); their `url` is taken from those flags.
    pub nats: NatsSettings,
    /// Recordings `/replay` may open.
    pub replay_dir: Option<PathBuf>,
    /// Concurrent `/replay` session bound.
    pub max_replay_sessions: usize,
    /// Ring capacity in ticks.
    pub ring_capacity: usize,
    /// Writer (runtime worker) threads.
    pub writers: usize,
    /// Least time between two writes to one subscriber.
    pub flush_interval: Duration,
    /// Socket writes per second to stay under (see `--write-budget`).
    pub write_budget: u64,
    /// When a subscriber is closed as too slow.
    pub slow: SlowConsumerPolicy,
    /// Book levels per side in snapshots.
    pub book_depth: usize,
    /// How much of each symbol's updates is kept for resume by seq
    /// (`--history`, `--history-frames`, `--history-bytes`).
    pub history: HistoryPolicy,
    /// Symbol table bound.
    pub max_symbols: usize,
    /// The declared universe (`--symbols-file`): names interned in this
    /// order at startup, before the feed starts, so a client can subscribe
    /// to a symbol before its first tick. Empty: symbols become known as
    /// the feed sends them (a replay feed still declares its recording's).
    pub universe: Vec<String>,
    /// Concurrent session bound.
    pub max_connections: usize,
    /// Largest client message.
    pub max_message_bytes: usize,
    /// Unread control replies per session above which it is closed
    /// (`--max-control-bytes`).
    pub max_control_bytes: usize,
    /// Request rate per connection (`--max-requests-per-sec`; 0: no limit).
    pub max_requests_per_sec: u32,
    /// Request burst per connection (`--request-burst`).
    pub request_burst: u32,
    /// Ping interval.
    pub ping_interval: Duration,
    /// Pong deadline after a ping.
    pub pong_timeout: Duration,
    /// Shutdown flush allowance.
    pub shutdown_grace: Duration,

    // The HTTP front door (issue 15): bounds before the upgrade.
    /// Time from accept until a connection's request is read and it is
    /// upgraded (slowloris bound); an HTTP connection not upgraded by then
    /// is closed, keep-alive ones included.
    pub handshake_timeout: Duration,
    /// Largest request head (request line and headers) read before the
    /// upgrade; larger heads get HTTP 431.
    pub max_header_bytes: usize,
    /// Open TCP connections from one IP address, in any phase (the total
    /// is `max_connections`).
    pub max_connections_per_ip: usize,
    /// `--allowed-origins` entries (see `server::origin`). `None`: the flag
    /// is absent, every origin is allowed and the server warns at start.
    pub allowed_origins: Option<Vec<String>>,
    /// Serve `/metrics` and `/healthz` on this address instead of
    /// `listen` (where `/metrics` then answers 404).
    pub metrics_listen: Option<SocketAddr>,
    /// `--auth-jwt-secret`/`--auth-public-key`: every `/ws`, `/replay` and
    /// `/symbols` request must carry a token these keys verify. `None`:
    /// the server is open to anyone who reaches it.
    pub auth: Option<Arc<Verifier>>,
    /// `--auth-expiry-warning`: how long before its token expires a
    /// session is sent `token_expiring`.
    pub auth_expiry_warning: Duration,
    /// `--trace-latency`: sample 1 tick in this many and measure each
    /// stage of its way from the feed read to the socket write
    /// ([`crate::trace`]); 0: off.
    pub trace_latency: u32,
    /// `--tls-cert`/`--tls-key`: serve `https://` and `wss://` only.
    /// `None`: plain HTTP (e.g. behind a TLS-terminating load balancer).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

impl Default for Config {
    /// Defaults of the flags, except `listen` which is `127.0.0.1:0` so
    /// tests get a free port.
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            feed: FeedSpec::Synthetic,
            tcp_feed: TcpFeedSettings::default(),
            synthetic: SyntheticSettings { symbols: 100, rate: 10_000.0, seed: 1 },
            replay: ReplayOptions::default(),
            record: None,
            publish: None,
            nats: NatsSettings::new(""),
            replay_dir: None,
            max_replay_sessions: 16,
            ring_capacity: crate::ring::DEFAULT_CAPACITY,
            writers: default_writers(),
            flush_interval: Duration::from_millis(1),
            write_budget: WRITE_BUDGET_PER_WRITER * default_writers() as u64,
            slow: SlowConsumerPolicy {
                conflate_above: 256 << 10,
                disconnect_above: 8 << 20,
                slow_timeout: Duration::from_secs(10),
            },
            book_depth: 10,
            history: HistoryPolicy::default(),
            max_symbols: 100_000,
            universe: Vec::new(),
            max_connections: 50_000,
            max_message_bytes: 64 * 1024,
            max_control_bytes: crate::outbox::DEFAULT_MAX_CONTROL_BYTES,
            max_requests_per_sec: 100,
            request_burst: 200,
            ping_interval: Duration::from_secs(15),
            pong_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_millis(1500),
            handshake_timeout: Duration::from_secs(5),
            max_header_bytes: 16 << 10,
            max_connections_per_ip: 1024,
            allowed_origins: None,
            metrics_listen: None,
            trace_latency: 0,
            auth: None,
            auth_expiry_warning: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// Default `--write-budget` per writer thread. At 100 busy subscribers on
/// 2 writers this is one write each per 1 ms (the feed's cadence in the
/// peers benchmark). A smaller budget saves CPU per message and costs
/// latency: BENCHMARKS.md, "Side by side with peers", measures W2 at four
/// budgets. Latency is what tickcast is for, so the default leans that
/// way; `--write-budget` is the knob for CPU.
pub const WRITE_BUDGET_PER_WRITER: u64 = 50_000;

/// The number of cores, or 2 if it cannot be read.
pub fn default_writers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

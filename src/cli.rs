//! The command line: the flag tree (clap derive), its validation into a
//! [`Config`], and the tools that share the binary.
//!
//! Every tunable is a flag with an environment fallback, a stated default
//! and a help line. [`ServeArgs::into_config`] reports every bad value at
//! once, not just the first. This is the binary's edge: errors become the
//! messages an operator reads here, and nowhere below.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tickcast::auth::Verifier;
use tickcast::cluster::{NatsSettings, NatsUrl};
use tickcast::config::{default_writers, Config, WRITE_BUDGET_PER_WRITER};
use tickcast::engine::history::HistoryPolicy;
use tickcast::engine::SlowConsumerPolicy;
use tickcast::feed::tcp::{FeedAccess, FeedFormat, FeedToken, IpNet};
use tickcast::feed::{FeedSpec, ReplayOptions, Speed, SyntheticSettings, TcpFeedSettings};
use tickcast::model::{parse_event_time, universe};
use tickcast::record::RecordSettings;
use tickcast::recorded::ticklog::{Fsync, WriterOptions};
use tickcast::server::origin::AllowedOrigins;
use tickcast::tools::{convert, inspect};

/// `tickcast`: realtime market-data fan-out over WebSocket.
#[derive(Debug, Parser)]
#[command(name = "tickcast", version, about, args_conflicts_with_subcommands = true, allow_negative_numbers = true)]
pub struct Cli {
    /// A tool to run instead of the server.
    #[command(subcommand)]
    pub command: Option<Tool>,
    /// Server flags (the default when no tool is named).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Tools shipped in the same binary.
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Convert a recording (Binance capture, DBN file) into a tick log.
    Convert(ConvertArgs),
    /// Summarize a recording: per symbol, counts by type, first and last
    /// event time, and any seq or update-id gaps.
    Inspect(InspectArgs),
}

/// A byte count that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    /// A suffix we do not know.
    #[error("unknown unit {0:?} (examples: 65536, 256KiB, 8MiB)")]
    Unit(String),
    /// Not digits.
    #[error("{0:?} is not a byte count (examples: 65536, 256KiB, 8MiB)")]
    NotANumber(String),
    /// More than fits in memory's address space.
    #[error("{0:?} is too large")]
    TooLarge(String),
}

/// Parses a byte count: a plain integer, or one with a binary suffix
/// (`256KiB`, `8MiB`, `1GiB`; `K`, `M`, `G` mean the same).
pub fn byte_size(s: &str) -> Result<usize, ByteSizeError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" | "kiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => return Err(ByteSizeError::Unit(other.into())),
    };
    let n: usize = digits.parse().map_err(|_| ByteSizeError::NotANumber(s.into()))?;
    n.checked_mul(1 << shift).ok_or_else(|| ByteSizeError::TooLarge(s.into()))
}

/// A duration that is not one.
#[derive(Debug, thiserror::Error)]
#[error("{0} (examples: 15s, 500ms, 1m)")]
pub struct DurationError(humantime::DurationError);

fn duration(s: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(s).map_err(DurationError)
}

/// A `--feed-token` that is not acceptable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenError(tickcast::feed::tcp::access::FeedTokenError);

fn feed_token(s: &str) -> Result<FeedToken, TokenError> {
    s.parse().map_err(TokenError)
}

/// A `--feed-format` that is not one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FeedFormatError(tickcast::feed::tcp::FeedFormatError);

fn feed_format(s: &str) -> Result<FeedFormat, FeedFormatError> {
    s.parse().map_err(FeedFormatError)
}

/// A book depth that is not on the menu.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DepthError(String);

fn book_depth(s: &str) -> Result<usize, DepthError> {
    tickcast::wire::request::parse_depth(s.trim()).ok_or_else(|| DepthError(tickcast::wire::request::depth_error(s)))
}

/// A secret flag value: never printed by `Debug`.
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// The server's flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address for HTTP and WebSocket clients (`/ws`, `/metrics`, `/healthz`).
    #[arg(long, env = "TICKCAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Market-data source: `synthetic`; `tcp://IP:PORT` to listen for feed
    /// handlers sending newline-delimited JSON ticks or binary tick records
    /// (see --feed-format); or `replay:PATH` to
    /// play back a recording (a tick log directory or segment, a Binance
    /// capture, plain or gzip, or a DBN file, plain or zstd).
    #[arg(long, env = "TICKCAST_FEED", default_value = "synthetic")]
    pub feed: String,

    // -- The tcp feed's doors (`--feed tcp://`): see docs/PROTOCOL.md, "Feed handlers".
    /// Tcp feed: most feed handlers connected at once; a connection over it
    /// is closed at once (counted in tickcast_feed_refused_total{reason="limit"}).
    #[arg(long, env = "TICKCAST_MAX_FEED_CONNECTIONS", default_value_t = tickcast::feed::tcp::DEFAULT_MAX_CONNECTIONS)]
    pub max_feed_connections: usize,

    /// Tcp feed: a shared secret (16 to 1024 printable ASCII characters, no
    /// spaces, quotes or backslashes). Each feed handler's first line must
    /// then be {"type":"auth","token":"TOKEN"}, within 5s, or it is closed
    /// without a tick taken. Prefer the environment variable: flags show in
    /// `ps`. [default: none]
    #[arg(long, env = "TICKCAST_FEED_TOKEN", hide_env_values = true, value_parser = feed_token)]
    pub feed_token: Option<FeedToken>,

    /// Tcp feed: the only addresses allowed to connect, comma-separated IPs
    /// or CIDR networks (10.0.0.5,10.1.0.0/16,::1); others are closed at
    /// accept. [default: any]
    #[arg(long, env = "TICKCAST_FEED_ALLOW", value_delimiter = ',', value_parser = clap::value_parser!(IpNet))]
    pub feed_allow: Vec<IpNet>,

    /// Tcp feed: a feed handler that sends no byte for this long is closed
    /// (a JSON handler sends a blank line as a heartbeat when the market is
    /// quiet; binary records have no heartbeat).
    #[arg(long, env = "TICKCAST_FEED_IDLE_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub feed_idle_timeout: Duration,

    /// Tcp feed: what feed handlers send after their optional auth line
    /// (always a text line): `json`, newline-delimited JSON ticks; `binary`,
    /// framed binary tick records (docs/PROTOCOL.md); or `auto`, where each
    /// connection's first byte decides: `{` or whitespace is JSON lines,
    /// anything else binary (and a `{` or whitespace that begins a binary
    /// frame's length of at most 1 MiB, its fourth byte 0, is binary too).
    /// [default: auto]
    #[arg(long, env = "TICKCAST_FEED_FORMAT", value_parser = feed_format)]
    pub feed_format: Option<FeedFormat>,
    // -- End of the tcp feed's doors.

    // -- NATS scale-out (`--publish`, `--feed nats://`): see docs/CLUSTER.md.
    /// Sequencer: publish every sequenced tick to NATS at this URL
    /// (`nats://HOST:PORT` or `tls://HOST:PORT`) and answer edges' snapshot
    /// requests, for edges (`--feed nats://`) to follow. [default: off]
    #[arg(long, env = "TICKCAST_PUBLISH", value_parser = clap::value_parser!(NatsUrl))]
    pub publish: Option<NatsUrl>,

    /// NATS: subject prefix (subjects are PREFIX.tick.SYM, PREFIX.snap.SYM,
    /// PREFIX.universe); one per cluster sharing a NATS server.
    #[arg(long, env = "TICKCAST_NATS_PREFIX", default_value = tickcast::cluster::DEFAULT_PREFIX)]
    pub nats_prefix: String,

    /// NATS: a credentials file (JWT and NKey seed) to authenticate with.
    #[arg(long, env = "TICKCAST_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,

    /// NATS: user name (with --nats-password).
    #[arg(long, env = "TICKCAST_NATS_USER")]
    pub nats_user: Option<String>,

    /// NATS: password (with --nats-user). Prefer the environment variable:
    /// flags show in `ps`.
    #[arg(long, env = "TICKCAST_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,

    /// NATS: auth token. Prefer the environment variable.
    #[arg(long, env = "TICKCAST_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,

    /// NATS: CA certificate (PEM) to verify the server with; requires TLS.
    #[arg(long, env = "TICKCAST_NATS_CA")]
    pub nats_ca: Option<PathBuf>,

    /// NATS: client certificate (PEM), with --nats-key.
    #[arg(long, env = "TICKCAST_NATS_CERT")]
    pub nats_cert: Option<PathBuf>,

    /// NATS: client private key (PEM), with --nats-cert.
    #[arg(long, env = "TICKCAST_NATS_KEY")]
    pub nats_key: Option<PathBuf>,

    /// Sequencer: put a symbol's records of one engine batch in one NATS
    /// message (`true`), or send one message per record (`false`).
    #[arg(long, env = "TICKCAST_NATS_BATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub nats_batch: bool,
    // -- End of NATS.
    /// Replay feed: pace, as a factor of real time (`1`, `10`, `0.5`) or
    /// `max` for as fast as the pipeline goes [default: 1].
    #[arg(long, env = "TICKCAST_SPEED")]
    pub speed: Option<String>,

    /// Replay feed: start again from the beginning at the end.
    #[arg(long = "loop", env = "TICKCAST_LOOP")]
    pub looped: bool,

    /// Replay feed: first event time to publish, ns since the Unix epoch or
    /// RFC 3339. Earlier quotes and book changes are folded into the
    /// starting state.
    #[arg(long, env = "TICKCAST_FROM")]
    pub from: Option<String>,

    /// Replay feed: last event time to publish (inclusive), ns since the
    /// Unix epoch or RFC 3339.
    #[arg(long, env = "TICKCAST_TO")]
    pub to: Option<String>,

    /// Record every sequenced tick to a tick log in this directory
    /// (created if missing; a torn tail from a crash is cut on start).
    #[arg(long, env = "TICKCAST_RECORD")]
    pub record: Option<PathBuf>,

    /// Tick-log durability: `never` (the OS writes back), `always`
    /// (fdatasync after every write), or an interval such as `1s`
    /// (fdatasync at most that often). A process crash loses nothing
    /// already written in any mode; this bounds what a power loss can.
    #[arg(long, env = "TICKCAST_FSYNC", default_value = "1s")]
    pub fsync: String,

    /// Tick log: start a new segment file at this size.
    #[arg(long, env = "TICKCAST_RECORD_SEGMENT_BYTES", default_value = "256MiB", value_parser = byte_size)]
    pub record_segment_bytes: usize,

    /// Tick log: start a new segment file at this age.
    #[arg(long, env = "TICKCAST_RECORD_SEGMENT_AGE", default_value = "1h", value_parser = duration)]
    pub record_segment_age: Duration,

    /// Directory of recordings that `/replay?source=NAME` may open (only
    /// plain names inside it). Without it `/replay` answers 404.
    #[arg(long, env = "TICKCAST_REPLAY_DIR")]
    pub replay_dir: Option<PathBuf>,

    /// Most concurrent `/replay` sessions; more get HTTP 503.
    #[arg(long, env = "TICKCAST_MAX_REPLAY_SESSIONS", default_value_t = 16)]
    pub max_replay_sessions: usize,

    /// Synthetic feed: number of symbols.
    #[arg(long, env = "TICKCAST_SYMBOLS", default_value_t = 100)]
    pub symbols: usize,

    /// Synthetic feed: updates per second over all symbols.
    #[arg(long, env = "TICKCAST_RATE", default_value_t = 10_000.0)]
    pub rate: f64,

    /// Synthetic feed: random seed, for reproducible markets.
    #[arg(long, env = "TICKCAST_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Capacity of the ingest ring, in ticks. When full, the feed waits
    /// (counted in tickcast_ring_full_total); nothing is dropped.
    #[arg(long, env = "TICKCAST_RING_CAPACITY", default_value_t = tickcast::ring::DEFAULT_CAPACITY)]
    pub ring_capacity: usize,

    /// Writer threads that own the sockets' write side [default: number of cores].
    #[arg(long, env = "TICKCAST_WRITERS")]
    pub writers: Option<usize>,

    /// Average time between two writes to one busy subscriber: updates that
    /// arrive faster are coalesced into one vectored write. Writes happen
    /// when the feed's current burst is in, so a subscriber touched only
    /// now and then is written at once; one touched by every burst banks 2
    /// to 3 writes and is then written once per interval. Trades up to
    /// this much latency for far fewer system calls; 0 writes every engine
    /// batch.
    #[arg(long, env = "TICKCAST_FLUSH_INTERVAL", default_value = "1ms", value_parser = duration)]
    pub flush_interval: Duration,

    /// Socket writes per second the server aims to stay under across all
    /// subscribers [default: 50000 per writer thread]. With more active
    /// subscribers than this allows at --flush-interval, each is written
    /// less often (at most every 10ms), so one write carries more updates:
    /// a write costs several µs of CPU nearly whatever its size
    /// (BENCHMARKS.md, "What one socket write costs").
    #[arg(long, env = "TICKCAST_WRITE_BUDGET")]
    pub write_budget: Option<u64>,

    /// Bytes queued for one subscriber (not yet accepted by its socket)
    /// above which it stops receiving every update: each symbol's updates
    /// are conflated into one fresh snapshot, sent (after a `conflated`
    /// message naming what was skipped) once the queue drains below half
    /// this mark. A client that chose `?slow=disconnect` is closed instead.
    #[arg(long, env = "TICKCAST_CONFLATE_ABOVE", default_value = "256KiB", value_parser = byte_size)]
    pub conflate_above: usize,

    /// Bytes queued for one subscriber above which it is closed with 1008
    /// "slow consumer" and its queue freed.
    #[arg(long, env = "TICKCAST_DISCONNECT_ABOVE", default_value = "8MiB", value_parser = byte_size)]
    pub disconnect_above: usize,

    /// A subscriber with data queued whose socket accepts no byte for this
    /// long is closed with 1008 "slow consumer".
    #[arg(long, env = "TICKCAST_SLOW_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub slow_timeout: Duration,

    /// Book levels per side of a subscription that names no `depth`: one
    /// of 1, 5, 10, 20, 25, 50, 100, 500, 1000, or `full`.
    #[arg(long, env = "TICKCAST_BOOK_DEPTH", default_value = "10", value_parser = book_depth)]
    pub book_depth: usize,

    /// How long each symbol's updates are kept, as the frames already sent,
    /// for clients that reconnect with `from_seq`; also how long a (depth,
    /// encoding) is still recorded after its last subscriber left. `0`
    /// turns history off (every resume gets a snapshot).
    #[arg(long, env = "TICKCAST_HISTORY", default_value = "5m", value_parser = duration)]
    pub history: Duration,

    /// How long a client whose connection ends holds the history of what
    /// it subscribed to, to come back and resume: the server goes on
    /// encoding it meanwhile even if no one else subscribes at that depth
    /// and encoding.
    #[arg(long, env = "TICKCAST_HISTORY_LINGER", default_value = "60s", value_parser = duration)]
    pub history_linger: Duration,

    /// Most history frames kept per symbol, depth and encoding.
    #[arg(long, env = "TICKCAST_HISTORY_FRAMES", default_value_t = 100_000)]
    pub history_frames: usize,

    /// Most bytes all history together keeps: at the bound, the symbol
    /// adding a frame lets go of its oldest.
    #[arg(long, env = "TICKCAST_HISTORY_BYTES", default_value = "256MiB", value_parser = byte_size)]
    pub history_bytes: usize,

    /// Most symbols the server will carry (bounds memory against a runaway feed).
    #[arg(long, env = "TICKCAST_MAX_SYMBOLS", default_value_t = 100_000)]
    pub max_symbols: usize,

    /// The symbol universe: a file of the symbols the server carries, one a
    /// line (`#` comments and blank lines ignored) or the JSON array that
    /// `GET /symbols` returns. They are known from startup, so a client can
    /// subscribe before a symbol's first tick (it gets a seq-0 snapshot).
    /// Without it, a symbol is known once the feed has sent it.
    #[arg(long, env = "TICKCAST_SYMBOLS_FILE")]
    pub symbols_file: Option<PathBuf>,

    /// Most open client connections, counted from accept (whether still
    /// sending their request or upgraded to a session); more are closed at
    /// once, after a best-effort HTTP 503.
    #[arg(long, env = "TICKCAST_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Largest client message in bytes; larger ones get close code 1009.
    #[arg(long, env = "TICKCAST_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Bytes of control replies (pongs, acks, errors) queued for one client
    /// and not yet written above which its next reply closes it with 1008
    /// "control flood": a client that sends requests or pings without
    /// reading the answers.
    #[arg(long, env = "TICKCAST_MAX_CONTROL_BYTES", default_value = "64KiB", value_parser = byte_size)]
    pub max_control_bytes: usize,

    /// Requests (text or binary messages) and pings one connection may send
    /// per second, on average; 0 turns the limit off. Over it, a request is
    /// answered with `error` `rate_limited` and dropped (a ping gets no
    /// pong); a client that keeps on until it is a whole --request-burst
    /// over is closed with 1008 "rate limited".
    #[arg(long, env = "TICKCAST_MAX_REQUESTS_PER_SEC", default_value_t = 100)]
    pub max_requests_per_sec: u32,

    /// Requests and pings one connection may send at once, above
    /// --max-requests-per-sec (the token bucket's size).
    #[arg(long, env = "TICKCAST_REQUEST_BURST", default_value_t = 200)]
    pub request_burst: u32,

    /// Interval between server pings.
    #[arg(long, env = "TICKCAST_PING_INTERVAL", default_value = "15s", value_parser = duration)]
    pub ping_interval: Duration,

    /// A connection that sends no pong this long after a ping is closed (1008).
    #[arg(long, env = "TICKCAST_PONG_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub pong_timeout: Duration,

    /// On SIGINT/SIGTERM: time allowed to flush close frames before exit.
    #[arg(long, env = "TICKCAST_SHUTDOWN_GRACE", default_value = "1500ms", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// HMAC secret that handshake tokens (JWT, HS256) are signed with, at
    /// least 32 bytes. Turns authentication on: `/ws`, `/replay` and
    /// `/symbols` then need a token (docs/PROTOCOL.md, "Authentication").
    /// Prefer --auth-jwt-secret-file: argv is visible to other users.
    #[arg(long, env = "TICKCAST_AUTH_JWT_SECRET", hide_env_values = true, conflicts_with = "auth_jwt_secret_file")]
    pub auth_jwt_secret: Option<Secret>,

    /// A file holding the HMAC secret (one trailing newline is ignored).
    #[arg(long, env = "TICKCAST_AUTH_JWT_SECRET_FILE")]
    pub auth_jwt_secret_file: Option<PathBuf>,

    /// A PEM public key that handshake tokens may be signed for instead:
    /// RSA (RS256, RS384, RS512) or EC (ES256, ES384). Turns
    /// authentication on; may be combined with the HMAC secret.
    #[arg(long, env = "TICKCAST_AUTH_PUBLIC_KEY")]
    pub auth_public_key: Option<PathBuf>,

    /// How long before its token's `exp` a session is sent
    /// `token_expiring`; it is closed with 4001 at `exp` unless it sends a
    /// `refresh` with a new token.
    #[arg(long, env = "TICKCAST_AUTH_EXPIRY_WARNING", default_value = "60s", value_parser = duration)]
    pub auth_expiry_warning: Duration,

    /// PEM certificate chain: with --tls-key, serve only `https://` and
    /// `wss://` (rustls, ring provider).
    #[arg(long, env = "TICKCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "TICKCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Log filter, e.g. `info`, `tickcast=debug` (RUST_LOG syntax).
    #[arg(long, env = "TICKCAST_LOG", default_value = "info")]
    pub log: String,

    // The HTTP front door (issue 15): bounds before the upgrade.
    /// Time a client connection has, from accept, to send its request
    /// headers and be upgraded; then it is closed (a plain HTTP connection,
    /// keep-alive or not, too). Bounds slowloris clients.
    #[arg(long, env = "TICKCAST_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub handshake_timeout: Duration,

    /// Largest request head (request line and headers) the server reads;
    /// a larger one gets HTTP 431 and the connection is closed.
    #[arg(long, env = "TICKCAST_MAX_HEADER_BYTES", default_value = "16KiB", value_parser = byte_size)]
    pub max_header_bytes: usize,

    /// Most open connections from one IP address; more are closed at once,
    /// after a best-effort HTTP 503. Behind a load balancer or NAT every
    /// client shares its address: raise this to --max-connections there.
    #[arg(long, env = "TICKCAST_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: usize,

    /// Origins whose pages may open a WebSocket, comma-separated: exact
    /// (`https://app.example.com`), subdomain patterns
    /// (`https://*.example.com`), `null`, `file://`, or `*` for all. A
    /// handshake from another origin gets HTTP 403; one without an `Origin`
    /// header (not a browser) is allowed [default: all, with a warning at
    /// start].
    #[arg(long, env = "TICKCAST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// Serve `/metrics` and `/healthz` on this address too; `/metrics` on
    /// --listen then answers 404 [default: off, both on --listen].
    #[arg(long, env = "TICKCAST_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Sample 1 tick in N (per feed connection or source) and time each
    /// stage of its way, feed read to socket write: quantiles in /metrics
    /// (tickcast_trace_stage_ns) and a table in the log at shutdown. 0 =
    /// off; off costs one branch per tick.
    #[arg(long, env = "TICKCAST_TRACE_LATENCY", default_value_t = 0)]
    pub trace_latency: u32,
}

impl ServeArgs {
    /// Validates every flag and reports all problems at once.
    pub fn into_config(self) -> Result<Config, Vec<String>> {
        let writers = self.writers.unwrap_or_else(default_writers);
        let write_budget = self.write_budget.unwrap_or(WRITE_BUDGET_PER_WRITER * writers.max(1) as u64);
        let mut errors = self.range_errors(writers, write_budget);
        self.front_door_errors(&mut errors);
        let feed = self.feed.parse::<FeedSpec>().map_err(|e| errors.push(e.to_string())).ok();
        let replay = self.replay_options(feed.as_ref(), &mut errors);
        let record = self.record_settings(&mut errors);
        let tcp_feed = self.tcp_feed_settings(feed.as_ref(), &mut errors);
        let nats = self.nats_settings(feed.as_ref(), &mut errors);
        let auth = self.auth_verifier(&mut errors);
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => tickcast::server::tls::server_config(cert, key)
                .map_err(|e| errors.push(format!("--tls-cert/--tls-key: {e}")))
                .ok(),
            _ => None,
        };
        if let Some(dir) = &self.replay_dir {
            if !dir.is_dir() {
                errors.push(format!("--replay-dir {}: not a directory", dir.display()));
            }
        }
        let universe = match &self.symbols_file {
            Some(path) => universe::load(path, self.max_symbols).unwrap_or_else(|e| {
                errors.push(format!("--symbols-file {e}"));
                Vec::new()
            }),
            None => Vec::new(),
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            errors.push(format!("--log {:?}: {e}", self.log));
        }
        match feed {
            Some(feed) if errors.is_empty() => Ok(Config {
                listen: self.listen,
                feed,
                tcp_feed,
                synthetic: SyntheticSettings { symbols: self.symbols, rate: self.rate, seed: self.seed },
                replay,
                record,
                publish: self.publish.map(|u| u.0),
                nats,
                replay_dir: self.replay_dir,
                max_replay_sessions: self.max_replay_sessions,
                ring_capacity: self.ring_capacity,
                writers,
                flush_interval: self.flush_interval,
                write_budget,
                slow: SlowConsumerPolicy {
                    conflate_above: self.conflate_above,
                    disconnect_above: self.disconnect_above,
                    slow_timeout: self.slow_timeout,
                },
                book_depth: self.book_depth,
                history: HistoryPolicy {
                    keep: self.history,
                    linger: self.history_linger,
                    max_frames: self.history_frames,
                    max_bytes: self.history_bytes,
                },
                max_symbols: self.max_symbols,
                universe,
                max_connections: self.max_connections,
                max_message_bytes: self.max_message_bytes,
                max_control_bytes: self.max_control_bytes,
                max_requests_per_sec: self.max_requests_per_sec,
                request_burst: self.request_burst,
                ping_interval: self.ping_interval,
                pong_timeout: self.pong_timeout,
                shutdown_grace: self.shutdown_grace,
                handshake_timeout: self.handshake_timeout,
                max_header_bytes: self.max_header_bytes,
                max_connections_per_ip: self.max_connections_per_ip,
                allowed_origins: self.allowed_origins,
                metrics_listen: self.metrics_listen,
                trace_latency: self.trace_latency,
                auth,
                auth_expiry_warning: self.auth_expiry_warning,
                tls,
            }),
            _ => Err(errors),
        }
    }

    /// Every flag with a range, checked in one table: each entry is whether
    /// the value is acceptable and what to say if not.
    fn range_errors(&self, writers: usize, write_budget: u64) -> Vec<String> {
        let ms = Duration::from_millis;
        let checks = [
            ((1..=100_000).contains(&self.symbols), format!("--symbols {}: must be 1 to 100000", self.symbols)),
            (
                self.rate.is_finite() && self.rate > 0.0 && self.rate <= 50_000_000.0,
                format!("--rate {}: must be > 0 and at most 50000000 updates/s", self.rate),
            ),
            (
                (16..=1 << 24).contains(&self.ring_capacity),
                format!("--ring-capacity {}: must be 16 to 16777216 ticks", self.ring_capacity),
            ),
            ((1..=256).contains(&writers), format!("--writers {writers}: must be 1 to 256")),
            (
                (1_000..=1_000_000_000).contains(&write_budget),
                format!("--write-budget {write_budget}: must be 1000 to 1000000000 writes/s"),
            ),
            (
                (1..=10_000_000).contains(&self.max_symbols),
                format!("--max-symbols {}: must be 1 to 10000000", self.max_symbols),
            ),
            (
                self.symbols <= self.max_symbols,
                format!("--symbols {} exceeds --max-symbols {}", self.symbols, self.max_symbols),
            ),
            (
                (1..=1_000_000).contains(&self.max_connections),
                format!("--max-connections {}: must be 1 to 1000000", self.max_connections),
            ),
            (
                (128..=16 << 20).contains(&self.max_message_bytes),
                format!("--max-message-bytes {}: must be 128 to 16777216", self.max_message_bytes),
            ),
            (
                (4 * 1024..=1 << 30).contains(&self.max_control_bytes),
                format!("--max-control-bytes {}: must be 4096 to 1073741824 bytes", self.max_control_bytes),
            ),
            (
                self.max_requests_per_sec <= 1_000_000,
                format!("--max-requests-per-sec {}: must be 0 (no limit) to 1000000", self.max_requests_per_sec),
            ),
            (
                (1..=1_000_000).contains(&self.request_burst),
                format!("--request-burst {}: must be 1 to 1000000", self.request_burst),
            ),
            (
                self.ping_interval >= ms(100),
                format!("--ping-interval {:?}: must be at least 100ms", self.ping_interval),
            ),
            (self.pong_timeout >= ms(100), format!("--pong-timeout {:?}: must be at least 100ms", self.pong_timeout)),
            (
                (64 * 1024..=1 << 30).contains(&self.disconnect_above),
                format!("--disconnect-above {}: must be 65536 to 1073741824 bytes", self.disconnect_above),
            ),
            (
                (64 * 1024..=self.disconnect_above).contains(&self.conflate_above),
                format!(
                    "--conflate-above {}: must be 65536 bytes to --disconnect-above ({}); equal to it turns conflation off",
                    self.conflate_above, self.disconnect_above
                ),
            ),
            (self.slow_timeout >= ms(100), format!("--slow-timeout {:?}: must be at least 100ms", self.slow_timeout)),
            (
                self.flush_interval <= ms(100),
                format!("--flush-interval {:?}: must be at most 100ms", self.flush_interval),
            ),
            (
                self.shutdown_grace <= Duration::from_secs(60),
                format!("--shutdown-grace {:?}: must be at most 60s", self.shutdown_grace),
            ),
            (
                (1 << 20..=1 << 40).contains(&self.record_segment_bytes),
                format!("--record-segment-bytes {}: must be 1MiB to 1TiB", self.record_segment_bytes),
            ),
            (
                self.record_segment_age >= Duration::from_secs(1),
                format!("--record-segment-age {:?}: must be at least 1s", self.record_segment_age),
            ),
            (
                (1..=10_000).contains(&self.max_replay_sessions),
                format!("--max-replay-sessions {}: must be 1 to 10000", self.max_replay_sessions),
            ),
        ];
        checks.into_iter().filter(|(ok, _)| !ok).map(|(_, message)| message).collect()
    }

    /// The HTTP front door's flags (issue 15).
    fn front_door_errors(&self, errors: &mut Vec<String>) {
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&self.handshake_timeout) {
            errors.push(format!("--handshake-timeout {:?}: must be 100ms to 10m", self.handshake_timeout));
        }
        // hyper reads at least 8 KiB at a time.
        if !(8 << 10..=1 << 20).contains(&self.max_header_bytes) {
            errors.push(format!("--max-header-bytes {}: must be 8KiB to 1MiB", self.max_header_bytes));
        }
        if !(1..=1_000_000).contains(&self.max_connections_per_ip) {
            errors.push(format!("--max-connections-per-ip {}: must be 1 to 1000000", self.max_connections_per_ip));
        }
        if let Some(entries) = &self.allowed_origins {
            if let Err(e) = AllowedOrigins::parse(entries) {
                errors.push(e.to_string());
            }
        }
        if self.metrics_listen.is_some_and(|m| m == self.listen && m.port() != 0) {
            errors.push(format!("--metrics-listen {}: must differ from --listen", self.listen));
        }
    }

    /// `--auth-jwt-secret` (or its file) and `--auth-public-key`, loaded
    /// and checked; `None` when neither is given (an open server).
    fn auth_verifier(&self, errors: &mut Vec<String>) -> Option<Arc<Verifier>> {
        let mut secret = self.auth_jwt_secret.as_ref().map(|s| s.0.clone().into_bytes());
        if let Some(path) = &self.auth_jwt_secret_file {
            match std::fs::read(path) {
                Ok(mut bytes) => {
                    for end in [b'\n', b'\r'] {
                        if bytes.last() == Some(&end) {
                            bytes.pop();
                        }
                    }
                    secret = Some(bytes);
                }
                Err(e) => errors.push(format!("--auth-jwt-secret-file {}: {e}", path.display())),
            }
        }
        let public = match &self.auth_public_key {
            Some(path) => match std::fs::read(path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    errors.push(format!("--auth-public-key {}: {e}", path.display()));
                    return None;
                }
            },
            None => None,
        };
        if secret.is_none() && public.is_none() {
            return None;
        }
        if self.auth_expiry_warning > Duration::from_secs(24 * 3600) {
            errors.push(format!("--auth-expiry-warning {:?}: must be at most 24h", self.auth_expiry_warning));
        }
        Verifier::new(secret.as_deref(), public.as_deref())
            .map(Arc::new)
            .map_err(|e| errors.push(format!("--auth-*: {e}")))
            .ok()
    }

    /// `--speed`, `--loop`, `--from` and `--to`, which only a replay feed takes.
    fn replay_options(&self, feed: Option<&FeedSpec>, errors: &mut Vec<String>) -> ReplayOptions {
        let is_replay = matches!(feed, Some(FeedSpec::Replay(_)));
        for (flag, set) in [
            ("--speed", self.speed.is_some()),
            ("--loop", self.looped),
            ("--from", self.from.is_some()),
            ("--to", self.to.is_some()),
        ] {
            if set && !is_replay && feed.is_some() {
                errors.push(format!("{flag} applies only to --feed replay:PATH"));
            }
        }
        let speed = self.speed.as_deref().unwrap_or("1").parse::<Speed>().unwrap_or_else(|e| {
            errors.push(format!("--{e}"));
            Speed::Max
        });
        let mut event_time = |flag: &str, value: &Option<String>| {
            let parsed = parse_event_time(value.as_deref()?);
            parsed.map_err(|e| errors.push(format!("{flag}: {e}"))).ok()
        };
        let from = event_time("--from", &self.from);
        let to = event_time("--to", &self.to);
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                errors.push(format!("--from {f} is after --to {t}"));
            }
        }
        ReplayOptions { speed, looped: self.looped, from, to }
    }

    /// The NATS options, checked: pairs given together, files present, a
    /// prefix NATS accepts, and no `--publish` on an edge.
    fn nats_settings(&self, feed: Option<&FeedSpec>, errors: &mut Vec<String>) -> NatsSettings {
        let mut nats = NatsSettings::new(self.publish.as_ref().map(|u| u.0.clone()).unwrap_or_default());
        let prefix_ok = !self.nats_prefix.is_empty()
            && self.nats_prefix.len() <= 64
            && self.nats_prefix.split('.').all(|t| !t.is_empty())
            && self.nats_prefix.bytes().all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>');
        if !prefix_ok {
            errors.push(format!(
                "--nats-prefix {:?}: 1 to 64 printable characters, dot-separated non-empty tokens, no '*' or '>'",
                self.nats_prefix
            ));
        }
        if self.publish.is_some() && matches!(feed, Some(FeedSpec::Nats(_))) {
            errors.push("--publish with --feed nats://: an edge follows a sequencer and cannot be one".into());
        }
        match (&self.nats_user, &self.nats_password) {
            (Some(u), Some(p)) => nats.user = Some((u.clone(), p.clone())),
            (None, None) => {}
            _ => errors.push("--nats-user and --nats-password go together".into()),
        }
        match (&self.nats_cert, &self.nats_key) {
            (Some(c), Some(k)) => nats.tls_client = Some((c.clone(), k.clone())),
            (None, None) => {}
            _ => errors.push("--nats-cert and --nats-key go together".into()),
        }
        for (flag, path) in [
            ("--nats-creds", &self.nats_creds),
            ("--nats-ca", &self.nats_ca),
            ("--nats-cert", &self.nats_cert),
            ("--nats-key", &self.nats_key),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    errors.push(format!("{flag} {}: not a readable file", p.display()));
                }
            }
        }
        nats.prefix = self.nats_prefix.clone();
        nats.creds = self.nats_creds.clone();
        nats.token = self.nats_token.clone();
        nats.tls_ca = self.nats_ca.clone();
        nats.batch = self.nats_batch;
        nats
    }

    /// The tcp feed's doors: `--max-feed-connections`, `--feed-token`,
    /// `--feed-allow`, `--feed-idle-timeout`, `--feed-format`, and the rule
    /// that a feed port off loopback needs a token or an allow-list.
    fn tcp_feed_settings(&self, feed: Option<&FeedSpec>, errors: &mut Vec<String>) -> TcpFeedSettings {
        let settings = TcpFeedSettings {
            max_connections: self.max_feed_connections,
            idle_timeout: self.feed_idle_timeout,
            access: FeedAccess { token: self.feed_token.clone(), allow: self.feed_allow.clone() },
            format: self.feed_format.unwrap_or_default(),
        };
        if !(1..=10_000).contains(&settings.max_connections) {
            errors.push(format!("--max-feed-connections {}: must be 1 to 10000", settings.max_connections));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(86_400)).contains(&settings.idle_timeout) {
            errors.push(format!("--feed-idle-timeout {:?}: must be 100ms to 24h", settings.idle_timeout));
        }
        match feed {
            Some(FeedSpec::Tcp(addr)) => {
                if let Err(e) = settings.access.check_exposure(*addr) {
                    errors.push(e);
                }
            }
            Some(_) => {
                for (flag, set) in [
                    ("--feed-token", self.feed_token.is_some()),
                    ("--feed-allow", !self.feed_allow.is_empty()),
                    ("--feed-format", self.feed_format.is_some()),
                ] {
                    if set {
                        errors.push(format!("{flag} applies only to --feed tcp://IP:PORT"));
                    }
                }
            }
            None => {}
        }
        settings
    }

    /// `--record` and how the tick log is written.
    fn record_settings(&self, errors: &mut Vec<String>) -> Option<RecordSettings> {
        let fsync = self.fsync.parse::<Fsync>().unwrap_or_else(|e| {
            errors.push(format!("--fsync: {e}"));
            Fsync::Never
        });
        let options = WriterOptions {
            segment_bytes: self.record_segment_bytes as u64,
            segment_age: self.record_segment_age,
            fsync,
        };
        self.record.clone().map(|dir| RecordSettings { dir, options })
    }
}

/// `tickcast convert IN OUT`.
#[derive(Debug, Clone, Args)]
pub struct ConvertArgs {
    /// The recording to read: a Binance capture (plain or gzip), a DBN file
    /// (plain or zstd) or a tick log.
    pub input: PathBuf,
    /// The tick-log directory to write (created; must not already hold a
    /// tick log).
    pub output: PathBuf,
    /// Start a new segment file at this size.
    #[arg(long, default_value = "256MiB", value_parser = byte_size)]
    pub segment_bytes: usize,
}

/// `tickcast inspect FILE`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The recording: a tick log (directory or segment), a Binance capture
    /// or a DBN file.
    pub path: PathBuf,
    /// Print JSON instead of a table (for scripts).
    #[arg(long)]
    pub json: bool,
    /// Most gaps listed per symbol (all are counted).
    #[arg(long, default_value_t = 20)]
    pub max_gaps: usize,
}

/// Runs `tickcast convert`.
pub fn run_convert(args: ConvertArgs) -> ExitCode {
    match convert::convert_to_ticklog(&args.input, &args.output, args.segment_bytes as u64) {
        Ok(report) => {
            eprintln!(
                "tickcast convert: {} events of {} symbols from {} to {} in {:.2}s ({:.0} events/s)",
                report.events,
                report.symbols,
                args.input.display(),
                args.output.display(),
                report.elapsed.as_secs_f64(),
                report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
            );
            if report.gaps > 0 {
                eprintln!(
                    "tickcast convert: the input has {} id gaps (kept as they are; `tickcast inspect` lists them)",
                    report.gaps
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickcast convert: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `tickcast inspect`.
pub fn run_inspect(args: InspectArgs) -> ExitCode {
    let summary = match inspect::summarize(&args.path, args.max_gaps) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tickcast inspect: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out = if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(text) => text + "\n",
            Err(e) => {
                eprintln!("tickcast inspect: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        inspect::table(&summary)
    };
    // One write at the end, and a closed pipe (`| head`) is not an error:
    // `println!` would panic on it.
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("tickcast inspect: cannot write the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match &summary.error {
        Some(e) => {
            eprintln!("tickcast inspect: stopped at a bad record: {e}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, Vec<String>> {
        let cli = Cli::try_parse_from(std::iter::once("tickcast").chain(args.iter().copied())).expect("clap parse");
        cli.serve.into_config()
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.feed, FeedSpec::Synthetic);
        assert_eq!(c.ping_interval, Duration::from_secs(15));
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let errors =
            parse(&["--symbols", "0", "--rate", "-5", "--writers", "0", "--feed", "udp://x", "--max-symbols", "0"])
                .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("--symbols 0")));
        assert!(errors.iter().any(|e| e.contains("udp://x")));
    }

    #[test]
    fn the_write_budget_defaults_per_writer_and_is_bounded() {
        assert_eq!(parse(&["--writers", "3"]).unwrap().write_budget, 3 * WRITE_BUDGET_PER_WRITER);
        assert_eq!(parse(&["--write-budget", "250000"]).unwrap().write_budget, 250_000);
        let errors = parse(&["--write-budget", "10"]).unwrap_err();
        assert!(errors[0].starts_with("--write-budget 10: must be 1000"), "{errors:?}");
    }

    #[test]
    fn request_limits_default_and_are_bounded() {
        let c = parse(&[]).unwrap();
        assert_eq!((c.max_requests_per_sec, c.request_burst, c.max_control_bytes), (100, 200, 64 << 10));
        let c = parse(&["--max-requests-per-sec", "0", "--max-control-bytes", "1MiB"]).unwrap();
        assert_eq!((c.max_requests_per_sec, c.max_control_bytes), (0, 1 << 20));
        let errors = parse(&["--request-burst", "0", "--max-control-bytes", "100"]).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("--request-burst 0: must be 1")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("--max-control-bytes 100: must be 4096")), "{errors:?}");
    }

    #[test]
    fn byte_sizes_take_binary_suffixes() {
        assert_eq!(byte_size("65536"), Ok(65536));
        assert_eq!(byte_size("256KiB"), Ok(256 << 10));
        assert_eq!(byte_size("8MiB"), Ok(8 << 20));
        assert_eq!(byte_size("1G"), Ok(1 << 30));
        assert!(byte_size("8MB").unwrap_err().to_string().contains("unknown unit"));
        assert!(byte_size("lots").is_err());
        assert!(byte_size("99999999999999999999G").is_err());
        let c = parse(&["--conflate-above", "64KiB", "--disconnect-above", "1MiB"]).unwrap();
        assert_eq!((c.slow.conflate_above, c.slow.disconnect_above), (64 << 10, 1 << 20));
        let errors = parse(&["--conflate-above", "16MiB"]).unwrap_err();
        assert!(errors[0].starts_with("--conflate-above 16777216"), "{errors:?}");
    }

    #[test]
    fn replay_and_record_flags_are_checked() {
        let c =
            parse(&["--feed", "replay:x.gz", "--speed", "max", "--loop", "--from", "2024-08-08T23:55:00Z"]).unwrap();
        assert_eq!(c.feed, FeedSpec::Replay("x.gz".into()));
        assert_eq!(c.replay.speed, Speed::Max);
        assert!(c.replay.looped);
        assert_eq!(c.replay.from, Some(1_723_161_300_000_000_000));
        let errors = parse(&["--speed", "10"]).unwrap_err();
        assert_eq!(errors, ["--speed applies only to --feed replay:PATH"]);
        let errors = parse(&["--feed", "replay:x", "--speed", "warp", "--from", "9", "--to", "8"]).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("--speed \"warp\"")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("is after --to")), "{errors:?}");
        let errors = parse(&["--feed", "replay:x", "--from", "2600-01-01T00:00:00Z"]).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("--from: ") && e.contains("out of range")), "{errors:?}");
        let errors = parse(&["--fsync", "sometimes", "--replay-dir", "/no/such/dir"]).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("--fsync: invalid fsync policy \"sometimes\"")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("not a directory")), "{errors:?}");
        let c = parse(&["--record", "/tmp/x", "--fsync", "always"]).unwrap();
        assert_eq!(c.record.unwrap().options.fsync, Fsync::Always);
    }

    #[test]
    fn front_door_flags_are_checked() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.handshake_timeout, Duration::from_secs(5));
        assert_eq!((c.max_header_bytes, c.max_connections_per_ip), (16 << 10, 1024));
        assert_eq!((c.allowed_origins, c.metrics_listen), (None, None));
        let c =
            parse(&["--allowed-origins", "https://a.example,https://*.b.example", "--metrics-listen", "127.0.0.1:9"])
                .unwrap();
        assert_eq!(c.allowed_origins.unwrap(), ["https://a.example", "https://*.b.example"]);
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9".parse().unwrap()));
        let errors = parse(&[
            "--handshake-timeout",
            "1ms",
            "--max-header-bytes",
            "1KiB",
            "--max-connections-per-ip",
            "0",
            "--allowed-origins",
            "example.com",
            "--metrics-listen",
            "127.0.0.1:8080",
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 5, "{errors:#?}");
        assert!(errors.iter().any(|e| e.starts_with("--allowed-origins \"example.com\"")), "{errors:?}");
    }

    #[test]
    fn the_tcp_feed_doors_are_checked() {
        let c = parse(&["--feed", "tcp://127.0.0.1:9000"]).unwrap();
        assert_eq!(c.tcp_feed, TcpFeedSettings::default(), "loopback needs no lock");
        let errors = parse(&["--feed", "tcp://0.0.0.0:9000", "--max-feed-connections", "0"]).unwrap_err();
        assert!(errors.iter().any(|e| e.contains("listens beyond loopback")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("--max-feed-connections 0")), "{errors:?}");
        let c = parse(&["--feed", "tcp://0.0.0.0:9000", "--feed-allow", "10.0.0.0/8,::1", "--feed-idle-timeout", "5s"])
            .unwrap();
        assert_eq!(c.tcp_feed.access.allow.len(), 2);
        assert_eq!(c.tcp_feed.idle_timeout, Duration::from_secs(5));
        let c = parse(&["--feed", "tcp://0.0.0.0:9000", "--feed-token", "0123456789abcdef0123"]).unwrap();
        assert!(c.tcp_feed.access.token.is_some());
        assert!(!format!("{c:?}").contains("0123456789abcdef0123"), "the token never prints");
        let errors = parse(&["--feed-token", "0123456789abcdef0123"]).unwrap_err();
        assert_eq!(errors, ["--feed-token applies only to --feed tcp://IP:PORT"]);
        assert!(Cli::try_parse_from(["tickcast", "--feed-token", "short"]).is_err());
        assert!(Cli::try_parse_from(["tickcast", "--feed-allow", "10.0.0.0/40"]).is_err());
        assert_eq!(c.tcp_feed.format, FeedFormat::Auto);
        let c = parse(&["--feed", "tcp://127.0.0.1:9000", "--feed-format", "binary"]).unwrap();
        assert_eq!(c.tcp_feed.format, FeedFormat::Binary);
        let err = Cli::try_parse_from(["tickcast", "--feed-format", "xml"]).unwrap_err().to_string();
        assert!(err.contains("\"xml\" is not a feed format: expected auto, json or binary"), "{err}");
        let errors = parse(&["--feed-format", "json"]).unwrap_err();
        assert_eq!(errors, ["--feed-format applies only to --feed tcp://IP:PORT"]);
    }

    #[test]
    fn malformed_values_are_rejected_by_the_parser() {
        assert!(Cli::try_parse_from(["tickcast", "--ping-interval", "soon"]).is_err());
        assert!(Cli::try_parse_from(["tickcast", "--symbols", "many"]).is_err());
        assert!(Cli::try_parse_from(["tickcast", "--listen", "nowhere"]).is_err());
    }
}

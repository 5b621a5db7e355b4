//! The flags of `tickcast-bench`, and the checks that reject a run that
//! cannot mean anything, with the reason, before anything connects.
//!
//! Imports: `tickcast::wire::Encoding` (the `--encoding` names), the
//! [`Target`] trait (each target adds its own checks), and `measure` (a
//! `--server-pid` must be readable).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, ensure};
use clap::Parser;
use tickcast::wire::Encoding;

use crate::measure::proc_stats;
use crate::target::{Target, TargetKind};

/// Shortest `--rss-every`: each sample is a `/metrics` request the server
/// must render, so the sampling must not become load of its own.
pub const MIN_RSS_EVERY: Duration = Duration::from_millis(100);

/// Highest `--rate`: the publisher frames up to 100 ms of ticks at once
/// after a stall, and that buffer must stay modest.
pub const MAX_RATE: f64 = 10_000_000.0;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn rss_interval(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d < MIN_RSS_EVERY {
        return Err(format!("must be at least {}", humantime::format_duration(MIN_RSS_EVERY)));
    }
    Ok(d)
}

fn byte_rate(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1 byte per second".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number of bytes per second (e.g. 65536)")),
    }
}

fn encoding(s: &str) -> Result<Encoding, String> {
    Encoding::from_name(s).ok_or_else(|| format!("unknown encoding {s:?}: use msgpack, protobuf or json"))
}

/// How the publisher frames its ticks into tickcast's tcp feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FeedFormat {
    /// Newline-delimited JSON ticks.
    #[default]
    Json,
    /// Binary tick records (`tickcast::model::record`), length-prefixed.
    Binary,
}

/// Load generator: N subscribers against a running server; reports
/// delivered msgs/s, latency percentiles and server CPU per message.
#[derive(Debug, Clone, Parser)]
#[command(name = "tickcast-bench", version)]
pub struct BenchArgs {
    /// System under test: `tickcast`, `nats` (nats-server's WebSocket
    /// listener), `node` (benches/peers/node/server.js) or `minimal`
    /// (`tickcast-minimal`, the simplest fan-out server).
    #[arg(long, value_enum, default_value_t = TargetKind::Tickcast)]
    pub target: TargetKind,
    /// WebSocket address of the system under test (tickcast: also HTTP for
    /// `/metrics` and `/symbols`; nats and node: path `/`; minimal: `/ws`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub server: SocketAddr,
    /// Number of subscribers (WebSocket connections).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Symbols per subscriber (K).
    #[arg(long, default_value_t = 5)]
    pub per_sub: usize,
    /// Symbols in play (S): the first S of the server's `/symbols`, or with
    /// --drive-feed (and for peers) S generated names.
    #[arg(long, default_value_t = 50)]
    pub symbols: usize,
    /// Encoding the subscribers ask for (tickcast; nats and node send JSON,
    /// minimal only msgpack).
    #[arg(long, default_value = "msgpack", value_parser = encoding)]
    pub encoding: Encoding,
    /// Time to connect and settle before measuring.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub warmup: Duration,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// Publish ticks at this address: tickcast's tcp feed (the server must
    /// run with `--feed tcp://ADDR`), nats' TCP client port, the node
    /// server's WebSocket address, or tickcast-minimal's `--feed`. Latency is then measured from the send
    /// time stamped into `ts_event`. Required for peers, except with --idle.
    #[arg(long)]
    pub drive_feed: Option<SocketAddr>,
    /// With --drive-feed: ticks per second over the S symbols, round robin.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// With --drive-feed into tickcast: send the ticks as `json` lines or
    /// as `binary` tick records (the same quotes, send time in `ts_event`);
    /// the server's `--feed-format auto` (its default) takes either.
    #[arg(long, value_enum, default_value_t = FeedFormat::Json)]
    pub feed_format: FeedFormat,
    /// Extra subscribers on every symbol that subscribe and then never
    /// read (small receive buffer): the server must conflate, then drop,
    /// them without anyone else noticing. Not counted as delivered.
    #[arg(long, default_value_t = 0)]
    pub stalled: usize,
    /// Extra subscribers on every symbol that read at most
    /// --slow-read-rate bytes per second (small receive buffer). Not counted
    /// as delivered; the report shows what they were told they missed.
    #[arg(long, default_value_t = 0)]
    pub slow_readers: usize,
    /// With --slow-readers: bytes per second each of them reads.
    #[arg(long, default_value = "65536", value_parser = byte_rate)]
    pub slow_read_rate: u64,
    /// Sample the server's RSS (from /metrics or /proc) at this interval through
    /// warm-up and measurement, and report the timeline.
    #[arg(long, value_parser = rss_interval)]
    pub rss_every: Option<Duration>,
    /// PID of the server process: its CPU time and RSS are read from
    /// /proc/PID/stat instead of /metrics. Required for nats and node;
    /// optional for tickcast (use it there too for a like-for-like reading).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// More processes that serve the same clients (a cluster's sequencer,
    /// other edges, nats-server), comma-separated PIDs: their CPU and RSS
    /// are added to --server-pid's, so CPU per message is the whole
    /// system's.
    #[arg(long, value_delimiter = ',')]
    pub extra_pids: Vec<u32>,

    /// Idle-memory mode: no publisher; connect this many subscribers on
    /// --per-sub symbols each, wait until all are subscribed, settle, and
    /// report the server's RSS growth per connection.
    #[arg(long)]
    pub idle: Option<usize>,
    /// With --idle: hold the idle subscribers while a load run measures
    /// (--subscribers on --per-sub of --symbols, --drive-feed at --rate),
    /// to see what an idle crowd costs the active subscribers. The idle
    /// ones then take --per-sub of --symbols quiet symbols of their own,
    /// announced once and never published again, so they stay idle.
    #[arg(long)]
    pub with_load: bool,
    /// With --idle against a 127.x server: the first loopback source
    /// address of the idle connections. Each source address takes at most
    /// 5,000 (a fifth of the default ephemeral range, where binding stays
    /// fast), the next address the next 5,000, so --idle can pass the
    /// range. A second
    /// bench process holding idle connections at the same time (each
    /// process has its own open-file limit) takes another base.
    #[arg(long, default_value = "127.0.0.2")]
    pub source_base: Ipv4Addr,
    /// Snapshot-storm mode (tickcast only): one subscriber subscribes "*"
    /// over the server's --symbols symbols and reads until it has every
    /// snapshot; reports the time to the last one and the server's peak RSS.
    #[arg(long)]
    pub snapshots: bool,
    /// Resume mode (tickcast only): a client on the first symbol of the
    /// server's /symbols leaves, comes back with `from_seq` once this many
    /// updates of it were published, and times getting them all from the
    /// server's history, checking they are exactly the missed ones.
    #[arg(long)]
    pub resume: Option<u64>,
    /// Book depth the subscribers ask for: 1, 5, 10, 20, 25, 50, 100, 500,
    /// 1000 or full (default: the server's --book-depth). Used by --snapshots
    /// and --resume.
    #[arg(long, default_value = "10")]
    pub depth: String,
    /// Also print the summary as one JSON line (for scripts).
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// The K symbols of subscriber `i`: K consecutive ones of `names` from
    /// `i·K`, wrapping, so every symbol has N·K/S subscribers.
    pub fn symbols_of(&self, i: usize, names: &[String]) -> Vec<String> {
        (0..self.per_sub).map(|j| names[(i * self.per_sub + j) % names.len()].clone()).collect()
    }
}

/// Rejects flag combinations that cannot make a meaningful run, with the
/// reason, before anything connects: first those of every target, then
/// `target`'s own.
pub fn check(args: &BenchArgs, target: &dyn Target) -> anyhow::Result<()> {
    ensure!(
        args.subscribers > 0 && args.per_sub > 0 && args.symbols > 0,
        "--subscribers, --per-sub and --symbols must be at least 1"
    );
    ensure!(
        args.per_sub <= args.symbols,
        "--per-sub {} is more than --symbols {}: a subscriber would take a symbol twice",
        args.per_sub,
        args.symbols
    );
    ensure!(args.slow_read_rate > 0, "--slow-read-rate must be at least 1 byte per second");
    if args.rss_every.is_some_and(|every| every < MIN_RSS_EVERY) {
        bail!("--rss-every must be at least {}", humantime::format_duration(MIN_RSS_EVERY));
    }
    if args.drive_feed.is_some() && !(args.rate.is_finite() && args.rate > 0.0 && args.rate <= MAX_RATE) {
        bail!("--rate {}: must be > 0 and at most {MAX_RATE} ticks/s", args.rate);
    }
    if args.feed_format == FeedFormat::Binary {
        ensure!(
            args.target == TargetKind::Tickcast,
            "--feed-format binary: only tickcast's tcp feed takes binary records"
        );
        ensure!(args.drive_feed.is_some(), "--feed-format binary needs --drive-feed: it is how the bench publishes");
    }
    target.check(args)?;
    ensure!(args.idle.is_some() || !args.with_load, "--with-load runs a load beside --idle: give --idle N");
    if args.with_load {
        ensure!(args.drive_feed.is_some(), "--with-load needs --drive-feed: the idle subscribers' symbols stay quiet");
    }
    if let Some(n) = args.idle {
        ensure!(n > 0, "--idle must be at least 1 connection");
        ensure!(
            args.stalled == 0 && args.slow_readers == 0,
            "--idle measures idle subscribers only: drop --stalled and --slow-readers"
        );
    }
    if args.snapshots {
        ensure!(args.target == TargetKind::Tickcast, "--snapshots measures tickcast only");
        ensure!(
            args.idle.is_none() && args.drive_feed.is_none(),
            "--snapshots runs alone: drop --idle and --drive-feed"
        );
    }
    if let Some(n) = args.resume {
        ensure!(n > 0, "--resume must be at least 1 missed update");
        ensure!(args.target == TargetKind::Tickcast, "--resume measures tickcast only");
        ensure!(
            args.idle.is_none() && args.drive_feed.is_none() && !args.snapshots,
            "--resume runs alone: drop --idle, --drive-feed and --snapshots"
        );
    }
    if let Some(pid) = args.server_pid {
        proc_stats(pid)?;
    }
    Ok(())
}

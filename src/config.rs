//! Command-line flags and the validated server configuration.
//!
//! In: `argv` and `TICKCAST_*` environment variables. Out: a [`Config`]
//! that the server runs with. Tests build a [`Config`] directly.
//!
//! Every tunable is a flag with an environment fallback, a stated default
//! and a help line. Validation reports every bad value at once, not just
//! the first.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::feed::replay::{parse_event_time, Speed};
use crate::feed::{FeedSpec, ReplayOptions, SyntheticSettings};
use crate::record::RecordSettings;
use crate::ticklog::{Fsync, WriterOptions};

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
    Convert(crate::tools::ConvertArgs),
    /// Summarize a recording: per symbol, counts by type, first and last
    /// event time, and any seq or update-id gaps.
    Inspect(crate::tools::InspectArgs),
}

/// Parses a byte count: a plain integer, or one with a binary suffix
/// (`256KiB`, `8MiB`, `1GiB`; `K`, `M`, `G` mean the same).
pub fn byte_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" | "k" | "kiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => return Err(format!("unknown unit {other:?} (examples: 65536, 256KiB, 8MiB)")),
    };
    let n: usize = digits.parse().map_err(|_| format!("{s:?} is not a byte count (examples: 65536, 256KiB, 8MiB)"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 15s, 500ms, 1m)"))
}

/// The server's flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address for HTTP and WebSocket clients (`/ws`, `/metrics`, `/healthz`).
    #[arg(long, env = "TICKCAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Market-data source: `synthetic`; `tcp://IP:PORT` to listen for feed
    /// handlers sending newline-delimited JSON ticks; or `replay:PATH` to
    /// play back a recording (a tick log directory or segment, a Binance
    /// capture, plain or gzip, or a DBN file, plain or zstd).
    #[arg(long, env = "TICKCAST_FEED", default_value = "synthetic")]
    pub feed: String,

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
    #[arg(long, env = "TICKCAST_RING_CAPACITY", default_value_t = crate::ring::DEFAULT_CAPACITY)]
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
    /// a write costs the writer 10-20 µs of CPU on a loaded 2-core VM,
    /// nearly whatever its size (BENCHMARKS.md).
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

    /// Book levels per side in snapshots.
    #[arg(long, env = "TICKCAST_BOOK_DEPTH", default_value_t = 10)]
    pub book_depth: usize,

    /// Most symbols the server will carry (bounds memory against a runaway feed).
    #[arg(long, env = "TICKCAST_MAX_SYMBOLS", default_value_t = 100_000)]
    pub max_symbols: usize,

    /// Most concurrent WebSocket sessions; more get HTTP 503.
    #[arg(long, env = "TICKCAST_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Largest client message in bytes; larger ones get close code 1009.
    #[arg(long, env = "TICKCAST_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub max_message_bytes: usize,

    /// Interval between server pings.
    #[arg(long, env = "TICKCAST_PING_INTERVAL", default_value = "15s", value_parser = duration)]
    pub ping_interval: Duration,

    /// A connection that sends no pong this long after a ping is closed (1008).
    #[arg(long, env = "TICKCAST_PONG_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub pong_timeout: Duration,

    /// On SIGINT/SIGTERM: time allowed to flush close frames before exit.
    #[arg(long, env = "TICKCAST_SHUTDOWN_GRACE", default_value = "1500ms", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Log filter, e.g. `info`, `tickcast=debug` (RUST_LOG syntax).
    #[arg(long, env = "TICKCAST_LOG", default_value = "info")]
    pub log: String,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP/WebSocket listen address.
    pub listen: SocketAddr,
    /// The feed source.
    pub feed: FeedSpec,
    /// Synthetic feed settings (used when `feed` is synthetic).
    pub synthetic: SyntheticSettings,
    /// Replay feed settings (used when `feed` is `replay:`).
    pub replay: ReplayOptions,
    /// Where and how to record, with `--record`.
    pub record: Option<RecordSettings>,
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
    pub slow: crate::engine::SlowConsumerPolicy,
    /// Book levels per side in snapshots.
    pub book_depth: usize,
    /// Symbol table bound.
    pub max_symbols: usize,
    /// Concurrent session bound.
    pub max_connections: usize,
    /// Largest client message.
    pub max_message_bytes: usize,
    /// Ping interval.
    pub ping_interval: Duration,
    /// Pong deadline after a ping.
    pub pong_timeout: Duration,
    /// Shutdown flush allowance.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    /// Defaults of the flags, except `listen` which is `127.0.0.1:0` so
    /// tests get a free port.
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:0".parse().expect("literal address"),
            feed: FeedSpec::Synthetic,
            synthetic: SyntheticSettings { symbols: 100, rate: 10_000.0, seed: 1 },
            replay: ReplayOptions::default(),
            record: None,
            replay_dir: None,
            max_replay_sessions: 16,
            ring_capacity: crate::ring::DEFAULT_CAPACITY,
            writers: default_writers(),
            flush_interval: Duration::from_millis(1),
            write_budget: WRITE_BUDGET_PER_WRITER * default_writers() as u64,
            slow: crate::engine::SlowConsumerPolicy {
                conflate_above: 256 << 10,
                disconnect_above: 8 << 20,
                slow_timeout: Duration::from_secs(10),
            },
            book_depth: 10,
            max_symbols: 100_000,
            max_connections: 50_000,
            max_message_bytes: 64 * 1024,
            ping_interval: Duration::from_secs(15),
            pong_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_millis(1500),
        }
    }
}

/// Default `--write-budget` per writer thread. At 100 busy subscribers on
/// 2 writers this is one write each per 1 ms (the feed's cadence in the
/// peers benchmark), which keeps p99 at 1M msgs/s at about a quarter of
/// nats-server's; half of it saves 15-20% of the CPU per message for about
/// 1 ms more latency (BENCHMARKS.md, "Side by side with peers", where W2
/// runs at four budgets). Latency is what tickcast is for, so the default
/// leans that way; `--write-budget` is the knob for CPU.
pub const WRITE_BUDGET_PER_WRITER: u64 = 50_000;

/// The number of cores, or 2 if it cannot be read.
pub fn default_writers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

impl ServeArgs {
    /// Validates every flag and reports all problems at once.
    pub fn into_config(self) -> Result<Config, Vec<String>> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, msg: String| {
            if !ok {
                errors.push(msg);
            }
        };
        let feed = self.feed.parse::<FeedSpec>();
        check((1..=100_000).contains(&self.symbols), format!("--symbols {}: must be 1 to 100000", self.symbols));
        check(
            self.rate.is_finite() && self.rate > 0.0 && self.rate <= 50_000_000.0,
            format!("--rate {}: must be > 0 and at most 50000000 updates/s", self.rate),
        );
        check(
            (16..=1 << 24).contains(&self.ring_capacity),
            format!("--ring-capacity {}: must be 16 to 16777216 ticks", self.ring_capacity),
        );
        let writers = self.writers.unwrap_or_else(default_writers);
        check((1..=256).contains(&writers), format!("--writers {writers}: must be 1 to 256"));
        let write_budget = match self.write_budget {
            Some(budget) => {
                check(
                    (1_000..=1_000_000_000).contains(&budget),
                    format!("--write-budget {budget}: must be 1000 to 1000000000 writes/s"),
                );
                budget
            }
            None => WRITE_BUDGET_PER_WRITER * writers.max(1) as u64,
        };
        check((1..=1000).contains(&self.book_depth), format!("--book-depth {}: must be 1 to 1000", self.book_depth));
        check(
            (1..=10_000_000).contains(&self.max_symbols),
            format!("--max-symbols {}: must be 1 to 10000000", self.max_symbols),
        );
        check(
            self.symbols <= self.max_symbols,
            format!("--symbols {} exceeds --max-symbols {}", self.symbols, self.max_symbols),
        );
        check(
            (1..=1_000_000).contains(&self.max_connections),
            format!("--max-connections {}: must be 1 to 1000000", self.max_connections),
        );
        check(
            (128..=16 << 20).contains(&self.max_message_bytes),
            format!("--max-message-bytes {}: must be 128 to 16777216", self.max_message_bytes),
        );
        check(
            self.ping_interval >= Duration::from_millis(100),
            format!("--ping-interval {:?}: must be at least 100ms", self.ping_interval),
        );
        check(
            self.pong_timeout >= Duration::from_millis(100),
            format!("--pong-timeout {:?}: must be at least 100ms", self.pong_timeout),
        );
        check(
            (64 * 1024..=1 << 30).contains(&self.disconnect_above),
            format!("--disconnect-above {}: must be 65536 to 1073741824 bytes", self.disconnect_above),
        );
        check(
            (64 * 1024..=self.disconnect_above).contains(&self.conflate_above),
            format!(
                "--conflate-above {}: must be 65536 bytes to --disconnect-above ({}); equal to it turns conflation off",
                self.conflate_above, self.disconnect_above
            ),
        );
        check(
            self.slow_timeout >= Duration::from_millis(100),
            format!("--slow-timeout {:?}: must be at least 100ms", self.slow_timeout),
        );
        check(
            self.flush_interval <= Duration::from_millis(100),
            format!("--flush-interval {:?}: must be at most 100ms", self.flush_interval),
        );
        check(
            self.shutdown_grace <= Duration::from_secs(60),
            format!("--shutdown-grace {:?}: must be at most 60s", self.shutdown_grace),
        );
        if let Err(e) = &feed {
            errors.push(e.clone());
        }
        let is_replay = matches!(feed, Ok(FeedSpec::Replay(_)));
        for (flag, set) in [
            ("--speed", self.speed.is_some()),
            ("--loop", self.looped),
            ("--from", self.from.is_some()),
            ("--to", self.to.is_some()),
        ] {
            if set && !is_replay && feed.is_ok() {
                errors.push(format!("{flag} applies only to --feed replay:PATH"));
            }
        }
        let speed = match self.speed.as_deref().unwrap_or("1").parse::<Speed>() {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("--{e}"));
                Speed::Max
            }
        };
        let mut event_time = |flag: &str, value: &Option<String>| match value.as_deref().map(parse_event_time) {
            None => None,
            Some(Ok(ns)) => Some(ns),
            Some(Err(e)) => {
                errors.push(format!("{flag}: {e}"));
                None
            }
        };
        let from = event_time("--from", &self.from);
        let to = event_time("--to", &self.to);
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                errors.push(format!("--from {f} is after --to {t}"));
            }
        }
        let fsync = match self.fsync.parse::<Fsync>() {
            Ok(f) => f,
            Err(e) => {
                errors.push(format!("--fsync: {e}"));
                Fsync::Never
            }
        };
        if !(1 << 20..=1 << 40).contains(&self.record_segment_bytes) {
            errors.push(format!("--record-segment-bytes {}: must be 1MiB to 1TiB", self.record_segment_bytes));
        }
        if self.record_segment_age < Duration::from_secs(1) {
            errors.push(format!("--record-segment-age {:?}: must be at least 1s", self.record_segment_age));
        }
        if let Some(dir) = &self.replay_dir {
            if !dir.is_dir() {
                errors.push(format!("--replay-dir {}: not a directory", dir.display()));
            }
        }
        if !(1..=10_000).contains(&self.max_replay_sessions) {
            errors.push(format!("--max-replay-sessions {}: must be 1 to 10000", self.max_replay_sessions));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            errors.push(format!("--log {:?}: {e}", self.log));
        }
        match (errors.is_empty(), feed) {
            (true, Ok(feed)) => Ok(Config {
                listen: self.listen,
                feed,
                synthetic: SyntheticSettings { symbols: self.symbols, rate: self.rate, seed: self.seed },
                replay: ReplayOptions { speed, looped: self.looped, from, to },
                record: self.record.map(|dir| RecordSettings {
                    dir,
                    options: WriterOptions {
                        segment_bytes: self.record_segment_bytes as u64,
                        segment_age: self.record_segment_age,
                        fsync,
                    },
                }),
                replay_dir: self.replay_dir,
                max_replay_sessions: self.max_replay_sessions,
                ring_capacity: self.ring_capacity,
                writers,
                flush_interval: self.flush_interval,
                write_budget,
                slow: crate::engine::SlowConsumerPolicy {
                    conflate_above: self.conflate_above,
                    disconnect_above: self.disconnect_above,
                    slow_timeout: self.slow_timeout,
                },
                book_depth: self.book_depth,
                max_symbols: self.max_symbols,
                max_connections: self.max_connections,
                max_message_bytes: self.max_message_bytes,
                ping_interval: self.ping_interval,
                pong_timeout: self.pong_timeout,
                shutdown_grace: self.shutdown_grace,
            }),
            _ => Err(errors),
        }
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
            parse(&["--symbols", "0", "--rate", "-5", "--writers", "0", "--feed", "udp://x", "--book-depth", "0"])
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
    fn byte_sizes_take_binary_suffixes() {
        assert_eq!(byte_size("65536"), Ok(65536));
        assert_eq!(byte_size("256KiB"), Ok(256 << 10));
        assert_eq!(byte_size("8MiB"), Ok(8 << 20));
        assert_eq!(byte_size("1G"), Ok(1 << 30));
        assert!(byte_size("8MB").unwrap_err().contains("unknown unit"));
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
        let errors = parse(&["--fsync", "sometimes", "--replay-dir", "/no/such/dir"]).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("--fsync: invalid fsync policy \"sometimes\"")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("not a directory")), "{errors:?}");
        let c = parse(&["--record", "/tmp/x", "--fsync", "always"]).unwrap();
        assert_eq!(c.record.unwrap().options.fsync, Fsync::Always);
    }

    #[test]
    fn malformed_values_are_rejected_by_the_parser() {
        assert!(Cli::try_parse_from(["tickcast", "--ping-interval", "soon"]).is_err());
        assert!(Cli::try_parse_from(["tickcast", "--symbols", "many"]).is_err());
        assert!(Cli::try_parse_from(["tickcast", "--listen", "nowhere"]).is_err());
    }
}

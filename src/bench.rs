//! `tickcast bench`: the load generator.
//!
//! In: a running server (and optionally its tcp feed). Out: a report of
//! delivered msgs/s, end-to-end latency percentiles (hdrhistogram), seq
//! gaps, and the server's CPU time per delivered message and RSS (scraped
//! from its `/metrics`).
//!
//! N subscribers each take K consecutive symbols of the first S (wrapping),
//! so every symbol has N·K/S subscribers. Latency is receive time minus
//! `ts_ingest`, or minus `ts_event` with `--drive-feed`, where the bench
//! itself publishes JSON ticks into the server's tcp feed, stamped at send.
//! Every run is bounded by `--warmup` + `--duration` and stops by itself.
//!
//! # Slow consumers
//! To show that clients who cannot keep up cost the others nothing, the
//! bench can add two kinds of bad subscribers on every symbol (`"*"`), each
//! on a socket with a small receive buffer so the server's side fills fast:
//! - `--stalled K`: subscribe, then never read again.
//! - `--slow-readers K`: read at most `--slow-read-rate` bytes per second,
//!   and check what the server promises them: every gap in `seq` is named
//!   by a `conflated` message and healed by the snapshot that follows.
//!
//! Neither counts toward the delivered or latency figures, which stay those
//! of the N healthy subscribers (their code path is the same with K = 0).
//! The report adds what the slow readers saw and the server's own ladder
//! counters (`/metrics`, as deltas over the whole run: conflation begins
//! within milliseconds of a stall, during warm-up). `--rss-every` samples
//! the server's RSS through the run, to show it stays bounded.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use crate::client::{http_get, Client};
use crate::codec::{decode, Encoding, ServerMessage};
use crate::metrics::scrape_value;
use crate::tick::now_ns;

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

/// Shortest `--rss-every`: each sample is a `/metrics` request the server
/// must render, so the sampling must not become load of its own.
const MIN_RSS_EVERY: Duration = Duration::from_millis(100);

/// Receive buffer of stalled and slow subscribers' sockets (the kernel may
/// round it up): small, so the server's side of them fills fast.
const SMALL_RECV_BUFFER: u32 = 4096;

/// Idle time a slow reader may make up for later: after a quiet spell it
/// reads at most this much time's worth of bytes in a burst.
const PACE_SLACK: Duration = Duration::from_millis(100);

/// A slow reader that is ahead of its rate by more than this sleeps; smaller
/// leads are carried over, so the timer's granularity does not matter.
const PACE_SLICE: Duration = Duration::from_millis(10);

fn encoding(s: &str) -> Result<Encoding, String> {
    Encoding::from_name(s).ok_or_else(|| format!("unknown encoding {s:?}: use msgpack, protobuf or json"))
}

/// Flags of `tickcast bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Server address (HTTP and WebSocket).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub server: SocketAddr,
    /// Number of subscribers (WebSocket connections).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Symbols per subscriber (K).
    #[arg(long, default_value_t = 5)]
    pub per_sub: usize,
    /// Symbols in play (S): the first S of the server's `/symbols`.
    #[arg(long, default_value_t = 50)]
    pub symbols: usize,
    /// Encoding the subscribers ask for.
    #[arg(long, default_value = "msgpack", value_parser = encoding)]
    pub encoding: Encoding,
    /// Time to connect and settle before measuring.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub warmup: Duration,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// Publish ticks into the server's tcp feed at this address (the server
    /// must run with `--feed tcp://ADDR`); latency is then measured from
    /// the send time stamped into `ts_event`.
    #[arg(long)]
    pub drive_feed: Option<SocketAddr>,
    /// With --drive-feed: ticks per second over the S symbols.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
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
    /// Sample the server's RSS (from /metrics) at this interval through
    /// warm-up and measurement, and report the timeline.
    #[arg(long, value_parser = rss_interval)]
    pub rss_every: Option<Duration>,
    /// Also print the summary as one JSON line (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Subscribers connected.
    pub subscribers: usize,
    /// Market messages received in the measured window.
    pub delivered: u64,
    /// Delivered per second.
    pub delivered_per_sec: f64,
    /// Expected per second, from the server's published count.
    pub expected_per_sec: f64,
    /// Seq gaps or repeats seen (must be 0).
    pub seq_errors: u64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
    /// Server CPU time per delivered message, ns (all its threads).
    pub server_cpu_ns_per_msg: f64,
    /// Server CPU use over the window, in cores.
    pub server_cpu_cores: f64,
    /// Server resident memory at the end, bytes.
    pub server_rss_bytes: f64,
    /// What latency is measured from: "ts_ingest" or "ts_event".
    pub latency_from: &'static str,
    /// `conflated` messages healthy subscribers received (each is also a
    /// seq error: a healthy subscriber must never fall behind).
    pub healthy_conflated: u64,
    /// Stalled subscribers (`--stalled`), connected and never read.
    pub stalled: usize,
    /// Rate-limited subscribers (`--slow-readers`).
    pub slow_readers: usize,
    /// Bytes per second each slow reader reads at most.
    pub slow_read_rate: u64,
    /// Bytes of frames the slow readers read over the whole run.
    pub slow_bytes: u64,
    /// Market messages (trade, quote, book) slow readers received.
    pub slow_market_msgs: u64,
    /// Snapshots slow readers received (first ones and recovery ones).
    pub slow_snapshots: u64,
    /// `conflated` messages slow readers received.
    pub slow_conflated_msgs: u64,
    /// Updates those `conflated` messages told them they missed
    /// (sum of `to_seq - from_seq + 1`).
    pub slow_skipped_updates: u64,
    /// Gaps slow readers saw that no `conflated` message announced, or
    /// recovery snapshots at the wrong seq (must be 0).
    pub slow_seq_errors: u64,
    /// Slow readers that read a 1008 close from the server before the run
    /// ended. The close frame waits behind whatever the server's kernel
    /// already holds for them, so `server_slow_disconnects` may be higher.
    pub slow_disconnected: usize,
    /// When each of those closes came, seconds since the bench started.
    pub slow_disconnect_at_s: Vec<f64>,
    /// Server's `tickcast_slow_disconnects_total`, delta over the run.
    pub server_slow_disconnects: f64,
    /// Server's `tickcast_conflation_episodes_total`, delta over the run.
    pub server_conflation_episodes: f64,
    /// Server's `tickcast_conflated_messages_total`, delta over the run.
    pub server_conflated_msgs: f64,
    /// Server's `tickcast_skipped_updates_total{kind="trade"}`, delta over
    /// the run.
    pub server_skipped_trades: f64,
    /// Same, `{kind="quote"}`.
    pub server_skipped_quotes: f64,
    /// Same, `{kind="book"}`.
    pub server_skipped_books: f64,
    /// With `--rss-every`: `[seconds since the bench started, RSS bytes]`.
    pub rss_timeline: Vec<[f64; 2]>,
}

/// Fields the bench reads from each message; the rest is skipped.
#[derive(Deserialize)]
struct Light<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    sym: Cow<'a, str>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    ts_event: u64,
    #[serde(default)]
    ts_ingest: u64,
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    delivered: AtomicU64,
    seq_errors: AtomicU64,
    connected: AtomicU64,
    histogram: Mutex<Histogram<u64>>,
    from_event: bool,
    /// `conflated` messages seen by healthy subscribers.
    healthy_conflated: AtomicU64,
    /// When the bench started: the origin of every timestamp it reports.
    started: Instant,
    stalled_connected: AtomicU64,
    slow: SlowStats,
    rss: Mutex<Vec<[f64; 2]>>,
}

/// What the slow readers saw, summed over all of them.
#[derive(Default)]
struct SlowStats {
    connected: AtomicU64,
    bytes: AtomicU64,
    market: AtomicU64,
    snapshots: AtomicU64,
    conflated: AtomicU64,
    skipped: AtomicU64,
    seq_errors: AtomicU64,
    /// Seconds since the bench started at which the server closed one
    /// with 1008.
    disconnects: Mutex<Vec<f64>>,
}

/// Runs the bench and prints the report.
pub fn main(args: BenchArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tickcast bench: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.clone())) {
        Ok(report) => {
            print_report(&args, &report);
            if args.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickcast bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_report(args: &BenchArgs, r: &BenchReport) {
    let mut extra = String::new();
    if r.stalled > 0 {
        extra += &format!(", + {} stalled", r.stalled);
    }
    if r.slow_readers > 0 {
        extra += &format!(", + {} slow readers at {} B/s", r.slow_readers, r.slow_read_rate);
    }
    println!(
        "tickcast bench: {} subscribers x {} of {} symbols{extra}, {}, {:?} measured",
        r.subscribers,
        args.per_sub,
        args.symbols,
        args.encoding.name(),
        args.duration
    );
    println!(
        "  delivered   {:>12.0} msgs/s (expected ~{:.0}), seq errors {} (conflated {})",
        r.delivered_per_sec, r.expected_per_sec, r.seq_errors, r.healthy_conflated
    );
    println!(
        "  latency     p50 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us  (receive - {})",
        r.p50_us, r.p99_us, r.p999_us, r.max_us, r.latency_from
    );
    println!(
        "  server      {:.3} us CPU per delivered msg ({:.2} cores), RSS {:.1} MiB",
        r.server_cpu_ns_per_msg / 1000.0,
        r.server_cpu_cores,
        r.server_rss_bytes / (1024.0 * 1024.0)
    );
    println!(
        "  ladder      {} conflation episodes, {} conflated msgs, skipped {} trades {} quotes {} books, \
         {} slow disconnects  (server, whole run)",
        r.server_conflation_episodes,
        r.server_conflated_msgs,
        r.server_skipped_trades,
        r.server_skipped_quotes,
        r.server_skipped_books,
        r.server_slow_disconnects
    );
    if r.slow_readers > 0 {
        let at: Vec<String> = r.slow_disconnect_at_s.iter().map(|t| format!("{t:.1}s")).collect();
        println!(
            "  slow        {:.0} B/s read each; {} market msgs, {} snapshots, {} conflated msgs naming {} skipped \
             updates, {} unannounced gaps; {} of {} read a 1008 close{}",
            r.slow_bytes as f64 / (args.warmup + args.duration).as_secs_f64().max(f64::EPSILON) / r.slow_readers as f64,
            r.slow_market_msgs,
            r.slow_snapshots,
            r.slow_conflated_msgs,
            r.slow_skipped_updates,
            r.slow_seq_errors,
            r.slow_disconnected,
            r.slow_readers,
            if at.is_empty() { String::new() } else { format!(" (at {})", at.join(", ")) }
        );
    }
    for [t, bytes] in &r.rss_timeline {
        println!("  rss t={t:.1}s {:.1} MiB", bytes / (1024.0 * 1024.0));
    }
}

/// Runs one bench against a server; the library entry point for scripts.
pub async fn run(args: BenchArgs) -> Result<BenchReport, String> {
    if args.subscribers == 0 || args.per_sub == 0 || args.symbols == 0 {
        return Err("--subscribers, --per-sub and --symbols must be at least 1".into());
    }
    if args.slow_read_rate == 0 {
        return Err("--slow-read-rate must be at least 1 byte per second".into());
    }
    if args.rss_every.is_some_and(|every| every < MIN_RSS_EVERY) {
        return Err(format!("--rss-every must be at least {}", humantime::format_duration(MIN_RSS_EVERY)));
    }
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
        seq_errors: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?),
        from_event: args.drive_feed.is_some(),
        healthy_conflated: AtomicU64::new(0),
        started: Instant::now(),
        stalled_connected: AtomicU64::new(0),
        slow: SlowStats::default(),
        rss: Mutex::new(Vec::new()),
    });
    let sampler = args.rss_every.map(|every| tokio::spawn(sample_rss(args.server, every, shared.clone())));

    let mut driver = None;
    let names: Vec<String> = if let Some(feed) = args.drive_feed {
        let names: Vec<String> = (0..args.symbols).map(crate::feed::synthetic::ticker).collect();
        driver = Some(tokio::spawn(drive_feed(feed, names.clone(), args.rate, shared.clone())));
        // Wait until the server knows every symbol.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let known = fetch_symbols(args.server).await?;
            if names.iter().all(|n| known.contains(n)) {
                break;
            }
            if Instant::now() > deadline {
                return Err(
                    "the server did not learn the driven symbols within 10s: is --drive-feed its tcp feed?".into()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        names
    } else {
        let mut known = fetch_symbols(args.server).await?;
        if known.len() < args.symbols {
            return Err(format!("the server has {} symbols, fewer than --symbols {}", known.len(), args.symbols));
        }
        known.truncate(args.symbols);
        known
    };

    // The server's slow-consumer counters are reported over the whole run.
    let baseline = scrape(args.server).await?;
    let mut tasks = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let symbols: Vec<String> =
            (0..args.per_sub).map(|j| names[(i * args.per_sub + j) % names.len()].clone()).collect();
        tasks.push(tokio::spawn(subscriber(args.server, args.encoding, symbols, shared.clone())));
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    for _ in 0..args.stalled {
        tasks.push(tokio::spawn(stalled(args.server, args.encoding, shared.clone())));
    }
    for _ in 0..args.slow_readers {
        tasks.push(tokio::spawn(slow_reader(args.server, args.encoding, args.slow_read_rate, shared.clone())));
    }

    tokio::time::sleep(args.warmup).await;
    let connected = shared.connected.load(Ordering::Relaxed) as usize;
    let stalled_connected = shared.stalled_connected.load(Ordering::Relaxed) as usize;
    let slow_connected = shared.slow.connected.load(Ordering::Relaxed) as usize;
    let missing = if connected < args.subscribers {
        Some(format!("only {connected} of {} subscribers", args.subscribers))
    } else if stalled_connected < args.stalled {
        Some(format!("only {stalled_connected} of {} stalled subscribers", args.stalled))
    } else if slow_connected < args.slow_readers {
        Some(format!("only {slow_connected} of {} slow readers", args.slow_readers))
    } else {
        None
    };
    if let Some(missing) = missing {
        shared.stop.store(true, Ordering::Relaxed);
        for t in tasks.iter().chain(&sampler) {
            t.abort();
        }
        return Err(format!("{missing} connected during warm-up"));
    }
    let before = scrape(args.server).await?;
    let started = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.duration).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let after = scrape(args.server).await?;
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(d) = driver {
        d.abort();
    }
    for t in tasks.iter().chain(&sampler) {
        t.abort();
    }

    let delivered = shared.delivered.load(Ordering::Relaxed);
    let hist = shared.histogram.lock();
    let slow = &shared.slow;
    let disconnects = slow.disconnects.lock().clone();
    let rss_timeline = std::mem::take(&mut *shared.rss.lock());
    let cpu = after.cpu - before.cpu;
    let known_symbols = after.symbols.max(1.0);
    let published_per_sec = (after.published - before.published) / elapsed;
    // Each update of a symbol goes to its N·K/S subscribers; symbols outside
    // the S in play (synthetic feeds have more) receive none of ours.
    let share = (args.symbols as f64 / known_symbols).min(1.0);
    let fanout = (args.subscribers * args.per_sub) as f64 / args.symbols as f64;
    Ok(BenchReport {
        subscribers: args.subscribers,
        delivered,
        delivered_per_sec: delivered as f64 / elapsed,
        expected_per_sec: published_per_sec * share * fanout,
        seq_errors: shared.seq_errors.load(Ordering::Relaxed),
        p50_us: hist.value_at_quantile(0.50) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        p999_us: hist.value_at_quantile(0.999) as f64,
        max_us: hist.max() as f64,
        server_cpu_ns_per_msg: if delivered > 0 { cpu * 1e9 / delivered as f64 } else { 0.0 },
        server_cpu_cores: cpu / elapsed,
        server_rss_bytes: after.rss,
        latency_from: if shared.from_event { "ts_event" } else { "ts_ingest" },
        healthy_conflated: shared.healthy_conflated.load(Ordering::Relaxed),
        stalled: args.stalled,
        slow_readers: args.slow_readers,
        slow_read_rate: args.slow_read_rate,
        slow_bytes: slow.bytes.load(Ordering::Relaxed),
        slow_market_msgs: slow.market.load(Ordering::Relaxed),
        slow_snapshots: slow.snapshots.load(Ordering::Relaxed),
        slow_conflated_msgs: slow.conflated.load(Ordering::Relaxed),
        slow_skipped_updates: slow.skipped.load(Ordering::Relaxed),
        slow_seq_errors: slow.seq_errors.load(Ordering::Relaxed),
        slow_disconnected: disconnects.len(),
        slow_disconnect_at_s: disconnects,
        server_slow_disconnects: after.slow_disconnects - baseline.slow_disconnects,
        server_conflation_episodes: after.conflation_episodes - baseline.conflation_episodes,
        server_conflated_msgs: after.conflated_msgs - baseline.conflated_msgs,
        server_skipped_trades: after.skipped[0] - baseline.skipped[0],
        server_skipped_quotes: after.skipped[1] - baseline.skipped[1],
        server_skipped_books: after.skipped[2] - baseline.skipped[2],
        rss_timeline,
    })
}

struct Scrape {
    cpu: f64,
    rss: f64,
    published: f64,
    symbols: f64,
    slow_disconnects: f64,
    conflation_episodes: f64,
    conflated_msgs: f64,
    /// Skipped updates by kind: trade, quote, book.
    skipped: [f64; 3],
}

async fn scrape(server: SocketAddr) -> Result<Scrape, String> {
    let (status, body) = http_get(server, "/metrics").await.map_err(|e| format!("GET /metrics: {e}"))?;
    if status != 200 {
        return Err(format!("GET /metrics: HTTP {status}"));
    }
    let get = |name| scrape_value(&body, name).ok_or_else(|| format!("/metrics lacks {name}"));
    Ok(Scrape {
        cpu: get("process_cpu_seconds_total")?,
        rss: get("process_resident_memory_bytes")?,
        published: get("tickcast_updates_published_total")?,
        symbols: get("tickcast_symbols")?,
        slow_disconnects: get("tickcast_slow_disconnects_total")?,
        conflation_episodes: get("tickcast_conflation_episodes_total")?,
        conflated_msgs: get("tickcast_conflated_messages_total")?,
        skipped: [
            get(r#"tickcast_skipped_updates_total{kind="trade"}"#)?,
            get(r#"tickcast_skipped_updates_total{kind="quote"}"#)?,
            get(r#"tickcast_skipped_updates_total{kind="book"}"#)?,
        ],
    })
}

/// Samples the server's RSS every `every` until the run stops; a failed
/// scrape is skipped (the run's own scrapes report a dead server).
async fn sample_rss(server: SocketAddr, every: Duration, shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let Ok((200, body)) = http_get(server, "/metrics").await else { continue };
        if let Some(rss) = scrape_value(&body, "process_resident_memory_bytes") {
            shared.rss.lock().push([shared.started.elapsed().as_secs_f64(), rss]);
        }
    }
}

async fn fetch_symbols(server: SocketAddr) -> Result<Vec<String>, String> {
    let (status, body) = http_get(server, "/symbols").await.map_err(|e| format!("GET /symbols: {e}"))?;
    if status != 200 {
        return Err(format!("GET /symbols: HTTP {status}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET /symbols: {e}"))
}

async fn subscriber(server: SocketAddr, encoding: Encoding, symbols: Vec<String>, shared: Arc<Shared>) {
    let mut client = match Client::connect(server, encoding).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("subscriber: connect failed: {e}");
            return;
        }
    };
    let refs: Vec<&str> = symbols.iter().map(String::as_str).collect();
    if client.subscribe(&refs).await.is_err() {
        return;
    }
    shared.connected.fetch_add(1, Ordering::Relaxed);
    // A subscriber has a handful of symbols: a linear scan beats hashing.
    let mut last_seq: Vec<(String, u64)> = Vec::with_capacity(symbols.len());
    let mut pending: Vec<u64> = Vec::with_capacity(1024);
    let mut delivered = 0u64;
    let ws = client.raw();
    while !shared.stop.load(Ordering::Relaxed) {
        // Decode straight from the frame buffer: no copy per message.
        let frame = match ws.read_frame().await {
            Ok(f) => f,
            Err(_) => break,
        };
        match frame.opcode {
            fastwebsockets::OpCode::Text | fastwebsockets::OpCode::Binary => {}
            fastwebsockets::OpCode::Close => break,
            _ => continue,
        }
        let now = now_ns();
        let light: Light<'_> = match decode_light(encoding, &frame.payload) {
            Some(l) => l,
            None => continue,
        };
        let is_update = matches!(&*light.kind, "trade" | "quote" | "book");
        if !is_update && light.kind != "snapshot" {
            // A healthy subscriber must never fall behind; if it did, the
            // snapshots that follow would hide the gap from the seq check.
            if light.kind == "conflated" {
                shared.healthy_conflated.fetch_add(1, Ordering::Relaxed);
                shared.seq_errors.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        match last_seq.iter_mut().find(|(s, _)| *s == *light.sym).map(|(_, q)| q) {
            Some(prev) => {
                if is_update && light.seq != *prev + 1 {
                    shared.seq_errors.fetch_add(1, Ordering::Relaxed);
                }
                *prev = light.seq;
            }
            None => {
                last_seq.push((light.sym.into_owned(), light.seq));
            }
        }
        if is_update && shared.measuring.load(Ordering::Relaxed) {
            let from = if shared.from_event { light.ts_event } else { light.ts_ingest };
            pending.push(now.saturating_sub(from) / 1000);
            delivered += 1;
            if pending.len() == pending.capacity() {
                flush(&shared, &mut pending, &mut delivered);
            }
        } else if !pending.is_empty() {
            flush(&shared, &mut pending, &mut delivered);
        }
    }
    flush(&shared, &mut pending, &mut delivered);
}

/// A socket with a small receive buffer, connected to `server`.
async fn small_buffer_stream(server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if server.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_recv_buffer_size(SMALL_RECV_BUFFER)?;
    socket.connect(server).await
}

/// Connects on a small-buffer socket and subscribes to every symbol.
async fn connect_all_symbols(server: SocketAddr, encoding: Encoding) -> Result<Client, String> {
    let stream = small_buffer_stream(server).await.map_err(|e| e.to_string())?;
    let path = format!("/ws?encoding={}", encoding.name());
    let mut client = Client::connect_stream(stream, server, &path, encoding).await.map_err(|e| e.to_string())?;
    client.subscribe(&["*"]).await.map_err(|e| e.to_string())?;
    Ok(client)
}

/// A subscriber to every symbol that never reads after subscribing. It
/// holds its connection until the run aborts it; the server may close its
/// side first (1008), which this end never looks at.
async fn stalled(server: SocketAddr, encoding: Encoding, shared: Arc<Shared>) {
    let _client = match connect_all_symbols(server, encoding).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stalled subscriber: {e}");
            return;
        }
    };
    shared.stalled_connected.fetch_add(1, Ordering::Relaxed);
    std::future::pending::<()>().await;
}

/// A subscriber to every symbol that reads at most `rate` bytes per second
/// and checks the slow-consumer contract: per symbol, `seq` goes up by 1
/// except across a `conflated` entry, which starts right after the last
/// seq received and is followed by a snapshot at its `to_seq`.
async fn slow_reader(server: SocketAddr, encoding: Encoding, rate: u64, shared: Arc<Shared>) {
    let mut client = match connect_all_symbols(server, encoding).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("slow reader: {e}");
            return;
        }
    };
    let stats = &shared.slow;
    stats.connected.fetch_add(1, Ordering::Relaxed);
    // Per symbol: last seq received, and whether a recovery snapshot is due.
    let mut last: HashMap<String, (u64, bool)> = HashMap::new();
    let mut pace = Pacer::new(rate);
    while !shared.stop.load(Ordering::Relaxed) {
        let payload = match client.next_payload().await {
            Ok(Ok(p)) => p,
            Ok(Err((code, _))) => {
                if code == 1008 {
                    stats.disconnects.lock().push(shared.started.elapsed().as_secs_f64());
                }
                break;
            }
            Err(_) => break,
        };
        let bytes = frame_len(payload.len());
        stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(light) = decode_light(encoding, &payload) {
            let ok = match &*light.kind {
                "trade" | "quote" | "book" => {
                    stats.market.fetch_add(1, Ordering::Relaxed);
                    match last.get_mut(&*light.sym) {
                        Some((seq, false)) if light.seq == *seq + 1 => {
                            *seq = light.seq;
                            true
                        }
                        _ => false,
                    }
                }
                "snapshot" => {
                    stats.snapshots.fetch_add(1, Ordering::Relaxed);
                    match last.get_mut(&*light.sym) {
                        Some((seq, due)) => {
                            let ok = *due && light.seq == *seq;
                            *seq = light.seq;
                            *due = false;
                            ok
                        }
                        None => {
                            last.insert(light.sym.into_owned(), (light.seq, false));
                            true
                        }
                    }
                }
                "conflated" => {
                    stats.conflated.fetch_add(1, Ordering::Relaxed);
                    conflated(encoding, &payload, &mut last, stats)
                }
                _ => true,
            };
            if !ok {
                stats.seq_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        pace.consumed(bytes).await;
    }
}

/// Applies a `conflated` message to a slow reader's seq records; false if
/// an entry does not start right after the last seq received.
fn conflated(encoding: Encoding, payload: &[u8], last: &mut HashMap<String, (u64, bool)>, stats: &SlowStats) -> bool {
    let Ok(ServerMessage::Conflated { symbols }) = decode(encoding, payload) else { return false };
    let mut ok = true;
    for s in symbols {
        stats.skipped.fetch_add(s.to_seq.saturating_sub(s.from_seq).saturating_add(1), Ordering::Relaxed);
        match last.get_mut(&*s.sym) {
            Some((seq, due)) if !*due && s.from_seq == *seq + 1 && s.to_seq >= s.from_seq => {
                *seq = s.to_seq;
                *due = true;
            }
            _ => ok = false,
        }
    }
    ok
}

/// Bytes a server frame with this payload takes on the wire (unmasked).
fn frame_len(payload: usize) -> u64 {
    let header = match payload {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    };
    (payload as u64).saturating_add(header)
}

/// Keeps a reader at an average byte rate: after consuming bytes it sleeps
/// until the rate allows them, in slices of at least [`PACE_SLICE`], and
/// earns at most [`PACE_SLACK`] of credit while idle.
struct Pacer {
    rate: u64,
    /// When the bytes consumed so far are allowed at `rate`.
    due: Instant,
}

impl Pacer {
    fn new(rate: u64) -> Pacer {
        Pacer { rate: rate.max(1), due: Instant::now() }
    }

    async fn consumed(&mut self, bytes: u64) {
        let now = Instant::now();
        if let Some(floor) = now.checked_sub(PACE_SLACK) {
            self.due = self.due.max(floor);
        }
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.rate);
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.due = self.due.checked_add(wait).unwrap_or(self.due);
        if self.due > now + PACE_SLICE {
            tokio::time::sleep_until(self.due.into()).await;
        }
    }
}

fn flush(shared: &Shared, pending: &mut Vec<u64>, delivered: &mut u64) {
    let mut h = shared.histogram.lock();
    for &v in pending.iter() {
        h.saturating_record(v.max(1));
    }
    drop(h);
    pending.clear();
    shared.delivered.fetch_add(std::mem::take(delivered), Ordering::Relaxed);
}

fn decode_light(encoding: Encoding, payload: &[u8]) -> Option<Light<'_>> {
    match encoding {
        Encoding::Msgpack => msgpack_light(payload),
        Encoding::Json => json_light(payload).or_else(|| serde_json::from_slice(payload).ok()),
        Encoding::Protobuf => protobuf_light(payload),
    }
}

/// Reads the leading fields of a market message as the server writes them
/// (`{"type":..,"sym":..,"seq":..,"ts_event":..,"ts_ingest":..`); any
/// other shape returns `None` and is parsed in full by the caller.
fn json_light(buf: &[u8]) -> Option<Light<'_>> {
    fn string<'a>(buf: &'a [u8], prefix: &[u8]) -> Option<(&'a str, &'a [u8])> {
        let rest = buf.strip_prefix(prefix)?;
        let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
        (rest[end] == b'"').then_some(())?;
        Some((ascii(&rest[..end])?, &rest[end + 1..]))
    }
    fn number<'a>(buf: &'a [u8], prefix: &[u8]) -> Option<(u64, &'a [u8])> {
        let rest = buf.strip_prefix(prefix)?;
        let end = rest.iter().position(|b| !b.is_ascii_digit())?;
        let mut n: u64 = 0;
        for &d in &rest[..end] {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        Some((n, &rest[end..]))
    }
    let (kind, rest) = string(buf, br#"{"type":""#)?;
    let (sym, rest) = string(rest, br#","sym":""#)?;
    let (seq, rest) = number(rest, br#","seq":"#)?;
    let (ts_event, rest) = number(rest, br#","ts_event":"#)?;
    let (ts_ingest, _) = number(rest, br#","ts_ingest":"#)?;
    Some(Light { kind: Cow::Borrowed(kind), sym: Cow::Borrowed(sym), seq, ts_event, ts_ingest })
}

/// Reads fields 1-5 of a `ServerMessage` (type, sym, seq, ts_event,
/// ts_ingest) and stops at the body, without allocating.
fn protobuf_light(mut buf: &[u8]) -> Option<Light<'_>> {
    use prost::encoding::{decode_varint, WireType};
    let mut light = Light { kind: Cow::Borrowed(""), sym: Cow::Borrowed(""), seq: 0, ts_event: 0, ts_ingest: 0 };
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).ok()?;
        let (tag, wire) = (key >> 3, WireType::try_from(key & 7).ok()?);
        match (tag, wire) {
            (1 | 2, WireType::LengthDelimited) => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let text = ascii(buf.get(..len)?)?;
                buf = &buf[len..];
                if tag == 1 {
                    light.kind = Cow::Borrowed(text);
                } else {
                    light.sym = Cow::Borrowed(text);
                }
            }
            (3, WireType::Varint) => light.seq = decode_varint(&mut buf).ok()?,
            (4, WireType::Varint) => light.ts_event = decode_varint(&mut buf).ok()?,
            (5, WireType::Varint) => light.ts_ingest = decode_varint(&mut buf).ok()?,
            // The body follows the envelope fields: nothing more to read.
            _ => break,
        }
    }
    Some(light)
}

async fn drive_feed(feed: SocketAddr, names: Vec<String>, rate: f64, shared: Arc<Shared>) {
    let mut stream = match tokio::net::TcpStream::connect(feed).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("drive-feed: cannot connect to {feed}: {e}");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut px: Vec<i64> = (0..names.len()).map(|i| 10_000 + 100 * i as i64).collect();
    // Announce every symbol first.
    for (i, name) in names.iter().enumerate() {
        line(&mut buf, name, px[i]);
    }
    if stream.write_all(&buf).await.is_err() {
        return;
    }
    let start = Instant::now();
    let mut sent = 0u64;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !shared.stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        buf.clear();
        while sent < due {
            let i = rng.usize(0..names.len());
            px[i] += rng.i64(-1..=1);
            line(&mut buf, &names[i], px[i]);
            sent += 1;
        }
        if !buf.is_empty() && stream.write_all(&buf).await.is_err() {
            return;
        }
    }
}

fn line(buf: &mut Vec<u8>, sym: &str, cents: i64) {
    use std::io::Write as _;
    let bid = cents as f64 / 100.0;
    let ask = (cents + 1) as f64 / 100.0;
    let _ = writeln!(
        buf,
        r#"{{"type":"quote","sym":"{sym}","bid":{bid},"bid_sz":100,"ask":{ask},"ask_sz":200,"ts_event":{}}}"#,
        now_ns()
    );
}

/// Reads the few fields the bench needs from a MessagePack map without
/// building the whole message (the load generator must outrun the server
/// on the same two cores). Strings are compared as bytes; values of other
/// keys are skipped by their markers.
fn msgpack_light(buf: &[u8]) -> Option<Light<'_>> {
    let mut r = MsgpackReader { buf, pos: 0 };
    let entries = r.map_len()?;
    let mut light = Light { kind: Cow::Borrowed(""), sym: Cow::Borrowed(""), seq: 0, ts_event: 0, ts_ingest: 0 };
    // The server writes these five keys first; stop once all are seen.
    let mut seen = 0u8;
    for _ in 0..entries {
        let key = r.str()?;
        let bit = match key {
            b"type" => {
                light.kind = Cow::Borrowed(ascii(r.str()?)?);
                1
            }
            b"sym" => {
                light.sym = Cow::Borrowed(ascii(r.str()?)?);
                2
            }
            b"seq" => {
                light.seq = r.uint()?;
                4
            }
            b"ts_event" => {
                light.ts_event = r.uint()?;
                8
            }
            b"ts_ingest" => {
                light.ts_ingest = r.uint()?;
                16
            }
            _ => {
                r.skip()?;
                0
            }
        };
        seen |= bit;
        if seen == 31 {
            break;
        }
    }
    Some(light)
}

/// Symbols and types are ASCII by protocol; checking that is cheaper than
/// full UTF-8 validation and just as safe.
fn ascii(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // ASCII is valid UTF-8.
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

struct MsgpackReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> MsgpackReader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn map_len(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(u64::from(m & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        self.take(len as usize)
    }

    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    /// Skips one value of any type.
    fn skip(&mut self) -> Option<()> {
        let m = self.byte()?;
        let (bytes, items): (u64, u64) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(m & 0x0f)),
            0x90..=0x9f => (0, u64::from(m & 0x0f)),
            0xa0..=0xbf => (u64::from(m & 0x1f), 0),
            0xc4 | 0xd9 => (self.be(1)?, 0),
            0xc5 | 0xda => (self.be(2)?, 0),
            0xc6 | 0xdb => (self.be(4)?, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xc7 => (self.be(1)? + 1, 0),
            0xc8 => (self.be(2)? + 1, 0),
            0xc9 => (self.be(4)? + 1, 0),
            0xdc => (0, self.be(2)?),
            0xdd => (0, self.be(4)?),
            0xde => (0, 2 * self.be(2)?),
            0xdf => (0, 2 * self.be(4)?),
            0xc1 => return None,
        };
        self.take(bytes as usize)?;
        for _ in 0..items {
            self.skip()?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_payload, Skipped};
    use crate::tick::{BookDelta, Level, Side, Trade, Update};

    #[test]
    fn the_light_readers_agree_with_the_codec() {
        let updates = [
            Update::Trade(Trade { px: 1.5, sz: 2.0, side: Side::Buy }),
            Update::Book(BookDelta { bids: vec![Level { px: 1.0, sz: 0.0 }], asks: vec![Level { px: 2.0, sz: 3.0 }] }),
        ];
        for (i, u) in updates.iter().enumerate() {
            let seq = 1u64 << (8 * i + 7);
            let msg = ServerMessage::update("BTC-USDT", seq, u64::MAX - 1, 1_700_000_000_000_000_000, u);
            let mut buf = Vec::new();
            encode_payload(Encoding::Msgpack, &msg, &mut buf);
            for encoding in Encoding::ALL {
                let mut buf = Vec::new();
                encode_payload(encoding, &msg, &mut buf);
                let light = match encoding {
                    Encoding::Msgpack => msgpack_light(&buf),
                    Encoding::Json => json_light(&buf),
                    Encoding::Protobuf => protobuf_light(&buf),
                }
                .unwrap_or_else(|| panic!("{encoding:?} light reader failed"));
                assert_eq!(&*light.kind, u.kind().name(), "{encoding:?}");
                assert_eq!(&*light.sym, "BTC-USDT", "{encoding:?}");
                assert_eq!(
                    (light.seq, light.ts_event, light.ts_ingest),
                    (seq, u64::MAX - 1, 1_700_000_000_000_000_000),
                    "{encoding:?}"
                );
            }
        }
        assert!(msgpack_light(b"\x81").is_none());
    }

    #[test]
    fn conflated_messages_are_read_and_checked() {
        let skipped = Skipped { sym: "AAPL".into(), from_seq: 3, to_seq: 9, trades: 1, quotes: 5, books: 1 };
        let msg = ServerMessage::Conflated { symbols: vec![skipped] };
        for encoding in Encoding::ALL {
            let mut buf = Vec::new();
            encode_payload(encoding, &msg, &mut buf);
            let light = decode_light(encoding, &buf).unwrap_or_else(|| panic!("{encoding:?} light reader failed"));
            assert_eq!(&*light.kind, "conflated", "{encoding:?}");
            let stats = SlowStats::default();
            let mut last = HashMap::from([("AAPL".to_owned(), (2, false))]);
            assert!(conflated(encoding, &buf, &mut last, &stats), "{encoding:?}");
            assert_eq!(stats.skipped.load(Ordering::Relaxed), 7, "{encoding:?}");
            assert_eq!(last["AAPL"], (9, true), "{encoding:?}");
            // Named again before its recovery snapshot: a broken promise.
            assert!(!conflated(encoding, &buf, &mut last, &stats), "{encoding:?}");
            assert!(!conflated(encoding, b"\x00garbage", &mut last, &stats), "{encoding:?}");
        }
    }

    #[test]
    fn frame_len_counts_the_header() {
        assert_eq!(frame_len(0), 2);
        assert_eq!(frame_len(125), 127);
        assert_eq!(frame_len(126), 130);
        assert_eq!(frame_len(70_000), 70_010);
    }
}

//! A throughput and latency run: N healthy subscribers (plus stalled and
//! slow ones) against a server under load, a measured window, a report.
//!
//! The run, step by step ([`run`]):
//! 1. [`start_feed`]: the symbols in play and, with `--drive-feed`, the
//!    publisher (already running for tickcast, held for peers).
//! 2. [`spawn_subscribers`]: healthy, stalled and slow subscribers.
//! 3. [`start_held_publisher`]: a peer's publisher, once its subscribers
//!    are in.
//! 4. Warm-up, then [`check_warmed_up`]: everyone connected, the publisher
//!    still running.
//! 5. [`measure_window`]: the server's figures before and after the window.
//! 6. [`report`]: the figures, from what the subscribers and the server
//!    counted.
//!
//! Imports: the [`Target`] for everything that differs between systems,
//! the publisher, the server readings ([`crate::measure`]) and the shared
//! figures.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::task::JoinHandle;

use crate::args::BenchArgs;
use crate::measure::{measure, sample_rss, stats_from, Measure};
use crate::publish::{Publisher, TickGen};
use crate::report::BenchReport;
use crate::shared::Shared;
use crate::target::{generated_names, hold_stalled, Counters, Target};

/// Longest a peer's subscribers may take to be confirmed before its
/// publisher starts anyway.
const PEER_CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// After the window closes, subscribers merge what they measured on their
/// next message; this is how long they are given before being stopped.
const FLUSH_GRACE: Duration = Duration::from_millis(50);

/// Healthy subscribers spawned between two yields to the runtime, so the
/// first ones start connecting while the rest are spawned.
const SPAWN_BATCH: usize = 64;

/// Everything a run spawned: stopped and aborted when the run ends, on
/// success or error alike.
struct Spawned {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A peer's publisher, connected and waiting for the subscribers.
type HeldPublisher = (Publisher, TickGen);

/// The server's figures at both ends of the measured window.
struct Window {
    before: Measure,
    after: Measure,
    /// Length of the window, seconds.
    elapsed: f64,
}

/// Runs a throughput and latency bench against `target`. `quiet_symbols`
/// of the symbols the server knows get none of the publisher's ticks
/// (the idle subscribers' of `--idle --with-load`), so they are left out
/// of the expected deliveries.
pub async fn run(args: &BenchArgs, target: Arc<dyn Target>, quiet_symbols: usize) -> anyhow::Result<BenchReport> {
    let shared = Arc::new(Shared::new(args.drive_feed.is_some())?);
    let mut spawned = Spawned { shared: shared.clone(), tasks: Vec::new() };
    if let Some(every) = args.rss_every {
        spawned.tasks.push(tokio::spawn(sample_rss(args.server_pid, target.clone(), every, shared.clone())));
    }
    let (names, held) = start_feed(args, target.as_ref(), &shared, &mut spawned).await?;
    // The server's slow-consumer counters are reported over the whole run.
    let baseline = target.counters().await?;
    let first_subscriber = spawned.tasks.len();
    spawn_subscribers(args, &target, names, &shared, &mut spawned).await;
    if let Some(held) = held {
        start_held_publisher(args, held, &shared, &mut spawned, first_subscriber).await;
    }
    tokio::time::sleep(args.warmup).await;
    check_warmed_up(args, &shared)?;
    let window = measure_window(args, target.as_ref(), &shared).await?;
    tokio::time::sleep(FLUSH_GRACE).await;
    drop(spawned);
    if let Some(e) = shared.publish_error.lock().take() {
        return Err(e);
    }
    Ok(report(args, target.as_ref(), &shared, &window, baseline, quiet_symbols))
}

/// The S symbols in play and, with `--drive-feed`, the publisher. A target
/// that learns its symbols from the feed (tickcast) is sent one tick of
/// each, its publisher starts now, and the run waits until the server
/// lists them; a peer's publisher is returned, held until its subscribers
/// are in (a peer that cannot keep up would otherwise starve their
/// handshakes). Without `--drive-feed`, the server's own symbols.
async fn start_feed(
    args: &BenchArgs,
    target: &dyn Target,
    shared: &Arc<Shared>,
    spawned: &mut Spawned,
) -> anyhow::Result<(Vec<String>, Option<HeldPublisher>)> {
    let Some(feed) = args.drive_feed else {
        return Ok((target.own_symbols(args.symbols).await?, None));
    };
    let names = generated_names(args.symbols);
    let mut publisher = Publisher::connect(target, feed).await?;
    let mut gen = TickGen::new(names.clone());
    if !target.learns_symbols_from_feed() {
        return Ok((names, Some((publisher, gen))));
    }
    publisher.seed(&mut gen).await?;
    spawned.tasks.push(tokio::spawn(publisher.run(gen, args.rate, shared.clone())));
    target.wait_for_symbols(&names).await?;
    Ok((names, None))
}

/// Spawns the healthy subscribers (subscriber `i` on K symbols from
/// `i·K`), then the stalled ones and the slow readers on every symbol.
async fn spawn_subscribers(
    args: &BenchArgs,
    target: &Arc<dyn Target>,
    names: Vec<String>,
    shared: &Arc<Shared>,
    spawned: &mut Spawned,
) {
    for i in 0..args.subscribers {
        let task = target.subscriber(args.symbols_of(i, &names), shared.clone());
        spawned.tasks.push(tokio::spawn(task));
        if i % SPAWN_BATCH == SPAWN_BATCH - 1 {
            tokio::task::yield_now().await;
        }
    }
    let names: Arc<[String]> = names.into();
    for _ in 0..args.stalled {
        let (target, names, shared) = (target.clone(), names.clone(), shared.clone());
        spawned.tasks.push(tokio::spawn(async move {
            let label = format!("{} stalled subscriber", target.kind().name());
            hold_stalled(&label, target.connect_stalled(&names), shared).await
        }));
    }
    for _ in 0..args.slow_readers {
        if let Some(task) = target.slow_reader(args.slow_read_rate, shared.clone()) {
            spawned.tasks.push(tokio::spawn(task));
        }
    }
}

/// Starts a peer's publisher once every healthy and stalled subscriber is
/// confirmed, or one of them failed, or [`PEER_CONNECT_DEADLINE`] passed
/// (the check after warm-up then reports who is missing).
async fn start_held_publisher(
    args: &BenchArgs,
    (publisher, gen): HeldPublisher,
    shared: &Arc<Shared>,
    spawned: &mut Spawned,
    first_subscriber: usize,
) {
    let deadline = Instant::now() + PEER_CONNECT_DEADLINE;
    while (shared.connected.load(Ordering::Relaxed) as usize) < args.subscribers
        || (shared.stalled_connected.load(Ordering::Relaxed) as usize) < args.stalled
    {
        // A subscriber task only ends this early if it failed (and said
        // why).
        if Instant::now() > deadline || spawned.tasks[first_subscriber..].iter().any(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    spawned.tasks.push(tokio::spawn(publisher.run(gen, args.rate, shared.clone())));
}

/// Fails the run unless every subscriber connected during warm-up and the
/// publisher is still running.
fn check_warmed_up(args: &BenchArgs, shared: &Shared) -> anyhow::Result<()> {
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
        bail!("{missing} connected during warm-up");
    }
    if let Some(e) = shared.publish_error.lock().take() {
        return Err(e);
    }
    Ok(())
}

/// Reads the server's figures, opens the window for `--duration`, closes
/// it and reads them again.
async fn measure_window(args: &BenchArgs, target: &dyn Target, shared: &Shared) -> anyhow::Result<Window> {
    let before = measure(args, target, shared).await?;
    let started = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.duration).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let after = measure(args, target, shared).await?;
    Ok(Window { before, after, elapsed })
}

/// The run's figures: what the subscribers counted in the window, against
/// what the server published (or the publisher sent), and the server's
/// ladder counters over the whole run (from `baseline`).
fn report(
    args: &BenchArgs,
    target: &dyn Target,
    shared: &Shared,
    window: &Window,
    baseline: Option<Counters>,
    quiet_symbols: usize,
) -> BenchReport {
    let Window { before, after, elapsed } = window;
    let elapsed = *elapsed;
    let delivered = shared.delivered.load(Ordering::Relaxed);
    let hist = shared.histogram.lock();
    let slow = &shared.slow;
    let disconnects = slow.disconnects.lock().clone();
    let rss_timeline = std::mem::take(&mut *shared.rss.lock());
    let cpu = after.cpu - before.cpu;
    let fanout = (args.subscribers * args.per_sub) as f64 / args.symbols as f64;
    let sent_per_sec = after.sent.saturating_sub(before.sent) as f64 / elapsed;
    let expected_per_sec = match (&before.counters, &after.counters) {
        (Some(before), Some(after)) => {
            let known_symbols = (after.symbols - quiet_symbols as f64).max(1.0);
            let published_per_sec = (after.published - before.published) / elapsed;
            // Each update of a symbol goes to its N·K/S subscribers; symbols
            // outside the S in play (synthetic feeds have more) receive none
            // of ours.
            let share = (args.symbols as f64 / known_symbols).min(1.0);
            published_per_sec * share * fanout
        }
        _ => sent_per_sec * fanout,
    };
    let ladder = |f: fn(&Counters) -> f64| Some(f(after.counters.as_ref()?) - f(baseline.as_ref()?));
    BenchReport {
        target: target.kind(),
        subscribers: args.subscribers,
        delivered,
        delivered_per_sec: delivered as f64 / elapsed,
        expected_per_sec,
        published_per_sec: args.drive_feed.map(|_| sent_per_sec),
        seq_errors: shared.seq_errors.load(Ordering::Relaxed),
        p50_us: hist.value_at_quantile(0.50) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        p999_us: hist.value_at_quantile(0.999) as f64,
        max_us: hist.max() as f64,
        server_cpu_ns_per_msg: if delivered > 0 { cpu * 1e9 / delivered as f64 } else { 0.0 },
        server_cpu_cores: cpu / elapsed,
        server_rss_bytes: after.rss,
        server_stats_from: stats_from(args),
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
        server_slow_disconnects: ladder(|c| c.slow_disconnects),
        server_conflation_episodes: ladder(|c| c.conflation_episodes),
        server_conflated_msgs: ladder(|c| c.conflated_msgs),
        server_skipped_trades: ladder(|c| c.skipped[0]),
        server_skipped_quotes: ladder(|c| c.skipped[1]),
        server_skipped_books: ladder(|c| c.skipped[2]),
        rss_timeline,
        idle: None,
        snapshots: None,
        resume: None,
    }
}

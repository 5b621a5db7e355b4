//! `--snapshots`: how long one client takes to get a snapshot of every
//! symbol with `subscribe ["*"]`, and what it costs the server in memory.
//!
//! tickcast only. `--symbols S` is the size of the server's universe
//! (checked against `/symbols`). The bench connects one subscriber in
//! `--encoding`, subscribes `"*"` at `--depth`, and reads at full speed
//! until it holds a snapshot of every symbol, checking that each symbol's
//! updates follow its own snapshot without a gap (or, if the client falls
//! behind the live updates meanwhile, that each `conflated` range is
//! healed by the snapshot that follows it). Meanwhile it samples the
//! server's RSS every [`RSS_EVERY`] and keeps the peak. Bounded by
//! [`DEADLINE`].
//!
//! Imports: the [`Target`] for the server's address, symbols and RSS.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use tickcast::wire::ServerMessage;
use tickcast_client::Client;

use crate::args::BenchArgs;
use crate::measure::{server_rss, stats_from};
use crate::report::{BenchReport, SnapshotFigures};
use crate::target::Target;

/// How often the server's RSS is sampled for the peak.
const RSS_EVERY: Duration = Duration::from_millis(20);

/// Longest the whole run may take.
const DEADLINE: Duration = Duration::from_secs(180);

/// Runs the snapshot-storm measurement.
pub async fn run(args: &BenchArgs, target: Arc<dyn Target>) -> anyhow::Result<BenchReport> {
    let count = target.own_symbols(args.symbols).await?.len();
    let rss_before = server_rss(args, target.as_ref()).await?;
    let peak = Arc::new(AtomicU64::new(rss_before as u64));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (target, peak, stop, args) = (target.clone(), peak.clone(), stop.clone(), args.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(rss) = server_rss(&args, target.as_ref()).await {
                    peak.fetch_max(rss as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(RSS_EVERY).await;
            }
        })
    };
    let result = tokio::time::timeout(DEADLINE, storm(args, count)).await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let mut figures = match result {
        Ok(figures) => figures?,
        Err(_) => bail!("not every snapshot arrived within {}", humantime::format_duration(DEADLINE)),
    };
    figures.rss_before_bytes = rss_before;
    figures.rss_peak_bytes = peak.load(Ordering::Relaxed) as f64;
    Ok(BenchReport {
        target: target.kind(),
        subscribers: 1,
        server_rss_bytes: figures.rss_peak_bytes,
        server_stats_from: stats_from(args),
        snapshots: Some(figures),
        ..BenchReport::default()
    })
}

/// One subscriber, `"*"`, read until `count` snapshots.
async fn storm(args: &BenchArgs, count: usize) -> anyhow::Result<SnapshotFigures> {
    let mut client = Client::connect(args.server, args.encoding).await.context("connect")?;
    let t0 = Instant::now();
    client.subscribe_depth(&["*"], &args.depth).await.context("subscribe")?;
    let mut last: HashMap<String, u64> = HashMap::with_capacity(count);
    // Symbols named by a `conflated` message: their next snapshot is a
    // recovery, not a second first snapshot.
    let mut recovering: HashSet<String> = HashSet::new();
    let (mut snapshots, mut updates, mut conflated, mut first_snapshot) = (0usize, 0u64, 0u64, None);
    let mut ack = None;
    while snapshots < count {
        match client.next_message().await.with_context(|| format!("after {snapshots} snapshots"))? {
            ServerMessage::Ack { .. } => ack = Some(t0.elapsed()),
            ServerMessage::Conflated { symbols } => {
                conflated += 1;
                for s in symbols {
                    ensure!(
                        last.get(&*s.sym) == Some(&(s.from_seq - 1)),
                        "{}: conflated from {} after {:?}",
                        s.sym,
                        s.from_seq,
                        last.get(&*s.sym)
                    );
                    recovering.insert(s.sym.into_owned());
                }
            }
            // A symbol replaced upstream: its next snapshot (at any seq,
            // even a lower one) is a recovery, not a second first snapshot.
            ServerMessage::Reset { sym, .. } => {
                if last.contains_key(&*sym) {
                    recovering.insert(sym.into_owned());
                }
            }
            ServerMessage::Snapshot { sym, seq, .. } => {
                first_snapshot.get_or_insert_with(|| t0.elapsed());
                if recovering.remove(&*sym) {
                    last.insert(sym.into_owned(), seq);
                    continue;
                }
                if last.insert(sym.to_string(), seq).is_some() {
                    bail!("a second snapshot of {sym}");
                }
                snapshots += 1;
            }
            msg => {
                if let Some((sym, seq)) = msg.sym_seq() {
                    let Some(prev) = last.get_mut(sym) else { bail!("an update of {sym} before its snapshot") };
                    ensure!(!recovering.contains(sym), "an update of {sym} between conflated and its snapshot");
                    if seq != *prev + 1 {
                        bail!("{sym}: seq {seq} after {prev}");
                    }
                    *prev = seq;
                    updates += 1;
                } else if let ServerMessage::Error { code, message, .. } = msg {
                    bail!("error {code}: {message}");
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    Ok(SnapshotFigures {
        snapshot_symbols: count,
        snapshot_ack_s: ack.unwrap_or_default().as_secs_f64(),
        snapshot_first_s: first_snapshot.unwrap_or_default().as_secs_f64(),
        snapshot_last_s: elapsed.as_secs_f64(),
        snapshot_updates_interleaved: updates,
        snapshot_conflated: conflated,
        rss_before_bytes: 0.0,
        rss_peak_bytes: 0.0,
    })
}

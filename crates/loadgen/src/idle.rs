//! `--idle N`: what N idle subscribers cost the server in memory.
//!
//! No publisher runs. The bench reads the server's RSS, connects N
//! subscribers on K symbols each, at most [`CONCURRENCY`] handshakes at a
//! time, and waits until every subscription is confirmed (tickcast's and
//! node's acks, the `PONG` to a `PING` sent after nats' `SUB`s). After
//! [`SETTLE`] it reads the RSS again, reports the growth per connection,
//! and closes them all.
//!
//! Imports: the [`Target`] (how to connect and confirm a subscriber), the
//! publisher (to announce tickcast's symbols), and the server's RSS from
//! [`crate::measure`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use anyhow::Context as _;
use tickcast_client::Client;

use crate::args::BenchArgs;
use crate::measure::{server_rss, stats_from};
use crate::publish::{Publisher, TickGen};
use crate::report::{BenchReport, IdleFigures};
use crate::target::{generated_names, Target};

/// Handshakes in flight at once: enough to connect 10k subscribers in
/// seconds, few enough not to overflow a server's accept backlog.
const CONCURRENCY: usize = 200;

/// Longest one subscriber may take to connect and be confirmed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest all of them may take: the run must end by itself.
const CONNECT_DEADLINE: Duration = Duration::from_secs(180);

/// Time given to the server to finish whatever the connections set off
/// (buffers, snapshots, allocator) before its RSS is read again.
const SETTLE: Duration = Duration::from_secs(2);

/// Runs the idle-memory measurement with `n` subscribers.
pub async fn run(args: &BenchArgs, target: Arc<dyn Target>, n: usize) -> anyhow::Result<BenchReport> {
    let names = symbols(args, target.as_ref()).await?;
    let before = server_rss(args, target.as_ref()).await?;
    let clients = connect_all(args, &target, n, &names).await?;
    tokio::time::sleep(SETTLE).await;
    let after = server_rss(args, target.as_ref()).await?;
    drop(clients);
    Ok(BenchReport {
        target: target.kind(),
        subscribers: n,
        server_rss_bytes: after,
        server_stats_from: stats_from(args),
        slow_read_rate: args.slow_read_rate,
        idle: Some(IdleFigures {
            idle_connections: n,
            idle_rss_before_bytes: before,
            idle_rss_after_bytes: after,
            idle_rss_per_conn_bytes: (after - before) / n as f64,
        }),
        ..BenchReport::default()
    })
}

/// The S symbols to subscribe to. A target that learns its symbols from
/// the feed (tickcast, with `--drive-feed`) is sent one tick of each and
/// nothing more; without `--drive-feed`, the target's own symbols; peers
/// need no announcement.
async fn symbols(args: &BenchArgs, target: &dyn Target) -> anyhow::Result<Vec<String>> {
    match args.drive_feed {
        Some(feed) if target.learns_symbols_from_feed() => {
            let names = generated_names(args.symbols);
            let mut publisher = Publisher::connect(target, feed).await?;
            publisher.seed(&mut TickGen::new(names.clone())).await?;
            target.wait_for_symbols(&names).await?;
            Ok(names)
        }
        Some(_) => Ok(generated_names(args.symbols)),
        None => target.own_symbols(args.symbols).await,
    }
}

/// Connects `n` subscribers, subscriber `i` on the K symbols from `i·K`
/// (wrapping), and returns them once all are confirmed; any failure fails
/// the run, since a partial count would skew the per-connection figure.
async fn connect_all(
    args: &BenchArgs,
    target: &Arc<dyn Target>,
    n: usize,
    names: &[String],
) -> anyhow::Result<Vec<Client>> {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut pending = JoinSet::new();
    for i in 0..n {
        let symbols = args.symbols_of(i, names);
        let (permits, target) = (permits.clone(), target.clone());
        pending.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            tokio::time::timeout(CONNECT_TIMEOUT, target.connect_idle(&symbols))
                .await
                .with_context(|| format!("not confirmed within {}", humantime::format_duration(CONNECT_TIMEOUT)))?
        });
    }
    let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
    let mut clients = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut first_error = None;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, pending.join_next()).await else {
            anyhow::bail!(
                "only {} of {n} idle subscribers connected within {}",
                clients.len(),
                humantime::format_duration(CONNECT_DEADLINE)
            );
        };
        match next {
            None => break,
            Some(Ok(Ok(client))) => clients.push(client),
            Some(Ok(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Some(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(anyhow::anyhow!("connection task failed: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        anyhow::bail!("{failed} of {n} idle subscribers failed; the first: {e:#}");
    }
    Ok(clients)
}

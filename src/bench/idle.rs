//! `--idle N`: what N idle subscribers cost the server in memory.
//!
//! No publisher runs. The bench reads the server's RSS, connects N
//! subscribers on K symbols each, at most [`CONCURRENCY`] handshakes at a
//! time, and waits until every subscription is confirmed (tickcast's and
//! node's acks, the `PONG` to a `PING` sent after nats' `SUB`s). After
//! [`SETTLE`] it reads the RSS again, reports the growth per connection,
//! and closes them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::publish::{Publisher, TickGen};
use super::{
    generated_names, nats, node, server_rss, server_symbols, stats_from, tickcast, BenchArgs, BenchReport, IdleFigures,
    Target,
};
use crate::client::Client;
use crate::wire::Encoding;

/// Handshakes in flight at once: enough to connect 10k subscribers in
/// seconds, few enough not to overflow a server's accept backlog.
pub(super) const CONCURRENCY: usize = 200;

/// Longest one subscriber may take to connect and be confirmed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest all of them may take: the run must end by itself.
const CONNECT_DEADLINE: Duration = Duration::from_secs(180);

/// Time given to the server to finish whatever the connections set off
/// (buffers, snapshots, allocator) before its RSS is read again.
const SETTLE: Duration = Duration::from_secs(2);

/// Runs the idle-memory measurement with `n` subscribers.
pub(super) async fn run(args: &BenchArgs, n: usize) -> Result<BenchReport, String> {
    let names = symbols(args).await?;
    let before = server_rss(args).await?;
    let clients = connect_all(args, n, &names).await?;
    tokio::time::sleep(SETTLE).await;
    let after = server_rss(args).await?;
    drop(clients);
    Ok(BenchReport {
        target: args.target,
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

/// The S symbols to subscribe to. A tickcast server with a tcp feed is
/// sent one tick of each (with `--drive-feed`) and nothing more; peers
/// need no announcement.
async fn symbols(args: &BenchArgs) -> Result<Vec<String>, String> {
    match (args.target, args.drive_feed) {
        (Target::Tickcast, Some(feed)) => {
            let names = generated_names(args.symbols);
            let mut publisher = Publisher::connect(Target::Tickcast, feed).await?;
            publisher.seed(&mut TickGen::new(names.clone())).await?;
            tickcast::wait_for_symbols(args.server, &names).await?;
            Ok(names)
        }
        (Target::Tickcast, None) => server_symbols(args).await,
        _ => Ok(generated_names(args.symbols)),
    }
}

/// Connects `n` subscribers, subscriber `i` on the K symbols from `i·K`
/// (wrapping), and returns them once all are confirmed; any failure fails
/// the run, since a partial count would skew the per-connection figure.
async fn connect_all(args: &BenchArgs, n: usize, names: &[String]) -> Result<Vec<Client>, String> {
    let permits = Arc::new(Semaphore::new(CONCURRENCY));
    let mut pending = JoinSet::new();
    for i in 0..n {
        let symbols: Vec<String> =
            (0..args.per_sub).map(|j| names[(i * args.per_sub + j) % names.len()].clone()).collect();
        let permits = permits.clone();
        let (target, server, encoding) = (args.target, args.server, args.encoding);
        pending.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            tokio::time::timeout(CONNECT_TIMEOUT, connect_one(target, server, encoding, &symbols))
                .await
                .map_err(|_| format!("not confirmed within {}", humantime::format_duration(CONNECT_TIMEOUT)))?
        });
    }
    let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
    let mut clients = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut first_error = None;
    loop {
        let next = tokio::time::timeout_at(deadline, pending.join_next()).await.map_err(|_| {
            format!(
                "only {} of {n} idle subscribers connected within {}",
                clients.len(),
                humantime::format_duration(CONNECT_DEADLINE)
            )
        })?;
        match next {
            None => break,
            Some(Ok(Ok(client))) => clients.push(client),
            Some(Ok(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Some(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(format!("connection task failed: {e}"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(format!("{failed} of {n} idle subscribers failed; the first: {e}"));
    }
    Ok(clients)
}

/// One idle subscriber of `target`, confirmed.
async fn connect_one(
    target: Target,
    server: SocketAddr,
    encoding: Encoding,
    symbols: &[String],
) -> Result<Client, String> {
    match target {
        Target::Tickcast => tickcast::connect_idle(server, encoding, symbols).await,
        Target::Nats => nats::connect_idle(server, symbols).await,
        Target::Node => node::connect_idle(server, symbols).await,
    }
}

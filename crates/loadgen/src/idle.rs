//! `--idle N`: what N idle subscribers cost the server in memory, and
//! with `--with-load`, what they cost the active subscribers in latency.
//!
//! The bench reads the server's RSS and the kernel's TCP memory, connects
//! N subscribers on K symbols each, at most [`CONCURRENCY`] handshakes at
//! a time, and waits until every subscription is confirmed (tickcast's
//! and node's acks, the `PONG` to a `PING` sent after nats' `SUB`s),
//! timing it (the connect rate). Each then reads what the server sends it
//! and answers its pings ([`hold`]), as an idle browser does. Once the
//! server's RSS has settled ([`SETTLE`]) the bench reads both again and
//! reports the growth per connection. Alone, it then closes them all; with
//! `--with-load` it holds them through a load run ([`crate::load`]) whose
//! subscribers and publisher use the other symbols, and closes them after.
//!
//! # Past the ephemeral port range
//! Against a 127.x server, connection `i` is bound to source address
//! `--source-base` + `i` / [`PER_SOURCE`] before it connects (127.0.0.2,
//! 127.0.0.3, ...; all of 127/8 is loopback on Linux), so each address's
//! own ephemeral ports are used and N is bounded by the open-file limits
//! (this process's and the server's), not by the 28k ports of one address.
//! 100,000 connections take 20 addresses.
//!
//! Imports: the [`Target`] (how to connect and confirm a subscriber), the
//! publisher (to announce tickcast's symbols), the server's RSS from
//! [`crate::measure`], and the load run.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Longest all of them may take, plus [`DEADLINE_PER_1000`] per thousand:
/// the run must end by itself.
const CONNECT_DEADLINE: Duration = Duration::from_secs(120);

/// See [`CONNECT_DEADLINE`]: 100,000 connections get 220 s more.
const DEADLINE_PER_1000: Duration = Duration::from_millis(2200);

/// Connections per loopback source address: well below the 28,232 ports of
/// the default `ip_local_port_range` (32768-60999). A `bind` to port 0
/// searches that range for a port no socket of the address holds, and the
/// fuller the range the longer the search: with 25,000 per address the
/// connect rate fell from about 3,000/s to below 400/s past 10,000
/// (BENCHMARKS.md, "Many connections"). 127/8 has addresses to spare.
pub const PER_SOURCE: usize = 5_000;

/// Descriptors this process needs besides one per connection: the
/// runtime, stdio, `/metrics` scrapes, the publisher.
const OWN_FDS: usize = 64;

/// Time given to the server to finish whatever the connections set off
/// (buffers, snapshots, allocator) before its RSS is read again; then it
/// is read every [`SETTLE`] until it moves by less than [`SETTLED_WITHIN`]
/// (a busy server may still be writing the subscribers' snapshots, held
/// in its queues meanwhile), for at most [`SETTLE_AT_MOST`].
const SETTLE: Duration = Duration::from_secs(2);

/// See [`SETTLE`]: a relative change of the RSS between two readings.
const SETTLED_WITHIN: f64 = 0.01;

/// See [`SETTLE`].
const SETTLE_AT_MOST: Duration = Duration::from_secs(30);

/// Runs the idle-memory measurement with `n` subscribers; with
/// `--with-load`, the load run beside them.
pub async fn run(args: &BenchArgs, target: Arc<dyn Target>, n: usize) -> anyhow::Result<BenchReport> {
    check_fd_limit(args, n)?;
    let names = symbols(args, target.as_ref()).await?;
    let before = server_rss(args, target.as_ref()).await?;
    let kernel_before = kernel_tcp_bytes();
    let started = Instant::now();
    let clients = hold(connect_all(args, &target, n, &names).await?);
    let connect_secs = started.elapsed().as_secs_f64();
    let after = settled_rss(args, target.as_ref()).await?;
    let kernel_after = kernel_tcp_bytes();
    let idle = IdleFigures {
        idle_connections: n,
        idle_sources: sources_used(args, n),
        idle_connect_secs: connect_secs,
        idle_connects_per_sec: n as f64 / connect_secs.max(1e-9),
        idle_rss_before_bytes: before,
        idle_rss_after_bytes: after,
        idle_rss_per_conn_bytes: (after - before) / n as f64,
        kernel_tcp_before_bytes: kernel_before,
        kernel_tcp_after_bytes: kernel_after,
        kernel_tcp_per_conn_bytes: match (kernel_before, kernel_after) {
            (Some(b), Some(a)) => Some((a - b) / n as f64),
            _ => None,
        },
    };
    if args.with_load {
        // The idle ones' symbols are known to the server but get no
        // ticks: the load run leaves them out of its expected deliveries.
        let mut report = crate::load::run(args, target, names.len()).await?;
        drop(clients);
        report.idle = Some(idle);
        return Ok(report);
    }
    drop(clients);
    Ok(BenchReport {
        target: target.kind(),
        subscribers: n,
        server_rss_bytes: after,
        server_stats_from: stats_from(args),
        slow_read_rate: args.slow_read_rate,
        idle: Some(idle),
        ..BenchReport::default()
    })
}

/// Keeps every idle subscriber's connection alive until the returned set
/// is dropped (which aborts the tasks and closes the connections): each
/// reads what little the server sends it (its snapshots and pings) and
/// answers the pings, as an idle browser does. A subscriber that never
/// read would be closed by the server's pong timeout (`--ping-interval`
/// plus `--pong-timeout`, 25 s by default) in the middle of a
/// `--with-load` run.
fn hold(clients: Vec<Client>) -> JoinSet<()> {
    let mut held = JoinSet::new();
    for mut client in clients {
        held.spawn(async move { while let Ok(Ok(_)) = client.next_payload().await {} });
    }
    held
}

/// The server's RSS once it has settled ([`SETTLE`]).
async fn settled_rss(args: &BenchArgs, target: &dyn Target) -> anyhow::Result<f64> {
    let until = Instant::now() + SETTLE_AT_MOST;
    tokio::time::sleep(SETTLE).await;
    let mut rss = server_rss(args, target).await?;
    while Instant::now() < until {
        tokio::time::sleep(SETTLE).await;
        let now = server_rss(args, target).await?;
        let moved = (now - rss).abs() / rss.max(1.0);
        rss = now;
        if moved < SETTLED_WITHIN {
            break;
        }
    }
    Ok(rss)
}

/// Fails early, saying why, when this process's open-file limit cannot
/// hold the run's connections: each is a descriptor here as well as in
/// the server.
fn check_fd_limit(args: &BenchArgs, n: usize) -> anyhow::Result<()> {
    let Some((limit, _)) = tickcast::sys::open_file_limit() else {
        return Ok(());
    };
    let active = if args.with_load { args.subscribers + args.stalled + args.slow_readers } else { 0 };
    let needed = (n + active + OWN_FDS) as u64;
    anyhow::ensure!(
        needed <= limit,
        "--idle {n} needs about {needed} open files in this process, and its limit is {limit} (`ulimit -Hn`): raise \
         the hard limit, or split the idle connections over several bench processes, each with its own \
         --source-base"
    );
    Ok(())
}

/// The source address of idle connection `i`: against a 127.x server,
/// `--source-base` plus one per [`PER_SOURCE`] connections; otherwise the
/// system's choice.
fn source_of(args: &BenchArgs, i: usize) -> Option<IpAddr> {
    let IpAddr::V4(server) = args.server.ip() else {
        return None;
    };
    if !server.is_loopback() {
        return None;
    }
    let base = u32::from(args.source_base);
    Some(IpAddr::V4(Ipv4Addr::from(base.saturating_add((i / PER_SOURCE) as u32))))
}

/// How many source addresses `n` idle connections use (0: the system's
/// choice).
fn sources_used(args: &BenchArgs, n: usize) -> usize {
    match source_of(args, 0) {
        Some(_) => n.div_ceil(PER_SOURCE),
        None => 0,
    }
}

/// The kernel's memory for all TCP sockets of the machine, bytes: the
/// `mem` pages of `/proc/net/sockstat` (send and receive queues; over
/// loopback both ends of every connection are on this machine). `None`
/// where it cannot be read.
fn kernel_tcp_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut fields = tcp.split_whitespace();
    fields.find(|f| *f == "mem")?;
    let pages: f64 = fields.next()?.parse().ok()?;
    Some(pages * tickcast::sys::page_size() as f64)
}

/// The S symbols to subscribe to. A target that learns its symbols from
/// the feed (tickcast, with `--drive-feed`) is sent one tick of each and
/// nothing more; without `--drive-feed`, the target's own symbols; peers
/// need no announcement.
async fn symbols(args: &BenchArgs, target: &dyn Target) -> anyhow::Result<Vec<String>> {
    // With --with-load the idle subscribers take the S names after the
    // S the load run publishes to.
    let quiet = |names: Vec<String>| if args.with_load { names[args.symbols..].to_vec() } else { names };
    let count = if args.with_load { 2 * args.symbols } else { args.symbols };
    match args.drive_feed {
        Some(feed) if target.learns_symbols_from_feed() => {
            let names = quiet(generated_names(count));
            let mut publisher = Publisher::connect(target, feed).await?;
            publisher.seed(&mut TickGen::new(names.clone())).await?;
            target.wait_for_symbols(&names).await?;
            Ok(names)
        }
        Some(_) => Ok(quiet(generated_names(count))),
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
        let source = source_of(args, i);
        let (permits, target) = (permits.clone(), target.clone());
        pending.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            tokio::time::timeout(CONNECT_TIMEOUT, target.connect_idle(&symbols, source))
                .await
                .with_context(|| format!("not confirmed within {}", humantime::format_duration(CONNECT_TIMEOUT)))?
        });
    }
    let deadline_after = CONNECT_DEADLINE + DEADLINE_PER_1000 * (n / 1000) as u32;
    let deadline = tokio::time::Instant::now() + deadline_after;
    let mut clients = Vec::with_capacity(n);
    let mut failed = 0usize;
    let mut first_error = None;
    loop {
        let Ok(next) = tokio::time::timeout_at(deadline, pending.join_next()).await else {
            anyhow::bail!(
                "only {} of {n} idle subscribers connected within {}",
                clients.len(),
                humantime::format_duration(deadline_after)
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(server: &str) -> BenchArgs {
        BenchArgs::parse_from(["tickcast-bench", "--server", server, "--idle", "1"])
    }

    #[test]
    fn idle_connections_spread_over_loopback_sources_past_the_port_range() {
        let loopback = args("127.0.0.1:8080");
        let at = |i| source_of(&loopback, i).map(|ip| ip.to_string());
        assert_eq!(at(0).as_deref(), Some("127.0.0.2"));
        assert_eq!(at(PER_SOURCE - 1).as_deref(), Some("127.0.0.2"));
        assert_eq!(at(PER_SOURCE).as_deref(), Some("127.0.0.3"));
        assert_eq!(at(20 * PER_SOURCE - 1).as_deref(), Some("127.0.0.21"), "100,000 take 20 addresses");
        assert_eq!(sources_used(&loopback, 100_000), 20);
        assert_eq!(sources_used(&loopback, 100_001), 21);
        let remote = args("10.0.0.1:8080");
        assert_eq!(source_of(&remote, 0), None, "a 127.x source cannot reach another host");
        assert_eq!(sources_used(&remote, 100_000), 0);
    }

    #[test]
    fn the_kernel_tcp_memory_is_read() {
        assert!(kernel_tcp_bytes().is_some(), "Linux has /proc/net/sockstat");
    }
}

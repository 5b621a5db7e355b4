//! What the bench reads of the server under test: its CPU time and RSS
//! (from `/proc/PID/stat` with `--server-pid`, else from the server's own
//! counters), and those counters.
//!
//! Imports: `tickcast::metrics::ProcessStats` (the `/proc/PID/stat`
//! reader the server's `/metrics` uses too), the [`Target`] for the
//! server's own counters, and the run's [`Shared`] state.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tickcast::metrics::ProcessStats;

use crate::args::BenchArgs;
use crate::shared::Shared;
use crate::target::{Counters, Target};

/// The server's figures at one instant.
pub struct Measure {
    /// CPU seconds, all threads.
    pub cpu: f64,
    /// RSS, bytes.
    pub rss: f64,
    /// Ticks the publisher had sent.
    pub sent: u64,
    /// The server's own counters (tickcast's `/metrics`; None for peers).
    pub counters: Option<Counters>,
}

/// Reads the server's CPU and RSS (from /proc with --server-pid, else from
/// its counters) and its counters, where it has them.
pub async fn measure(args: &BenchArgs, target: &dyn Target, shared: &Shared) -> anyhow::Result<Measure> {
    let counters = target.counters().await?;
    let (mut cpu, mut rss) = match (args.server_pid, &counters) {
        (Some(pid), _) => proc_stats(pid)?,
        (None, Some(c)) => (c.cpu, c.rss),
        (None, None) => anyhow::bail!("--target {} needs --server-pid", target.kind().name()),
    };
    for &pid in &args.extra_pids {
        let (c, r) = proc_stats(pid)?;
        cpu += c;
        rss += r;
    }
    Ok(Measure { cpu, rss, sent: shared.sent.load(Ordering::Relaxed), counters })
}

/// The server's RSS, bytes, from the same source as [`measure`].
pub async fn server_rss(args: &BenchArgs, target: &dyn Target) -> anyhow::Result<f64> {
    match args.server_pid {
        Some(pid) => Ok(proc_stats(pid)?.1),
        None => target.rss().await,
    }
}

/// Where CPU and RSS come from, for the report.
pub fn stats_from(args: &BenchArgs) -> &'static str {
    if args.server_pid.is_some() {
        "proc"
    } else {
        "metrics"
    }
}

/// CPU seconds and RSS bytes of process `pid`.
pub fn proc_stats(pid: u32) -> anyhow::Result<(f64, f64)> {
    ProcessStats::read(Some(pid))
        .map(|p| (p.cpu_seconds, p.rss_bytes as f64))
        .with_context(|| format!("cannot read /proc/{pid}/stat: is --server-pid {pid} a running process?"))
}

/// Samples the server's RSS every `every` until the run stops; a failed
/// read is skipped (the run's own reads report a dead server).
pub async fn sample_rss(pid: Option<u32>, target: Arc<dyn Target>, every: Duration, shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let rss = match pid {
            Some(pid) => proc_stats(pid).ok().map(|(_, rss)| rss),
            None => target.rss().await.ok(),
        };
        if let Some(rss) = rss {
            shared.rss.lock().push([shared.started.elapsed().as_secs_f64(), rss]);
        }
    }
}

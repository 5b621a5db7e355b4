//! `tickcast-bench`: the load generator of tickcast.
//!
//! In: a running server (and optionally its tcp feed). Out: a report of
//! delivered msgs/s, end-to-end latency percentiles (hdrhistogram), seq
//! gaps, and the server's CPU time per delivered message and RSS (scraped
//! from its `/metrics`, or read from `/proc/PID/stat` with `--server-pid`).
//!
//! N subscribers each take K consecutive symbols of the first S (wrapping),
//! so every symbol has N·K/S subscribers. Latency is receive time minus
//! `ts_ingest`, or minus `ts_event` with `--drive-feed`, where the bench
//! itself publishes JSON ticks (or, with `--feed-format binary`, binary tick
//! records) into the server's tcp feed, stamped at send.
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
//!
//! # Peers
//! To compare tickcast with other designs on the same machine, workload
//! and load generator, `--target` also speaks to two peers:
//! - `nats`: nats-server; subscribers on its WebSocket listener, the
//!   publisher on its TCP client port (`target/nats`).
//! - `node`: benches/peers/node/server.js, a Node.js `ws` rooms server;
//!   the publisher is a WebSocket client of it (`target/node.rs`).
//! - `minimal`: `tickcast-minimal` (this crate's second binary,
//!   `src/bin/tickcast-minimal`), the simplest fan-out server that could
//!   work: one task per feed connection parses, encodes msgpack once,
//!   frames once and pushes the frame into each subscriber's queue, whose
//!   writer task writes it all in one vectored write. It speaks the part
//!   of tickcast's protocol and feed the bench uses (`target/minimal.rs`),
//!   so the two are read and measured the same way; its queues are
//!   unbounded on purpose.
//!
//! With `--drive-feed` the bench is the publisher for every target: the
//! same JSON quotes, round robin over the S symbols, each with a
//! per-symbol `seq` and its send time in `ts_event` (`publish.rs`). The
//! expected delivery is computed from what the publisher sent (for
//! tickcast, from what the server published, as before). Peers have no
//! `/metrics`: their CPU and RSS come from `/proc/PID/stat`
//! (`--server-pid`), and the slow-consumer ladder counters are tickcast's
//! alone. A peer's publisher starts once its subscribers are confirmed (a
//! saturated peer would otherwise starve their handshakes). `--stalled`
//! works for every target: nats' stalled subscribers take `tick.>`, node's
//! join every room, minimal's subscribe to every symbol by name.
//!
//! # Idle memory
//! `--idle N` publishes nothing: it reads the server's RSS, connects N
//! subscribers on K symbols each (at most 200 handshakes at a time), waits
//! until every subscription is confirmed, settles, and reports the RSS
//! growth per connection and the connect rate (`idle.rs`). Against a 127.x
//! server the connections come from 127.0.0.2, 127.0.0.3, ... (5,000
//! each, `--source-base`), so N is bounded by the open-file limits, not
//! the ephemeral port range. `--with-load` holds them through a load run
//! with `--drive-feed`, on quiet symbols of their own, and reports the
//! active subscribers' figures beside the idle ones.
//!
//! # Snapshot storm
//! `--snapshots` (tickcast only) subscribes one client to `"*"` over the
//! server's `--symbols` symbols and reads until it holds every snapshot:
//! the time to the last one and the server's peak RSS (`snapshots.rs`).
//!
//! # Resume
//! `--resume N` (tickcast only) lets one client leave a symbol, and come
//! back with `from_seq` once N updates of it were published: the time to
//! the ack, to the N-th missed update and to the first live one, checking
//! that exactly the missed seqs arrive (`resume.rs`).
//!
//! # Modules
//! - `args`: the flags, and the checks that reject a run that cannot mean
//!   anything before anything connects.
//! - `target`: the [`Target`] trait and its four
//!   systems under test (`tickcast`, `nats`, `node`, `minimal`): how each is
//!   subscribed to, published to and read.
//! - `load`: a throughput and latency run, step by step.
//! - `idle`: an idle-memory run (`--idle`).
//! - `snapshots`: a snapshot-storm run (`--snapshots`).
//! - `resume`: a resume run (`--resume`).
//! - `publish`: the publisher (`--drive-feed`) and its market.
//! - `tally`: a healthy subscriber's seq check and latency samples.
//! - `shared`: the state every task of a run shares.
//! - `measure`: the server's CPU, RSS and counters.
//! - `light`: the few fields the bench reads of each message, read in place.
//! - `report`: the figures of a run, as text and as JSON.
//!
//! Imports: the server only through its wire protocol and HTTP endpoints,
//! via `tickcast-client`; of the `tickcast` crate, the message model and
//! codecs (`tickcast::wire`, `tickcast::model`, whose binary tick record
//! the publisher writes), the synthetic feed's symbol names, the tcp feed's
//! line and record parsers (in a test), `/proc` stats and the
//! open-file limit. Nothing in `tickcast` imports this crate.

#![warn(missing_docs)]
#![deny(unsafe_code)]

mod args;
mod idle;
mod light;
mod load;
mod measure;
mod publish;
mod report;
mod resume;
mod shared;
mod snapshots;
mod tally;
mod target;

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use args::BenchArgs;
use report::BenchReport;
use target::Target;

/// The bench ran inside the server's binary, with its allocator, until it
/// moved here; it keeps it so its own cost per message does not change.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tickcast-bench: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = args.target.build(&args);
    match runtime.block_on(run(&args, target.clone())) {
        Ok(report) => {
            report.print(&args, target.as_ref());
            if args.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickcast-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one bench against a server: checks the flags, then a snapshot
/// storm, a resume, an idle-memory run or a load run.
async fn run(args: &BenchArgs, target: Arc<dyn Target>) -> anyhow::Result<BenchReport> {
    args::check(args, target.as_ref())?;
    // 10k idle subscribers need 10k descriptors.
    tickcast::sys::raise_fd_limit();
    if args.snapshots {
        return snapshots::run(args, target).await;
    }
    if let Some(n) = args.resume {
        return resume::run(args, target, n).await;
    }
    match args.idle {
        Some(n) => idle::run(args, target, n).await,
        None => load::run(args, target, 0).await,
    }
}

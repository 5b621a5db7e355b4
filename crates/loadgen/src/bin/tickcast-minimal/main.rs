//! `tickcast-minimal`: the simplest fan-out server that could work, as a
//! benchmark peer for tickcast (`tickcast-bench --target minimal`, a
//! system of `scripts/bench-peers.sh`).
//!
//! ```text
//!  feed connection (one task each)                 subscriber (two tasks each)
//!  JSON line ─▶ parse ─▶ seq ─▶ msgpack ─▶ frame ──▶ Mutex<Vec<Bytes>> ─▶ writer: take all,
//!               (tickcast's parser and encoder)   │  + Notify            vectored write
//!                                                 └▶ ... every subscriber of the symbol
//! ```
//!
//! What tickcast does between a feed line and a socket write, minus
//! everything that is not that: no ring, no engine thread, no pacing, no
//! snapshots, no slow-consumer policy, no limits. The message a subscriber
//! gets is byte for byte the `quote` or `trade` tickcast would send in
//! MessagePack (tickcast's own encoder, seqs from 1 per symbol, `ts_event`
//! as the feed sent it), so the bench reads and measures both the same
//! way; the difference in latency and CPU is what tickcast's pipeline
//! costs or saves. Its queues are **unbounded on purpose**: a subscriber
//! that stops reading grows the server's memory until it goes (W4).
//!
//! Usage: `tickcast-minimal --listen 127.0.0.1:18585 --feed
//! 127.0.0.1:18586`, then subscribers at `ws://LISTEN/ws` and a JSON-lines
//! feed at `tcp://FEED` (what `tickcast-bench --drive-feed` sends). Prints
//! the bound addresses on one line at start. Stops on SIGTERM or SIGINT
//! (their default action: there is nothing to flush).
//!
//! Modules: `feed` (a feed connection), `topics` (the symbol table:
//! seqs and subscribers), `queue` (one subscriber's queue and wake-up),
//! `session` (upgrade, requests, the writer). Imports from `tickcast`:
//! the feed's line parser, the wire messages, encoder and framing.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod feed;
mod queue;
mod session;
mod topics;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::net::TcpListener;

use topics::Topics;

/// The same allocator as tickcast, so the comparison is of designs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The flags.
#[derive(Debug, Parser)]
#[command(name = "tickcast-minimal", version, about = "The simplest fan-out server: a benchmark peer for tickcast")]
struct Args {
    /// Address for subscribers (WebSocket at `/ws`); port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Address of the JSON-lines tcp feed; port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:8091")]
    feed: SocketAddr,
    /// Tokio worker threads (default: one per CPU the process may run on,
    /// so `taskset -c 0` makes it one).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tickcast-minimal: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tickcast-minimal: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds both listeners, says where, and serves until killed.
async fn run(args: &Args) -> std::io::Result<()> {
    let subscribers = TcpListener::bind(args.listen).await?;
    let feeds = TcpListener::bind(args.feed).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "tickcast-minimal: ws://{}/ws feed tcp://{}", subscribers.local_addr()?, feeds.local_addr()?)?;
    out.flush()?;
    drop(out);
    let topics = Arc::new(Topics::default());
    let feed_topics = topics.clone();
    tokio::spawn(accept(feeds, move |stream| {
        let topics = feed_topics.clone();
        async move { feed::run(stream, &topics).await }
    }));
    accept(subscribers, move |stream| session::serve(stream, topics.clone())).await;
    Ok(())
}

/// Accepts connections for ever, one task each. An accept error (out of
/// descriptors, say) is printed, and accepting resumes after a pause.
async fn accept<F, Fut>(listener: TcpListener, handle: F)
where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream));
            }
            Err(e) => {
                eprintln!("tickcast-minimal: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

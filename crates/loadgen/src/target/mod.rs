//! The systems under test, behind one trait: tickcast itself, and the
//! peers it is compared with on the same workload and load generator.
//!
//! A run (`load`, `idle`) asks its [`Target`] for everything that differs
//! between systems: how a subscriber subscribes and reads, how a stalled
//! one holds its connection, where the publisher connects and how it
//! frames ticks, and which of the server's own figures can be read. The
//! run itself is the same for all of them.
//!
//! - [`tickcast`]: tickcast's own protocol, `/metrics` and `/symbols`.
//! - [`nats`]: nats-server; subscribers on its WebSocket listener, the
//!   publisher on its TCP client port.
//! - [`node`]: benches/peers/node/server.js, a Node.js `ws` rooms server.
//! - [`minimal`]: `tickcast-minimal`, the simplest fan-out server that
//!   could work (this crate's second binary), in tickcast's protocol.
//!
//! Imports: `tickcast_client` (connections, the frame reader), and the
//! run's [`Shared`] state and [`Tally`](crate::tally::Tally) that the
//! subscribers add to. Targets never import the runs.

pub mod minimal;
pub mod nats;
pub mod node;
pub mod tickcast;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ::tickcast::wire::Encoding;
use anyhow::Context as _;
use tickcast_client::Client;
use tokio::net::{TcpSocket, TcpStream};

use crate::args::BenchArgs;
use crate::publish::PublisherLink;
use crate::shared::Shared;

/// A boxed future, so that [`Target`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Receive buffer of stalled and slow subscribers' sockets (the kernel may
/// round it up): small, so the server's side of them fills fast.
const SMALL_RECV_BUFFER: u32 = 4096;

/// The `--target` flag: which system is under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// tickcast: `/ws?encoding=...`, `/metrics`, `/symbols`, tcp feed.
    #[default]
    Tickcast,
    /// nats-server: WebSocket listener for subscribers, TCP client port for
    /// the publisher.
    Nats,
    /// benches/peers/node/server.js: a Node.js `ws` rooms server.
    Node,
    /// `tickcast-minimal`: the simplest fan-out server, in tickcast's
    /// protocol (msgpack only), its JSON-lines feed for the publisher.
    Minimal,
}

impl TargetKind {
    /// The flag value, as reports print it.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Tickcast => "tickcast",
            TargetKind::Nats => "nats",
            TargetKind::Node => "node",
            TargetKind::Minimal => "minimal",
        }
    }

    /// The target of this kind at `args.server`: the one place the flag
    /// becomes behaviour.
    pub fn build(self, args: &BenchArgs) -> Arc<dyn Target> {
        match self {
            TargetKind::Tickcast => Arc::new(tickcast::Tickcast::new(args.server, args.encoding, args.feed_format)),
            TargetKind::Nats => Arc::new(nats::Nats::new(args.server)),
            TargetKind::Node => Arc::new(node::Node::new(args.server)),
            TargetKind::Minimal => Arc::new(minimal::Minimal::new(args.server)),
        }
    }
}

/// A system under test, at the address the run was given.
///
/// The subscriber futures are `'static` (each target copies the address
/// it needs into them) because the run spawns them; the others borrow.
pub trait Target: Send + Sync {
    /// Which kind of target this is.
    fn kind(&self) -> TargetKind;

    /// Rejects flags this target cannot honour, with the reason.
    fn check(&self, args: &BenchArgs) -> anyhow::Result<()>;

    /// The encoding its subscribers read: what they asked for (`asked`,
    /// the `--encoding` flag) where the target offers a choice.
    fn encoding(&self, asked: Encoding) -> Encoding;

    /// The first `count` symbols the target carries when the bench does not
    /// publish (`--drive-feed` absent).
    fn own_symbols(&self, count: usize) -> BoxFuture<'_, anyhow::Result<Vec<String>>>;

    /// Whether the target learns its symbols from the feed, as tickcast
    /// does: it is then sent one tick of each first, the bench waits until
    /// it lists them ([`Target::wait_for_symbols`]), and the publisher runs
    /// while the subscribers connect. Otherwise (peers route by name) the
    /// publisher starts once the subscribers are in: a peer that cannot
    /// keep up would starve their handshakes.
    fn learns_symbols_from_feed(&self) -> bool {
        false
    }

    /// Waits until the target lists every one of `names`, after the
    /// publisher sent one tick of each.
    fn wait_for_symbols<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, anyhow::Result<()>> {
        let _ = names;
        Box::pin(async { Ok(()) })
    }

    /// Connects the publisher to `addr` (`--drive-feed`), ready to write
    /// ticks in this target's framing.
    fn connect_publisher(&self, addr: SocketAddr) -> BoxFuture<'_, anyhow::Result<PublisherLink>>;

    /// A healthy subscriber to `symbols`: it subscribes, counts itself in
    /// `shared.connected` once confirmed, then reads until the run stops,
    /// checking seqs and recording latency. Failures are reported on stderr
    /// and end the task (the run sees it missing after warm-up).
    fn subscriber(&self, symbols: Vec<String>, shared: Arc<Shared>) -> BoxFuture<'static, ()>;

    /// A connection subscribed to every one of `all` (or the target's
    /// wildcard) on a socket with a small receive buffer, that the run
    /// then never reads ([`hold_stalled`]).
    fn connect_stalled<'a>(&'a self, all: &'a [String]) -> BoxFuture<'a, anyhow::Result<Client>>;

    /// A subscriber to every symbol that reads at most `rate` bytes per
    /// second and checks the slow-consumer contract; `None` where the
    /// target has no such contract (its `check` rejects `--slow-readers`).
    fn slow_reader(&self, rate: u64, shared: Arc<Shared>) -> Option<BoxFuture<'static, ()>> {
        let _ = (rate, shared);
        None
    }

    /// An idle subscriber for `--idle`: connected from `source` (a local
    /// address to bind, or the system's choice), subscribed to `symbols`
    /// and confirmed by the server, then left unread.
    fn connect_idle<'a>(
        &'a self,
        symbols: &'a [String],
        source: Option<IpAddr>,
    ) -> BoxFuture<'a, anyhow::Result<Client>>;

    /// The server's own counters, where it has them (tickcast's
    /// `/metrics`); `None` for peers.
    fn counters(&self) -> BoxFuture<'_, anyhow::Result<Option<Counters>>> {
        Box::pin(async { Ok(None) })
    }

    /// The server's RSS, bytes, read from the server itself (tickcast's
    /// `/metrics`); peers have no such endpoint (use `--server-pid`).
    fn rss(&self) -> BoxFuture<'_, anyhow::Result<f64>> {
        let name = self.kind().name();
        Box::pin(async move { anyhow::bail!("--target {name} needs --server-pid: it has no /metrics") })
    }
}

/// What the bench reads from a server's own counters (tickcast's
/// `/metrics`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    /// CPU seconds, all threads.
    pub cpu: f64,
    /// Resident memory, bytes.
    pub rss: f64,
    /// Updates published (one per tick, before fan-out).
    pub published: f64,
    /// Symbols the server knows.
    pub symbols: f64,
    /// Subscribers disconnected for being too slow.
    pub slow_disconnects: f64,
    /// Conflation episodes begun.
    pub conflation_episodes: f64,
    /// `conflated` messages sent.
    pub conflated_msgs: f64,
    /// Skipped updates by kind: trade, quote, book.
    pub skipped: [f64; 3],
}

/// The checks every peer shares: it has no `/metrics`, no feed of its own
/// and no conflation contract. `feed` says what `--drive-feed` is for it.
fn check_peer(kind: TargetKind, feed: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let target = kind.name();
    if args.server_pid.is_none() {
        anyhow::bail!(
            "--target {target} needs --server-pid: {target} has no /metrics, so its CPU and RSS are read from \
             /proc/PID/stat"
        );
    }
    if args.drive_feed.is_none() && args.idle.is_none() {
        anyhow::bail!("--target {target} needs --drive-feed ADDR ({feed}): the bench is its only publisher");
    }
    if args.slow_readers > 0 {
        anyhow::bail!("--slow-readers checks tickcast's conflation contract: --target tickcast only");
    }
    Ok(())
}

/// The names the bench publishes under: `count` generated tickers (the
/// synthetic feed's names, so tickcast runs compare with earlier ones).
pub fn generated_names(count: usize) -> Vec<String> {
    (0..count).map(::tickcast::feed::synthetic::ticker).collect()
}

/// Holds a stalled subscriber's connection, once `connect` has made it,
/// until the run aborts the task: it never reads. Shared by every target.
pub async fn hold_stalled(label: &str, connect: impl Future<Output = anyhow::Result<Client>>, shared: Arc<Shared>) {
    let _held = match connect.await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{label}: {e:#}");
            return;
        }
    };
    shared.stalled_connected.fetch_add(1, Ordering::Relaxed);
    std::future::pending::<()>().await;
}

/// A socket with a small receive buffer, connected to `server`.
async fn small_buffer_stream(server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if server.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_recv_buffer_size(SMALL_RECV_BUFFER)?;
    socket.connect(server).await
}

/// A socket connected to `server` from `source` (port chosen by the
/// system), or from wherever the system chooses. Binding first is what
/// lets `--idle` pass the ephemeral port range: each source address has
/// its own.
pub async fn stream_from(server: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(server).await.with_context(|| format!("cannot connect to {server}"));
    };
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("cannot bind a port of {source}"))?;
    socket.connect(server).await.with_context(|| format!("cannot connect to {server} from {source}"))
}

/// A WebSocket connection to a peer at `path`, optionally on a socket with
/// a small receive buffer (stalled subscribers) or from a given source
/// address (idle ones).
async fn connect_ws(
    server: SocketAddr,
    path: &str,
    small_buffer: bool,
    source: Option<IpAddr>,
) -> anyhow::Result<Client> {
    let stream = if small_buffer {
        small_buffer_stream(server).await.with_context(|| format!("cannot connect to {server}"))?
    } else {
        stream_from(server, source).await?
    };
    // The encoding only matters to tickcast's own decoder, unused here.
    Client::connect_stream(stream, server, path, Encoding::Json)
        .await
        .with_context(|| format!("WebSocket handshake with ws://{server}{path}"))
}

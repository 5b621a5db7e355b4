//! The `tickcast` target: subscribers speak tickcast's own protocol
//! (`/ws?encoding=...`), and the server's `/metrics` and `/symbols` give
//! the published count, the slow-consumer ladder counters and the symbols.
//! The publisher writes JSON lines (or, with `--feed-format binary`, binary
//! tick records) into its tcp feed.
//!
//! Imports: `tickcast_client` (connections, frame reader, `http_get`,
//! `scrape_value`), `tickcast::wire` (the message model), and the bench's
//! light readers, tally and shared state.

mod slow_reader;

use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use tickcast::wire::{Encoding, ServerMessage};
use tickcast_client::{http_get, scrape_value, Client};

use super::{small_buffer_stream, stream_from, BoxFuture, Counters, Target, TargetKind};
use crate::args::{BenchArgs, FeedFormat};
use crate::light::decode_light;
use crate::publish::{PublisherLink, Wire};
use crate::shared::Shared;
use crate::tally::Tally;

/// How long the server may take to list symbols the bench just fed it.
const SYMBOLS_DEADLINE: Duration = Duration::from_secs(10);

/// tickcast at `server`, its subscribers asking for `encoding`.
pub struct Tickcast {
    /// HTTP and WebSocket address.
    server: SocketAddr,
    /// What the subscribers ask for (`--encoding`).
    encoding: Encoding,
    /// How the publisher frames ticks into the tcp feed (`--feed-format`).
    feed_format: FeedFormat,
}

impl Tickcast {
    /// The target at `server`.
    pub fn new(server: SocketAddr, encoding: Encoding, feed_format: FeedFormat) -> Tickcast {
        Tickcast { server, encoding, feed_format }
    }

    /// A GET whose answer must be 200; returns the body.
    async fn get(&self, path: &str) -> anyhow::Result<String> {
        let (status, body) = http_get(self.server, path).await.with_context(|| format!("GET {path}"))?;
        ensure!(status == 200, "GET {path}: HTTP {status}");
        Ok(body)
    }

    /// The symbols the server carries, from `/symbols`.
    async fn fetch_symbols(&self) -> anyhow::Result<Vec<String>> {
        serde_json::from_str(&self.get("/symbols").await?).context("GET /symbols")
    }
}

impl Target for Tickcast {
    fn kind(&self) -> TargetKind {
        TargetKind::Tickcast
    }

    fn check(&self, _args: &BenchArgs) -> anyhow::Result<()> {
        Ok(())
    }

    fn encoding(&self, asked: Encoding) -> Encoding {
        asked
    }

    /// The first `count` of `/symbols`: those of a server fed by something
    /// else than the bench (its synthetic feed, say).
    fn own_symbols(&self, count: usize) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        Box::pin(async move {
            let mut known = self.fetch_symbols().await?;
            ensure!(known.len() >= count, "the server has {} symbols, fewer than --symbols {count}", known.len());
            known.truncate(count);
            Ok(known)
        })
    }

    fn learns_symbols_from_feed(&self) -> bool {
        true
    }

    fn wait_for_symbols<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let deadline = Instant::now() + SYMBOLS_DEADLINE;
            loop {
                let known = self.fetch_symbols().await?;
                if names.iter().all(|n| known.contains(n)) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("the server did not learn the driven symbols within 10s: is --drive-feed its tcp feed?");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// A plain TCP connection to the tcp feed: newline-delimited JSON, or
    /// binary records (which the server tells apart by their first byte).
    fn connect_publisher(&self, addr: SocketAddr) -> BoxFuture<'_, anyhow::Result<PublisherLink>> {
        let wire = match self.feed_format {
            FeedFormat::Json => Wire::Lines,
            FeedFormat::Binary => Wire::Records,
        };
        Box::pin(connect_feed(addr, wire))
    }

    /// Checks per-symbol seq continuity (snapshots set the baseline; a
    /// `conflated` message is a seq error) and records latency while the
    /// window is open.
    fn subscriber(&self, symbols: Vec<String>, shared: Arc<Shared>) -> BoxFuture<'static, ()> {
        Box::pin(subscriber(self.server, self.encoding, symbols, shared))
    }

    /// Subscribes to `"*"`; the server may close its side first (1008),
    /// which this end never looks at.
    fn connect_stalled<'a>(&'a self, _all: &'a [String]) -> BoxFuture<'a, anyhow::Result<Client>> {
        Box::pin(connect_all_symbols(self.server, self.encoding))
    }

    fn slow_reader(&self, rate: u64, shared: Arc<Shared>) -> Option<BoxFuture<'static, ()>> {
        let (server, encoding) = (self.server, self.encoding);
        Some(Box::pin(async move {
            match connect_all_symbols(server, encoding).await {
                Ok(client) => slow_reader::run(client, encoding, rate, shared).await,
                Err(e) => eprintln!("slow reader: {e:#}"),
            }
        }))
    }

    /// Subscribed and acknowledged (its snapshots are left unread).
    fn connect_idle<'a>(
        &'a self,
        symbols: &'a [String],
        source: Option<IpAddr>,
    ) -> BoxFuture<'a, anyhow::Result<Client>> {
        Box::pin(connect_subscribed(self.server, source, self.encoding, symbols))
    }

    fn counters(&self) -> BoxFuture<'_, anyhow::Result<Option<Counters>>> {
        Box::pin(async move {
            let body = self.get("/metrics").await?;
            let get = |name| scrape_value(&body, name).with_context(|| format!("/metrics lacks {name}"));
            Ok(Some(Counters {
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
            }))
        })
    }

    fn rss(&self) -> BoxFuture<'_, anyhow::Result<f64>> {
        Box::pin(async move {
            let body = self.get("/metrics").await?;
            scrape_value(&body, "process_resident_memory_bytes").context("/metrics lacks process_resident_memory_bytes")
        })
    }
}

/// A healthy tickcast subscriber: see [`Tickcast::subscriber`].
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
    // Nothing has been read yet, so the framing can be handed over whole.
    read_updates(client, encoding, symbols.len(), shared).await;
}

/// Reads a subscribed `client`'s messages in `encoding` until the run
/// stops: counts it as connected, checks per-symbol seq continuity
/// (snapshots set the baseline; a `conflated` message is a seq error) and
/// records latency while the window is open. Bytes the client already
/// read are dropped with its framing.
pub(super) async fn read_updates(client: Client, encoding: Encoding, symbols: usize, shared: Arc<Shared>) {
    let reader = client.into_frame_reader();
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut tally = Tally::new(symbols);
    reader
        .run(&shared.stop, |payload, now| {
            let Some(light) = decode_light(encoding, payload) else {
                return ControlFlow::Continue(None);
            };
            let is_update = matches!(&*light.kind, "trade" | "quote" | "book");
            if is_update {
                let from = if shared.from_event { light.ts_event } else { light.ts_ingest };
                tally.update(&shared, &light.sym, light.seq, from, now);
            } else if light.kind == "snapshot" {
                tally.baseline(&light.sym, light.seq);
            } else if light.kind == "conflated" {
                // A healthy subscriber must never fall behind; if it did,
                // the snapshots that follow would hide the gap from the
                // seq check.
                shared.healthy_conflated.fetch_add(1, Ordering::Relaxed);
                shared.seq_errors.fetch_add(1, Ordering::Relaxed);
            }
            ControlFlow::Continue(None)
        })
        .await;
    tally.flush(&shared);
}

/// Connects on a small-buffer socket and subscribes to every symbol.
async fn connect_all_symbols(server: SocketAddr, encoding: Encoding) -> anyhow::Result<Client> {
    let stream = small_buffer_stream(server).await.with_context(|| format!("cannot connect to {server}"))?;
    let path = format!("/ws?encoding={}", encoding.name());
    let mut client = Client::connect_stream(stream, server, &path, encoding).await?;
    client.subscribe(&["*"]).await?;
    Ok(client)
}

/// Subscribes `client` to `symbols` and reads until the server's ack (an
/// `error` fails it); what came before the ack is dropped.
/// A subscriber on `symbols`, connected from `source` (the default address
/// if `None`), once its subscribe is acknowledged: the idle subscribers of
/// tickcast and of the minimal server, which share the protocol.
pub(super) async fn connect_subscribed(
    server: SocketAddr,
    source: Option<IpAddr>,
    encoding: Encoding,
    symbols: &[String],
) -> anyhow::Result<Client> {
    let stream = stream_from(server, source).await?;
    let path = format!("/ws?encoding={}", encoding.name());
    let client = Client::connect_stream(stream, server, &path, encoding).await.context("handshake")?;
    subscribe_acked(client, symbols).await
}

pub(super) async fn subscribe_acked(mut client: Client, symbols: &[String]) -> anyhow::Result<Client> {
    let refs: Vec<&str> = symbols.iter().map(String::as_str).collect();
    client.subscribe(&refs).await.context("subscribe")?;
    loop {
        match client.next_message().await.context("waiting for the ack")? {
            ServerMessage::Ack { .. } => return Ok(client),
            ServerMessage::Error { code, message, .. } => bail!("subscribe refused: {code}: {message}"),
            _ => {}
        }
    }
}

/// A plain TCP connection to a tcp feed that takes `wire` (newline-
/// delimited JSON, or binary records, which tickcast tells apart by their
/// first byte).
pub(super) async fn connect_feed(addr: SocketAddr, wire: Wire) -> anyhow::Result<PublisherLink> {
    let stream =
        tokio::net::TcpStream::connect(addr).await.with_context(|| format!("drive-feed: cannot connect to {addr}"))?;
    let _ = stream.set_nodelay(true);
    Ok(PublisherLink::new(Box::new(stream), wire))
}

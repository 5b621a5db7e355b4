//! The `node` target: benches/peers/node/server.js, a Node.js `ws` rooms
//! server. Subscribers send `{"op":"join","rooms":[...]}` and get
//! `{"type":"ack",...}`, then every tick of their rooms as JSON text; the
//! publisher is a WebSocket client of the same server that sends
//! `{"op":"tick","sym":...}` text frames, which the server re-serialises
//! without `op` and sends to the room.
//!
//! Imports: `tickcast_client` (the WebSocket connection and the frame
//! reader), and the bench's light tick reader, tally and shared state.

use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use tickcast::wire::Encoding;
use tickcast_client::Client;

use super::{check_peer, connect_ws, BoxFuture, Target, TargetKind};
use crate::args::BenchArgs;
use crate::light::tick_light;
use crate::publish::{PublisherLink, Wire};
use crate::shared::Shared;
use crate::tally::Tally;

/// The Node.js rooms server at `server`.
pub struct Node {
    /// Its WebSocket address (path `/`), for subscribers and publisher.
    server: SocketAddr,
}

impl Node {
    /// The target at `server`.
    pub fn new(server: SocketAddr) -> Node {
        Node { server }
    }
}

impl Target for Node {
    fn kind(&self) -> TargetKind {
        TargetKind::Node
    }

    fn check(&self, args: &BenchArgs) -> anyhow::Result<()> {
        check_peer(TargetKind::Node, "the node server's WebSocket address", args)
    }

    fn encoding(&self, _asked: Encoding) -> Encoding {
        Encoding::Json
    }

    /// Rooms exist once joined: the generated names do.
    fn own_symbols(&self, count: usize) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        Box::pin(async move { Ok(super::generated_names(count)) })
    }

    /// A WebSocket client of the server, as a raw stream: the publisher
    /// writes whole batches of masked text frames into it at once. The
    /// server sends the publisher nothing unless a frame is bad.
    fn connect_publisher(&self, addr: SocketAddr) -> BoxFuture<'_, anyhow::Result<PublisherLink>> {
        Box::pin(async move {
            let client = connect_ws(addr, "/", false, None).await.context("node publisher")?;
            Ok(PublisherLink::new(Box::new(client.into_inner()), Wire::WsText))
        })
    }

    /// Joins `symbols`' rooms; checks per-symbol seq continuity and
    /// records latency (receive time minus `ts_event`).
    fn subscriber(&self, symbols: Vec<String>, shared: Arc<Shared>) -> BoxFuture<'static, ()> {
        Box::pin(subscriber(self.server, symbols, shared))
    }

    /// Joins every room.
    fn connect_stalled<'a>(&'a self, all: &'a [String]) -> BoxFuture<'a, anyhow::Result<Client>> {
        Box::pin(join(self.server, all, true, None))
    }

    fn connect_idle<'a>(
        &'a self,
        symbols: &'a [String],
        source: Option<IpAddr>,
    ) -> BoxFuture<'a, anyhow::Result<Client>> {
        Box::pin(join(self.server, symbols, false, source))
    }
}

/// Connects to the server, joins `rooms` and waits for the ack.
async fn join(
    server: SocketAddr,
    rooms: &[String],
    small_buffer: bool,
    source: Option<IpAddr>,
) -> anyhow::Result<Client> {
    let mut client = connect_ws(server, "/", small_buffer, source).await?;
    let join = serde_json::json!({"op": "join", "rooms": rooms}).to_string();
    client.send_text(&join).await.context("node join")?;
    loop {
        let payload = match client.next_payload().await.context("node join")? {
            Ok(p) => p,
            Err((code, reason)) => bail!("node join: the server closed with {code}: {reason}"),
        };
        match tick_light(&payload).as_ref().map(|l| &*l.kind) {
            Some("ack") => return Ok(client),
            Some("error") => bail!("node join refused: {}", String::from_utf8_lossy(&payload)),
            _ => {}
        }
    }
}

/// A healthy subscriber: see [`Node::subscriber`].
async fn subscriber(server: SocketAddr, symbols: Vec<String>, shared: Arc<Shared>) {
    let client = match join(server, &symbols, false, None).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("node subscriber: {e:#}");
            return;
        }
    };
    // The join was confirmed and the publisher starts only once every
    // subscriber is in, so nothing unread is lost with the framing.
    let reader = client.into_frame_reader();
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut tally = Tally::new(symbols.len());
    reader
        .run(&shared.stop, |payload, now| {
            if let Some(t) = tick_light(payload) {
                if matches!(&*t.kind, "trade" | "quote" | "book") {
                    tally.update(&shared, &t.sym, t.seq, t.ts_event, now);
                }
            }
            ControlFlow::Continue(None)
        })
        .await;
    tally.flush(&shared);
}

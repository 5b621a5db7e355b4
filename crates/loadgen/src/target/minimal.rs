//! The `minimal` target: `tickcast-minimal` (`src/bin/tickcast-minimal`),
//! the simplest fan-out server that could work, speaking the part of
//! tickcast's protocol the bench uses. Subscribers connect to `/ws` in
//! MessagePack, subscribe with tickcast's request and wait for its ack;
//! then they read exactly as tickcast's do (the same messages, seqs from
//! 1 per symbol, no snapshots). The publisher writes JSON lines into its
//! feed port, as into tickcast's tcp feed.
//!
//! It is measured like the other peers: CPU and RSS from `/proc`
//! (`--server-pid`; it has no `/metrics`, so no published count and no
//! ladder counters), the publisher held until the subscribers are
//! confirmed (it knows no symbol list to wait on), stalled subscribers on
//! every symbol by name (it has no `"*"`).
//!
//! Imports: `tickcast_client` (connections), `tickcast::wire::Encoding`,
//! and the tickcast target's subscribe-and-ack, reader and feed
//! connection, which this target shares.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{ensure, Context as _};
use tickcast::wire::Encoding;
use tickcast_client::Client;

use super::tickcast::{connect_feed, connect_subscribed, read_updates, subscribe_acked};
use super::{check_peer, small_buffer_stream, BoxFuture, Target, TargetKind};
use crate::args::BenchArgs;
use crate::publish::{PublisherLink, Wire};
use crate::shared::Shared;

/// The only encoding `tickcast-minimal` speaks.
const ENCODING: Encoding = Encoding::Msgpack;

/// `tickcast-minimal` at `server`.
pub struct Minimal {
    /// Its WebSocket address (path `/ws`).
    server: SocketAddr,
}

impl Minimal {
    /// The target at `server`.
    pub fn new(server: SocketAddr) -> Minimal {
        Minimal { server }
    }
}

impl Target for Minimal {
    fn kind(&self) -> TargetKind {
        TargetKind::Minimal
    }

    fn check(&self, args: &BenchArgs) -> anyhow::Result<()> {
        check_peer(TargetKind::Minimal, "tickcast-minimal's --feed address", args)?;
        ensure!(args.encoding == ENCODING, "--target minimal speaks msgpack only: drop --encoding");
        Ok(())
    }

    fn encoding(&self, _asked: Encoding) -> Encoding {
        ENCODING
    }

    /// Symbols exist once named: the generated names do.
    fn own_symbols(&self, count: usize) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        Box::pin(async move { Ok(super::generated_names(count)) })
    }

    /// A plain TCP connection that takes JSON lines.
    fn connect_publisher(&self, addr: SocketAddr) -> BoxFuture<'_, anyhow::Result<PublisherLink>> {
        Box::pin(connect_feed(addr, Wire::Lines))
    }

    /// Subscribes and waits for the ack (the publisher starts once every
    /// subscriber has one), then reads as a tickcast subscriber does:
    /// seq continuity per symbol from the first update, latency from
    /// `ts_event`.
    fn subscriber(&self, symbols: Vec<String>, shared: Arc<Shared>) -> BoxFuture<'static, ()> {
        let server = self.server;
        Box::pin(async move {
            let client = match Client::connect(server, ENCODING).await {
                Ok(c) => subscribe_acked(c, &symbols).await,
                Err(e) => Err(e).context("connect"),
            };
            match client {
                Ok(client) => read_updates(client, ENCODING, symbols.len(), shared).await,
                Err(e) => eprintln!("minimal subscriber: {e:#}"),
            }
        })
    }

    /// Subscribes to every one of `all`, on a small-buffer socket, and
    /// waits for the ack.
    fn connect_stalled<'a>(&'a self, all: &'a [String]) -> BoxFuture<'a, anyhow::Result<Client>> {
        Box::pin(async move {
            let stream =
                small_buffer_stream(self.server).await.with_context(|| format!("cannot connect to {}", self.server))?;
            let path = format!("/ws?encoding={}", ENCODING.name());
            let client = Client::connect_stream(stream, self.server, &path, ENCODING).await?;
            subscribe_acked(client, all).await
        })
    }

    fn connect_idle<'a>(
        &'a self,
        symbols: &'a [String],
        source: Option<IpAddr>,
    ) -> BoxFuture<'a, anyhow::Result<Client>> {
        Box::pin(connect_subscribed(self.server, source, ENCODING, symbols))
    }
}

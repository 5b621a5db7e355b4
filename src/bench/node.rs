//! The `node` target: benches/peers/node/server.js, a Node.js `ws` rooms
//! server. Subscribers send `{"op":"join","rooms":[...]}` and get
//! `{"type":"ack",...}`, then every tick of their rooms as JSON text; the
//! publisher is a WebSocket client of the same server that sends
//! `{"op":"tick","sym":...}` text frames, which the server re-serialises
//! without `op` and sends to the room.

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;

use super::frames::FrameReader;
use super::light::tick_light;
use super::{connect_ws, Shared, Tally};
use crate::client::Client;

/// Connects to the server, joins `rooms` and waits for the ack.
async fn join(server: SocketAddr, rooms: &[String], small_buffer: bool) -> Result<Client, String> {
    let mut client = connect_ws(server, "/", small_buffer).await?;
    let join = serde_json::json!({"op": "join", "rooms": rooms}).to_string();
    client.send_text(&join).await.map_err(|e| format!("node join: {e}"))?;
    loop {
        let payload = match client.next_payload().await.map_err(|e| format!("node join: {e}"))? {
            Ok(p) => p,
            Err((code, reason)) => return Err(format!("node join: the server closed with {code}: {reason}")),
        };
        match tick_light(&payload).as_ref().map(|l| &*l.kind) {
            Some("ack") => return Ok(client),
            Some("error") => return Err(format!("node join refused: {}", String::from_utf8_lossy(&payload))),
            _ => {}
        }
    }
}

/// A healthy subscriber to `symbols`' rooms: checks per-symbol seq
/// continuity and records latency (receive time minus `ts_event`).
pub(super) async fn subscriber(server: SocketAddr, symbols: Vec<String>, shared: Arc<Shared>) {
    let client = match join(server, &symbols, false).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("node subscriber: {e}");
            return;
        }
    };
    // The join was confirmed and the publisher starts only once every
    // subscriber is in, so nothing unread is lost with the framing.
    let reader = FrameReader::new(client.into_inner());
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut tally = Tally::new(symbols.len());
    reader
        .run(&shared, |payload, now| {
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

/// A member of every room on a small-buffer socket that never reads after
/// its ack; held until the run aborts it.
pub(super) async fn stalled(server: SocketAddr, rooms: Vec<String>, shared: Arc<Shared>) {
    super::hold_stalled("node stalled subscriber", join(server, &rooms, true), shared).await
}

/// An idle subscriber for `--idle`: joined to `rooms` and acknowledged.
pub(super) async fn connect_idle(server: SocketAddr, rooms: &[String]) -> Result<Client, String> {
    join(server, rooms, false).await
}

/// Connects the publisher and returns the raw upgraded stream: the
/// publisher writes whole batches of masked text frames into it at once.
/// The server sends the publisher nothing unless a frame is bad.
pub(super) async fn connect_publisher(addr: SocketAddr) -> Result<TokioIo<Upgraded>, String> {
    let client = connect_ws(addr, "/", false).await.map_err(|e| format!("node publisher: {e}"))?;
    Ok(client.into_inner())
}

//! The `nats` target: nats-server, with subscribers on its WebSocket
//! listener and the publisher on its TCP client port, both speaking the
//! NATS text protocol ([`protocol`]).
//!
//! Imports: `tickcast_client` (the WebSocket connection and the frame
//! reader), [`protocol`], and the bench's light tick reader, tally and
//! shared state.

pub mod protocol;

use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use fastwebsockets::{Frame, OpCode, Payload};
use tickcast::wire::Encoding;
use tickcast_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;

use self::protocol::{subject, Op, Parser, ALL_SUBJECTS, CONNECT};
use super::{check_peer, connect_ws, BoxFuture, Target, TargetKind};
use crate::args::BenchArgs;
use crate::light::tick_light;
use crate::publish::{PublisherLink, Wire};
use crate::shared::Shared;
use crate::tally::Tally;

/// How long the publisher waits for nats-server's handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of the reads of the publisher's connection (the server sends it
/// little: `INFO`, `PING`, `-ERR`).
const PUBLISHER_READ: usize = 16 * 1024;

/// nats-server, its WebSocket listener at `server`.
pub struct Nats {
    /// The WebSocket listener (path `/`).
    server: SocketAddr,
}

impl Nats {
    /// The target at `server`.
    pub fn new(server: SocketAddr) -> Nats {
        Nats { server }
    }
}

impl Target for Nats {
    fn kind(&self) -> TargetKind {
        TargetKind::Nats
    }

    fn check(&self, args: &BenchArgs) -> anyhow::Result<()> {
        check_peer(TargetKind::Nats, "nats' TCP client port", args)
    }

    fn encoding(&self, _asked: Encoding) -> Encoding {
        Encoding::Json
    }

    /// nats carries whatever subjects are published: the generated names.
    fn own_symbols(&self, count: usize) -> BoxFuture<'_, anyhow::Result<Vec<String>>> {
        Box::pin(async move { Ok(super::generated_names(count)) })
    }

    /// The TCP client port, handshake done; a task reads the server's side
    /// and flags its `PING`s for the publisher to answer.
    fn connect_publisher(&self, addr: SocketAddr) -> BoxFuture<'_, anyhow::Result<PublisherLink>> {
        Box::pin(async move { connect_publisher(addr).await.context("nats publisher") })
    }

    /// Subscribes to `symbols`' subjects; checks per-symbol seq continuity
    /// and records latency (receive time minus `ts_event`).
    fn subscriber(&self, symbols: Vec<String>, shared: Arc<Shared>) -> BoxFuture<'static, ()> {
        Box::pin(subscriber(self.server, symbols, shared))
    }

    /// Subscribes to every symbol at once (`tick.>`).
    fn connect_stalled<'a>(&'a self, _all: &'a [String]) -> BoxFuture<'a, anyhow::Result<Client>> {
        Box::pin(async move { Ok(subscribe(self.server, &[ALL_SUBJECTS.to_owned()], true, None).await?.client) })
    }

    fn connect_idle<'a>(
        &'a self,
        symbols: &'a [String],
        source: Option<IpAddr>,
    ) -> BoxFuture<'a, anyhow::Result<Client>> {
        Box::pin(async move {
            let subjects: Vec<String> = symbols.iter().map(|s| subject(s)).collect();
            Ok(subscribe(self.server, &subjects, false, source).await?.client)
        })
    }
}

/// A WebSocket client that has done the NATS handshake and whose
/// subscriptions the server has confirmed.
struct Subscribed {
    /// The connection.
    client: Client,
    /// Holds whatever the server sent after the `PONG`.
    parser: Parser,
}

/// Connects to the WebSocket listener, waits for `INFO`, sends `CONNECT`,
/// one `SUB` per subject and a `PING`, and waits for the `PONG`: once it
/// arrives, the server has registered every subscription.
async fn subscribe(
    server: SocketAddr,
    subjects: &[String],
    small_buffer: bool,
    source: Option<IpAddr>,
) -> anyhow::Result<Subscribed> {
    let mut client = connect_ws(server, "/", small_buffer, source).await?;
    let mut parser = Parser::new();
    let mut sent = false;
    loop {
        let frame = client.raw().read_frame().await.context("nats handshake")?;
        match frame.opcode {
            OpCode::Binary | OpCode::Text => parser.feed(&frame.payload),
            OpCode::Close => bail!("nats handshake: the server closed the connection"),
            _ => continue,
        }
        let mut reply = Vec::new();
        let mut info = false;
        loop {
            match parser.next_op().context("nats handshake")? {
                None => break,
                Some(Op::Info(_)) => info = true,
                Some(Op::Ping) => reply.extend_from_slice(b"PONG\r\n"),
                Some(Op::Err(e)) => bail!("nats: -ERR {}", String::from_utf8_lossy(e)),
                Some(Op::Pong) if sent => {
                    if !reply.is_empty() {
                        send(&mut client, reply).await?;
                    }
                    return Ok(Subscribed { client, parser });
                }
                // Messages before the PONG may come from subscriptions the
                // server already has: the seq check starts after it.
                Some(_) => {}
            }
        }
        if info && !sent {
            reply.extend_from_slice(CONNECT);
            for (sid, subject) in subjects.iter().enumerate() {
                reply.extend_from_slice(format!("SUB {subject} {}\r\n", sid + 1).as_bytes());
            }
            reply.extend_from_slice(b"PING\r\n");
            sent = true;
        }
        if !reply.is_empty() {
            send(&mut client, reply).await?;
        }
    }
}

/// Sends protocol bytes in one binary frame.
async fn send(client: &mut Client, bytes: Vec<u8>) -> anyhow::Result<()> {
    client.raw().write_frame(Frame::binary(Payload::Owned(bytes))).await.context("nats write")
}

/// A healthy subscriber: see [`Nats::subscriber`].
async fn subscriber(server: SocketAddr, symbols: Vec<String>, shared: Arc<Shared>) {
    let subjects: Vec<String> = symbols.iter().map(|s| subject(s)).collect();
    let Subscribed { client, mut parser } = match subscribe(server, &subjects, false, None).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nats subscriber: {e:#}");
            return;
        }
    };
    // The `PONG` confirmed the subscriptions and the publisher starts only
    // once every subscriber is in: what followed it is in `parser`, and
    // nothing unread is lost with the framing.
    let reader = client.into_frame_reader();
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut tally = Tally::new(symbols.len());
    let mut warned = false;
    reader
        .run(&shared.stop, |payload, now| {
            parser.feed(payload);
            let mut pong = None;
            loop {
                match parser.next_op() {
                    Ok(None) => break,
                    Ok(Some(Op::Msg { payload, .. })) => match tick_light(payload) {
                        Some(t) if matches!(&*t.kind, "trade" | "quote" | "book") => {
                            tally.update(&shared, &t.sym, t.seq, t.ts_event, now);
                        }
                        _ => {}
                    },
                    Ok(Some(Op::Ping)) => pong = Some(b"PONG\r\n".to_vec()),
                    Ok(Some(Op::Err(e))) => {
                        if !warned {
                            eprintln!("nats subscriber: -ERR {}", String::from_utf8_lossy(e));
                            warned = true;
                        }
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        eprintln!("nats subscriber: {e}");
                        return ControlFlow::Break(());
                    }
                }
            }
            ControlFlow::Continue(pong)
        })
        .await;
    tally.flush(&shared);
}

/// Connects the publisher: waits for `INFO`, sends `CONNECT` and `PING`,
/// and waits for the `PONG`, so a wrong address or a refused client fails
/// here rather than silently during the run.
async fn connect_publisher(addr: SocketAddr) -> anyhow::Result<PublisherLink> {
    let stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut read, mut writer) = stream.into_split();
    let mut parser = Parser::new();
    let mut chunk = vec![0u8; PUBLISHER_READ];
    let mut sent = false;
    loop {
        let n = tokio::time::timeout(HANDSHAKE_TIMEOUT, read.read(&mut chunk))
            .await
            .with_context(|| format!("no handshake from {addr} within 10s: is it nats' client port?"))??;
        if n == 0 {
            bail!("{addr} closed the connection during the handshake");
        }
        parser.feed(&chunk[..n]);
        let mut out = Vec::new();
        loop {
            match parser.next_op()? {
                None => break,
                Some(Op::Info(_)) if !sent => {
                    out.extend_from_slice(CONNECT);
                    out.extend_from_slice(b"PING\r\n");
                    sent = true;
                }
                Some(Op::Ping) => out.extend_from_slice(b"PONG\r\n"),
                Some(Op::Err(e)) => bail!("-ERR {}", String::from_utf8_lossy(e)),
                Some(Op::Pong) if sent => {
                    writer.write_all(&out).await?;
                    let pong_due = Arc::new(AtomicBool::new(false));
                    let reader = tokio::spawn(read_server(read, parser, pong_due.clone()));
                    return Ok(PublisherLink::new(Box::new(writer), Wire::Nats).answering_pings(pong_due, reader));
                }
                Some(_) => {}
            }
        }
        writer.write_all(&out).await?;
    }
}

/// Reads what the server sends the publisher: flags `PING`s for the
/// publisher to answer, reports the first `-ERR`.
async fn read_server(mut read: OwnedReadHalf, mut parser: Parser, pong_due: Arc<AtomicBool>) {
    let mut chunk = vec![0u8; PUBLISHER_READ];
    let mut warned = false;
    loop {
        loop {
            match parser.next_op() {
                Ok(None) => break,
                Ok(Some(Op::Ping)) => pong_due.store(true, Ordering::Relaxed),
                Ok(Some(Op::Err(e))) if !warned => {
                    eprintln!("nats publisher: -ERR {}", String::from_utf8_lossy(e));
                    warned = true;
                }
                Ok(Some(_)) => {}
                Err(e) => {
                    eprintln!("nats publisher: {e}");
                    return;
                }
            }
        }
        match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => parser.feed(&chunk[..n]),
        }
    }
}

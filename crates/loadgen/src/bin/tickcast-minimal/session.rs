//! A subscriber connection: the WebSocket upgrade at `/ws`, then a reader
//! task for its requests and a writer task for its queue.
//!
//! In: an accepted TCP connection speaking HTTP/1.1. Out: the subscriber's
//! queued frames, written with one vectored write per wake-up.
//!
//! The protocol is the part of tickcast's the load generator uses:
//! `/ws` (`?encoding=msgpack`, the only encoding), `{"op":"subscribe",
//! "symbols":[...]}` and `unsubscribe` acked with tickcast's `ack`, bad
//! requests answered with its `error`. No snapshots, no `"*"`, no
//! `from_seq`, no depth, no slow-consumer policy, no limits but a timeout
//! on the upgrade request.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, Role};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use tickcast::wire::request::ClientRequest;
use tickcast::wire::{encode_frame, frame, Encoding, ServerMessage};

use crate::queue::SubscriberQueue;
use crate::topics::Topics;

/// Largest client message taken: subscribes are small.
const MAX_MESSAGE: usize = 1024 * 1024;

/// Longest a connection may take to send its upgrade request.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Most slices in one vectored write (Linux's `IOV_MAX`).
const MAX_SLICES: usize = 1024;

/// Serves one HTTP connection: `/ws` is upgraded, anything else is 404.
pub async fn serve(stream: TcpStream, topics: Arc<Topics>) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |req| {
        let topics = topics.clone();
        async move { Ok::<_, Infallible>(upgrade(req, topics)) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    // Ends when the client goes away, the connection is upgraded, or no
    // request head came within HEADER_TIMEOUT.
    let _ = connection.with_upgrades().await;
}

/// A plain-text response.
fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

/// Answers the upgrade request and spawns the session once it completes.
fn upgrade(mut req: Request<Incoming>, topics: Arc<Topics>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/ws" {
        return text(StatusCode::NOT_FOUND, "tickcast-minimal serves only /ws\n");
    }
    let query = req.uri().query().unwrap_or_default();
    if query.split('&').any(|kv| kv.strip_prefix("encoding=").is_some_and(|e| e != "msgpack")) {
        return text(StatusCode::BAD_REQUEST, "tickcast-minimal speaks msgpack only\n");
    }
    let (response, upgrading) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(_) => return text(StatusCode::BAD_REQUEST, "bad WebSocket upgrade\n"),
    };
    tokio::spawn(async move {
        let Ok(ws) = upgrading.await else { return };
        // The plain socket back from hyper, with whatever it read past the
        // handshake: the writer wants it whole for vectored writes.
        let Ok(parts) = ws.into_inner().into_inner().downcast::<TokioIo<TcpStream>>() else { return };
        run(parts.io.into_inner(), parts.read_buf, &topics).await;
    });
    let (parts, _) = response.into_parts();
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// Runs an upgraded connection: reads requests until the client goes, with
/// the writer alongside; then takes it off every symbol.
async fn run(stream: TcpStream, read_ahead: Bytes, topics: &Topics) {
    let (read, write) = stream.into_split();
    let queue = Arc::new(SubscriberQueue::default());
    let writer = tokio::spawn(write_queue(write, queue.clone()));
    let mut subscribed = BTreeSet::new();
    read_requests(std::io::Cursor::new(read_ahead).chain(read), &queue, topics, &mut subscribed).await;
    let symbols: Vec<String> = subscribed.into_iter().collect();
    topics.unsubscribe(&queue, &symbols, None);
    queue.close();
    let _ = writer.await;
}

/// Reads client frames and applies each request, until a close, an error
/// or the end of the stream. Obligated replies (pong, close echo) go
/// through the queue like everything else.
async fn read_requests(
    read: impl AsyncRead + Unpin,
    queue: &Arc<SubscriberQueue>,
    topics: &Topics,
    subscribed: &mut BTreeSet<String>,
) {
    let (mut ws, _) = fastwebsockets::after_handshake_split(read, tokio::io::sink(), Role::Server);
    ws.set_max_message_size(MAX_MESSAGE);
    let mut ws = FragmentCollectorRead::new(ws);
    let mut obligated = |f: Frame<'_>| {
        queue.push(frame(f.opcode, &f.payload));
        std::future::ready(Ok::<(), Infallible>(()))
    };
    let mut scratch = Vec::new();
    loop {
        let Ok(message) = ws.read_frame(&mut obligated).await else { return };
        match message.opcode {
            OpCode::Text | OpCode::Binary => {}
            OpCode::Close => return,
            _ => continue,
        }
        let mut reply = |m: ServerMessage<'_>| encode_frame(Encoding::Msgpack, &m, &mut scratch);
        match ClientRequest::parse(&message.payload) {
            Ok(ClientRequest::Subscribe { symbols, .. }) => {
                let ack = reply(ack("subscribe", &symbols));
                topics.subscribe(queue, &symbols, ack);
                subscribed.extend(symbols);
            }
            Ok(ClientRequest::Unsubscribe(symbols)) => {
                let ack = reply(ack("unsubscribe", &symbols));
                topics.unsubscribe(queue, &symbols, Some(ack));
                for s in &symbols {
                    subscribed.remove(s);
                }
            }
            Ok(ClientRequest::Refresh(_)) => queue.push(reply(error("unknown_op", "tickcast-minimal has no tokens"))),
            Ok(ClientRequest::Ping) => queue.push(reply(ack("ping", &[]))),
            Err(e) => queue.push(reply(error(e.kind.code(), &e.message))),
        }
    }
}

/// tickcast's ack of a subscribe or unsubscribe (epoch 0: no history).
fn ack<'a>(op: &'a str, symbols: &'a [String]) -> ServerMessage<'a> {
    ServerMessage::Ack {
        op: op.into(),
        symbols: symbols.iter().map(|s| s.as_str().into()).collect(),
        epoch: (op == "subscribe").then_some(0),
        recovered: Default::default(),
    }
}

/// tickcast's `error` message.
fn error<'a>(code: &'a str, message: &'a str) -> ServerMessage<'a> {
    ServerMessage::Error { code: code.into(), message: message.into(), symbols: Vec::new() }
}

/// The writer task: whenever the queue has frames, takes them all and
/// writes them with vectored writes, until the queue closes or a write
/// fails (the client is gone). A write waits as long as the client does
/// not read: there is no slow-consumer policy here.
async fn write_queue(mut write: OwnedWriteHalf, queue: Arc<SubscriberQueue>) {
    let mut batch = Vec::new();
    while queue.take(&mut batch).await {
        if write_all(&mut write, &batch).await.is_err() {
            return;
        }
        batch.clear();
    }
    let _ = write.shutdown().await;
}

/// Writes every frame of `batch`, up to [`MAX_SLICES`] per system call,
/// resuming after partial writes.
async fn write_all(write: &mut OwnedWriteHalf, batch: &[Bytes]) -> std::io::Result<()> {
    // The frame the next write starts in, and how much of it is written.
    let (mut first, mut offset) = (0, 0);
    let mut slices = Vec::with_capacity(batch.len().min(MAX_SLICES));
    while first < batch.len() {
        slices.clear();
        slices.push(IoSlice::new(&batch[first][offset..]));
        slices.extend(batch[first + 1..].iter().take(MAX_SLICES - 1).map(|b| IoSlice::new(b)));
        let mut written = write.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        written += offset;
        while first < batch.len() && written >= batch[first].len() {
            written -= batch[first].len();
            first += 1;
        }
        offset = written;
    }
    Ok(())
}

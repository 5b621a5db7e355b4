//! Per-connection state: the outbox the engine fills and the writer drains,
//! the client's control messages, heartbeats and the close handshake.
//!
//! In: a TCP stream that has completed the WebSocket upgrade. Out:
//! subscribe/unsubscribe [`Command`]s to the engine, and control frames
//! (pings, pongs, errors, close) into the session's own outbox.
//!
//! # The outbox and its byte count
//! Every session has one [`SessionShared`]: frames queued for the socket
//! and an exact count of the bytes queued and not yet written (including
//! the writer's in-flight frames). The engine adds to it under a short
//! `parking_lot` lock, once per batch; the writer subtracts as bytes reach
//! the kernel. Nothing here waits on a socket, so a slow reader never slows
//! the engine: the slow-consumer ladder (conflate, then disconnect) reads
//! [`SessionShared::queued_bytes`] where the engine stages frames.
//!
//! Ordering: market data, snapshots and `conflated` messages share the data
//! queue, in the order the engine produced them. Control traffic (pings,
//! pongs, acks, errors) goes in the control queue, which the writer puts
//! ahead of queued data at the next frame boundary, so a backlog of market
//! data never delays it and the ladder never drops it. A close frame is
//! written after the control frames; queued data behind it is discarded.
//!
//! After a slow-consumer close the session waits up to `--slow-timeout`
//! (not `--shutdown-grace`) for the close frame to get through: a slow
//! client should learn it was dropped for being slow, not see a reset.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{OpCode, WebSocketError};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::codec::{self, Encoding, ServerMessage};
use crate::engine::{Command, SlowMode};
use crate::inbound::Inbound;
use crate::metrics::ClientError;
use crate::replay::{ReplayDriver, ReplaySession};
use crate::server::ServerCtx;
use crate::writer;

/// Close codes the server sends, as documented in docs/PROTOCOL.md.
pub mod close_code {
    /// Reply to a client's close.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy: no pong within `--pong-timeout`, or a slow consumer.
    pub const POLICY: u16 = 1008;
    /// A message over `--max-message-bytes`.
    pub const TOO_BIG: u16 = 1009;
}

/// The part of a session shared by its reader, its writer and the engine.
pub struct SessionShared {
    /// Server-unique id, for logs and engine bookkeeping.
    pub id: u64,
    /// The encoding this client chose at the handshake.
    pub encoding: Encoding,
    /// What the client wants when it falls behind (`?slow=`).
    pub slow: SlowMode,
    /// Set by the engine while the session is conflating (for gauges).
    conflating: AtomicBool,
    outbox: Mutex<Outbox>,
    /// Bytes queued and not yet written, exact.
    queued_bytes: AtomicUsize,
    /// Wakes the writer when the outbox goes from empty to non-empty.
    notify: Notify,
    /// Set once a close frame is queued: no more frames are accepted.
    closing: AtomicBool,
    /// Wakes the session's reader when someone else (the engine's
    /// slow-consumer policy) closes the session.
    closed: Notify,
    /// Wall clock (ns) of the last progress: a write that moved bytes, or
    /// data queued to a session that had none. The slow-consumer timeout
    /// reads it.
    last_progress_ns: AtomicU64,
}

#[derive(Default)]
struct Outbox {
    control: VecDeque<Bytes>,
    /// A `Vec`, so that buffers can be swapped whole with the engine's
    /// staging vector and the writer's in-flight queue: in the steady state
    /// frames are not moved one by one between the three.
    data: Vec<Bytes>,
    close: Option<Bytes>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.control.is_empty() && self.data.is_empty() && self.close.is_none()
    }
}

/// What [`SessionShared::take`] tells the writer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Frames (maybe none) were moved in flight; keep going.
    Open,
    /// A close frame is now the last frame in flight: write up to it, then
    /// shut the socket.
    Closing,
}

impl SessionShared {
    /// A session with an empty outbox.
    pub fn new(id: u64, encoding: Encoding, slow: SlowMode) -> SessionShared {
        SessionShared {
            id,
            encoding,
            slow,
            conflating: AtomicBool::new(false),
            outbox: Mutex::new(Outbox::default()),
            queued_bytes: AtomicUsize::new(0),
            notify: Notify::new(),
            closing: AtomicBool::new(false),
            closed: Notify::new(),
            last_progress_ns: AtomicU64::new(crate::tick::now_ns()),
        }
    }

    /// Bytes queued for this socket and not yet written to the kernel.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Whether the engine is conflating this session's updates.
    pub fn is_conflating(&self) -> bool {
        self.conflating.load(Ordering::Relaxed)
    }

    /// Marks the session as conflating or caught up (the engine).
    pub(crate) fn set_conflating(&self, on: bool) {
        self.conflating.store(on, Ordering::Relaxed);
    }

    /// Whether a close frame has been queued.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Appends data frames (the engine, once per batch), draining `frames`
    /// so its capacity is reused. `bytes` is their total length, `now_ns`
    /// the engine's clock: when the session had nothing queued, the stall
    /// clock starts now, so time spent idle never counts as a stall.
    pub fn push_data(&self, frames: &mut Vec<Bytes>, bytes: usize, now_ns: u64) {
        if self.is_closing() {
            frames.clear();
            return;
        }
        let was_empty;
        {
            let mut outbox = self.outbox.lock();
            was_empty = outbox.is_empty();
            if outbox.data.is_empty() {
                std::mem::swap(&mut outbox.data, frames);
            } else {
                outbox.data.append(frames);
            }
            if self.queued_bytes.fetch_add(bytes, Ordering::Relaxed) == 0 {
                self.last_progress_ns.store(now_ns, Ordering::Relaxed);
            }
        }
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Queues a control frame ahead of data.
    pub fn push_control(&self, frame: Bytes) {
        if self.is_closing() {
            return;
        }
        let mut outbox = self.outbox.lock();
        self.queued_bytes.fetch_add(frame.len(), Ordering::Relaxed);
        outbox.control.push_back(frame);
        drop(outbox);
        self.notify.notify_one();
    }

    /// Queues the close frame: it goes after pending control frames, queued
    /// data is discarded, and nothing is accepted after it.
    pub fn close(&self, frame: Bytes) {
        if self.closing.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut outbox = self.outbox.lock();
        let dropped: usize = outbox.data.drain(..).map(|f| f.len()).sum::<usize>();
        self.queued_bytes.fetch_add(frame.len(), Ordering::Relaxed);
        self.queued_bytes.fetch_sub(dropped, Ordering::Relaxed);
        outbox.close = Some(frame);
        drop(outbox);
        self.notify.notify_one();
        self.closed.notify_one();
    }

    /// Resolves once the session has been closed (see [`close`](Self::close)).
    pub(crate) async fn wait_closed(&self) {
        self.closed.notified().await
    }

    /// When the writer last made progress, ns since the Unix epoch.
    pub fn last_progress_ns(&self) -> u64 {
        self.last_progress_ns.load(Ordering::Relaxed)
    }

    /// Records writer progress now.
    pub(crate) fn progressed(&self) {
        self.last_progress_ns.store(crate::tick::now_ns(), Ordering::Relaxed);
    }

    /// Waits until something is queued (or was queued since the last take).
    pub(crate) async fn wait(&self) {
        self.notify.notified().await
    }

    /// Moves queued frames into the writer's in-flight list. The first
    /// `front` in-flight frames keep their place and are never dropped: a
    /// partly written head frame (which must finish) and control frames
    /// taken earlier. New control frames go right after them, in order,
    /// then data at the back. With a close queued, in-flight data behind
    /// `front` is dropped and the close frame is the last frame. Returns
    /// how many control frames were added.
    pub(crate) fn take(&self, inflight: &mut VecDeque<Bytes>, front: usize) -> (Take, usize) {
        let mut outbox = self.outbox.lock();
        let front = front.min(inflight.len());
        let control = outbox.control.len();
        if let Some(close) = outbox.close.take() {
            let dropped: usize = inflight.drain(front..).map(|f| f.len()).sum();
            self.queued_bytes.fetch_sub(dropped, Ordering::Relaxed);
            inflight.extend(outbox.control.drain(..));
            inflight.push_back(close);
            return (Take::Closing, control);
        }
        if inflight.is_empty() {
            // Trade buffers: the writer's empty one (keeping its capacity)
            // becomes the outbox's, the outbox's becomes in-flight. O(1).
            let mut buffer = Vec::from(std::mem::take(inflight));
            std::mem::swap(&mut buffer, &mut outbox.data);
            *inflight = VecDeque::from(buffer);
        } else {
            inflight.extend(outbox.data.drain(..));
        }
        for (i, frame) in outbox.control.drain(..).enumerate() {
            inflight.insert(front + i, frame);
        }
        (Take::Open, control)
    }

    /// Records that `n` queued bytes reached the kernel (or were dropped).
    pub(crate) fn written(&self, n: usize) {
        self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A parsed control message from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientRequest {
    /// Start receiving these symbols (`"*"` = all).
    Subscribe(Vec<String>),
    /// Stop receiving these symbols (`"*"` = all).
    Unsubscribe(Vec<String>),
}

/// Why a control message was refused; each maps to an `error` code.
#[derive(Debug, PartialEq, Eq)]
pub struct RequestError {
    /// The counted kind, whose code goes on the wire.
    pub kind: ClientError,
    /// The explanation sent to the client.
    pub message: String,
}

/// Most symbols one subscribe or unsubscribe may name.
pub const MAX_SYMBOLS_PER_REQUEST: usize = 10_000;

/// Parses a control message's envelope: a JSON object with a string `op`.
/// Shared by live and replay sessions, so both answer the same malformed
/// input with the same codes.
pub fn parse_envelope(payload: &[u8]) -> Result<(serde_json::Map<String, Value>, String), RequestError> {
    let err = |kind, message: String| RequestError { kind, message };
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| err(ClientError::BadJson, format!("control message is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(err(ClientError::BadRequest, "control message must be a JSON object".into()));
    };
    let op = obj
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| err(ClientError::BadRequest, "missing string field \"op\"".into()))?
        .to_owned();
    Ok((obj, op))
}

/// Parses one client control message (a JSON object).
pub fn parse_request(payload: &[u8]) -> Result<ClientRequest, RequestError> {
    let err = |kind, message: String| RequestError { kind, message };
    let (obj, op) = parse_envelope(payload)?;
    let op = op.as_str();
    if op != "subscribe" && op != "unsubscribe" {
        let op: String = op.chars().take(64).collect();
        return Err(err(ClientError::UnknownOp, format!("unknown op {op:?}: valid ops are subscribe, unsubscribe")));
    }
    let symbols = obj
        .get("symbols")
        .and_then(Value::as_array)
        .ok_or_else(|| err(ClientError::BadRequest, format!("{op} needs \"symbols\": an array of strings")))?;
    if symbols.is_empty() || symbols.len() > MAX_SYMBOLS_PER_REQUEST {
        return Err(err(
            ClientError::BadRequest,
            format!("\"symbols\" must name 1 to {MAX_SYMBOLS_PER_REQUEST} symbols"),
        ));
    }
    let mut names = Vec::with_capacity(symbols.len());
    for s in symbols {
        match s.as_str() {
            Some(name) => names.push(name.to_owned()),
            None => return Err(err(ClientError::BadRequest, "\"symbols\" must hold only strings".into())),
        }
    }
    Ok(match op {
        "subscribe" => ClientRequest::Subscribe(names),
        _ => ClientRequest::Unsubscribe(names),
    })
}

/// Encodes and frames a message for one session (control paths only; the
/// hot path shares frames built by the engine).
pub fn frame_for(encoding: Encoding, msg: &ServerMessage<'_>) -> Bytes {
    codec::encode_frame(encoding, msg, &mut Vec::new())
}

/// Runs one WebSocket session to completion: registers it with the engine
/// (a live session) or starts its replay (`replay`), starts its writer,
/// reads and answers client frames, sends heartbeats, and cleans up.
/// `leftover` holds bytes the client sent right after the handshake, which
/// the HTTP layer had already read.
pub async fn run(
    ctx: Arc<ServerCtx>,
    stream: TcpStream,
    leftover: Bytes,
    encoding: Encoding,
    slow: SlowMode,
    replay: Option<ReplaySession>,
) {
    let id = ctx.next_session_id();
    let shared = Arc::new(SessionShared::new(id, encoding, slow));
    writer::tune_socket(&stream);
    let stream = Arc::new(stream);
    let _guard = ctx.register_session(shared.clone(), stream.clone());
    // A replay session is private: the engine never hears of it.
    let (mut driver, _replay_slot) = match replay {
        Some(ReplaySession { request, slot }) => {
            match ReplayDriver::start(request, encoding, ctx.config.book_depth, ctx.metrics.clone()) {
                Ok(d) => (Some(d), Some(slot)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a replay thread");
                    return;
                }
            }
        }
        None => {
            ctx.engine.send(Command::Register { session: shared.clone() });
            (None, None)
        }
    };

    let mut writer = tokio::spawn(writer::run(shared.clone(), stream.clone(), ctx.metrics.clone()));
    let mut writer_done = false;

    // `leftover` is a view into hyper's whole read buffer (8 KiB or more):
    // keep a copy of just its bytes, so that buffer is freed now rather than
    // held for the life of the connection.
    // (Shadowing would keep the original alive to the end of this function.)
    let leftover = {
        let view = leftover;
        Bytes::copy_from_slice(&view)
    };
    let mut inbound =
        Inbound::new(stream.clone(), leftover, shared.clone(), ctx.metrics.clone(), ctx.config.max_message_bytes);

    let mut shutdown = ctx.shutdown_rx();
    // How long the goodbye (close frame, then the peer's FIN) may take.
    let mut grace = ctx.config.shutdown_grace;
    let ping_every = ctx.config.ping_interval;
    let mut ping = interval_at(Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // When a ping is outstanding: the deadline for any pong.
    let mut pong_deadline: Option<Instant> = None;

    loop {
        let deadline = pong_deadline;
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                shared.close(codec::close_frame(close_code::GOING_AWAY, "server shutting down"));
                break;
            }
            _ = shared.wait_closed() => {
                // Closed by the engine (slow consumer); the close frame is
                // queued behind what the kernel already holds for this slow
                // reader, so give it as long as a stall is allowed.
                grace = grace.max(ctx.config.slow.slow_timeout);
                break;
            }
            _ = &mut writer => {
                // The socket failed or was shut; nothing more can be sent,
                // and the handle must not be polled again.
                writer_done = true;
                break;
            }
            _ = replay_step(&mut driver, &shared), if driver.as_ref().is_some_and(ReplayDriver::active) => {}
            _ = sleep_until_opt(deadline), if deadline.is_some() => {
                ctx.metrics.client_error(ClientError::PongTimeout);
                shared.close(codec::close_frame(close_code::POLICY, "pong timeout"));
                break;
            }
            _ = ping.tick() => {
                let now_ns = crate::tick::now_ns().to_be_bytes();
                shared.push_control(codec::frame(OpCode::Ping, &now_ns));
                if pong_deadline.is_none() {
                    pong_deadline = Some(Instant::now() + ctx.config.pong_timeout);
                }
            }
            frame = inbound.next() => match frame {
                Ok(frame) => match frame.opcode {
                    OpCode::Text | OpCode::Binary => {
                        if frame.payload.len() > ctx.config.max_message_bytes {
                            ctx.metrics.client_error(ClientError::MessageTooBig);
                            shared.close(codec::close_frame(close_code::TOO_BIG, "message too big"));
                            break;
                        }
                        match driver.as_mut() {
                            Some(d) => shared.push_control(d.control(&frame.payload)),
                            None => handle_request(&ctx, &shared, &frame.payload).await,
                        }
                    }
                    OpCode::Pong => pong_deadline = None,
                    OpCode::Close => break,
                    _ => {}
                },
                Err(e) => {
                    close_for_read_error(&ctx, &shared, e);
                    break;
                }
            },
        }
    }

    // Stop fan-out (or the replay) now; the rest is only the goodbye.
    if driver.is_none() {
        ctx.engine.send(Command::Deregister { id });
    }
    drop(driver);
    drop(inbound);
    // Let the writer flush up to the close frame, within the grace period,
    // then read (and discard) until the peer closes its side, so that the
    // kernel does not answer unread bytes with a reset that would destroy
    // the close frame before the client reads it.
    let goodbye = async {
        if !writer_done && (&mut writer).await.is_ok_and(|r| r.is_ok()) {
            drain_until_eof(&stream).await;
        }
    };
    if tokio::time::timeout(grace, goodbye).await.is_err() {
        writer.abort();
    }
}

/// Reads and discards until EOF or an error.
async fn drain_until_eof(stream: &TcpStream) {
    // On the heap, and only now: an array here would live in every
    // session's future (it is held across an await), 4 KiB per idle
    // connection for its whole life.
    let mut scratch = vec![0u8; 4096];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        }
    }
}

async fn replay_step(driver: &mut Option<ReplayDriver>, shared: &SessionShared) {
    match driver {
        Some(d) => d.step(shared).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn close_for_read_error(ctx: &ServerCtx, shared: &SessionShared, error: WebSocketError) {
    let (code, reason, kind) = match error {
        WebSocketError::FrameTooLarge => (close_code::TOO_BIG, "message too big", Some(ClientError::MessageTooBig)),
        WebSocketError::InvalidUTF8 => (close_code::INVALID_PAYLOAD, "invalid utf-8", Some(ClientError::ProtocolError)),
        WebSocketError::UnexpectedEOF | WebSocketError::IoError(_) | WebSocketError::ConnectionClosed => {
            (close_code::NORMAL, "", None)
        }
        _ => (close_code::PROTOCOL_ERROR, "protocol error", Some(ClientError::ProtocolError)),
    };
    if let Some(kind) = kind {
        ctx.metrics.client_error(kind);
        tracing::debug!(session = shared.id, %error, "closing session");
        shared.close(codec::close_frame(code, reason));
    } else {
        // The peer is gone: there is no one to send a close to.
        shared.close(Bytes::new());
    }
}

async fn handle_request(ctx: &ServerCtx, shared: &SessionShared, payload: &[u8]) {
    let (symbols, subscribe) = match parse_request(payload) {
        Ok(ClientRequest::Subscribe(s)) => (s, true),
        Ok(ClientRequest::Unsubscribe(s)) => (s, false),
        Err(e) => {
            ctx.metrics.client_error(e.kind);
            let msg = ServerMessage::error(e.kind.code(), e.message);
            shared.push_control(frame_for(shared.encoding, &msg));
            return;
        }
    };
    let (done, applied) = oneshot::channel();
    let id = shared.id;
    ctx.engine.send(if subscribe {
        Command::Subscribe { id, symbols, done }
    } else {
        Command::Unsubscribe { id, symbols, done }
    });
    // One request in flight per session: this bounds the engine's command
    // queue by the number of sessions. The engine always answers; the
    // timeout only guards against a server that is shutting down.
    let _ = tokio::time::timeout(Duration::from_secs(10), applied).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_or_say_why_not() {
        assert_eq!(
            parse_request(br#"{"op":"subscribe","symbols":["AAPL","*"]}"#),
            Ok(ClientRequest::Subscribe(vec!["AAPL".into(), "*".into()]))
        );
        assert_eq!(
            parse_request(br#"{"op":"unsubscribe","symbols":["X"],"extra":1}"#),
            Ok(ClientRequest::Unsubscribe(vec!["X".into()]))
        );
        let kind = |p: &[u8]| parse_request(p).unwrap_err().kind;
        assert_eq!(kind(b"{nope"), ClientError::BadJson);
        assert_eq!(kind(b"[1]"), ClientError::BadRequest);
        assert_eq!(kind(br#"{"op":"dance","symbols":["A"]}"#), ClientError::UnknownOp);
        assert_eq!(kind(br#"{"op":"subscribe"}"#), ClientError::BadRequest);
        assert_eq!(kind(br#"{"op":"subscribe","symbols":[]}"#), ClientError::BadRequest);
        assert_eq!(kind(br#"{"op":"subscribe","symbols":[1]}"#), ClientError::BadRequest);
    }

    #[test]
    fn outbox_counts_bytes_exactly_and_control_jumps_data() {
        let s = SessionShared::new(1, Encoding::Json, SlowMode::Conflate);
        let mut frames = vec![Bytes::from_static(b"aaaa"), Bytes::from_static(b"bb")];
        s.push_data(&mut frames, 6, 1);
        assert_eq!(s.last_progress_ns(), 1, "the stall clock starts when data reaches an empty queue");
        assert!(frames.is_empty());
        s.push_control(Bytes::from_static(b"p"));
        assert_eq!(s.queued_bytes(), 7);
        let mut inflight = VecDeque::new();
        assert_eq!(s.take(&mut inflight, 0), (Take::Open, 1));
        assert_eq!(inflight, [&b"p"[..], b"aaaa", b"bb"]);
        // Frames already in flight at the front (here the control frame)
        // keep their place: later control goes after them, in order.
        s.push_control(Bytes::from_static(b"q"));
        s.push_control(Bytes::from_static(b"r"));
        assert_eq!(s.take(&mut inflight, 1), (Take::Open, 2));
        assert_eq!(inflight, [&b"p"[..], b"q", b"r", b"aaaa", b"bb"]);
        // Close drops data behind the front and ends the stream.
        s.close(Bytes::from_static(b"CC"));
        let mut more = vec![Bytes::from_static(b"zzz")];
        s.push_data(&mut more, 3, 2);
        assert_eq!(s.take(&mut inflight, 3), (Take::Closing, 0));
        assert_eq!(inflight, [&b"p"[..], b"q", b"r", b"CC"]);
        assert_eq!(s.queued_bytes(), 5);
    }
}

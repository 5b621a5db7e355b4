//! A session's task, from the upgrade to the close handshake: registers the
//! session (with the engine, or starts its replay), starts its writer,
//! reads and answers client frames, pings, and says goodbye.
//!
//! After a slow-consumer close the session waits up to `--slow-timeout`
//! (not `--shutdown-grace`) for the close frame to get through: a slow
//! client should learn it was dropped for being slow, not see a reset.
//!
//! A session whose token has an `exp` is sent `token_expiring`
//! `--auth-expiry-warning` before it, and closed with 4001 "token expired"
//! at it, unless a `refresh` brings a new token first (its grant then
//! applies to later subscribes, and its `exp` to these two timers).
//!
//! What a client sends is bounded here too: every request and ping goes
//! through the connection's [`RequestLimiter`] first, and the replies go
//! to the outbox, whose control limit closes a client that does not read
//! them (1008 "control flood"). A replay session, which the engine never
//! sees, gets the engine's slow-consumer checks from its own task: closed
//! with 1008 "slow consumer" when its socket takes no byte for
//! `--slow-timeout` or its queue passes `--disconnect-above`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, WebSocketError};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

use super::inbound::{FrameViolation, Inbound};
use super::limiter::{RequestLimiter, Verdict};
use super::replay::{ReplayDriver, ReplaySession};
use super::requests::Handled;
use super::rewind::{Rewind, Stepped};
use super::{frame_for, requests, writer, Handshake, SessionCtx};
use crate::auth::Grant;
use crate::engine::Command;
use crate::model::now_ns;
use crate::outbox::Outbox;
use crate::wire::request::{parse_envelope, refresh_token};
use crate::wire::{self, close_code, ErrorCode, ServerMessage};

/// How often a replay session checks itself for a stall (live sessions are
/// swept by the engine as often).
const REPLAY_STALL_CHECK: Duration = Duration::from_millis(100);

/// Runs one WebSocket session to completion. `leftover` holds bytes the
/// client sent right after the handshake, which the HTTP layer had already
/// read.
pub async fn run(ctx: Arc<SessionCtx>, stream: TcpStream, leftover: Bytes, handshake: Handshake) {
    let outbox = Arc::new(
        Outbox::new(ctx.registry.next_id(), handshake.encoding, handshake.slow)
            .with_batching(handshake.batch)
            .with_control_limit(ctx.settings.max_control_bytes),
    );
    writer::tune_socket(&stream);
    let stream = Arc::new(stream);
    let _guard = ctx.registry.register(outbox.clone(), stream.clone());
    // A replay session is private: the engine never hears of it.
    let (driver, _replay_slot) = match handshake.replay {
        Some(ReplaySession { request, slot }) => {
            // The driver pauses at half the byte bound: a client that reads
            // never reaches it.
            let mark = ctx.settings.disconnect_above / 2;
            match ReplayDriver::start(request, outbox.encoding, ctx.settings.book_depth, mark, ctx.metrics.clone()) {
                Ok(d) => (Some(d), Some(slot)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start a replay thread");
                    return;
                }
            }
        }
        None => {
            ctx.engine.send(Command::Register { outbox: outbox.clone() });
            (None, None)
        }
    };
    let writer = tokio::spawn(writer::run(outbox.clone(), stream.clone(), ctx.metrics.clone()));
    // `leftover` is a view into hyper's whole read buffer (8 KiB or more):
    // keep a copy of just its bytes, so that buffer is freed now rather than
    // held for the life of the connection.
    let leftover = Bytes::copy_from_slice(&leftover);
    let inbound =
        Inbound::new(stream.clone(), leftover, outbox.clone(), ctx.metrics.clone(), ctx.settings.max_message_bytes);
    let expiry = Expiry::of(handshake.grant.as_ref(), ctx.settings.auth_expiry_warning);
    let grant = handshake.grant;
    let limiter =
        RequestLimiter::new(ctx.settings.max_requests_per_sec, ctx.settings.request_burst, Instant::now().into_std());
    let mut session = Session {
        ctx,
        outbox,
        stream,
        writer,
        writer_done: false,
        inbound,
        driver,
        rewind: None,
        grant,
        expiry,
        limiter,
    };
    let grace = session.serve().await;
    session.goodbye(grace).await;
}

/// One session's moving parts while it serves.
struct Session {
    ctx: Arc<SessionCtx>,
    outbox: Arc<Outbox>,
    stream: Arc<TcpStream>,
    /// The writer task: ends when the close frame is written or the socket fails.
    writer: JoinHandle<std::io::Result<()>>,
    /// The writer task has ended and must not be polled again.
    writer_done: bool,
    inbound: Inbound,
    /// A replay session's pacer; `None` for a live session.
    driver: Option<ReplayDriver>,
    /// A live session's rewind (`from_ts`) in progress.
    rewind: Option<Rewind>,
    /// What the session's token grants (the handshake's, or the last
    /// `refresh`'s); `None` on an open server.
    grant: Option<Grant>,
    /// When the token is warned about and when it expires.
    expiry: Expiry,
    /// The client's request rate (`--max-requests-per-sec`).
    limiter: RequestLimiter,
}

/// A session's token expiry, as two deadlines on the session's clock.
#[derive(Clone, Copy, Debug, Default)]
struct Expiry {
    /// When to send `token_expiring`; `None`: sent, or no `exp`.
    warn_at: Option<Instant>,
    /// When to close with 4001; `None`: the token has no `exp`.
    close_at: Option<Instant>,
    /// The token's `exp`, seconds since the Unix epoch.
    expires_at: u64,
}

impl Expiry {
    /// The deadlines of `grant`'s token, `warning` apart.
    fn of(grant: Option<&Grant>, warning: Duration) -> Expiry {
        let Some(expires_at) = grant.and_then(|g| g.expires_at) else { return Expiry::default() };
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let now = Instant::now();
        let close_at = now + Duration::from_secs(expires_at).saturating_sub(since_epoch);
        let warn_at = close_at.checked_sub(warning).unwrap_or(now).max(now);
        Expiry { warn_at: Some(warn_at), close_at: Some(close_at), expires_at }
    }
}

impl Session {
    /// Serves until the session ends (a close either way, a failed socket,
    /// shutdown, a protocol violation, a missed pong). Returns how long
    /// the goodbye may take.
    async fn serve(&mut self) -> Duration {
        let settings = self.ctx.settings;
        let mut shutdown = self.ctx.shutdown.clone();
        let mut ping = heartbeat(settings.ping_interval);
        // When a ping is outstanding: the deadline for any pong.
        let mut pong_deadline: Option<Instant> = None;
        let is_replay = self.driver.is_some();
        // Only a replay session checks itself (and pays for the timer).
        let mut stall_check = is_replay.then(|| heartbeat(REPLAY_STALL_CHECK));
        loop {
            let deadline = pong_deadline;
            let Expiry { warn_at, close_at, expires_at } = self.expiry;
            let replaying = self.driver.as_ref().is_some_and(ReplayDriver::active);
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    self.outbox.close(wire::close_frame(close_code::GOING_AWAY, "server shutting down"));
                    return settings.shutdown_grace;
                }
                _ = self.outbox.wait_closed() => {
                    // Closed by the engine (slow consumer) or by the outbox
                    // (control flood); the close frame is queued behind what
                    // the kernel already holds for this slow reader, so give
                    // it as long as a stall is allowed.
                    if self.outbox.flooded() {
                        self.ctx.metrics.client_error(ErrorCode::ControlFlood);
                        tracing::info!(session = self.outbox.id, "closed a client that does not read its replies (1008)");
                    }
                    return settings.shutdown_grace.max(settings.slow_timeout);
                }
                _ = tick_opt(&mut stall_check), if is_replay => {
                    if self.replay_too_slow() {
                        return settings.shutdown_grace.max(settings.slow_timeout);
                    }
                }
                _ = &mut self.writer => {
                    // The socket failed or was shut; nothing more can be sent.
                    self.writer_done = true;
                    return settings.shutdown_grace;
                }
                _ = replay_step(&mut self.driver, &self.outbox), if replaying => {}
                stepped = rewind_step(&mut self.rewind, &self.ctx, &self.outbox), if self.rewind.is_some() => {
                    if let Stepped::Finished = stepped {
                        self.rewind = None;
                    }
                }
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    self.ctx.metrics.client_error(ErrorCode::PongTimeout);
                    self.outbox.close(wire::close_frame(close_code::POLICY, "pong timeout"));
                    return settings.shutdown_grace;
                }
                _ = sleep_until_opt(close_at), if close_at.is_some() => {
                    self.ctx.metrics.client_error(ErrorCode::TokenExpired);
                    self.outbox.close(wire::close_frame(close_code::TOKEN_EXPIRED, "token expired"));
                    return settings.shutdown_grace;
                }
                _ = sleep_until_opt(warn_at), if warn_at.is_some() => {
                    self.expiry.warn_at = None;
                    let warning = ServerMessage::TokenExpiring { expires_at };
                    self.outbox.push_control(super::frame_for(&self.outbox, &warning));
                }
                _ = ping.tick() => {
                    self.outbox.push_control(wire::frame(OpCode::Ping, &now_ns().to_be_bytes()));
                    pong_deadline.get_or_insert(Instant::now() + settings.pong_timeout);
                }
                frame = self.inbound.next() => match frame {
                    Ok(frame) if frame.opcode == OpCode::Pong => pong_deadline = None,
                    Ok(frame) => if !self.on_frame(frame).await {
                        return settings.shutdown_grace;
                    },
                    Err(e) => {
                        self.close_for_read_error(e);
                        return settings.shutdown_grace;
                    }
                },
            }
        }
    }

    /// Handles a client frame; returns whether the session goes on.
    async fn on_frame(&mut self, frame: Frame<'static>) -> bool {
        match frame.opcode {
            OpCode::Text | OpCode::Binary => {
                if frame.payload.len() > self.ctx.settings.max_message_bytes {
                    self.ctx.metrics.client_error(ErrorCode::MessageTooBig);
                    self.outbox.close(wire::close_frame(close_code::TOO_BIG, "message too big"));
                    return false;
                }
                match self.limiter.check(Instant::now().into_std()) {
                    Verdict::Allowed => {}
                    Verdict::Refused => {
                        self.ctx.metrics.client_error(ErrorCode::RateLimited);
                        let settings = &self.ctx.settings;
                        let message = format!(
                            "over {} requests per second (burst {}): request dropped; slow down, or the connection is closed",
                            settings.max_requests_per_sec, settings.request_burst
                        );
                        let error = ServerMessage::error(ErrorCode::RateLimited.code(), message);
                        self.outbox.push_control(frame_for(&self.outbox, &error));
                        return true;
                    }
                    Verdict::Exhausted => return self.close_rate_limited(),
                }
                let refresh = match self.driver.as_mut() {
                    // A replay session's ops are the driver's, but for `refresh`.
                    Some(d) => match parse_envelope(&frame.payload) {
                        Ok((obj, op)) if op == "refresh" && self.ctx.auth.is_some() => Some(refresh_token(&obj)),
                        _ => {
                            self.outbox.push_control(d.control(&frame.payload));
                            None
                        }
                    },
                    None => {
                        let entitlements = self.grant.as_ref().map(|g| &g.entitlements);
                        let rewinding = self.rewind.as_ref().map(|r| &r.symbols);
                        match requests::handle(&self.ctx, &self.outbox, &frame.payload, entitlements, rewinding).await {
                            Handled::Done => None,
                            Handled::Refresh(token) => Some(Ok(token)),
                            Handled::Rewind(req) => {
                                match Rewind::start(&self.ctx, &self.outbox, req, entitlements).await {
                                    Ok(rewind) => self.rewind = Some(rewind),
                                    Err((code, message)) => {
                                        self.ctx.metrics.client_error(code);
                                        self.reply(&ServerMessage::error(code.code(), message));
                                    }
                                }
                                None
                            }
                        }
                    }
                };
                match refresh {
                    Some(Ok(token)) => self.refresh(&token),
                    Some(Err(e)) => {
                        self.ctx.metrics.client_error(e.kind);
                        self.reply(&ServerMessage::error(e.kind.code(), e.message));
                    }
                    None => {}
                }
                true
            }
            OpCode::Ping => {
                // A ping over the rate gets no pong (it is not worth an
                // error frame); it still counts toward the close.
                match self.limiter.check(Instant::now().into_std()) {
                    Verdict::Allowed => self.outbox.push_control(wire::frame(OpCode::Pong, &frame.payload)),
                    Verdict::Refused => self.ctx.metrics.client_error(ErrorCode::RateLimited),
                    Verdict::Exhausted => return self.close_rate_limited(),
                }
                true
            }
            OpCode::Close => false,
            _ => true,
        }
    }

    /// Replaces the session's token: verified like the handshake's, and
    /// for the same subject. Answered with ack `refresh`, or an `error`
    /// `unauthorized` (the old token then still stands until it expires).
    fn refresh(&mut self, token: &str) {
        let Some(verifier) = &self.ctx.auth else {
            let e = ErrorCode::BadRequest;
            self.ctx.metrics.client_error(e);
            self.reply(&ServerMessage::error(e.code(), "authentication is off: there is no token to refresh"));
            return;
        };
        let refused = match verifier.verify(token) {
            Ok(grant) if self.grant.as_ref().is_some_and(|g| g.subject.is_some() && g.subject != grant.subject) => {
                "refresh refused: the new token names another subject (\"sub\")".to_owned()
            }
            Ok(grant) => {
                self.expiry = Expiry::of(Some(&grant), self.ctx.settings.auth_expiry_warning);
                self.grant = Some(grant);
                self.reply(&ServerMessage::ack("refresh", Vec::new()));
                return;
            }
            Err(e) => format!("refresh refused: {e}"),
        };
        self.ctx.metrics.client_error(ErrorCode::Unauthorized);
        self.reply(&ServerMessage::error(ErrorCode::Unauthorized.code(), refused));
    }

    /// Queues a control message for the client, ahead of data.
    fn reply(&self, msg: &ServerMessage<'_>) {
        self.outbox.push_control(super::frame_for(&self.outbox, msg));
    }

    /// Closes a client that kept sending a whole burst over its rate.
    fn close_rate_limited(&self) -> bool {
        self.ctx.metrics.client_error(ErrorCode::RateLimited);
        tracing::info!(session = self.outbox.id, "closed a client over its request rate (1008)");
        self.outbox.close(wire::close_frame(close_code::POLICY, "rate limited"));
        false
    }

    /// A replay session's own slow-consumer check (the engine's ladder
    /// never sees it): closes it with 1008 "slow consumer" if its socket
    /// has taken none of its queued bytes for `--slow-timeout`, or more
    /// than `--disconnect-above` bytes are queued. Returns whether it did.
    fn replay_too_slow(&self) -> bool {
        let settings = &self.ctx.settings;
        let queued = self.outbox.queued_bytes();
        let stalled_ns = now_ns().saturating_sub(self.outbox.last_progress_ns());
        let stalled = queued > 0 && u128::from(stalled_ns) > settings.slow_timeout.as_nanos();
        if !(stalled || queued > settings.disconnect_above) || self.outbox.is_closing() {
            return false;
        }
        self.ctx.metrics.slow_disconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            session = self.outbox.id,
            queued_bytes = queued,
            stalled_ms = stalled_ns / 1_000_000,
            "closed slow replay consumer (1008)"
        );
        self.outbox.close(wire::close_frame(close_code::POLICY, "slow consumer"));
        true
    }

    /// Closes the session for a failed read, with the code RFC 6455 asks
    /// for; a peer that is gone gets no close frame.
    fn close_for_read_error(&self, error: WebSocketError) {
        let (code, reason, kind) = match error {
            // Before IoError, which carries it.
            _ if FrameViolation::of(&error).is_some() => {
                (close_code::PROTOCOL_ERROR, "protocol error", Some(ErrorCode::ProtocolError))
            }
            WebSocketError::FrameTooLarge => (close_code::TOO_BIG, "message too big", Some(ErrorCode::MessageTooBig)),
            WebSocketError::InvalidUTF8 => {
                (close_code::INVALID_PAYLOAD, "invalid utf-8", Some(ErrorCode::ProtocolError))
            }
            WebSocketError::UnexpectedEOF | WebSocketError::IoError(_) | WebSocketError::ConnectionClosed => {
                (close_code::NORMAL, "", None)
            }
            _ => (close_code::PROTOCOL_ERROR, "protocol error", Some(ErrorCode::ProtocolError)),
        };
        match kind {
            Some(kind) => {
                self.ctx.metrics.client_error(kind);
                tracing::debug!(session = self.outbox.id, %error, "closing session");
                self.outbox.close(wire::close_frame(code, reason));
            }
            // The peer is gone: there is no one to send a close to.
            None => self.outbox.close(Bytes::new()),
        }
    }

    /// Stops fan-out (or the replay) at once, then lets the writer flush up
    /// to the close frame within `grace`, and reads (and discards) until
    /// the peer closes its side, so that the kernel does not answer unread
    /// bytes with a reset that would destroy the close frame before the
    /// client reads it.
    async fn goodbye(self, grace: Duration) {
        let Session { ctx, outbox, stream, mut writer, writer_done, inbound, driver, .. } = self;
        if driver.is_none() {
            ctx.engine.send(Command::Deregister { id: outbox.id });
        }
        drop(driver);
        drop(inbound);
        let flushed = async {
            if !writer_done && (&mut writer).await.is_ok_and(|r| r.is_ok()) {
                drain_until_eof(&stream).await;
            }
        };
        if tokio::time::timeout(grace, flushed).await.is_err() {
            writer.abort();
        }
    }
}

/// The ping clock: first tick one interval from now; a late tick is not
/// made up for.
fn heartbeat(every: Duration) -> Interval {
    let mut ping = interval_at(Instant::now() + every, every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping
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

async fn replay_step(driver: &mut Option<ReplayDriver>, outbox: &Outbox) {
    match driver {
        Some(d) => d.step(outbox).await,
        None => std::future::pending().await,
    }
}

async fn rewind_step(rewind: &mut Option<Rewind>, ctx: &SessionCtx, outbox: &Outbox) -> Stepped {
    match rewind.as_mut() {
        Some(r) => r.step(ctx, outbox).await,
        None => std::future::pending().await,
    }
}

async fn tick_opt(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

//! Sessions: one per WebSocket connection, from the upgrade to the close
//! handshake.
//!
//! In: a TCP stream that has completed the WebSocket upgrade, and what the
//! handshake chose (encoding, slow-consumer mode, maybe a replay). Out:
//! subscribe/unsubscribe commands to the engine, and control frames
//! (pings, pongs, acks, errors, close) into the session's [`Outbox`], which
//! its writer drains to the socket.
//!
//! - [`run`](mod@run): the session's task: heartbeats, client frames, the goodbye.
//! - [`requests`]: a live session's control messages, applied by the engine.
//! - [`inbound`]: client frames, read without a buffer while the client is
//!   quiet; unmasked frames and over-long control frames refused (1002).
//! - [`limiter`]: the per-connection request rate limit (token bucket).
//! - [`writer`]: the outbox drained with one vectored write per pass.
//! - [`replay`]: private paced replays (`/replay`), which bypass the engine.
//! - [`rewind`]: live with rewind (`from_ts`): the tick log up to now,
//!   then a resume from the engine's history.
//! - [`registry`]: the live sessions, for gauges and shutdown.
//!
//! Imports: [`crate::model`], [`crate::wire`], [`crate::outbox`],
//! [`crate::engine`] (its handle and commands only), [`crate::metrics`],
//! [`crate::recorded`] and [`crate::feed::pacing`] (for replays),
//! [`crate::auth`] (a session's grant, `refresh`), and [`crate::sys`]. Never [`crate::server`]: what a session needs of the
//! server comes in a [`SessionCtx`].

pub mod inbound;
pub mod limiter;
pub mod registry;
pub mod replay;
pub mod requests;
pub mod rewind;
pub mod run;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::{Grant, Verifier};
use crate::engine::EngineHandle;
use crate::metrics::Metrics;
use crate::outbox::Outbox;

pub use registry::{SessionGuard, SessionRegistry};
pub use run::run;

/// The session limits an operator sets (each is a flag).
#[derive(Clone, Copy, Debug)]
pub struct SessionSettings {
    /// `--max-message-bytes`: larger client messages get close 1009.
    pub max_message_bytes: usize,
    /// `--ping-interval`: how often the server pings.
    pub ping_interval: Duration,
    /// `--pong-timeout`: no pong this long after a ping gets close 1008.
    pub pong_timeout: Duration,
    /// `--shutdown-grace`: how long a goodbye (close frame, then the
    /// peer's FIN) may take.
    pub shutdown_grace: Duration,
    /// `--slow-timeout`: after a slow-consumer close, how long the close
    /// frame may take to get through the backlog (a slow client should
    /// learn why it was dropped, not see a reset).
    pub slow_timeout: Duration,
    /// `--book-depth`: book levels per side in a replay's snapshots.
    pub book_depth: usize,
    /// `--auth-expiry-warning`: how long before its token expires a
    /// session is sent `token_expiring`.
    pub auth_expiry_warning: Duration,
    /// `--disconnect-above`: a replay session with more bytes than this
    /// queued is closed with 1008 "slow consumer", as a live one is (its
    /// driver pauses at half of it, so only a stalled client gets there).
    pub disconnect_above: usize,
    /// `--max-control-bytes`: unread control replies (pongs, acks,
    /// errors) above which the next one closes the session with 1008
    /// "control flood" (see [`crate::outbox`]).
    pub max_control_bytes: usize,
    /// `--max-requests-per-sec`: the refill rate of each connection's
    /// request token bucket ([`limiter`]); 0 turns the limit off.
    pub max_requests_per_sec: u32,
    /// `--request-burst`: the bucket's size, and the debt past which a
    /// client that keeps sending is closed with 1008 "rate limited".
    pub request_burst: u32,
}

/// What every session shares, and all a session sees of the server.
pub struct SessionCtx {
    /// The limits.
    pub settings: SessionSettings,
    /// Verifies a `refresh`'s token like the handshake's; `None`: the
    /// server is open (no `--auth-*`).
    pub auth: Option<Arc<Verifier>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The way to the engine, for live sessions.
    pub engine: EngineHandle,
    /// Live sessions, for gauges and shutdown.
    pub registry: Arc<SessionRegistry>,
    /// Changes (to `true`) when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// With `--record`: where rewinds (`from_ts`) read; `None`: they are
    /// refused.
    pub rewind: Option<rewind::RewindSettings>,
}

/// What the handshake chose for a session.
pub struct Handshake {
    /// The encoding of every frame the session gets.
    pub encoding: crate::wire::Encoding,
    /// What the client wants when it falls behind (`?slow=`).
    pub slow: crate::outbox::SlowMode,
    /// Whether it asked for batched frames (`?batch=1`).
    pub batch: bool,
    /// A private replay (`/replay`), validated before the upgrade; `None`
    /// for a live session (`/ws`).
    pub replay: Option<replay::ReplaySession>,
    /// What the handshake's token granted; `None` on an open server.
    pub grant: Option<Grant>,
}

/// Encodes and frames a message for one session (control paths only; the
/// hot path shares frames built by the engine).
pub fn frame_for(outbox: &Outbox, msg: &crate::wire::ServerMessage<'_>) -> bytes::Bytes {
    crate::wire::encode_frame(outbox.encoding, msg, &mut Vec::new())
}

//! `--feed tcp://ADDR`: feed handlers connect and send ticks, as
//! newline-delimited JSON in the normalized schema ([`super::json`]) or as
//! binary tick records ([`super::binary`]), each connection in its own
//! format.
//!
//! In: TCP connections on ADDR. Out: ticks through one [`Publisher`] per
//! connection.
//!
//! # One thread, every connection
//! The feed runs on one dedicated OS thread (`feed-tcp`) with its own
//! current-thread tokio runtime: one task accepts, and one task per
//! admitted handler reads its input ([`connection`]). It never runs on the
//! session workers, so ingest does not compete with socket writes, and an
//! idle connection costs a task and a socket, not a thread and its stack:
//! 2,000 idle connections used to be 2,000 threads and 4.7 GB; the feed
//! admits at most `--max-feed-connections` anyway.
//!
//! Each connection's task pushes into the ring through its own
//! [`Publisher`], so ticks keep their order per handler, as before. A full
//! ring makes the push wait (the ring's policy): every handler then waits,
//! which is the backpressure the ring documents.
//!
//! # Formats: JSON lines or binary records, per connection
//! `--feed-format` ([`FeedFormat`], default `auto`) says how a connection's
//! input is read after its optional auth line (which is a text line in both
//! formats):
//! - `json`: newline-delimited JSON ticks ([`super::json`]).
//! - `binary`: frames of binary tick records, `len u32 LE` then `len`
//!   bytes of record ([`crate::model::record`], checked by
//!   [`super::binary`]).
//! - `auto`: the connection's first byte decides: `{` or whitespace
//!   (a newline, a blank-line heartbeat) is JSON lines, anything else is
//!   binary. One exception keeps a binary handler from being misread: a
//!   frame's first byte is the low byte of its length, and a 123-byte
//!   record (a 5-level book on a 3-letter symbol) starts with `{`. So when
//!   the first byte is `{` or whitespace, the first four bytes are also
//!   read as a frame length: at most [`MAX_LINE_BYTES`](super::json::MAX_LINE_BYTES)
//!   (its fourth byte is then 0, a byte JSON text never holds) makes the
//!   connection binary. The server waits for those four bytes (or the end
//!   of the connection) before it decides.
//!
//! A handler may send an auth line first even to a server without a token,
//! in either format: a first line that is an auth line is skipped, and the
//! format is decided by what follows it.
//!
//! # Doors and their limits
//! - `--max-feed-connections` (default [`DEFAULT_MAX_CONNECTIONS`]): a
//!   connection over it is closed at once, logged (rate-limited) and
//!   counted (`tickcast_feed_refused_total{reason="limit"}`).
//! - `--feed-allow`: a peer outside the allow-list is closed at accept
//!   (`reason="not_allowed"`).
//! - `--feed-token`: the first line must be the auth line, within
//!   [`AUTH_TIMEOUT`]; anything else closes the connection
//!   (`reason="auth"`) before a single tick is taken from it.
//! - `--feed-idle-timeout` (default [`DEFAULT_IDLE_TIMEOUT`]): a connection
//!   that sends no byte for that long is closed (`reason="idle"`); a blank
//!   line is a JSON handler's heartbeat. Binary mode has no heartbeat
//!   frame: the timeout applies to bytes received, so a binary handler on a
//!   quiet market must send records (or reconnect).
//! - Lines over [`MAX_LINE_BYTES`](super::json::MAX_LINE_BYTES) and book lines over
//!   [`MAX_LEVELS_PER_LINE`](super::json::MAX_LEVELS_PER_LINE) levels a
//!   side are feed errors, skipped. Binary frames have the same byte
//!   bound and book records the same level bound: a bad record is a feed
//!   error, skipped; a frame length of 0 or over the bound cannot be
//!   skipped (nothing says where the next frame starts), so the connection
//!   is closed (`reason="bad_frame"`).
//! - Off loopback, the port needs a token or an allow-list
//!   ([`FeedAccess::check_exposure`]).

pub mod access;
pub mod connection;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::{FeedContext, FeedHandle, Publisher};
use crate::metrics::FeedRefusal;
pub use access::{FeedAccess, FeedToken, IpNet};

/// How often the acceptor looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(100);

/// Default `--max-feed-connections`: feed handlers are few.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16;

/// Default `--feed-idle-timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// With `--feed-token`, how long a new connection has to send its auth
/// line before it is closed.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// How the tcp feed reads a connection's ticks (`--feed-format`); see the
/// [module documentation](self#formats-json-lines-or-binary-records-per-connection).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FeedFormat {
    /// Each connection's first bytes decide: JSON lines if they begin with
    /// `{` or whitespace (and are not a binary frame's length), binary
    /// records otherwise.
    #[default]
    Auto,
    /// Every connection sends newline-delimited JSON ticks.
    Json,
    /// Every connection sends framed binary tick records.
    Binary,
}

/// A `--feed-format` that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a feed format: expected auto, json or binary")]
pub struct FeedFormatError(String);

impl FromStr for FeedFormat {
    type Err = FeedFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(FeedFormat::Auto),
            "json" => Ok(FeedFormat::Json),
            "binary" => Ok(FeedFormat::Binary),
            other => Err(FeedFormatError(other.chars().take(32).collect())),
        }
    }
}

impl fmt::Display for FeedFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FeedFormat::Auto => "auto",
            FeedFormat::Json => "json",
            FeedFormat::Binary => "binary",
        })
    }
}

/// The tcp feed's doors: how many may connect, who, and for how long idle;
/// and the format its connections send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpFeedSettings {
    /// `--max-feed-connections`: handlers connected at once; more are
    /// closed at accept. Default: [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// `--feed-idle-timeout`: a connection silent this long is closed.
    /// Default: [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// `--feed-token` and `--feed-allow`. Default: open, which is only
    /// accepted on a loopback address.
    pub access: FeedAccess,
    /// `--feed-format`: JSON lines, binary records, or each connection's
    /// first bytes decide. Default: [`FeedFormat::Auto`].
    pub format: FeedFormat,
}

impl Default for TcpFeedSettings {
    fn default() -> Self {
        TcpFeedSettings {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            access: FeedAccess::default(),
            format: FeedFormat::Auto,
        }
    }
}

/// Checks the exposure rule, binds `addr` and starts the feed thread.
pub fn start(addr: SocketAddr, settings: TcpFeedSettings, ctx: FeedContext) -> io::Result<FeedHandle> {
    settings.access.check_exposure(addr).map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
    let listener = StdTcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    // The runtime is built here, so a failure is a start-up error.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    tracing::info!(
        %local_addr,
        max_connections = settings.max_connections,
        idle_timeout = ?settings.idle_timeout,
        format = %settings.format,
        token = settings.access.token.is_some(),
        allow = ?settings.access.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "tcp feed listening for feed handlers"
    );
    if settings.access.token.is_some() && !addr.ip().is_loopback() {
        tracing::warn!(%local_addr, "the feed token travels in clear text: keep the feed port on a trusted network");
    }
    let thread = thread::Builder::new()
        .name("feed-tcp".into())
        .spawn(move || runtime.block_on(accept_loop(listener, settings, ctx)))?;
    Ok(FeedHandle { threads: vec![thread], local_addr: Some(local_addr), declared: None })
}

async fn accept_loop(std_listener: StdTcpListener, settings: TcpFeedSettings, ctx: FeedContext) {
    let listener = match TcpListener::from_std(std_listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "tcp feed: cannot register the listener; the feed is down");
            return;
        }
    };
    let settings = Arc::new(settings);
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut refusals = RefusalLog::default();
    while !ctx.stopping() {
        let accepted = match tokio::time::timeout(POLL, listener.accept()).await {
            Err(_) => continue, // Look at the shutdown flag.
            Ok(accepted) => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off.
                tracing::warn!(error = %e, "feed accept failed");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if !settings.access.allows(&peer) {
            ctx.metrics.feed_refused(FeedRefusal::NotAllowed);
            refusals.log(peer, "not in --feed-allow");
            continue; // Dropping the stream closes it.
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            ctx.metrics.feed_refused(FeedRefusal::Limit);
            refusals.log(peer, "over --max-feed-connections");
            continue;
        };
        ctx.metrics.feed_connections.fetch_add(1, Ordering::Relaxed);
        ctx.metrics.feed_connections_open.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%peer, "feed handler connected");
        let (ctx, settings) = (ctx.clone(), settings.clone());
        tokio::spawn(async move {
            connection::serve(stream, peer, &settings, Publisher::new(ctx.clone())).await;
            ctx.metrics.feed_connections_open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    // Returning drops the runtime, which cancels every connection's task
    // at its next await (each publisher closes its burst as it drops).
}

/// Logs refused connections at most once a second, with how many were
/// refused in between: a flood of them must not flood the log.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    fn log(&mut self, peer: SocketAddr, why: &str) {
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(%peer, suppressed = self.suppressed, "feed connection refused: {why}");
            self.last = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

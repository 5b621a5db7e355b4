//! `--feed tcp://ADDR`: feed handlers connect and send newline-delimited
//! JSON ticks in the normalized schema ([`super::json`]).
//!
//! In: TCP connections on ADDR. Out: ticks through one [`Publisher`] per
//! connection.
//!
//! # One thread, every connection
//! The feed runs on one dedicated OS thread (`feed-tcp`) with its own
//! current-thread tokio runtime: one task accepts, and one task per
//! admitted handler reads its lines ([`connection`]). It never runs on the
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
//!   line is a heartbeat.
//! - Lines over [`MAX_LINE_BYTES`](super::json::MAX_LINE_BYTES) and book lines over
//!   [`MAX_LEVELS_PER_LINE`](super::json::MAX_LEVELS_PER_LINE) levels a
//!   side are feed errors, skipped.
//! - Off loopback, the port needs a token or an allow-list
//!   ([`FeedAccess::check_exposure`]).

pub mod access;
pub mod connection;

use std::io;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
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

/// The tcp feed's doors: how many may connect, who, and for how long idle.
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
}

impl Default for TcpFeedSettings {
    fn default() -> Self {
        TcpFeedSettings {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            access: FeedAccess::default(),
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

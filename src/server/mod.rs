//! The server: binds the front door, starts the pipeline's threads in
//! order, serves until shutdown, and winds everything down within bounds.
//!
//! In: a [`Config`] and a shutdown future. Out: HTTP answers and WebSocket
//! sessions ([`crate::session`]).
//!
//! Start-up order: the declared universe (`--symbols-file`) is interned;
//! the `--record` directory is locked; the listener is bound (clients
//! wait in its backlog until the server runs); the feed starts and binds
//! its own port; then the recorder opens its segment and the engine thread
//! starts. Nothing is written to the record directory before every
//! address is bound. The feed declares its own symbols (synthetic: all of
//! them; replay: the recording's, on its thread, awaited here) before the
//! server accepts anyone, so the first client already finds every declared
//! symbol and can subscribe to it before its first tick. Shutdown (the `shutdown` future resolves, e.g. on
//! SIGINT/SIGTERM): stop accepting, queue close 1001 to every session, let
//! writers flush for up to `--shutdown-grace`, then stop the feed and the
//! engine.
//!
//! - [`routes`]: the HTTP routes (`/ws`, `/replay`, `/metrics`, `/healthz`,
//!   `/symbols`, the page at `/`).
//! - [`page`]: the trading page (clients/js, embedded) and `/recordings`.
//! - [`upgrade`]: what an upgrade request asks for, checked before the 101.
//! - [`admission`]: every accepted connection counted, in total and per IP.
//! - [`fd_limit`]: the open-file limit against `--max-connections`, and
//!   the accept loops' answer to running out of descriptors.
//! - [`origin`]: which browser origins may open a WebSocket.
//! - [`lifecycle`]: thread watching and joining, blocking work within a
//!   bound, signals.
//! - [`tls`]: `--tls-cert`/`--tls-key`: the TLS handshake before HTTP.
//!
//! The front door's bounds, in the order a connection meets them: admitted
//! at accept or closed at once ([`admission`]); then, from accept, at most
//! `--handshake-timeout` to send a request head of at most
//! `--max-header-bytes` and be upgraded ([`serve_http`]); then the
//! upgrade's own checks ([`upgrade`]).
//!
//! The server is the only module that sees the whole [`Config`]; each stage
//! gets its own settings from it. It may import every other module.

pub mod admission;
pub mod fd_limit;
pub mod lifecycle;
pub mod origin;
pub mod page;
pub mod routes;
pub mod tls;
pub mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::engine::{Coalescing, Engine};
use crate::feed::{self, FeedContext, FeedSpec};
use crate::metrics::{LiveGauges, Metrics};
use crate::model::{SymbolError, SymbolTable};
use crate::record::RecordError;
use crate::ring::TickRing;
use crate::session::{SessionCtx, SessionRegistry, SessionSettings};
use admission::{Admission, ConnectionLimits};
use fd_limit::{AcceptErrors, FdBudget};
use lifecycle::{join_within, spawn_watched, ThreadWatch};
use origin::{AllowedOrigins, OriginError};
use routes::Listener;

pub use lifecycle::shutdown_signal;

/// Why the server could not start, or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding `--listen` failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The feed could not start (e.g. its address is taken).
    #[error("cannot start feed {feed}: {source}")]
    Feed {
        /// The feed spec.
        feed: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `--record` could not open its tick log or start its thread.
    #[error("cannot record: {0}")]
    Record(#[from] RecordError),
    /// A name of the declared universe (`--symbols-file`) could not be
    /// interned: invalid, or more than `--max-symbols` (the binary checks
    /// both first; this catches a [`Config`] built in code).
    #[error("cannot declare the symbol universe: {0}")]
    Universe(#[from] SymbolError),
    /// `--record`'s tick log could not be read back to restore the state.
    #[error("cannot restore from the tick log: {0}")]
    Restore(String),
    /// `--publish` could not start its NATS thread.
    #[error("cannot publish: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// A thread could not be spawned.
    #[error("cannot start the engine thread: {0}")]
    Thread(std::io::Error),
    /// `--allowed-origins` holds an entry that is not an origin (the binary
    /// checks first; this catches a [`Config`] built in code).
    #[error(transparent)]
    Origins(#[from] OriginError),
    /// Binding `--metrics-listen` failed.
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The engine thread stopped while the server was serving (a bug: it
    /// panicked). Nothing would reach subscribers any more, so the server
    /// closes every session and exits with an error, for its supervisor to
    /// restart it, rather than keep accepting clients it cannot serve.
    #[error("the engine thread stopped unexpectedly{}; the server shut down", match .0 { Some(m) => format!(" ({m})"), None => String::new() })]
    EngineStopped(Option<String>),
}

/// Longest wait at shutdown for the engine to drain and the recorder to
/// write and sync its last batch.
const RECORDER_GRACE: Duration = Duration::from_secs(10);

/// Longest wait at shutdown for the feed threads, after the engine's.
const FEED_GRACE: Duration = Duration::from_millis(300);

/// Most open connections to `--metrics-listen` (a monitoring port: a few
/// scrapers and probes); more are closed at once.
pub const METRICS_MAX_CONNECTIONS: usize = 64;

/// What the front door shares with every connection.
pub struct ServerCtx {
    /// The configuration.
    pub config: Config,
    /// What sessions share: metrics, the engine handle, the registry.
    pub sessions: Arc<SessionCtx>,
    /// The symbol universe (for `/symbols` and gauges).
    pub symbols: Arc<SymbolTable>,
    /// The ingest ring (for gauges).
    pub ring: Arc<TickRing>,
    /// The origins a browser handshake may come from.
    pub origins: AllowedOrigins,
    /// Every open connection to the main listener, counted from accept:
    /// `--max-connections` in total, `--max-connections-per-ip` each.
    pub limits: Arc<ConnectionLimits>,
    /// Open connections to `--metrics-listen`: [`METRICS_MAX_CONNECTIONS`].
    pub metrics_limits: Arc<ConnectionLimits>,
    /// Permits for `/replay` file checks running on their own threads
    /// ([`upgrade::MAX_REPLAY_CHECKS`]).
    pub replay_checks: Arc<Semaphore>,
    shutdown: watch::Sender<bool>,
}

impl ServerCtx {
    /// Counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.sessions.metrics
    }

    /// Gauges owned by other stages, read now.
    pub fn live_gauges(&self) -> LiveGauges {
        LiveGauges {
            sessions: self.sessions.registry.gauges(),
            ring_depth: self.ring.len(),
            ring_capacity: self.ring.capacity(),
            ring_full: self.ring.full_events(),
            symbols: self.symbols.len(),
            open_connections: self.limits.open(),
        }
    }
}

/// A bound, running server: engine and feed started, listener bound.
pub struct Server {
    listener: TcpListener,
    /// `--metrics-listen`, if set.
    metrics_listener: Option<TcpListener>,
    ctx: Arc<ServerCtx>,
    feed_addr: Option<SocketAddr>,
    /// The engine, then the recorder if any: joined first at shutdown.
    pipeline_threads: Vec<JoinHandle<()>>,
    /// The feed's threads.
    feed_threads: Vec<JoinHandle<()>>,
    stop_feed: Arc<AtomicBool>,
    /// Fires if the engine thread ends before shutdown.
    engine_watch: ThreadWatch,
}

impl Server {
    /// Starts the engine and the feed and binds the listener. Must be called
    /// within a tokio runtime.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let metrics = Arc::new(Metrics::with_trace(config.trace_latency));
        if config.trace_latency > 0 {
            tracing::info!(every = config.trace_latency, "--trace-latency: timing each stage of 1 tick in N");
        }
        let symbols = Arc::new(SymbolTable::default());
        // The declared universe first, in file order, so its ids are the
        // file's order and every name is known before any feed runs.
        for name in &config.universe {
            symbols.intern(name, config.max_symbols)?;
        }
        if !config.universe.is_empty() {
            tracing::info!(symbols = symbols.len(), "symbol universe declared");
        }
        let origins = match &config.allowed_origins {
            Some(entries) => AllowedOrigins::parse(entries)?,
            None => {
                tracing::warn!("no --allowed-origins: WebSocket handshakes from every browser origin are accepted");
                AllowedOrigins::Any
            }
        };
        // -- Start-up order (issue 15): lock the record directory, bind the
        // front door, start the feed (which binds its own port), and only
        // then open the recorder, whose first act is to create this run's
        // segment: a start-up that fails leaves the directory untouched.
        // The engine starts last, so the recorder sees every tick it
        // sequences; until then the feed waits on the ring.
        let mut record_lock = config.record.as_ref().map(|r| crate::record::RecordLock::acquire(&r.dir)).transpose()?;
        // With --record, the run goes on from the tick log already in the
        // directory: every symbol's state and seq (no seq reused), and the
        // epoch if the last run stopped cleanly (see crate::record). The log
        // is read on a blocking thread, before anything is served.
        let mut epoch = crate::model::now_ns();
        let mut restored = Vec::new();
        if let (Some(settings), Some(lock)) = (&config.record, record_lock.as_mut()) {
            let (e, clean) = lock.open_epoch()?;
            epoch = e;
            let (dir, max) = (settings.dir.clone(), config.max_symbols);
            let r = tokio::task::spawn_blocking(move || crate::record::restore(&dir, max))
                .await
                .map_err(|e| ServerError::Restore(e.to_string()))?
                .map_err(|e| ServerError::Restore(e.to_string()))?;
            if !r.topics.is_empty() {
                tracing::info!(
                    symbols = r.topics.len(),
                    ticks = r.ticks,
                    segments = r.segments,
                    ms = r.elapsed.as_millis() as u64,
                    epoch,
                    same_epoch = clean,
                    "restored every symbol's state and seq from the tick log"
                );
            }
            for (name, image) in r.topics {
                restored.push((symbols.intern(&name, config.max_symbols)?, image));
            }
        }
        if let Some(budget) = FdBudget::read(&config) {
            budget.log();
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen { addr: config.listen, source })?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => {
                Some(TcpListener::bind(addr).await.map_err(|source| ServerError::MetricsListen { addr, source })?)
            }
            None => None,
        };
        let ring = Arc::new(TickRing::new(config.ring_capacity));
        let coalescing = Coalescing { interval: config.flush_interval, write_budget: config.write_budget };
        let (mut engine, engine_handle) =
            Engine::new(ring.clone(), symbols.clone(), metrics.clone(), config.book_depth, coalescing, config.slow);
        engine.restore(restored);
        // An edge's seqs are its sequencer's: it learns the epoch from the
        // first image it installs (0 until then).
        let own_epoch = if matches!(config.feed, FeedSpec::Nats(_)) { 0 } else { epoch };
        let mut engine = engine.with_history(config.history).with_epoch(own_epoch);
        let stop_feed = Arc::new(AtomicBool::new(false));
        let feed_ctx = FeedContext {
            ring: ring.clone(),
            symbols: symbols.clone(),
            metrics: metrics.clone(),
            max_symbols: config.max_symbols,
            shutdown: stop_feed.clone(),
        };
        let feed =
            feed::start(&config.feed, &config.synthetic, &config.replay, &config.tcp_feed, &config.nats, feed_ctx)
                .map_err(|source| ServerError::Feed { feed: config.feed.to_string(), source })?;
        let stop_early = || {
            stop_feed.store(true, Ordering::Relaxed);
            ring.close();
        };
        let mut recorder = None;
        if let (Some(settings), Some(lock)) = (&config.record, record_lock) {
            let (tap, r) = crate::record::start(settings.clone(), lock, symbols.clone(), metrics.clone())
                .inspect_err(|_| stop_early())?;
            tracing::info!(dir = %settings.dir.display(), "recording every tick to the tick log");
            engine = engine.with_recorder(tap);
            recorder = Some(r.thread);
        }
        let mut sequencer = None;
        if let Some(url) = &config.publish {
            let settings = crate::cluster::NatsSettings { url: url.clone(), ..config.nats.clone() };
            let handle = engine_handle.clone();
            let images: crate::cluster::ImageSource =
                Arc::new(move |symbol, reply| handle.send(crate::engine::Command::Image { symbol, reply }));
            let (tap, s) = crate::cluster::start_sequencer(settings, epoch, symbols.clone(), metrics.clone(), images)
                .inspect_err(|_| stop_early())?;
            tracing::info!(url = %url, epoch, "sequencer: every sequenced tick is published to NATS");
            engine = engine.with_publisher(tap);
            sequencer = Some(s.thread);
        }
        let (engine_thread, engine_watch) =
            spawn_watched("engine", move || engine.run()).inspect_err(|_| stop_early()).map_err(ServerError::Thread)?;
        // The engine first, then the recorder and the NATS publisher it
        // feeds: shutdown waits for these (the recorder's last flush, the
        // publisher's last flush) before the feed threads.
        let mut pipeline_threads = vec![engine_thread];
        pipeline_threads.extend(recorder);
        pipeline_threads.extend(sequencer);
        // -- End of the start-up order.
        if let Some(declared) = feed.declared {
            // The feed declares its universe on its own thread (a replay
            // reads its recording's symbols): serve only once every one is
            // known, so no client is told a symbol of it is unknown.
            let _ = declared.await;
        }
        let (shutdown, shutdown_rx) = watch::channel(false);
        match &config.auth {
            Some(verifier) => {
                tracing::info!(keys = ?verifier, "authentication on: /ws, /replay and /symbols need a token")
            }
            None => tracing::warn!(
                "authentication is off: anyone who reaches the listen address reads every symbol \
                 (--auth-jwt-secret or --auth-public-key turn it on)"
            ),
        }
        let sessions = Arc::new(SessionCtx {
            settings: session_settings(&config),
            auth: config.auth.clone(),
            registry: Arc::new(SessionRegistry::new(metrics.clone())),
            metrics,
            engine: engine_handle,
            shutdown: shutdown_rx,
            rewind: config.record.as_ref().map(|r| crate::session::rewind::RewindSettings {
                dir: r.dir.clone(),
                max_sessions: config.max_replay_sessions,
                mark: config.slow.conflate_above / 2,
                history: config.history.enabled(),
            }),
        });
        let limits = ConnectionLimits::new(config.max_connections, config.max_connections_per_ip);
        let metrics_limits = ConnectionLimits::new(METRICS_MAX_CONNECTIONS, METRICS_MAX_CONNECTIONS);
        let replay_checks = Arc::new(Semaphore::new(upgrade::MAX_REPLAY_CHECKS));
        let ctx = Arc::new(ServerCtx {
            config,
            sessions,
            symbols,
            ring,
            origins,
            limits,
            metrics_limits,
            replay_checks,
            shutdown,
        });
        Ok(Server {
            listener,
            metrics_listener,
            ctx,
            feed_addr: feed.local_addr,
            pipeline_threads,
            feed_threads: feed.threads,
            stop_feed,
            engine_watch,
        })
    }

    /// The HTTP/WebSocket address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.ctx.config.listen)
    }

    /// The `--metrics-listen` address actually bound, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The tcp feed's bound address, if the feed is `tcp://`.
    pub fn feed_addr(&self) -> Option<SocketAddr> {
        self.feed_addr
    }

    /// The shared context (metrics, symbols), for tests and embedding.
    pub fn context(&self) -> Arc<ServerCtx> {
        self.ctx.clone()
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully. Also
    /// shuts down, and returns [`ServerError::EngineStopped`], if the
    /// engine thread ends first.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let Server {
            listener, metrics_listener, ctx, pipeline_threads, feed_threads, stop_feed, mut engine_watch, ..
        } = self;
        let scheme = if ctx.config.tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), scheme, "tickcast listening");
        let tls = ctx.config.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        if let Some(metrics_listener) = metrics_listener {
            tracing::info!(addr = %metrics_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /metrics and /healthz");
            tokio::spawn(serve_metrics(ctx.clone(), metrics_listener));
        }
        tokio::pin!(shutdown);
        let mut outcome = Ok(());
        let mut accept_errors = AcceptErrors::default();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                panic = engine_watch.ended() => {
                    tracing::error!(panic = panic.as_deref().unwrap_or(""), "the engine thread stopped: closing every session and exiting");
                    outcome = Err(ServerError::EngineStopped(panic));
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => admit(&ctx, &ctx.limits, stream, peer, Listener::Main, tls.as_ref()),
                    // Out of file descriptors and the like: refuse what is
                    // pending, back off, keep serving.
                    Err(e) => accept_errors.handle(&listener, e, ctx.metrics(), "accept").await,
                },
            }
        }
        drop(listener);
        let started = Instant::now();
        let registry = &ctx.sessions.registry;
        tracing::info!(sessions = registry.len(), "shutting down: closing sessions with 1001");
        let _ = ctx.shutdown.send(true);
        while !registry.is_empty() && started.elapsed() < ctx.config.shutdown_grace {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_feed.store(true, Ordering::Relaxed);
        ctx.ring.close();
        join_within(pipeline_threads, feed_threads, RECORDER_GRACE, FEED_GRACE).await;
        if let Some(table) = ctx.metrics().trace.table() {
            tracing::info!("{table}");
        }
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "shutdown complete");
        outcome
    }
}

/// The session limits, from the whole configuration.
fn session_settings(config: &Config) -> SessionSettings {
    SessionSettings {
        max_message_bytes: config.max_message_bytes,
        ping_interval: config.ping_interval,
        pong_timeout: config.pong_timeout,
        shutdown_grace: config.shutdown_grace,
        slow_timeout: config.slow.slow_timeout,
        book_depth: config.book_depth,
        auth_expiry_warning: config.auth_expiry_warning,
        disconnect_above: config.slow.disconnect_above,
        max_control_bytes: config.max_control_bytes,
        max_requests_per_sec: config.max_requests_per_sec,
        request_burst: config.request_burst,
    }
}

/// Binds and runs a server until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    Server::bind(config).await?.run(shutdown).await
}

/// The accept loop of `--metrics-listen`, until shutdown.
async fn serve_metrics(ctx: Arc<ServerCtx>, listener: TcpListener) {
    let mut shutdown = ctx.shutdown.subscribe();
    let mut accept_errors = AcceptErrors::default();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => admit(&ctx, &ctx.metrics_limits, stream, peer, Listener::Metrics, None),
                Err(e) => accept_errors.handle(&listener, e, ctx.metrics(), "metrics accept").await,
            },
        }
    }
}

/// A connection just accepted: counted against `limits` and served, or
/// closed at once if a limit is reached. Reads nothing and never waits.
fn admit(
    ctx: &Arc<ServerCtx>,
    limits: &Arc<ConnectionLimits>,
    stream: TcpStream,
    peer: SocketAddr,
    at: Listener,
    tls: Option<&tokio_rustls::TlsAcceptor>,
) {
    match limits.admit(peer.ip()) {
        Ok(admission) => {
            tokio::spawn(serve_conn(ctx.clone(), stream, admission, at, tls.cloned()));
        }
        Err(why) => {
            ctx.metrics().connections_rejected.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, reason = %why, "connection refused at accept");
            admission::refuse(stream, why);
        }
    }
}

/// Serves one admitted connection: with `--tls-cert`, its TLS handshake
/// first, then HTTP ([`serve_http`]), both within one
/// `--handshake-timeout` from accept.
async fn serve_conn(
    ctx: Arc<ServerCtx>,
    stream: TcpStream,
    admission: Admission,
    at: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    // Latency matters more than packet count: our writes are already batched.
    let _ = stream.set_nodelay(true);
    let within = ctx.config.handshake_timeout;
    match tls {
        None => serve_http(ctx, stream, admission, at, within).await,
        Some(acceptor) => {
            let start = tokio::time::Instant::now();
            if let Ok(Some(stream)) = tokio::time::timeout(within, tls::accept(&acceptor, stream)).await {
                let left = within.saturating_sub(start.elapsed());
                serve_http(ctx, stream, admission, at, left).await;
            }
        }
    }
}

/// Serves one admitted HTTP connection (plain TCP, or TLS over it) until
/// it ends, is upgraded, or the server shuts down. The whole HTTP phase,
/// to the 101 being written, is bounded by `within` (what is left of
/// `--handshake-timeout`), and each request head by `--max-header-bytes`
/// (hyper answers 431 above it); a connection that is not upgraded by then
/// is closed, keep-alive ones included.
async fn serve_http<S>(ctx: Arc<ServerCtx>, stream: S, admission: Admission, at: Listener, within: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut shutdown = ctx.shutdown.subscribe();
    let service_ctx = ctx.clone();
    let service = service_fn(move |mut req| {
        let ctx = service_ctx.clone();
        // An upgrade takes a clone along to the session: the connection is
        // counted until its socket closes.
        req.extensions_mut().insert(admission.clone());
        async move { Ok::<_, Infallible>(routes::route(ctx, req, at).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(within)
        .max_buf_size(ctx.config.max_header_bytes)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        result = tokio::time::timeout(within, conn) => match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "http connection ended with an error"),
            Err(_) => tracing::debug!(timeout = ?within, "http connection closed at the handshake timeout"),
        },
        _ = shutdown.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_that_stopped_is_reported_with_its_panic() {
        let e = ServerError::EngineStopped(Some("lost the ring".into()));
        assert_eq!(e.to_string(), "the engine thread stopped unexpectedly (lost the ring); the server shut down");
        let e = ServerError::EngineStopped(None);
        assert_eq!(e.to_string(), "the engine thread stopped unexpectedly; the server shut down");
    }
}

//! The server: binds the front door, starts the pipeline's threads in
//! order, serves until shutdown, and winds everything down within bounds.
//!
//! In: a [`Config`] and a shutdown future. Out: HTTP answers and WebSocket
//! sessions ([`crate::session`]).
//!
//! Start-up order: the declared universe (`--symbols-file`) is interned,
//! then the engine thread (and the recorder it feeds) starts, then the
//! feed, which declares its own symbols (synthetic: all of them; replay:
//! the recording's, on its thread, awaited here), then the listener, so
//! the first client already finds every declared symbol and can subscribe
//! to it before its first tick. Shutdown (the `shutdown` future resolves, e.g. on
//! SIGINT/SIGTERM): stop accepting, queue close 1001 to every session, let
//! writers flush for up to `--shutdown-grace`, then stop the feed and the
//! engine.
//!
//! - [`routes`]: the HTTP routes (`/ws`, `/replay`, `/metrics`, `/healthz`,
//!   `/symbols`).
//! - [`upgrade`]: what an upgrade request asks for, checked before the 101.
//! - [`lifecycle`]: thread watching and joining, signals.
//!
//! The server is the only module that sees the whole [`Config`]; each stage
//! gets its own settings from it. It may import every other module.

pub mod lifecycle;
pub mod routes;
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
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::config::Config;
use crate::engine::{Coalescing, Engine};
use crate::feed::{self, FeedContext};
use crate::metrics::{LiveGauges, Metrics};
use crate::model::{SymbolError, SymbolTable};
use crate::record::RecordError;
use crate::ring::TickRing;
use crate::session::{SessionCtx, SessionRegistry, SessionSettings};
use lifecycle::{join_within, spawn_watched, ThreadWatch};

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
    /// A thread could not be spawned.
    #[error("cannot start the engine thread: {0}")]
    Thread(std::io::Error),
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
        }
    }
}

/// A bound, running server: engine and feed started, listener bound.
pub struct Server {
    listener: TcpListener,
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
        let metrics = Arc::new(Metrics::default());
        let symbols = Arc::new(SymbolTable::default());
        // The declared universe first, in file order, so its ids are the
        // file's order and every name is known before any feed runs.
        for name in &config.universe {
            symbols.intern(name, config.max_symbols)?;
        }
        if !config.universe.is_empty() {
            tracing::info!(symbols = symbols.len(), "symbol universe declared");
        }
        let ring = Arc::new(TickRing::new(config.ring_capacity));
        let coalescing = Coalescing { interval: config.flush_interval, write_budget: config.write_budget };
        let (mut engine, engine_handle) =
            Engine::new(ring.clone(), symbols.clone(), metrics.clone(), config.book_depth, coalescing, config.slow);
        let mut pipeline_threads = Vec::new();
        let mut recorder = None;
        if let Some(settings) = &config.record {
            let (tap, r) = crate::record::start(settings.clone(), symbols.clone(), metrics.clone())?;
            tracing::info!(dir = %settings.dir.display(), "recording every tick to the tick log");
            engine = engine.with_recorder(tap);
            recorder = Some(r.thread);
        }
        let (engine_thread, engine_watch) =
            spawn_watched("engine", move || engine.run()).map_err(ServerError::Thread)?;
        // The engine first, then the recorder it feeds: shutdown waits for
        // these two (the recorder's last flush) before the feed threads.
        pipeline_threads.push(engine_thread);
        pipeline_threads.extend(recorder);
        let stop_feed = Arc::new(AtomicBool::new(false));
        let feed_ctx = FeedContext {
            ring: ring.clone(),
            symbols: symbols.clone(),
            metrics: metrics.clone(),
            max_symbols: config.max_symbols,
            shutdown: stop_feed.clone(),
        };
        let feed = match feed::start(&config.feed, &config.synthetic, &config.replay, feed_ctx) {
            Ok(f) => f,
            Err(source) => {
                ring.close();
                return Err(ServerError::Feed { feed: config.feed.to_string(), source });
            }
        };
        if let Some(declared) = feed.declared {
            // The feed declares its universe on its own thread (a replay
            // reads its recording's symbols): listen only once every one is
            // known, so no client is told a symbol of it is unknown.
            let _ = declared.await;
        }
        let listener = match TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(source) => {
                stop_feed.store(true, Ordering::Relaxed);
                ring.close();
                return Err(ServerError::Listen { addr: config.listen, source });
            }
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let sessions = Arc::new(SessionCtx {
            settings: session_settings(&config),
            registry: Arc::new(SessionRegistry::new(metrics.clone())),
            metrics,
            engine: engine_handle,
            shutdown: shutdown_rx,
        });
        let ctx = Arc::new(ServerCtx { config, sessions, symbols, ring, shutdown });
        Ok(Server {
            listener,
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
        let Server { listener, ctx, pipeline_threads, feed_threads, stop_feed, mut engine_watch, .. } = self;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "tickcast listening");
        tokio::pin!(shutdown);
        let mut outcome = Ok(());
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                panic = engine_watch.ended() => {
                    tracing::error!(panic = panic.as_deref().unwrap_or(""), "the engine thread stopped: closing every session and exiting");
                    outcome = Err(ServerError::EngineStopped(panic));
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_http(ctx.clone(), stream));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
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

/// Serves one HTTP connection until it ends, is upgraded, or the server
/// shuts down.
async fn serve_http(ctx: Arc<ServerCtx>, stream: TcpStream) {
    // Latency matters more than packet count: our writes are already batched.
    let _ = stream.set_nodelay(true);
    let mut shutdown = ctx.shutdown.subscribe();
    let service_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = service_ctx.clone();
        async move { Ok::<_, Infallible>(routes::route(ctx, req)) }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::select! {
        result = conn => if let Err(e) = result {
            tracing::debug!(error = %e, "http connection ended with an error");
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

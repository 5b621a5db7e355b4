//! HTTP front door: `/ws` upgrades, `/metrics`, `/healthz`, `/symbols`, and
//! the server's lifecycle (bind, run, graceful shutdown).
//!
//! In: TCP connections on `--listen`. Out: WebSocket sessions handed to
//! [`session::run`], and plain HTTP answers.
//!
//! Start-up order: the engine thread, then the feed, then the listener, so
//! the first client already finds every synthetic symbol. Shutdown (the
//! `shutdown` future resolves, e.g. on SIGINT/SIGTERM): stop accepting,
//! queue close 1001 to every session, let writers flush for up to
//! `--shutdown-grace`, then stop the feed and the engine.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, SEC_WEBSOCKET_PROTOCOL};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::codec::Encoding;
use crate::config::Config;
use crate::engine::{Engine, EngineHandle, SlowMode};
use crate::feed::{self, FeedContext};
use crate::metrics::{LiveGauges, Metrics};
use crate::ring::TickRing;
use crate::session::{self, SessionShared};
use crate::tick::SymbolTable;

/// Why the server could not start.
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
    /// `--record` could not open its tick log.
    #[error("cannot record: {0}")]
    Record(String),
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

/// Tells when a thread ends, and whether it panicked, without joining it:
/// the server watches its engine thread with it.
pub struct ThreadWatch {
    ended: tokio::sync::oneshot::Receiver<Option<String>>,
}

impl ThreadWatch {
    /// Resolves once the thread has ended: `Some(message)` if it panicked.
    pub async fn ended(&mut self) -> Option<String> {
        (&mut self.ended).await.unwrap_or_else(|_| Some("the thread ended without a word".into()))
    }
}

/// Spawns a named thread running `f`, and a [`ThreadWatch`] on it.
pub fn spawn_watched<F>(name: &str, f: F) -> std::io::Result<(JoinHandle<()>, ThreadWatch)>
where
    F: FnOnce() + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let handle = std::thread::Builder::new().name(name.into()).spawn(move || {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(outcome.err().map(|p| panic_message(&*p)));
    })?;
    Ok((handle, ThreadWatch { ended: rx }))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// Longest wait at shutdown for the engine to drain and the recorder to
/// write and sync its last batch.
const RECORDER_GRACE: Duration = Duration::from_secs(10);

/// A registered session and its socket.
type LiveSession = (Arc<SessionShared>, Arc<TcpStream>);

/// What every connection and session shares.
pub struct ServerCtx {
    /// The configuration.
    pub config: Config,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The way to the engine.
    pub engine: EngineHandle,
    /// The symbol universe.
    pub symbols: Arc<SymbolTable>,
    /// The ingest ring (for gauges).
    pub ring: Arc<TickRing>,
    /// Live sessions, for gauges and shutdown.
    /// Live sessions and their sockets (for the kernel send-queue gauge).
    sessions: Mutex<HashMap<u64, LiveSession>>,
    next_id: AtomicU64,
    shutdown: watch::Sender<bool>,
}

/// Removes a session from the registry when its task ends.
pub struct SessionGuard {
    ctx: Arc<ServerCtx>,
    id: u64,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.ctx.sessions.lock().remove(&self.id);
        self.ctx.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ServerCtx {
    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Adds a session to the registry until the guard drops.
    pub fn register_session(self: &Arc<Self>, session: Arc<SessionShared>, socket: Arc<TcpStream>) -> SessionGuard {
        let id = session.id;
        self.sessions.lock().insert(id, (session, socket));
        self.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        SessionGuard { ctx: self.clone(), id }
    }

    /// Resolves (changes) when the server starts shutting down.
    pub fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Gauges owned by other stages, read now. Each session's buffered
    /// bytes are its outbox count plus its socket's kernel send queue
    /// (one `SIOCOUTQ` per session per scrape, never per message).
    pub fn live_gauges(&self) -> LiveGauges {
        let (mut total, mut max, mut kernel) = (0u64, 0u64, 0u64);
        let mut buffered = crate::metrics::BufferedHistogram::default();
        let (mut closing, mut conflating) = (0usize, 0usize);
        // Snapshot the registry, then do the per-socket ioctls without the
        // lock, so a scrape never holds up sessions registering or leaving.
        let sessions: Vec<LiveSession> = self.sessions.lock().values().cloned().collect();
        for (s, socket) in &sessions {
            let q = s.queued_bytes() as u64;
            let k = crate::writer::kernel_queued_bytes(socket).unwrap_or(0) as u64;
            total += q;
            max = max.max(q);
            kernel += k;
            buffered.record(q + k);
            let is_closing = s.is_closing();
            closing += usize::from(is_closing);
            conflating += usize::from(!is_closing && s.is_conflating());
        }
        let open = sessions.len() - closing - conflating;
        LiveGauges {
            kernel_queued_bytes: kernel,
            buffered,
            sessions_open: open,
            sessions_conflating: conflating,
            sessions_closing: closing,
            ring_depth: self.ring.len(),
            ring_capacity: self.ring.capacity(),
            ring_full: self.ring.full_events(),
            symbols: self.symbols.len(),
            queued_bytes: total,
            max_session_queued_bytes: max,
        }
    }
}

/// A bound, running server: engine and feed started, listener bound.
pub struct Server {
    listener: TcpListener,
    ctx: Arc<ServerCtx>,
    feed_addr: Option<SocketAddr>,
    /// The engine, the recorder if any, then the feed threads.
    threads: Vec<JoinHandle<()>>,
    /// How many of `threads` are the engine and the recorder.
    record_threads: usize,
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
        let ring = Arc::new(TickRing::new(config.ring_capacity));
        let (mut engine, handle) = Engine::new(
            ring.clone(),
            symbols.clone(),
            metrics.clone(),
            config.book_depth,
            crate::engine::Coalescing { interval: config.flush_interval, write_budget: config.write_budget },
            config.slow,
        );
        let mut recorder = None;
        if let Some(settings) = &config.record {
            let (tap, r) = crate::record::start(settings.clone(), symbols.clone(), metrics.clone())
                .map_err(|e| ServerError::Record(e.to_string()))?;
            tracing::info!(dir = %settings.dir.display(), "recording every tick to the tick log");
            engine = engine.with_recorder(tap);
            recorder = Some(r.thread);
        }
        let (engine_thread, engine_watch) =
            spawn_watched("engine", move || engine.run()).map_err(ServerError::Thread)?;
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
        let listener = match TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(source) => {
                stop_feed.store(true, Ordering::Relaxed);
                ring.close();
                return Err(ServerError::Listen { addr: config.listen, source });
            }
        };
        // The engine first, then the recorder it feeds: shutdown waits for
        // these two (the recorder's last flush) before the feed threads.
        let mut threads = vec![engine_thread];
        let record_threads = 1 + usize::from(recorder.is_some());
        threads.extend(recorder);
        threads.extend(feed.threads);
        let (shutdown, _) = watch::channel(false);
        let ctx = Arc::new(ServerCtx {
            config,
            metrics,
            engine: handle,
            symbols,
            ring,
            sessions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            shutdown,
        });
        Ok(Server { listener, ctx, feed_addr: feed.local_addr, threads, record_threads, stop_feed, engine_watch })
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
        let Server { listener, ctx, threads, record_threads, stop_feed, mut engine_watch, .. } = self;
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
        let open = ctx.sessions.lock().len();
        tracing::info!(sessions = open, "shutting down: closing sessions with 1001");
        let _ = ctx.shutdown.send(true);
        while !ctx.sessions.lock().is_empty() && started.elapsed() < ctx.config.shutdown_grace {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_feed.store(true, Ordering::Relaxed);
        ctx.ring.close();
        // Join on a plain thread, not spawn_blocking: the runtime waits for
        // its blocking tasks when it is dropped, and a feed thread stuck in
        // a read must not hold the process past the grace period.
        // The recorder gets up to RECORDER_GRACE for its last write and
        // fsync; the feed threads 300 ms more.
        let (engine_tx, engine_joined) = tokio::sync::oneshot::channel();
        let (joined_tx, joined) = tokio::sync::oneshot::channel();
        let _ = std::thread::Builder::new().name("join".into()).spawn(move || {
            let mut engine_tx = Some(engine_tx);
            for (i, t) in threads.into_iter().enumerate() {
                if i == record_threads {
                    if let Some(tx) = engine_tx.take() {
                        let _ = tx.send(());
                    }
                }
                let _ = t.join();
            }
            if let Some(tx) = engine_tx.take() {
                let _ = tx.send(());
            }
            let _ = joined_tx.send(());
        });
        let _ = tokio::time::timeout(RECORDER_GRACE, engine_joined).await;
        let _ = tokio::time::timeout(Duration::from_millis(300), joined).await;
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "shutdown complete");
        outcome
    }
}

/// Binds and runs a server until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    Server::bind(config).await?.run(shutdown).await
}

async fn serve_http(ctx: Arc<ServerCtx>, stream: TcpStream) {
    // Latency matters more than packet count: our writes are already batched.
    let _ = stream.set_nodelay(true);
    let mut shutdown = ctx.shutdown_rx();
    let service_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let ctx = service_ctx.clone();
        async move { Ok::<_, Infallible>(route(ctx, req)) }
    });
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::select! {
        result = conn => if let Err(e) = result {
            tracing::debug!(error = %e, "http connection ended with an error");
        },
        _ = shutdown.changed() => {}
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn route(ctx: Arc<ServerCtx>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    match req.uri().path() {
        "/ws" => upgrade(ctx, req, false),
        "/replay" => upgrade(ctx, req, true),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/metrics" => {
            let mut response = text(StatusCode::OK, ctx.metrics.render(&ctx.live_gauges()));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
            response
        }
        "/symbols" => {
            let names: Vec<String> = ctx.symbols.names().iter().map(|s| s.to_string()).collect();
            let mut response = text(StatusCode::OK, serde_json::to_vec(&names).unwrap_or_default());
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found: try /ws, /replay, /metrics, /healthz, /symbols\n"),
    }
}

/// The valid encodings, for error messages.
fn valid_encodings() -> String {
    let names: Vec<&str> = Encoding::ALL.iter().map(|e| e.name()).collect();
    let protocols: Vec<&str> = Encoding::ALL.iter().map(|e| e.subprotocol()).collect();
    format!("valid encodings are {} (?encoding=) or Sec-WebSocket-Protocol {}", names.join(", "), protocols.join(", "))
}

/// Picks the encoding from `?encoding=` or `Sec-WebSocket-Protocol`, and the
/// subprotocol to echo (a browser that offered one requires the echo).
pub fn choose_encoding(query: Option<&str>, protocols: Option<&str>) -> Result<(Encoding, Option<Encoding>), String> {
    let from_query = match query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("encoding="))) {
        Some(name) => match Encoding::from_name(name) {
            Some(e) => Some(e),
            None => {
                let name: String = name.chars().take(32).collect();
                return Err(format!("unknown encoding {name:?}: {}", valid_encodings()));
            }
        },
        None => None,
    };
    let offered: Vec<&str> = protocols.map(|p| p.split(',').map(str::trim).collect()).unwrap_or_default();
    let from_header = offered.iter().find_map(|p| Encoding::from_subprotocol(p));
    match (from_query, from_header) {
        (Some(q), _) => {
            let echo = offered.iter().any(|p| Encoding::from_subprotocol(p) == Some(q)).then_some(q);
            if !offered.is_empty() && echo.is_none() {
                return Err(format!(
                    "?encoding={} conflicts with Sec-WebSocket-Protocol {:?}: {}",
                    q.name(),
                    offered.join(", "),
                    valid_encodings()
                ));
            }
            Ok((q, echo))
        }
        (None, Some(h)) => Ok((h, Some(h))),
        (None, None) if !offered.is_empty() => {
            Err(format!("unknown Sec-WebSocket-Protocol {:?}: {}", offered.join(", "), valid_encodings()))
        }
        (None, None) => Ok((Encoding::Msgpack, None)),
    }
}

/// Picks the client's slow-consumer policy from `?slow=` (default
/// `conflate`). Either choice stays within the operator's flags:
/// `disconnect` only makes the ladder stricter.
pub fn choose_slow_mode(query: Option<&str>) -> Result<SlowMode, String> {
    match query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("slow="))) {
        None | Some("conflate") => Ok(SlowMode::Conflate),
        Some("disconnect") => Ok(SlowMode::Disconnect),
        Some(other) => {
            let other: String = other.chars().take(64).collect();
            Err(format!("unknown slow-consumer policy {other:?}: valid policies are conflate, disconnect (?slow=)"))
        }
    }
}

/// Upgrades `/ws` (live) or `/replay` (a private replay) to a session.
fn upgrade(ctx: Arc<ServerCtx>, mut req: Request<Incoming>, replay: bool) -> Response<Full<Bytes>> {
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        ctx.metrics.http_rejected.fetch_add(1, Ordering::Relaxed);
        return text(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade request\n");
    }
    let protocols = req.headers().get(SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok());
    let chosen = choose_encoding(req.uri().query(), protocols)
        .and_then(|(encoding, echo)| Ok((encoding, echo, choose_slow_mode(req.uri().query())?)));
    let (encoding, echo, slow) = match chosen {
        Ok(choice) => choice,
        Err(message) => {
            ctx.metrics.http_rejected.fetch_add(1, Ordering::Relaxed);
            return text(StatusCode::BAD_REQUEST, format!("{message}\n"));
        }
    };
    if ctx.metrics.connections.load(Ordering::Relaxed) >= ctx.config.max_connections as i64 {
        ctx.metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
        return text(StatusCode::SERVICE_UNAVAILABLE, "too many connections: try again later\n");
    }
    let replay = if replay {
        let request = match crate::replay::parse_request(ctx.config.replay_dir.as_deref(), req.uri().query()) {
            Ok(r) => r,
            Err(refusal) => {
                ctx.metrics.http_rejected.fetch_add(1, Ordering::Relaxed);
                return text(refusal.status, format!("{}\n", refusal.message));
            }
        };
        let Some(slot) = crate::replay::ReplaySlot::acquire(&ctx.metrics, ctx.config.max_replay_sessions) else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many replay sessions ({}): try again later\n", ctx.config.max_replay_sessions),
            );
        };
        Some(crate::replay::ReplaySession { request, slot })
    } else {
        None
    };
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(e) => {
            ctx.metrics.http_rejected.fetch_add(1, Ordering::Relaxed);
            return text(StatusCode::BAD_REQUEST, format!("bad WebSocket upgrade: {e}\n"));
        }
    };
    ctx.metrics.connections.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(ws) => ws.into_inner().into_inner(),
            Err(e) => {
                ctx.metrics.connections.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                // The registry guard inside the session now owns the count.
                session::run(ctx, parts.io.into_inner(), parts.read_buf, encoding, slow, replay).await;
            }
            Err(_) => {
                ctx.metrics.connections.fetch_sub(1, Ordering::Relaxed);
                tracing::error!("upgraded connection is not a TCP stream");
            }
        }
    });
    let (mut parts, _) = response.into_parts();
    if let Some(e) = echo {
        parts.headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(e.subprotocol()));
    }
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Raises the open-file limit to its hard maximum, so thousands of
/// subscribers do not hit the usual soft limit of 1024.
#[allow(unsafe_code)]
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 && limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            tracing::warn!("could not raise the open-file limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watched_thread_that_panics_is_reported_with_its_message() {
        let (handle, mut watch) = spawn_watched("doomed", || panic!("lost the ring")).unwrap();
        assert_eq!(watch.ended().await.as_deref(), Some("lost the ring"));
        assert!(handle.join().is_ok(), "the panic was caught on the thread");
        let (_, mut watch) = spawn_watched("fine", || {}).unwrap();
        assert_eq!(watch.ended().await, None, "a thread that returns reports no panic");
        let e = ServerError::EngineStopped(Some("lost the ring".into()));
        assert_eq!(e.to_string(), "the engine thread stopped unexpectedly (lost the ring); the server shut down");
    }

    #[test]
    fn encoding_comes_from_query_or_subprotocol() {
        assert_eq!(choose_encoding(None, None), Ok((Encoding::Msgpack, None)));
        assert_eq!(choose_encoding(Some("encoding=json"), None), Ok((Encoding::Json, None)));
        assert_eq!(
            choose_encoding(None, Some("foo, tickcast.protobuf")),
            Ok((Encoding::Protobuf, Some(Encoding::Protobuf)))
        );
        assert_eq!(
            choose_encoding(Some("x=1&encoding=json"), Some("tickcast.json")),
            Ok((Encoding::Json, Some(Encoding::Json)))
        );
        let err = choose_encoding(Some("encoding=xml"), None).unwrap_err();
        assert!(err.contains("\"xml\"") && err.contains("msgpack, protobuf, json"), "{err}");
        assert!(choose_encoding(None, Some("graphql-ws")).is_err());
        assert!(choose_encoding(Some("encoding=json"), Some("tickcast.msgpack")).is_err());
    }

    #[test]
    fn slow_policy_comes_from_the_query() {
        assert_eq!(choose_slow_mode(None), Ok(SlowMode::Conflate));
        assert_eq!(choose_slow_mode(Some("encoding=json")), Ok(SlowMode::Conflate));
        assert_eq!(choose_slow_mode(Some("encoding=json&slow=disconnect")), Ok(SlowMode::Disconnect));
        assert_eq!(choose_slow_mode(Some("slow=conflate")), Ok(SlowMode::Conflate));
        let err = choose_slow_mode(Some("slow=drop")).unwrap_err();
        assert!(err.contains("\"drop\"") && err.contains("conflate, disconnect"), "{err}");
    }
}

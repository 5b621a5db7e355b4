//! The HTTP routes, one table: each path, which listener serves it, what it
//! serves.
//!
//! Everything but `GET` is refused (405); an unknown path gets 404 naming
//! the routes that exist on that listener. With `--metrics-listen`, the
//! admin routes (`/metrics`) move to that listener, which serves only them
//! and `/healthz`.
//!
//! `/` and `/assets/*` serve the trading page, embedded in the binary
//! ([`super::page`]).
//!
//! No handler touches a file on an async worker: `/healthz`, `/symbols`
//! and the page read memory; `/metrics` reads `/proc/self/stat`, which the
//! kernel answers from memory without ever blocking on a disk, so it stays
//! inline; `/replay` checks its recording on a thread of its own
//! ([`super::upgrade`]), and `/recordings` reads its directory the same way.
//!
//! With authentication on, `/ws`, `/replay`, `/symbols` and `/recordings`
//! need a token (401 without one; `/symbols` then lists only the symbols
//! the token is entitled to, `/recordings` only the recordings). The page
//! itself is public: it holds no data, and takes its token from `?token=`. `/metrics` and `/healthz` are for operators and need none:
//! serve them on `--metrics-listen`, off the public address.

use std::future::{ready, Future};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::page;
use super::upgrade::{authenticate, unauthorized, upgrade};
use super::ServerCtx;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `--listen`: clients.
    Main,
    /// `--metrics-listen`: monitoring.
    Metrics,
}

/// Where a route is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    /// On the main listener only.
    Main,
    /// On `--metrics-listen` if set, else on the main listener.
    Admin,
    /// On both.
    Both,
}

impl Served {
    fn on(self, listener: Listener, metrics_listen: bool) -> bool {
        match (self, listener) {
            (Served::Both, _) => true,
            (Served::Main, l) => l == Listener::Main,
            (Served::Admin, Listener::Main) => !metrics_listen,
            (Served::Admin, Listener::Metrics) => true,
        }
    }
}

/// A route's answer, computed now or later (`/ws` and `/replay` may wait on
/// their checks).
type Answer = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;

/// A route's handler.
type Handler = fn(Arc<ServerCtx>, Request<Incoming>) -> Answer;

/// Every route: its path, where it is served and its handler.
const ROUTES: &[(&str, Served, Handler)] = &[
    ("/ws", Served::Main, |ctx, req| Box::pin(upgrade(ctx, req, false))),
    ("/replay", Served::Main, |ctx, req| Box::pin(upgrade(ctx, req, true))),
    ("/metrics", Served::Admin, |ctx, _| Box::pin(ready(metrics(&ctx)))),
    ("/healthz", Served::Both, |_, _| Box::pin(ready(text(StatusCode::OK, "ok\n")))),
    ("/symbols", Served::Main, |ctx, req| Box::pin(ready(symbols(&ctx, &req)))),
    ("/", Served::Main, |_, _| Box::pin(ready(page::serve(&page::INDEX_HTML)))),
    ("/assets/app.js", Served::Main, |_, _| Box::pin(ready(page::serve(&page::APP_JS)))),
    ("/assets/app.css", Served::Main, |_, _| Box::pin(ready(page::serve(&page::APP_CSS)))),
    ("/recordings", Served::Main, |ctx, req| Box::pin(page::recordings(ctx, req))),
];

/// Answers one HTTP request that came in on `listener`.
pub async fn route(ctx: Arc<ServerCtx>, req: Request<Incoming>, listener: Listener) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    let metrics_listen = ctx.config.metrics_listen.is_some();
    let here = ROUTES.iter().filter(|(_, served, _)| served.on(listener, metrics_listen));
    match here.clone().find(|(path, _, _)| *path == req.uri().path()) {
        Some((_, _, handler)) => handler(ctx, req).await,
        None => {
            let paths: Vec<&str> = here.map(|(path, _, _)| *path).collect();
            text(StatusCode::NOT_FOUND, format!("not found: try {}\n", paths.join(", ")))
        }
    }
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    with_type(status, body, "text/plain; charset=utf-8")
}

fn with_type(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `/metrics`: every counter and gauge, Prometheus text format.
fn metrics(ctx: &ServerCtx) -> Response<Full<Bytes>> {
    let body = ctx.sessions.metrics.render(&ctx.live_gauges());
    with_type(StatusCode::OK, body, "text/plain; version=0.0.4")
}

/// `/symbols`: every symbol the server knows (with authentication on,
/// every one the token is entitled to), a JSON array in id order.
fn symbols(ctx: &ServerCtx, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let grant = match authenticate(ctx, req) {
        Ok(grant) => grant,
        Err(e) => return unauthorized(ctx, &e),
    };
    let entitled = |name: &str| grant.as_ref().is_none_or(|g| g.entitlements.allows_symbol(name));
    let names: Vec<String> = ctx.symbols.names().iter().filter(|s| entitled(s)).map(|s| s.to_string()).collect();
    with_type(StatusCode::OK, serde_json::to_vec(&names).unwrap_or_default(), "application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_routes_move_to_the_metrics_listener_when_there_is_one() {
        let served = |path: &str, listener, metrics_listen| {
            ROUTES.iter().any(|(p, s, _)| *p == path && s.on(listener, metrics_listen))
        };
        assert!(served("/metrics", Listener::Main, false));
        assert!(!served("/metrics", Listener::Main, true));
        assert!(served("/metrics", Listener::Metrics, true));
        assert!(served("/healthz", Listener::Main, true) && served("/healthz", Listener::Metrics, true));
        assert!(!served("/ws", Listener::Metrics, true) && !served("/symbols", Listener::Metrics, true));
    }
}

//! The HTTP routes, one table: each path, what it serves.
//!
//! Everything but `GET` is refused (405); an unknown path gets 404 naming
//! the routes that exist.
//!
//! With authentication on, `/ws`, `/replay` and `/symbols` need a token
//! (401 without one; `/symbols` then lists only the symbols the token is
//! entitled to). `/metrics` and `/healthz` are for operators and need none:
//! keep them off the public address.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};

use super::upgrade::{authenticate, unauthorized, upgrade};
use super::ServerCtx;

/// A route's handler.
type Handler = fn(Arc<ServerCtx>, Request<Incoming>) -> Response<Full<Bytes>>;

/// Every route: its path and its handler.
const ROUTES: &[(&str, Handler)] = &[
    ("/ws", |ctx, req| upgrade(ctx, req, false)),
    ("/replay", |ctx, req| upgrade(ctx, req, true)),
    ("/metrics", |ctx, _| metrics(&ctx)),
    ("/healthz", |_, _| text(StatusCode::OK, "ok\n")),
    ("/symbols", |ctx, req| symbols(&ctx, &req)),
];

/// Answers one HTTP request.
pub fn route(ctx: Arc<ServerCtx>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    match ROUTES.iter().find(|(path, _)| *path == req.uri().path()) {
        Some((_, handler)) => handler(ctx, req),
        None => {
            let paths: Vec<&str> = ROUTES.iter().map(|(path, _)| *path).collect();
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

//! The WebSocket door: what a `/ws` or `/replay` upgrade request asks for
//! (encoding, slow-consumer mode, a replay), checked before the `101`, and
//! the hand-off of the upgraded stream to its session.
//!
//! Every refusal is an HTTP answer with a plain-text reason: 401 for a
//! missing, bad or expired token when authentication is on (checked
//! first, before anything else about the request), 403 for a browser page
//! from an origin `--allowed-origins` does not allow or a replay the token
//! does not entitle, 400 for a bad request (naming the valid values), 404
//! for a replay that is off or missing, 503 at `--max-connections` or
//! `--max-replay-sessions`, or when the replay directory does not answer
//! within [`REPLAY_CHECK_TIMEOUT`].
//!
//! A `/replay` request's file checks (stat, open, format sniffing) run on a
//! thread of their own, never on an async worker: a FIFO or a hung mount in
//! `--replay-dir` must not freeze the server. At most
//! [`MAX_REPLAY_CHECKS`] run at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, ORIGIN, SEC_WEBSOCKET_PROTOCOL, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};

use super::admission::Admission;
use super::lifecycle::blocking_within;
use super::routes::text;
use super::{tls, ServerCtx};
use crate::auth::{token, AuthError, Grant};
use crate::outbox::SlowMode;
use crate::session::replay::{Refusal, ReplayRequest, ReplaySession, ReplaySlot};
use crate::session::{self, Handshake};
use crate::wire::Encoding;

/// Why an upgrade request's choice of encoding or slow-consumer mode is
/// refused (HTTP 400, with this message as the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// `?encoding=` names no encoding.
    #[error("unknown encoding {0:?}: {valid}", valid = valid_encodings())]
    UnknownEncoding(String),
    /// `?encoding=` and `Sec-WebSocket-Protocol` disagree.
    #[error("?encoding={0} conflicts with Sec-WebSocket-Protocol {1:?}: {valid}", valid = valid_encodings())]
    Conflict(&'static str, String),
    /// `Sec-WebSocket-Protocol` offers no encoding we speak.
    #[error("unknown Sec-WebSocket-Protocol {0:?}: {valid}", valid = valid_encodings())]
    UnknownSubprotocol(String),
    /// `?slow=` names no policy.
    #[error("unknown slow-consumer policy {0:?}: valid policies are conflate, disconnect (?slow=)")]
    UnknownSlowMode(String),
    /// `?batch=` is neither on nor off.
    #[error("bad ?batch={0:?}: use 1 (or true) for batched frames, 0 (or false) for one message per frame")]
    BadBatch(String),
}

/// The valid encodings, for error messages.
fn valid_encodings() -> String {
    let names: Vec<&str> = Encoding::ALL.iter().map(|e| e.name()).collect();
    let protocols: Vec<&str> = Encoding::ALL.iter().map(|e| e.subprotocol()).collect();
    format!("valid encodings are {} (?encoding=) or Sec-WebSocket-Protocol {}", names.join(", "), protocols.join(", "))
}

/// Picks the encoding from `?encoding=` or `Sec-WebSocket-Protocol`, and the
/// subprotocol to echo (a browser that offered one requires the echo).
pub fn choose_encoding(
    query: Option<&str>,
    protocols: Option<&str>,
) -> Result<(Encoding, Option<Encoding>), HandshakeError> {
    let from_query = match query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("encoding="))) {
        Some(name) => match Encoding::from_name(name) {
            Some(e) => Some(e),
            None => return Err(HandshakeError::UnknownEncoding(name.chars().take(32).collect())),
        },
        None => None,
    };
    let offered: Vec<&str> = protocols.map(|p| p.split(',').map(str::trim).collect()).unwrap_or_default();
    let from_header = offered.iter().find_map(|p| Encoding::from_subprotocol(p));
    match (from_query, from_header) {
        (Some(q), _) => {
            let echo = offered.iter().any(|p| Encoding::from_subprotocol(p) == Some(q)).then_some(q);
            if !offered.is_empty() && echo.is_none() {
                return Err(HandshakeError::Conflict(q.name(), offered.join(", ")));
            }
            Ok((q, echo))
        }
        (None, Some(h)) => Ok((h, Some(h))),
        (None, None) if !offered.is_empty() => Err(HandshakeError::UnknownSubprotocol(offered.join(", "))),
        (None, None) => Ok((Encoding::Msgpack, None)),
    }
}

/// Picks the client's slow-consumer policy from `?slow=` (default
/// `conflate`). Either choice stays within the operator's flags:
/// `disconnect` only makes the ladder stricter.
pub fn choose_slow_mode(query: Option<&str>) -> Result<SlowMode, HandshakeError> {
    match query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("slow="))) {
        None | Some("conflate") => Ok(SlowMode::Conflate),
        Some("disconnect") => Ok(SlowMode::Disconnect),
        Some(other) => Err(HandshakeError::UnknownSlowMode(other.chars().take(64).collect())),
    }
}

/// Whether the client asked for batched frames with `?batch=` (default
/// off: one message per WebSocket message, as every client expects).
pub fn choose_batching(query: Option<&str>) -> Result<bool, HandshakeError> {
    match query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("batch="))) {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(other) => Err(HandshakeError::BadBatch(other.chars().take(64).collect())),
    }
}

/// Longest wait for a `/replay` request's file checks; then the request
/// gets 503 and the checking thread is left to finish on its own.
pub const REPLAY_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Most `/replay` file checks running at once (each on its own thread);
/// more get 503. Bounds the threads a stuck replay directory can hold.
pub const MAX_REPLAY_CHECKS: usize = 16;

/// Checks a `/replay` request against the replay directory off the async
/// workers, within [`REPLAY_CHECK_TIMEOUT`].
async fn check_replay(ctx: &ServerCtx, query: Option<&str>) -> Result<ReplayRequest, (StatusCode, String)> {
    let Ok(permit) = ctx.replay_checks.clone().try_acquire_owned() else {
        let busy = format!("too many replay requests being checked ({MAX_REPLAY_CHECKS}): try again later");
        return Err((StatusCode::SERVICE_UNAVAILABLE, busy));
    };
    let dir = ctx.config.replay_dir.clone();
    let query = query.map(str::to_owned);
    let checked = blocking_within("replay-check", REPLAY_CHECK_TIMEOUT, move || {
        // The permit lives as long as the thread, even one left behind.
        let _permit = permit;
        ReplayRequest::from_query(dir.as_deref(), query.as_deref())
    });
    match checked.await {
        Ok(Ok(request)) => Ok(request),
        Ok(Err(refusal)) => Err((refusal_status(&refusal), refusal.to_string())),
        Err(_) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the replay directory did not answer within {}s: try again later",
                REPLAY_CHECK_TIMEOUT.as_secs_f32()
            ),
        )),
    }
}

/// The HTTP status a refused replay request gets.
fn refusal_status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Off | Refusal::NotFound(_) => StatusCode::NOT_FOUND,
        Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
    }
}

/// Checks a request's token when authentication is on: `Ok(None)` on an
/// open server, the token's grant, or why it is refused (answer it with
/// [`unauthorized`]). The token may come in `Authorization: Bearer`, a
/// `base64url.bearer.` subprotocol entry or `?token=` (read, never logged).
pub fn authenticate<B>(ctx: &ServerCtx, req: &Request<B>) -> Result<Option<Grant>, AuthError> {
    let Some(verifier) = &ctx.config.auth else { return Ok(None) };
    let header = |name| req.headers().get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    match token::from_handshake(header(AUTHORIZATION), header(SEC_WEBSOCKET_PROTOCOL), req.uri().query()) {
        Some(token) => verifier.verify(&token).map(Some),
        None => Err(AuthError::Missing),
    }
}

/// The HTTP 401 for a refused token: its reason as the body, and
/// `WWW-Authenticate: Bearer` (RFC 6750 §3).
pub fn unauthorized(ctx: &ServerCtx, error: &AuthError) -> Response<Full<Bytes>> {
    ctx.sessions.metrics.http_rejected.fetch_add(1, Ordering::Relaxed);
    let mut response = text(StatusCode::UNAUTHORIZED, format!("{error}\n"));
    let challenge = match error {
        AuthError::Missing => "Bearer",
        _ => "Bearer error=\"invalid_token\"",
    };
    response.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

/// Upgrades `/ws` (live) or `/replay` (a private replay) to a session.
///
/// The connection's [`Admission`] (put in the request's extensions by the
/// server) moves to the session, so the connection stays counted until
/// its socket closes.
pub async fn upgrade(ctx: Arc<ServerCtx>, mut req: Request<Incoming>, replay: bool) -> Response<Full<Bytes>> {
    let metrics = &ctx.sessions.metrics;
    let reject = |status, message: String| {
        metrics.http_rejected.fetch_add(1, Ordering::Relaxed);
        text(status, format!("{message}\n"))
    };
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return reject(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade request".into());
    }
    let grant = match authenticate(&ctx, &req) {
        Ok(grant) => grant,
        Err(e) => return unauthorized(&ctx, &e),
    };
    if let Some(origin) = req.headers().get(ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        if !ctx.origins.allows(&origin) {
            let shown: String = origin.chars().take(128).collect();
            return reject(StatusCode::FORBIDDEN, format!("origin {shown:?} is not allowed (--allowed-origins)"));
        }
    }
    // A token entry is not an encoding, and is never echoed.
    let protocols = req.headers().get(SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok());
    let protocols = protocols.and_then(token::without_bearer);
    let chosen = choose_encoding(req.uri().query(), protocols.as_deref()).and_then(|(encoding, echo)| {
        let query = req.uri().query();
        Ok((encoding, echo, choose_slow_mode(query)?, choose_batching(query)?))
    });
    let (encoding, echo, slow, batch) = match chosen {
        Ok(choice) => choice,
        Err(e) => return reject(StatusCode::BAD_REQUEST, e.to_string()),
    };
    if metrics.connections.load(Ordering::Relaxed) >= ctx.config.max_connections as i64 {
        metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
        return text(StatusCode::SERVICE_UNAVAILABLE, "too many connections: try again later\n");
    }
    let replay = if replay {
        let request = match check_replay(&ctx, req.uri().query()).await {
            Ok(r) => r,
            Err((status, message)) => return reject(status, message),
        };
        if let Err(why) = replay_entitled(grant.as_ref(), &request) {
            return reject(StatusCode::FORBIDDEN, why);
        }
        let Some(slot) = ReplaySlot::acquire(metrics, ctx.config.max_replay_sessions) else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("too many replay sessions ({}): try again later\n", ctx.config.max_replay_sessions),
            );
        };
        Some(ReplaySession { request, slot })
    } else {
        None
    };
    let (response, upgrade) = match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok(pair) => pair,
        Err(e) => return reject(StatusCode::BAD_REQUEST, format!("bad WebSocket upgrade: {e}")),
    };
    metrics.connections.fetch_add(1, Ordering::Relaxed);
    let sessions = ctx.sessions.clone();
    let admission = req.extensions_mut().remove::<Admission>();
    tokio::spawn(async move {
        // Counted against the connection limits until the session ends.
        let _admission = admission;
        let upgraded = match upgrade.await {
            Ok(ws) => ws.into_inner().into_inner(),
            Err(e) => {
                sessions.metrics.connections.fetch_sub(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        match tls::session_stream(upgraded) {
            Some((stream, read_buf)) => {
                // The registry guard inside the session now owns the count.
                let handshake = Handshake { encoding, slow, batch, replay, grant };
                session::run(sessions, stream, read_buf, handshake).await;
            }
            None => {
                sessions.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
    });
    let (mut parts, _) = response.into_parts();
    if let Some(e) = echo {
        parts.headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(e.subprotocol()));
    }
    Response::from_parts(parts, Full::new(Bytes::new()))
}

/// Whether a token entitles a replay (HTTP 403 with the reason if not):
/// the recording must be granted (`"replay"` claim), and a token not
/// granted every symbol must name its symbols (`?symbols=`), each one
/// entitled, since a recording may hold any symbol.
fn replay_entitled(grant: Option<&Grant>, request: &ReplayRequest) -> Result<(), String> {
    let Some(entitled) = grant.map(|g| &g.entitlements) else { return Ok(()) };
    if !entitled.allows_replay(&request.name) {
        return Err(format!("forbidden: the token does not entitle replaying {:?} (claim \"replay\")", request.name));
    }
    if entitled.allows_every_symbol() {
        return Ok(());
    }
    let Some(symbols) = &request.symbols else {
        return Err(
            "forbidden: name the symbols to replay (?symbols=A,B): the token is not entitled to every symbol".into()
        );
    };
    let mut refused: Vec<&str> = symbols.iter().filter(|s| !entitled.allows_symbol(s)).map(String::as_str).collect();
    if refused.is_empty() {
        return Ok(());
    }
    refused.sort_unstable();
    refused.truncate(20);
    Err(format!("forbidden: the token is not entitled to symbol(s) {}", refused.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let err = choose_encoding(Some("encoding=xml"), None).unwrap_err().to_string();
        assert!(err.contains("\"xml\"") && err.contains("msgpack, protobuf, json"), "{err}");
        assert!(choose_encoding(None, Some("graphql-ws")).is_err());
        assert!(choose_encoding(Some("encoding=json"), Some("tickcast.msgpack")).is_err());
    }

    #[test]
    fn slow_policy_comes_from_the_query() {
        assert_eq!(choose_batching(None), Ok(false));
        assert_eq!(choose_batching(Some("encoding=json&batch=1")), Ok(true));
        assert_eq!(choose_batching(Some("batch=true")), Ok(true));
        assert_eq!(choose_batching(Some("batch=0&slow=conflate")), Ok(false));
        assert!(choose_batching(Some("batch=yes")).unwrap_err().to_string().contains("batch"));
        assert_eq!(choose_slow_mode(None), Ok(SlowMode::Conflate));
        assert_eq!(choose_slow_mode(Some("encoding=json")), Ok(SlowMode::Conflate));
        assert_eq!(choose_slow_mode(Some("encoding=json&slow=disconnect")), Ok(SlowMode::Disconnect));
        assert_eq!(choose_slow_mode(Some("slow=conflate")), Ok(SlowMode::Conflate));
        let err = choose_slow_mode(Some("slow=drop")).unwrap_err().to_string();
        assert!(err.contains("\"drop\"") && err.contains("conflate, disconnect"), "{err}");
    }
}

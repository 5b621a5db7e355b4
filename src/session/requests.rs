//! A live session's control messages: parsed here, applied by the engine.
//!
//! The engine answers each request (its ack, snapshots or `unknown_symbol`
//! go through the session's outbox); a malformed one is answered here with
//! the `error` its [`ErrorCode`](crate::wire::ErrorCode) names, and the
//! connection stays open.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::rewind::RewindRequest;
use super::{frame_for, SessionCtx};
use crate::auth::Entitlements;
use crate::engine::Command;
use crate::outbox::Outbox;
use crate::wire::request::{ClientRequest, Start};
use crate::wire::ErrorCode;
use crate::wire::ServerMessage;

/// Longest wait for the engine to apply a request. The engine always
/// answers; this only guards against a server that is shutting down.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request left for the session itself to do.
#[derive(Debug)]
pub enum Handled {
    /// Nothing: it was applied, or answered with an error.
    Done,
    /// A `refresh`: the session replaces its token.
    Refresh(String),
    /// A `from_ts` subscribe: the session starts a rewind.
    Rewind(RewindRequest),
}

/// Parses one control message and has the engine apply it. Returns once it
/// is applied, so a session has at most one request in flight: this bounds
/// the engine's command queue by the number of sessions.
/// `entitlements` are the session's token's (`None`: an open server); the
/// engine checks the subscribe against them. A `refresh` and a `from_ts`
/// subscribe are the session's own business: they are returned, not sent.
/// `rewinding`: the symbols of a rewind in progress, which no request may
/// name until it has joined live (nor may a second `from_ts` start).
pub async fn handle(
    ctx: &SessionCtx,
    outbox: &Outbox,
    payload: &[u8],
    entitlements: Option<&Arc<Entitlements>>,
    rewinding: Option<&HashSet<String>>,
) -> Handled {
    let refuse = |kind: ErrorCode, message: String| {
        ctx.metrics.client_error(kind);
        outbox.push_control(frame_for(outbox, &ServerMessage::error(kind.code(), message)));
        Handled::Done
    };
    let request = match ClientRequest::parse(payload) {
        Ok(request) => request,
        Err(e) => return refuse(e.kind, e.message),
    };
    if let Some(busy) = rewinding {
        let named = match &request {
            ClientRequest::Subscribe { start: Some(Start::Time(_)), .. } => {
                return refuse(ErrorCode::BadRequest, "a rewind (from_ts) is running: one at a time".into());
            }
            ClientRequest::Subscribe { symbols, .. } | ClientRequest::Unsubscribe(symbols) => {
                symbols.iter().find(|s| *s == "*" || busy.contains(*s))
            }
            ClientRequest::Refresh(_) | ClientRequest::Ping => None,
        };
        if let Some(name) = named {
            let name: String = name.chars().take(64).collect();
            return refuse(
                ErrorCode::BadRequest,
                format!("{name:?} is rewinding (from_ts): ask again once it has joined live"),
            );
        }
    }
    let (done, applied) = oneshot::channel();
    let id = outbox.id;
    ctx.engine.send(match request {
        ClientRequest::Subscribe { symbols, depth, start } => {
            let (resume, epoch) = match start {
                None => (Vec::new(), None),
                Some(Start::Seq { seqs, epoch }) => (seqs, epoch),
                Some(Start::Time(from_ts)) => return Handled::Rewind(RewindRequest { symbols, depth, from_ts }),
            };
            Command::Subscribe {
                id,
                symbols,
                depth,
                entitlements: entitlements.cloned(),
                resume,
                epoch,
                announce: true,
                done,
            }
        }
        ClientRequest::Unsubscribe(symbols) => Command::Unsubscribe { id, symbols, done },
        ClientRequest::Refresh(token) => return Handled::Refresh(token),
        ClientRequest::Ping => {
            // Answered here, not by the engine: a ping says the connection
            // and this session are alive, and needs no queue but the outbox.
            outbox.push_control(frame_for(outbox, &ServerMessage::ack("ping", Vec::new())));
            return Handled::Done;
        }
    });
    let _ = tokio::time::timeout(APPLY_TIMEOUT, applied).await;
    Handled::Done
}

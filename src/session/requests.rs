//! A live session's control messages: parsed here, applied by the engine.
//!
//! The engine answers each request (its ack, snapshots or `unknown_symbol`
//! go through the session's outbox); a malformed one is answered here with
//! the `error` its [`ErrorCode`](crate::wire::ErrorCode) names, and the
//! connection stays open.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

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

/// Parses one control message and has the engine apply it. Returns once it
/// is applied, so a session has at most one request in flight: this bounds
/// the engine's command queue by the number of sessions.
/// `entitlements` are the session's token's (`None`: an open server); the
/// engine checks the subscribe against them. A `refresh` is the session's
/// own business: it is returned, not sent.
pub async fn handle(
    ctx: &SessionCtx,
    outbox: &Outbox,
    payload: &[u8],
    entitlements: Option<&Arc<Entitlements>>,
) -> Option<String> {
    let request = match ClientRequest::parse(payload) {
        Ok(request) => request,
        Err(e) => {
            ctx.metrics.client_error(e.kind);
            outbox.push_control(frame_for(outbox, &ServerMessage::error(e.kind.code(), e.message)));
            return None;
        }
    };
    let (done, applied) = oneshot::channel();
    let id = outbox.id;
    ctx.engine.send(match request {
        ClientRequest::Subscribe { symbols, depth, start } => {
            let (resume, epoch) = match start {
                None => (Vec::new(), None),
                Some(Start::Seq { seqs, epoch }) => (seqs, epoch),
                Some(Start::Time(_)) => {
                    let e = ErrorCode::BadRequest;
                    ctx.metrics.client_error(e);
                    let message = "from_ts needs a server run with --record".to_owned();
                    outbox.push_control(frame_for(outbox, &ServerMessage::error(e.code(), message)));
                    return None;
                }
            };
            Command::Subscribe { id, symbols, depth, entitlements: entitlements.cloned(), resume, epoch, done }
        }
        ClientRequest::Unsubscribe(symbols) => Command::Unsubscribe { id, symbols, done },
        ClientRequest::Refresh(token) => return Some(token),
    });
    let _ = tokio::time::timeout(APPLY_TIMEOUT, applied).await;
    None
}

//! The client's one error type: why connecting, sending or reading failed.
//!
//! Imports: the error types of the layers below (std I/O, fastwebsockets,
//! hyper's request builder, `tickcast::wire`'s decoder).

use tickcast::wire::DecodeError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TCP trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// WebSocket trouble, including a refused handshake.
    #[error("websocket: {0}")]
    Ws(#[from] fastwebsockets::WebSocketError),
    /// A frame that is not a valid server message.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The server closed the connection where a message was expected
    /// ([`Client::next_message`](crate::Client::next_message)); the code
    /// says why (1008: too slow, 1001: shutting down, ...).
    #[error("server closed with {code}: {reason}")]
    Closed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

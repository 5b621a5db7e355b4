//! The codes a client sees: WebSocket close codes and `error` codes.
//!
//! Both are part of the public contract (docs/PROTOCOL.md); keeping them
//! here, beside the messages, gives every stage the same names for them.

/// Close codes the server sends, as documented in docs/PROTOCOL.md.
pub mod close_code {
    /// Reply to a client's close.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy: no pong within `--pong-timeout`, a slow consumer, a client
    /// that does not read its control replies ("control flood") or keeps
    /// sending over `--max-requests-per-sec` ("rate limited").
    pub const POLICY: u16 = 1008;
    /// A message over `--max-message-bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// The session's token expired and no `refresh` replaced it.
    pub const TOKEN_EXPIRED: u16 = 4001;
}

/// Client-visible error codes: the `code` of `error` messages (or the
/// reason a connection was closed), as docs/PROTOCOL.md lists them, and
/// the `code` label of `tickcast_client_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// A control message that is not valid JSON.
    BadJson,
    /// A JSON control message whose `op` is unknown.
    UnknownOp,
    /// A control message missing fields or with wrong types.
    BadRequest,
    /// A subscribe naming symbols the server does not carry.
    UnknownSymbol,
    /// A frame over `--max-message-bytes` (close 1009).
    MessageTooBig,
    /// A WebSocket protocol violation (close 1002 or 1007).
    ProtocolError,
    /// No pong within `--pong-timeout` (close 1008).
    PongTimeout,
    /// A subscribe outside the token's entitlements (symbols not granted,
    /// or over its `max_subscriptions`).
    Forbidden,
    /// A `refresh` whose token is missing, bad, expired, or names another
    /// subject.
    Unauthorized,
    /// The token expired without a `refresh` (close 4001).
    TokenExpired,
    /// A request or ping over `--max-requests-per-sec`: answered with
    /// this error and dropped; a client that keeps on is closed (1008
    /// "rate limited").
    RateLimited,
    /// Control replies left unread past `--max-control-bytes` (close 1008
    /// "control flood").
    ControlFlood,
}

impl ErrorCode {
    /// Every kind, in [`ErrorCode::index`] order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadJson,
        ErrorCode::UnknownOp,
        ErrorCode::BadRequest,
        ErrorCode::UnknownSymbol,
        ErrorCode::MessageTooBig,
        ErrorCode::ProtocolError,
        ErrorCode::PongTimeout,
        ErrorCode::Forbidden,
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
        ErrorCode::RateLimited,
        ErrorCode::ControlFlood,
    ];

    /// The wire code.
    pub fn code(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownSymbol => "unknown_symbol",
            ErrorCode::MessageTooBig => "message_too_big",
            ErrorCode::ProtocolError => "protocol_error",
            ErrorCode::PongTimeout => "pong_timeout",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ControlFlood => "control_flood",
        }
    }

    /// Dense index, for per-code counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

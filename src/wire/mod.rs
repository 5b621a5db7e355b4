//! The wire: what the server says and how it is put on a socket. One
//! message model, three encodings, one framing.
//!
//! In: a borrowed [`ServerMessage`] built by the engine or a session.
//! Out: a complete, unmasked WebSocket frame (header and payload) as
//! `Bytes`, ready to be written as-is to every subscriber of that encoding.
//! Server frames are never masked (RFC 6455 §5.1), which is what lets one
//! frame be shared by thousands of sockets without a copy. Clients and
//! tests go the other way with [`decode`]; control messages from clients
//! are parsed by [`request`].
//!
//! MessagePack messages are maps with named string keys (rmp-serde's
//! `write_named`), so any MessagePack library reads them without a schema.
//! JSON uses the same names. Protobuf uses `proto/tickcast.proto`.
//!
//! Imports: [`crate::model`] only. Everything above may use the wire.
//!
//! - [`message`]: the message model ([`ServerMessage`]).
//! - [`codec`]: encode and decode in the three encodings.
//! - [`protobuf`]: the mapping to and from `proto/tickcast.proto`.
//! - [`frame`](mod@frame): WebSocket framing and close frames.
//! - [`batch`]: several queued messages as one WebSocket message (`?batch=1`).
//! - [`codes`]: close codes and the `error` codes clients see.
//! - [`request`]: clients' control messages.

pub mod batch;
pub mod codec;
pub mod codes;
pub mod frame;
pub mod message;
pub mod protobuf;
pub mod request;

use fastwebsockets::OpCode;

pub use codec::{decode, encode_frame, encode_payload, DecodeError};
pub use codes::{close_code, ErrorCode};
pub use frame::{close_frame, frame};
pub use message::{BookLevels, ResetReason, ServerMessage, Skipped};
pub use protobuf::pb;

/// A wire encoding a client can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// MessagePack maps with named keys; binary frames. The default.
    Msgpack,
    /// `tickcast.v1.ServerMessage` from `proto/`; binary frames.
    Protobuf,
    /// JSON objects; text frames.
    Json,
}

impl Encoding {
    /// Every encoding, in [`Encoding::index`] order.
    pub const ALL: [Encoding; 3] = [Encoding::Msgpack, Encoding::Protobuf, Encoding::Json];

    /// Dense index, for per-encoding arrays on the hot path.
    pub fn index(self) -> usize {
        match self {
            Encoding::Msgpack => 0,
            Encoding::Protobuf => 1,
            Encoding::Json => 2,
        }
    }

    /// The name used in `?encoding=` and in metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Msgpack => "msgpack",
            Encoding::Protobuf => "protobuf",
            Encoding::Json => "json",
        }
    }

    /// The `Sec-WebSocket-Protocol` value that selects this encoding.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Msgpack => "tickcast.msgpack",
            Encoding::Protobuf => "tickcast.protobuf",
            Encoding::Json => "tickcast.json",
        }
    }

    /// Parses an `?encoding=` value.
    pub fn from_name(name: &str) -> Option<Encoding> {
        Encoding::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Parses a `Sec-WebSocket-Protocol` value.
    pub fn from_subprotocol(name: &str) -> Option<Encoding> {
        Encoding::ALL.into_iter().find(|e| e.subprotocol() == name)
    }

    /// Frame opcode: text for JSON, binary otherwise.
    pub fn opcode(self) -> OpCode {
        match self {
            Encoding::Json => OpCode::Text,
            _ => OpCode::Binary,
        }
    }
}

//! tickcast: a realtime market-data fan-out engine.
//!
//! Ticks come in from a feed, are normalized and sequenced, encoded once per
//! encoding, framed once, and the same bytes go out to every WebSocket
//! subscriber of that encoding.
//!
//! ```text
//!  feed thread(s)          engine thread                 writer pool (tokio)
//!  ┌────────────┐  ring   ┌──────────────────────┐  outbox  ┌──────────────┐
//!  │ synthetic  │ ──────▶ │ topic: seq, state    │ ───────▶ │ session task │──▶ socket
//!  │ tcp://JSON │ lock-   │ encode once/encoding │  Bytes   │ writev batch │──▶ socket
//!  └────────────┘ free    │ frame once, share    │  shared  └──────────────┘
//!                         └──────────┬───────────┘
//!  replay:PATH feeds the ring        │ bounded queue: every sequenced tick (--record)
//!  like any other source             ▼
//!                                    recorder thread ──▶ tick log (segments, CRC32C)
//! ```
//!
//! `/replay` sessions bypass the engine: each has its own reader thread
//! that normalizes a recording and paces it into that session's outbox.
//!
//! The modules, one per stage:
//! - [`tick`]: the normalized tick model and the symbol table.
//! - [`feed`]: sources and normalizers (synthetic, tcp JSON, replay).
//! - [`recorded`]: recordings read as normalized events (tick log,
//!   Binance captures, DBN).
//! - [`ticklog`]: the crash-safe tick log format.
//! - [`record`]: the recording stage (`--record`), fed by the engine.
//! - [`replay`]: private paced replay sessions (`/replay`).
//! - [`tools`]: `tickcast convert` and `tickcast inspect`.
//! - [`ring`]: the bounded lock-free ring from feeds to the engine.
//! - [`engine`]: sequencing, snapshots and fan-out staging.
//! - [`topic`]: per-symbol state: seq, last values, book, subscribers.
//! - [`codec`]: the message model, MessagePack / protobuf / JSON, framing.
//! - [`session`]: per-connection outbox, control messages, heartbeats.
//! - [`inbound`]: client frames, read without a buffer while the client is quiet.
//! - [`writer`]: the vectored socket writes.
//! - [`server`]: HTTP routes, upgrade, lifecycle and shutdown.
//! - [`config`]: flags and validated configuration.
//! - [`metrics`]: Prometheus counters.
//!
//! Outside this crate, in `crates/`: `tickcast-client` (a client library)
//! and `tickcast-loadgen` (the `tickcast-bench` load generator). They use
//! this crate's public API; it never uses them.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod codec;
pub mod config;
pub mod engine;
pub mod feed;
pub mod inbound;
pub mod metrics;
pub mod record;
pub mod recorded;
pub mod replay;
pub mod ring;
pub mod server;
pub mod session;
pub mod tick;
pub mod ticklog;
pub mod tools;
pub mod topic;
pub mod writer;

/// Protobuf types generated from `proto/tickcast.proto` at build time.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/tickcast.v1.rs"));
}

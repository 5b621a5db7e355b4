//! tickcast: a realtime market-data fan-out engine.
//!
//! Ticks come in from a feed, are normalized and sequenced, encoded once per
//! encoding, framed once, and the same bytes go out to every WebSocket
//! subscriber of that encoding.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod config;
pub mod engine;
pub mod feed;
pub mod metrics;
pub mod model;
pub mod outbox;
pub mod record;
pub mod recorded;
pub mod ring;
pub mod server;
pub mod session;
pub mod sys;
pub mod tools;
pub mod wire;

pub mod bench;
pub mod client;

//! tickcast-client: a small Rust client of a tickcast server.
//!
//! The load generator (`crates/loadgen`), the server's integration tests
//! (`tests/`) and, later, a command-line client all speak to the server
//! through this crate; it is also the reference for a client in another
//! language. It speaks only the public wire protocol (`docs/PROTOCOL.md`).
//!
//! The modules:
//! - [`client`]: connect (`/ws`, `/replay`, or on a caller-made socket),
//!   subscribe, read and decode messages in any of the three encodings.
//! - [`frame_reader`]: reads many frames per socket read, for clients that
//!   must outrun the server (the load generator).
//! - [`seq`]: the per-symbol sequence tracker that tells a client about
//!   gaps, announced (`conflated`) or not, and resets.
//! - [`book`]: a client-side book at one depth, checked against the
//!   server's checksum after every change.
//! - [`session`]: a resilient session: reconnects with backoff, watches
//!   heartbeats, tracks seqs and books, resubscribes what went wrong.
//! - [`http`]: a plain `GET` for `/metrics`, `/symbols` and `/healthz`.
//! - [`prometheus`]: one sample out of `/metrics` text.
//! - [`error`]: the one error type of this crate.
//!
//! Imports: this crate depends on `tickcast`'s public API only (the message
//! model and codecs in `tickcast::wire`, the clock in `tickcast::model`);
//! `tickcast` never depends on it, except its integration tests.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod book;
pub mod client;
pub mod error;
pub mod frame_reader;
pub mod http;
pub mod prometheus;
pub mod seq;
pub mod session;

pub use book::{BookError, ClientBook};
pub use client::{Client, Event, Subscribe};
pub use error::Error;
pub use frame_reader::FrameReader;
pub use http::http_get;
pub use prometheus::scrape_value;
pub use seq::{SeqEvent, SeqTracker};

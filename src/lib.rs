//! tickcast: a realtime market-data fan-out engine.
//!
//! Ticks come in from a feed, are normalized and sequenced, encoded once per
//! encoding, framed once, and the same bytes go out to every WebSocket
//! subscriber of that encoding.
//!
//! ```text
//!  feed/ (threads)           engine/ (one thread)            session/ (tokio writer pool)
//!  ┌──────────────┐  ring   ┌─────────────────────────┐ outbox ┌──────────────────────┐
//!  │ synthetic    │ ──────▶ │ topic: seq, state, book │ ─────▶ │ writer: one sendmsg  │──▶ socket
//!  │ tcp:// JSON  │ lock-   │ encode once/encoding,   │ shared │ per pass, gathered   │──▶ socket
//!  │ replay:PATH  │ free,   │ frame once, stage Bytes │ Bytes  │ inbound: client msgs │──▶ socket
//!  └──────────────┘ bounded └───────────┬─────────────┘        └──────────────────────┘
//!                                       │ bounded queue, every sequenced tick (--record)
//!                                       ▼
//!                          record: recorder thread ──▶ recorded/ticklog (segments, CRC32C)
//! ```
//!
//! `/replay` sessions bypass the engine: each has its own reader thread
//! that normalizes a recording and paces it into that session's outbox.
//!
//! # Follow one tick
//! 1. [`feed`]: a source normalizes a trade, quote or book change into a
//!    [`model::Tick`], stamps `ts_ingest` and pushes it into the [`ring`]
//!    through its [`feed::Publisher`].
//! 2. [`engine`]: the engine thread pops it, gives it the symbol's next
//!    seq in its [`engine::topic::Topic`], encodes it once per encoding in
//!    use ([`wire`]; a book change once per depth and encoding in use, each
//!    depth getting its own exact delta, [`model::book`]), and stages the
//!    one frame for every subscriber.
//! 3. [`outbox`]: once the feed's burst is in, the engine moves each
//!    subscriber's staged frames into its outbox; the slow-consumer ladder
//!    reads the outbox's exact byte count there.
//! 4. [`session`]: the session's writer takes the outbox and writes it to
//!    the socket in one vectored write.
//!
//! # The map: what each module owns and may import
//! Data flows one way: a module imports only modules listed above it in
//! this table (`tests/layers.rs` reads the table and checks every
//! `crate::` path in `src/` against it). Nothing in this crate imports the
//! load generator or the client library (`crates/`); they depend on it.
//!
//! <!-- layers -->
//! | module | owns | may import |
//! |---|---|---|
//! | [`sys`] | every libc call and its `unsafe` | |
//! | [`model`] | ticks, symbols and the declared universe, books, time | |
//! | [`trace`] | `--trace-latency`: stamps of sampled ticks, per-stage latency distributions | |
//! | [`auth`] | tokens (JWT) and entitlements: who a client is, what it may read | |
//! | [`wire`] | messages, encodings, framing, close and error codes, client requests | model |
//! | [`metrics`] | counters and gauges, the `/metrics` text | model, wire, sys, trace |
//! | [`ring`] | the bounded lock-free ring from feeds to the engine | model, trace |
//! | [`recorded`] | recordings read as events (tick log, Binance, DBN); the tick-log format; restoring state from a tick log | model |
//! | [`cluster`] | NATS scale-out: subjects, the sequencer's publisher and responder | model, metrics |
//! | [`feed`] | sources (synthetic, tcp, replay, nats edge), pacing, the ring's producer side | model, ring, recorded, metrics, cluster, trace |
//! | [`record`] | `--record`: the directory's lock and epoch file, sequenced ticks to the tick log, off the hot path | model, recorded, metrics, sys |
//! | [`outbox`] | one session's queue, its byte count, its slow mode | model, wire, trace |
//! | [`engine`] | sequencing, topics, subscriptions, fan-out, write pacing, the slow-consumer ladder, images | model, wire, ring, outbox, record, metrics, auth, cluster, trace |
//! | [`session`] | one connection: run loop, requests, inbound, writer, private replays, registry | model, wire, metrics, feed, recorded, outbox, engine, sys, auth, trace |
//! | [`config`] | the validated settings the server runs with | feed, record, outbox, engine, ring, auth, cluster |
//! | [`tools`] | `tickcast convert` and `tickcast inspect` | model, recorded |
//! | [`server`] | bind, routes, upgrade, lifecycle, the trading page; the only module that sees all of [`config::Config`] | sys, model, wire, metrics, ring, recorded, feed, record, outbox, engine, session, config, auth, cluster, tools |
//! <!-- /layers -->

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod auth;
pub mod cluster;
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
pub mod trace;
pub mod wire;

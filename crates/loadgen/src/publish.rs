//! The publisher (`--drive-feed`): quotes on the S symbols in turn at
//! `--rate`, each stamped with its send time in `ts_event` and numbered
//! per symbol in `seq`, so every target is measured on the same workload
//! from the same clock.
//!
//! The payload is the same JSON for every target; only the framing
//! differs: a line into tickcast's tcp feed, a `PUB` to nats' client port,
//! a masked text frame (with `"op":"tick"` first) to the node server. With
//! `--feed-format binary`, tickcast's tcp feed gets the same quotes as
//! binary tick records instead (`tickcast::model::record`): the same
//! prices, the per-symbol seq in the record's seq, the send time in its
//! `ts_event`, a u64 as exact as the JSON integer. The ticks due each
//! millisecond are framed into one buffer and written with one call, so
//! 100k ticks/s cost about a thousand writes a second.
//!
//! Imports: the [`Target`] (which connects the publisher and says how it
//! frames), `tickcast::model::now_ns` (the clock), `tickcast::model::record`
//! (the binary records), and the run's [`Shared`] figures.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fastwebsockets::{Frame, Payload};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;

use anyhow::Context as _;
use tickcast::model::record::encode_tick;
use tickcast::model::{now_ns, Quote, Update};

use crate::shared::Shared;
use crate::target::nats::protocol::SUBJECT_PREFIX;
use crate::target::Target;

/// How often the publisher wakes up to send the ticks that are due.
const STEP: Duration = Duration::from_millis(1);

/// After a stall (a server that stops reading), the publisher catches up
/// at most this much time's worth of ticks, then resumes pacing.
const MAX_CATCH_UP: Duration = Duration::from_millis(100);

/// The bench's market: S symbols in turn, a one-cent random walk each,
/// and a per-symbol seq from 1.
pub struct TickGen {
    names: Vec<String>,
    cents: Vec<i64>,
    seq: Vec<u64>,
    next: usize,
    rng: fastrand::Rng,
}

impl TickGen {
    /// A market of `names`, each starting at its own price.
    pub fn new(names: Vec<String>) -> TickGen {
        let cents = (0..names.len()).map(|i| 10_000 + 100 * i as i64).collect();
        let seq = vec![0; names.len()];
        TickGen { names, cents, seq, next: 0, rng: fastrand::Rng::with_seed(7) }
    }

    /// Symbols in the market.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Steps the market: the next symbol in turn, its next seq, a price
    /// step. Returns the symbol's index.
    fn step(&mut self) -> usize {
        let i = self.next;
        self.next = (i + 1) % self.names.len().max(1);
        self.cents[i] += self.rng.i64(-1..=1);
        self.seq[i] += 1;
        i
    }

    /// Writes the next tick, stamped `ts_event`, as JSON into `out`
    /// (cleared first); with `op`, as a node `tick` request. Returns the
    /// symbol.
    pub fn next(&mut self, out: &mut Vec<u8>, op: bool, ts_event: u64) -> &str {
        let i = self.step();
        out.clear();
        write_quote(out, op, &self.names[i], self.seq[i], self.cents[i], ts_event);
        &self.names[i]
    }

    /// Appends the next tick, stamped `ts_event`, to `out` as a framed
    /// binary tick record: the same quote [`next`](Self::next) would write.
    pub fn next_record(&mut self, out: &mut Vec<u8>, ts_event: u64) {
        let i = self.step();
        write_quote_record(out, &self.names[i], self.seq[i], self.cents[i], ts_event);
    }
}

/// The bench's quote at `cents`: bid at it, ask a cent above.
fn quote_at(cents: i64) -> Quote {
    Quote { bid: cents as f64 / 100.0, bid_sz: 100.0, ask: (cents + 1) as f64 / 100.0, ask_sz: 200.0 }
}

/// Writes one quote as the bench's tick JSON: the fields every target's
/// subscribers read come first, in the order the light reader expects.
pub fn write_quote(out: &mut Vec<u8>, op: bool, sym: &str, seq: u64, cents: i64, ts_event: u64) {
    let Quote { bid, ask, .. } = quote_at(cents);
    if op {
        out.extend_from_slice(br#"{"op":"tick","#);
    } else {
        out.push(b'{');
    }
    let _ = write!(
        out,
        r#""type":"quote","sym":"{sym}","seq":{seq},"ts_event":{ts_event},"bid":{bid},"bid_sz":100,"ask":{ask},"ask_sz":200}}"#
    );
}

/// Appends the quote [`write_quote`] writes as JSON as a framed binary
/// tick record: epoch 0, the bench's per-symbol `seq` (the server ignores
/// both: it sequences itself), `ts_event` the send time, `ts_ingest` 0
/// (the server stamps it).
pub fn write_quote_record(out: &mut Vec<u8>, sym: &str, seq: u64, cents: i64, ts_event: u64) {
    encode_tick(out, 0, seq, sym, ts_event, 0, &Update::Quote(quote_at(cents)));
}

/// How a target wants its ticks framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Newline-delimited JSON (tickcast's tcp feed).
    Lines,
    /// Length-prefixed binary tick records (tickcast's tcp feed, with
    /// `--feed-format binary`).
    Records,
    /// `PUB tick.<SYM> <#bytes>\r\n<payload>\r\n` (NATS).
    Nats,
    /// Masked WebSocket text frames of `{"op":"tick",...}` (node).
    WsText,
}

/// A publisher's connection to a target, as the target made it
/// ([`Target::connect_publisher`]).
pub struct PublisherLink {
    /// Where the framed ticks go.
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// How they are framed.
    wire: Wire,
    /// Set when the server sent `PING` (NATS): the publisher answers `PONG`
    /// with its next batch.
    pong_due: Option<Arc<AtomicBool>>,
    /// The task that reads the server's side (NATS), aborted with the
    /// publisher.
    reader: Option<JoinHandle<()>>,
}

impl PublisherLink {
    /// A connection that only takes ticks.
    pub fn new(writer: Box<dyn AsyncWrite + Send + Unpin>, wire: Wire) -> PublisherLink {
        PublisherLink { writer, wire, pong_due: None, reader: None }
    }

    /// The same, whose server sends `PING`s that `reader` flags in
    /// `pong_due` for the publisher to answer.
    pub fn answering_pings(self, pong_due: Arc<AtomicBool>, reader: JoinHandle<()>) -> PublisherLink {
        PublisherLink { pong_due: Some(pong_due), reader: Some(reader), ..self }
    }
}

/// A connected publisher, ready to seed and run.
pub struct Publisher {
    /// Where it publishes, for error messages.
    addr: SocketAddr,
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    wire: Wire,
    /// NATS only: set when the server sent `PING`.
    pong_due: Option<Arc<AtomicBool>>,
    /// NATS only: the task that reads the server's side.
    reader: Option<JoinHandle<()>>,
    /// The framed ticks of one write.
    batch: Vec<u8>,
    /// One tick's JSON.
    payload: Vec<u8>,
    /// fastwebsockets' header scratch (node frames).
    scratch: Vec<u8>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

impl Publisher {
    /// Connects to where `target` takes ticks: tickcast's tcp feed, nats'
    /// client port (handshake included) or the node server's WebSocket.
    pub async fn connect(target: &dyn Target, addr: SocketAddr) -> anyhow::Result<Publisher> {
        let PublisherLink { writer, wire, pong_due, reader } = target.connect_publisher(addr).await?;
        Ok(Publisher {
            addr,
            writer,
            wire,
            pong_due,
            reader,
            batch: Vec::with_capacity(64 * 1024),
            payload: Vec::with_capacity(256),
            scratch: Vec::with_capacity(256),
        })
    }

    /// Sends one tick of every symbol at once: a tickcast server learns a
    /// symbol from its first tick.
    pub async fn seed(&mut self, gen: &mut TickGen) -> anyhow::Result<()> {
        self.batch.clear();
        for _ in 0..gen.len() {
            self.append(gen);
        }
        self.write().await
    }

    /// Frames the next tick of `gen` into the batch.
    fn append(&mut self, gen: &mut TickGen) {
        let ts_event = now_ns();
        match self.wire {
            // Straight into the batch: a record carries its own frame.
            Wire::Records => gen.next_record(&mut self.batch, ts_event),
            Wire::Lines => {
                gen.next(&mut self.payload, false, ts_event);
                self.batch.extend_from_slice(&self.payload);
                self.batch.push(b'\n');
            }
            Wire::Nats => {
                let sym = gen.next(&mut self.payload, false, ts_event);
                let _ = write!(self.batch, "PUB {SUBJECT_PREFIX}{sym} {}\r\n", self.payload.len());
                self.batch.extend_from_slice(&self.payload);
                self.batch.extend_from_slice(b"\r\n");
            }
            Wire::WsText => {
                gen.next(&mut self.payload, true, ts_event);
                let mut frame = Frame::text(Payload::BorrowedMut(&mut self.payload));
                frame.mask();
                self.batch.extend_from_slice(frame.write(&mut self.scratch));
            }
        }
    }

    /// Writes the batch.
    async fn write(&mut self) -> anyhow::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let addr = self.addr;
        self.writer.write_all(&self.batch).await.with_context(|| format!("publisher: write to {addr} failed"))
    }

    /// Sends `rate` ticks per second until the run stops, the ticks due
    /// each millisecond in one write. A failed write ends it and is kept
    /// for the report.
    pub async fn run(mut self, mut gen: TickGen, rate: f64, shared: Arc<Shared>) {
        let start = Instant::now();
        let mut generated = 0u64;
        let catch_up = (rate * MAX_CATCH_UP.as_secs_f64()).max(1.0) as u64;
        let mut interval = tokio::time::interval(STEP);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !shared.stop.load(Ordering::Relaxed) {
            interval.tick().await;
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            // After a stall, skip what is older than MAX_CATCH_UP.
            generated = generated.max(due.saturating_sub(catch_up));
            self.batch.clear();
            if self.pong_due.as_ref().is_some_and(|p| p.swap(false, Ordering::Relaxed)) {
                self.batch.extend_from_slice(b"PONG\r\n");
            }
            let ticks = due.saturating_sub(generated);
            for _ in 0..ticks {
                self.append(&mut gen);
            }
            generated = generated.max(due);
            if let Err(e) = self.write().await {
                if !shared.stop.load(Ordering::Relaxed) {
                    shared.publish_error.lock().get_or_insert(e);
                }
                return;
            }
            shared.sent.fetch_add(ticks, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_go_round_robin_with_per_symbol_seq() {
        let mut gen = TickGen::new(vec!["A".into(), "BB".into(), "C".into()]);
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for ts in 0..7u64 {
            let sym = gen.next(&mut out, false, 1_700_000_000_000_000_000 + ts).to_owned();
            let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
            assert_eq!(v["sym"], sym.as_str());
            assert_eq!(v["ts_event"], 1_700_000_000_000_000_000 + ts);
            seen.push((sym, v["seq"].as_u64().expect("seq")));
        }
        let want = [("A", 1), ("BB", 1), ("C", 1), ("A", 2), ("BB", 2), ("C", 2), ("A", 3)];
        assert_eq!(seen, want.map(|(s, q)| (s.to_owned(), q)));
    }

    #[test]
    fn the_tick_payload_is_one_json_quote_every_target_reads() {
        let mut out = Vec::new();
        write_quote(&mut out, false, "S007", 12, 10_050, 1_763_776_800_123_456_789);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            v,
            serde_json::json!({"type": "quote", "sym": "S007", "seq": 12, "ts_event": 1_763_776_800_123_456_789u64,
                "bid": 100.5, "bid_sz": 100, "ask": 100.51, "ask_sz": 200})
        );
        // The subscribers' light reader takes it without a full parse.
        let light = crate::light::tick_light(&out).expect("light");
        assert_eq!(
            (&*light.kind, &*light.sym, light.seq, light.ts_event),
            ("quote", "S007", 12, 1_763_776_800_123_456_789)
        );
        // tickcast's tcp feed accepts it (seq is an unknown field there).
        let parsed = tickcast::feed::json::parse_line(&out).expect("feed line");
        assert_eq!((&*parsed.sym, parsed.ts_event), ("S007", Some(1_763_776_800_123_456_789)));
        // The node request is the same object with "op":"tick" first.
        let mut node = Vec::new();
        write_quote(&mut node, true, "S007", 12, 10_050, 1_763_776_800_123_456_789);
        let mut n: serde_json::Value = serde_json::from_slice(&node).expect("valid JSON");
        assert_eq!(n.as_object_mut().and_then(|o| o.remove("op")), Some("tick".into()));
        assert_eq!(n, v);
        assert!(node.starts_with(br#"{"op":"tick","type":"quote","#));
    }

    #[test]
    fn the_binary_record_is_the_same_quote_as_the_json_line() {
        let ts = 1_763_776_800_123_456_789;
        let mut json = Vec::new();
        write_quote(&mut json, false, "S007", 12, 10_050, ts);
        let mut framed = Vec::new();
        write_quote_record(&mut framed, "S007", 12, 10_050, ts);
        let (record, rest) = tickcast::model::record::next_frame(&framed).expect("a frame").expect("not empty");
        assert!(rest.is_empty());
        // What tickcast's tcp feed makes of either: the same tick, bit for bit, the send time exact.
        let from_json = tickcast::feed::json::parse_line(&json).expect("feed line");
        let from_record = tickcast::feed::binary::parse_record(record).expect("feed record");
        assert_eq!(from_record, from_json);
        assert_eq!(from_record.ts_event, Some(ts));
        assert_eq!(tickcast::model::record::decode(record).expect("record").seq, 12, "the bench's seq rides along");
        // The generator steps the market once per tick either way.
        let (mut a, mut b) = (TickGen::new(vec!["A".into(), "B".into()]), TickGen::new(vec!["A".into(), "B".into()]));
        let (mut line, mut records) = (Vec::new(), Vec::new());
        for ts in 1..=5 {
            a.next(&mut line, false, ts);
            b.next_record(&mut records, ts);
        }
        let last = tickcast::model::record::decode_all(&records).last().expect("five").expect("valid");
        let json = tickcast::feed::json::parse_line(&line).expect("line");
        assert_eq!((last.sym, tickcast::model::record::Body::Update(json.update)), (&*json.sym, last.body));
    }

    #[test]
    fn node_frames_are_masked_text_frames() {
        let mut payload = br#"{"op":"tick"}"#.to_vec();
        let original = payload.clone();
        let mut scratch = Vec::new();
        let mut frame = Frame::text(Payload::BorrowedMut(&mut payload));
        frame.mask();
        let bytes = frame.write(&mut scratch).to_vec();
        assert_eq!(bytes[0], 0x81, "FIN + text");
        assert_eq!(bytes[1], 0x80 | original.len() as u8, "masked, length");
        let key = &bytes[2..6];
        let unmasked: Vec<u8> = bytes[6..].iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
        assert_eq!(unmasked, original);
    }
}

//! Replay sessions: one client's private, paced replay of a recording over
//! the same WebSocket API as live (`GET /replay?source=NAME&…`).
//!
//! In: the handshake's query (validated before the upgrade) and the
//! client's control messages. Out: the recording's events as the same
//! `snapshot`, `trade`, `quote` and `book` messages live clients get, in
//! the client's encoding, then `replay_end`.
//!
//! Two halves per session:
//! - a **producer** thread reads and normalizes the recording
//!   ([`crate::recorded`]), keeps each symbol's state in a [`Topic`] (so
//!   seqs and snapshots follow exactly the live contract), encodes each
//!   message once for this client and hands batches over a bounded
//!   channel ([`CHANNEL_BATCHES`] batches of [`BATCH`]); when it is full
//!   the producer waits, so a replay never reads further ahead than that;
//! - the **driver**, on the session's task, releases each message when the
//!   [`Pacer`] says it is due (by the recording's receive clock, as the
//!   replay feed does: see [`crate::feed::replay`]), into the session's outbox, which the
//!   session's writer drains like any other.
//!
//! A replay is lossless: a client that reads slower than the replay's pace
//! gets a slower replay, never a conflated one. The driver stops releasing
//! while more than its mark ([`OUTBOX_MARK`], or half of
//! `--disconnect-above` if that is less) waits for the socket. A client
//! that stops reading is closed by its session's slow-consumer check
//! (`--slow-timeout`), and its control replies are bounded by the outbox.
//!
//! Seqs count from the start of the recording, per symbol, whatever `from`
//! or seek chose: the same event always has the same seq. Starting at
//! `from`, and after every seek, the client first gets a snapshot of each
//! symbol that has state at that time, then updates from the snapshot's
//! seq + 1. `ts_event` is the recorded event time and `ts_ingest` the time
//! the recorder received the event.
//!
//! Control messages: `{"op":"pause"}`, `{"op":"resume"}`,
//! `{"op":"speed","value":10}` (or `"max"`), `{"op":"seek","ts":…}` (ns or
//! RFC 3339), each answered with an `ack` naming the op. At the end of the
//! recording (or past `to`) the client gets `replay_end`; the session stays
//! open so the client can seek again, or close.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::engine::topic::Topic;
use crate::feed::pacing::{Pacer, Speed};
use crate::metrics::Metrics;
use crate::model::{now_ns, parse_event_time, DepthDiff, Update};
use crate::outbox::Outbox;
use crate::recorded;
use crate::wire::request::{depth_error, parse_depth, parse_envelope, RequestError};
use crate::wire::{encode_frame, Encoding, ErrorCode, ServerMessage};

/// Messages per batch from the producer to the driver.
pub const BATCH: usize = 256;

/// Batches in flight between producer and driver: bounds how far a replay
/// reads ahead (and its memory) to about 16k messages.
pub const CHANNEL_BATCHES: usize = 64;

/// Bytes waiting for the socket above which the driver stops releasing
/// messages until the client catches up (at most; see
/// [`ReplayDriver::start`]).
pub const OUTBOX_MARK: usize = 256 * 1024;

/// A validated `/replay` request.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayRequest {
    /// `?source=`: the recording's name in `--replay-dir`.
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// `?from=`: first event time sent (earlier events only build state).
    pub from: Option<u64>,
    /// `?to=`: last event time sent (inclusive).
    pub to: Option<u64>,
    /// `?speed=` (default 1).
    pub speed: Speed,
    /// `?symbols=A,B`: only these symbols (default: all).
    pub symbols: Option<HashSet<String>>,
    /// `?depth=`: book levels per side (default `--book-depth`).
    pub depth: Option<usize>,
}

/// Why a `/replay` request is refused before the upgrade; the server
/// answers with the HTTP status each names and the message as the body.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The server has no `--replay-dir` (404).
    #[error("replay is off: start the server with --replay-dir DIR")]
    Off,
    /// No recording of that name (404).
    #[error("no recording named {0:?} in the replay directory")]
    NotFound(String),
    /// A malformed or unsafe request (400).
    #[error("{0}")]
    BadRequest(String),
}

/// Whether `name` may name a recording: a plain file name, no path.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains("..")
        && !name.contains(['/', '\\', '\0'])
        && !Path::new(name).is_absolute()
}

impl ReplayRequest {
    /// Validates a `/replay` query against `--replay-dir`: the recording
    /// must be a regular file or a directory inside it, in a format
    /// [`recorded::detect`] knows.
    ///
    /// Blocking file access (canonicalize, stat, open and read its first
    /// bytes): call it on a thread of its own, never on an async worker
    /// (the server does, within a time bound).
    pub fn from_query(replay_dir: Option<&Path>, query: Option<&str>) -> Result<ReplayRequest, Refusal> {
        let Some(dir) = replay_dir else {
            return Err(Refusal::Off);
        };
        let mut request = ReplayRequest::parse_query(query)?;
        let bad = Refusal::BadRequest;
        let name = &request.name;
        let path = dir.join(name);
        // A symlink inside the directory must not lead out of it.
        let inside = match (path.canonicalize(), dir.canonicalize()) {
            (Ok(p), Ok(d)) => p.starts_with(d),
            _ => return Err(Refusal::NotFound(request.name)),
        };
        if !inside {
            return Err(bad(format!("source {name:?} leads outside the replay directory")));
        }
        // The type first, from a stat (which never blocks on a FIFO, where
        // an open would): only regular files and tick-log directories.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() || meta.is_dir() => {}
            Ok(_) => {
                return Err(bad(format!(
                    "source {name:?} is not a regular file or a tick-log directory (a FIFO, socket or device)"
                )))
            }
            Err(_) => return Err(Refusal::NotFound(request.name)),
        }
        if let Err(e) = recorded::detect(&path) {
            return Err(bad(format!("source {name:?}: {e}")));
        }
        request.path = path;
        Ok(request)
    }

    /// Parses and validates a `/replay` query without touching the
    /// filesystem: every parameter, and that `source` is a plain name (no
    /// path, no `..`). `path` is that bare name; [`from_query`] resolves it
    /// in `--replay-dir` and checks the file.
    ///
    /// [`from_query`]: ReplayRequest::from_query
    pub fn parse_query(query: Option<&str>) -> Result<ReplayRequest, Refusal> {
        let bad = Refusal::BadRequest;
        let (mut name, mut from, mut to, mut speed, mut symbols) = (None, None, None, Speed::Times(1.0), None);
        let mut depth = None;
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "source" => name = Some(value.into_owned()),
                "from" => from = Some(parse_event_time(&value).map_err(|e| bad(format!("from: {e}")))?),
                "to" => to = Some(parse_event_time(&value).map_err(|e| bad(format!("to: {e}")))?),
                "speed" => speed = value.parse().map_err(|e: crate::feed::pacing::SpeedError| bad(e.to_string()))?,
                "symbols" => {
                    let set: HashSet<String> =
                        value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
                    if set.is_empty() {
                        return Err(bad("symbols: name at least one symbol, e.g. symbols=BTCUSDT,ETHUSDT".into()));
                    }
                    symbols = Some(set);
                }
                "depth" => {
                    let shown: String = value.chars().take(32).collect();
                    depth = Some(parse_depth(&value).ok_or_else(|| bad(format!("depth: {}", depth_error(&shown))))?);
                }
                // Handled by the session's handshake like /ws.
                "encoding" | "token" | "batch" => {}
                other => {
                    let other: String = other.chars().take(32).collect();
                    return Err(bad(format!(
                        "unknown parameter {other:?}: valid parameters are source, from, to, speed, symbols, depth, encoding, batch"
                    )));
                }
            }
        }
        let Some(name) = name else {
            return Err(bad("missing ?source=NAME: the name of a recording in the replay directory".into()));
        };
        if !valid_name(&name) {
            let shown: String = name.chars().take(64).collect();
            return Err(bad(format!(
                "source {shown:?}: must be a plain name of a recording in the replay directory (no paths, no \"..\")"
            )));
        }
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(bad(format!("from {f} is after to {t}")));
            }
        }
        let path = PathBuf::from(&name);
        Ok(ReplayRequest { name, path, from, to, speed, symbols, depth })
    }
}

/// One message from the producer.
enum Produced {
    /// A frame; `market` frames are paced by their event time and counted,
    /// others (snapshots) go at once.
    Frame { gen: u64, ts_pace: u64, market: bool, frame: Bytes },
    /// The end of this generation's stream (also after an error).
    End { gen: u64, frame: Bytes },
}

impl Produced {
    fn gen(&self) -> u64 {
        match self {
            Produced::Frame { gen, .. } | Produced::End { gen, .. } => *gen,
        }
    }
}

/// From the driver to the producer.
enum Ctl {
    /// Start over at event time `ts`; tag what follows with `gen`.
    Seek { ts: u64, gen: u64 },
}

/// The session's half of a replay: paces the producer's frames into the
/// session's outbox and answers the client's control messages.
pub struct ReplayDriver {
    rx: mpsc::Receiver<Vec<Produced>>,
    ctl: std_mpsc::Sender<Ctl>,
    pending: VecDeque<Produced>,
    /// Generation: bumped by every seek; older frames are dropped.
    gen: u64,
    paused: bool,
    /// The producer has nothing more until a seek (or is gone).
    idle: bool,
    pacer: Pacer,
    encoding: Encoding,
    out: Vec<Bytes>,
    /// Queued bytes above which nothing more is released.
    mark: usize,
    metrics: Arc<Metrics>,
}

impl ReplayDriver {
    /// Starts the producer thread for `req` and returns the driver, which
    /// releases nothing while more than `mark` bytes (capped at
    /// [`OUTBOX_MARK`]) wait for the socket.
    pub fn start(
        req: ReplayRequest,
        encoding: Encoding,
        book_depth: usize,
        mark: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<ReplayDriver> {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (ctl, ctl_rx) = std_mpsc::channel();
        let speed = req.speed;
        std::thread::Builder::new().name("replay".into()).spawn(move || {
            let depth = req.depth.unwrap_or(book_depth);
            Producer { req, encoding, depth, tx, ctl: ctl_rx, scratch: Vec::new(), diff: DepthDiff::default() }.run()
        })?;
        Ok(ReplayDriver {
            rx,
            ctl,
            pending: VecDeque::new(),
            gen: 0,
            paused: false,
            idle: false,
            pacer: Pacer::new(speed),
            encoding,
            out: Vec::new(),
            mark: mark.min(OUTBOX_MARK),
            metrics,
        })
    }

    /// Whether [`ReplayDriver::step`] has anything to do.
    pub fn active(&self) -> bool {
        !(self.paused || (self.idle && self.pending.is_empty()))
    }

    /// Releases the frames that are due into the session's outbox, waiting
    /// for the next one's time or for the client to catch up. Cancel-safe:
    /// an unreleased frame stays pending.
    pub async fn step(&mut self, outbox: &Outbox) {
        loop {
            if outbox.queued_bytes() > self.mark {
                self.flush(outbox);
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let Some(front) = self.pending.front() else {
                self.flush(outbox);
                match self.rx.recv().await {
                    Some(batch) => {
                        let gen = self.gen;
                        self.pending.extend(batch.into_iter().filter(|p| p.gen() == gen));
                    }
                    None => self.idle = true,
                }
                return;
            };
            if let Produced::Frame { ts_pace, market: true, .. } = front {
                if let Some(due) = self.pacer.due(*ts_pace, Instant::now().into_std()) {
                    if !self.out.is_empty() {
                        self.flush(outbox);
                    }
                    tokio::time::sleep_until(due.into()).await;
                }
            }
            match self.pending.pop_front() {
                Some(Produced::Frame { frame, .. }) => self.out.push(frame),
                Some(Produced::End { frame, .. }) => {
                    self.out.push(frame);
                    self.idle = true;
                    self.flush(outbox);
                    return;
                }
                None => {}
            }
            if self.out.len() >= BATCH {
                self.flush(outbox);
                return;
            }
        }
    }

    fn flush(&mut self, outbox: &Outbox) {
        if self.out.is_empty() {
            return;
        }
        let bytes = self.out.iter().map(Bytes::len).sum();
        outbox.push_data(&mut self.out, bytes, now_ns());
        self.out.clear();
    }

    /// Handles one control message; returns the reply frame.
    pub fn control(&mut self, payload: &[u8]) -> Bytes {
        match self.apply(payload) {
            Ok(op) => self.reply(&ServerMessage::ack(op, Vec::new())),
            Err((kind, message)) => {
                self.metrics.client_error(kind);
                self.reply(&ServerMessage::error(kind.code(), message))
            }
        }
    }

    fn reply(&self, msg: &ServerMessage<'_>) -> Bytes {
        encode_frame(self.encoding, msg, &mut Vec::new())
    }

    fn apply(&mut self, payload: &[u8]) -> Result<&'static str, (ErrorCode, String)> {
        let control = parse_control(payload).map_err(|e| (e.kind, e.message))?;
        match control {
            ReplayControl::Pause => self.paused = true,
            ReplayControl::Resume => {
                if std::mem::take(&mut self.paused) {
                    self.pacer.rebase();
                }
            }
            ReplayControl::Speed(speed) => self.pacer.set_speed(speed),
            ReplayControl::Ping => {}
            ReplayControl::Seek(ts) => {
                self.gen += 1;
                self.pending.clear();
                self.out.clear();
                self.idle = false;
                self.pacer.rebase();
                let _ = self.ctl.send(Ctl::Seek { ts, gen: self.gen });
            }
        }
        Ok(control.op())
    }
}

/// A replay session's control message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplayControl {
    /// `{"op":"pause"}`: stop releasing messages.
    Pause,
    /// `{"op":"resume"}`: go on from where it paused.
    Resume,
    /// `{"op":"speed","value":10}` or `"max"`: a new pace from now on.
    Speed(Speed),
    /// `{"op":"seek","ts":…}`: start over at this event time.
    Seek(u64),
    /// `{"op":"ping"}`: answered with ack `ping`, changes nothing (the
    /// liveness probe of clients that cannot see WebSocket pings).
    Ping,
}

impl ReplayControl {
    /// The op name, echoed in the `ack`.
    pub fn op(self) -> &'static str {
        match self {
            ReplayControl::Pause => "pause",
            ReplayControl::Resume => "resume",
            ReplayControl::Speed(_) => "speed",
            ReplayControl::Seek(_) => "seek",
            ReplayControl::Ping => "ping",
        }
    }
}

/// Parses a replay session's control message (a JSON object).
pub fn parse_control(payload: &[u8]) -> Result<ReplayControl, RequestError> {
    let err = |kind, message: String| RequestError { kind, message };
    let (obj, op) = parse_envelope(payload)?;
    match op.as_str() {
        "pause" => Ok(ReplayControl::Pause),
        "resume" => Ok(ReplayControl::Resume),
        "ping" => Ok(ReplayControl::Ping),
        "speed" => match obj.get("value") {
            Some(Value::Number(n)) => n.to_string().parse::<Speed>().map_err(|e| e.to_string()),
            Some(Value::String(s)) => s.parse::<Speed>().map_err(|e| e.to_string()),
            _ => Err("speed needs \"value\": a factor such as 10, or \"max\"".to_owned()),
        }
        .map(ReplayControl::Speed)
        .map_err(|e| err(ErrorCode::BadRequest, e)),
        "seek" => match obj.get("ts") {
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| "ts must be a non-negative integer".to_owned()),
            Some(Value::String(s)) => parse_event_time(s).map_err(|e| e.to_string()),
            _ => Err("seek needs \"ts\": an event time, ns since the Unix epoch or RFC 3339".to_owned()),
        }
        .map(ReplayControl::Seek)
        .map_err(|e| err(ErrorCode::BadRequest, e)),
        "subscribe" | "unsubscribe" => Err(err(
            ErrorCode::BadRequest,
            "a replay session carries the symbols= of its URL; subscribe on /ws for live data".into(),
        )),
        other => {
            let other: String = other.chars().take(64).collect();
            Err(err(
                ErrorCode::UnknownOp,
                format!("unknown op {other:?}: valid ops in a replay session are pause, resume, speed, seek, ping"),
            ))
        }
    }
}

/// The reading half of a replay session, on its own thread.
struct Producer {
    req: ReplayRequest,
    encoding: Encoding,
    /// Book levels per side this client holds.
    depth: usize,
    /// Turns each book change into this client's depth view.
    diff: DepthDiff,
    tx: mpsc::Sender<Vec<Produced>>,
    ctl: std_mpsc::Receiver<Ctl>,
    scratch: Vec<u8>,
}

/// What ended one pass of the producer.
enum Stop {
    /// The driver is gone: the session ended.
    Gone,
    /// A seek: start over.
    Seek { ts: u64, gen: u64 },
}

impl Producer {
    fn run(mut self) {
        let mut from = self.req.from;
        let mut gen = 0;
        loop {
            let stop = self.pass(from, gen);
            match stop {
                Stop::Gone => return,
                Stop::Seek { ts, gen: g } => {
                    from = Some(ts);
                    gen = g;
                }
            }
        }
    }

    /// Replays from `from` to the end (or `to`), then waits for a seek.
    fn pass(&mut self, from: Option<u64>, gen: u64) -> Stop {
        let mut batch = Vec::with_capacity(BATCH);
        let (reason, events, last_ts, error) = match self.stream(from, gen, &mut batch) {
            Ok(Ok((reason, events, last_ts))) => (reason, events, last_ts, None),
            Ok(Err(stop)) => return stop,
            Err((e, events, last_ts)) => ("error", events, last_ts, Some(e)),
        };
        if let Some(e) = error {
            let msg = ServerMessage::error("replay_failed", e.to_string());
            let frame = encode_frame(self.encoding, &msg, &mut self.scratch);
            batch.push(Produced::Frame { gen, ts_pace: 0, market: false, frame });
        }
        let end = ServerMessage::ReplayEnd {
            source: self.req.name.as_str().into(),
            reason: reason.into(),
            events,
            ts_event: last_ts,
        };
        let frame = encode_frame(self.encoding, &end, &mut self.scratch);
        batch.push(Produced::End { gen, frame });
        if self.tx.blocking_send(batch).is_err() {
            return Stop::Gone;
        }
        match self.ctl.recv() {
            Ok(Ctl::Seek { ts, gen }) => Stop::Seek { ts, gen },
            Err(_) => Stop::Gone,
        }
    }

    /// Streams one pass into batches. `Ok(Ok(..))`: ended (`"end"` or
    /// `"to"`), with the count and last event time; `Ok(Err(stop))`:
    /// interrupted; `Err`: the recording is bad.
    #[allow(clippy::type_complexity)]
    fn stream(
        &mut self,
        from: Option<u64>,
        gen: u64,
        batch: &mut Vec<Produced>,
    ) -> Result<Result<(&'static str, u64, u64), Stop>, (recorded::SourceError, u64, u64)> {
        let mut src = recorded::open(&self.req.path).map_err(|e| (e, 0, 0))?;
        // Per source-local symbol id: its topic, or None if filtered out.
        let mut topics: Vec<Option<Option<Topic>>> = Vec::new();
        let mut warming = from.is_some();
        let (mut events, mut last_ts) = (0u64, 0u64);
        let mut since_ctl = 0u32;
        loop {
            since_ctl += 1;
            if since_ctl >= 256 {
                since_ctl = 0;
                match self.ctl.try_recv() {
                    Ok(Ctl::Seek { ts, gen }) => return Ok(Err(Stop::Seek { ts, gen })),
                    Err(std_mpsc::TryRecvError::Disconnected) => return Ok(Err(Stop::Gone)),
                    Err(std_mpsc::TryRecvError::Empty) => {}
                }
            }
            let ev = match src.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => {
                    if warming {
                        self.snapshots(&topics, gen, batch);
                    }
                    return Ok(Ok(("end", events, last_ts)));
                }
                Err(e) => return Err((e, events, last_ts)),
            };
            let i = ev.sym as usize;
            if i >= topics.len() {
                topics.resize_with(i + 1, || None);
            }
            let topic = topics[i].get_or_insert_with(|| {
                let name = src.symbol(ev.sym);
                self.req.symbols.as_ref().is_none_or(|s| s.contains(&*name)).then(|| Topic::new(name))
            });
            let Some(topic) = topic.as_mut() else { continue };
            if warming {
                if from.is_some_and(|f| ev.ts_event < f) {
                    topic.apply(&ev.update, ev.ts_event, ev.ts_recv);
                    continue;
                }
                warming = false;
                self.snapshots(&topics, gen, batch);
            }
            if self.req.to.is_some_and(|to| ev.ts_event > to) {
                return Ok(Ok(("to", events, last_ts)));
            }
            let Some(topic) = topics[i].as_mut().and_then(Option::as_mut) else { continue };
            let frame = encode_event(topic, &ev, None, (self.depth, self.encoding), &mut self.diff, &mut self.scratch);
            batch.push(Produced::Frame { gen, ts_pace: ev.ts_recv, market: true, frame });
            events += 1;
            last_ts = ev.ts_event;
            if batch.len() >= BATCH {
                let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
                if self.tx.blocking_send(full).is_err() {
                    return Ok(Err(Stop::Gone));
                }
            }
        }
    }

    /// Queues a snapshot of every symbol with state, by name.
    fn snapshots(&mut self, topics: &[Option<Option<Topic>>], gen: u64, batch: &mut Vec<Produced>) {
        let mut with_state: Vec<&Topic> = topics.iter().flatten().flatten().filter(|t| t.state.seq > 0).collect();
        with_state.sort_by(|a, b| a.sym.cmp(&b.sym));
        for topic in with_state {
            let frame = encode_frame(self.encoding, &topic.snapshot(self.depth), &mut self.scratch);
            batch.push(Produced::Frame { gen, ts_pace: 0, market: false, frame });
        }
    }
}

/// Applies a recorded event to `topic` (under `seq`, the tick log's, or
/// else the topic's next) and encodes the message one client gets for it
/// at (`depth`, `encoding`): a book change as that depth's view. Shared
/// by replays and rewinds (`from_ts`), which encode per client.
pub(super) fn encode_event(
    topic: &mut Topic,
    ev: &recorded::Event,
    seq: Option<u64>,
    (depth, encoding): (usize, Encoding),
    diff: &mut DepthDiff,
    scratch: &mut Vec<u8>,
) -> Bytes {
    let apply = |topic: &mut Topic| match seq {
        Some(seq) => topic.apply_sequenced(&ev.update, seq, ev.ts_event, ev.ts_recv),
        None => topic.apply(&ev.update, ev.ts_event, ev.ts_recv),
    };
    match &ev.update {
        Update::Book(raw) => {
            diff.before(&topic.state.book, depth);
            let seq = apply(topic);
            let view = diff.view(&topic.state.book, raw, depth);
            let checksum = topic.state.book.checksum(depth);
            let msg = ServerMessage::book(&*topic.sym, seq, ev.ts_event, ev.ts_recv, view, checksum);
            encode_frame(encoding, &msg, scratch)
        }
        update => {
            let seq = apply(topic);
            let msg = ServerMessage::update(&topic.sym, seq, ev.ts_event, ev.ts_recv, update, 0);
            encode_frame(encoding, &msg, scratch)
        }
    }
}

/// Counts a replay session against `--max-replay-sessions` until dropped.
pub struct ReplaySlot {
    metrics: Arc<Metrics>,
}

impl ReplaySlot {
    /// Takes a slot, or `None` if `max` sessions are open.
    pub fn acquire(metrics: &Arc<Metrics>, max: usize) -> Option<ReplaySlot> {
        let before = metrics.replay_sessions.fetch_add(1, Ordering::AcqRel);
        if before >= max as i64 {
            metrics.replay_sessions.fetch_sub(1, Ordering::AcqRel);
            metrics.replay_rejected.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(ReplaySlot { metrics: metrics.clone() })
    }
}

impl Drop for ReplaySlot {
    fn drop(&mut self) {
        self.metrics.replay_sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything a replay session needs once upgraded.
pub struct ReplaySession {
    /// The request.
    pub request: ReplayRequest,
    /// Its place under `--max-replay-sessions`.
    pub slot: ReplaySlot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parameters_are_validated() {
        let dir = std::env::temp_dir().join(format!("tickcast-replay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("day.gz"), b"1 {}\n").unwrap();
        std::fs::write(dir.join("notes.txt"), b"hello").unwrap();
        let status = |q: &str| {
            ReplayRequest::from_query(Some(&dir), Some(q)).map(|_| ()).map_err(|r| match r {
                Refusal::Off | Refusal::NotFound(_) => 404,
                Refusal::BadRequest(_) => 400,
            })
        };
        assert_eq!(status("source=day.gz&speed=10&from=5&to=9&symbols=A,B"), Ok(()));
        let ok =
            ReplayRequest::from_query(Some(&dir), Some("source=day.gz&symbols=BTCUSDT%2CETHUSDT&speed=max")).unwrap();
        assert_eq!(ok.speed, Speed::Max);
        assert_eq!(ok.symbols.unwrap().len(), 2);
        for q in ["source=../etc/passwd", "source=%2Fetc%2Fpasswd", "source=a/b", "source=..", "source=.hidden"] {
            assert_eq!(status(q), Err(400), "{q}");
        }
        assert_eq!(status("source=nope.gz"), Err(404));
        assert_eq!(status("source=notes.txt"), Err(400));
        assert_eq!(status("speed=2"), Err(400));
        assert_eq!(status("source=day.gz&speed=fast"), Err(400));
        assert_eq!(status("source=day.gz&from=9&to=5"), Err(400));
        assert_eq!(status("source=day.gz&bogus=1"), Err(400));
        // A FIFO or a socket is refused from its type, before any open (an
        // open of a FIFO would block this test for good).
        let fifo = std::process::Command::new("mkfifo").arg(dir.join("pipe")).status();
        if fifo.is_ok_and(|s| s.success()) {
            assert_eq!(status("source=pipe"), Err(400));
        }
        let _socket = std::os::unix::net::UnixListener::bind(dir.join("sock")).unwrap();
        assert_eq!(status("source=sock"), Err(400));
        // Times past u64 ns (after the year 2554) are refused, not wrapped.
        assert_eq!(status("source=day.gz&from=2600-01-01T00:00:00Z"), Err(400));
        assert_eq!(status("source=day.gz&to=2554-07-21T23:34:33.709551616Z"), Err(400));
        assert_eq!(status("source=day.gz&from=18446744073709551616"), Err(400));
        let off = ReplayRequest::from_query(None, Some("source=day.gz")).unwrap_err();
        assert_eq!(off, Refusal::Off);
        assert!(off.to_string().contains("--replay-dir"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn seek_refuses_times_that_overflow() {
        let seek = |ts: &str| parse_control(format!(r#"{{"op":"seek","ts":{ts}}}"#).as_bytes());
        assert_eq!(seek(r#""2024-08-08T23:55:00Z""#).unwrap(), ReplayControl::Seek(1_723_161_300_000_000_000));
        for ts in [r#""2600-01-01T00:00:00Z""#, "18446744073709551616", "1e30", "-1"] {
            let e = seek(ts).unwrap_err();
            assert_eq!(e.kind, ErrorCode::BadRequest, "{ts}: {}", e.message);
        }
        assert!(seek(r#""2600-01-01T00:00:00Z""#).unwrap_err().message.contains("out of range"));
    }

    #[test]
    fn slots_are_bounded() {
        let metrics = Arc::new(Metrics::default());
        let a = ReplaySlot::acquire(&metrics, 2).unwrap();
        let _b = ReplaySlot::acquire(&metrics, 2).unwrap();
        assert!(ReplaySlot::acquire(&metrics, 2).is_none());
        drop(a);
        assert!(ReplaySlot::acquire(&metrics, 2).is_some());
        assert_eq!(metrics.replay_rejected.load(Ordering::Relaxed), 1);
    }
}

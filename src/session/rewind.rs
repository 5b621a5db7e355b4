//! Live with rewind: a subscribe with `from_ts` on a server run with
//! `--record` replays the named symbols from the tick log, from that time,
//! at full speed, then joins them to the live stream with no gap and no
//! duplicate at the seam.
//!
//! # The seam
//! The tick log holds every seq the engine published, a few milliseconds
//! behind it; the engine's history ([`crate::engine::history`]) holds the
//! newest frames. A rewind joins the two:
//! 1. The engine retains history for the symbols at the client's (depth,
//!    encoding) from now on ([`Command::Retain`]), and answers each
//!    symbol's seq now, `C`.
//! 2. A thread ([`produce`]) reads the log from its start, folds each
//!    symbol's state up to `from_ts`, sends a snapshot of it (the state
//!    after the last update before `from_ts`), then every update after it
//!    with the seq the log holds, until each symbol's seq reaches `C`
//!    (following the log as the recorder appends, for at most
//!    [`TAIL_WAIT`]).
//! 3. The session then subscribes with `from_seq` = the last seq sent: the
//!    engine resumes from its history, which starts at `C + 1` at the
//!    latest. The client sees one stream: `ack`, snapshot, updates.
//!
//! If the log has a hole for a symbol (the recorder dropped a batch), its
//! rewind stops before the hole, and the join is a `reset` (reason
//! `history`) and a snapshot, as for any resume the history cannot serve:
//! never a silent gap.
//!
//! # Bounds
//! A rewind takes one of the `--max-replay-sessions` slots while it runs.
//! Its frames go through a bounded channel ([`CHANNEL_BATCHES`] batches)
//! and into the outbox only while less than half of `--conflate-above`
//! waits there, so a rewind never makes its client count as slow, and
//! the thread never reads further ahead than that. Its memory is one
//! topic state per symbol named. While it runs, the session's requests
//! that name one of its symbols are refused with `bad_request`; a second
//! `from_ts` waits for the first to finish.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::replay::{encode_event, ReplaySlot, BATCH, CHANNEL_BATCHES};
use super::SessionCtx;
use crate::auth::Entitlements;
use crate::engine::topic::Topic;
use crate::engine::{Command, Retained};
use crate::model::{now_ns, DepthDiff};
use crate::outbox::Outbox;
use crate::recorded::ticklog::TickLogReader;
use crate::recorded::Source;
use crate::wire::{encode_frame, Encoding, ErrorCode, ServerMessage};

/// How long a rewind waits at the end of the log for the recorder to write
/// the updates up to the seam (it is normally a few ms behind).
pub const TAIL_WAIT: Duration = Duration::from_secs(5);

/// How often the end of the log is looked at again while waiting.
const TAIL_POLL: Duration = Duration::from_millis(5);

/// What a server with `--record` gives rewinds.
#[derive(Clone, Debug)]
pub struct RewindSettings {
    /// The tick log directory (`--record DIR`).
    pub dir: PathBuf,
    /// `--max-replay-sessions`: replays and rewinds share the slots.
    pub max_sessions: usize,
    /// Bytes queued for the client above which the rewind waits: half of
    /// `--conflate-above`.
    pub mark: usize,
    /// Whether the engine keeps history (`--history` not 0): without it
    /// there is nothing to join the log to.
    pub history: bool,
}

/// A validated `from_ts` subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewindRequest {
    /// Symbols named (no `"*"`).
    pub symbols: Vec<String>,
    /// Book depth, or `None` for `--book-depth`.
    pub depth: Option<usize>,
    /// Event time to start from, ns.
    pub from_ts: u64,
}

/// What the reading thread sends the session.
enum Out {
    /// The start point is in the recording: frames follow.
    Started,
    /// Snapshots and updates, in order.
    Frames(Vec<Bytes>),
    /// The log is read up to the seam: the last seq sent per symbol.
    Done(Vec<(String, u64)>),
    /// `from_ts` is not in the recording, or the log cannot be read.
    Failed(ErrorCode, String),
}

/// A rewind in progress, driven by the session's task.
pub struct Rewind {
    rx: mpsc::Receiver<Out>,
    /// Its symbols: the session's other requests may not name them.
    pub symbols: HashSet<String>,
    names: Vec<String>,
    depth: Option<usize>,
    entitlements: Option<Arc<Entitlements>>,
    epoch: u64,
    mark: usize,
    out: Vec<Bytes>,
    /// Held for its `Drop`: a rewind counts against `--max-replay-sessions`.
    _slot: ReplaySlot,
}

/// What [`Rewind::step`] came to.
pub enum Stepped {
    /// Going on.
    Running,
    /// Over: joined live, or failed with the error already sent.
    Finished,
}

impl Rewind {
    /// Checks a `from_ts` subscribe, has the engine retain history for
    /// its symbols, and starts the reading thread. An `Err` is the error
    /// for the client.
    pub async fn start(
        ctx: &SessionCtx,
        outbox: &Outbox,
        req: RewindRequest,
        entitlements: Option<&Arc<Entitlements>>,
    ) -> Result<Rewind, (ErrorCode, String)> {
        let bad = |m: &str| (ErrorCode::BadRequest, m.to_owned());
        let Some(settings) = ctx.rewind.as_ref() else {
            return Err(bad("from_ts needs a server run with --record: there is no recording to rewind"));
        };
        if !settings.history {
            return Err(bad("from_ts needs history to join the recording to live (the server runs with --history 0)"));
        }
        if req.symbols.iter().any(|s| s == "*") {
            return Err(bad("from_ts takes symbol names, not \"*\""));
        }
        let now = now_ns();
        if req.from_ts > now {
            return Err((ErrorCode::BadRequest, format!("from_ts {} is in the future (now is {now})", req.from_ts)));
        }
        if let Some(e) = entitlements {
            let refused: Vec<&str> = req.symbols.iter().filter(|s| !e.allows_symbol(s)).map(String::as_str).collect();
            if !refused.is_empty() {
                let shown = refused.iter().take(20).copied().collect::<Vec<_>>().join(", ");
                return Err((
                    ErrorCode::Forbidden,
                    format!("not entitled to symbol(s): {shown} (token claim \"symbols\")"),
                ));
            }
        }
        let Some(slot) = ReplaySlot::acquire(&ctx.metrics, settings.max_sessions) else {
            return Err((
                ErrorCode::RateLimited,
                format!(
                    "too many replays and rewinds at once (--max-replay-sessions {}): try again later",
                    settings.max_sessions
                ),
            ));
        };
        let depth = req.depth.unwrap_or(ctx.settings.book_depth);
        let (reply, answer) = oneshot::channel();
        let symbols = req.symbols.clone();
        ctx.engine.send(Command::Retain { symbols, depth, encoding: outbox.encoding, reply });
        let Retained { seqs, unknown, epoch } = answer.await.map_err(|_| bad("the server is shutting down"))?;
        if !unknown.is_empty() {
            let shown = unknown.iter().take(20).cloned().collect::<Vec<_>>().join(", ");
            return Err((ErrorCode::UnknownSymbol, format!("unknown symbol(s): {shown} (not in the universe)")));
        }
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let job =
            Job { dir: settings.dir.clone(), until: seqs, from_ts: req.from_ts, depth, encoding: outbox.encoding, tx };
        std::thread::Builder::new()
            .name("rewind".into())
            .spawn(move || produce(job))
            .map_err(|e| (ErrorCode::BadRequest, format!("cannot start a rewind: {e}")))?;
        Ok(Rewind {
            rx,
            symbols: req.symbols.iter().cloned().collect(),
            names: req.symbols,
            depth: req.depth,
            entitlements: entitlements.cloned(),
            epoch,
            mark: settings.mark,
            out: Vec::new(),
            _slot: slot,
        })
    }

    /// Moves the thread's frames into the outbox while the client reads,
    /// and joins live at the end. Cancel-safe: a batch received is pushed
    /// before the next await.
    pub async fn step(&mut self, ctx: &SessionCtx, outbox: &Outbox) -> Stepped {
        if outbox.queued_bytes() > self.mark {
            tokio::time::sleep(Duration::from_millis(1)).await;
            return Stepped::Running;
        }
        match self.rx.recv().await {
            Some(Out::Started) => {
                let ack = ServerMessage::Ack {
                    op: "subscribe".into(),
                    symbols: self.names.iter().map(|s| s.as_str().into()).collect(),
                    epoch: Some(self.epoch),
                    recovered: Default::default(),
                };
                outbox.push_control(encode_frame(outbox.encoding, &ack, &mut Vec::new()));
                Stepped::Running
            }
            Some(Out::Frames(mut frames)) => {
                let bytes = frames.iter().map(Bytes::len).sum();
                std::mem::swap(&mut self.out, &mut frames);
                outbox.push_data(&mut self.out, bytes, now_ns());
                Stepped::Running
            }
            Some(Out::Done(last)) => {
                let (done, applied) = oneshot::channel();
                ctx.engine.send(Command::Subscribe {
                    id: outbox.id,
                    symbols: self.names.clone(),
                    depth: self.depth,
                    entitlements: self.entitlements.clone(),
                    resume: last,
                    epoch: Some(self.epoch),
                    announce: false,
                    done,
                });
                let _ = tokio::time::timeout(Duration::from_secs(10), applied).await;
                ctx.metrics.rewinds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Stepped::Finished
            }
            Some(Out::Failed(code, message)) => {
                ctx.metrics.client_error(code);
                outbox.push_control(encode_frame(
                    outbox.encoding,
                    &ServerMessage::error(code.code(), message),
                    &mut Vec::new(),
                ));
                Stepped::Finished
            }
            None => Stepped::Finished,
        }
    }
}

/// The reading thread's work.
struct Job {
    dir: PathBuf,
    /// Per symbol, in the order asked for, the seq the engine's history
    /// starts after: read the log until each reaches it.
    until: Vec<(String, u64)>,
    from_ts: u64,
    depth: usize,
    encoding: Encoding,
    tx: mpsc::Sender<Out>,
}

/// One symbol of a rewind.
struct Rewound {
    topic: Topic,
    /// Where the engine's history starts (after this seq).
    until: u64,
    /// Stopped at a hole in the log: no more frames for it.
    stopped: bool,
}

/// The reading thread: see "The seam" above. Ends early if the session
/// goes away (the channel closes).
fn produce(job: Job) {
    let Job { dir, until, from_ts, depth, encoding, tx } = job;
    let fail = |code, message: String| {
        let _ = tx.blocking_send(Out::Failed(code, message));
    };
    let mut reader = match TickLogReader::open(&dir) {
        Ok(r) => r,
        Err(e) => return fail(ErrorCode::BadRequest, format!("from_ts: cannot read the recording: {e}")),
    };
    let order: Vec<String> = until.iter().map(|(name, _)| name.clone()).collect();
    let mut symbols: HashMap<String, Rewound> = until
        .iter()
        .map(|(name, until)| {
            (name.clone(), Rewound { topic: Topic::new(Arc::from(name.as_str())), until: *until, stopped: false })
        })
        .collect();
    // Source-local id -> name (None: not rewound).
    let mut names: Vec<Option<Option<String>>> = Vec::new();
    let mut diff = DepthDiff::default();
    let mut scratch = Vec::new();
    let mut batch: Vec<Bytes> = Vec::with_capacity(BATCH);
    let mut first_ts: Option<u64> = None;
    // Still folding the state up to from_ts.
    let mut warming = true;
    let mut tail_since: Option<Instant> = None;
    loop {
        let ev = match reader.follow() {
            Ok(Some(ev)) => {
                tail_since = None;
                ev
            }
            Ok(None) => {
                // The end of what is written. Before the start point: the
                // start point is after the last update, which is fine (the
                // state now is the state at from_ts).
                if warming {
                    match first_ts {
                        None => return fail(ErrorCode::BadRequest, "from_ts: the recording is empty".into()),
                        Some(first) if from_ts < first => {
                            return fail(ErrorCode::BadRequest, before_recording(from_ts, first));
                        }
                        Some(_) => {}
                    }
                    warming = false;
                    if !start(&tx, &order, &symbols, depth, encoding, &mut scratch, &mut batch) {
                        return;
                    }
                }
                if symbols.values().all(|s| s.stopped || s.topic.state.seq >= s.until) {
                    break;
                }
                let since = *tail_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= TAIL_WAIT || tx.is_closed() {
                    break;
                }
                if !flush(&tx, &mut batch) {
                    return;
                }
                std::thread::sleep(TAIL_POLL);
                continue;
            }
            Err(e) => return fail(ErrorCode::BadRequest, format!("from_ts: the recording cannot be read: {e}")),
        };
        first_ts.get_or_insert(ev.ts_event);
        let i = ev.sym as usize;
        if i >= names.len() {
            names.resize_with(i + 1, || None);
        }
        let name = names[i].get_or_insert_with(|| {
            let name = reader.symbol(ev.sym);
            symbols.contains_key(&*name).then(|| name.to_string())
        });
        let Some(name) = name.as_ref() else { continue };
        let Some(seq) = ev.seq else { continue };
        if warming && ev.ts_event >= from_ts {
            if let Some(first) = first_ts.filter(|&f| from_ts < f) {
                return fail(ErrorCode::BadRequest, before_recording(from_ts, first));
            }
            warming = false;
            if !start(&tx, &order, &symbols, depth, encoding, &mut scratch, &mut batch) {
                return;
            }
        }
        let Some(s) = symbols.get_mut(name) else { continue };
        if warming {
            s.topic.apply_sequenced(&ev.update, seq, ev.ts_event, ev.ts_recv);
            continue;
        }
        if s.stopped || seq <= s.topic.state.seq {
            continue; // Stopped at a hole, or a seq already sent.
        }
        if seq != s.topic.state.seq + 1 {
            // A hole in the log: the join will be a reset and a snapshot.
            s.stopped = true;
            continue;
        }
        let frame = encode_event(&mut s.topic, &ev, Some(seq), (depth, encoding), &mut diff, &mut scratch);
        batch.push(frame);
        if batch.len() >= BATCH && !flush(&tx, &mut batch) {
            return;
        }
        if symbols.values().all(|s| s.stopped || s.topic.state.seq >= s.until) {
            break;
        }
    }
    if warming && !start(&tx, &order, &symbols, depth, encoding, &mut scratch, &mut batch) {
        return;
    }
    if !flush(&tx, &mut batch) {
        return;
    }
    let last = symbols.into_iter().map(|(name, s)| (name, s.topic.state.seq)).collect();
    let _ = tx.blocking_send(Out::Done(last));
}

fn before_recording(from_ts: u64, first: u64) -> String {
    format!("from_ts {from_ts} is before the recording starts (its first event is at {first} ns)")
}

/// The start point: tells the session (which sends the ack), then queues a
/// snapshot of each symbol in the order asked for.
fn start(
    tx: &mpsc::Sender<Out>,
    order: &[String],
    symbols: &HashMap<String, Rewound>,
    depth: usize,
    encoding: Encoding,
    scratch: &mut Vec<u8>,
    batch: &mut Vec<Bytes>,
) -> bool {
    if tx.blocking_send(Out::Started).is_err() {
        return false;
    }
    for name in order {
        if let Some(s) = symbols.get(name) {
            batch.push(encode_frame(encoding, &s.topic.snapshot(depth), scratch));
        }
    }
    true
}

/// Sends the batch; false if the session is gone.
fn flush(tx: &mpsc::Sender<Out>, batch: &mut Vec<Bytes>) -> bool {
    if batch.is_empty() {
        return true;
    }
    tx.blocking_send(Out::Frames(std::mem::replace(batch, Vec::with_capacity(BATCH)))).is_ok()
}

//! A resilient session: one subscription that survives the server going
//! away, the network stalling, and the client losing data.
//!
//! [`Session::start`] spawns a task that connects to
//! `ws://HOST:PORT/ws?encoding=...`, subscribes to the symbols at a depth
//! and reads. It reconnects on its own, after a delay drawn by
//! [`backoff_delay`] (exponential backoff with full jitter), when a connect
//! fails, the server closes, or the heartbeat watchdog sees no frame (data
//! or server ping) for [`SessionConfig::heartbeat_timeout`]. It tracks each
//! symbol's seq ([`SeqTracker`]) and book ([`ClientBook`]); an unannounced
//! gap or a book checksum mismatch resubscribes that symbol (unsubscribe,
//! then subscribe: a plain re-subscribe at the same depth sends no new
//! snapshot). `conflated` and `reset` drop the symbol's book until the
//! snapshot that follows. The caller reads typed [`SessionEvent`]s with
//! [`Session::next_event`], which is cancel-safe (a channel receive), so it
//! can sit in a `select!` beside timers.
//!
//! **Resume by seq** (issue 17): every reconnect subscribes with
//! `from_seq`, the last seq held of each symbol whose state is whole (it
//! has a book: no snapshot is due), and `epoch`, the one of the last
//! subscribe ack. The new ack's `recovered` map says, per symbol, what
//! follows ([`SessionEvent::Resumed`]): `true`, no snapshot, the updates
//! missed and then live ones, applied to the seq and book held, as if the
//! connection had never dropped; `false`, a `reset` and a snapshot that
//! replaces the symbol's state. Symbols whose state was not whole join the
//! normal way (a snapshot). A server that sends no `epoch` is never asked
//! to resume. [`SessionConfig::resume`] turns it off.
//!
//! Imports: [`crate::client`] (connect, subscribe, raw frames),
//! [`crate::seq`], [`crate::book`], `tickcast::wire` (decode).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tickcast::wire::{decode, Encoding, ServerMessage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::book::ClientBook;
use crate::client::{Client, Subscribe};
use crate::error::Error;
use crate::seq::{SeqEvent, SeqTracker};

/// How a [`Session`] connects, subscribes and reconnects.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// `HOST:PORT` of the server (resolved again on every attempt).
    pub addr: String,
    /// The encoding asked for with `?encoding=`.
    pub encoding: Encoding,
    /// Symbols to subscribe to.
    pub symbols: Vec<String>,
    /// Book depth: a number from the server's menu or `"full"`.
    pub depth: String,
    /// Backoff base: the bound of the first retry's delay.
    pub backoff_base: Duration,
    /// Backoff cap: no retry waits longer.
    pub backoff_cap: Duration,
    /// No frame (data or ping) for this long: the connection is dead.
    pub heartbeat_timeout: Duration,
    /// Resume by seq on reconnect (`from_seq` and `epoch` on the
    /// subscribe); `false`: every reconnect starts each symbol from a
    /// snapshot. Default: `true`.
    pub resume: bool,
}

impl SessionConfig {
    /// A configuration with the defaults: msgpack, depth 10, backoff
    /// 100 ms base and 10 s cap, a 30 s heartbeat watchdog (twice the
    /// server's default ping interval, so a quiet stream is not taken for a
    /// dead one), resume on.
    pub fn new(addr: impl Into<String>, symbols: Vec<String>) -> SessionConfig {
        SessionConfig {
            addr: addr.into(),
            encoding: Encoding::Msgpack,
            symbols,
            depth: "10".into(),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
            resume: true,
        }
    }
}

/// A connection that stayed up longer than this resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The upper bound of the delay before retry `attempt` (0-based):
/// `min(cap, base * 2^attempt)`, saturating instead of overflowing.
pub fn backoff_bound(base: Duration, cap: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// The delay before retry `attempt`: full jitter, uniform in
/// `[0, backoff_bound(base, cap, attempt)]`, so that many clients cut off
/// at once do not come back at once.
pub fn backoff_delay(base: Duration, cap: Duration, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    let bound = backoff_bound(base, cap, attempt).as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(rng.u64(0..=bound))
}

/// What happened to a session, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// A connection is up and the subscribe was sent.
    Connected {
        /// Symbols the subscribe asked to resume (`from_seq`); 0 on the
        /// first connection, with resume off, or when nothing was whole.
        resuming: usize,
    },
    /// A connection failed or was lost; the next attempt is in `retry_in`.
    Disconnected {
        /// Why, for a human.
        reason: String,
        /// The backoff delay before the next attempt, drawn uniformly in
        /// `[0, backoff_bound(base, cap, attempt)]`.
        retry_in: Duration,
        /// Which retry this is (0-based): failed attempts since the last
        /// connection that delivered data or stayed up 10 s; the exponent
        /// of [`backoff_bound`].
        attempt: u32,
    },
    /// The ack of a resuming subscribe said what became of `sym`'s
    /// `from_seq`: `recovered`, the updates after `from_seq` follow and the
    /// book held stays; not, a `reset` and a snapshot follow and replace it.
    Resumed {
        /// The symbol.
        sym: String,
        /// The last seq the session held, sent as `from_seq`.
        from_seq: u64,
        /// Whether the server replays what was missed (no snapshot).
        recovered: bool,
    },
    /// A message from the server. Updates of a symbol being resubscribed
    /// (before its new snapshot) are not passed on.
    Message(ServerMessage<'static>),
    /// An unannounced gap: `sym` went from `expected - 1` to `got`. The
    /// session resubscribes it.
    Gap {
        /// The symbol.
        sym: String,
        /// The seq that should have come.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// `sym`'s book does not match the server's checksum; the session
    /// resubscribes it.
    BookChecksumMismatch {
        /// The symbol.
        sym: String,
    },
}

/// What the session task knows of the symbols, shared with the caller for
/// [`Session::book`] and [`Session::resume_seqs`]. It outlives a
/// connection: a reconnect resumes from it.
#[derive(Debug, Default)]
struct State {
    seqs: SeqTracker,
    /// The book of every symbol whose state is whole: taken from a
    /// snapshot, kept in step since. A symbol without one (a snapshot is
    /// due after `conflated`, `reset` or a resubscribe) is not resumed.
    books: HashMap<String, ClientBook>,
    /// Symbols resubscribed and waiting for their snapshot.
    resyncing: HashSet<String>,
    /// The `epoch` of the last subscribe ack, sent back with `from_seq`;
    /// `None` before one, or from a server without resume.
    epoch: Option<u64>,
    /// The `from_seq` of the subscribe in flight, until its ack.
    resuming: HashMap<String, u64>,
}

impl State {
    /// Before a new connection: keeps the seq and book of each symbol whose
    /// state is whole, when `resume` is on and an epoch is known, forgets
    /// every other symbol, and returns the `from_seq` entries to send.
    fn prepare_reconnect(&mut self, resume: bool) -> Vec<(String, u64)> {
        let mut held: Vec<(String, u64)> = if resume && self.epoch.is_some() {
            self.books
                .keys()
                .filter(|sym| !self.resyncing.contains(*sym))
                .filter_map(|sym| self.seqs.last(sym).map(|seq| (sym.clone(), seq)))
                .collect()
        } else {
            Vec::new()
        };
        held.sort();
        self.seqs = SeqTracker::with_capacity(held.len());
        for (sym, seq) in &held {
            self.seqs.snapshot(sym, *seq);
        }
        self.books.retain(|sym, _| held.iter().any(|(h, _)| h == sym));
        self.resyncing.clear();
        self.resuming = held.iter().cloned().collect();
        held
    }
}

/// What a subscribe ack says about resume.
struct AckResume {
    /// The server's epoch, if it sent one.
    epoch: Option<u64>,
    /// Per symbol of the request's `from_seq`: whether it is recovered.
    recovered: Vec<(String, bool)>,
}

/// The resume part of `msg` if it is a subscribe ack.
fn ack_resume(msg: &ServerMessage<'_>) -> Option<AckResume> {
    match msg {
        ServerMessage::Ack { op, epoch, recovered, .. } if op == "subscribe" => Some(AckResume {
            epoch: *epoch,
            recovered: recovered.iter().map(|(sym, ok)| (sym.to_string(), *ok)).collect(),
        }),
        _ => None,
    }
}

/// A resilient subscription; see the module doc. Dropping it stops the
/// task and closes the connection.
pub struct Session {
    events: mpsc::Receiver<SessionEvent>,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Session {
    /// Starts the session task on the current tokio runtime.
    pub fn start(config: SessionConfig) -> Session {
        let (tx, events) = mpsc::channel(1024);
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(run(config, tx, state.clone()));
        Session { events, state, task }
    }

    /// The next event; `None` only if the task ended (it does not, short of
    /// a panic). Cancel-safe.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// A copy of `sym`'s book as the session task holds it now (it may be
    /// a few messages ahead of the events read), if it has one.
    pub fn book(&self, sym: &str) -> Option<ClientBook> {
        lock(&self.state).books.get(sym).cloned()
    }

    /// [`Session::book`] with the seq it is at, taken together: to compare
    /// it with another view of the same book at the same seq.
    pub fn book_with_seq(&self, sym: &str) -> Option<(u64, ClientBook)> {
        let state = lock(&self.state);
        Some((state.seqs.last(sym)?, state.books.get(sym)?.clone()))
    }

    /// The last seq held of each of `symbols` whose state is whole (it has
    /// a book): what the next reconnect sends as `from_seq`.
    pub fn resume_seqs(&self, symbols: &[String]) -> Vec<(String, u64)> {
        let state = lock(&self.state);
        symbols
            .iter()
            .filter(|s| state.books.contains_key(*s) && !state.resyncing.contains(*s))
            .filter_map(|s| state.seqs.last(s).map(|seq| (s.clone(), seq)))
            .collect()
    }

    /// The `epoch` of the last subscribe ack, sent with `from_seq` on
    /// reconnect; `None` before the first ack or from a server without
    /// resume.
    pub fn epoch(&self) -> Option<u64> {
        lock(&self.state).epoch
    }
}

/// Why a connection ended.
enum Ended {
    /// The caller dropped the session.
    Stopped,
    /// Lost; `had_data`: it delivered data first.
    Lost { reason: String, had_data: bool },
}

async fn run(config: SessionConfig, tx: mpsc::Sender<SessionEvent>, state: Arc<Mutex<State>>) {
    let mut rng = fastrand::Rng::new();
    let mut attempt: u32 = 0;
    loop {
        let started = Instant::now();
        let (from_seq, epoch) = {
            let mut s = lock(&state);
            (s.prepare_reconnect(config.resume), s.epoch)
        };
        let resuming = from_seq.len();
        let (reason, had_data) = match connect(&config, from_seq, epoch).await {
            Ok(client) => {
                if tx.send(SessionEvent::Connected { resuming }).await.is_err() {
                    return;
                }
                match serve(&config, client, &tx, &state).await {
                    Ended::Stopped => return,
                    Ended::Lost { reason, had_data } => (reason, had_data),
                }
            }
            Err(e) => (format!("connect to {}: {e}", config.addr), false),
        };
        if had_data || started.elapsed() > STABLE_AFTER {
            attempt = 0;
        }
        let retry_in = backoff_delay(config.backoff_base, config.backoff_cap, attempt, &mut rng);
        let event = SessionEvent::Disconnected { reason, retry_in, attempt };
        attempt = attempt.saturating_add(1);
        if tx.send(event).await.is_err() {
            return;
        }
        tokio::time::sleep(retry_in).await;
    }
}

/// The session's socket: a plain WebSocket whose pings reach the reader
/// (the server sends every message as one frame, so no reassembly).
type Ws = WebSocket<TokioIo<Upgraded>>;

/// Connects and subscribes to the configured symbols, resuming those in
/// `from_seq` (under `epoch`).
async fn connect(config: &SessionConfig, from_seq: Vec<(String, u64)>, epoch: Option<u64>) -> Result<Ws, Error> {
    let addr = tokio::net::lookup_host(&config.addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let mut client = Client::connect(addr, config.encoding).await?;
    // Every key of `from_seq` must be named in `symbols`: under `"*"` the
    // held symbols are named beside it.
    let mut symbols = config.symbols.clone();
    for (sym, _) in &from_seq {
        if !symbols.contains(sym) {
            symbols.push(sym.clone());
        }
    }
    let epoch = if from_seq.is_empty() { None } else { epoch };
    let request = Subscribe::new(symbols).depth(config.depth.clone()).resume(from_seq, epoch);
    client.send_subscribe(&request).await?;
    // Nothing was read yet, so nothing is lost. Pings are answered here, so
    // the watchdog sees them.
    let mut ws = WebSocket::after_handshake(client.into_inner(), Role::Client);
    ws.set_auto_pong(false);
    Ok(ws)
}

/// Sends one JSON request.
async fn send_json(ws: &mut Ws, text: String) -> Result<(), Error> {
    ws.write_frame(Frame::text(Payload::Owned(text.into_bytes()))).await?;
    Ok(())
}

/// Reads one connection until it is lost or the caller goes away.
async fn serve(config: &SessionConfig, mut client: Ws, tx: &mpsc::Sender<SessionEvent>, state: &Mutex<State>) -> Ended {
    let mut had_data = false;
    let lost = |reason: String, had_data| Ended::Lost { reason, had_data };
    loop {
        // Cancelling a read loses the connection's framing; it happens only
        // when the connection is abandoned anyway.
        let frame = match tokio::time::timeout(config.heartbeat_timeout, client.read_frame()).await {
            Err(_) => {
                return lost(format!("no frame for {:?} (heartbeat watchdog)", config.heartbeat_timeout), had_data)
            }
            Ok(Err(e)) => return lost(format!("read: {e}"), had_data),
            Ok(Ok(frame)) => frame,
        };
        let payload = match frame.opcode {
            OpCode::Text | OpCode::Binary if frame.fin => frame.payload.to_vec(),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                return lost("a fragmented message (the server sends whole frames)".into(), had_data)
            }
            OpCode::Ping => {
                let pong = Frame::pong(frame.payload.to_vec().into());
                if let Err(e) = client.write_frame(pong).await {
                    return lost(format!("pong: {e}"), had_data);
                }
                continue;
            }
            OpCode::Close => {
                let p = &frame.payload;
                let code = if p.len() >= 2 { u16::from_be_bytes([p[0], p[1]]) } else { 1005 };
                let reason = String::from_utf8_lossy(p.get(2..).unwrap_or_default()).into_owned();
                return lost(format!("server closed with {code}: {reason}"), had_data);
            }
            _ => continue,
        };
        let msg = match decode(config.encoding, &payload) {
            Ok(msg) => msg,
            Err(e) => return lost(format!("decode: {e}"), had_data),
        };
        had_data |= msg.sym_seq().is_some();
        let (events, resubscribe) = process(state, msg);
        for event in events {
            if tx.send(event).await.is_err() {
                return Ended::Stopped;
            }
        }
        if let Some(sym) = resubscribe {
            let subscribe = Subscribe::new([sym.as_str()]).depth(config.depth.clone());
            let sent = async {
                send_json(&mut client, serde_json::json!({"op": "unsubscribe", "symbols": [sym]}).to_string()).await?;
                send_json(&mut client, subscribe.to_json()).await
            };
            if let Err(e) = sent.await {
                return lost(format!("resubscribe {sym}: {e}"), had_data);
            }
        }
    }
}

/// Applies one message to the symbols' state: the events to pass on, and
/// the symbol to resubscribe, if any.
fn process(state: &Mutex<State>, msg: ServerMessage<'static>) -> (Vec<SessionEvent>, Option<String>) {
    let mut s = lock(state);
    let s = &mut *s;
    let mut out = Vec::with_capacity(1);
    let mut resubscribe = None;
    if let Some(ack) = ack_resume(&msg) {
        s.epoch = ack.epoch;
        for (sym, recovered) in ack.recovered {
            let Some(from_seq) = s.resuming.remove(&sym) else { continue };
            if !recovered {
                // A reset and a snapshot follow: the book held is stale.
                s.books.remove(&sym);
            }
            out.push(SessionEvent::Resumed { sym, from_seq, recovered });
        }
        // A symbol the ack does not name is not subscribed (an error
        // follows) or joins the normal way: its snapshot replaces the book.
        s.resuming.clear();
    }
    match &msg {
        ServerMessage::Snapshot { sym, seq, depth, book, .. } => {
            s.resyncing.remove(sym.as_ref());
            s.seqs.snapshot(sym, *seq);
            match ClientBook::from_snapshot(*depth as usize, book) {
                Ok(b) => {
                    s.books.insert(sym.to_string(), b);
                }
                Err(_) => {
                    s.books.remove(sym.as_ref());
                    out.push(SessionEvent::BookChecksumMismatch { sym: sym.to_string() });
                    resubscribe = Some(sym.to_string());
                }
            }
        }
        ServerMessage::Trade { sym, seq, .. }
        | ServerMessage::Quote { sym, seq, .. }
        | ServerMessage::Book { sym, seq, .. } => {
            if s.resyncing.contains(sym.as_ref()) {
                return (out, None);
            }
            match s.seqs.update(sym, *seq) {
                SeqEvent::Gap { expected, got } => {
                    out.push(SessionEvent::Gap { sym: sym.to_string(), expected, got });
                    resubscribe = Some(sym.to_string());
                }
                SeqEvent::BeforeRecovery => return (out, None),
                _ => {}
            }
            if let ServerMessage::Book { bids, asks, checksum, .. } = &msg {
                if resubscribe.is_none() {
                    if let Some(book) = s.books.get_mut(sym.as_ref()) {
                        if book.apply(bids, asks, *checksum).is_err() {
                            out.push(SessionEvent::BookChecksumMismatch { sym: sym.to_string() });
                            resubscribe = Some(sym.to_string());
                        }
                    }
                }
            }
        }
        ServerMessage::Conflated { symbols } => {
            for skipped in symbols {
                s.seqs.conflated(&skipped.sym, skipped.from_seq, skipped.to_seq);
                s.books.remove(skipped.sym.as_ref());
            }
        }
        ServerMessage::Reset { sym, seq, .. } => {
            s.seqs.reset(sym, *seq);
            s.books.remove(sym.as_ref());
        }
        _ => {}
    }
    if let Some(sym) = &resubscribe {
        s.books.remove(sym);
        s.resyncing.insert(sym.clone());
    }
    out.insert(0, SessionEvent::Message(msg));
    (out, resubscribe)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use tickcast::model::Level;
    use tickcast::wire::BookLevels;

    use super::*;

    #[test]
    fn every_delay_is_within_its_bound_and_the_bound_grows_then_saturates() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        let mut rng = fastrand::Rng::with_seed(1);
        let mut last_bound = Duration::ZERO;
        for attempt in 0..80 {
            let bound = backoff_bound(base, cap, attempt);
            let expected = if attempt < 40 { (base * 2u32.pow(attempt.min(30))).min(cap) } else { cap };
            assert_eq!(bound, expected, "attempt {attempt}");
            assert!(bound >= last_bound, "the bound never shrinks");
            last_bound = bound;
            let mut max_seen = Duration::ZERO;
            for _ in 0..2000 {
                let d = backoff_delay(base, cap, attempt, &mut rng);
                assert!(d <= bound, "attempt {attempt}: {d:?} > {bound:?}");
                max_seen = max_seen.max(d);
            }
            assert!(max_seen >= bound / 2, "full jitter spreads over the whole range");
        }
        assert_eq!(backoff_bound(base, cap, 0), base);
        assert_eq!(backoff_bound(base, cap, 3), base * 8);
        assert_eq!(backoff_bound(base, cap, 7), cap, "12.8 s is capped");
        assert_eq!(backoff_bound(base, cap, u32::MAX), cap);
    }

    fn snapshot(sym: &str, seq: u64) -> ServerMessage<'static> {
        ServerMessage::Snapshot {
            sym: Cow::Owned(sym.into()),
            seq,
            ts_event: 0,
            ts_ingest: 0,
            quote: None,
            trade: None,
            depth: 10,
            book: BookLevels::default(),
        }
    }

    fn book(sym: &str, seq: u64, bid: f64, checksum: u32) -> ServerMessage<'static> {
        ServerMessage::Book {
            sym: Cow::Owned(sym.into()),
            seq,
            ts_event: 0,
            ts_ingest: 0,
            bids: Cow::Owned(vec![Level { px: bid, sz: 1.0 }]),
            asks: Cow::Owned(vec![]),
            checksum,
        }
    }

    #[test]
    fn gaps_and_mismatches_resubscribe_and_hold_updates_until_the_snapshot() {
        let state = Mutex::new(State::default());
        let ck = |bids: &[Level]| tickcast::model::checksum(bids, &[], 10);
        let (ev, re) = process(&state, snapshot("A", 5));
        assert_eq!((ev.len(), re), (1, None));
        let (ev, re) = process(&state, book("A", 6, 1.0, ck(&[Level { px: 1.0, sz: 1.0 }])));
        assert_eq!((ev.len(), re), (1, None));
        // A gap: passed on, reported, resubscribed.
        let (ev, re) = process(&state, book("A", 9, 2.0, 0));
        assert_eq!(ev[1], SessionEvent::Gap { sym: "A".into(), expected: 7, got: 9 });
        assert_eq!(re.as_deref(), Some("A"));
        // Updates until the new snapshot are held back.
        assert!(process(&state, book("A", 10, 2.0, 0)).0.is_empty());
        process(&state, snapshot("A", 20));
        // A checksum mismatch.
        let (ev, re) = process(&state, book("A", 21, 3.0, 12345));
        assert_eq!(ev[1], SessionEvent::BookChecksumMismatch { sym: "A".into() });
        assert_eq!(re.as_deref(), Some("A"));
        // A reset drops the book until its snapshot.
        process(&state, snapshot("A", 30));
        process(&state, ServerMessage::reset("A", 3, tickcast::wire::ResetReason::Epoch));
        assert!(!lock(&state).books.contains_key("A"));
        let (ev, re) = process(&state, snapshot("A", 3));
        assert_eq!((ev.len(), re), (1, None));
        assert_eq!(lock(&state).seqs.last("A"), Some(3));
    }

    #[test]
    fn a_reconnect_resumes_only_whole_symbols_and_only_under_a_known_epoch() {
        let state = Mutex::new(State::default());
        let ck = |bids: &[Level]| tickcast::model::checksum(bids, &[], 10);
        for (sym, seq) in [("A", 5), ("B", 7), ("C", 9)] {
            process(&state, snapshot(sym, seq));
        }
        process(&state, book("A", 6, 1.0, ck(&[Level { px: 1.0, sz: 1.0 }])));
        // B is reset: no book until its snapshot. C has a gap: resyncing.
        process(&state, ServerMessage::reset("B", 3, tickcast::wire::ResetReason::Epoch));
        assert_eq!(process(&state, book("C", 12, 2.0, 0)).1.as_deref(), Some("C"));

        // No epoch (no ack yet, or a server without resume): nothing.
        let mut s = lock(&state);
        assert!(s.prepare_reconnect(true).is_empty());
        assert!(s.seqs.is_empty() && s.books.is_empty());
        drop(s);

        for (sym, seq) in [("A", 5), ("B", 7), ("C", 9)] {
            process(&state, snapshot(sym, seq));
        }
        process(&state, book("A", 6, 1.0, ck(&[Level { px: 1.0, sz: 1.0 }])));
        process(&state, ServerMessage::reset("B", 3, tickcast::wire::ResetReason::Epoch));
        process(&state, book("C", 12, 2.0, 0));
        let mut s = lock(&state);
        s.epoch = Some(42);
        let kept = s.books.get("A").cloned();
        assert_eq!(s.prepare_reconnect(true), vec![("A".to_string(), 6)], "only A is whole");
        assert_eq!((s.seqs.len(), s.seqs.last("A")), (1, Some(6)));
        assert_eq!(s.books.get("A").cloned(), kept, "A keeps its book");
        assert!(s.resyncing.is_empty() && s.books.len() == 1);
        assert_eq!(s.resuming.get("A"), Some(&6));
        drop(s);

        // The resume ack: A recovered keeps its book and seq; the next
        // update follows the seq held.
        let mut ack = ServerMessage::ack("subscribe", vec!["A".into()]);
        if let ServerMessage::Ack { epoch, recovered, .. } = &mut ack {
            *epoch = Some(42);
            recovered.insert("A".into(), true);
        }
        let (ev, _) = process(&state, ack.clone());
        assert_eq!(ev[1], SessionEvent::Resumed { sym: "A".into(), from_seq: 6, recovered: true });
        assert_eq!(lock(&state).books.get("A").cloned(), kept);
        let (ev, re) = process(&state, book("A", 7, 1.0, ck(&[Level { px: 1.0, sz: 1.0 }])));
        assert_eq!((ev.len(), re), (1, None), "in order, the book agrees");

        // Not recovered: the book goes at once; the reset and snapshot
        // that follow replace the state.
        let mut s = lock(&state);
        assert_eq!(s.prepare_reconnect(true), vec![("A".to_string(), 7)]);
        drop(s);
        if let ServerMessage::Ack { epoch, recovered, .. } = &mut ack {
            *epoch = Some(43);
            recovered.insert("A".into(), false);
        }
        let (ev, _) = process(&state, ack);
        assert_eq!(ev[1], SessionEvent::Resumed { sym: "A".into(), from_seq: 7, recovered: false });
        assert!(lock(&state).books.is_empty());
        assert_eq!(lock(&state).epoch, Some(43), "the new epoch is the one to send next");
        process(&state, ServerMessage::reset("A", 2, tickcast::wire::ResetReason::Epoch));
        let (ev, re) = process(&state, snapshot("A", 2));
        assert_eq!((ev.len(), re), (1, None));
        assert_eq!(lock(&state).seqs.last("A"), Some(2));
        assert!(lock(&state).books.contains_key("A"));

        // With resume off, every symbol starts again from a snapshot.
        let mut s = lock(&state);
        assert!(s.prepare_reconnect(false).is_empty());
        assert!(s.seqs.is_empty() && s.books.is_empty());
    }
}

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
//! Resume by seq (`from_seq` on subscribe) does not exist on the server
//! yet; [`Session::resume_seqs`] is where the last seq per symbol is
//! available for it, and nothing is sent.
//!
//! Imports: [`crate::client`] (connect, subscribe, raw frames),
//! [`crate::seq`], [`crate::book`], `tickcast::wire` (decode).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tickcast::wire::{decode, Encoding, ServerMessage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::book::ClientBook;
use crate::client::Client;
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
}

impl SessionConfig {
    /// A configuration with the defaults: msgpack, depth 10, backoff
    /// 100 ms base and 10 s cap, a 30 s heartbeat watchdog (twice the
    /// server's default ping interval, so a quiet stream is not taken for a
    /// dead one).
    pub fn new(addr: impl Into<String>, symbols: Vec<String>) -> SessionConfig {
        SessionConfig {
            addr: addr.into(),
            encoding: Encoding::Msgpack,
            symbols,
            depth: "10".into(),
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
            heartbeat_timeout: Duration::from_secs(30),
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
    Connected,
    /// A connection failed or was lost; the next attempt is in `retry_in`.
    Disconnected {
        /// Why, for a human.
        reason: String,
        /// The backoff delay before the next attempt.
        retry_in: Duration,
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
/// [`Session::book`] and [`Session::resume_seqs`].
#[derive(Debug, Default)]
struct State {
    seqs: SeqTracker,
    books: HashMap<String, ClientBook>,
    /// Symbols resubscribed and waiting for their snapshot.
    resyncing: HashMap<String, ()>,
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

    /// The last seq per subscribed symbol seen so far: what a subscribe
    /// with `from_seq` would send to resume once the server supports it.
    /// It is not sent today; every reconnect starts from a snapshot.
    pub fn resume_seqs(&self, symbols: &[String]) -> Vec<(String, u64)> {
        let state = lock(&self.state);
        symbols.iter().filter_map(|s| state.seqs.last(s).map(|seq| (s.clone(), seq))).collect()
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
        let (reason, had_data) = match connect(&config).await {
            Ok(client) => {
                {
                    // A new connection starts every symbol from its snapshot.
                    let mut s = lock(&state);
                    s.seqs = SeqTracker::with_capacity(config.symbols.len());
                    s.books.clear();
                    s.resyncing.clear();
                }
                if tx.send(SessionEvent::Connected).await.is_err() {
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
        attempt = attempt.saturating_add(1);
        if tx.send(SessionEvent::Disconnected { reason, retry_in }).await.is_err() {
            return;
        }
        tokio::time::sleep(retry_in).await;
    }
}

/// The session's socket: a plain WebSocket whose pings reach the reader
/// (the server sends every message as one frame, so no reassembly).
type Ws = WebSocket<TokioIo<Upgraded>>;

async fn connect(config: &SessionConfig) -> Result<Ws, Error> {
    let addr = tokio::net::lookup_host(&config.addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let mut client = Client::connect(addr, config.encoding).await?;
    let symbols: Vec<&str> = config.symbols.iter().map(String::as_str).collect();
    client.subscribe_depth(&symbols, &config.depth).await?;
    // Nothing was read yet, so nothing is lost. Pings are answered here, so
    // the watchdog sees them.
    let mut ws = WebSocket::after_handshake(client.into_inner(), Role::Client);
    ws.set_auto_pong(false);
    Ok(ws)
}

/// Sends one JSON request.
async fn send_json(ws: &mut Ws, msg: serde_json::Value) -> Result<(), Error> {
    ws.write_frame(Frame::text(Payload::Owned(msg.to_string().into_bytes()))).await?;
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
            let syms = [sym.as_str()];
            let depth = match config.depth.parse::<u64>() {
                Ok(n) => serde_json::json!(n),
                Err(_) => serde_json::json!(config.depth),
            };
            let sent = async {
                send_json(&mut client, serde_json::json!({"op": "unsubscribe", "symbols": syms})).await?;
                send_json(&mut client, serde_json::json!({"op": "subscribe", "symbols": syms, "depth": depth})).await
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
            if s.resyncing.contains_key(sym.as_ref()) {
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
        s.resyncing.insert(sym.clone(), ());
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
}

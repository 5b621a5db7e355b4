//! Resume by seq under real failures, against the server binary run as a
//! child process (`support::process`), over 127.0.0.1:
//!
//! - the client's connection cut in the middle of the stream by a proxy
//!   (a clean close, and a reset): the session reconnects through the
//!   proxy, the ack says every symbol is recovered, and the session has
//!   seen every seq exactly once across the seam, with no snapshot, in
//!   msgpack, protobuf and json; its books match an independent
//!   subscriber's at the same seq;
//! - the server SIGKILLed and started again on the same port: the session
//!   reconnects by itself, every delay within its backoff bound; history
//!   died with the process, so each symbol gets a reset and a snapshot
//!   (not recovered), and its book matches afterwards.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::process::ServerProcess;
use support::proxy::{Cut, Proxy};
use tickcast::wire::{Encoding, ResetReason, ServerMessage};
use tickcast_client::session::{backoff_bound, Session, SessionConfig, SessionEvent};
use tickcast_client::{http_get, Client, ClientBook};

/// A synthetic market of 4 symbols at 2,000 updates a second: busy enough
/// that a cut lands mid-stream, light enough for a loaded 2-core machine.
const SERVER_ARGS: &[&str] = &["--symbols", "4", "--rate", "2000", "--seed", "7"];

/// Book levels per side the tests subscribe at.
const DEPTH: &str = "10";

/// No single wait in these tests is longer: a stuck test fails, it does
/// not hang.
const PATIENCE: Duration = Duration::from_secs(15);

async fn symbols(addr: SocketAddr, n: usize) -> Vec<String> {
    let (status, body) = http_get(addr, "/symbols").await.expect("GET /symbols");
    assert_eq!(status, 200, "{body}");
    let names: Vec<String> = serde_json::from_str(&body).expect("a JSON array");
    assert!(names.len() >= n, "{names:?}");
    names.into_iter().take(n).collect()
}

async fn next(session: &mut Session) -> SessionEvent {
    tokio::time::timeout(PATIENCE, session.next_event()).await.expect("an event in time").expect("session running")
}

/// What a test saw of one symbol: every seq delivered, in order, starting
/// with the snapshot's.
#[derive(Debug, Default)]
struct Seen {
    seqs: HashMap<String, Vec<u64>>,
    snapshots: usize,
}

impl Seen {
    /// Takes a market message or snapshot; returns whether it was an
    /// update (trade, quote or book).
    fn take(&mut self, msg: &ServerMessage<'_>) -> bool {
        match msg {
            ServerMessage::Snapshot { sym, seq, .. } => {
                self.snapshots += 1;
                self.seqs.entry(sym.to_string()).or_default().push(*seq);
                false
            }
            ServerMessage::Trade { sym, seq, .. }
            | ServerMessage::Quote { sym, seq, .. }
            | ServerMessage::Book { sym, seq, .. } => {
                self.seqs.entry(sym.to_string()).or_default().push(*seq);
                true
            }
            _ => false,
        }
    }

    fn last(&self, sym: &str) -> u64 {
        *self.seqs.get(sym).and_then(|s| s.last()).unwrap_or_else(|| panic!("nothing seen of {sym}"))
    }

    fn count(&self, sym: &str) -> usize {
        self.seqs.get(sym).map_or(0, Vec::len)
    }

    /// Every seq of `sym` follows the one before by exactly 1.
    fn assert_gapless(&self, sym: &str, what: &str) {
        let seqs = &self.seqs[sym];
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "{what}: {sym} went from {} to {}", pair[0], pair[1]);
        }
    }
}

/// Events that must never come in these tests.
fn assert_healthy(event: &SessionEvent, what: &str) {
    assert!(
        !matches!(event, SessionEvent::Gap { .. } | SessionEvent::BookChecksumMismatch { .. }),
        "{what}: {event:?}"
    );
    if let SessionEvent::Message(m @ (ServerMessage::Conflated { .. } | ServerMessage::Error { .. })) = event {
        panic!("{what}: {m:?}");
    }
}

/// Reads events, feeding market messages to `seen`, until every symbol has
/// `per_symbol` more entries than it had.
async fn read_updates(session: &mut Session, seen: &mut Seen, syms: &[String], per_symbol: usize, what: &str) {
    let target: Vec<usize> = syms.iter().map(|s| seen.count(s) + per_symbol).collect();
    while syms.iter().zip(&target).any(|(s, &t)| seen.count(s) < t) {
        let event = next(session).await;
        assert_healthy(&event, what);
        match event {
            SessionEvent::Message(msg) => {
                seen.take(&msg);
            }
            other => panic!("{what}: unexpected {other:?}"),
        }
    }
}

async fn read_message(client: &mut Client) -> ServerMessage<'static> {
    tokio::time::timeout(PATIENCE, client.next_message()).await.expect("a message in time").expect("a message")
}

/// An independent subscriber's book of `sym` against the session's, at the
/// same seq: the subscriber takes a snapshot, then the session's book is
/// read together with its seq (at or past the snapshot's; the session's
/// events are read meanwhile, so its task never waits on a full channel),
/// and the subscriber applies updates up to that seq.
async fn assert_book_matches_server(session: &mut Session, server: SocketAddr, sym: &str, encoding: Encoding) {
    let mut fresh = Client::connect(server, encoding).await.expect("an independent subscriber");
    fresh.subscribe_depth(&[sym], DEPTH).await.expect("subscribe");
    let (mut at, mut book) = loop {
        if let ServerMessage::Snapshot { seq, depth, book, .. } = read_message(&mut fresh).await {
            break (seq, ClientBook::from_snapshot(depth as usize, &book).expect("a sound snapshot"));
        }
    };
    let waited = Instant::now();
    let (target, session_book) = loop {
        match session.book_with_seq(sym) {
            Some((seq, book)) if seq >= at => break (seq, book),
            _ => {
                assert!(waited.elapsed() < PATIENCE, "the session's {sym} never reached seq {at}");
                let event = next(session).await;
                assert_healthy(&event, "while comparing books");
            }
        }
    };
    while at < target {
        match read_message(&mut fresh).await {
            ServerMessage::Book { seq, bids, asks, checksum, .. } => {
                assert_eq!(seq, at + 1);
                book.apply(&bids, &asks, checksum).expect("the independent book agrees with the server");
                at = seq;
            }
            ServerMessage::Trade { seq, .. } | ServerMessage::Quote { seq, .. } => {
                assert_eq!(seq, at + 1);
                at = seq;
            }
            _ => {}
        }
    }
    assert_eq!(session_book, book, "{sym} at seq {target}: the session's book and a fresh subscriber's");
    assert_eq!(session_book.checksum(), book.checksum());
}

fn config(addr: SocketAddr, syms: &[String], encoding: Encoding) -> SessionConfig {
    let mut config = SessionConfig::new(addr.to_string(), syms.to_vec());
    config.encoding = encoding;
    config.depth = DEPTH.into();
    config.backoff_base = Duration::from_millis(20);
    config.backoff_cap = Duration::from_millis(200);
    config.heartbeat_timeout = Duration::from_secs(10);
    config
}

/// One cut, one encoding: see the module doc.
async fn resume_across_a_cut(server: SocketAddr, syms: &[String], encoding: Encoding, cut: Cut) {
    let what = format!("{} / {cut:?}", encoding.name());
    let proxy = Proxy::start(server).await;
    let mut session = Session::start(config(proxy.addr, syms, encoding));
    assert_eq!(next(&mut session).await, SessionEvent::Connected { resuming: 0 }, "{what}");
    let mut seen = Seen::default();
    read_updates(&mut session, &mut seen, syms, 60, &what).await;
    assert_eq!(seen.snapshots, syms.len(), "{what}: one snapshot per symbol");
    let epoch = session.epoch().unwrap_or_else(|| panic!("{what}: the subscribe ack carries the epoch"));

    assert_eq!(proxy.cut(cut), 1, "{what}: one connection through the proxy");
    // Events the session had read before the cut come first.
    let reason = loop {
        let event = next(&mut session).await;
        assert_healthy(&event, &what);
        match event {
            SessionEvent::Message(msg) => {
                seen.take(&msg);
            }
            SessionEvent::Disconnected { reason, retry_in, attempt } => {
                assert_eq!(attempt, 0, "{what}: a connection that delivered data resets the backoff");
                assert!(retry_in <= Duration::from_millis(20), "{what}: {retry_in:?}");
                break reason;
            }
            other => panic!("{what}: unexpected {other:?}"),
        }
    };
    let held: Vec<u64> = syms.iter().map(|s| seen.last(s)).collect();
    assert_eq!(
        next(&mut session).await,
        SessionEvent::Connected { resuming: syms.len() },
        "{what}: reconnected after {reason:?}"
    );
    match next(&mut session).await {
        SessionEvent::Message(ServerMessage::Ack { op, epoch: ack_epoch, recovered, .. }) => {
            assert_eq!(op, "subscribe");
            assert_eq!(ack_epoch, Some(epoch), "{what}: the same server, the same epoch");
            for sym in syms {
                assert_eq!(recovered.get(sym.as_str()), Some(&true), "{what}: {sym} in {recovered:?}");
            }
        }
        other => panic!("{what}: expected the resume ack, got {other:?}"),
    }
    let mut resumed: Vec<(String, u64)> = Vec::new();
    for _ in syms {
        match next(&mut session).await {
            SessionEvent::Resumed { sym, from_seq, recovered: true } => resumed.push((sym, from_seq)),
            other => panic!("{what}: expected Resumed, got {other:?}"),
        }
    }
    resumed.sort();
    let expected: Vec<(String, u64)> = syms.iter().cloned().zip(held).collect();
    assert_eq!(resumed, expected, "{what}: from_seq is the last seq the session passed on");
    assert_eq!(proxy.accepted(), 2, "{what}: the second connection went through the proxy too");

    read_updates(&mut session, &mut seen, syms, 100, &what).await;
    assert_eq!(seen.snapshots, syms.len(), "{what}: no snapshot for a recovered symbol");
    for sym in syms {
        seen.assert_gapless(sym, &what);
        assert_book_matches_server(&mut session, server, sym, encoding).await;
    }
    assert_eq!(session.epoch(), Some(epoch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_every_seq_exactly_once_in_every_encoding() {
    let server = ServerProcess::start("127.0.0.1:0".parse().unwrap(), SERVER_ARGS);
    let syms = symbols(server.addr, 2).await;
    for encoding in [Encoding::Msgpack, Encoding::Protobuf, Encoding::Json] {
        for cut in [Cut::Close, Cut::Reset] {
            let run = resume_across_a_cut(server.addr, &syms, encoding, cut);
            if tokio::time::timeout(Duration::from_secs(60), run).await.is_err() {
                panic!("{} / {cut:?} took over 60 s; server log:\n{}", encoding.name(), server.log());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_server_is_rejoined_with_backoff_reset_and_snapshot() {
    let server = ServerProcess::start("127.0.0.1:0".parse().unwrap(), SERVER_ARGS);
    let addr = server.addr;
    let syms = symbols(addr, 2).await;
    let mut config = config(addr, &syms, Encoding::Msgpack);
    config.backoff_base = Duration::from_millis(50);
    config.backoff_cap = Duration::from_millis(400);
    let (base, cap) = (config.backoff_base, config.backoff_cap);
    let mut session = Session::start(config);
    assert_eq!(next(&mut session).await, SessionEvent::Connected { resuming: 0 });
    let mut seen = Seen::default();
    read_updates(&mut session, &mut seen, &syms, 50, "before the kill").await;
    let first_epoch = session.epoch().expect("an epoch");

    let addr = server.kill();
    let down_for = Duration::from_millis(1200);
    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(down_for);
        let server = ServerProcess::start(addr, SERVER_ARGS);
        (server, Instant::now())
    });

    // Every retry while it is down: a delay within its bound, the attempt
    // counting up from 0 (the lost connection had delivered data).
    let mut attempts: Vec<u32> = Vec::new();
    loop {
        let event = next(&mut session).await;
        assert_healthy(&event, "while down");
        match event {
            SessionEvent::Message(msg) => {
                seen.take(&msg);
            }
            SessionEvent::Disconnected { retry_in, attempt, reason } => {
                let bound = backoff_bound(base, cap, attempt);
                assert!(retry_in <= bound, "attempt {attempt}: {retry_in:?} > {bound:?} ({reason})");
                assert_eq!(attempt as usize, attempts.len(), "attempts count up: {attempts:?}");
                attempts.push(attempt);
            }
            SessionEvent::Connected { resuming } => {
                assert_eq!(resuming, syms.len(), "it asks to resume what it held");
                break;
            }
            other => panic!("while down: unexpected {other:?}"),
        }
    }
    let connected = Instant::now();
    let (server, restarted) = restart.await.expect("restart");
    assert!(attempts.len() >= 3, "it retried while the server was down: {attempts:?}");
    // The first retry after the restart is due within one bound (the cap),
    // plus room for a loaded machine.
    let late = connected.saturating_duration_since(restarted);
    assert!(late < cap + Duration::from_secs(3), "reconnected {late:?} after the restart");

    // The ack: a new epoch, nothing recovered; then per symbol a reset
    // (epoch) and a snapshot at its seq, which replace the state held.
    match next(&mut session).await {
        SessionEvent::Message(ServerMessage::Ack { epoch, recovered, .. }) => {
            assert!(epoch.is_some_and(|e| e != first_epoch), "a restarted server has a new epoch: {epoch:?}");
            for sym in &syms {
                assert_eq!(recovered.get(sym.as_str()), Some(&false), "{sym} in {recovered:?}");
            }
        }
        other => panic!("expected the resume ack, got {other:?}"),
    }
    let mut not_recovered = 0;
    let mut reset_at: HashMap<String, u64> = HashMap::new();
    let mut after: HashMap<String, Vec<u64>> = HashMap::new();
    while after.len() < syms.len() || after.values().any(|s| s.len() < 50) {
        let event = next(&mut session).await;
        assert_healthy(&event, "after the restart");
        match event {
            SessionEvent::Resumed { recovered: false, .. } => not_recovered += 1,
            SessionEvent::Message(ServerMessage::Reset { sym, seq, reason }) => {
                assert_eq!(reason, ResetReason::Epoch, "{sym}");
                assert!(!after.contains_key(sym.as_ref()), "{sym}: a reset before its snapshot");
                reset_at.insert(sym.to_string(), seq);
            }
            SessionEvent::Message(ServerMessage::Snapshot { sym, seq, .. }) => {
                assert_eq!(reset_at.get(sym.as_ref()), Some(&seq), "{sym}: the snapshot at the reset's seq");
                after.insert(sym.to_string(), vec![seq]);
            }
            SessionEvent::Message(msg) => {
                let (sym, seq) = msg.sym_seq().expect("a market message");
                let seqs = after.get_mut(sym).unwrap_or_else(|| panic!("{sym} {seq} before its snapshot"));
                assert_eq!(seq, seqs.last().unwrap() + 1, "{sym}: gapless after the snapshot");
                seqs.push(seq);
            }
            other => panic!("after the restart: unexpected {other:?}"),
        }
    }
    assert_eq!(not_recovered, syms.len(), "each symbol told not recovered");
    assert_ne!(session.epoch(), Some(first_epoch), "the session follows the new epoch");
    for sym in &syms {
        assert_book_matches_server(&mut session, server.addr, sym, Encoding::Msgpack).await;
    }
}

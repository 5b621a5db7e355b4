//! The slow-consumer ladder over real sockets: a subscriber that stops
//! reading is conflated, then closed with 1008 "slow consumer", with its
//! memory bounded throughout; one that pauses and resumes learns what it
//! missed and rebuilds exactly the state a healthy subscriber has; one that
//! asked for `?slow=disconnect` is closed instead of conflated. Healthy
//! subscribers meanwhile lose nothing, and the ingest ring never fills.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::start;
use tickcast::config::Config;
use tickcast::engine::SlowConsumerPolicy;
use tickcast::feed::{FeedSpec, SyntheticSettings};
use tickcast::model::Book;
use tickcast::model::{BookDelta, Quote, Trade};
use tickcast::wire::{Encoding, ServerMessage};
use tickcast_client::{http_get, scrape_value, Client, Event};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// These tests measure how the server treats readers that fall behind, so
/// they must not make each other's healthy readers fall behind: on a
/// 2-core machine, with debug builds, four servers at once did. They run
/// one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await.unwrap();
    scrape_value(&body, name).unwrap_or_else(|| panic!("{name} missing"))
}

/// A connected socket with a 4 KiB receive buffer, so that the server's
/// side fills quickly when it is not read.
fn small_buffer_socket(addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    TcpStream::from_std(socket.into()).unwrap()
}

/// A subscriber to everything that never reads after the handshake.
async fn stalled_subscriber(addr: SocketAddr, path: &str) -> TcpStream {
    common::handshake_and_subscribe_all(small_buffer_socket(addr), addr, path).await
}

/// Reads `client` on its own task (so metric scrapes never make it slow),
/// asserting gapless seq per symbol, until `done` is set.
fn healthy_reader(mut client: Client, received: Arc<AtomicU64>, done: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = HashMap::<String, u64>::new();
        while !done.load(Ordering::Relaxed) {
            let msg = tokio::time::timeout(Duration::from_secs(5), client.next_message()).await.unwrap().unwrap();
            assert!(!matches!(msg, ServerMessage::Conflated { .. }), "a healthy subscriber was conflated");
            if let Some((sym, seq)) = msg.sym_seq() {
                let is_update = !matches!(msg, ServerMessage::Snapshot { .. });
                if let Some(prev) = last.insert(sym.to_owned(), seq) {
                    assert!(!is_update || seq == prev + 1, "healthy subscriber saw a gap in {sym}: {prev} -> {seq}");
                }
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Fails with the healthy reader's own panic if it ended before it was
/// told to stop.
async fn still_reading(reader: &mut tokio::task::JoinHandle<()>) {
    if reader.is_finished() {
        (&mut *reader).await.expect("the healthy subscriber saw every update, in order");
        panic!("the healthy subscriber stopped before it was told to");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_conflate_then_disconnect_and_healthy_ones_lose_nothing() {
    let _serial = SERIAL.lock().await;
    const STALLED: f64 = 3.0;
    let conflate_above = 256 * 1024;
    let disconnect_above = 8 << 20;
    let running = start(Config {
        synthetic: SyntheticSettings { symbols: 10, rate: 20_000.0, seed: 5 },
        slow: SlowConsumerPolicy { conflate_above, disconnect_above, slow_timeout: Duration::from_secs(2) },
        ..Config::default()
    })
    .await;
    let addr = running.addr;

    let mut healthy = Client::connect(addr, Encoding::Msgpack).await.unwrap();
    healthy.subscribe(&["*"]).await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut reader = healthy_reader(healthy, received.clone(), done.clone());
    let mut stalled = Vec::new();
    for encoding in ["json", "msgpack", "protobuf"] {
        stalled.push(stalled_subscriber(addr, &format!("/ws?encoding={encoding}")).await);
    }

    let started = Instant::now();
    let mut disconnected_at = None;
    let (mut kernel_max, mut session_max, mut conflating_max, mut over_64k) = (0f64, 0f64, 0f64, 0f64);
    while started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = received.load(Ordering::Relaxed);
        if disconnected_at.is_none() {
            // While stalled: bytes in the kernel, outboxes bounded by the
            // conflation mark, sessions shown as conflating.
            kernel_max = kernel_max.max(metric(addr, "tickcast_kernel_queued_bytes").await);
            session_max = session_max.max(metric(addr, "tickcast_session_queued_bytes_max").await);
            conflating_max = conflating_max.max(metric(addr, "tickcast_sessions{state=\"conflating\"}").await);
            let count = metric(addr, "tickcast_session_buffered_bytes_count").await;
            let small = metric(addr, "tickcast_session_buffered_bytes_bucket{le=\"65536\"}").await;
            over_64k = over_64k.max(count - small);
            if metric(addr, "tickcast_slow_disconnects_total").await == STALLED {
                disconnected_at = Some(now);
            }
        }
        if disconnected_at.is_some_and(|at| now >= at + 20_000) || reader.is_finished() {
            break;
        }
    }
    // Each closed session waits up to --slow-timeout for its close frame,
    // then ends; the healthy subscriber is still connected and reading
    // (its own close would race the count down past 1).
    still_reading(&mut reader).await;
    tokio::time::timeout(Duration::from_secs(15), async {
        while metric(addr, "tickcast_connections").await != 1.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the slow sessions ended while the healthy one stayed");
    still_reading(&mut reader).await;
    done.store(true, Ordering::Relaxed);
    reader.await.expect("the healthy subscriber saw every update, in order");
    let received = received.load(Ordering::Relaxed);
    let at = disconnected_at.expect("the stalled subscribers were closed as slow consumers");
    assert!(received >= at + 20_000, "healthy subscriber kept receiving after the disconnects");

    // Step 2 of the ladder came first: each stalled session conflated.
    assert_eq!(metric(addr, "tickcast_conflation_episodes_total").await, STALLED);
    assert_eq!(conflating_max, STALLED, "all three were seen conflating at once");
    let held: f64 = [
        metric(addr, "tickcast_skipped_updates_total{kind=\"trade\"}").await,
        metric(addr, "tickcast_skipped_updates_total{kind=\"quote\"}").await,
        metric(addr, "tickcast_skipped_updates_total{kind=\"book\"}").await,
    ]
    .iter()
    .sum();
    assert!(held > 1000.0, "updates were held back from the stalled sessions: {held}");
    // Memory: a conflating session's queue stops at the mark plus what the
    // engine staged in the two flushes around crossing it (each at most
    // about 64 KiB plus one 512-tick batch), far below --disconnect-above.
    assert!(session_max > 0.0 && session_max <= (conflate_above + 256 * 1024) as f64, "{session_max}");
    assert!(kernel_max > 0.0, "SIOCOUTQ showed the stalled sockets' kernel queues");
    assert!(over_64k >= 1.0, "the histogram showed sessions over 64 KiB buffered");
    // Step 3: closed after --slow-timeout without progress, freed at once.
    assert_eq!(metric(addr, "tickcast_slow_disconnects_total").await, STALLED, "only the stalled ones were dropped");
    assert!(metric(addr, "tickcast_queued_bytes").await < conflate_above as f64);
    assert_eq!(metric(addr, "tickcast_sessions{state=\"conflating\"}").await, 0.0);
    // Isolation: the ingest thread never waited on the engine.
    assert_eq!(metric(addr, "tickcast_ring_full_total").await, 0.0, "a slow consumer made the feed wait");
    drop(stalled);
    running.shutdown_within(Duration::from_secs(5)).await;
}

/// A symbol's state as a client rebuilds it from snapshots and updates.
#[derive(Debug, Default, PartialEq)]
struct SymbolState {
    seq: u64,
    quote: Option<Quote>,
    trade: Option<Trade>,
    book: Book,
}

/// What a client saw while rebuilding state.
#[derive(Default)]
struct Rebuilt {
    state: HashMap<String, SymbolState>,
    /// (sym, from_seq, to_seq, trades + quotes + books) per conflated entry.
    skipped: Vec<(String, u64, u64, u64)>,
    skipped_trades: u64,
}

impl Rebuilt {
    /// Applies one message; checks seq continuity and that every
    /// `conflated` entry is followed by a snapshot at its `to_seq`.
    fn apply(&mut self, msg: ServerMessage<'static>, expect_snapshot: &mut HashMap<String, u64>) {
        match msg {
            ServerMessage::Snapshot { sym, seq, quote, trade, book, .. } => {
                if let Some(to_seq) = expect_snapshot.remove(&*sym) {
                    assert_eq!(seq, to_seq, "{sym}: the recovery snapshot is at the last skipped seq");
                }
                let mut b = Book::default();
                b.apply(&BookDelta { bids: book.bids.into_owned(), asks: book.asks.into_owned() });
                self.state.insert(sym.into_owned(), SymbolState { seq, quote, trade, book: b });
            }
            ServerMessage::Conflated { symbols } => {
                for s in symbols {
                    let st = &self.state[&*s.sym];
                    assert!(!expect_snapshot.contains_key(&*s.sym), "{}: named twice before its snapshot", s.sym);
                    assert_eq!(s.from_seq, st.seq + 1, "{}: the skipped range starts right after what arrived", s.sym);
                    assert_eq!(s.trades + s.quotes + s.books, s.to_seq - s.from_seq + 1, "{}: counts add up", s.sym);
                    expect_snapshot.insert(s.sym.to_string(), s.to_seq);
                    self.skipped.push((s.sym.to_string(), s.from_seq, s.to_seq, s.trades + s.quotes + s.books));
                    self.skipped_trades += s.trades;
                }
            }
            msg => {
                let Some((sym, seq)) = msg.sym_seq() else { return };
                assert!(!expect_snapshot.contains_key(sym), "{sym}: update before the recovery snapshot");
                let st = self.state.get_mut(sym).expect("update after snapshot");
                assert_eq!(seq, st.seq + 1, "{sym}: gap");
                st.seq = seq;
                match msg {
                    ServerMessage::Quote { bid, bid_sz, ask, ask_sz, .. } => {
                        st.quote = Some(Quote { bid, bid_sz, ask, ask_sz })
                    }
                    ServerMessage::Trade { px, sz, side, .. } => st.trade = Some(Trade { px, sz, side }),
                    ServerMessage::Book { bids, asks, .. } => {
                        st.book.apply(&BookDelta { bids: bids.into_owned(), asks: asks.into_owned() })
                    }
                    _ => {}
                }
            }
        }
    }

    fn caught_up(&self, last_seq: &HashMap<String, u64>) -> bool {
        last_seq.iter().all(|(sym, seq)| self.state.get(sym).is_some_and(|s| s.seq == *seq))
    }
}

/// Feed lines for round `j`: a quote, a book change (adding one level and
/// deleting another, so the book keeps changing shape) and a trade for
/// every symbol.
fn feed_round(symbols: &[&str], j: u64) -> String {
    let mut out = String::new();
    for (i, sym) in symbols.iter().enumerate() {
        let base = 100.0 + i as f64 * 10.0;
        let step = (j % 20) as f64 * 0.25;
        let gone = ((j + 10) % 20) as f64 * 0.25;
        out += &format!(
            "{{\"type\":\"quote\",\"sym\":\"{sym}\",\"bid\":{},\"bid_sz\":{},\"ask\":{},\"ask_sz\":{},\"ts_event\":{}}}\n",
            base - step,
            1 + j % 7,
            base + 1.0 + step,
            2 + j % 5,
            j + 1
        );
        out += &format!(
            "{{\"type\":\"book\",\"sym\":\"{sym}\",\"bids\":[[{},{}],[{},0]],\"asks\":[[{},{}],[{},0]],\"ts_event\":{}}}\n",
            base - step,
            1 + j % 9,
            base - gone,
            base + 1.0 + step,
            1 + j % 11,
            base + 1.0 + gone,
            j + 1
        );
        out += &format!(
            "{{\"type\":\"trade\",\"sym\":\"{sym}\",\"px\":{},\"sz\":{},\"side\":\"{}\",\"ts_event\":{}}}\n",
            base + 0.5,
            1 + j % 13,
            if j.is_multiple_of(2) { "buy" } else { "sell" },
            j + 1
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_subscriber_learns_what_it_missed_and_rebuilds_exact_state() {
    let _serial = SERIAL.lock().await;
    let symbols = ["AAA", "BBB", "CCC", "DDD"];
    let running = start(Config {
        feed: FeedSpec::Tcp("127.0.0.1:0".parse().unwrap()),
        book_depth: 1000,
        slow: SlowConsumerPolicy {
            conflate_above: 256 * 1024,
            disconnect_above: 8 << 20,
            slow_timeout: Duration::from_secs(30),
        },
        ..Config::default()
    })
    .await;
    let addr = running.addr;
    let mut feed = TcpStream::connect(running.feed.unwrap()).await.unwrap();
    let mut round = 0u64;
    feed.write_all(feed_round(&symbols, round).as_bytes()).await.unwrap();
    round += 1;
    while metric(addr, "tickcast_updates_published_total").await < 12.0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The healthy one reads all along, on its own task.
    let mut healthy = Client::connect(addr, Encoding::Msgpack).await.unwrap();
    healthy.subscribe(&symbols).await.unwrap();
    let (last_tx, last_rx) = tokio::sync::oneshot::channel::<HashMap<String, u64>>();
    let healthy_task = tokio::spawn(async move {
        // Read while the feed runs, then up to the final seqs.
        let mut rebuilt = Rebuilt::default();
        let mut expect = HashMap::new();
        let mut last_rx = last_rx;
        let last_seq = loop {
            tokio::select! {
                last = &mut last_rx => break last.unwrap(),
                msg = healthy.next_message() => rebuilt.apply(msg.unwrap(), &mut expect),
            }
        };
        while !rebuilt.caught_up(&last_seq) {
            let msg = tokio::time::timeout(Duration::from_secs(10), healthy.next_message()).await.unwrap().unwrap();
            rebuilt.apply(msg, &mut expect);
        }
        rebuilt
    });

    // The paused one: JSON, a small receive buffer, reads its snapshots and
    // then stops reading.
    let stream = small_buffer_socket(addr);
    let mut paused = Client::connect_stream(stream, addr, "/ws?encoding=json", Encoding::Json).await.unwrap();
    paused.subscribe(&symbols).await.unwrap();
    let mut before = Rebuilt::default();
    let mut expect = HashMap::new();
    assert!(matches!(paused.next_message().await.unwrap(), ServerMessage::Ack { .. }));
    for _ in 0..symbols.len() {
        before.apply(paused.next_message().await.unwrap(), &mut expect);
    }

    // Feed until the paused session is conflating, then as much again.
    let started = Instant::now();
    let mut conflating_since = None;
    loop {
        for _ in 0..10 {
            feed.write_all(feed_round(&symbols, round).as_bytes()).await.unwrap();
            round += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if conflating_since.is_none() && metric(addr, "tickcast_sessions{state=\"conflating\"}").await == 1.0 {
            conflating_since = Some(round);
        }
        if conflating_since.is_some_and(|r| round >= 2 * r) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the paused session never started conflating");
    }
    // Every tick published: each symbol's final seq is 3 per round.
    let total = round * 3 * symbols.len() as u64;
    while metric(addr, "tickcast_updates_published_total").await < total as f64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last_seq: HashMap<String, u64> = symbols.iter().map(|s| (s.to_string(), round * 3)).collect();
    last_tx.send(last_seq.clone()).unwrap();
    let healthy = tokio::time::timeout(Duration::from_secs(30), healthy_task).await.unwrap().unwrap();
    assert!(healthy.skipped.is_empty(), "the healthy subscriber was never conflated");

    // Resume: everything queued before the mark, then `conflated` naming
    // the skipped ranges, a snapshot per symbol, and the rest live.
    let mut resumed = read_until_caught_up_from(&mut paused, before, &last_seq).await;
    assert!(!resumed.skipped.is_empty(), "the paused subscriber was told what it missed");
    let skipped_total: u64 = resumed.skipped.iter().map(|s| s.3).sum();
    assert!(skipped_total > 100, "{:?}", resumed.skipped);
    assert_eq!(
        metric(addr, "tickcast_skipped_updates_total{kind=\"trade\"}").await,
        resumed.skipped_trades as f64,
        "the trades the client was told it missed are the ones counted as dropped"
    );
    assert!(metric(addr, "tickcast_conflated_messages_total").await >= 1.0);
    assert_eq!(metric(addr, "tickcast_sessions{state=\"conflating\"}").await, 0.0, "caught up");
    for sym in symbols {
        let (a, b) = (&healthy.state[sym], resumed.state.remove(sym).unwrap());
        assert_eq!(a, &b, "{sym}: rebuilt state differs from the healthy subscriber's");
        assert!(a.book.bids(usize::MAX).len() > 1, "{sym}: the book has depth");
    }
    assert_eq!(metric(addr, "tickcast_slow_disconnects_total").await, 0.0);
    running.shutdown_within(Duration::from_secs(5)).await;
}

/// Reads `client` until its state reaches `last_seq` for every symbol,
/// continuing from the state it read before a pause.
async fn read_until_caught_up_from(client: &mut Client, start: Rebuilt, last_seq: &HashMap<String, u64>) -> Rebuilt {
    let mut rebuilt = start;
    let mut expect_snapshot = HashMap::new();
    while !rebuilt.caught_up(last_seq) || !expect_snapshot.is_empty() {
        let msg = tokio::time::timeout(Duration::from_secs(10), client.next_message())
            .await
            .expect("caught up within 10 s")
            .unwrap();
        rebuilt.apply(msg, &mut expect_snapshot);
    }
    rebuilt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_disconnect_client_is_closed_rather_than_conflated() {
    let _serial = SERIAL.lock().await;
    let running = start(Config {
        synthetic: SyntheticSettings { symbols: 10, rate: 20_000.0, seed: 9 },
        slow: SlowConsumerPolicy {
            conflate_above: 64 * 1024,
            disconnect_above: 8 << 20,
            slow_timeout: Duration::from_secs(30),
        },
        ..Config::default()
    })
    .await;
    let addr = running.addr;
    // An unknown policy is refused at the handshake.
    assert!(Client::connect_path(addr, "/ws?slow=drop", Encoding::Msgpack).await.is_err());

    let stream = small_buffer_socket(addr);
    let mut strict =
        Client::connect_stream(stream, addr, "/ws?encoding=msgpack&slow=disconnect", Encoding::Msgpack).await.unwrap();
    strict.subscribe(&["*"]).await.unwrap();
    // The same stall with the default policy conflates instead.
    let lenient = stalled_subscriber(addr, "/ws?encoding=msgpack").await;

    tokio::time::timeout(Duration::from_secs(15), async {
        while metric(addr, "tickcast_slow_disconnects_total").await < 1.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the ?slow=disconnect client was closed");
    // It reads again: what reached its socket, then the close frame.
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match strict.next_event().await {
                Ok(Event::Message(ServerMessage::Conflated { .. })) => {
                    panic!("a ?slow=disconnect client was conflated")
                }
                Ok(Event::Message(_)) => continue,
                Ok(Event::Close(code, reason)) => return (code, reason),
                Err(e) => panic!("no close frame: {e}"),
            }
        }
    })
    .await
    .expect("close frame within 10 s");
    assert_eq!(close, (1008, "slow consumer".to_owned()));

    tokio::time::timeout(Duration::from_secs(15), async {
        while metric(addr, "tickcast_conflation_episodes_total").await < 1.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the default-policy client conflated");
    assert_eq!(metric(addr, "tickcast_slow_disconnects_total").await, 1.0, "the default-policy client is still open");
    assert_eq!(metric(addr, "tickcast_sessions{state=\"conflating\"}").await, 1.0);
    drop(lenient);
    running.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_timed_out_even_when_its_symbols_go_quiet() {
    let _serial = SERIAL.lock().await;
    let running = start(Config {
        feed: FeedSpec::Tcp("127.0.0.1:0".parse().unwrap()),
        slow: SlowConsumerPolicy {
            conflate_above: 6 << 20,
            disconnect_above: 8 << 20,
            slow_timeout: Duration::from_secs(1),
        },
        ..Config::default()
    })
    .await;
    let addr = running.addr;
    let mut feed = TcpStream::connect(running.feed.unwrap()).await.unwrap();
    feed.write_all(feed_round(&["AAA"], 0).as_bytes()).await.unwrap();
    while metric(addr, "tickcast_updates_published_total").await < 3.0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stalled = stalled_subscriber(addr, "/ws?encoding=json").await;
    // About 1.5 MB for it, more than the kernel takes, then silence.
    for round in 1..=3000 {
        feed.write_all(feed_round(&["AAA"], round).as_bytes()).await.unwrap();
    }
    while metric(addr, "tickcast_updates_published_total").await < 3.0 * 3001.0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let queued = metric(addr, "tickcast_queued_bytes").await;
    assert!(queued > 100_000.0, "bytes wait in the outbox: {queued}");
    let quiet = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), async {
        while metric(addr, "tickcast_slow_disconnects_total").await < 1.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("closed by --slow-timeout with no new update for it");
    assert!(quiet.elapsed() < Duration::from_secs(5), "closed about 1 s after its last progress");
    assert_eq!(metric(addr, "tickcast_conflation_episodes_total").await, 0.0);
    drop(stalled);
    running.shutdown_within(Duration::from_secs(5)).await;
}

//! Record and replay, end to end over real sockets on 127.0.0.1: a live
//! server recording what it publishes, the tick log read back, the same
//! recording replayed through `/replay` sessions (seek, pause, speed) and
//! through `--feed replay:`, and bad recordings answered with clear errors
//! while the server keeps serving.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{start, Running};
use tickcast::config::Config;
use tickcast::feed::pacing::Speed;
use tickcast::feed::{FeedSpec, ReplayOptions};
use tickcast::model::Update;
use tickcast::record::RecordSettings;
use tickcast::recorded::ticklog::{Fsync, WriterOptions};
use tickcast::recorded::{self, Event as RecEvent};
use tickcast::wire::{Encoding, ServerMessage};
use tickcast_client::{http_get, Client, Event};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(10);

/// Generous: a recording server's shutdown includes the recorder's last
/// write and sync (bounded by the server at 10 s).
const SHUTDOWN: Duration = Duration::from_secs(15);

async fn wait_metric(server: &Running, name: &str, at_least: f64) {
    let waited = timeout(STEP, async {
        while server.metric(name).await < at_least {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    if waited.is_err() {
        let (_, body) = http_get(server.addr, "/metrics").await.expect("GET /metrics");
        let lines: Vec<&str> = body.lines().filter(|l| !l.starts_with('#') && l.contains("total")).collect();
        panic!("{name} did not reach {at_least}:\n{}", lines.join("\n"));
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickcast-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn record_options() -> WriterOptions {
    WriterOptions { segment_bytes: 64 << 10, segment_age: Duration::from_secs(3600), fsync: Fsync::Never }
}

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/binance")
}

/// A market message reduced to what a replay must reproduce.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    sym: String,
    seq: u64,
    ts_event: u64,
    ts_ingest: u64,
    update: Update,
}

fn seen(msg: &ServerMessage<'_>) -> Option<Seen> {
    use tickcast::model::{BookDelta, Quote, Trade};
    let (sym, seq, ts_event, ts_ingest, update) = match msg {
        ServerMessage::Trade { sym, seq, ts_event, ts_ingest, px, sz, side } => {
            (sym, seq, ts_event, ts_ingest, Update::Trade(Trade { px: *px, sz: *sz, side: *side }))
        }
        ServerMessage::Quote { sym, seq, ts_event, ts_ingest, bid, bid_sz, ask, ask_sz } => (
            sym,
            seq,
            ts_event,
            ts_ingest,
            Update::Quote(Quote { bid: *bid, bid_sz: *bid_sz, ask: *ask, ask_sz: *ask_sz }),
        ),
        ServerMessage::Book { sym, seq, ts_event, ts_ingest, bids, asks, .. } => {
            (sym, seq, ts_event, ts_ingest, Update::Book(BookDelta { bids: bids.to_vec(), asks: asks.to_vec() }))
        }
        _ => return None,
    };
    Some(Seen { sym: sym.to_string(), seq: *seq, ts_event: *ts_event, ts_ingest: *ts_ingest, update })
}

fn from_log(src: &dyn recorded::Source, ev: RecEvent) -> Seen {
    Seen {
        sym: src.symbol(ev.sym).to_string(),
        seq: ev.seq.expect("tick logs record seqs"),
        ts_event: ev.ts_event,
        ts_ingest: ev.ts_recv,
        update: ev.update,
    }
}

fn read_all(path: &Path) -> Vec<Seen> {
    let mut src = recorded::open(path).expect("open recording");
    let mut out = Vec::new();
    while let Some(ev) = src.next_event().expect("a clean recording") {
        out.push(from_log(src.as_ref(), ev));
    }
    out
}

/// Messages until `replay_end` (which is returned too).
async fn until_end(client: &mut Client) -> (Vec<ServerMessage<'static>>, ServerMessage<'static>) {
    let mut out = Vec::new();
    loop {
        let msg = timeout(STEP, client.next_message()).await.expect("a message in time").expect("message");
        if let ServerMessage::ReplayEnd { .. } = msg {
            return (out, msg);
        }
        out.push(msg);
    }
}

fn feed_lines(n: usize) -> String {
    let syms = ["AAPL", "MSFT", "BTC-USD"];
    let mut out = String::new();
    for i in 0..n {
        let sym = syms[i % 3];
        let ts = 1_700_000_000_000_000_000u64 + i as u64 * 1_000;
        let px = 100.0 + (i % 97) as f64 * 0.01;
        let line = match i % 4 {
            0 => format!(r#"{{"type":"trade","sym":"{sym}","px":{px},"sz":{},"side":"sell","ts_event":{ts}}}"#, i % 7),
            1 => format!(
                r#"{{"type":"quote","sym":"{sym}","bid":{px},"bid_sz":1.5,"ask":{},"ask_sz":2.25,"ts_event":{ts}}}"#,
                px + 0.01
            ),
            2 => format!(r#"{{"type":"book","sym":"{sym}","bids":[[{px},3],[99.5,0]],"asks":[],"ts_event":{ts}}}"#),
            _ => format!(r#"{{"type":"book","sym":"{sym}","bids":[],"asks":[[{},0.125]],"ts_event":{ts}}}"#, px + 1.0),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn record_then_replay_gives_back_the_identical_sequence() {
    const N: usize = 3_000;
    let root = scratch_dir("record");
    let log = root.join("session1");

    // 1. Live, recording: a client sees every update; the log must match.
    let live = start(Config {
        feed: FeedSpec::Tcp("127.0.0.1:0".parse().unwrap()),
        record: Some(RecordSettings { dir: log.clone(), options: record_options() }),
        ..Config::default()
    })
    .await;
    let mut client = Client::connect(live.addr, Encoding::Msgpack).await.expect("connect");
    // Full depth: the feed's own book deltas, as the log records them.
    client.subscribe_depth(&["*"], "full").await.expect("subscribe");
    assert!(matches!(client.next_message().await.expect("ack"), ServerMessage::Ack { .. }));
    let mut feed = TcpStream::connect(live.feed.expect("tcp feed")).await.expect("feed");
    feed.write_all(feed_lines(N).as_bytes()).await.expect("feed write");
    let mut live_seen = Vec::new();
    while live_seen.len() < N {
        let msg = timeout(STEP, client.next_message()).await.expect("live update in time").expect("message");
        live_seen.extend(seen(&msg));
    }
    assert_eq!(live.metric("tickcast_record_dropped_total").await, 0.0);
    assert_eq!(live.metric("tickcast_updates_published_total").await, N as f64);
    wait_metric(&live, "tickcast_record_ticks_total", N as f64).await;
    live.shutdown_within(SHUTDOWN).await;
    let segments = std::fs::read_dir(&log).expect("log dir").count();
    assert!(segments > 1, "64 KiB segments should have rolled, got {segments}");
    assert_eq!(read_all(&log), live_seen, "the tick log holds exactly what clients saw");

    // 2. A /replay session gives back the same sequence, bit for bit.
    let replayer = start(Config { replay_dir: Some(root.clone()), ..Config::default() }).await;
    for encoding in Encoding::ALL {
        let path = format!("/replay?source=session1&speed=max&depth=full&encoding={}", encoding.name());
        let mut c = Client::connect_path(replayer.addr, &path, encoding).await.expect("replay session");
        let (messages, end) = until_end(&mut c).await;
        let replayed: Vec<Seen> = messages.iter().filter_map(seen).collect();
        assert_eq!(replayed.len(), messages.len(), "{encoding:?}: only market messages from the start");
        assert_eq!(replayed, live_seen, "{encoding:?}");
        match end {
            ServerMessage::ReplayEnd { source, reason, events, ts_event } => {
                assert_eq!((&*source, &*reason, events), ("session1", "end", N as u64));
                assert_eq!(ts_event, live_seen.last().unwrap().ts_event);
            }
            other => panic!("{other:?}"),
        }
    }
    replayer.shutdown_within(SHUTDOWN).await;

    // 3. The replay feed, re-recorded, gives the same ticks and seqs.
    let again = root.join("session2");
    let fed = start(Config {
        feed: FeedSpec::Replay(log.clone()),
        replay: ReplayOptions { speed: Speed::Max, ..ReplayOptions::default() },
        record: Some(RecordSettings { dir: again.clone(), options: record_options() }),
        ..Config::default()
    })
    .await;
    wait_metric(&fed, "tickcast_record_ticks_total", N as f64).await;
    fed.shutdown_within(SHUTDOWN).await;
    let rerecorded = read_all(&again);
    assert_eq!(rerecorded.len(), N);
    for (a, b) in rerecorded.iter().zip(&live_seen) {
        assert_eq!((&a.sym, a.seq, a.ts_event, &a.update), (&b.sym, b.seq, b.ts_event, &b.update));
        assert!(a.ts_ingest >= b.ts_ingest, "a replay is ingested anew");
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[tokio::test]
async fn replay_sessions_seek_pause_and_change_speed() {
    let server = start(Config { replay_dir: Some(samples()), ..Config::default() }).await;
    let source = "/replay?source=btcusdt_20240808.gz&encoding=json";

    // The whole recording at max speed: the reference.
    let mut full = Client::connect_path(server.addr, &format!("{source}&speed=max"), Encoding::Json).await.unwrap();
    let (all, _) = until_end(&mut full).await;
    let all: Vec<Seen> = all.iter().filter_map(seen).collect();
    assert!(all.len() > 40_000, "{}", all.len());
    for w in all.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "one symbol, seqs contiguous from 1");
    }
    assert_eq!(all[0].seq, 1);

    // Seek to the middle: ack, a snapshot with the state there, then the
    // same updates the full replay had from that point, same seqs.
    let mid = all[all.len() / 2].ts_event;
    let mut c = Client::connect_path(server.addr, &format!("{source}&speed=max"), Encoding::Json).await.unwrap();
    c.send_text(&format!(r#"{{"op":"seek","ts":{mid}}}"#)).await.unwrap();
    let mut acked = false;
    let snapshot = loop {
        match timeout(STEP, c.next_message()).await.unwrap().unwrap() {
            ServerMessage::Ack { op, .. } => {
                assert_eq!(op, "seek");
                acked = true;
            }
            snap @ ServerMessage::Snapshot { .. } if acked => break snap,
            _ => {}
        }
    };
    let ServerMessage::Snapshot { seq, ts_event, book, .. } = &snapshot else { unreachable!() };
    assert!(*ts_event < mid && !book.bids.is_empty() && !book.asks.is_empty());
    let next = seen(&timeout(STEP, c.next_message()).await.unwrap().unwrap()).expect("an update after the snapshot");
    assert_eq!(next.seq, seq + 1);
    assert_eq!(next, all[(next.seq - 1) as usize], "the same event as in the full replay");
    assert!(next.ts_event >= mid);

    // Pause at real speed: nothing more arrives (after what was already on
    // its way); resume continues with the next seq, nothing lost.
    let mut p = Client::connect_path(server.addr, &format!("{source}&speed=1"), Encoding::Json).await.unwrap();
    let first = seen(&timeout(STEP, p.next_message()).await.unwrap().unwrap()).unwrap();
    p.send_text(r#"{"op":"pause"}"#).await.unwrap();
    let mut last_seq = first.seq;
    loop {
        match timeout(STEP, p.next_message()).await.unwrap().unwrap() {
            ServerMessage::Ack { op, .. } if op == "pause" => break,
            msg => last_seq = seen(&msg).unwrap().seq,
        }
    }
    // Frames already queued before the pause may still trickle in.
    let mut quiet_from = Instant::now();
    while quiet_from.elapsed() < Duration::from_millis(600) {
        if let Ok(msg) = timeout(Duration::from_millis(100), p.next_message()).await {
            let s = seen(&msg.unwrap()).unwrap();
            assert!(quiet_from.elapsed() < Duration::from_millis(200), "an update {s:?} long after the pause");
            last_seq = s.seq;
            quiet_from = Instant::now();
        }
    }
    p.send_text(r#"{"op":"speed","value":"max"}"#).await.unwrap();
    p.send_text(r#"{"op":"resume"}"#).await.unwrap();
    let mut acks = Vec::new();
    let mut resumed = None;
    while resumed.is_none() {
        match timeout(STEP, p.next_message()).await.unwrap().unwrap() {
            ServerMessage::Ack { op, .. } => acks.push(op.to_string()),
            msg => resumed = seen(&msg),
        }
    }
    assert_eq!(acks, ["speed", "resume"]);
    assert_eq!(resumed.unwrap().seq, last_seq + 1, "nothing lost across the pause");
    let (rest, _) = until_end(&mut p).await;
    assert_eq!(rest.len() as u64 + last_seq + 1, all.len() as u64, "at max speed the rest comes at once");

    // Bad control messages get documented errors; the session goes on.
    p.send_text(r#"{"op":"speed","value":0}"#).await.unwrap();
    p.send_text(r#"{"op":"rewind"}"#).await.unwrap();
    p.send_text(r#"{"op":"subscribe","symbols":["ETHUSDT"]}"#).await.unwrap();
    for code in ["bad_request", "unknown_op", "bad_request"] {
        match timeout(STEP, p.next_message()).await.unwrap().unwrap() {
            ServerMessage::Error { code: got, .. } => assert_eq!(got, code),
            other => panic!("expected error {code}, got {other:?}"),
        }
    }
    server.shutdown_within(SHUTDOWN).await;
}

/// Sends a WebSocket upgrade request by hand; returns the status and body.
async fn upgrade_status(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(timeout(STEP, s.read_u8()).await.expect("response in time").expect("response"));
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    timeout(STEP, s.read_exact(&mut body)).await.expect("body in time").expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn replay_requests_are_checked_and_bounded() {
    let server = start(Config { replay_dir: Some(samples()), max_replay_sessions: 2, ..Config::default() }).await;
    for (query, status) in [
        ("source=..%2F..%2FCargo.toml", 400),
        ("source=%2Fetc%2Fpasswd", 400),
        ("source=LICENSE-hftbacktest", 400),
        ("source=nope.gz", 404),
        ("source=btcusdt_20240808.gz&speed=warp", 400),
        ("source=btcusdt_20240808.gz&from=tomorrow", 400),
    ] {
        let (got, body) = upgrade_status(server.addr, &format!("/replay?{query}")).await;
        assert_eq!(got, status, "{query}: {body}");
        assert!(body.len() > 20, "{query}: the refusal says why: {body}");
    }
    let path = "/replay?source=btcusdt_20240808.gz&speed=1";
    let _a = Client::connect_path(server.addr, path, Encoding::Msgpack).await.expect("first");
    let _b = Client::connect_path(server.addr, path, Encoding::Msgpack).await.expect("second");
    let (status, body) = upgrade_status(server.addr, path).await;
    assert_eq!(status, 503, "a third is over the limit: {body}");
    assert!(body.contains("too many replay sessions"), "{body}");
    assert_eq!(server.metric("tickcast_replay_rejected_total").await, 1.0);
    assert_eq!(server.metric("tickcast_replay_sessions").await, 2.0);
    drop(_a);
    let freed = timeout(STEP, async {
        while server.metric("tickcast_replay_sessions").await > 1.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(freed.is_ok(), "a closed replay session frees its slot");
    let _c = Client::connect_path(server.addr, path, Encoding::Msgpack).await.expect("a slot is free again");
    server.shutdown_within(SHUTDOWN).await;
}

#[tokio::test]
async fn a_truncated_recording_is_reported_and_the_server_keeps_serving() {
    let dir = scratch_dir("corrupt");
    let raw = std::fs::read(samples().join("ethusdt_20240808.gz")).unwrap();
    std::fs::write(dir.join("cut.gz"), &raw[..raw.len() / 2]).unwrap();

    // As a /replay source: everything before the cut, then an error naming
    // the file and offset, then replay_end.
    let server = start(Config { replay_dir: Some(dir.clone()), ..Config::default() }).await;
    let mut c = Client::connect_path(server.addr, "/replay?source=cut.gz&speed=max&encoding=json", Encoding::Json)
        .await
        .unwrap();
    let (messages, end) = until_end(&mut c).await;
    let market = messages.iter().filter(|m| seen(m).is_some()).count();
    assert!(market > 1_000, "the events before the cut are replayed ({market})");
    match messages.last() {
        Some(ServerMessage::Error { code, message, .. }) => {
            assert_eq!(code, "replay_failed");
            assert!(message.contains("cut.gz") && message.contains("offset"), "{message}");
        }
        other => panic!("expected an error before replay_end, got {other:?}"),
    }
    assert!(matches!(end, ServerMessage::ReplayEnd { ref reason, .. } if reason == "error"), "{end:?}");
    let mut other = Client::connect(server.addr, Encoding::Json).await.expect("live clients still served");
    other.subscribe(&["*"]).await.unwrap();
    assert!(matches!(timeout(STEP, other.next_event()).await.unwrap().unwrap(), Event::Message(_)));
    server.shutdown_within(SHUTDOWN).await;

    // As the server's feed: the feed stops with an error, the server runs on.
    let fed = start(Config {
        feed: FeedSpec::Replay(dir.join("cut.gz")),
        replay: ReplayOptions { speed: Speed::Max, ..ReplayOptions::default() },
        ..Config::default()
    })
    .await;
    wait_metric(&fed, "tickcast_feed_errors_total", 1.0).await;
    // The engine may still be draining the ring behind a max-speed replay
    // (it starts just after the feed, once the recorder is open).
    wait_metric(&fed, "tickcast_updates_published_total", 1_001.0).await;
    let (status, _) = http_get(fed.addr, "/healthz").await.unwrap();
    assert_eq!(status, 200);
    fed.shutdown_within(SHUTDOWN).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes a small tick log of one symbol, events `gap_ms` apart.
fn write_log(dir: &Path, updates: &[Update], gap_ms: u64) {
    use tickcast::recorded::ticklog::{LogTick, TickLogWriter};
    let (mut w, _) = TickLogWriter::open(dir, record_options()).expect("open log");
    for (i, update) in updates.iter().enumerate() {
        let ts = 1_700_000_000_000_000_000 + i as u64 * gap_ms * 1_000_000;
        w.append(&LogTick { sym: "XYZ", seq: i as u64 + 1, ts_event: ts, ts_ingest: ts, update }).expect("append");
    }
    w.finish().expect("finish");
}

fn lv(px: f64, sz: f64) -> tickcast::model::Level {
    tickcast::model::Level { px, sz }
}

fn book(bids: &[(f64, f64)], asks: &[(f64, f64)]) -> Update {
    Update::Book(tickcast::model::BookDelta {
        bids: bids.iter().map(|&(p, s)| lv(p, s)).collect(),
        asks: asks.iter().map(|&(p, s)| lv(p, s)).collect(),
    })
}

async fn subscribed(addr: SocketAddr) -> Client {
    timeout(STEP, async {
        loop {
            let (_, body) = http_get(addr, "/symbols").await.unwrap();
            if body.contains("XYZ") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the replay feed introduces XYZ");
    let mut c = Client::connect(addr, Encoding::Json).await.unwrap();
    c.subscribe(&["XYZ"]).await.unwrap();
    assert!(matches!(c.next_message().await.unwrap(), ServerMessage::Ack { .. }));
    c
}

#[tokio::test]
async fn the_replay_feed_starts_from_folded_state_and_empties_books_between_loops() {
    use tickcast::model::{Quote, Side, Trade};
    let dir = scratch_dir("feed-window");
    let q = |bid: f64| Update::Quote(Quote { bid, bid_sz: 1.0, ask: bid + 1.0, ask_sz: 1.0 });
    let updates = vec![
        book(&[(100.0, 1.0), (99.0, 2.0)], &[(101.0, 3.0)]),
        q(100.0),
        Update::Trade(Trade { px: 100.5, sz: 1.0, side: Side::Buy }),
        book(&[(99.0, 0.0)], &[(102.0, 4.0)]),
        q(100.25),
        // --from lands here.
        book(&[(100.0, 5.0)], &[]),
        q(100.5),
    ];
    write_log(&dir, &updates, 400);
    let from = 1_700_000_000_000_000_000 + 5 * 400 * 1_000_000;

    // --from: the state before it arrives as one quote and one book update,
    // so the first snapshot shows the market as it stood at --from.
    let fed = start(Config {
        feed: FeedSpec::Replay(dir.clone()),
        replay: ReplayOptions { speed: Speed::Times(1.0), from: Some(from), ..ReplayOptions::default() },
        ..Config::default()
    })
    .await;
    // The folded quote and book, and the first event in the window, are
    // published at once; the next event is 400 ms later.
    wait_metric(&fed, "tickcast_updates_published_total", 3.0).await;
    let mut c = subscribed(fed.addr).await;
    match timeout(STEP, c.next_message()).await.unwrap().unwrap() {
        ServerMessage::Snapshot { seq, quote, trade, book, .. } => {
            // Folded quote, folded book, then the first event in the window.
            assert_eq!(seq, 3, "two folded updates and the first in the window");
            assert_eq!(quote.unwrap().bid, 100.25);
            assert!(trade.is_none(), "trades before --from are history, not state");
            assert_eq!(&*book.bids, &[lv(100.0, 5.0)]);
            assert_eq!(&*book.asks, &[lv(101.0, 3.0), lv(102.0, 4.0)]);
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    fed.shutdown_within(SHUTDOWN).await;

    // --loop: between passes every level the replay built is deleted.
    let looped = start(Config {
        feed: FeedSpec::Replay(dir.clone()),
        replay: ReplayOptions { speed: Speed::Times(20.0), looped: true, ..ReplayOptions::default() },
        ..Config::default()
    })
    .await;
    let mut c = subscribed(looped.addr).await;
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Ok(msg) = timeout(Duration::from_millis(200), c.next_message()).await {
            messages.push(msg.unwrap());
        }
    }
    let clear = messages.iter().position(|m| {
        matches!(m, ServerMessage::Book { bids, asks, .. }
            if !bids.is_empty() && bids.iter().chain(asks.iter()).all(|l| l.sz == 0.0))
    });
    let clear = clear.expect("a book update deleting every level between passes");
    match &messages[clear] {
        ServerMessage::Book { bids, asks, .. } => {
            let mut bids: Vec<f64> = bids.iter().map(|l| l.px).collect();
            bids.sort_by(f64::total_cmp);
            assert_eq!(bids, [100.0]);
            let mut asks: Vec<f64> = asks.iter().map(|l| l.px).collect();
            asks.sort_by(f64::total_cmp);
            assert_eq!(asks, [101.0, 102.0]);
        }
        _ => unreachable!(),
    }
    match messages.get(clear + 1) {
        Some(ServerMessage::Book { bids, .. }) => assert_eq!(&**bids, &[lv(100.0, 1.0), lv(99.0, 2.0)]),
        other => panic!("the next pass starts with the first event, got {other:?}"),
    }
    let seqs: Vec<u64> = messages.iter().filter_map(|m| m.sym_seq().map(|(_, s)| s)).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "seqs keep rising across passes: {seqs:?}");
    looped.shutdown_within(SHUTDOWN).await;
    let _ = std::fs::remove_dir_all(&dir);
}

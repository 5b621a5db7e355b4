//! End-to-end tests over real sockets on 127.0.0.1: a real server (bound on
//! port 0), a real tcp feed handler, and our own client in every encoding.
//! The independent-client suite (Python websockets/msgpack/protobuf) lives
//! in tests/python.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{start, Running};
use tickcast::config::Config;
use tickcast::feed::FeedSpec;
use tickcast::model::{Level, Side};
use tickcast::wire::{Encoding, ServerMessage};
use tickcast_client::{http_get, Client, Event};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(5);

fn tcp_config() -> Config {
    Config { feed: FeedSpec::Tcp("127.0.0.1:0".parse().unwrap()), ..Config::default() }
}

async fn feed_handler(running: &Running) -> TcpStream {
    TcpStream::connect(running.feed.expect("tcp feed")).await.expect("connect feed")
}

async fn send_lines(feed: &mut TcpStream, lines: &[String]) {
    let mut buf = lines.join("\n");
    buf.push('\n');
    feed.write_all(buf.as_bytes()).await.expect("feed write");
}

/// Waits until the server has published `n` updates in total.
async fn wait_published(running: &Running, n: f64) {
    timeout(STEP, async {
        while running.metric("tickcast_updates_published_total").await < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("updates published");
}

async fn next(client: &mut Client) -> ServerMessage<'static> {
    timeout(STEP, client.next_message()).await.expect("message in time").expect("message")
}

async fn next_close(client: &mut Client) -> (u16, String) {
    loop {
        match timeout(STEP, client.next_event()).await.expect("event in time").expect("event") {
            Event::Close(code, reason) => return (code, reason),
            Event::Message(_) => continue,
        }
    }
}

fn quote(sym: &str, bid: f64, ask: f64, ts: u64) -> String {
    format!(r#"{{"type":"quote","sym":"{sym}","bid":{bid:?},"bid_sz":300,"ask":{ask:?},"ask_sz":200,"ts_event":{ts}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_gapless_updates_with_exact_values_in_every_encoding() {
    let running = start(tcp_config()).await;
    let mut feed = feed_handler(&running).await;
    // Establish state before anyone subscribes.
    send_lines(
        &mut feed,
        &[
            quote("AAPL", 189.49, 189.51, 1),
            r#"{"type":"book","sym":"AAPL","bids":[[189.49,300],[189.48,100]],"asks":[[189.52,50]],"ts_event":2}"#
                .into(),
            r#"{"type":"trade","sym":"AAPL","px":189.5,"sz":100,"side":"buy","ts_event":3}"#.into(),
            quote("MSFT", 0.1, 0.30000000000000004, 4),
        ],
    )
    .await;
    wait_published(&running, 4.0).await;

    let mut clients = Vec::new();
    for encoding in Encoding::ALL {
        let mut c = Client::connect(running.addr, encoding).await.expect("connect");
        c.subscribe_depth(&["AAPL", "MSFT"], "full").await.unwrap();
        match next(&mut c).await {
            ServerMessage::Ack { op, symbols, epoch, .. } => {
                assert!(epoch.is_some_and(|e| e > 0), "a subscribe ack names the epoch");
                assert_eq!(op, "subscribe");
                assert_eq!(symbols, ["AAPL", "MSFT"]);
            }
            other => panic!("{encoding:?}: expected ack, got {other:?}"),
        }
        match next(&mut c).await {
            ServerMessage::Snapshot { sym, seq, quote, trade, book, ts_event, .. } => {
                assert_eq!((&*sym, seq, ts_event), ("AAPL", 3, 3), "{encoding:?}");
                let q = quote.expect("quote");
                assert_eq!((q.bid, q.ask, q.bid_sz), (189.49, 189.51, 300.0));
                let t = trade.expect("trade");
                assert_eq!((t.px, t.sz, t.side), (189.5, 100.0, Side::Buy));
                assert_eq!(&*book.bids, &[Level { px: 189.49, sz: 300.0 }, Level { px: 189.48, sz: 100.0 }]);
                assert_eq!(&*book.asks, &[Level { px: 189.52, sz: 50.0 }]);
            }
            other => panic!("{encoding:?}: expected AAPL snapshot, got {other:?}"),
        }
        match next(&mut c).await {
            ServerMessage::Snapshot { sym, seq, quote, trade, .. } => {
                assert_eq!((&*sym, seq), ("MSFT", 1));
                let q = quote.expect("quote");
                assert_eq!(q.bid.to_bits(), 0.1f64.to_bits());
                assert_eq!(q.ask.to_bits(), 0.30000000000000004f64.to_bits());
                assert!(trade.is_none());
            }
            other => panic!("{encoding:?}: expected MSFT snapshot, got {other:?}"),
        }
        clients.push(c);
    }

    // Live updates with awkward values, interleaved across symbols.
    let awkward = [1e-9, 123_456_789.123_456_79, 5e-324, 1.7976931348623157e308, 0.1 + 0.2];
    let mut lines = Vec::new();
    for (i, &v) in awkward.iter().enumerate() {
        let ts = 1_700_000_000_123_456_789 + i as u64;
        lines.push(format!(r#"{{"type":"trade","sym":"AAPL","px":{v:?},"sz":{v:?},"side":"sell","ts_event":{ts}}}"#));
        lines.push(quote("MSFT", v, v, ts));
        lines.push(format!(r#"{{"type":"book","sym":"AAPL","bids":[[{v:?},0]],"asks":[[{v:?},7]],"ts_event":{ts}}}"#));
    }
    send_lines(&mut feed, &lines).await;

    for (c, encoding) in clients.iter_mut().zip(Encoding::ALL) {
        let mut seqs: HashMap<String, u64> = HashMap::from([("AAPL".into(), 3), ("MSFT".into(), 1)]);
        for i in 0..lines.len() {
            let msg = next(c).await;
            let (sym, seq) = msg.sym_seq().map(|(s, q)| (s.to_owned(), q)).expect("market message");
            let prev = seqs.insert(sym.clone(), seq).unwrap();
            assert_eq!(seq, prev + 1, "{encoding:?}: seq continuity for {sym}");
            let v = awkward[i / 3];
            let ts = 1_700_000_000_123_456_789 + (i / 3) as u64;
            assert_eq!(msg.ts_event(), Some(ts), "{encoding:?}");
            match (i % 3, msg) {
                (0, ServerMessage::Trade { px, sz, side, .. }) => {
                    assert_eq!((px.to_bits(), sz.to_bits(), side), (v.to_bits(), v.to_bits(), Side::Sell))
                }
                (1, ServerMessage::Quote { bid, ask, .. }) => {
                    assert_eq!((bid.to_bits(), ask.to_bits()), (v.to_bits(), v.to_bits()))
                }
                (2, ServerMessage::Book { bids, asks, .. }) => {
                    assert_eq!(&*bids, &[Level { px: v, sz: 0.0 }]);
                    assert_eq!(&*asks, &[Level { px: v, sz: 7.0 }]);
                }
                (k, other) => panic!("{encoding:?}: line {i} (kind {k}) decoded as {other:?}"),
            }
        }
    }
    // Encoded once per update per encoding, no matter how many subscribers.
    for e in Encoding::ALL {
        let n = running.metric(&format!("tickcast_frames_encoded_total{{encoding=\"{}\"}}", e.name())).await;
        assert_eq!(n, lines.len() as f64, "{e:?}");
    }
    assert_eq!(running.metric("tickcast_subscriptions").await, 6.0);
    assert!(running.shutdown_within(STEP).await < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_documented_errors_and_others_are_unaffected() {
    let running = start(tcp_config()).await;
    let mut feed = feed_handler(&running).await;
    send_lines(&mut feed, &[quote("AAPL", 1.0, 2.0, 1)]).await;
    wait_published(&running, 1.0).await;

    let mut healthy = Client::connect(running.addr, Encoding::Msgpack).await.unwrap();
    healthy.subscribe(&["AAPL"]).await.unwrap();
    assert!(matches!(next(&mut healthy).await, ServerMessage::Ack { .. }));
    assert!(matches!(next(&mut healthy).await, ServerMessage::Snapshot { seq: 1, .. }));

    let mut bad = Client::connect(running.addr, Encoding::Json).await.unwrap();
    let cases: [(&str, &str); 5] = [
        ("{not json", "bad_json"),
        (r#"{"op":"dance","symbols":["AAPL"]}"#, "unknown_op"),
        (r#"{"op":"subscribe"}"#, "bad_request"),
        (r#"{"op":"subscribe","symbols":"AAPL"}"#, "bad_request"),
        (r#"{"op":"subscribe","symbols":["NOPE","ALSO-NOPE"]}"#, "unknown_symbol"),
    ];
    for (input, code) in cases {
        bad.send_text(input).await.unwrap();
        match next(&mut bad).await {
            ServerMessage::Error { code: got, message, symbols } => {
                assert_eq!(got, code, "for {input}: {message}");
                assert!(!message.is_empty());
                if code == "unknown_symbol" {
                    assert_eq!(symbols, ["NOPE", "ALSO-NOPE"]);
                    assert!(message.contains("NOPE"));
                }
            }
            other => panic!("for {input}: expected error, got {other:?}"),
        }
    }
    // Partly valid: ack for the known symbol, error naming the unknown one,
    // both as control messages ahead of the snapshot.
    bad.send_text(r#"{"op":"subscribe","symbols":["AAPL","ZZZZ"]}"#).await.unwrap();
    assert!(matches!(next(&mut bad).await, ServerMessage::Ack { symbols, .. } if symbols == ["AAPL"]));
    assert!(matches!(next(&mut bad).await, ServerMessage::Error { code, .. } if code == "unknown_symbol"));
    assert!(matches!(next(&mut bad).await, ServerMessage::Snapshot { .. }));

    // Oversized frame: close 1009; the healthy client still gets every update.
    let mut huge = Client::connect(running.addr, Encoding::Json).await.unwrap();
    huge.send_text(&format!(r#"{{"op":"subscribe","symbols":["{}"]}}"#, "A".repeat(70_000))).await.unwrap();
    assert_eq!(next_close(&mut huge).await.0, 1009);

    send_lines(&mut feed, &[quote("AAPL", 1.5, 2.5, 2), quote("AAPL", 1.25, 2.5, 3)]).await;
    for expected in [2, 3] {
        match next(&mut healthy).await {
            ServerMessage::Quote { seq, .. } => assert_eq!(seq, expected),
            other => panic!("healthy client got {other:?}"),
        }
    }
    // Bad feed lines, including one over the 1 MiB line limit, are counted
    // and skipped; the feed goes on.
    let overlong = format!(r#"{{"type":"trade","sym":"AAPL","px":1,"sz":1,"pad":"{}"}}"#, "x".repeat(2 << 20));
    send_lines(
        &mut feed,
        &["garbage".into(), r#"{"type":"trade","sym":"AAPL","px":1}"#.into(), overlong, quote("AAPL", 1.0, 3.0, 4)],
    )
    .await;
    assert!(matches!(next(&mut healthy).await, ServerMessage::Quote { seq: 4, .. }));
    assert_eq!(running.metric("tickcast_feed_errors_total").await, 3.0);
    assert_eq!(running.metric("tickcast_client_errors_total{code=\"bad_json\"}").await, 1.0);
    assert_eq!(running.metric("tickcast_client_errors_total{code=\"unknown_op\"}").await, 1.0);
    assert_eq!(running.metric("tickcast_client_errors_total{code=\"bad_request\"}").await, 2.0);
    assert_eq!(running.metric("tickcast_client_errors_total{code=\"unknown_symbol\"}").await, 2.0);
    assert_eq!(running.metric("tickcast_client_errors_total{code=\"message_too_big\"}").await, 1.0);
    running.shutdown_within(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery_after_its_ack() {
    let running = start(tcp_config()).await;
    let mut feed = feed_handler(&running).await;
    send_lines(&mut feed, &[quote("AAPL", 1.0, 2.0, 1), quote("MSFT", 1.0, 2.0, 1)]).await;
    wait_published(&running, 2.0).await;
    let mut c = Client::connect(running.addr, Encoding::Protobuf).await.unwrap();
    c.subscribe(&["*"]).await.unwrap();
    assert!(matches!(next(&mut c).await, ServerMessage::Ack { symbols, .. } if symbols == ["*"]));
    for _ in 0..2 {
        assert!(matches!(next(&mut c).await, ServerMessage::Snapshot { .. }));
    }
    c.unsubscribe(&["AAPL"]).await.unwrap();
    assert!(matches!(next(&mut c).await, ServerMessage::Ack { op, .. } if op == "unsubscribe"));
    let lines: Vec<String> =
        (0..50).flat_map(|i| [quote("AAPL", 1.0, 2.0 + i as f64, 2), quote("MSFT", 1.0, 2.0, 2)]).collect();
    send_lines(&mut feed, &lines).await;
    for i in 0..50 {
        match next(&mut c).await {
            ServerMessage::Quote { sym, seq, .. } => assert_eq!((&*sym, seq), ("MSFT", 2 + i)),
            other => panic!("only MSFT expected after unsubscribing AAPL, got {other:?}"),
        }
    }
    // A symbol the feed introduces later reaches a wildcard subscriber,
    // snapshot first.
    send_lines(&mut feed, &[quote("NEWCO", 3.0, 4.0, 9)]).await;
    match next(&mut c).await {
        ServerMessage::Snapshot { sym, seq, .. } => assert_eq!((&*sym, seq), ("NEWCO", 0)),
        other => panic!("expected NEWCO snapshot, got {other:?}"),
    }
    assert!(matches!(next(&mut c).await, ServerMessage::Quote { seq: 1, .. }));
    running.shutdown_within(STEP).await;
}

/// A burst from a feed handler (one write of many lines) reaches a
/// subscriber whole, in one write, as soon as the burst is in: the engine
/// writes when the input is drained, not on its clock. The interval is set
/// to the largest allowed (100 ms), so a server that waited for it instead
/// would take that long, and one that wrote per tick would make 200 writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_the_feed_reaches_a_subscriber_whole_in_one_write_without_waiting_for_the_interval() {
    let interval = Duration::from_millis(100);
    let running = start(Config { flush_interval: interval, ..tcp_config() }).await;
    let mut feed = feed_handler(&running).await;
    send_lines(&mut feed, &[quote("AAPL", 1.0, 2.0, 1)]).await;
    wait_published(&running, 1.0).await;
    let mut c = Client::connect(running.addr, Encoding::Msgpack).await.unwrap();
    c.subscribe(&["AAPL"]).await.unwrap();
    assert!(matches!(next(&mut c).await, ServerMessage::Ack { .. }));
    assert!(matches!(next(&mut c).await, ServerMessage::Snapshot { seq: 1, .. }));
    for burst in 0..2u64 {
        let writes_before = running.metric("tickcast_write_calls_total").await;
        let lines: Vec<String> = (0..200).map(|i| quote("AAPL", 1.0, 2.0 + i as f64, 10 + burst)).collect();
        let sent = std::time::Instant::now();
        send_lines(&mut feed, &lines).await;
        for i in 0..200 {
            match next(&mut c).await {
                ServerMessage::Quote { seq, ask, .. } => assert_eq!((seq, ask), (2 + 200 * burst + i, 2.0 + i as f64)),
                other => panic!("expected a quote, got {other:?}"),
            }
        }
        let took = sent.elapsed();
        let writes = running.metric("tickcast_write_calls_total").await - writes_before;
        // One write; two if TCP handed the burst to the feed in two reads.
        assert!((1.0..=2.0).contains(&writes), "burst {burst}: {writes} writes for one burst");
        assert!(took < interval, "burst {burst}: {took:?}, as long as the interval: the drained input was not seen");
    }
    running.shutdown_within(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_feed_snapshot_plus_updates_rebuild_the_book_exactly() {
    let config = Config {
        synthetic: tickcast::feed::SyntheticSettings { symbols: 5, rate: 5_000.0, seed: 3 },
        ..Config::default()
    };
    let running = start(config).await;
    let (status, body) = http_get(running.addr, "/symbols").await.unwrap();
    assert_eq!(status, 200);
    let symbols: Vec<String> = serde_json::from_str(&body).unwrap();
    assert_eq!(symbols, ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL"]);

    let mut early = Client::connect(running.addr, Encoding::Msgpack).await.unwrap();
    early.subscribe(&["NVDA"]).await.unwrap();
    assert!(matches!(next(&mut early).await, ServerMessage::Ack { .. }));
    let mut book = tickcast::model::Book::default();
    let mut seq = match next(&mut early).await {
        ServerMessage::Snapshot { seq, book: levels, .. } => {
            book.apply(&tickcast::model::BookDelta { bids: levels.bids.into_owned(), asks: levels.asks.into_owned() });
            seq
        }
        other => panic!("{other:?}"),
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A late subscriber's snapshot must equal the early one's rebuilt state
    // at the same seq.
    let mut late = Client::connect(running.addr, Encoding::Json).await.unwrap();
    late.subscribe(&["NVDA"]).await.unwrap();
    assert!(matches!(next(&mut late).await, ServerMessage::Ack { .. }));
    let (late_seq, late_bids, late_asks) = match next(&mut late).await {
        ServerMessage::Snapshot { seq, book, .. } => (seq, book.bids.into_owned(), book.asks.into_owned()),
        other => panic!("{other:?}"),
    };
    assert!(late_seq > seq, "the synthetic feed moved on");
    while seq < late_seq {
        let msg = next(&mut early).await;
        let (_, s) = msg.sym_seq().unwrap();
        assert_eq!(s, seq + 1, "gapless");
        seq = s;
        if let ServerMessage::Book { bids, asks, .. } = msg {
            book.apply(&tickcast::model::BookDelta { bids: bids.into_owned(), asks: asks.into_owned() });
        }
    }
    assert_eq!(book.bids(10), &late_bids[..]);
    assert_eq!(book.asks(10), &late_asks[..]);
    running.shutdown_within(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_answers_and_unknown_encoding_is_a_400_naming_the_valid_ones() {
    let running = start(Config::default()).await;
    assert_eq!(http_get(running.addr, "/healthz").await.unwrap(), (200, "ok\n".into()));
    assert_eq!(http_get(running.addr, "/nope").await.unwrap().0, 404);
    let mut stream = TcpStream::connect(running.addr).await.unwrap();
    let req = "GET /ws?encoding=xml HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
               Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = timeout(STEP, tokio::io::AsyncReadExt::read(&mut stream, &mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("msgpack, protobuf, json"), "{text}");
    assert_eq!(running.metric("tickcast_http_rejected_total").await, 1.0);
    running.shutdown_within(STEP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_1001_to_every_client_within_two_seconds() {
    let running = start(Config::default()).await;
    let mut clients = Vec::new();
    for encoding in Encoding::ALL {
        let mut c = Client::connect(running.addr, encoding).await.unwrap();
        c.subscribe(&["*"]).await.unwrap();
        assert!(matches!(next(&mut c).await, ServerMessage::Ack { .. }));
        clients.push(c);
    }
    let waiter = tokio::spawn(async move {
        let mut codes = Vec::new();
        for mut c in clients {
            codes.push(next_close(&mut c).await.0);
        }
        codes
    });
    let took = running.shutdown_within(STEP).await;
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert_eq!(waiter.await.unwrap(), [1001, 1001, 1001]);
}

/// A universe declared in the [`Config`] (what `--symbols-file` fills in):
/// a subscriber before the first tick gets an ack and a seq-0 snapshot,
/// then the first update as seq 1; a bad name fails `bind`.
#[tokio::test]
async fn a_declared_symbol_is_subscribable_before_its_first_tick() {
    let running = start(Config { universe: vec!["AAPL".into(), "MSFT".into()], ..tcp_config() }).await;
    let (status, body) = http_get(running.addr, "/symbols").await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"["AAPL","MSFT"]"#));
    let mut client = Client::connect(running.addr, Encoding::Json).await.unwrap();
    client.subscribe(&["MSFT"]).await.unwrap();
    assert!(matches!(next(&mut client).await, ServerMessage::Ack { .. }));
    match next(&mut client).await {
        ServerMessage::Snapshot { sym, seq, quote, trade, book, .. } => {
            assert_eq!((&*sym, seq, quote, trade), ("MSFT", 0, None, None));
            assert!(book.bids.is_empty() && book.asks.is_empty());
        }
        other => panic!("expected a snapshot, got {other:?}"),
    }
    let mut feed = feed_handler(&running).await;
    send_lines(&mut feed, &[r#"{"type":"trade","sym":"MSFT","px":410.5,"sz":3,"side":"sell","ts_event":7}"#.into()])
        .await;
    match next(&mut client).await {
        ServerMessage::Trade { sym, seq, ts_event, px, sz, side, .. } => {
            assert_eq!((&*sym, seq, ts_event, px, sz, side), ("MSFT", 1, 7, 410.5, 3.0, Side::Sell));
        }
        other => panic!("expected the first trade, got {other:?}"),
    }

    let bad = Config { universe: vec!["AAPL".into(), "NO GOOD".into()], ..tcp_config() };
    let err = tickcast::server::Server::bind(bad).await.err().expect("an invalid declared name fails bind");
    assert!(err.to_string().starts_with("cannot declare the symbol universe: invalid symbol name"), "{err}");
}

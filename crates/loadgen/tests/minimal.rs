//! `tickcast-minimal`, the bench's simplest-server peer, over real
//! sockets: a subscriber gets tickcast's ack, then every quote and trade
//! of its symbols as tickcast's MessagePack messages, seqs per symbol from
//! 1 and consecutive; and `tickcast-bench --target minimal` runs against
//! it with no seq error.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tickcast::wire::{Encoding, ServerMessage};
use tickcast_client::Client;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Longest any one step may take.
const STEP: Duration = Duration::from_secs(10);

/// A `tickcast-minimal` process on ports it picked, killed on drop.
struct Minimal {
    child: Child,
    ws: SocketAddr,
    feed: SocketAddr,
}

impl Drop for Minimal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on port 0 and reads the addresses it prints.
fn start() -> Minimal {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickcast-minimal"))
        .args(["--listen", "127.0.0.1:0", "--feed", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tickcast-minimal");
    let mut line = String::new();
    // The line comes right after binding; if the process dies instead,
    // the pipe closes and the read returns nothing.
    let stdout = child.stdout.take().expect("piped stdout");
    std::io::BufReader::new(stdout).read_line(&mut line).expect("read the banner");
    let addr = |prefix: &str| -> SocketAddr {
        let rest = line.split(prefix).nth(1).unwrap_or_else(|| panic!("no {prefix} in {line:?}"));
        rest.split(['/', ' ', '\n']).next().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("{line:?}"))
    };
    let (ws, feed) = (addr("ws://"), addr("tcp://"));
    Minimal { child, ws, feed }
}

async fn next(client: &mut Client) -> ServerMessage<'static> {
    tokio::time::timeout(STEP, client.next_message()).await.expect("a message in time").expect("a message")
}

/// (type, sym, seq, ts_event) of a quote or trade.
fn update(m: &ServerMessage<'_>) -> (&'static str, String, u64, u64) {
    match m {
        ServerMessage::Quote { sym, seq, ts_event, ts_ingest, .. } => {
            assert!(*ts_ingest > 0, "stamped at ingest");
            ("quote", sym.to_string(), *seq, *ts_event)
        }
        ServerMessage::Trade { sym, seq, ts_event, .. } => ("trade", sym.to_string(), *seq, *ts_event),
        other => panic!("expected an update, got {other:?}"),
    }
}

fn quote(sym: &str, ts_event: u64) -> String {
    format!(
        r#"{{"type":"quote","sym":"{sym}","ts_event":{ts_event},"bid":100.5,"bid_sz":100,"ask":100.51,"ask_sz":200}}"#
    )
}

#[tokio::test]
async fn subscribers_get_acked_then_every_update_of_their_symbols_with_consecutive_seqs() {
    let server = start();
    let mut client = Client::connect(server.ws, Encoding::Msgpack).await.expect("connect");
    client.subscribe(&["AAA", "BBB"]).await.expect("subscribe");
    match next(&mut client).await {
        ServerMessage::Ack { op, symbols, .. } => {
            assert_eq!((op.as_ref(), symbols.len()), ("subscribe", 2));
        }
        other => panic!("expected the ack, got {other:?}"),
    }
    let mut feed = TcpStream::connect(server.feed).await.expect("feed");
    let lines = [
        quote("AAA", 1),
        quote("AAA", 2),
        r#"{"type":"trade","sym":"BBB","px":10.5,"sz":3,"side":"sell","ts_event":3}"#.to_owned(),
        quote("CCC", 4),                                            // nobody's
        r#"{"type":"book","sym":"AAA","bids":[[1,2]]}"#.to_owned(), // dropped
        "not json".to_owned(),                                      // counted, skipped
        quote("AAA", 5),
    ];
    feed.write_all((lines.join("\n") + "\n").as_bytes()).await.expect("feed write");
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(update(&next(&mut client).await));
    }
    let want = [("quote", "AAA", 1, 1), ("quote", "AAA", 2, 2), ("trade", "BBB", 1, 3), ("quote", "AAA", 3, 5)];
    assert_eq!(got, want.map(|(t, s, q, ts)| (t, s.to_owned(), q, ts)));

    // A later subscriber starts at the symbol's next seq; an unsubscribe
    // is acked and ends the symbol's updates for that client alone.
    let mut late = Client::connect(server.ws, Encoding::Msgpack).await.expect("connect");
    late.subscribe(&["AAA"]).await.expect("subscribe");
    assert!(matches!(next(&mut late).await, ServerMessage::Ack { .. }));
    client.unsubscribe(&["AAA"]).await.expect("unsubscribe");
    assert!(matches!(next(&mut client).await, ServerMessage::Ack { op, .. } if op == "unsubscribe"));
    feed.write_all(format!("{}\n{}\n", quote("AAA", 6), quote("BBB", 7)).as_bytes()).await.expect("feed write");
    assert_eq!(update(&next(&mut late).await), ("quote", "AAA".to_owned(), 4, 6));
    assert_eq!(update(&next(&mut client).await), ("quote", "BBB".to_owned(), 2, 7), "AAA no more");
}

#[tokio::test]
async fn other_encodings_and_bad_requests_are_refused() {
    let server = start();
    assert!(Client::connect(server.ws, Encoding::Json).await.is_err(), "msgpack only");
    let mut client = Client::connect(server.ws, Encoding::Msgpack).await.expect("connect");
    client.send_text(r#"{"op":"subscribe"}"#).await.expect("send");
    match next(&mut client).await {
        ServerMessage::Error { code, .. } => assert_eq!(code, "bad_request"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn the_load_generator_runs_against_it_without_a_seq_error() {
    let server = start();
    let out = Command::new(env!("CARGO_BIN_EXE_tickcast-bench"))
        .args(["--target", "minimal", "--server", &server.ws.to_string(), "--drive-feed", &server.feed.to_string()])
        .args(["--server-pid", &server.child.id().to_string()])
        .args(["--subscribers", "20", "--per-sub", "5", "--symbols", "20", "--rate", "2000"])
        .args(["--warmup", "1s", "--duration", "2s", "--json"])
        .output()
        .expect("run tickcast-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON report")).expect("JSON report");
    assert_eq!(report["seq_errors"], 0, "{report}");
    let delivered = report["delivered"].as_f64().expect("delivered");
    let expected = report["expected_per_sec"].as_f64().expect("expected") * 2.0;
    assert!(delivered > 0.9 * expected && delivered < 1.1 * expected, "{delivered} of {expected}: {report}");
}

//! The read side of a session (`src/session/inbound.rs`), over real sockets:
//! a client frame that trickles in while the server's pings fire is read
//! whole, and quiet sessions hold no read buffer.

mod common;

use std::time::Duration;

use common::start;
use tickcast::config::Config;
use tickcast::feed::FeedSpec;
use tickcast::wire::{Encoding, ServerMessage};
use tickcast_client::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const STEP: Duration = Duration::from_secs(5);

fn config() -> Config {
    Config {
        feed: FeedSpec::Tcp("127.0.0.1:0".parse().unwrap()),
        // Pings fire many times while one frame trickles in; our raw client
        // never answers them, so the pong deadline is far away.
        ping_interval: Duration::from_millis(20),
        pong_timeout: Duration::from_secs(60),
        ..Config::default()
    }
}

/// A masked client text frame with the smallest header.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads server frames (unmasked) until a text frame; returns its payload.
/// Pings and other control frames are skipped.
async fn next_text(stream: &mut TcpStream) -> String {
    loop {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.expect("frame header");
        let len = match head[1] & 0x7f {
            126 => stream.read_u16().await.expect("length") as usize,
            127 => stream.read_u64().await.expect("length") as usize,
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.expect("payload");
        match head[0] & 0x0f {
            0x1 => return String::from_utf8(payload).expect("utf-8"),
            0x8 => panic!("server closed: {payload:?}"),
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_frame_that_trickles_in_across_pings_is_read_whole_and_quiet_sessions_hold_no_buffer() {
    let running = start(config()).await;
    let addr = running.addr;
    // Forty known symbols, so that the request below is one long frame.
    let mut feed = TcpStream::connect(running.feed.expect("tcp feed")).await.expect("connect feed");
    let lines: String = (0..40)
        .map(|i| {
            format!("{{\"type\":\"quote\",\"sym\":\"SYM{i:03}\",\"bid\":1.5,\"bid_sz\":1,\"ask\":1.75,\"ask_sz\":2}}\n")
        })
        .collect();
    feed.write_all(lines.as_bytes()).await.expect("feed write");
    let published = async {
        while running.metric("tickcast_updates_published_total").await < 40.0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    timeout(STEP, published).await.expect("quotes published");
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut stream = common::handshake(stream, addr, "/ws?encoding=json").await;
    assert_eq!(running.metric("tickcast_read_buffers").await, 0.0, "nothing sent yet, no buffer");

    // A subscribe long enough for a 16-bit length, sent in pieces that cut
    // the header, the extended length, the mask and the payload, with
    // several ping ticks between pieces.
    let names: Vec<String> = (0..40).map(|i| format!("\"SYM{i:03}\"")).collect();
    let request = format!(r#"{{"op":"subscribe","symbols":[{}]}}"#, names.join(","));
    assert!(request.len() > 125);
    let frame = masked_text(request.as_bytes());
    let cuts = [1, 2, 3, 5, 7, 8, 40, frame.len() - 1];
    let mut sent = 0;
    for (i, &cut) in cuts.iter().enumerate() {
        stream.write_all(&frame[sent..cut]).await.unwrap();
        sent = cut;
        tokio::time::sleep(Duration::from_millis(70)).await;
        if i == 2 {
            assert_eq!(running.metric("tickcast_read_buffers").await, 1.0, "a part-read frame holds a buffer");
        }
    }
    stream.write_all(&frame[sent..]).await.unwrap();

    // The whole request was understood: the ack names all forty symbols
    // (the last one came in the last piece), and it is not a close.
    let ack = timeout(STEP, next_text(&mut stream)).await.expect("a reply in time");
    assert!(ack.starts_with(r#"{"type":"ack","op":"subscribe""#), "{ack}");
    assert!(ack.contains("SYM000") && ack.contains("SYM039"), "{ack}");
    let snapshot = timeout(STEP, next_text(&mut stream)).await.expect("a snapshot in time");
    assert!(snapshot.contains(r#""type":"snapshot""#), "{snapshot}");

    // Now the session is quiet: its read buffer is gone, the session is not.
    let quiet = async {
        while running.metric("tickcast_read_buffers").await != 0.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(STEP, quiet).await.expect("the read buffer is released once the frame is read");
    assert_eq!(running.metric("tickcast_connections").await, 1.0);

    // Many quiet subscribers: none keeps a buffer, and each still gets a
    // reply to its next request (a fresh reader is made for it).
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = Client::connect(addr, Encoding::Json).await.expect("connect");
        c.subscribe(&["*"]).await.expect("subscribe");
        loop {
            let msg = timeout(STEP, c.next_message()).await.expect("in time").expect("message");
            if matches!(msg, ServerMessage::Ack { .. }) {
                break;
            }
        }
        clients.push(c);
    }
    let quiet = async {
        while running.metric("tickcast_read_buffers").await != 0.0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(STEP, quiet).await.expect("quiet subscribers hold no read buffer");
    for c in &mut clients {
        c.unsubscribe(&["*"]).await.expect("unsubscribe");
        loop {
            let msg = timeout(STEP, c.next_message()).await.expect("in time").expect("message");
            if let ServerMessage::Ack { op, .. } = msg {
                assert_eq!(op, "unsubscribe");
                break;
            }
        }
    }
    assert_eq!(running.metric("tickcast_connections").await, 21.0);
    drop(clients);
    drop(stream);
    running.shutdown_within(Duration::from_secs(5)).await;
}

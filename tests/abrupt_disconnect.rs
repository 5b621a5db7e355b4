//! Clients that vanish mid-stream (socket dropped with data in flight, as a
//! killed browser tab or a load generator's abort does) must cost the
//! server nothing: no panic in any task, every session cleaned up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tickcast::client::{http_get, Client};
use tickcast::codec::Encoding;
use tickcast::config::Config;
use tickcast::feed::SyntheticSettings;
use tickcast::metrics::scrape_value;
use tickcast::server::Server;

async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await.unwrap();
    scrape_value(&body, name).unwrap()
}

/// Handshakes by hand and subscribes to everything, so the test owns the
/// socket and can reset it.
async fn raw_subscriber(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let payload = br#"{"op":"subscribe","symbols":["*"]}"#;
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
    let mut some = [0u8; 1024];
    let _ = stream.read(&mut some).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanishing_clients_are_cleaned_up_without_panics() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let config = Config { synthetic: SyntheticSettings { symbols: 20, rate: 50_000.0, seed: 9 }, ..Config::default() };
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    for round in 0..5 {
        let mut clients = Vec::new();
        for encoding in Encoding::ALL.iter().cycle().take(6) {
            let mut c = Client::connect(addr, *encoding).await.unwrap();
            c.subscribe(&["*"]).await.unwrap();
            c.next_message().await.unwrap();
            clients.push(c);
        }
        // Raw clients that reset the connection (SO_LINGER 0) mid-stream.
        let mut raw = Vec::new();
        for _ in 0..6 {
            raw.push(raw_subscriber(addr).await);
        }
        // Read a little, leave the rest unread, and vanish.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(clients);
        for stream in raw {
            socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO)).unwrap();
            drop(stream);
        }
        tokio::time::timeout(Duration::from_secs(5), async {
            // The engine drops subscriptions just after the session ends.
            while metric(addr, "tickcast_connections").await > 0.0 || metric(addr, "tickcast_subscriptions").await > 0.0
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: sessions not cleaned up"));
    }
    assert_eq!(panics.load(Ordering::SeqCst), 0, "a server task panicked");
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
}

//! Clients that vanish mid-stream (socket dropped with data in flight, as a
//! killed browser tab or a load generator's abort does) must cost the
//! server nothing: no panic in any task, every session cleaned up.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tickcast::config::Config;
use tickcast::engine::history::HistoryPolicy;
use tickcast::feed::SyntheticSettings;
use tickcast::server::Server;
use tickcast::wire::Encoding;
use tickcast_client::{http_get, scrape_value, Client};

async fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await.unwrap();
    scrape_value(&body, name).unwrap()
}

/// Subscribes to everything over a socket the test owns (so it can reset
/// it), and reads a little.
async fn raw_subscriber(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncReadExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = common::handshake_and_subscribe_all(stream, addr, "/ws").await;
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

    // No history hold for the vanished clients: held, their three
    // encodings would go on being encoded at 50k ticks/s for
    // --history-linger, which a debug build cannot keep up with (the
    // hold's cost is measured in BENCHMARKS.md, not here).
    let history = HistoryPolicy { linger: Duration::ZERO, ..HistoryPolicy::default() };
    let config =
        Config { synthetic: SyntheticSettings { symbols: 20, rate: 50_000.0, seed: 9 }, history, ..Config::default() };
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
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().expect("clean shutdown");
}

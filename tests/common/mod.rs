//! Helpers shared by integration tests: a server running in the test's
//! runtime, and a raw handshake for tests that need to own the socket (to
//! reset it, or to shrink its receive buffer). Each test file uses some of
//! them, hence the `dead_code` allowance. `crates/loadgen/tests` includes
//! this file by path, so the workspace has one set of these helpers.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tickcast::config::Config;
use tickcast::server::Server;
use tickcast_client::{http_get, scrape_value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upgrades `stream` to a WebSocket on `path` by hand and checks the 101.
/// Reads nothing after the response head.
pub async fn handshake(mut stream: TcpStream, addr: SocketAddr, path: &str) -> TcpStream {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    stream
}

/// [`handshake`], then a subscribe to every symbol in one masked text
/// frame. Reads nothing after the 101.
pub async fn handshake_and_subscribe_all(stream: TcpStream, addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = handshake(stream, addr, path).await;
    let payload = br#"{"op":"subscribe","symbols":["*"]}"#;
    let mask = [9u8, 8, 7, 6];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
    stream
}

/// A server bound on port 0 and serving on the test's runtime.
pub struct Running {
    /// Its HTTP/WebSocket address.
    pub addr: SocketAddr,
    /// Its tcp feed address, with a `tcp://` feed.
    pub feed: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tickcast::server::ServerError>>,
}

/// Binds a server with `config` and runs it until [`Running::shutdown_within`].
pub async fn start(config: Config) -> Running {
    let server = Server::bind(config).await.expect("bind");
    let (addr, feed) = (server.local_addr(), server.feed_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running { addr, feed, stop: Some(stop), task }
}

impl Running {
    /// Shuts the server down gracefully; fails the test unless it stops,
    /// without a panic, within `limit`. Returns how long it took.
    pub async fn shutdown_within(mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(limit, &mut self.task)
            .await
            .expect("server stops")
            .expect("no panic")
            .expect("clean shutdown");
        started.elapsed()
    }

    /// One value from `/metrics`; fails the test if it is missing.
    pub async fn metric(&self, name: &str) -> f64 {
        let (status, body) = http_get(self.addr, "/metrics").await.expect("GET /metrics");
        assert_eq!(status, 200);
        scrape_value(&body, name).unwrap_or_else(|| panic!("metric {name} missing"))
    }
}

//! Helpers shared by integration tests that need to own the raw socket
//! (to reset it, or to shrink its receive buffer).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upgrades `stream` to a WebSocket on `path` by hand, then subscribes to
/// every symbol with one masked text frame. Reads nothing after the 101.
pub async fn handshake_and_subscribe_all(mut stream: TcpStream, addr: SocketAddr, path: &str) -> TcpStream {
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
    let payload = br#"{"op":"subscribe","symbols":["*"]}"#;
    let mask = [9u8, 8, 7, 6];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await.unwrap();
    stream
}

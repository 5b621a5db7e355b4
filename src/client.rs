//! A small tickcast client: connect, subscribe, read decoded messages.
//!
//! In: a server address and an encoding. Out: [`ServerMessage`]s.
//! The load generator and the integration tests use it; it is also the
//! reference for writing a client in another language.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::{decode, DecodeError, Encoding, ServerMessage};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// WebSocket trouble, including a refused handshake.
    #[error("websocket: {0}")]
    Ws(#[from] fastwebsockets::WebSocketError),
    /// A frame that is not a valid server message.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// What the server sent next.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A decoded message.
    Message(ServerMessage<'static>),
    /// The server closed the connection with this code and reason.
    Close(u16, String),
}

struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(fut);
    }
}

/// A connected client.
pub struct Client {
    ws: FragmentCollector<TokioIo<Upgraded>>,
    /// The encoding this connection uses.
    pub encoding: Encoding,
}

impl Client {
    /// Connects to `ws://addr/ws?encoding=...`.
    pub async fn connect(addr: SocketAddr, encoding: Encoding) -> Result<Client, ClientError> {
        Client::connect_path(addr, &format!("/ws?encoding={}", encoding.name()), encoding).await
    }

    /// Connects to `path` (with its query), expecting `encoding`.
    pub async fn connect_path(addr: SocketAddr, path: &str, encoding: Encoding) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        Client::connect_stream(stream, addr, path, encoding).await
    }

    /// Upgrades an already connected `stream` (e.g. one with a small
    /// receive buffer, to play a slow reader) on `path`.
    pub async fn connect_stream(
        stream: TcpStream,
        addr: SocketAddr,
        path: &str,
        encoding: Encoding,
    ) -> Result<Client, ClientError> {
        stream.set_nodelay(true)?;
        let req = Request::builder()
            .method("GET")
            .uri(path)
            .header(HOST, addr.to_string())
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "upgrade")
            .header(SEC_WEBSOCKET_KEY, fastwebsockets::handshake::generate_key())
            .header(SEC_WEBSOCKET_VERSION, "13")
            .body(Empty::<Bytes>::new())?;
        let (ws, _) = fastwebsockets::handshake::client(&SpawnExecutor, req, stream).await?;
        Ok(Client { ws: FragmentCollector::new(ws), encoding })
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.ws.write_frame(Frame::text(Payload::Borrowed(text.as_bytes()))).await?;
        Ok(())
    }

    /// Sends `{"op":"subscribe","symbols":[...]}`.
    pub async fn subscribe(&mut self, symbols: &[&str]) -> Result<(), ClientError> {
        let msg = serde_json::json!({"op": "subscribe", "symbols": symbols});
        self.send_text(&msg.to_string()).await
    }

    /// Sends `{"op":"unsubscribe","symbols":[...]}`.
    pub async fn unsubscribe(&mut self, symbols: &[&str]) -> Result<(), ClientError> {
        let msg = serde_json::json!({"op": "unsubscribe", "symbols": symbols});
        self.send_text(&msg.to_string()).await
    }

    /// Reads the next data frame's payload (pings are answered inside).
    pub async fn next_payload(&mut self) -> Result<Result<Payload<'static>, (u16, String)>, ClientError> {
        loop {
            let frame = self.ws.read_frame().await?;
            match frame.opcode {
                OpCode::Text | OpCode::Binary => return Ok(Ok(Payload::Owned(frame.payload.to_vec()))),
                OpCode::Close => {
                    let p = &frame.payload;
                    let code = if p.len() >= 2 { u16::from_be_bytes([p[0], p[1]]) } else { 1005 };
                    let reason = String::from_utf8_lossy(p.get(2..).unwrap_or_default()).into_owned();
                    return Ok(Err((code, reason)));
                }
                _ => continue,
            }
        }
    }

    /// Reads and decodes the next event.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        Ok(match self.next_payload().await? {
            Ok(payload) => Event::Message(decode(self.encoding, &payload)?),
            Err((code, reason)) => Event::Close(code, reason),
        })
    }

    /// Reads the next message; a close becomes an error.
    pub async fn next_message(&mut self) -> Result<ServerMessage<'static>, ClientError> {
        match self.next_event().await? {
            Event::Message(m) => Ok(m),
            Event::Close(code, reason) => Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                format!("server closed with {code}: {reason}"),
            ))),
        }
    }

    /// The underlying WebSocket, for tests that need raw frames.
    pub fn raw(&mut self) -> &mut FragmentCollector<TokioIo<Upgraded>> {
        &mut self.ws
    }

    /// Gives up the framing and returns the upgraded stream, for tools that
    /// write many pre-built frames with one write (the bench's publisher).
    /// Bytes the server sent that were already read are dropped.
    pub fn into_inner(self) -> TokioIo<Upgraded> {
        self.ws.into_inner()
    }
}

/// A plain `GET` over HTTP/1.1 with `Connection: close`; returns the status
/// code and body. Enough for `/metrics`, `/symbols` and `/healthz`.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response");
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

//! A WebSocket connection to tickcast: connect, subscribe, read decoded
//! messages.
//!
//! In: a server address and an encoding. Out: [`ServerMessage`]s, decoded
//! from MessagePack, protobuf or JSON by `tickcast::wire::decode`.
//! Frames are read one at a time through fastwebsockets; a client that
//! must read faster hands its socket to a [`FrameReader`].
//!
//! Imports: `tickcast::wire` (the message model and its decoder),
//! [`crate::error`] and [`crate::frame_reader`].

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload};
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use hyper::upgrade::Upgraded;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tickcast::wire::{decode, Encoding, ServerMessage};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::frame_reader::FrameReader;

/// What the server sent next.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A decoded message.
    Message(ServerMessage<'static>),
    /// The server closed the connection with this code and reason.
    Close(u16, String),
}

/// Runs the connection task hyper's handshake spawns, on the caller's
/// tokio runtime.
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

/// A connected client: one WebSocket, one encoding.
pub struct Client {
    ws: FragmentCollector<TokioIo<Upgraded>>,
    /// The encoding this connection uses.
    pub encoding: Encoding,
}

impl Client {
    /// Connects to `ws://addr/ws?encoding=...`.
    pub async fn connect(addr: SocketAddr, encoding: Encoding) -> Result<Client, Error> {
        Client::connect_path(addr, &format!("/ws?encoding={}", encoding.name()), encoding).await
    }

    /// Opens a private replay session: `ws://addr/replay?QUERY&encoding=...`,
    /// where `query` names the recording and the pace
    /// (`source=NAME&speed=10`; `docs/PROTOCOL.md`, "Replay sessions").
    pub async fn connect_replay(addr: SocketAddr, query: &str, encoding: Encoding) -> Result<Client, Error> {
        Client::connect_path(addr, &format!("/replay?{query}&encoding={}", encoding.name()), encoding).await
    }

    /// Connects to `path` (with its query), expecting `encoding`: for
    /// paths and queries the other constructors do not build (`?slow=`).
    pub async fn connect_path(addr: SocketAddr, path: &str, encoding: Encoding) -> Result<Client, Error> {
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
    ) -> Result<Client, Error> {
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
    pub async fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.ws.write_frame(Frame::text(Payload::Borrowed(text.as_bytes()))).await?;
        Ok(())
    }

    /// Sends `{"op":"subscribe","symbols":[...]}`.
    pub async fn subscribe(&mut self, symbols: &[&str]) -> Result<(), Error> {
        let msg = serde_json::json!({"op": "subscribe", "symbols": symbols});
        self.send_text(&msg.to_string()).await
    }

    /// Sends `{"op":"subscribe","symbols":[...],"depth":D}`: `depth` is a
    /// number from the server's menu (1, 5, 10, 20, 25, 50, 100, 500,
    /// 1000) or `"full"`.
    pub async fn subscribe_depth(&mut self, symbols: &[&str], depth: &str) -> Result<(), Error> {
        let depth = match depth.parse::<u64>() {
            Ok(n) => serde_json::json!(n),
            Err(_) => serde_json::json!(depth),
        };
        let msg = serde_json::json!({"op": "subscribe", "symbols": symbols, "depth": depth});
        self.send_text(&msg.to_string()).await
    }

    /// Sends `{"op":"unsubscribe","symbols":[...]}`.
    pub async fn unsubscribe(&mut self, symbols: &[&str]) -> Result<(), Error> {
        let msg = serde_json::json!({"op": "unsubscribe", "symbols": symbols});
        self.send_text(&msg.to_string()).await
    }

    /// Reads the next data frame's payload (pings are answered inside).
    pub async fn next_payload(&mut self) -> Result<Result<Payload<'static>, (u16, String)>, Error> {
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
    pub async fn next_event(&mut self) -> Result<Event, Error> {
        Ok(match self.next_payload().await? {
            Ok(payload) => Event::Message(decode(self.encoding, &payload)?),
            Err((code, reason)) => Event::Close(code, reason),
        })
    }

    /// Reads the next message; a close becomes [`Error::Closed`].
    pub async fn next_message(&mut self) -> Result<ServerMessage<'static>, Error> {
        match self.next_event().await? {
            Event::Message(m) => Ok(m),
            Event::Close(code, reason) => Err(Error::Closed { code, reason }),
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

    /// Hands the socket to a [`FrameReader`], which reads many frames per
    /// socket read. Call it before reading anything, or after the last
    /// message this client should see: bytes already read are dropped.
    pub fn into_frame_reader(self) -> FrameReader {
        FrameReader::new(self.into_inner())
    }
}

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

/// A `subscribe` request (`docs/PROTOCOL.md`, "Client messages"), with
/// the optional depth and the resume fields of issue 17: `from_seq`, the
/// last seq the client holds per symbol, and `epoch`, the one of the ack it
/// got before. A symbol named in `from_seq` that the server can recover
/// gets no snapshot, only the updates it missed; the others join the
/// normal way (ack, snapshot, updates).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscribe {
    /// Symbols to subscribe to (`"*"`: every symbol).
    pub symbols: Vec<String>,
    /// Book levels per side: a number from the server's menu or `"full"`;
    /// `None`: the server's `--book-depth`.
    pub depth: Option<String>,
    /// Symbol -> last seq held, in request order; every symbol named here
    /// must also be in `symbols` (the server refuses the request
    /// otherwise). Empty: no resume.
    pub from_seq: Vec<(String, u64)>,
    /// The `epoch` of the ack the held seqs came under. Sent whenever
    /// `from_seq` is: a server whose epoch differs recovers nothing.
    pub epoch: Option<u64>,
}

impl Subscribe {
    /// A plain subscribe to `symbols`.
    pub fn new<S: Into<String>>(symbols: impl IntoIterator<Item = S>) -> Subscribe {
        Subscribe { symbols: symbols.into_iter().map(Into::into).collect(), ..Subscribe::default() }
    }

    /// At `depth` levels per side (a number from the menu or `"full"`).
    pub fn depth(mut self, depth: impl Into<String>) -> Subscribe {
        self.depth = Some(depth.into());
        self
    }

    /// Resuming: `from_seq` holds the last seq held per symbol, `epoch` the
    /// epoch of the ack those seqs came under.
    pub fn resume(mut self, from_seq: Vec<(String, u64)>, epoch: Option<u64>) -> Subscribe {
        self.from_seq = from_seq;
        self.epoch = epoch;
        self
    }

    /// The request as the JSON text sent to the server. A numeric depth
    /// goes as a number, anything else (`"full"`) as a string; `from_seq`
    /// and `epoch` only when set.
    pub fn to_json(&self) -> String {
        let mut msg = serde_json::Map::new();
        msg.insert("op".into(), "subscribe".into());
        msg.insert("symbols".into(), serde_json::json!(self.symbols));
        if let Some(depth) = &self.depth {
            let depth = match depth.parse::<u64>() {
                Ok(n) => serde_json::json!(n),
                Err(_) => serde_json::json!(depth),
            };
            msg.insert("depth".into(), depth);
        }
        if !self.from_seq.is_empty() {
            let from_seq: serde_json::Map<String, serde_json::Value> =
                self.from_seq.iter().map(|(sym, seq)| (sym.clone(), serde_json::json!(seq))).collect();
            msg.insert("from_seq".into(), from_seq.into());
        }
        if let Some(epoch) = self.epoch {
            msg.insert("epoch".into(), epoch.into());
        }
        serde_json::Value::Object(msg).to_string()
    }
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
        let request = Subscribe::new(symbols.iter().copied()).depth(depth);
        self.send_subscribe(&request).await
    }

    /// Sends a [`Subscribe`] request, e.g. one that resumes by seq.
    pub async fn send_subscribe(&mut self, request: &Subscribe) -> Result<(), Error> {
        self.send_text(&request.to_json()).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(request: &Subscribe) -> serde_json::Value {
        serde_json::from_str(&request.to_json()).expect("valid JSON")
    }

    #[test]
    fn a_subscribe_request_carries_depth_and_resume_fields_only_when_set() {
        let plain = Subscribe::new(["AAPL", "MSFT"]);
        assert_eq!(parsed(&plain), serde_json::json!({"op": "subscribe", "symbols": ["AAPL", "MSFT"]}));
        assert_eq!(parsed(&plain.clone().depth("25"))["depth"], 25);
        assert_eq!(parsed(&plain.clone().depth("full"))["depth"], "full");
        let resume =
            plain.depth("10").resume(vec![("AAPL".into(), 1234), ("MSFT".into(), 0)], Some(1_764_770_000_000_000_000));
        assert_eq!(
            parsed(&resume),
            serde_json::json!({
                "op": "subscribe", "symbols": ["AAPL", "MSFT"], "depth": 10,
                "from_seq": {"AAPL": 1234, "MSFT": 0}, "epoch": 1_764_770_000_000_000_000u64,
            })
        );
        // The epoch is exact above 2^53: a u64 on the wire, not a double.
        assert!(resume.to_json().contains("\"epoch\":1764770000000000000"));
    }
}

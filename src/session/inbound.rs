//! The read side of a session: WebSocket frames from the client.
//!
//! In: the socket (and any bytes the HTTP layer read past the handshake).
//! Out: complete client messages, pongs and closes, one at a time; the
//! obligated replies (pong to a ping, the echo of a close) go straight into
//! the session's control queue.
//!
//! fastwebsockets does the frame parsing, unmasking, UTF-8 checks and
//! reassembly. Two things are added around it:
//!
//! - **No read buffer while the client is quiet.** fastwebsockets gives
//!   every reader an 8 KiB buffer. A market-data client sends a subscribe
//!   and then, for hours, only a pong now and then, so holding that buffer
//!   would be most of an idle connection's memory. [`Inbound`] drops the
//!   reader once every byte it was given has been returned as a frame, and
//!   waits for readiness without a buffer; the next frame gets a fresh
//!   reader. Whether the reader holds bytes is decided by counting: bytes
//!   handed to it against the wire size of every frame it produced,
//!   counted at the smallest legal header size. That can only under-count
//!   what was consumed, so a reader is never dropped with bytes in it; a
//!   client that fragments its messages (whose fragment headers are not
//!   seen) just keeps its buffer.
//! - **Cancel safety.** fastwebsockets' `read_frame` loses bytes if its
//!   future is dropped part-way through a frame, and the session drops it
//!   every time another branch of its `select!` (a ping tick, a replay
//!   step, shutdown) wins. [`Inbound::next`] keeps an unfinished read in
//!   its own state, so calling it again resumes that read.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use fastwebsockets::{FragmentCollectorRead, Frame, OpCode, Role, WebSocketError};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::wire;

/// What one read returns: the reader back (to keep or drop) and the frame.
type ReadOutcome = (Reader, Result<Frame<'static>, WebSocketError>);

/// Bytes in and frames out of the current reader, outbox with its stream
/// (inside fastwebsockets) and its reply hook.
#[derive(Default)]
struct Counts {
    /// Bytes handed to fastwebsockets (plus the handshake leftover,
    /// counted up front).
    fed: AtomicU64,
    /// Wire bytes of the frames it produced, at the smallest header size.
    framed: AtomicU64,
}

impl Counts {
    fn frame(&self, payload_len: usize) {
        self.framed.fetch_add(wire_len(payload_len), Ordering::Relaxed);
    }

    /// Whether every byte handed over has come back as a frame.
    fn drained(&self) -> bool {
        self.fed.load(Ordering::Relaxed) == self.framed.load(Ordering::Relaxed)
    }
}

/// The smallest wire size of a masked client frame with this payload.
fn wire_len(payload_len: usize) -> u64 {
    let extended = match payload_len {
        0..=125 => 0,
        126..=65_535 => 2,
        _ => 8,
    };
    (2 + extended + 4 + payload_len) as u64
}

/// A session's frame reader; see the module doc.
pub struct Inbound {
    state: State,
    socket: Arc<TcpStream>,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    max_message_bytes: usize,
    /// Bytes the HTTP layer read past the handshake, for the first reader.
    leftover: Bytes,
}

enum State {
    /// No reader and no buffer: the client has sent nothing unread.
    Idle,
    /// A read in progress (maybe not yet polled), owning the reader.
    Reading(Pin<Box<dyn Future<Output = ReadOutcome> + Send>>),
}

struct Reader {
    ws: FragmentCollectorRead<Counted>,
    counts: Arc<Counts>,
}

impl Inbound {
    /// The read side of `socket`, which starts with `leftover`; messages
    /// up to `max_message_bytes` are accepted. Readers held are counted in
    /// `metrics.read_buffers`.
    pub fn new(
        socket: Arc<TcpStream>,
        leftover: Bytes,
        outbox: Arc<Outbox>,
        metrics: Arc<Metrics>,
        max_message_bytes: usize,
    ) -> Inbound {
        Inbound { state: State::Idle, socket, outbox, metrics, max_message_bytes, leftover }
    }

    /// The next text, binary, pong or close frame from the client. Pings
    /// are answered (and closes echoed) through the session's control
    /// queue. Cancel safe: a read interrupted part-way resumes on the next
    /// call.
    pub async fn next(&mut self) -> Result<Frame<'static>, WebSocketError> {
        loop {
            match &mut self.state {
                State::Idle => {
                    if self.leftover.is_empty() {
                        // Wait for a byte (or EOF) without taking it. Not
                        // `readable()`: its readiness stays set after the
                        // last frame was read, and a reader made on it
                        // would sit holding its buffer until the next frame.
                        self.socket.peek(&mut [0u8; 1]).await?;
                    }
                    let reader = self.reader();
                    self.metrics.read_buffers.fetch_add(1, Ordering::Relaxed);
                    self.state = State::Reading(Box::pin(read(reader, self.outbox.clone())));
                }
                State::Reading(read_fut) => {
                    let (reader, result) = read_fut.await;
                    self.state = if result.is_ok() && reader.counts.drained() {
                        self.metrics.read_buffers.fetch_sub(1, Ordering::Relaxed);
                        State::Idle
                    } else {
                        State::Reading(Box::pin(read(reader, self.outbox.clone())))
                    };
                    return result;
                }
            }
        }
    }

    fn reader(&mut self) -> Reader {
        let leftover = std::mem::take(&mut self.leftover);
        let counts = Arc::new(Counts::default());
        counts.fed.store(leftover.len() as u64, Ordering::Relaxed);
        let stream = Counted { leftover, socket: self.socket.clone(), counts: counts.clone() };
        let (mut ws, _) = fastwebsockets::after_handshake_split(stream, tokio::io::sink(), Role::Server);
        // fastwebsockets refuses payloads >= its limit; ours allows exactly
        // --max-message-bytes.
        ws.set_max_message_size(self.max_message_bytes.saturating_add(1));
        Reader { ws: FragmentCollectorRead::new(ws), counts }
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        if matches!(self.state, State::Reading(_)) {
            self.metrics.read_buffers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One frame from `reader`; the obligated replies go to `outbox`'s queue.
async fn read(mut reader: Reader, outbox: Arc<Outbox>) -> ReadOutcome {
    let counts = reader.counts.clone();
    let mut send_fn = move |frame: Frame<'_>| {
        // A ping's pong and a close's echo carry the payload they answer,
        // so they tell the size of the frame consumed.
        counts.frame(frame.payload.len());
        let bytes = wire::frame(frame.opcode, &frame.payload);
        if frame.opcode == OpCode::Close {
            outbox.close(bytes);
        } else {
            outbox.push_control(bytes);
        }
        std::future::ready(Ok::<(), io::Error>(()))
    };
    let result = reader.ws.read_frame(&mut send_fn).await;
    if let Ok(frame) = &result {
        if frame.opcode != OpCode::Close {
            // A close was counted by its echo.
            reader.counts.frame(frame.payload.len());
        }
    }
    (reader, result)
}

/// The socket as fastwebsockets reads it: first the handshake leftover,
/// then the socket, counting what it hands over. The writer task writes to
/// the same socket at the same time: both only need `&TcpStream`
/// (readiness plus `try_*` calls), so it is outbox, not split.
struct Counted {
    leftover: Bytes,
    socket: Arc<TcpStream>,
    counts: Arc<Counts>,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.leftover.is_empty() {
            // Counted up front, when the reader was made.
            let n = self.leftover.len().min(buf.remaining());
            buf.put_slice(&self.leftover[..n]);
            self.leftover.advance(n);
            return Poll::Ready(Ok(()));
        }
        loop {
            match self.socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            match self.socket.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    self.counts.fed.fetch_add(n as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_len_uses_the_smallest_header() {
        assert_eq!(wire_len(0), 6);
        assert_eq!(wire_len(125), 131);
        assert_eq!(wire_len(126), 134);
        assert_eq!(wire_len(65_535), 65_543);
        assert_eq!(wire_len(65_536), 65_550);
    }
}

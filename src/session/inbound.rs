//! The read side of a session: WebSocket frames from the client.
//!
//! In: the socket (and any bytes the HTTP layer read past the handshake).
//! Out: complete client messages, pings, pongs and closes, one at a time;
//! the obligated echo of a close goes straight into the session's control
//! queue. Pings come out (fastwebsockets' automatic pong is off) so that
//! the session counts them against the client's request rate before it
//! answers.
//!
//! fastwebsockets does the frame parsing, unmasking, UTF-8 checks and
//! reassembly. Three things are added around it:
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
//! - **RFC 6455 rules fastwebsockets does not check.** It accepts an
//!   unmasked client frame (§5.1: the server must fail the connection) and
//!   a close or pong frame with more than 125 bytes of payload (§5.5: no
//!   control frame may). A [`HeaderScan`] walks the frame headers of the
//!   bytes handed to fastwebsockets, skipping payloads by their length;
//!   bytes before a bad header are handed over, then the read fails with a
//!   [`FrameViolation`], which the session answers with 1002.

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

    /// The next text, binary, ping, pong or close frame from the client.
    /// Closes are echoed through the session's control queue; pings are
    /// the session's to answer. Cancel safe: a read interrupted part-way
    /// resumes on the next call. An unmasked frame or an over-long control
    /// frame fails with an [`WebSocketError::IoError`] holding a
    /// [`FrameViolation`] (see [`FrameViolation::of`]).
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
        let stream = Counted {
            leftover,
            socket: self.socket.clone(),
            counts: counts.clone(),
            scan: HeaderScan::default(),
            violation: None,
        };
        let (mut ws, _) = fastwebsockets::after_handshake_split(stream, tokio::io::sink(), Role::Server);
        // fastwebsockets refuses payloads >= its limit; ours allows exactly
        // --max-message-bytes.
        ws.set_max_message_size(self.max_message_bytes.saturating_add(1));
        // The session answers pings, after the rate limit.
        ws.set_auto_pong(false);
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
        // A close's echo carries the payload it answers, so it tells the
        // size of the frame consumed.
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
    /// Where the byte stream is in its frames (a reader starts at a frame
    /// boundary: the first after the handshake, or after a drained reader).
    scan: HeaderScan,
    /// A rule broken in bytes not handed over: the next read fails with it.
    violation: Option<FrameViolation>,
}

impl Counted {
    /// Checks the bytes just put in `buf` after `start`; on a broken rule,
    /// keeps only the bytes before the bad header and returns how many
    /// bytes were dropped.
    fn check(&mut self, buf: &mut ReadBuf<'_>, start: usize) -> usize {
        let end = buf.filled().len();
        match self.scan.scan(&buf.filled()[start..]) {
            Ok(()) => 0,
            Err((at, violation)) => {
                self.violation = Some(violation);
                buf.set_filled(start + at);
                end - start - at
            }
        }
    }

    fn violation(&mut self) -> Option<io::Error> {
        self.violation.take().map(|v| io::Error::new(io::ErrorKind::InvalidData, v))
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.violation() {
            return Poll::Ready(Err(e));
        }
        let start = buf.filled().len();
        if !self.leftover.is_empty() {
            // Counted up front, when the reader was made.
            let n = self.leftover.len().min(buf.remaining());
            buf.put_slice(&self.leftover[..n]);
            self.leftover.advance(n);
            if self.check(buf, start) > 0 && buf.filled().len() == start {
                return Poll::Ready(Err(self.violation().expect("just found")));
            }
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
                    let dropped = self.check(buf, start);
                    self.counts.fed.fetch_add((n - dropped) as u64, Ordering::Relaxed);
                    // Nothing before the bad header: fail now (an empty
                    // read would mean EOF).
                    if n > 0 && n == dropped {
                        return Poll::Ready(Err(self.violation().expect("just found")));
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// A frame header that breaks a rule of RFC 6455 fastwebsockets does not
/// check. The session closes with 1002 "protocol error".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameViolation {
    /// A client frame without a mask (RFC 6455 §5.1).
    #[error("unmasked client frame")]
    Unmasked,
    /// A control frame (close, ping, pong) with more than 125 bytes of
    /// payload (RFC 6455 §5.5).
    #[error("control frame over 125 bytes")]
    ControlTooLong,
}

impl FrameViolation {
    /// The violation a failed read carries, if that is why it failed.
    pub fn of(error: &WebSocketError) -> Option<FrameViolation> {
        match error {
            WebSocketError::IoError(e) => e.get_ref().and_then(|inner| inner.downcast_ref::<FrameViolation>()).copied(),
            _ => None,
        }
    }
}

/// Longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Follows a client's byte stream frame by frame, looking only at headers
/// (payloads are skipped by their length), and finds the first header that
/// is unmasked or a control frame over 125 bytes. Headers may be split
/// across reads.
#[derive(Default)]
struct HeaderScan {
    /// The header read so far.
    head: [u8; MAX_HEADER],
    /// How much of it.
    have: usize,
    /// Payload bytes left before the next header.
    skip: u64,
}

impl HeaderScan {
    /// Scans the next bytes of the stream. On a broken rule returns the
    /// offset in `bytes` of the bad header's first byte (0 if it began in
    /// an earlier call) and the rule.
    fn scan(&mut self, bytes: &[u8]) -> Result<(), (usize, FrameViolation)> {
        let mut i = 0;
        while i < bytes.len() {
            if self.skip > 0 {
                let n = self.skip.min((bytes.len() - i) as u64);
                self.skip -= n;
                i += n as usize;
                continue;
            }
            let header_start = i.saturating_sub(self.have);
            self.head[self.have] = bytes[i];
            self.have += 1;
            i += 1;
            if self.have < 2 {
                continue;
            }
            let (b0, b1) = (self.head[0], self.head[1]);
            if b1 & 0x80 == 0 {
                return Err((header_start, FrameViolation::Unmasked));
            }
            let length_code = b1 & 0x7f;
            // Opcodes 0x8 to 0xF are control frames.
            if b0 & 0x08 != 0 && length_code > 125 {
                return Err((header_start, FrameViolation::ControlTooLong));
            }
            let extended = match length_code {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            if self.have < 2 + extended + 4 {
                continue;
            }
            self.skip = match extended {
                0 => u64::from(length_code),
                2 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                _ => u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes")),
            };
            self.have = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame (the mask is all zeros: the payload is as is).
    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65_535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn the_scan_follows_frames_of_every_length_byte_by_byte() {
        let mut stream = Vec::new();
        for n in [0, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            stream.extend(masked(0x2, &vec![0x81; n]));
        }
        stream.extend(masked(0x9, b"ping"));
        stream.extend(masked(0x0, b"continuation"));
        for chunk in [1, 2, 3, 7, 13, 4096, stream.len()] {
            let mut scan = HeaderScan::default();
            for piece in stream.chunks(chunk) {
                assert_eq!(scan.scan(piece), Ok(()), "chunks of {chunk}");
            }
            assert_eq!((scan.have, scan.skip), (0, 0), "ends at a frame boundary");
        }
    }

    #[test]
    fn the_scan_finds_unmasked_and_over_long_control_frames() {
        let good = masked(0x1, br#"{"op":"subscribe","symbols":["A"]}"#);
        let mut unmasked = good.clone();
        unmasked[1] &= 0x7f;
        unmasked.truncate(unmasked.len() - 4); // as a client would send it
        let mut stream = good.clone();
        stream.extend(&unmasked);
        assert_eq!(HeaderScan::default().scan(&stream), Err((good.len(), FrameViolation::Unmasked)));
        let long_close = masked(0x8, &[b'x'; 126]);
        assert_eq!(HeaderScan::default().scan(&long_close), Err((0, FrameViolation::ControlTooLong)));
        let long_pong = masked(0xA, &[b'x'; 200]);
        assert_eq!(HeaderScan::default().scan(&long_pong), Err((0, FrameViolation::ControlTooLong)));
        // 125 bytes is the most a control frame may carry.
        assert_eq!(HeaderScan::default().scan(&masked(0x8, &[b'x'; 125])), Ok(()));
        // A bad header split across reads is reported at offset 0 of the
        // read that completes it.
        let mut scan = HeaderScan::default();
        assert_eq!(scan.scan(&stream[..good.len() + 1]), Ok(()));
        assert_eq!(scan.scan(&stream[good.len() + 1..]), Err((0, FrameViolation::Unmasked)));
    }

    #[test]
    fn wire_len_uses_the_smallest_header() {
        assert_eq!(wire_len(0), 6);
        assert_eq!(wire_len(125), 131);
        assert_eq!(wire_len(126), 134);
        assert_eq!(wire_len(65_535), 65_543);
        assert_eq!(wire_len(65_536), 65_550);
    }
}

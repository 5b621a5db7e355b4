//! A batch frame reader: one socket read, then every complete WebSocket
//! frame in it.
//!
//! In: an upgraded connection (from [`Client::into_frame_reader`]). Out:
//! each text or binary payload, borrowed from the read buffer, with the
//! time the read completed.
//!
//! The load generator reads with it, for every target it measures: it
//! shares two cores with the server under test, so its cost per message
//! decides how far it can push before it, not the server, is what limits
//! a run. Reading frame by frame through a WebSocket
//! library costs a future, two reference counts and a clock read per
//! message. Here a read fills one buffer, the frames in it are parsed in
//! place, and they all carry the read's completion time: they had all
//! arrived by then, so that is also the truer receive time.
//!
//! Server frames are unmasked and, from these servers, never fragmented;
//! both masked and fragmented frames are handled anyway. Pings are
//! answered with pongs before the next read.
//!
//! Imports: `tickcast::model::now_ns` (the clock the server stamps
//! `ts_ingest` with), and the raw upgraded stream from hyper.
//!
//! [`Client::into_frame_reader`]: crate::Client::into_frame_reader

use std::io;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tickcast::model::now_ns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Smallest free space offered to a read; the buffer's unread tail is
/// moved to the front to make it.
const MIN_READ: usize = 16 * 1024;

/// Reads frames from an upgraded connection in batches. Its buffer starts
/// at 64 KiB and grows to hold the largest frame seen.
pub struct FrameReader {
    io: TokioIo<Upgraded>,
    buf: Vec<u8>,
    /// First byte not yet parsed.
    start: usize,
    /// End of the bytes read.
    end: usize,
    /// A fragmented message being put together.
    fragments: Vec<u8>,
    /// Payload of a ping to answer before the next read.
    pong: Option<Vec<u8>>,
}

/// What [`FrameReader::next`] found.
enum Next<'a> {
    /// A text or binary message.
    Message(&'a [u8]),
    /// The server closed.
    Close,
    /// Nothing complete: read more.
    More,
}

impl FrameReader {
    /// Takes over `io` right after the handshake (or after the last frame
    /// another reader took from it).
    pub fn new(io: TokioIo<Upgraded>) -> FrameReader {
        FrameReader { io, buf: vec![0; 4 * MIN_READ], start: 0, end: 0, fragments: Vec::new(), pong: None }
    }

    /// Reads until the server closes, the connection fails, `stop` is seen
    /// set (it is checked before each read), or `on_message` breaks.
    /// `on_message` gets each text or binary payload with its receive time
    /// (ns since the Unix epoch); a `Some` it returns is sent to the server
    /// as a text frame after the batch (nats' `PONG`).
    pub async fn run<F>(mut self, stop: &AtomicBool, mut on_message: F)
    where
        F: FnMut(&[u8], u64) -> ControlFlow<(), Option<Vec<u8>>>,
    {
        let mut reply: Vec<Vec<u8>> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let now = match self.read().await {
                Ok(now) => now,
                Err(_) => return,
            };
            loop {
                match self.next() {
                    Ok(Next::Message(payload)) => match on_message(payload, now) {
                        ControlFlow::Continue(Some(r)) => reply.push(r),
                        ControlFlow::Continue(None) => {}
                        ControlFlow::Break(()) => return,
                    },
                    Ok(Next::More) => break,
                    Ok(Next::Close) | Err(_) => return,
                }
            }
            for r in reply.drain(..) {
                if self.send(0x1, &r).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Answers a pending ping, then reads once; returns the time the read
    /// completed.
    async fn read(&mut self) -> io::Result<u64> {
        if let Some(payload) = self.pong.take() {
            self.send(0xA, &payload).await?;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.end < MIN_READ {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < MIN_READ {
                self.buf.resize(self.end + MIN_READ, 0);
            }
        }
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.end += n;
        Ok(now_ns())
    }

    /// The next complete message in the buffer; control frames are dealt
    /// with on the way.
    #[inline]
    fn next(&mut self) -> io::Result<Next<'_>> {
        loop {
            let Some(frame) = parse(&mut self.buf[self.start..self.end])? else {
                if let Some(need) = frame_len(&self.buf[self.start..self.end]) {
                    // A frame larger than the buffer: make room for it whole.
                    if self.start + need > self.buf.len() {
                        self.buf.copy_within(self.start..self.end, 0);
                        self.end -= self.start;
                        self.start = 0;
                        self.buf.resize(need.max(self.end + MIN_READ), 0);
                    }
                }
                return Ok(Next::More);
            };
            let payload = self.start + frame.header..self.start + frame.header + frame.len;
            self.start = payload.end;
            match frame.opcode {
                0x1 | 0x2 if frame.fin => return Ok(Next::Message(&self.buf[payload])),
                0x1 | 0x2 => {
                    self.fragments.clear();
                    self.fragments.extend_from_slice(&self.buf[payload]);
                }
                0x0 => {
                    self.fragments.extend_from_slice(&self.buf[payload]);
                    if frame.fin {
                        return Ok(Next::Message(&self.fragments));
                    }
                }
                0x8 => return Ok(Next::Close),
                0x9 => self.pong = Some(self.buf[payload].to_vec()),
                _ => {}
            }
        }
    }

    /// Writes one masked client frame.
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mask = fastrand::u32(..).to_be_bytes();
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=65_535 => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.io.write_all(&frame).await
    }
}

/// A parsed frame header.
#[derive(Debug, PartialEq)]
struct Header {
    fin: bool,
    opcode: u8,
    /// Header bytes, mask included.
    header: usize,
    /// Payload bytes.
    len: usize,
}

/// Header and payload length of the frame at the front of `buf`, once the
/// header is complete.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let (header, len) = header_and_len(buf)?;
    Some(header + len)
}

/// Header length (mask included) and payload length of the frame at the
/// front of `buf`, once its header is complete.
#[inline]
fn header_and_len(buf: &[u8]) -> Option<(usize, usize)> {
    let (b1, rest) = (*buf.get(1)?, &buf[2..]);
    let masked = b1 & 0x80 != 0;
    let (extended, len) = match b1 & 0x7f {
        126 => (2, u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize),
        127 => (8, usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?),
        n => (0, n as usize),
    };
    Some((2 + extended + if masked { 4 } else { 0 }, len))
}

/// The frame at the front of `buf` if it is complete (unmasked in place
/// if it was masked). A frame with reserved bits set is an error.
#[inline]
fn parse(buf: &mut [u8]) -> io::Result<Option<Header>> {
    let Some((header, len)) = header_and_len(buf) else { return Ok(None) };
    if buf.len() < header + len {
        return Ok(None);
    }
    if buf[0] & 0x70 != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "reserved bits set"));
    }
    if buf[1] & 0x80 != 0 {
        let mask: [u8; 4] = buf[header - 4..header].try_into().expect("4 bytes");
        for (i, b) in buf[header..header + len].iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some(Header { fin: buf[0] & 0x80 != 0, opcode: buf[0] & 0x0f, header, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_every_length_form_parse() {
        let mut small = vec![0x82, 3, b'a', b'b', b'c'];
        assert_eq!(parse(&mut small).unwrap(), Some(Header { fin: true, opcode: 2, header: 2, len: 3 }));
        let mut medium = vec![0x81, 126, 0x01, 0x00];
        medium.resize(4 + 256, b'x');
        assert_eq!(parse(&mut medium).unwrap(), Some(Header { fin: true, opcode: 1, header: 4, len: 256 }));
        let mut large = vec![0x02, 127, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(frame_len(&large), Some(10 + 65_536));
        assert_eq!(parse(&mut large).unwrap(), None, "incomplete");
    }

    #[test]
    fn incomplete_frames_wait_and_masked_ones_are_unmasked() {
        assert_eq!(parse(&mut [0x81]).unwrap(), None);
        assert_eq!(parse(&mut [0x81, 126, 1]).unwrap(), None);
        assert_eq!(parse(&mut [0x81, 5, b'a']).unwrap(), None);
        let mask = [1u8, 2, 3, 4];
        let mut masked = vec![0x89, 0x80 | 2, 1, 2, 3, 4, b'h' ^ mask[0], b'i' ^ mask[1]];
        let h = parse(&mut masked).unwrap().unwrap();
        assert_eq!((h.opcode, h.header, h.len), (9, 6, 2));
        assert_eq!(&masked[6..], b"hi");
        assert!(parse(&mut [0xC1, 0]).is_err(), "reserved bit");
    }
}

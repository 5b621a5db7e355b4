//! The write side of every socket: drains a session's outbox with vectored
//! writes.
//!
//! In: frames the engine and the session queued in a [`Outbox`].
//! Out: bytes on the socket.
//!
//! The writer pool is the tokio runtime's `--writers` worker threads; each
//! session has one writer task on it. A pass takes everything queued (one
//! short lock), then hands the kernel the head of it in one vectored write
//! (`sendmsg`): one system call per socket per pass, never one per message. Small frames
//! (most market updates) are first copied into the writer thread's gather
//! buffer, up to [`GATHER_BYTES`], because a slice costs the kernel more
//! than the copy does; large ones go by reference, up to [`MAX_IOVECS`]
//! slices. Partial writes resume mid-frame. The session's queued-byte count
//! drops by exactly what the kernel accepted.
//!
//! Each socket's kernel queue of *unsent* bytes is capped at
//! [`KERNEL_UNSENT_LOWAT`] (`TCP_NOTSENT_LOWAT`). Without it Linux autotunes
//! a slow reader's send buffer up to megabytes: the backlog would hide in
//! the kernel, out of reach of the slow-consumer ladder, the client would
//! read seconds-old data, and a reader that drains steadily but slowly would
//! see the socket stay unwritable for longer than `--slow-timeout`.
//!
//! With `--trace-latency`, the writer takes the outbox's sampled frames'
//! marks with the frames, and after a write that finished any of them
//! records their stages (see [`crate::trace`]): a compare per frame
//! written, only while it holds a mark.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::metrics::Metrics;
use crate::outbox::{Outbox, Take};
use crate::trace::{frame_end, Marks};
use crate::wire::batch::{self, BATCH_FRAME_MAX, BATCH_PAYLOAD_MAX};

/// Most slices handed to one vectored write (Linux allows 1024).
pub const MAX_IOVECS: usize = 256;

/// Frames up to this size are copied into the writer thread's gather
/// buffer and written as one slice; larger ones (snapshots, deep books) go
/// to the kernel as their own slice. Each slice of a vectored write costs
/// the kernel more than copying a small frame does (`cargo bench --bench
/// loopback -- batch_50`; BENCHMARKS.md, "What one socket write costs").
pub const GATHER_FRAME_MAX: usize = 1024;

/// Most bytes gathered for one write: what a writer thread's buffer grows
/// to, once. A backlog larger than this takes more than one write.
pub const GATHER_BYTES: usize = 64 * 1024;

thread_local! {
    /// The writer thread's gather buffer (see [`GATHER_FRAME_MAX`]). Only
    /// borrowed inside one synchronous write, never across an await.
    static GATHER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Most bytes a socket's kernel send queue holds that the peer has not yet
/// been sent (`TCP_NOTSENT_LOWAT`); the rest waits in the session's outbox,
/// where the slow-consumer ladder counts and conflates it. 128 KiB is ample
/// for a healthy reader: a full megabyte per second needs it refilled only
/// about every 100 ms.
pub const KERNEL_UNSENT_LOWAT: u32 = 128 * 1024;

/// Prepares a session's socket for the writer: caps the kernel's unsent
/// queue (see the module doc). Failure only costs visibility of the
/// backlog, so it is logged, not fatal.
pub fn tune_socket(socket: &TcpStream) {
    if let Err(e) = socket2::SockRef::from(socket).set_tcp_notsent_lowat(KERNEL_UNSENT_LOWAT) {
        tracing::debug!(error = %e, "cannot set TCP_NOTSENT_LOWAT");
    }
}

/// Runs until the session's close frame is written or the socket fails.
/// The socket is outbox with the session's reader: writes need only
/// `&TcpStream`. After the close frame the write side is shut (FIN).
pub async fn run(session: Arc<Outbox>, socket: Arc<TcpStream>, metrics: Arc<Metrics>) -> io::Result<()> {
    let result = drain(&session, &socket, &metrics).await;
    if let Err(e) = &result {
        metrics.write_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = session.id, error = %e, "write failed");
    }
    let _ = socket2::SockRef::from(&*socket).shutdown(std::net::Shutdown::Write);
    result
}

async fn drain(session: &Outbox, socket: &TcpStream, metrics: &Metrics) -> io::Result<()> {
    // Grows with use: an idle connection should not pay for 256 slots.
    let mut inflight: VecDeque<Bytes> = VecDeque::new();
    let mut closing = false;
    // Whether `inflight[0]` is partly written (advanced in place): control
    // frames must not cut into it.
    let mut head_started = false;
    // Control frames in flight right after the head: later control frames
    // queue behind them, so control keeps its own order (an ack before the
    // error of the same request).
    let mut control = 0usize;
    // A batching session's batches are built here (see `batch_new`).
    let mut batch_buf = BytesMut::new();
    // `--trace-latency`: sampled frames in flight (none while off). A
    // batched session's sampled frames are merged into batches, so its
    // samples are never finished: batching sessions are not traced.
    let mut marks = Marks::default();
    loop {
        if !closing {
            let before = inflight.len();
            let front = usize::from(head_started) + control;
            let (take, added) = session.take(&mut inflight, front, &mut marks, &metrics.trace);
            closing = take == Take::Closing;
            control += added;
            if session.batching() && !closing {
                // Taken data went to the back, after the `added` control
                // frames inserted among what was already in flight.
                let (old, new) = batch_new(&mut inflight, before + added, session.encoding, &mut batch_buf);
                session.rebatched(old, new);
            }
        }
        while inflight.front().is_some_and(|f| f.is_empty()) {
            inflight.pop_front();
            control = control.saturating_sub(1);
        }
        if inflight.is_empty() {
            if closing {
                return Ok(());
            }
            session.wait().await;
            continue;
        }
        // Only when tokio has seen the socket writable: a stalled peer
        // costs no gather copy.
        let result = socket.try_io(Interest::WRITABLE, || write_gathered(socket, &inflight));
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                // Control frames this write finished or started leave the
                // control count (and the outbox's control limit); a frame
                // started becomes the partly written head.
                let (started, started_bytes) = control_started(&inflight, usize::from(head_started), control, n);
                control -= started;
                session.control_started(started_bytes);
                if !marks.is_empty() {
                    marks.finish(finished(&inflight, n).map(|f| frame_end(f)), &metrics.trace);
                }
                let (frames, partial) = advance(&mut inflight, n);
                head_started = partial;
                session.written(n);
                session.progressed();
                metrics.write_calls.fetch_add(1, Ordering::Relaxed);
                metrics.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
                metrics.frames_sent.fetch_add(frames as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if closing {
                    socket.writable().await?;
                } else {
                    // Also wake when something is queued: a close then drops
                    // the in-flight data at once instead of holding it until
                    // a stalled peer reads. (A conflating session gets no
                    // new data, so this costs nothing while it is stalled.)
                    tokio::select! {
                        ready = socket.writable() => ready?,
                        _ = session.wait() => {}
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Replaces each run of small data frames in `inflight[start..]` (at most
/// [`BATCH_FRAME_MAX`] bytes each, [`BATCH_PAYLOAD_MAX`] of payload in
/// all) by one batch ([`batch::merge`]); larger frames and lone frames stay
/// as they are, in order. Returns the bytes replaced and the bytes of the
/// batches that replaced them.
fn batch_new(
    inflight: &mut VecDeque<Bytes>,
    start: usize,
    encoding: crate::wire::Encoding,
    buf: &mut BytesMut,
) -> (usize, usize) {
    let (mut old, mut new) = (0, 0);
    let end = inflight.len();
    // Compacts in place: `w` is where the next kept or merged frame goes.
    let (mut w, mut i) = (start, start);
    while i < end {
        let mut j = i;
        let mut payload = 0;
        while j < end {
            let frame = &inflight[j];
            let Some(p) = batch::data_payload(frame).filter(|_| frame.len() <= BATCH_FRAME_MAX) else { break };
            if j > i && payload + p.len() > BATCH_PAYLOAD_MAX {
                break;
            }
            payload += p.len();
            j += 1;
        }
        if j - i >= 2 {
            let merged = batch::merge(encoding, inflight.range(i..j), buf);
            old += inflight.range(i..j).map(Bytes::len).sum::<usize>();
            new += merged.len();
            inflight[w] = merged;
            i = j;
        } else {
            inflight.swap(w, i);
            i += 1;
        }
        w += 1;
    }
    inflight.truncate(w);
    (old, new)
}

/// One slice of a gathered write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    /// `start..end` of the gather buffer: a run of small frames.
    Gathered(usize, usize),
    /// The in-flight frame at this index, by reference.
    Frame(usize),
}

/// Lays out the head of `inflight` for one write, in order: runs of frames
/// of at most [`GATHER_FRAME_MAX`] bytes are copied into `buf` (cleared
/// first, filled up to [`GATHER_BYTES`]), larger frames stay where they
/// are. Stops at the first frame that does not fit. Returns how many of
/// `pieces` are used.
fn plan(inflight: &VecDeque<Bytes>, buf: &mut Vec<u8>, pieces: &mut [Piece; MAX_IOVECS]) -> usize {
    buf.clear();
    let mut used = 0;
    // Start of the run being gathered, if one is open: it takes a piece
    // when it is closed.
    let mut run: Option<usize> = None;
    for (i, frame) in inflight.iter().enumerate() {
        if frame.len() <= GATHER_FRAME_MAX {
            if buf.len() + frame.len() > GATHER_BYTES || (run.is_none() && used == MAX_IOVECS) {
                break;
            }
            run.get_or_insert(buf.len());
            buf.extend_from_slice(frame);
        } else {
            if used + 1 + usize::from(run.is_some()) > MAX_IOVECS {
                break;
            }
            if let Some(start) = run.take() {
                pieces[used] = Piece::Gathered(start, buf.len());
                used += 1;
            }
            pieces[used] = Piece::Frame(i);
            used += 1;
        }
    }
    if let Some(start) = run {
        pieces[used] = Piece::Gathered(start, buf.len());
        used += 1;
    }
    used
}

/// One vectored write (`sendmsg`) of the head of `inflight`, small frames
/// gathered (see [`plan`]). Returns the bytes the kernel took.
fn write_gathered(socket: &TcpStream, inflight: &VecDeque<Bytes>) -> io::Result<usize> {
    GATHER.with_borrow_mut(|buf| {
        let mut pieces = [Piece::Frame(0); MAX_IOVECS];
        let used = plan(inflight, buf, &mut pieces);
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        for (slot, piece) in slices.iter_mut().zip(&pieces[..used]) {
            *slot = match *piece {
                Piece::Gathered(start, end) => IoSlice::new(&buf[start..end]),
                Piece::Frame(i) => IoSlice::new(&inflight[i]),
            };
        }
        socket2::SockRef::from(socket).send_vectored(&slices[..used])
    })
}

/// Of the control frames at `start..start + control` in `inflight`, how
/// many a write of `n` bytes from the front reaches (finishes or starts),
/// and their bytes. Call before [`advance`].
fn control_started(inflight: &VecDeque<Bytes>, start: usize, control: usize, n: usize) -> (usize, usize) {
    let (mut count, mut bytes, mut at) = (0, 0, 0);
    for (i, frame) in inflight.iter().enumerate() {
        if at >= n || i >= start + control {
            break;
        }
        if i >= start {
            count += 1;
            bytes += frame.len();
        }
        at += frame.len();
    }
    (count, bytes)
}

/// The frames a write of `n` bytes from the front finishes. Call before
/// [`advance`].
fn finished(inflight: &VecDeque<Bytes>, n: usize) -> impl Iterator<Item = &Bytes> {
    let mut at = 0;
    inflight.iter().take_while(move |f| {
        at += f.len();
        at <= n
    })
}

/// Drops `n` written bytes from the front. Returns how many whole frames
/// were completed, and whether the new head frame is now partly written.
fn advance(inflight: &mut VecDeque<Bytes>, mut n: usize) -> (usize, bool) {
    let mut done = 0;
    while n > 0 {
        let Some(head) = inflight.front_mut() else { break };
        if n >= head.len() {
            n -= head.len();
            inflight.pop_front();
            done += 1;
        } else {
            head.advance(n);
            return (done, true);
        }
    }
    (done, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes one write built by `plan` would hand the kernel.
    fn planned(inflight: &VecDeque<Bytes>) -> (Vec<u8>, usize) {
        let mut buf = Vec::new();
        let mut pieces = [Piece::Frame(0); MAX_IOVECS];
        let used = plan(inflight, &mut buf, &mut pieces);
        let mut out = Vec::new();
        for piece in &pieces[..used] {
            match *piece {
                Piece::Gathered(start, end) => out.extend_from_slice(&buf[start..end]),
                Piece::Frame(i) => out.extend_from_slice(&inflight[i]),
            }
        }
        (out, used)
    }

    fn frames(sizes: &[usize]) -> VecDeque<Bytes> {
        sizes.iter().enumerate().map(|(i, &n)| Bytes::from(vec![i as u8; n])).collect()
    }

    fn concat(inflight: &VecDeque<Bytes>, n: usize) -> Vec<u8> {
        inflight.iter().take(n).flat_map(|f| f.iter().copied()).collect()
    }

    #[test]
    fn batching_merges_runs_of_small_data_frames_after_start_and_keeps_the_rest_in_order() {
        use crate::wire::{batch::data_payload, frame, Encoding};
        use fastwebsockets::OpCode;
        let small = |b: u8| frame(OpCode::Binary, &[0xc0 | (b & 0x0f)]); // msgpack nil-ish bytes
        let big = frame(OpCode::Binary, &vec![0xc3; 2000]);
        let ping = frame(OpCode::Ping, b"p");
        // [old, old | a, b, big, c, ping, d, e, f]
        let mut inflight: VecDeque<Bytes> =
            [small(1), small(2), small(3), small(4), big.clone(), small(5), ping.clone(), small(6), small(7), small(8)]
                .into_iter()
                .collect();
        let before: usize = inflight.iter().map(Bytes::len).sum();
        let (old, new) = batch_new(&mut inflight, 2, Encoding::Msgpack, &mut BytesMut::new());
        let after: usize = inflight.iter().map(Bytes::len).sum();
        assert_eq!(after, before - old + new, "the byte count moves by exactly the difference");
        assert_eq!(inflight.len(), 7, "2 kept, [3,4] merged, big, 5 alone, ping, [6,7,8] merged");
        assert_eq!(inflight[0], small(1));
        assert_eq!(inflight[1], small(2));
        assert_eq!(data_payload(&inflight[2]), Some(&[0x92, 0xc3, 0xc4][..]), "a two-element msgpack array");
        assert_eq!(inflight[3], big);
        assert_eq!(inflight[4], small(5));
        assert_eq!(inflight[5], ping);
        assert_eq!(data_payload(&inflight[6]), Some(&[0x93, 0xc6, 0xc7, 0xc8][..]));
        // Nothing new: nothing changes.
        let again = inflight.clone();
        assert_eq!(batch_new(&mut inflight, 7, Encoding::Msgpack, &mut BytesMut::new()), (0, 0));
        assert_eq!(inflight, again);
    }

    #[test]
    fn small_frames_are_gathered_and_large_ones_passed_in_order() {
        let q = frames(&[124, 124, 124]);
        assert_eq!(planned(&q), (concat(&q, 3), 1), "one run, one slice");
        let q = frames(&[124, 124, GATHER_FRAME_MAX + 1, 124, 5000, 0, 124]);
        let (bytes, used) = planned(&q);
        assert_eq!(bytes, concat(&q, q.len()), "every byte, in order");
        assert_eq!(used, 5, "run, large, run, large, run");
    }

    #[test]
    fn a_write_stops_at_the_gather_cap_and_the_slice_cap() {
        let q = frames(&[1000; 100]);
        let fit = GATHER_BYTES / 1000;
        assert_eq!(planned(&q), (concat(&q, fit), 1), "whole frames up to GATHER_BYTES");
        // Alternating small and large frames: two slices per pair.
        let sizes: Vec<usize> = (0..2 * MAX_IOVECS).map(|i| if i % 2 == 0 { 10 } else { 2000 }).collect();
        let q = frames(&sizes);
        let (bytes, used) = planned(&q);
        assert_eq!(used, MAX_IOVECS);
        assert_eq!(bytes, concat(&q, MAX_IOVECS), "a prefix of whole frames");
        // A run still open when the slices run out gets the last slice.
        let mut sizes = vec![2000; MAX_IOVECS - 1];
        sizes.extend([10, 10, 2000]);
        let q = frames(&sizes);
        let (bytes, used) = planned(&q);
        assert_eq!(used, MAX_IOVECS);
        assert_eq!(bytes, concat(&q, MAX_IOVECS + 1), "the two small frames share the last slice");
    }

    #[test]
    fn control_frames_leave_the_count_when_their_write_starts() {
        // A partly written head, two control frames, then data.
        let q = frames(&[5, 3, 4, 100]);
        assert_eq!(control_started(&q, 1, 2, 5), (0, 0), "only the head's rest");
        assert_eq!(control_started(&q, 1, 2, 6), (1, 3), "the first control frame started");
        assert_eq!(control_started(&q, 1, 2, 8), (1, 3), "and finished");
        assert_eq!(control_started(&q, 1, 2, 9), (2, 7));
        assert_eq!(control_started(&q, 1, 2, 112), (2, 7), "data is not control");
        // No partial head: control frames start at the front.
        assert_eq!(control_started(&q, 0, 1, 1), (1, 5));
        assert_eq!(control_started(&q, 0, 0, 112), (0, 0));
    }

    #[test]
    fn advance_resumes_mid_frame() {
        let mut q: VecDeque<Bytes> = [&b"\x81\x02ab"[..], b"\x81\x01c"].into_iter().map(Bytes::from_static).collect();
        assert_eq!(advance(&mut q, 3), (0, true));
        assert_eq!(q[0], &b"b"[..]);
        assert_eq!(advance(&mut q, 2), (1, true));
        assert_eq!(q[0], &b"\x01c"[..]);
        assert_eq!(advance(&mut q, 2), (1, false));
        assert!(q.is_empty());
    }
}

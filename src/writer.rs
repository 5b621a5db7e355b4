//! The write side of every socket: drains a session's outbox with vectored
//! writes.
//!
//! In: frames the engine and the session queued in a [`SessionShared`].
//! Out: bytes on the socket.
//!
//! The writer pool is the tokio runtime's `--writers` worker threads; each
//! session has one writer task on it. A pass takes everything queued (one
//! short lock), then hands the kernel up to [`MAX_IOVECS`] frames in one
//! `writev`: one system call per socket per pass, never one per message,
//! and no frame is copied. Partial writes resume mid-frame. The session's
//! queued-byte count drops by exactly what the kernel accepted.
//!
//! Each socket's kernel queue of *unsent* bytes is capped at
//! [`KERNEL_UNSENT_LOWAT`] (`TCP_NOTSENT_LOWAT`). Without it Linux autotunes
//! a slow reader's send buffer up to megabytes: the backlog would hide in
//! the kernel, out of reach of the slow-consumer ladder, the client would
//! read seconds-old data, and a reader that drains steadily but slowly would
//! see the socket stay unwritable for longer than `--slow-timeout`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::net::TcpStream;

use crate::metrics::Metrics;
use crate::session::{SessionShared, Take};

/// Most frames handed to one `writev` (Linux allows 1024).
pub const MAX_IOVECS: usize = 256;

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
/// The socket is shared with the session's reader: writes need only
/// `&TcpStream`. After the close frame the write side is shut (FIN).
pub async fn run(session: Arc<SessionShared>, socket: Arc<TcpStream>, metrics: Arc<Metrics>) -> io::Result<()> {
    let result = drain(&session, &socket, &metrics).await;
    if let Err(e) = &result {
        metrics.write_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = session.id, error = %e, "write failed");
    }
    let _ = socket2::SockRef::from(&*socket).shutdown(std::net::Shutdown::Write);
    result
}

async fn drain(session: &SessionShared, socket: &TcpStream, metrics: &Metrics) -> io::Result<()> {
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
    loop {
        if !closing {
            let (take, added) = session.take(&mut inflight, usize::from(head_started) + control);
            closing = take == Take::Closing;
            control += added;
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
        let result = {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = inflight.len().min(MAX_IOVECS);
            for (slot, frame) in slices.iter_mut().zip(inflight.iter()) {
                *slot = IoSlice::new(frame);
            }
            socket.try_write_vectored(&slices[..n])
        };
        match result {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                let (frames, partial) = advance(&mut inflight, n);
                // Completed frames: the old partial head (if any), then
                // control frames, then data.
                let done = if head_started { frames.saturating_sub(1) } else { frames };
                control -= done.min(control);
                // A frame newly started becomes the head; if it was a
                // control frame it leaves the control count.
                if partial && (frames > 0 || !head_started) && control > 0 {
                    control -= 1;
                }
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

/// Bytes in the socket's kernel send queue, not yet acknowledged by the
/// peer (`SIOCOUTQ`). Read at scrape time, never per message.
#[allow(unsafe_code)]
pub fn kernel_queued_bytes(socket: &TcpStream) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: the fd is open for as long as `socket` is borrowed, and
    // TIOCOUTQ (== SIOCOUTQ on Linux) writes one c_int through the pointer,
    // which points at a live local of that type.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut queued as *mut libc::c_int) };
    (rc == 0).then(|| queued.max(0) as usize)
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

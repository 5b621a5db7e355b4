//! The per-session outbox: frames queued for one socket, with an exact
//! count of the bytes not yet written, and the client's slow-consumer mode.
//!
//! In: data frames from the engine (once per flush) or a replay driver, and
//! control frames from the session. Out: frames, in order, to the session's
//! writer.
//!
//! The count is exact: bytes queued and not yet written, including the
//! writer's in-flight frames. The engine adds to it under a short
//! `parking_lot` lock, once per batch; the writer subtracts as bytes reach
//! the kernel. Nothing here waits on a socket, so a slow reader never slows
//! the engine: the slow-consumer ladder (conflate, then disconnect) reads
//! [`Outbox::queued_bytes`] where the engine stages frames.
//!
//! Ordering: market data, snapshots and `conflated` messages share the data
//! queue, in the order the engine produced them. Control traffic (pings,
//! pongs, acks, errors) goes in the control queue, which the writer puts
//! ahead of queued data at the next frame boundary, so a backlog of market
//! data never delays it and the ladder never drops it. A close frame is
//! written after the control frames; queued data behind it is discarded.
//!
//! Control replies are bounded too, apart from data: the ladder never
//! drops them, so a client that sends pings or requests and never reads
//! the answers would otherwise grow its queue without limit. The outbox
//! counts the control bytes not yet written; a reply that arrives while
//! more than the session's control limit (`--max-control-bytes`, default
//! [`DEFAULT_MAX_CONTROL_BYTES`]) waits is not queued: the session is
//! closed with 1008 "control flood" instead (see [`Outbox::push_control`]).
//!
//! `--trace-latency` samples ride along: a sampled frame's
//! [`Sample`] is queued with it, under the same lock, and taken with it
//! (see [`crate::trace`]).
//!
//! Imports: [`crate::model`], [`crate::wire`] and [`crate::trace`] only.
//! The engine fills outboxes without knowing anything else of sessions
//! or sockets.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::model::now_ns;
use crate::trace::{Marks, Sample, Tracer};
use crate::wire::{close_code, close_frame, Encoding};

/// Default `--max-control-bytes`: control replies (pongs, acks, errors)
/// queued for one client and not yet written, above which its next reply
/// closes it (1008 "control flood"). 64 KiB is some 500 pongs or acks: a
/// healthy client reads its replies long before that, and the largest
/// single reply (an ack naming 10,000 symbols) is still always queued,
/// because only the backlog already waiting is compared with the limit.
pub const DEFAULT_MAX_CONTROL_BYTES: usize = 64 * 1024;

/// The close reason of a session closed for unread control replies.
pub const CONTROL_FLOOD: &str = "control flood";

/// What a client asked for at the handshake (`?slow=`) when it falls
/// behind. Both stay within the operator's slow-consumer policy
/// (`crate::engine::SlowConsumerPolicy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlowMode {
    /// Conflate above `--conflate-above`, recover with `conflated` and
    /// snapshots (the default).
    #[default]
    Conflate,
    /// Close with 1008 "slow consumer" above `--conflate-above`: for
    /// clients that would rather reconnect than see conflated data.
    Disconnect,
}

/// One session's outbox, shared by its reader, its writer and the engine.
pub struct Outbox {
    /// Server-unique id, for logs and engine bookkeeping.
    pub id: u64,
    /// The encoding this client chose at the handshake.
    pub encoding: Encoding,
    /// What the client wants when it falls behind (`?slow=`).
    pub slow: SlowMode,
    /// Set by the engine while the session is conflating (for gauges).
    conflating: AtomicBool,
    queues: Mutex<Queues>,
    /// Bytes queued and not yet written, exact.
    queued_bytes: AtomicUsize,
    /// Wakes the writer when the outbox goes from empty to non-empty.
    notify: Notify,
    /// Set once a close frame is queued: no more frames are accepted.
    closing: AtomicBool,
    /// Wakes the session's reader when someone else (the engine's
    /// slow-consumer policy) closes the session.
    closed: Notify,
    /// Wall clock (ns) of the last progress: a write that moved bytes, or
    /// data queued to a session that had none. The slow-consumer timeout
    /// reads it.
    last_progress_ns: AtomicU64,
    /// Bytes of control frames queued or in flight and not yet written
    /// (a frame leaves the count when its write starts).
    control_bytes: AtomicUsize,
    /// Control bytes waiting above which the next control frame closes
    /// the session instead of being queued (`--max-control-bytes`).
    control_limit: usize,
    /// Set when the session was closed for passing `control_limit`.
    flooded: AtomicBool,
    /// Whether the client asked for batched frames (`?batch=1`): its writer
    /// sends the small data frames of each write as one message
    /// ([`crate::wire::batch`]).
    batch: bool,
}

/// The frames waiting, by kind.
#[derive(Default)]
struct Queues {
    control: VecDeque<Bytes>,
    /// A `Vec`, so that buffers can be swapped whole with the engine's
    /// staging vector and the writer's in-flight queue: in the steady state
    /// frames are not moved one by one between the three.
    data: Vec<Bytes>,
    close: Option<Bytes>,
    /// `--trace-latency` samples among `data` (bounded; see [`Marks`]).
    marks: Marks,
}

impl Queues {
    fn is_empty(&self) -> bool {
        self.control.is_empty() && self.data.is_empty() && self.close.is_none()
    }
}

/// What [`Outbox::take`] tells the writer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Frames (maybe none) were moved in flight; keep going.
    Open,
    /// A close frame is now the last frame in flight: write up to it, then
    /// shut the socket.
    Closing,
}

impl Outbox {
    /// A session with an empty outbox.
    pub fn new(id: u64, encoding: Encoding, slow: SlowMode) -> Outbox {
        Outbox {
            id,
            encoding,
            slow,
            conflating: AtomicBool::new(false),
            queues: Mutex::new(Queues::default()),
            queued_bytes: AtomicUsize::new(0),
            notify: Notify::new(),
            closing: AtomicBool::new(false),
            closed: Notify::new(),
            last_progress_ns: AtomicU64::new(now_ns()),
            control_bytes: AtomicUsize::new(0),
            control_limit: DEFAULT_MAX_CONTROL_BYTES,
            flooded: AtomicBool::new(false),
            batch: false,
        }
    }

    /// Has the writer batch this session's data frames (`?batch=1`).
    pub fn with_batching(mut self, on: bool) -> Outbox {
        self.batch = on;
        self
    }

    /// Whether the client asked for batched frames.
    pub fn batching(&self) -> bool {
        self.batch
    }

    /// Sets the control limit (`--max-control-bytes`; default
    /// [`DEFAULT_MAX_CONTROL_BYTES`]).
    pub fn with_control_limit(mut self, bytes: usize) -> Outbox {
        self.control_limit = bytes;
        self
    }

    /// Bytes of control frames queued and not yet being written.
    pub fn control_bytes(&self) -> usize {
        self.control_bytes.load(Ordering::Relaxed)
    }

    /// Whether the session was closed with 1008 "control flood" (see
    /// [`push_control`](Self::push_control)).
    pub fn flooded(&self) -> bool {
        self.flooded.load(Ordering::Relaxed)
    }

    /// Bytes queued for this socket and not yet written to the kernel.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Whether the engine is conflating this session's updates.
    pub fn is_conflating(&self) -> bool {
        self.conflating.load(Ordering::Relaxed)
    }

    /// Marks the session as conflating or caught up (the engine).
    pub(crate) fn set_conflating(&self, on: bool) {
        self.conflating.store(on, Ordering::Relaxed);
    }

    /// Whether a close frame has been queued.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Appends data frames (the engine, once per batch), draining `frames`
    /// so its capacity is reused. `bytes` is their total length, `now_ns`
    /// the engine's clock: when the session had nothing queued, the stall
    /// clock starts now, so time spent idle never counts as a stall.
    pub fn push_data(&self, frames: &mut Vec<Bytes>, bytes: usize, now_ns: u64) {
        self.push_frames(frames, bytes, now_ns, None);
    }

    /// [`push_data`](Self::push_data) with a `--trace-latency` sample: the
    /// frame `sample` names is among `frames`. Returns whether the sample
    /// was queued (not when the session is closing or already holds
    /// [`MARKS_PER_SESSION`](crate::trace::MARKS_PER_SESSION)).
    pub fn push_data_traced(&self, frames: &mut Vec<Bytes>, bytes: usize, now_ns: u64, sample: Sample) -> bool {
        self.push_frames(frames, bytes, now_ns, Some(sample))
    }

    #[inline]
    fn push_frames(&self, frames: &mut Vec<Bytes>, bytes: usize, now_ns: u64, sample: Option<Sample>) -> bool {
        if self.is_closing() {
            frames.clear();
            return false;
        }
        let was_empty;
        let mut traced = false;
        {
            let mut outbox = self.queues.lock();
            was_empty = outbox.is_empty();
            if let Some(sample) = sample {
                traced = outbox.marks.push(sample).is_ok();
            }
            if outbox.data.is_empty() {
                std::mem::swap(&mut outbox.data, frames);
            } else {
                outbox.data.append(frames);
            }
            if self.queued_bytes.fetch_add(bytes, Ordering::Relaxed) == 0 {
                self.last_progress_ns.store(now_ns, Ordering::Relaxed);
            }
        }
        if was_empty {
            self.notify.notify_one();
        }
        traced
    }

    /// Queues a control frame ahead of data, and starts the stall clock if
    /// nothing was queued.
    ///
    /// Full-policy: if more than the control limit of control bytes is
    /// already waiting, the client is not reading its replies: the frame is
    /// dropped and the session closed with 1008 "control flood" (its
    /// queued data dropped; the replies already queued go first). The
    /// backlog is compared before adding, so one reply larger than the
    /// limit is still delivered to a client that reads.
    pub fn push_control(&self, frame: Bytes) {
        if self.is_closing() {
            return;
        }
        if self.control_bytes.load(Ordering::Relaxed) > self.control_limit {
            self.flooded.store(true, Ordering::Relaxed);
            self.close(close_frame(close_code::POLICY, CONTROL_FLOOD));
            return;
        }
        let mut outbox = self.queues.lock();
        self.control_bytes.fetch_add(frame.len(), Ordering::Relaxed);
        if self.queued_bytes.fetch_add(frame.len(), Ordering::Relaxed) == 0 {
            // As for data: time spent idle never counts as a stall.
            self.last_progress_ns.store(now_ns(), Ordering::Relaxed);
        }
        outbox.control.push_back(frame);
        drop(outbox);
        self.notify.notify_one();
    }

    /// Queues the close frame: it goes after pending control frames, queued
    /// data is discarded, and nothing is accepted after it.
    pub fn close(&self, frame: Bytes) {
        if self.closing.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut outbox = self.queues.lock();
        let dropped: usize = outbox.data.drain(..).map(|f| f.len()).sum::<usize>();
        outbox.marks.clear();
        self.queued_bytes.fetch_add(frame.len(), Ordering::Relaxed);
        self.queued_bytes.fetch_sub(dropped, Ordering::Relaxed);
        outbox.close = Some(frame);
        drop(outbox);
        self.notify.notify_one();
        self.closed.notify_one();
    }

    /// Resolves once the session has been closed (see [`close`](Self::close)).
    pub(crate) async fn wait_closed(&self) {
        self.closed.notified().await
    }

    /// When the writer last made progress, ns since the Unix epoch.
    pub fn last_progress_ns(&self) -> u64 {
        self.last_progress_ns.load(Ordering::Relaxed)
    }

    /// Records writer progress now.
    pub(crate) fn progressed(&self) {
        self.last_progress_ns.store(now_ns(), Ordering::Relaxed);
    }

    /// Waits until something is queued (or was queued since the last take).
    pub(crate) async fn wait(&self) {
        self.notify.notified().await
    }

    /// Moves queued frames into the writer's in-flight list. The first
    /// `front` in-flight frames keep their place and are never dropped: a
    /// partly written head frame (which must finish) and control frames
    /// taken earlier. New control frames go right after them, in order,
    /// then data at the back. With a close queued, in-flight data behind
    /// `front` is dropped and the close frame is the last frame. Returns
    /// how many control frames were added.
    ///
    /// `--trace-latency` samples of the frames taken move to `marks`,
    /// stamped taken now; those over its bound count as dropped in
    /// `tracer`.
    pub(crate) fn take(
        &self,
        inflight: &mut VecDeque<Bytes>,
        front: usize,
        marks: &mut Marks,
        tracer: &Tracer,
    ) -> (Take, usize) {
        let mut outbox = self.queues.lock();
        if !outbox.marks.is_empty() {
            let dropped = outbox.marks.take_into(marks);
            if dropped > 0 {
                tracer.dropped(dropped);
            }
        }
        let front = front.min(inflight.len());
        let control = outbox.control.len();
        if let Some(close) = outbox.close.take() {
            let dropped: usize = inflight.drain(front..).map(|f| f.len()).sum();
            self.queued_bytes.fetch_sub(dropped, Ordering::Relaxed);
            inflight.extend(outbox.control.drain(..));
            inflight.push_back(close);
            return (Take::Closing, control);
        }
        if inflight.is_empty() {
            // Trade buffers: the writer's empty one (keeping its capacity)
            // becomes the outbox's, the outbox's becomes in-flight. O(1).
            let mut buffer = Vec::from(std::mem::take(inflight));
            std::mem::swap(&mut buffer, &mut outbox.data);
            *inflight = VecDeque::from(buffer);
        } else {
            inflight.extend(outbox.data.drain(..));
        }
        for (i, frame) in outbox.control.drain(..).enumerate() {
            inflight.insert(front + i, frame);
        }
        (Take::Open, control)
    }

    /// Records that the writer replaced queued frames of `old` bytes in all
    /// by a batch of `new` bytes: the count stays exact.
    pub(crate) fn rebatched(&self, old: usize, new: usize) {
        self.queued_bytes.fetch_add(new, Ordering::Relaxed);
        self.queued_bytes.fetch_sub(old, Ordering::Relaxed);
    }

    /// Records that `n` queued bytes reached the kernel (or were dropped).
    pub(crate) fn written(&self, n: usize) {
        self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
    }

    /// Records that the writer started writing control frames of `n` bytes
    /// in all: they no longer count toward the control limit.
    pub(crate) fn control_started(&self, n: usize) {
        self.control_bytes.fetch_sub(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_counts_bytes_exactly_and_control_jumps_data() {
        let s = Outbox::new(1, Encoding::Json, SlowMode::Conflate);
        let mut frames = vec![Bytes::from_static(b"aaaa"), Bytes::from_static(b"bb")];
        s.push_data(&mut frames, 6, 1);
        assert_eq!(s.last_progress_ns(), 1, "the stall clock starts when data reaches an empty queue");
        assert!(frames.is_empty());
        s.push_control(Bytes::from_static(b"p"));
        assert_eq!(s.queued_bytes(), 7);
        let mut inflight = VecDeque::new();
        assert_eq!(s.take(&mut inflight, 0, &mut Marks::default(), &Tracer::default()), (Take::Open, 1));
        assert_eq!(inflight, [&b"p"[..], b"aaaa", b"bb"]);
        // Frames already in flight at the front (here the control frame)
        // keep their place: later control goes after them, in order.
        s.push_control(Bytes::from_static(b"q"));
        s.push_control(Bytes::from_static(b"r"));
        assert_eq!(s.take(&mut inflight, 1, &mut Marks::default(), &Tracer::default()), (Take::Open, 2));
        assert_eq!(inflight, [&b"p"[..], b"q", b"r", b"aaaa", b"bb"]);
        // Close drops data behind the front and ends the stream.
        s.close(Bytes::from_static(b"CC"));
        let mut more = vec![Bytes::from_static(b"zzz")];
        s.push_data(&mut more, 3, 2);
        assert_eq!(s.take(&mut inflight, 3, &mut Marks::default(), &Tracer::default()), (Take::Closing, 0));
        assert_eq!(inflight, [&b"p"[..], b"q", b"r", b"CC"]);
        assert_eq!(s.queued_bytes(), 5);
    }

    #[test]
    fn unread_control_replies_past_the_limit_close_the_session() {
        let s = Outbox::new(1, Encoding::Json, SlowMode::Conflate).with_control_limit(10);
        // One reply larger than the limit is queued: only the backlog
        // already waiting is compared.
        s.push_control(Bytes::from_static(b"a reply of 20 bytes."));
        assert_eq!((s.control_bytes(), s.is_closing()), (20, false));
        // The writer starts it: the backlog is gone.
        s.control_started(20);
        for _ in 0..3 {
            s.push_control(Bytes::from_static(b"pong!"));
        }
        assert_eq!((s.control_bytes(), s.is_closing(), s.flooded()), (15, false, false));
        // 15 > 10 waiting: the next reply closes instead of queueing.
        s.push_control(Bytes::from_static(b"pong!"));
        assert!(s.is_closing() && s.flooded());
        assert_eq!(s.control_bytes(), 15);
        let mut inflight = VecDeque::new();
        assert_eq!(
            s.take(&mut inflight, 0, &mut Marks::default(), &Tracer::default()),
            (Take::Closing, 4),
            "the 20-byte reply and three pongs"
        );
        let close = inflight.back().unwrap();
        assert_eq!(&close[4..], CONTROL_FLOOD.as_bytes(), "1008 control flood ends the stream");
        assert_eq!(&close[2..4], &close_code::POLICY.to_be_bytes());
    }

    #[test]
    fn a_traced_frames_sample_is_taken_with_it_and_dropped_with_a_close() {
        let s = Outbox::new(1, Encoding::Json, SlowMode::Conflate);
        let tracer = Tracer::new(1);
        let frame = Bytes::from_static(b"traced");
        let sample = Sample { frame_end: crate::trace::frame_end(&frame), ..Sample::default() };
        assert!(s.push_data_traced(&mut vec![Bytes::from_static(b"a"), frame], 7, 1, sample));
        let (mut inflight, mut marks) = (VecDeque::new(), Marks::default());
        s.take(&mut inflight, 0, &mut marks, &tracer);
        assert_eq!((inflight.len(), marks.len()), (2, 1), "the sample moves with its frames");
        // The write that finishes the frame records it.
        let finished = inflight.iter().map(|f| crate::trace::frame_end(f));
        marks.finish(finished, &tracer);
        assert!(marks.is_empty());
        assert_eq!(tracer.summaries()[0].count, 1);
        // Past the bound a sample is refused; a close drops the queued ones.
        for _ in 0..crate::trace::MARKS_PER_SESSION {
            assert!(s.push_data_traced(&mut vec![Bytes::from_static(b"x")], 1, 1, sample));
        }
        assert!(!s.push_data_traced(&mut vec![Bytes::from_static(b"x")], 1, 1, sample), "over the bound");
        s.close(Bytes::from_static(b"CC"));
        assert!(!s.push_data_traced(&mut Vec::new(), 0, 1, sample), "closing");
        s.take(&mut inflight, 0, &mut marks, &tracer);
        assert!(marks.is_empty(), "the close dropped the frames and their samples");
    }

    #[test]
    fn a_control_frame_to_an_idle_session_starts_the_stall_clock() {
        let s = Outbox::new(1, Encoding::Json, SlowMode::Conflate);
        s.last_progress_ns.store(1, Ordering::Relaxed);
        s.push_control(Bytes::from_static(b"ping"));
        assert!(s.last_progress_ns() > 1, "an hour idle is not an hour stalled");
    }
}

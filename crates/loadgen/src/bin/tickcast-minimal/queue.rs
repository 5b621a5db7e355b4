//! One subscriber's queue of framed messages and the wake-up of its
//! writer: the whole hand-off between the feed tasks and a socket.
//!
//! In: shared frames (`Bytes`, one allocation per message for all
//! subscribers), pushed by feed tasks and the subscriber's own reader
//! (acks, errors, pongs). Out: everything queued so far, taken at once by
//! the subscriber's writer task.
//!
//! **Unbounded, deliberately.** This is the benchmark's "simplest server
//! that could work": nothing caps the queue, so a subscriber that stops
//! reading makes it, and the server's memory, grow until it disconnects
//! (BENCHMARKS.md, W4). tickcast bounds the same queue with its
//! slow-consumer ladder; this one shows what that ladder is for.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// A subscriber's pending frames and the signal that wakes its writer.
#[derive(Default)]
pub struct SubscriberQueue {
    /// Frames not yet taken by the writer, in send order. Unbounded (see
    /// the module doc).
    frames: Mutex<Vec<Bytes>>,
    /// Woken when the queue goes from empty to not empty, or on close.
    /// `notify_one` stores a permit when the writer is busy writing, so no
    /// wake-up is lost between its take and its next wait.
    ready: Notify,
    /// The connection is gone: the writer stops at its next wake-up.
    closed: AtomicBool,
}

impl SubscriberQueue {
    /// Appends `frame`, and wakes the writer if the queue was empty (if
    /// it was not, the push that made it non-empty already did).
    pub fn push(&self, frame: Bytes) {
        let was_empty = {
            let mut frames = self.frames.lock();
            let was_empty = frames.is_empty();
            frames.push(frame);
            was_empty
        };
        if was_empty {
            self.ready.notify_one();
        }
    }

    /// Waits until there is something to write, then swaps the whole
    /// queue into `batch` (which must be empty, its capacity is reused).
    /// Returns false once the queue is closed. No timeout: an idle
    /// subscriber waits as long as no message of its symbols comes.
    pub async fn take(&self, batch: &mut Vec<Bytes>) -> bool {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            std::mem::swap(&mut *self.frames.lock(), batch);
            if !batch.is_empty() {
                return true;
            }
            self.ready.notified().await;
        }
    }

    /// Marks the connection gone and wakes the writer so it stops.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_take_gets_everything_pushed_in_order_then_waits() {
        let queue = SubscriberQueue::default();
        queue.push(Bytes::from_static(b"a"));
        queue.push(Bytes::from_static(b"b"));
        let mut batch = Vec::new();
        assert!(queue.take(&mut batch).await);
        assert_eq!(batch, [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        batch.clear();
        // Empty now: the next take waits until a push.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), queue.take(&mut batch)).await;
        assert!(waiting.is_err(), "an empty queue must not return");
        queue.push(Bytes::from_static(b"c"));
        assert!(queue.take(&mut batch).await);
        assert_eq!(batch, [Bytes::from_static(b"c")]);
        batch.clear();
        queue.close();
        assert!(!queue.take(&mut batch).await, "a closed queue ends the writer");
    }
}

//! The symbol table: per symbol, its next seq and its subscribers' queues.
//!
//! In: a tick's symbol and a function that encodes and frames it with the
//! seq it gets (feed tasks); subscribes and unsubscribes (sessions). Out:
//! the one frame pushed into every subscriber queue of that symbol.
//!
//! One mutex guards the whole table: a feed task holds it for one tick
//! (seq, encode, fan-out), a session for one request. That is the simplest
//! thing that keeps seqs gap-free per symbol across feed connections and
//! orders a subscribe's ack before the symbol's next update. The table
//! grows with every symbol a feed sends or a client names (unbounded,
//! like the queues: see `queue.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::queue::SubscriberQueue;

/// One symbol: the seq of its last update and who receives the next.
#[derive(Default)]
struct Topic {
    /// Seq of the last update published (0: none yet).
    seq: u64,
    /// Queues of the symbol's subscribers, each at most once.
    subscribers: Vec<Arc<SubscriberQueue>>,
}

/// Every symbol the server has seen, by name.
#[derive(Default)]
pub struct Topics {
    table: Mutex<HashMap<Box<str>, Topic>>,
}

impl Topics {
    /// Gives `sym` its next seq and, if anyone subscribes to it, pushes
    /// the frame `encode` builds with that seq into each subscriber's
    /// queue: one encoding, one framing, one allocation for all of them.
    pub fn publish(&self, sym: &str, encode: impl FnOnce(u64) -> Bytes) {
        let mut table = self.table.lock();
        let topic = match table.get_mut(sym) {
            Some(topic) => topic,
            None => table.entry(sym.into()).or_default(),
        };
        topic.seq += 1;
        if topic.subscribers.is_empty() {
            return;
        }
        let frame = encode(topic.seq);
        for queue in &topic.subscribers {
            queue.push(frame.clone());
        }
    }

    /// Adds `queue` to each of `symbols` (known or not yet) and pushes
    /// `ack` into it under the same lock, so the ack comes before any
    /// update of them. Updates start with the symbol's next seq; there is
    /// no snapshot.
    pub fn subscribe(&self, queue: &Arc<SubscriberQueue>, symbols: &[String], ack: Bytes) {
        let mut table = self.table.lock();
        for sym in symbols {
            let topic = table.entry(sym.as_str().into()).or_default();
            if !topic.subscribers.iter().any(|q| Arc::ptr_eq(q, queue)) {
                topic.subscribers.push(queue.clone());
            }
        }
        queue.push(ack);
    }

    /// Removes `queue` from each of `symbols`, then pushes `ack` (if any).
    pub fn unsubscribe(&self, queue: &Arc<SubscriberQueue>, symbols: &[String], ack: Option<Bytes>) {
        let mut table = self.table.lock();
        for sym in symbols {
            if let Some(topic) = table.get_mut(sym.as_str()) {
                topic.subscribers.retain(|q| !Arc::ptr_eq(q, queue));
            }
        }
        if let Some(ack) = ack {
            queue.push(ack);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(texts: &[&'static str]) -> Vec<Bytes> {
        texts.iter().map(|t| Bytes::from_static(t.as_bytes())).collect()
    }

    #[tokio::test]
    async fn seqs_count_per_symbol_and_only_subscribers_get_frames() {
        let topics = Topics::default();
        let (a, b) = (Arc::new(SubscriberQueue::default()), Arc::new(SubscriberQueue::default()));
        topics.publish("X", |_| panic!("no subscriber: nothing to encode"));
        topics.subscribe(&a, &["X".into(), "Y".into()], Bytes::from_static(b"ack"));
        topics.subscribe(&b, &["Y".into(), "Y".into()], Bytes::from_static(b"ack"));
        let seq_frame = |seq: u64| Bytes::from(seq.to_string());
        topics.publish("X", seq_frame);
        topics.publish("Y", seq_frame);
        topics.publish("Y", seq_frame);
        topics.unsubscribe(&a, &["Y".into()], None);
        topics.publish("Y", seq_frame);
        let mut batch = Vec::new();
        assert!(a.take(&mut batch).await);
        assert_eq!(batch, frames(&["ack", "2", "1", "2"]), "X is at seq 2: one tick came before");
        batch.clear();
        assert!(b.take(&mut batch).await);
        assert_eq!(batch, frames(&["ack", "1", "2", "3"]), "Y once, though named twice");
    }
}

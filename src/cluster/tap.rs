//! The engine's end of the sequencer's publish queue: each sequenced tick
//! is encoded once into the binary record ([`crate::model::record`]) as it
//! is published, and each engine batch is handed to the NATS thread in one
//! non-blocking send.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Epoch;
use crate::metrics::Metrics;
use crate::model::{record, SymbolId, Tick};

/// One engine batch of records: the frames back to back, and where each
/// symbol's frame starts and ends, in publish order.
pub struct Batch {
    /// Frames (`len u32` + record), in publish order.
    pub bytes: Vec<u8>,
    /// `(symbol, start, end)` of each frame in `bytes`.
    pub spans: Vec<(SymbolId, u32, u32)>,
}

/// Owned by the engine thread ([`Engine::with_publisher`](crate::engine::Engine::with_publisher)).
pub struct PublishTap {
    epoch: Epoch,
    batch: Batch,
    tx: mpsc::Sender<Batch>,
    metrics: Arc<Metrics>,
    last_drop_log: Option<Instant>,
    dropped_since_log: u64,
}

impl PublishTap {
    /// A tap stamping `epoch` on every record, sending to `tx` (the
    /// sequencer thread's queue, [`super::QUEUE_BATCHES`] deep).
    pub fn new(epoch: Epoch, tx: mpsc::Sender<Batch>, metrics: Arc<Metrics>) -> PublishTap {
        PublishTap {
            epoch,
            batch: Batch { bytes: Vec::with_capacity(32 * 1024), spans: Vec::with_capacity(512) },
            tx,
            metrics,
            last_drop_log: None,
            dropped_since_log: 0,
        }
    }

    /// Encodes one sequenced tick of `sym` into the current batch.
    #[inline]
    pub fn push(&mut self, sym: &str, seq: u64, tick: &Tick) {
        let start = self.batch.bytes.len() as u32;
        record::encode_tick(&mut self.batch.bytes, self.epoch, seq, sym, tick.ts_event, tick.ts_ingest, &tick.update);
        self.batch.spans.push((tick.symbol, start, self.batch.bytes.len() as u32));
    }

    /// Offers the batch to the NATS thread without waiting; a full queue
    /// drops it (counted, logged at most once a second). Called once per
    /// engine batch.
    pub fn end_batch(&mut self) {
        let n = self.batch.spans.len() as u64;
        if n == 0 {
            return;
        }
        let next = Batch { bytes: Vec::with_capacity(self.batch.bytes.capacity()), spans: Vec::with_capacity(512) };
        let batch = std::mem::replace(&mut self.batch, next);
        match self.tx.try_send(batch) {
            Ok(()) => {
                self.metrics.cluster_published.fetch_add(n, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) | Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.cluster_publish_dropped.fetch_add(n, Ordering::Relaxed);
                self.dropped_since_log += n;
                if self.last_drop_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(
                        dropped = self.dropped_since_log,
                        "NATS publish queue full: records dropped (edges will re-sync the symbols)"
                    );
                    self.last_drop_log = Some(Instant::now());
                    self.dropped_since_log = 0;
                }
            }
        }
    }
}

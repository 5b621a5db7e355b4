//! The sequencer's NATS thread (`--publish nats://`): publishes every
//! engine batch's records on the symbols' subjects, and answers edges'
//! snapshot and universe requests.
//!
//! One dedicated OS thread with a current-thread tokio runtime, like the
//! tcp feed: NATS work never runs on the session workers, and the engine
//! only ever does a non-blocking send to it ([`super::PublishTap`]).
//!
//! # Requests
//! - `PREFIX.snap.<SYM>` (empty payload): the reply is one frame holding an
//!   image record of the symbol (its whole state, exactly as of its seq,
//!   taken by the engine between two ticks: `Command::Image`), or an empty
//!   payload if the symbol is unknown.
//! - `PREFIX.universe` (empty payload): the reply is text, `epoch N` on the
//!   first line, then every symbol the sequencer knows, one per line, in id
//!   order. NATS's default 1 MiB payload limit holds about 90,000 symbols.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::tap::Batch;
use super::{
    unescape, ClusterError, Epoch, NatsSettings, PublishTap, IMAGE_TIMEOUT, MAX_INFLIGHT_REQUESTS, QUEUE_BATCHES,
};
use crate::metrics::Metrics;
use crate::model::{record, Image, SymbolTable};

/// How the NATS thread asks the engine for a topic's image: the symbol, and
/// where to send the answer (`None`: unknown symbol). The server builds it
/// from the engine's handle (`Command::Image`).
pub type ImageSource = Arc<dyn Fn(String, oneshot::Sender<Option<Image>>) + Send + Sync>;

/// Largest NATS message the publisher builds when it batches a symbol's
/// records: half of NATS's default 1 MiB `max_payload`.
const MAX_PAYLOAD: usize = 512 * 1024;

/// The running sequencer thread.
pub struct Sequencer {
    /// Joined at shutdown, after the engine (which owns the tap) stops:
    /// the tap's drop ends the queue; the thread publishes what is
    /// queued, flushes, and ends.
    pub thread: JoinHandle<()>,
}

/// Starts the sequencer's NATS thread and returns the engine's tap. The
/// connection is made in the background (and remade after any loss):
/// start-up does not wait for NATS, and records published while it is
/// down are dropped by the bounded queues (edges re-sync).
pub fn start_sequencer(
    settings: NatsSettings,
    epoch: Epoch,
    symbols: Arc<SymbolTable>,
    metrics: Arc<Metrics>,
    images: ImageSource,
) -> Result<(PublishTap, Sequencer), ClusterError> {
    let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
    let tap = PublishTap::new(epoch, tx, metrics.clone());
    let thread = std::thread::Builder::new()
        .name("cluster-nats".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("cluster: cannot build the NATS runtime: {e}");
                    return;
                }
            };
            runtime.block_on(run(settings, epoch, symbols, images, rx));
        })
        .map_err(ClusterError::Thread)?;
    Ok((tap, Sequencer { thread }))
}

async fn run(
    settings: NatsSettings,
    epoch: Epoch,
    symbols: Arc<SymbolTable>,
    images: ImageSource,
    mut rx: mpsc::Receiver<Batch>,
) {
    let client = match settings.connect("tickcast-sequencer", None).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cluster: {e}; publishing is off (records are dropped and counted)");
            // Keep draining so the engine's sends stay cheap and counted.
            while rx.recv().await.is_some() {}
            return;
        }
    };
    tracing::info!(url = %settings.url, prefix = %settings.prefix, epoch, "sequencer: publishing to NATS");
    let responder = tokio::spawn(serve_requests(client.clone(), settings.clone(), epoch, symbols.clone(), images));
    let mut subjects: Vec<Option<async_nats::Subject>> = Vec::new();
    let mut failures = RateLimited::default();
    while let Some(batch) = rx.recv().await {
        if let Err(e) = publish(&client, &settings, &symbols, &mut subjects, batch).await {
            failures.warn(|n| tracing::warn!(suppressed = n, "sequencer: NATS publish failed: {e}"));
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    responder.abort();
}

/// Publishes one engine batch: with batching, one message per symbol
/// holding its records in seq order (split at [`MAX_PAYLOAD`]); without,
/// one message per record.
async fn publish(
    client: &async_nats::Client,
    settings: &NatsSettings,
    symbols: &SymbolTable,
    subjects: &mut Vec<Option<async_nats::Subject>>,
    batch: Batch,
) -> Result<(), async_nats::PublishError> {
    let Batch { bytes, mut spans } = batch;
    let bytes = Bytes::from(bytes);
    if !settings.batch {
        for (sym, start, end) in spans {
            let subject = subject(subjects, symbols, settings, sym);
            client.publish(subject, bytes.slice(start as usize..end as usize)).await?;
        }
        return Ok(());
    }
    // Stable: a symbol's records keep their (seq) order.
    spans.sort_by_key(|&(sym, _, _)| sym);
    let mut i = 0;
    while i < spans.len() {
        let sym = spans[i].0;
        let mut payload = BytesMut::new();
        while i < spans.len() && spans[i].0 == sym {
            let (_, start, end) = spans[i];
            if !payload.is_empty() && payload.len() + (end - start) as usize > MAX_PAYLOAD {
                let subject = subject(subjects, symbols, settings, sym);
                client.publish(subject, std::mem::take(&mut payload).freeze()).await?;
            }
            payload.extend_from_slice(&bytes[start as usize..end as usize]);
            i += 1;
        }
        let subject = subject(subjects, symbols, settings, sym);
        client.publish(subject, payload.freeze()).await?;
    }
    Ok(())
}

/// The subject of symbol `id`, made once.
fn subject(
    subjects: &mut Vec<Option<async_nats::Subject>>,
    symbols: &SymbolTable,
    settings: &NatsSettings,
    id: u32,
) -> async_nats::Subject {
    let i = id as usize;
    if subjects.len() <= i {
        subjects.resize(i + 1, None);
    }
    subjects[i]
        .get_or_insert_with(|| {
            let name = symbols.name(id).unwrap_or_else(|| Arc::from("?"));
            async_nats::Subject::from(settings.tick_subject(&name))
        })
        .clone()
}

/// Answers snapshot and universe requests until the connection closes.
async fn serve_requests(
    client: async_nats::Client,
    settings: NatsSettings,
    epoch: Epoch,
    symbols: Arc<SymbolTable>,
    images: ImageSource,
) {
    let snap_prefix = format!("{}.snap.", settings.prefix);
    let (mut snaps, mut universe) = match (
        client.subscribe(format!("{snap_prefix}*")).await,
        client.subscribe(settings.universe_subject()).await,
    ) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("sequencer: cannot subscribe for snapshot requests: {e}");
            return;
        }
    };
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_REQUESTS));
    loop {
        tokio::select! {
            msg = snaps.next() => {
                let Some(msg) = msg else { return };
                let Some(reply) = msg.reply else { continue };
                let Some(token) = msg.subject.as_str().strip_prefix(&snap_prefix) else { continue };
                let sym = unescape(token).into_owned();
                let Ok(permit) = inflight.clone().acquire_owned().await else { return };
                let (client, images) = (client.clone(), images.clone());
                tokio::spawn(async move {
                    let (tx, rx) = oneshot::channel();
                    images(sym.clone(), tx);
                    let payload = match tokio::time::timeout(IMAGE_TIMEOUT, rx).await {
                        Ok(Ok(Some(image))) => {
                            let mut buf = Vec::with_capacity(64 + 16 * (image.bids.len() + image.asks.len()));
                            record::encode_image(&mut buf, epoch, &sym, &image);
                            Bytes::from(buf)
                        }
                        Ok(Ok(None)) => Bytes::new(),
                        // The engine is gone or too slow: no answer; the
                        // edge times out and asks again.
                        _ => return,
                    };
                    let _ = client.publish(reply, payload).await;
                    drop(permit);
                });
            }
            msg = universe.next() => {
                let Some(msg) = msg else { return };
                let Some(reply) = msg.reply else { continue };
                let mut text = format!("epoch {epoch}\n");
                for name in symbols.names() {
                    text.push_str(&name);
                    text.push('\n');
                }
                let _ = client.publish(reply, Bytes::from(text)).await;
            }
        }
    }
}

/// A warning at most once a second, with the count it suppressed.
#[derive(Default)]
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            log(self.suppressed);
            self.last = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

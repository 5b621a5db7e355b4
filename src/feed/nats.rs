//! `--feed nats://HOST:PORT`: an edge, following a sequencer over NATS.
//!
//! In: binary tick records ([`crate::model::record`]) on
//! `PREFIX.tick.<SYM>`, and the sequencer's images of topics, asked for on
//! `PREFIX.snap.<SYM>`. Out: [`Input::Sequenced`] ticks, with the
//! sequencer's seq and `ts_ingest`, and [`Input::Image`]s, into the ring.
//! The engine, the writer pool and the slow-consumer ladder are those of a
//! single node; only the source of the seqs differs.
//!
//! # Sync: the order-book sync every exchange documents
//! A symbol is *live* (its last seq known) or *syncing*. A syncing symbol
//! buffers the records that arrive (at most [`MAX_BUFFERED`]; older ones
//! are dropped first) and asks the sequencer for its image. When the image
//! at seq `S` comes back, buffered records at or below `S` are dropped; if
//! the first one left is not `S + 1`, something between was lost and the
//! image is asked for again; otherwise the image goes into the ring, then
//! the buffered records, and the symbol is live.
//!
//! A live symbol takes a record at exactly `seq + 1`; a record at or below
//! `seq` is a repeat, dropped and counted; one above `seq + 1` is a gap:
//! the symbol syncs again (cause `gap`). An edge never invents, skips or
//! reorders a seq: its clients see either every seq or a `reset` notice
//! followed by a snapshot (the engine sends them when it installs an image).
//!
//! Every symbol syncs again, with its own cause, when a record or an image
//! carries a newer epoch (the sequencer restarted without its state), and
//! when the NATS connection comes back after a loss (records may have been
//! lost with no later record to show it).
//!
//! # Start-up
//! The edge asks the sequencer for its universe (`PREFIX.universe`), interns
//! every symbol and syncs them all; the server starts listening once they
//! are live, or after [`STARTUP_WAIT`] if the sequencer does not answer
//! (symbols then sync as their first records arrive, and the universe is
//! asked again every second until it is known).
//!
//! # Bounds
//! At most [`MAX_INFLIGHT`] image requests at once, each with a timeout of
//! [`REQUEST_TIMEOUT`](crate::cluster::REQUEST_TIMEOUT); a failed one is
//! retried after [`RETRY_AFTER`]. A bad record (malformed, foreign, on the
//! wrong subject, unsequenced) is counted
//! (`tickcast_cluster_bad_records_total`), logged at most once a second, and
//! never applied. Symbols are interned under `--max-symbols`.
//!
//! Subscription: one wildcard, `PREFIX.tick.>`, so that an edge's topics
//! are ready before a client asks (a snapshot is served from the edge's own
//! state, at once). See `docs/CLUSTER.md` for what per-symbol interest
//! would save and cost.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::{ErrorLog, FeedContext, FeedHandle, Publisher};
use crate::cluster::{unescape, Epoch, NatsSettings};
use crate::model::record::{self, Body};
use crate::model::{Image, Resync, SymbolId, Tick};
use crate::ring::{ImageInput, Input};

/// Records a syncing symbol buffers while its image is on the way; older
/// ones are dropped first (the image is then asked for again if it does
/// not reach the oldest kept).
pub const MAX_BUFFERED: usize = 16_384;

/// Image requests in flight at once.
pub const MAX_INFLIGHT: usize = 64;

/// Delay before asking again after a failed or refused image request.
pub const RETRY_AFTER: Duration = Duration::from_millis(250);

/// How long start-up waits for the first sync before the server listens.
pub const STARTUP_WAIT: Duration = Duration::from_secs(10);

/// How often the edge looks at the shutdown flag and its retries.
const POLL: Duration = Duration::from_millis(100);

/// Starts the edge on its own thread.
pub fn start(settings: NatsSettings, ctx: FeedContext) -> io::Result<FeedHandle> {
    let (declared_tx, declared_rx) = oneshot::channel();
    let thread = std::thread::Builder::new().name("feed-nats".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("edge: cannot build the NATS runtime: {e}");
                return;
            }
        };
        runtime.block_on(run(settings, ctx, declared_tx));
    })?;
    Ok(FeedHandle { threads: vec![thread], local_addr: None, declared: Some(declared_rx) })
}

/// One symbol as the edge tracks it.
enum State {
    /// Applied through `seq`.
    Live { seq: u64 },
    /// Waiting for an image: always either in `queue` or `retry`, or its
    /// request in flight (every path into this state asks, and every
    /// failed answer asks again).
    Syncing {
        /// Why, for the clients' `reset` notice.
        cause: Resync,
        /// Records that arrived meanwhile, in seq order.
        buffer: VecDeque<(Tick, u64)>,
    },
}

/// The answer to one image request.
struct Reply {
    symbol: SymbolId,
    result: Result<Option<(Epoch, Image)>, String>,
}

struct Edge {
    settings: NatsSettings,
    client: async_nats::Client,
    publisher: Publisher,
    epoch: Option<Epoch>,
    states: HashMap<SymbolId, State>,
    /// Symbols to request, in order.
    queue: VecDeque<SymbolId>,
    /// Symbols to request again after a delay.
    retry: Vec<(Instant, SymbolId)>,
    inflight: usize,
    replies_tx: mpsc::Sender<Reply>,
    errors: ErrorLog,
    /// The universe has been received.
    universe_known: bool,
    tick_prefix: String,
}

async fn run(settings: NatsSettings, ctx: FeedContext, declared: oneshot::Sender<()>) {
    let (events_tx, mut events) = mpsc::channel(64);
    let client = match settings.connect("tickcast-edge", Some(events_tx)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("edge: {e}");
            return;
        }
    };
    let tick_prefix = format!("{}.tick.", settings.prefix);
    let mut sub = loop {
        match client.subscribe(format!("{tick_prefix}>")).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!("edge: subscribe failed, retrying: {e}");
                if ctx.stopping() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let (replies_tx, mut replies) = mpsc::channel(MAX_INFLIGHT);
    let mut edge = Edge {
        settings: settings.clone(),
        client,
        publisher: Publisher::new(ctx.clone()),
        epoch: None,
        states: HashMap::new(),
        queue: VecDeque::new(),
        retry: Vec::new(),
        inflight: 0,
        replies_tx,
        errors: ErrorLog::new(),
        universe_known: false,
        tick_prefix,
    };
    tracing::info!(url = %settings.url, prefix = %settings.prefix, "edge: following a sequencer over NATS");
    let started = Instant::now();
    let mut declared = Some(declared);
    let mut disconnected = false;
    let mut poll = tokio::time::interval(POLL);
    let mut last_universe_try: Option<Instant> = None;
    loop {
        if !edge.universe_known && last_universe_try.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_universe_try = Some(Instant::now());
            edge.ask_universe().await;
        }
        if declared.is_some() && (edge.synced() || started.elapsed() >= STARTUP_WAIT) {
            if !edge.synced() {
                tracing::warn!("edge: not every symbol is synced yet; serving anyway (the rest sync as they can)");
            }
            let _ = declared.take().map(|tx| tx.send(()));
        }
        edge.pump();
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else { break };
                edge.on_message(&msg);
                // Take whatever else is already here before closing the burst.
                for _ in 0..4096 {
                    match sub.next().now_or_never() {
                        Some(Some(msg)) => edge.on_message(&msg),
                        _ => break,
                    }
                }
                edge.publisher.end_burst();
            }
            reply = replies.recv() => {
                if let Some(reply) = reply {
                    edge.on_reply(reply);
                    edge.publisher.end_burst();
                }
            }
            event = events.recv() => {
                match event {
                    Some(async_nats::Event::Disconnected) => {
                        disconnected = true;
                        tracing::warn!("edge: lost the NATS connection; reconnecting");
                    }
                    Some(async_nats::Event::Connected) if disconnected => {
                        disconnected = false;
                        tracing::info!("edge: NATS connection back; re-syncing every symbol");
                        edge.resync_all(Resync::Reconnect);
                    }
                    _ => {}
                }
            }
            _ = poll.tick() => {
                if ctx.stopping() {
                    break;
                }
                let now = Instant::now();
                let due: Vec<SymbolId> = edge.retry.iter().filter(|(at, _)| *at <= now).map(|&(_, s)| s).collect();
                edge.retry.retain(|(at, _)| *at > now);
                edge.queue.extend(due);
            }
        }
        if ctx.stopping() {
            break;
        }
    }
}

impl Edge {
    /// Whether the universe is known and every symbol is live.
    fn synced(&self) -> bool {
        self.universe_known && self.states.values().all(|s| matches!(s, State::Live { .. }))
    }

    /// Asks the sequencer for its epoch and symbols; on an answer, interns
    /// them and syncs each.
    async fn ask_universe(&mut self) {
        let subject = self.settings.universe_subject();
        let reply = match self.client.request(subject, bytes::Bytes::new()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("edge: universe request failed: {e}");
                return;
            }
        };
        let Ok(text) = std::str::from_utf8(&reply.payload) else { return self.bad("universe reply is not UTF-8") };
        let mut lines = text.lines();
        let Some(epoch) = lines.next().and_then(|l| l.strip_prefix("epoch ")).and_then(|e| e.parse::<u64>().ok())
        else {
            return self.bad("universe reply without its epoch line");
        };
        self.note_epoch(epoch);
        let mut count = 0;
        for name in lines {
            match self.publisher.symbol(name) {
                Ok(id) => {
                    if let std::collections::hash_map::Entry::Vacant(slot) = self.states.entry(id) {
                        slot.insert(State::Syncing { cause: Resync::Initial, buffer: VecDeque::new() });
                        self.queue.push_back(id);
                    }
                    count += 1;
                }
                Err(e) => self.bad(&format!("universe symbol {name:?}: {e}")),
            }
        }
        self.universe_known = true;
        tracing::info!(epoch, symbols = count, "edge: sequencer universe received; syncing");
    }

    /// Sends image requests while there is room.
    fn pump(&mut self) {
        while self.inflight < MAX_INFLIGHT {
            let Some(symbol) = self.queue.pop_front() else { break };
            let Some(name) = self.publisher.context().symbols.name(symbol) else { continue };
            self.inflight += 1;
            let (client, tx) = (self.client.clone(), self.replies_tx.clone());
            let subject = self.settings.snap_subject(&name);
            tokio::spawn(async move {
                let result = match client.request(subject, bytes::Bytes::new()).await {
                    Err(e) => Err(e.to_string()),
                    Ok(msg) if msg.payload.is_empty() => Ok(None),
                    Ok(msg) => decode_image(&msg.payload, &name),
                };
                let _ = tx.send(Reply { symbol, result }).await;
            });
        }
    }

    /// A newer epoch re-syncs everything; returns whether `epoch` is current
    /// (older ones are stale and must be dropped).
    fn note_epoch(&mut self, epoch: Epoch) -> bool {
        match self.epoch {
            None => {
                self.epoch = Some(epoch);
                true
            }
            Some(current) if epoch == current => true,
            Some(current) if epoch > current => {
                tracing::warn!(
                    old = current,
                    new = epoch,
                    "edge: the sequencer has a new epoch; re-syncing every symbol"
                );
                self.epoch = Some(epoch);
                self.resync_all(Resync::Epoch);
                true
            }
            Some(_) => false,
        }
    }

    /// Puts every symbol back to syncing, dropping what it buffered.
    fn resync_all(&mut self, cause: Resync) {
        for (&id, state) in self.states.iter_mut() {
            // A syncing symbol is always queued, retrying or in flight:
            // only a live one needs asking.
            let was_live = matches!(state, State::Live { .. });
            *state = State::Syncing { cause, buffer: VecDeque::new() };
            if was_live {
                self.queue.push_back(id);
            }
        }
    }

    fn on_message(&mut self, msg: &async_nats::Message) {
        let Some(token) = msg.subject.as_str().strip_prefix(&self.tick_prefix) else {
            return self.bad("record on a subject outside the prefix");
        };
        let subject_sym = unescape(token).into_owned();
        for result in record::decode_all(&msg.payload) {
            self.publisher.context().metrics.cluster_received.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(r) => {
                    if r.sym != subject_sym {
                        self.bad(&format!("record of {:?} on the subject of {subject_sym:?}", r.sym));
                        continue;
                    }
                    if r.seq == 0 || r.epoch == 0 {
                        self.bad("unsequenced record on a tick subject");
                        continue;
                    }
                    let Body::Update(update) = r.body else {
                        self.bad("image record on a tick subject");
                        continue;
                    };
                    if !self.note_epoch(r.epoch) {
                        self.count_duplicate();
                        continue;
                    }
                    let symbol = match self.publisher.symbol(r.sym) {
                        Ok(id) => id,
                        Err(e) => {
                            self.bad(&format!("symbol {:?}: {e}", r.sym));
                            continue;
                        }
                    };
                    let tick = Tick { symbol, ts_event: r.ts_event, ts_ingest: r.ts_ingest, update };
                    self.on_tick(tick, r.seq);
                }
                Err(e) => self.bad(&format!("bad record on {}: {e}", msg.subject)),
            }
        }
    }

    fn on_tick(&mut self, tick: Tick, seq: u64) {
        let symbol = tick.symbol;
        let state = self.states.entry(symbol).or_insert_with(|| {
            self.queue.push_back(symbol);
            State::Syncing { cause: Resync::Initial, buffer: VecDeque::new() }
        });
        match state {
            State::Live { seq: last } if seq == *last + 1 => {
                *last = seq;
                let _ = self.publisher.forward_in_burst(Input::Sequenced(tick, seq));
            }
            State::Live { seq: last } if seq <= *last => self.count_duplicate(),
            State::Live { seq: last } => {
                tracing::debug!(symbol, last = *last, got = seq, "edge: seq gap; re-syncing the symbol");
                *state = State::Syncing { cause: Resync::Gap, buffer: VecDeque::from([(tick, seq)]) };
                self.queue.push_back(symbol);
            }
            State::Syncing { buffer, .. } => {
                if buffer.back().is_some_and(|&(_, last)| seq <= last) {
                    self.count_duplicate();
                    return;
                }
                if buffer.len() >= MAX_BUFFERED {
                    buffer.pop_front();
                }
                buffer.push_back((tick, seq));
            }
        }
    }

    fn on_reply(&mut self, reply: Reply) {
        self.inflight -= 1;
        let symbol = reply.symbol;
        let (epoch, image) = match reply.result {
            Ok(Some(answer)) => answer,
            Ok(None) => {
                tracing::debug!(symbol, "edge: the sequencer does not know the symbol (yet)");
                return self.retry.push((Instant::now() + RETRY_AFTER, symbol));
            }
            Err(e) => {
                tracing::debug!(symbol, "edge: image request failed: {e}");
                return self.retry.push((Instant::now() + RETRY_AFTER, symbol));
            }
        };
        if !self.note_epoch(epoch) {
            // An image of an older epoch: ask again.
            return self.queue.push_back(symbol);
        }
        let Some(State::Syncing { cause, buffer, .. }) = self.states.get_mut(&symbol) else { return };
        while buffer.front().is_some_and(|&(_, seq)| seq <= image.seq) {
            buffer.pop_front();
        }
        if buffer.front().is_some_and(|&(_, seq)| seq != image.seq + 1) {
            // Lost between the image and the first buffered record: again.
            return self.queue.push_back(symbol);
        }
        let cause = *cause;
        let buffer = std::mem::take(buffer);
        let mut last = image.seq;
        let _ = self.publisher.forward_in_burst(Input::Image(Box::new(ImageInput {
            symbol,
            image,
            cause,
            epoch: self.epoch.unwrap_or(0),
        })));
        for (tick, seq) in buffer {
            last = seq;
            let _ = self.publisher.forward_in_burst(Input::Sequenced(tick, seq));
        }
        self.states.insert(symbol, State::Live { seq: last });
    }

    fn count_duplicate(&self) {
        self.publisher.context().metrics.cluster_duplicates.fetch_add(1, Ordering::Relaxed);
    }

    fn bad(&mut self, what: &str) {
        let metrics = self.publisher.context().metrics.clone();
        metrics.cluster_bad_records.fetch_add(1, Ordering::Relaxed);
        self.errors.report(&metrics, "nats", &what);
    }
}

/// Decodes an image reply for `name`: one frame holding one image record.
fn decode_image(payload: &[u8], name: &str) -> Result<Option<(Epoch, Image)>, String> {
    let mut records = record::decode_all(payload);
    match (records.next(), records.next()) {
        (Some(Ok(r)), None) if r.sym == name => match r.body {
            Body::Image(image) if r.epoch != 0 => Ok(Some((r.epoch, image))),
            _ => Err(format!("reply for {name} is not an image")),
        },
        (Some(Ok(r)), None) => Err(format!("reply for {name} is an image of {}", r.sym)),
        (Some(Err(e)), _) => Err(format!("bad image reply for {name}: {e}")),
        _ => Err(format!("reply for {name} holds more than one record")),
    }
}

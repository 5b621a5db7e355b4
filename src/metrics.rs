//! Counters and gauges for operators, rendered as Prometheus text at
//! `/metrics`.
//!
//! In: increments from every stage. Out: the text exposition format.
//! Hot-path counters are batched by their owners (the engine adds once per
//! batch, a writer once per write) and sit on their own cache lines, so
//! metrics never add a contended write per message.
//!
//! Each metric is declared once, in the `METRICS` table: its name, type,
//! help and where its samples come from. [`Metrics::render`] is one loop
//! over that table.
//!
//! Imports: [`crate::model`], [`crate::wire`] and [`crate::sys`]: every
//! stage counts here, so it sits below all of them; gauges owned by other
//! stages come in as a [`LiveGauges`] at scrape time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::model::UpdateKind;
use crate::trace::{Tracer, QUANTILES};
use crate::wire::{Encoding, ErrorCode};

/// Every counter the server keeps. One instance per server, shared by `Arc`.
#[derive(Default)]
pub struct Metrics {
    /// Open WebSocket sessions.
    pub connections: AtomicI64,
    /// WebSocket sessions ever opened.
    pub connections_total: AtomicU64,
    /// Sessions holding a frame read buffer now: those whose client has
    /// sent bytes not yet read as a whole frame (see [`crate::session::inbound`]).
    /// Idle sessions hold none, so this stays near zero on a quiet server.
    pub read_buffers: AtomicI64,
    /// Connections refused at accept: `--max-connections` or
    /// `--max-connections-per-ip` were open, or the process was out of
    /// file descriptors (`server::fd_limit`).
    pub connections_rejected: AtomicU64,
    /// Failed `accept` calls on the main and metrics listeners, by
    /// [`AcceptError`] index.
    pub accept_errors: [AtomicU64; AcceptError::ALL.len()],
    /// HTTP upgrade requests refused by their checks: 400 (bad encoding,
    /// not a WebSocket), 403 (origin), 404 or 503 (replay checks).
    pub http_rejected: AtomicU64,
    /// Current (session, symbol) subscriptions.
    pub subscriptions: AtomicI64,
    /// Subscriptions whose snapshot waits for the client to drain (see
    /// "Snapshots that stream" in `engine/subscriptions.rs`).
    pub snapshots_pending: AtomicI64,
    /// Ticks taken in by feeds and pushed into the ring.
    pub ticks_ingested: CachePadded<AtomicU64>,
    /// Feed input rejected (bad lines, bad values), each skipped.
    pub feed_errors: AtomicU64,
    /// Feed connections accepted (tcp feed).
    pub feed_connections: AtomicU64,
    /// Feed connections open now (tcp feed).
    pub feed_connections_open: AtomicI64,
    /// Feed connections the feed closed, by [`FeedRefusal`] index.
    feed_refused: [AtomicU64; FeedRefusal::ALL.len()],
    /// Updates published by the engine (after sequencing).
    pub updates_published: CachePadded<AtomicU64>,
    /// Frames encoded, per encoding: at most one per update per encoding.
    pub frames_encoded: [AtomicU64; 3],
    /// Snapshots sent.
    pub snapshots_sent: AtomicU64,
    /// Frames fully written to sockets (data and control).
    pub frames_sent: CachePadded<AtomicU64>,
    /// Bytes written to sockets.
    pub bytes_sent: AtomicU64,
    /// Write system calls (vectored), so frames per syscall is visible.
    pub write_calls: AtomicU64,
    /// Socket write errors (peer reset and the like).
    pub write_errors: AtomicU64,
    /// Sessions closed with 1008 "slow consumer".
    pub slow_disconnects: AtomicU64,
    /// Times a session crossed `--conflate-above` and began conflating.
    pub conflation_episodes: AtomicU64,
    /// `conflated` messages sent (each followed by its snapshots).
    pub conflated_messages: AtomicU64,
    /// Updates not delivered to a conflating session, by [`UpdateKind`]
    /// index: quotes and book changes superseded by a snapshot, trades
    /// dropped.
    pub skipped_updates: [AtomicU64; 3],
    /// Ticks handed to the recorder (`--record`).
    pub record_ticks: AtomicU64,
    /// Ticks the recorder's queue had no room for, each a seq gap in the
    /// tick log (see [`crate::record`] for the policy).
    pub record_dropped: AtomicU64,
    /// Bytes the recorder wrote to the tick log.
    pub record_bytes: AtomicU64,
    /// Tick-log write failures (disk full and the like).
    pub record_errors: AtomicU64,
    /// Replay sessions (`/replay`) open now.
    pub replay_sessions: AtomicI64,
    /// Replay sessions refused at `--max-replay-sessions`.
    pub replay_rejected: AtomicU64,
    /// Client errors by kind.
    client_errors: [AtomicU64; ErrorCode::ALL.len()],
    /// Sequencer (`--publish`): records handed to the NATS publisher.
    pub cluster_published: AtomicU64,
    /// Sequencer: records its publish queue had no room for (edges see a
    /// seq gap and re-sync).
    pub cluster_publish_dropped: AtomicU64,
    /// Sequencer: snapshot requests answered.
    pub cluster_snapshots_served: AtomicU64,
    /// Edge (`--feed nats://`): records received from the sequencer.
    pub cluster_received: AtomicU64,
    /// Edge: records refused (malformed, foreign, wrong subject), never applied.
    pub cluster_bad_records: AtomicU64,
    /// Edge: records at or below a topic's seq, dropped.
    pub cluster_duplicates: AtomicU64,
    /// Topics whose state an edge replaced with a sequencer's image, by
    /// [`Resync`](crate::model::Resync) cause.
    pub cluster_resyncs: [AtomicU64; 4],
    /// Bytes all topics' history holds (`--history-bytes` bounds it).
    pub history_bytes: AtomicU64,
    /// Frames all topics' history holds.
    pub history_frames: AtomicU64,
    /// History frames let go by `--history`, `--history-frames` or
    /// `--history-bytes`.
    pub history_evicted: AtomicU64,
    /// Symbols of `from_seq` subscribes: `[recovered, reset]`.
    pub resumes: [AtomicU64; 2],
    /// `from_ts` subscribes that read the tick log up to the seam and
    /// joined live.
    pub rewinds: AtomicU64,
    /// `--trace-latency`: the per-stage latency of sampled ticks (off by
    /// default). Here because every stage that stamps holds the metrics.
    pub trace: Tracer,
}

/// Why `accept` failed, the label of `tickcast_accept_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// Out of file descriptors (`EMFILE`, `ENFILE`): the open-file limit
    /// is below what the clients need (see `server::fd_limit`).
    FdLimit,
    /// Anything else (e.g. a connection reset before it was accepted).
    Other,
}

impl AcceptError {
    /// Every reason, in label order.
    pub const ALL: [AcceptError; 2] = [AcceptError::FdLimit, AcceptError::Other];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            AcceptError::FdLimit => "fd_limit",
            AcceptError::Other => "other",
        }
    }
}

/// Why the tcp feed closed a connection itself (`--feed` doors), the label
/// of `tickcast_feed_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedRefusal {
    /// Over `--max-feed-connections`, closed at accept.
    Limit,
    /// Outside `--feed-allow`, closed at accept.
    NotAllowed,
    /// No valid auth line in time (`--feed-token`).
    Auth,
    /// Silent for `--feed-idle-timeout`.
    Idle,
    /// A binary frame's length was 0 or over the bound: the stream cannot
    /// be resynchronized.
    BadFrame,
}

impl FeedRefusal {
    /// Every reason, in label order.
    pub const ALL: [FeedRefusal; 5] =
        [FeedRefusal::Limit, FeedRefusal::NotAllowed, FeedRefusal::Auth, FeedRefusal::Idle, FeedRefusal::BadFrame];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            FeedRefusal::Limit => "limit",
            FeedRefusal::NotAllowed => "not_allowed",
            FeedRefusal::Auth => "auth",
            FeedRefusal::Idle => "idle",
            FeedRefusal::BadFrame => "bad_frame",
        }
    }
}

/// Upper bounds (bytes) of the per-session buffered-bytes histogram.
pub const BUFFERED_BUCKETS: [u64; 7] = [4 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20, 64 << 20];

/// Distribution of sessions' buffered bytes (outbox + kernel send queue).
#[derive(Debug, Default, Clone, Copy)]
pub struct BufferedHistogram {
    /// Sessions at or under each bound of [`BUFFERED_BUCKETS`] (cumulative
    /// when rendered).
    pub counts: [u64; BUFFERED_BUCKETS.len()],
    /// Sessions over every bound.
    pub over: u64,
    /// Sum of buffered bytes.
    pub sum: u64,
}

impl BufferedHistogram {
    /// Adds one session's buffered bytes.
    pub fn record(&mut self, bytes: u64) {
        self.sum += bytes;
        match BUFFERED_BUCKETS.iter().position(|&b| bytes <= b) {
            Some(i) => self.counts[i] += 1,
            None => self.over += 1,
        }
    }
}

/// Gauges over all sessions, read at scrape time by the session registry.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionGauges {
    /// Bytes queued in all outboxes and not yet written.
    pub queued_bytes: u64,
    /// Largest queued bytes of one session.
    pub max_session_queued_bytes: u64,
    /// Bytes in all sessions' kernel send queues.
    pub kernel_queued_bytes: u64,
    /// Per-session buffered bytes (outbox + kernel).
    pub buffered: BufferedHistogram,
    /// Sessions serving normally.
    pub open: usize,
    /// Sessions over `--conflate-above`, or still catching up after it.
    pub conflating: usize,
    /// Sessions with a close frame queued (shutting down or being dropped).
    pub closing: usize,
}

/// Gauges read at scrape time from the stages that own them.
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveGauges {
    /// Over all sessions.
    pub sessions: SessionGauges,
    /// Ticks waiting in the ring.
    pub ring_depth: usize,
    /// The ring's capacity.
    pub ring_capacity: usize,
    /// Pushes that found the ring full.
    pub ring_full: u64,
    /// Symbols known to the server.
    pub symbols: usize,
    /// TCP connections open on the main port, before or after the upgrade.
    pub open_connections: usize,
}

/// CPU and memory of this process, from `/proc/self/stat`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
    /// File descriptors open now (`/proc/PID/fd`): each client holds one.
    pub open_fds: u64,
    /// The soft open-file limit: the most descriptors the process may
    /// hold, so about the most clients (`server::fd_limit`).
    pub max_fds: u64,
}

impl ProcessStats {
    /// Reads the stats of process `pid` (`None` = this process). Returns
    /// `None` where `/proc` is unavailable.
    pub fn read(pid: Option<u32>) -> Option<ProcessStats> {
        let path = match pid {
            Some(p) => format!("/proc/{p}/stat"),
            None => "/proc/self/stat".to_owned(),
        };
        let stat = std::fs::read_to_string(path).ok()?;
        // Fields after the parenthesised command name, which may hold spaces.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest[0] is field 3 (state): utime is field 14, stime 15, rss 24.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let rss_pages: u64 = fields.get(21)?.parse().ok()?;
        let ticks = crate::sys::clock_ticks_per_second() as f64;
        let page = crate::sys::page_size();
        let fd_dir = match pid {
            Some(p) => format!("/proc/{p}/fd"),
            None => "/proc/self/fd".to_owned(),
        };
        // One entry per descriptor (less the one read_dir itself holds,
        // for this process): a directory walk, at scrape time only.
        let open_fds = std::fs::read_dir(fd_dir).map_or(0, |d| d.count() as u64);
        let open_fds = if pid.is_none() { open_fds.saturating_sub(1) } else { open_fds };
        let max_fds = if pid.is_none() { crate::sys::open_file_limit().map_or(0, |(soft, _)| soft) } else { 0 };
        Some(ProcessStats {
            cpu_seconds: (utime + stime) as f64 / ticks,
            rss_bytes: rss_pages * page,
            open_fds,
            max_fds,
        })
    }
}

impl Metrics {
    /// Counters at zero, with `--trace-latency` sampling 1 tick in
    /// `trace_every` (0: off).
    pub fn with_trace(trace_every: u32) -> Metrics {
        Metrics { trace: Tracer::new(trace_every), ..Metrics::default() }
    }

    /// Counts one client error.
    pub fn client_error(&self, kind: ErrorCode) {
        self.client_errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one feed connection closed by the feed for `reason`.
    pub fn feed_refused(&self, reason: FeedRefusal) {
        self.feed_refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Feed connections closed for `reason` so far.
    pub fn feed_refusals(&self, reason: FeedRefusal) -> u64 {
        self.feed_refused[reason as usize].load(Ordering::Relaxed)
    }

    /// Client errors of `kind` so far.
    pub fn client_errors(&self, kind: ErrorCode) -> u64 {
        self.client_errors[kind.index()].load(Ordering::Relaxed)
    }

    /// Renders everything in the Prometheus text exposition format.
    pub fn render(&self, live: &LiveGauges) -> String {
        self.render_with(live, ProcessStats::read(None))
    }

    /// [`render`](Self::render) with this process's stats given (`None`
    /// where `/proc` cannot be read), so a test can fix them: one loop over
    /// [`METRICS`].
    fn render_with(&self, live: &LiveGauges, process: Option<ProcessStats>) -> String {
        let scrape = Scrape { metrics: self, live, process };
        let mut out = String::with_capacity(4096);
        for Metric { name, kind, help, value } in METRICS {
            let samples = value(&scrape);
            if samples.is_empty() {
                continue;
            }
            let kind = kind.name();
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }
}

/// Every metric, in exposition order. Adding a metric is adding its entry
/// here (and the counter it reads, if it is new).
const METRICS: &[Metric] = &[
    gauge("tickcast_connections", "Open WebSocket sessions.", |s| one(&s.metrics.connections)),
    gauge(
        "tickcast_read_buffers",
        "Sessions holding a frame read buffer (8 KiB each); idle sessions hold none.",
        |s| one(&s.metrics.read_buffers),
    ),
    counter("tickcast_connections_total", "WebSocket sessions ever opened.", |s| one(&s.metrics.connections_total)),
    counter(
        "tickcast_connections_rejected_total",
        "Connections refused at accept: --max-connections, --max-connections-per-ip or the open-file limit.",
        |s| one(&s.metrics.connections_rejected),
    ),
    gauge(
        "tickcast_open_connections",
        "TCP connections open on the main port, upgraded or not: what --max-connections bounds.",
        |s| one(s.live.open_connections),
    ),
    counter(
        "tickcast_accept_errors_total",
        "Failed accepts on the listeners, by reason (fd_limit: EMFILE/ENFILE).",
        |s| by("reason", AcceptError::ALL.map(|k| (k.name(), &s.metrics.accept_errors[k as usize]))),
    ),
    counter(
        "tickcast_http_rejected_total",
        "Upgrade requests refused (HTTP 400, 403, 404 or 503 from the checks).",
        |s| one(&s.metrics.http_rejected),
    ),
    gauge("tickcast_subscriptions", "Current (session, symbol) subscriptions.", |s| one(&s.metrics.subscriptions)),
    gauge("tickcast_snapshots_pending", "Subscriptions whose snapshot waits for the client to read.", |s| {
        one(&s.metrics.snapshots_pending)
    }),
    gauge("tickcast_symbols", "Symbols known to the server.", |s| one(s.live.symbols)),
    counter("tickcast_ticks_ingested_total", "Ticks normalized by feeds and pushed into the ring.", |s| {
        one(&s.metrics.ticks_ingested)
    }),
    counter("tickcast_feed_errors_total", "Feed input rejected and skipped.", |s| one(&s.metrics.feed_errors)),
    counter("tickcast_feed_connections_total", "Feed handler connections accepted.", |s| {
        one(&s.metrics.feed_connections)
    }),
    gauge("tickcast_feed_connections", "Feed handler connections open now.", |s| one(&s.metrics.feed_connections_open)),
    counter(
        "tickcast_feed_refused_total",
        "Feed connections the server closed: over --max-feed-connections, outside --feed-allow, \
         no valid auth line, idle past --feed-idle-timeout, or a binary frame length out of bounds.",
        |s| by("reason", FeedRefusal::ALL.map(|r| (r.name(), &s.metrics.feed_refused[r as usize]))),
    ),
    gauge("tickcast_ring_depth", "Ticks waiting in the ring.", |s| one(s.live.ring_depth)),
    gauge("tickcast_ring_capacity", "Ring capacity in ticks.", |s| one(s.live.ring_capacity)),
    counter("tickcast_ring_full_total", "Pushes that found the ring full and waited.", |s| one(s.live.ring_full)),
    counter("tickcast_updates_published_total", "Updates sequenced and published by the engine.", |s| {
        one(&s.metrics.updates_published)
    }),
    counter("tickcast_frames_encoded_total", "Update frames encoded, per encoding.", |s| {
        by("encoding", Encoding::ALL.map(|e| (e.name(), &s.metrics.frames_encoded[e.index()])))
    }),
    counter("tickcast_snapshots_sent_total", "Snapshots sent.", |s| one(&s.metrics.snapshots_sent)),
    counter("tickcast_frames_sent_total", "Frames fully written to sockets.", |s| one(&s.metrics.frames_sent)),
    counter("tickcast_bytes_sent_total", "Bytes written to sockets.", |s| one(&s.metrics.bytes_sent)),
    counter("tickcast_write_calls_total", "Vectored write system calls.", |s| one(&s.metrics.write_calls)),
    counter("tickcast_write_errors_total", "Socket write errors.", |s| one(&s.metrics.write_errors)),
    counter("tickcast_slow_disconnects_total", "Sessions closed as slow consumers (1008).", |s| {
        one(&s.metrics.slow_disconnects)
    }),
    counter(
        "tickcast_conflation_episodes_total",
        "Times a session crossed --conflate-above and began conflating.",
        |s| one(&s.metrics.conflation_episodes),
    ),
    counter(
        "tickcast_conflated_messages_total",
        "conflated messages sent to sessions that drained (each followed by snapshots).",
        |s| one(&s.metrics.conflated_messages),
    ),
    counter(
        "tickcast_skipped_updates_total",
        "Updates not delivered to conflating sessions: quotes and book changes are folded into the \
         snapshot sent on recovery; trades are dropped.",
        |s| by("kind", UpdateKind::ALL.map(|k| (k.name(), &s.metrics.skipped_updates[k as usize]))),
    ),
    counter("tickcast_record_ticks_total", "Ticks handed to the recorder (--record).", |s| {
        one(&s.metrics.record_ticks)
    }),
    counter(
        "tickcast_record_dropped_total",
        "Ticks the recorder queue had no room for; each is a seq gap in the tick log.",
        |s| one(&s.metrics.record_dropped),
    ),
    counter("tickcast_record_bytes_total", "Bytes written to the tick log.", |s| one(&s.metrics.record_bytes)),
    counter(
        "tickcast_record_errors_total",
        "Tick-log write failures (the batch is lost and a new segment is started).",
        |s| one(&s.metrics.record_errors),
    ),
    counter("tickcast_cluster_published_total", "Sequencer: records handed to the NATS publisher (--publish).", |s| {
        one(&s.metrics.cluster_published)
    }),
    counter(
        "tickcast_cluster_publish_dropped_total",
        "Sequencer: records the publish queue had no room for; edges see a seq gap and re-sync.",
        |s| one(&s.metrics.cluster_publish_dropped),
    ),
    counter("tickcast_cluster_snapshots_served_total", "Sequencer: snapshot requests answered.", |s| {
        one(&s.metrics.cluster_snapshots_served)
    }),
    counter("tickcast_cluster_received_total", "Edge: records received from the sequencer.", |s| {
        one(&s.metrics.cluster_received)
    }),
    counter(
        "tickcast_cluster_bad_records_total",
        "Edge: records refused (malformed, foreign or on the wrong subject); never applied.",
        |s| one(&s.metrics.cluster_bad_records),
    ),
    counter("tickcast_cluster_duplicates_total", "Edge: records at or below a topic's seq, dropped.", |s| {
        one(&s.metrics.cluster_duplicates)
    }),
    counter("tickcast_cluster_resyncs_total", "Edge: topics re-synced from a sequencer snapshot, by cause.", |s| {
        by(
            "cause",
            [
                ("initial", &s.metrics.cluster_resyncs[0]),
                ("gap", &s.metrics.cluster_resyncs[1]),
                ("epoch", &s.metrics.cluster_resyncs[2]),
                ("reconnect", &s.metrics.cluster_resyncs[3]),
            ],
        )
    }),
    gauge("tickcast_history_bytes", "Bytes of encoded frames kept for resume (bounded by --history-bytes).", |s| {
        one(&s.metrics.history_bytes)
    }),
    gauge("tickcast_history_frames", "Encoded frames kept for resume.", |s| one(&s.metrics.history_frames)),
    counter(
        "tickcast_history_evicted_total",
        "History frames let go by --history, --history-frames or --history-bytes.",
        |s| one(&s.metrics.history_evicted),
    ),
    counter("tickcast_resumes_total", "Symbols resumed with from_seq, by result.", |s| {
        by("result", [("recovered", &s.metrics.resumes[0]), ("reset", &s.metrics.resumes[1])])
    }),
    counter("tickcast_rewinds_total", "from_ts subscribes that rewound the tick log and joined live.", |s| {
        one(&s.metrics.rewinds)
    }),
    gauge("tickcast_replay_sessions", "Replay sessions (/replay) and rewinds (from_ts) open now.", |s| {
        one(&s.metrics.replay_sessions)
    }),
    counter("tickcast_replay_rejected_total", "Replay sessions refused at --max-replay-sessions (HTTP 503).", |s| {
        one(&s.metrics.replay_rejected)
    }),
    gauge("tickcast_queued_bytes", "Bytes queued in all sessions, not yet written.", |s| {
        one(s.live.sessions.queued_bytes)
    }),
    gauge(
        "tickcast_kernel_queued_bytes",
        "Bytes in all sessions' kernel send queues (SIOCOUTQ), not yet acknowledged.",
        |s| one(s.live.sessions.kernel_queued_bytes),
    ),
    histogram(
        "tickcast_session_buffered_bytes",
        "Per-session buffered bytes (queued frames plus kernel send queue), at scrape time.",
        |s| s.live.sessions.buffered.samples(),
    ),
    gauge("tickcast_sessions", "Sessions by state.", |s| {
        let g = &s.live.sessions;
        by("state", [("open", g.open), ("conflating", g.conflating), ("closing", g.closing)])
    }),
    gauge("tickcast_session_queued_bytes_max", "Largest queued bytes of one session.", |s| {
        one(s.live.sessions.max_session_queued_bytes)
    }),
    counter("tickcast_client_errors_total", "Client errors by code.", |s| {
        by("code", ErrorCode::ALL.map(|k| (k.code(), s.metrics.client_errors(k))))
    }),
    summary(
        "tickcast_trace_stage_ns",
        "--trace-latency: ns each stage took per delivered sampled message (feed read to socket write; \
         README.md, \"Latency trace\").",
        |s| trace_samples(&s.metrics.trace),
    ),
    counter("tickcast_trace_sampled_total", "--trace-latency: ticks the feeds sampled.", |s| {
        if s.metrics.trace.enabled() {
            one(s.metrics.trace.sampled_total())
        } else {
            Vec::new()
        }
    }),
    counter(
        "tickcast_trace_dropped_total",
        "--trace-latency: samples not traced to a socket (a second one in one flush, or over the per-session bound).",
        |s| if s.metrics.trace.enabled() { one(s.metrics.trace.dropped_total()) } else { Vec::new() },
    ),
    counter("process_cpu_seconds_total", "User and system CPU time.", |s| {
        s.process.map_or_else(Vec::new, |p| one(p.cpu_seconds))
    }),
    gauge("process_resident_memory_bytes", "Resident set size.", |s| {
        s.process.map_or_else(Vec::new, |p| one(p.rss_bytes))
    }),
    gauge("process_open_fds", "Open file descriptors (one per client, plus the server's own).", |s| {
        s.process.map_or_else(Vec::new, |p| one(p.open_fds))
    }),
    gauge(
        "process_max_fds",
        "The open-file limit in effect: about the most clients, whatever --max-connections says.",
        |s| s.process.map_or_else(Vec::new, |p| one(p.max_fds)),
    ),
];

/// One metric at `/metrics`: everything the exposition says about it, and
/// where its value comes from.
struct Metric {
    /// The exposition name.
    name: &'static str,
    /// Counter, gauge or histogram: the `# TYPE` line.
    kind: Kind,
    /// The `# HELP` text.
    help: &'static str,
    /// Its samples, read at scrape time.
    value: fn(&Scrape<'_>) -> Samples,
}

/// A Prometheus metric type, as the `# TYPE` line names it.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

impl Kind {
    /// The name the `# TYPE` line gives it.
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
        }
    }
}

/// What one scrape reads: the counters, the gauges read from the stages
/// that own them, and this process's stats (`None` where `/proc` cannot
/// be read).
struct Scrape<'a> {
    metrics: &'a Metrics,
    live: &'a LiveGauges,
    process: Option<ProcessStats>,
}

/// A metric's samples in one scrape: each the suffix and labels that
/// follow its name (empty for a plain metric) and the value. A metric
/// with no samples is left out, HELP and TYPE too.
type Samples = Vec<(String, f64)>;

/// A [`METRICS`] entry for a counter.
const fn counter(name: &'static str, help: &'static str, value: fn(&Scrape<'_>) -> Samples) -> Metric {
    Metric { name, kind: Kind::Counter, help, value }
}

/// A [`METRICS`] entry for a gauge.
const fn gauge(name: &'static str, help: &'static str, value: fn(&Scrape<'_>) -> Samples) -> Metric {
    Metric { name, kind: Kind::Gauge, help, value }
}

/// A [`METRICS`] entry for a histogram.
const fn histogram(name: &'static str, help: &'static str, value: fn(&Scrape<'_>) -> Samples) -> Metric {
    Metric { name, kind: Kind::Histogram, help, value }
}

/// A [`METRICS`] entry for a summary.
const fn summary(name: &'static str, help: &'static str, value: fn(&Scrape<'_>) -> Samples) -> Metric {
    Metric { name, kind: Kind::Summary, help, value }
}

/// The trace's stages as a summary: per stage its quantiles, sum and
/// count; nothing while tracing is off.
fn trace_samples(tracer: &Tracer) -> Samples {
    let mut out = Samples::new();
    for s in tracer.summaries() {
        let stage = s.stage.name();
        for (q, value) in QUANTILES.iter().zip(s.quantiles) {
            out.push((format!("{{stage=\"{stage}\",quantile=\"{q}\"}}"), value as f64));
        }
        out.push((format!("_sum{{stage=\"{stage}\"}}"), s.sum_ns as f64));
        out.push((format!("_count{{stage=\"{stage}\"}}"), s.count as f64));
    }
    out
}

/// One unlabelled sample.
fn one(value: impl Sample) -> Samples {
    vec![(String::new(), value.sample())]
}

/// A value as Prometheus prints it: a float. Counters and gauges are read
/// `Relaxed`, like everywhere else, and integers are converted with `as`.
trait Sample {
    /// The value of one sample.
    fn sample(self) -> f64;
}

impl Sample for &AtomicU64 {
    fn sample(self) -> f64 {
        self.load(Ordering::Relaxed) as f64
    }
}

impl Sample for &AtomicI64 {
    fn sample(self) -> f64 {
        self.load(Ordering::Relaxed) as f64
    }
}

impl Sample for &CachePadded<AtomicU64> {
    fn sample(self) -> f64 {
        (**self).sample()
    }
}

impl Sample for u64 {
    fn sample(self) -> f64 {
        self as f64
    }
}

impl Sample for usize {
    fn sample(self) -> f64 {
        self as f64
    }
}

impl Sample for f64 {
    fn sample(self) -> f64 {
        self
    }
}

/// A labelled family: one sample per `(label value, value)`, labelled
/// `{label="value"}`.
fn by<V: Sample, const N: usize>(label: &str, samples: [(&str, V); N]) -> Samples {
    samples.into_iter().map(|(v, value)| (format!("{{{label}=\"{v}\"}}"), value.sample())).collect()
}

impl BufferedHistogram {
    /// The histogram's samples: cumulative buckets, `+Inf`, sum and count.
    fn samples(&self) -> Samples {
        let mut cumulative = 0u64;
        let mut buckets: Samples = BUFFERED_BUCKETS
            .iter()
            .zip(self.counts)
            .map(|(bound, n)| {
                cumulative += n;
                (format!("_bucket{{le=\"{bound}\"}}"), cumulative as f64)
            })
            .collect();
        let count = cumulative + self.over;
        buckets.push(("_bucket{le=\"+Inf\"}".to_owned(), count as f64));
        buckets.push(("_sum".to_owned(), self.sum as f64));
        buckets.push(("_count".to_owned(), count as f64));
        buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample whose name and labels are exactly `key`.
    fn sample(text: &str, key: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn render_writes_every_sample() {
        let m = Metrics::default();
        m.ticks_ingested.fetch_add(42, Ordering::Relaxed);
        m.frames_encoded[Encoding::Json.index()].fetch_add(3, Ordering::Relaxed);
        m.client_error(ErrorCode::UnknownOp);
        let mut buffered = BufferedHistogram::default();
        for bytes in [0, 5000, 70_000, 100 << 20] {
            buffered.record(bytes);
        }
        let sessions = SessionGauges { buffered, ..Default::default() };
        let text = m.render(&LiveGauges { ring_capacity: 8, sessions, ..Default::default() });
        assert_eq!(sample(&text, "tickcast_session_buffered_bytes_bucket{le=\"4096\"}"), Some(1.0));
        assert_eq!(sample(&text, "tickcast_session_buffered_bytes_bucket{le=\"65536\"}"), Some(2.0));
        assert_eq!(sample(&text, "tickcast_session_buffered_bytes_bucket{le=\"262144\"}"), Some(3.0));
        assert_eq!(sample(&text, "tickcast_session_buffered_bytes_bucket{le=\"+Inf\"}"), Some(4.0));
        assert_eq!(sample(&text, "tickcast_session_buffered_bytes_count"), Some(4.0));
        assert_eq!(sample(&text, "tickcast_ticks_ingested_total"), Some(42.0));
        assert_eq!(sample(&text, "tickcast_frames_encoded_total{encoding=\"json\"}"), Some(3.0));
        assert_eq!(sample(&text, "tickcast_client_errors_total{code=\"unknown_op\"}"), Some(1.0));
        assert_eq!(sample(&text, "tickcast_ring_capacity"), Some(8.0));
        let stats = ProcessStats::read(None).expect("linux /proc");
        assert!(stats.rss_bytes > 0);
        assert!(stats.open_fds >= 3 && stats.max_fds >= stats.open_fds, "{stats:?}");
    }

    #[test]
    fn the_latency_trace_renders_as_a_summary_per_stage_only_when_on() {
        let off = Metrics::default().render(&LiveGauges::default());
        assert!(!off.contains("tickcast_trace"), "off: no trace metrics");
        let m = Metrics::with_trace(100);
        m.trace.sampled();
        let s =
            crate::trace::Sample { frame_end: 1, read: 10, pushed: 20, popped: 30, fanned: 40, flushed: 50, taken: 60 };
        m.trace.record(&s, 1060);
        let text = m.render(&LiveGauges::default());
        assert!(text.contains("# TYPE tickcast_trace_stage_ns summary"), "{text}");
        let socket_write_p99 = sample(&text, "tickcast_trace_stage_ns{stage=\"socket_write\",quantile=\"0.99\"}");
        assert!(socket_write_p99.is_some_and(|v| (990.0..=1010.0).contains(&v)), "{socket_write_p99:?}");
        assert_eq!(sample(&text, "tickcast_trace_stage_ns_sum{stage=\"total\"}"), Some(1050.0));
        assert_eq!(sample(&text, "tickcast_trace_stage_ns_count{stage=\"ring_wait\"}"), Some(1.0));
        assert_eq!(sample(&text, "tickcast_trace_sampled_total"), Some(1.0));
        assert_eq!(sample(&text, "tickcast_trace_dropped_total"), Some(0.0));
    }

    /// Every counter and gauge set to a value of its own, so a metric
    /// that reads the wrong source shows up in the output.
    fn populated() -> (Metrics, LiveGauges) {
        let m = Metrics::default();
        let r = Ordering::Relaxed;
        m.connections.store(-3, r);
        m.connections_total.store(2, r);
        m.read_buffers.store(5, r);
        m.connections_rejected.store(7, r);
        m.http_rejected.store(11, r);
        m.accept_errors[AcceptError::FdLimit as usize].store(12, r);
        m.accept_errors[AcceptError::Other as usize].store(15, r);
        m.subscriptions.store(13, r);
        m.snapshots_pending.store(14, r);
        m.ticks_ingested.store(17, r);
        m.feed_errors.store(19, r);
        m.feed_connections.store(23, r);
        m.feed_connections_open.store(3, r);
        for (i, c) in m.feed_refused.iter().enumerate() {
            c.store(200 + i as u64, r);
        }
        m.updates_published.store(u64::MAX, r);
        for (i, c) in m.frames_encoded.iter().enumerate() {
            c.store(100 + i as u64, r);
        }
        m.snapshots_sent.store(29, r);
        m.frames_sent.store(31, r);
        m.bytes_sent.store(1 << 40, r);
        m.write_calls.store(37, r);
        m.write_errors.store(41, r);
        m.slow_disconnects.store(43, r);
        m.conflation_episodes.store(47, r);
        m.conflated_messages.store(53, r);
        for (i, c) in m.skipped_updates.iter().enumerate() {
            c.store(200 + i as u64, r);
        }
        m.record_ticks.store(59, r);
        m.record_dropped.store(61, r);
        m.record_bytes.store(67, r);
        m.record_errors.store(71, r);
        m.cluster_published.store(401, r);
        m.cluster_publish_dropped.store(409, r);
        m.cluster_snapshots_served.store(419, r);
        m.cluster_received.store(421, r);
        m.cluster_bad_records.store(431, r);
        m.cluster_duplicates.store(433, r);
        for (i, v) in [439, 443, 449, 457].into_iter().enumerate() {
            m.cluster_resyncs[i].store(v, r);
        }
        m.history_bytes.store(149, r);
        m.history_frames.store(151, r);
        m.history_evicted.store(157, r);
        m.resumes[0].store(163, r);
        m.resumes[1].store(167, r);
        m.rewinds.store(173, r);
        m.replay_sessions.store(73, r);
        m.replay_rejected.store(79, r);
        for (i, c) in m.client_errors.iter().enumerate() {
            c.store(300 + i as u64, r);
        }
        let mut buffered = BufferedHistogram::default();
        for bytes in [0, 5000, 70_000, 70_001, 5 << 20, 100 << 20] {
            buffered.record(bytes);
        }
        let sessions = SessionGauges {
            queued_bytes: 83,
            max_session_queued_bytes: 89,
            kernel_queued_bytes: 97,
            buffered,
            open: 101,
            conflating: 103,
            closing: 107,
        };
        let live = LiveGauges {
            sessions,
            ring_depth: 109,
            ring_capacity: 113,
            ring_full: 127,
            symbols: 131,
            open_connections: 139,
        };
        (m, live)
    }

    /// What the hand-written `render` printed for [`populated`], before the
    /// metrics became a table: the exposition must not change by a byte
    /// (but for metrics added since, such as the `bad_frame` refusal of the
    /// binary feed).
    const GOLDEN: &str = r#"# HELP tickcast_connections Open WebSocket sessions.
# TYPE tickcast_connections gauge
tickcast_connections -3
# HELP tickcast_read_buffers Sessions holding a frame read buffer (8 KiB each); idle sessions hold none.
# TYPE tickcast_read_buffers gauge
tickcast_read_buffers 5
# HELP tickcast_connections_total WebSocket sessions ever opened.
# TYPE tickcast_connections_total counter
tickcast_connections_total 2
# HELP tickcast_connections_rejected_total Connections refused at accept: --max-connections, --max-connections-per-ip or the open-file limit.
# TYPE tickcast_connections_rejected_total counter
tickcast_connections_rejected_total 7
# HELP tickcast_open_connections TCP connections open on the main port, upgraded or not: what --max-connections bounds.
# TYPE tickcast_open_connections gauge
tickcast_open_connections 139
# HELP tickcast_accept_errors_total Failed accepts on the listeners, by reason (fd_limit: EMFILE/ENFILE).
# TYPE tickcast_accept_errors_total counter
tickcast_accept_errors_total{reason="fd_limit"} 12
tickcast_accept_errors_total{reason="other"} 15
# HELP tickcast_http_rejected_total Upgrade requests refused (HTTP 400, 403, 404 or 503 from the checks).
# TYPE tickcast_http_rejected_total counter
tickcast_http_rejected_total 11
# HELP tickcast_subscriptions Current (session, symbol) subscriptions.
# TYPE tickcast_subscriptions gauge
tickcast_subscriptions 13
# HELP tickcast_snapshots_pending Subscriptions whose snapshot waits for the client to read.
# TYPE tickcast_snapshots_pending gauge
tickcast_snapshots_pending 14
# HELP tickcast_symbols Symbols known to the server.
# TYPE tickcast_symbols gauge
tickcast_symbols 131
# HELP tickcast_ticks_ingested_total Ticks normalized by feeds and pushed into the ring.
# TYPE tickcast_ticks_ingested_total counter
tickcast_ticks_ingested_total 17
# HELP tickcast_feed_errors_total Feed input rejected and skipped.
# TYPE tickcast_feed_errors_total counter
tickcast_feed_errors_total 19
# HELP tickcast_feed_connections_total Feed handler connections accepted.
# TYPE tickcast_feed_connections_total counter
tickcast_feed_connections_total 23
# HELP tickcast_feed_connections Feed handler connections open now.
# TYPE tickcast_feed_connections gauge
tickcast_feed_connections 3
# HELP tickcast_feed_refused_total Feed connections the server closed: over --max-feed-connections, outside --feed-allow, no valid auth line, idle past --feed-idle-timeout, or a binary frame length out of bounds.
# TYPE tickcast_feed_refused_total counter
tickcast_feed_refused_total{reason="limit"} 200
tickcast_feed_refused_total{reason="not_allowed"} 201
tickcast_feed_refused_total{reason="auth"} 202
tickcast_feed_refused_total{reason="idle"} 203
tickcast_feed_refused_total{reason="bad_frame"} 204
# HELP tickcast_ring_depth Ticks waiting in the ring.
# TYPE tickcast_ring_depth gauge
tickcast_ring_depth 109
# HELP tickcast_ring_capacity Ring capacity in ticks.
# TYPE tickcast_ring_capacity gauge
tickcast_ring_capacity 113
# HELP tickcast_ring_full_total Pushes that found the ring full and waited.
# TYPE tickcast_ring_full_total counter
tickcast_ring_full_total 127
# HELP tickcast_updates_published_total Updates sequenced and published by the engine.
# TYPE tickcast_updates_published_total counter
tickcast_updates_published_total 18446744073709552000
# HELP tickcast_frames_encoded_total Update frames encoded, per encoding.
# TYPE tickcast_frames_encoded_total counter
tickcast_frames_encoded_total{encoding="msgpack"} 100
tickcast_frames_encoded_total{encoding="protobuf"} 101
tickcast_frames_encoded_total{encoding="json"} 102
# HELP tickcast_snapshots_sent_total Snapshots sent.
# TYPE tickcast_snapshots_sent_total counter
tickcast_snapshots_sent_total 29
# HELP tickcast_frames_sent_total Frames fully written to sockets.
# TYPE tickcast_frames_sent_total counter
tickcast_frames_sent_total 31
# HELP tickcast_bytes_sent_total Bytes written to sockets.
# TYPE tickcast_bytes_sent_total counter
tickcast_bytes_sent_total 1099511627776
# HELP tickcast_write_calls_total Vectored write system calls.
# TYPE tickcast_write_calls_total counter
tickcast_write_calls_total 37
# HELP tickcast_write_errors_total Socket write errors.
# TYPE tickcast_write_errors_total counter
tickcast_write_errors_total 41
# HELP tickcast_slow_disconnects_total Sessions closed as slow consumers (1008).
# TYPE tickcast_slow_disconnects_total counter
tickcast_slow_disconnects_total 43
# HELP tickcast_conflation_episodes_total Times a session crossed --conflate-above and began conflating.
# TYPE tickcast_conflation_episodes_total counter
tickcast_conflation_episodes_total 47
# HELP tickcast_conflated_messages_total conflated messages sent to sessions that drained (each followed by snapshots).
# TYPE tickcast_conflated_messages_total counter
tickcast_conflated_messages_total 53
# HELP tickcast_skipped_updates_total Updates not delivered to conflating sessions: quotes and book changes are folded into the snapshot sent on recovery; trades are dropped.
# TYPE tickcast_skipped_updates_total counter
tickcast_skipped_updates_total{kind="trade"} 200
tickcast_skipped_updates_total{kind="quote"} 201
tickcast_skipped_updates_total{kind="book"} 202
# HELP tickcast_record_ticks_total Ticks handed to the recorder (--record).
# TYPE tickcast_record_ticks_total counter
tickcast_record_ticks_total 59
# HELP tickcast_record_dropped_total Ticks the recorder queue had no room for; each is a seq gap in the tick log.
# TYPE tickcast_record_dropped_total counter
tickcast_record_dropped_total 61
# HELP tickcast_record_bytes_total Bytes written to the tick log.
# TYPE tickcast_record_bytes_total counter
tickcast_record_bytes_total 67
# HELP tickcast_record_errors_total Tick-log write failures (the batch is lost and a new segment is started).
# TYPE tickcast_record_errors_total counter
tickcast_record_errors_total 71
# HELP tickcast_cluster_published_total Sequencer: records handed to the NATS publisher (--publish).
# TYPE tickcast_cluster_published_total counter
tickcast_cluster_published_total 401
# HELP tickcast_cluster_publish_dropped_total Sequencer: records the publish queue had no room for; edges see a seq gap and re-sync.
# TYPE tickcast_cluster_publish_dropped_total counter
tickcast_cluster_publish_dropped_total 409
# HELP tickcast_cluster_snapshots_served_total Sequencer: snapshot requests answered.
# TYPE tickcast_cluster_snapshots_served_total counter
tickcast_cluster_snapshots_served_total 419
# HELP tickcast_cluster_received_total Edge: records received from the sequencer.
# TYPE tickcast_cluster_received_total counter
tickcast_cluster_received_total 421
# HELP tickcast_cluster_bad_records_total Edge: records refused (malformed, foreign or on the wrong subject); never applied.
# TYPE tickcast_cluster_bad_records_total counter
tickcast_cluster_bad_records_total 431
# HELP tickcast_cluster_duplicates_total Edge: records at or below a topic's seq, dropped.
# TYPE tickcast_cluster_duplicates_total counter
tickcast_cluster_duplicates_total 433
# HELP tickcast_cluster_resyncs_total Edge: topics re-synced from a sequencer snapshot, by cause.
# TYPE tickcast_cluster_resyncs_total counter
tickcast_cluster_resyncs_total{cause="initial"} 439
tickcast_cluster_resyncs_total{cause="gap"} 443
tickcast_cluster_resyncs_total{cause="epoch"} 449
tickcast_cluster_resyncs_total{cause="reconnect"} 457
# HELP tickcast_history_bytes Bytes of encoded frames kept for resume (bounded by --history-bytes).
# TYPE tickcast_history_bytes gauge
tickcast_history_bytes 149
# HELP tickcast_history_frames Encoded frames kept for resume.
# TYPE tickcast_history_frames gauge
tickcast_history_frames 151
# HELP tickcast_history_evicted_total History frames let go by --history, --history-frames or --history-bytes.
# TYPE tickcast_history_evicted_total counter
tickcast_history_evicted_total 157
# HELP tickcast_resumes_total Symbols resumed with from_seq, by result.
# TYPE tickcast_resumes_total counter
tickcast_resumes_total{result="recovered"} 163
tickcast_resumes_total{result="reset"} 167
# HELP tickcast_rewinds_total from_ts subscribes that rewound the tick log and joined live.
# TYPE tickcast_rewinds_total counter
tickcast_rewinds_total 173
# HELP tickcast_replay_sessions Replay sessions (/replay) and rewinds (from_ts) open now.
# TYPE tickcast_replay_sessions gauge
tickcast_replay_sessions 73
# HELP tickcast_replay_rejected_total Replay sessions refused at --max-replay-sessions (HTTP 503).
# TYPE tickcast_replay_rejected_total counter
tickcast_replay_rejected_total 79
# HELP tickcast_queued_bytes Bytes queued in all sessions, not yet written.
# TYPE tickcast_queued_bytes gauge
tickcast_queued_bytes 83
# HELP tickcast_kernel_queued_bytes Bytes in all sessions' kernel send queues (SIOCOUTQ), not yet acknowledged.
# TYPE tickcast_kernel_queued_bytes gauge
tickcast_kernel_queued_bytes 97
# HELP tickcast_session_buffered_bytes Per-session buffered bytes (queued frames plus kernel send queue), at scrape time.
# TYPE tickcast_session_buffered_bytes histogram
tickcast_session_buffered_bytes_bucket{le="4096"} 1
tickcast_session_buffered_bytes_bucket{le="65536"} 2
tickcast_session_buffered_bytes_bucket{le="262144"} 4
tickcast_session_buffered_bytes_bucket{le="1048576"} 4
tickcast_session_buffered_bytes_bucket{le="4194304"} 4
tickcast_session_buffered_bytes_bucket{le="8388608"} 5
tickcast_session_buffered_bytes_bucket{le="67108864"} 5
tickcast_session_buffered_bytes_bucket{le="+Inf"} 6
tickcast_session_buffered_bytes_sum 110245481
tickcast_session_buffered_bytes_count 6
# HELP tickcast_sessions Sessions by state.
# TYPE tickcast_sessions gauge
tickcast_sessions{state="open"} 101
tickcast_sessions{state="conflating"} 103
tickcast_sessions{state="closing"} 107
# HELP tickcast_session_queued_bytes_max Largest queued bytes of one session.
# TYPE tickcast_session_queued_bytes_max gauge
tickcast_session_queued_bytes_max 89
# HELP tickcast_client_errors_total Client errors by code.
# TYPE tickcast_client_errors_total counter
tickcast_client_errors_total{code="bad_json"} 300
tickcast_client_errors_total{code="unknown_op"} 301
tickcast_client_errors_total{code="bad_request"} 302
tickcast_client_errors_total{code="unknown_symbol"} 303
tickcast_client_errors_total{code="message_too_big"} 304
tickcast_client_errors_total{code="protocol_error"} 305
tickcast_client_errors_total{code="pong_timeout"} 306
tickcast_client_errors_total{code="forbidden"} 307
tickcast_client_errors_total{code="unauthorized"} 308
tickcast_client_errors_total{code="token_expired"} 309
tickcast_client_errors_total{code="rate_limited"} 310
tickcast_client_errors_total{code="control_flood"} 311
"#;

    /// The process metrics at the end, for fixed [`ProcessStats`].
    const GOLDEN_PROCESS: &str = r#"# HELP process_cpu_seconds_total User and system CPU time.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 0.30000000000000004
# HELP process_resident_memory_bytes Resident set size.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 137
# HELP process_open_fds Open file descriptors (one per client, plus the server's own).
# TYPE process_open_fds gauge
process_open_fds 14
# HELP process_max_fds The open-file limit in effect: about the most clients, whatever --max-connections says.
# TYPE process_max_fds gauge
process_max_fds 20000
"#;

    #[test]
    fn render_matches_the_golden_exposition() {
        let (m, live) = populated();
        let process = ProcessStats { cpu_seconds: 0.1 + 0.2, rss_bytes: 137, open_fds: 14, max_fds: 20_000 };
        assert_eq!(m.render_with(&live, Some(process)), format!("{GOLDEN}{GOLDEN_PROCESS}"));
        assert_eq!(m.render_with(&live, None), GOLDEN, "no /proc: no process metrics");
    }
}

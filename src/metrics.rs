//! Counters and gauges for operators, rendered as Prometheus text at
//! `/metrics`.
//!
//! In: increments from every stage. Out: the text exposition format.
//! Hot-path counters are batched by their owners (the engine adds once per
//! batch, a writer once per write) and sit on their own cache lines, so
//! metrics never add a contended write per message.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::codec::Encoding;
use crate::tick::UpdateKind;

/// Client-visible error codes, counted in `tickcast_client_errors_total`.
/// The names are the `code` of `error` messages (or the close reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// A control message that is not valid JSON.
    BadJson,
    /// A JSON control message whose `op` is unknown.
    UnknownOp,
    /// A control message missing fields or with wrong types.
    BadRequest,
    /// A subscribe naming symbols the server does not carry.
    UnknownSymbol,
    /// A frame over `--max-message-bytes` (close 1009).
    MessageTooBig,
    /// A WebSocket protocol violation (close 1002 or 1007).
    ProtocolError,
    /// No pong within `--pong-timeout` (close 1008).
    PongTimeout,
}

impl ClientError {
    /// Every kind, in [`ClientError::index`] order.
    pub const ALL: [ClientError; 7] = [
        ClientError::BadJson,
        ClientError::UnknownOp,
        ClientError::BadRequest,
        ClientError::UnknownSymbol,
        ClientError::MessageTooBig,
        ClientError::ProtocolError,
        ClientError::PongTimeout,
    ];

    /// The wire code.
    pub fn code(self) -> &'static str {
        match self {
            ClientError::BadJson => "bad_json",
            ClientError::UnknownOp => "unknown_op",
            ClientError::BadRequest => "bad_request",
            ClientError::UnknownSymbol => "unknown_symbol",
            ClientError::MessageTooBig => "message_too_big",
            ClientError::ProtocolError => "protocol_error",
            ClientError::PongTimeout => "pong_timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Every counter the server keeps. One instance per server, shared by `Arc`.
#[derive(Default)]
pub struct Metrics {
    /// Open WebSocket sessions.
    pub connections: AtomicI64,
    /// WebSocket sessions ever opened.
    pub connections_total: AtomicU64,
    /// Sessions holding a frame read buffer now: those whose client has
    /// sent bytes not yet read as a whole frame (see [`crate::inbound`]).
    /// Idle sessions hold none, so this stays near zero on a quiet server.
    pub read_buffers: AtomicI64,
    /// Connections refused because `--max-connections` were open.
    pub connections_rejected: AtomicU64,
    /// HTTP upgrade requests refused with 400 (bad encoding, not a WebSocket).
    pub http_rejected: AtomicU64,
    /// Current (session, symbol) subscriptions.
    pub subscriptions: AtomicI64,
    /// Ticks taken in by feeds and pushed into the ring.
    pub ticks_ingested: CachePadded<AtomicU64>,
    /// Feed input rejected (bad lines, bad values), each skipped.
    pub feed_errors: AtomicU64,
    /// Feed connections accepted (tcp feed).
    pub feed_connections: AtomicU64,
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
    client_errors: [AtomicU64; ClientError::ALL.len()],
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

/// Gauges read at scrape time from the stages that own them.
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveGauges {
    /// Bytes in all sessions' kernel send queues.
    pub kernel_queued_bytes: u64,
    /// Per-session buffered bytes (outbox + kernel).
    pub buffered: BufferedHistogram,
    /// Sessions serving normally.
    pub sessions_open: usize,
    /// Sessions over `--conflate-above`, or still catching up after it.
    pub sessions_conflating: usize,
    /// Sessions with a close frame queued (shutting down or being dropped).
    pub sessions_closing: usize,
    /// Ticks waiting in the ring.
    pub ring_depth: usize,
    /// The ring's capacity.
    pub ring_capacity: usize,
    /// Pushes that found the ring full.
    pub ring_full: u64,
    /// Symbols known to the server.
    pub symbols: usize,
    /// Bytes queued in all sessions and not yet written.
    pub queued_bytes: u64,
    /// Largest per-session queued bytes.
    pub max_session_queued_bytes: u64,
}

/// CPU and memory of this process, from `/proc/self/stat`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub rss_bytes: u64,
}

impl ProcessStats {
    /// Reads the stats of process `pid` (`None` = this process). Returns
    /// `None` where `/proc` is unavailable.
    #[allow(unsafe_code)]
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
        // SAFETY: sysconf only reads a configuration value.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        Some(ProcessStats { cpu_seconds: (utime + stime) as f64 / ticks, rss_bytes: rss_pages * page })
    }
}

impl Metrics {
    /// Counts one client error.
    pub fn client_error(&self, kind: ClientError) {
        self.client_errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Client errors of `kind` so far.
    pub fn client_errors(&self, kind: ClientError) -> u64 {
        self.client_errors[kind.index()].load(Ordering::Relaxed)
    }

    /// Renders everything in the Prometheus text exposition format.
    pub fn render(&self, live: &LiveGauges) -> String {
        let mut out = String::with_capacity(4096);
        let r = Ordering::Relaxed;
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |v: f64| [(String::new(), v)];
        metric("tickcast_connections", "gauge", "Open WebSocket sessions.", &one(self.connections.load(r) as f64));
        metric(
            "tickcast_read_buffers",
            "gauge",
            "Sessions holding a frame read buffer (8 KiB each); idle sessions hold none.",
            &one(self.read_buffers.load(r) as f64),
        );
        metric(
            "tickcast_connections_total",
            "counter",
            "WebSocket sessions ever opened.",
            &one(self.connections_total.load(r) as f64),
        );
        metric(
            "tickcast_connections_rejected_total",
            "counter",
            "Connections refused at --max-connections.",
            &one(self.connections_rejected.load(r) as f64),
        );
        metric(
            "tickcast_http_rejected_total",
            "counter",
            "Upgrade requests answered with HTTP 400.",
            &one(self.http_rejected.load(r) as f64),
        );
        metric(
            "tickcast_subscriptions",
            "gauge",
            "Current (session, symbol) subscriptions.",
            &one(self.subscriptions.load(r) as f64),
        );
        metric("tickcast_symbols", "gauge", "Symbols known to the server.", &one(live.symbols as f64));
        metric(
            "tickcast_ticks_ingested_total",
            "counter",
            "Ticks normalized by feeds and pushed into the ring.",
            &one(self.ticks_ingested.load(r) as f64),
        );
        metric(
            "tickcast_feed_errors_total",
            "counter",
            "Feed input rejected and skipped.",
            &one(self.feed_errors.load(r) as f64),
        );
        metric(
            "tickcast_feed_connections_total",
            "counter",
            "Feed handler connections accepted.",
            &one(self.feed_connections.load(r) as f64),
        );
        metric("tickcast_ring_depth", "gauge", "Ticks waiting in the ring.", &one(live.ring_depth as f64));
        metric("tickcast_ring_capacity", "gauge", "Ring capacity in ticks.", &one(live.ring_capacity as f64));
        metric(
            "tickcast_ring_full_total",
            "counter",
            "Pushes that found the ring full and waited.",
            &one(live.ring_full as f64),
        );
        metric(
            "tickcast_updates_published_total",
            "counter",
            "Updates sequenced and published by the engine.",
            &one(self.updates_published.load(r) as f64),
        );
        let encoded: Vec<(String, f64)> = Encoding::ALL
            .iter()
            .map(|e| (format!("{{encoding=\"{}\"}}", e.name()), self.frames_encoded[e.index()].load(r) as f64))
            .collect();
        metric("tickcast_frames_encoded_total", "counter", "Update frames encoded, per encoding.", &encoded);
        metric("tickcast_snapshots_sent_total", "counter", "Snapshots sent.", &one(self.snapshots_sent.load(r) as f64));
        metric(
            "tickcast_frames_sent_total",
            "counter",
            "Frames fully written to sockets.",
            &one(self.frames_sent.load(r) as f64),
        );
        metric(
            "tickcast_bytes_sent_total",
            "counter",
            "Bytes written to sockets.",
            &one(self.bytes_sent.load(r) as f64),
        );
        metric(
            "tickcast_write_calls_total",
            "counter",
            "Vectored write system calls.",
            &one(self.write_calls.load(r) as f64),
        );
        metric(
            "tickcast_write_errors_total",
            "counter",
            "Socket write errors.",
            &one(self.write_errors.load(r) as f64),
        );
        metric(
            "tickcast_slow_disconnects_total",
            "counter",
            "Sessions closed as slow consumers (1008).",
            &one(self.slow_disconnects.load(r) as f64),
        );
        metric(
            "tickcast_conflation_episodes_total",
            "counter",
            "Times a session crossed --conflate-above and began conflating.",
            &one(self.conflation_episodes.load(r) as f64),
        );
        metric(
            "tickcast_conflated_messages_total",
            "counter",
            "conflated messages sent to sessions that drained (each followed by snapshots).",
            &one(self.conflated_messages.load(r) as f64),
        );
        let skipped: Vec<(String, f64)> = UpdateKind::ALL
            .iter()
            .map(|k| (format!("{{kind=\"{}\"}}", k.name()), self.skipped_updates[*k as usize].load(r) as f64))
            .collect();
        metric(
            "tickcast_skipped_updates_total",
            "counter",
            "Updates not delivered to conflating sessions: quotes and book changes are folded into the \
             snapshot sent on recovery; trades are dropped.",
            &skipped,
        );
        metric(
            "tickcast_record_ticks_total",
            "counter",
            "Ticks handed to the recorder (--record).",
            &one(self.record_ticks.load(r) as f64),
        );
        metric(
            "tickcast_record_dropped_total",
            "counter",
            "Ticks the recorder queue had no room for; each is a seq gap in the tick log.",
            &one(self.record_dropped.load(r) as f64),
        );
        metric(
            "tickcast_record_bytes_total",
            "counter",
            "Bytes written to the tick log.",
            &one(self.record_bytes.load(r) as f64),
        );
        metric(
            "tickcast_record_errors_total",
            "counter",
            "Tick-log write failures (the batch is lost and a new segment is started).",
            &one(self.record_errors.load(r) as f64),
        );
        metric(
            "tickcast_replay_sessions",
            "gauge",
            "Replay sessions (/replay) open now.",
            &one(self.replay_sessions.load(r) as f64),
        );
        metric(
            "tickcast_replay_rejected_total",
            "counter",
            "Replay sessions refused at --max-replay-sessions (HTTP 503).",
            &one(self.replay_rejected.load(r) as f64),
        );
        metric(
            "tickcast_queued_bytes",
            "gauge",
            "Bytes queued in all sessions, not yet written.",
            &one(live.queued_bytes as f64),
        );
        metric(
            "tickcast_kernel_queued_bytes",
            "gauge",
            "Bytes in all sessions' kernel send queues (SIOCOUTQ), not yet acknowledged.",
            &one(live.kernel_queued_bytes as f64),
        );
        let mut cumulative = 0u64;
        let mut buckets: Vec<(String, f64)> = BUFFERED_BUCKETS
            .iter()
            .zip(live.buffered.counts)
            .map(|(bound, n)| {
                cumulative += n;
                (format!("_bucket{{le=\"{bound}\"}}"), cumulative as f64)
            })
            .collect();
        let count = cumulative + live.buffered.over;
        buckets.push(("_bucket{le=\"+Inf\"}".to_owned(), count as f64));
        buckets.push(("_sum".to_owned(), live.buffered.sum as f64));
        buckets.push(("_count".to_owned(), count as f64));
        metric(
            "tickcast_session_buffered_bytes",
            "histogram",
            "Per-session buffered bytes (queued frames plus kernel send queue), at scrape time.",
            &buckets,
        );
        metric(
            "tickcast_sessions",
            "gauge",
            "Sessions by state.",
            &[
                ("{state=\"open\"}".to_owned(), live.sessions_open as f64),
                ("{state=\"conflating\"}".to_owned(), live.sessions_conflating as f64),
                ("{state=\"closing\"}".to_owned(), live.sessions_closing as f64),
            ],
        );
        metric(
            "tickcast_session_queued_bytes_max",
            "gauge",
            "Largest queued bytes of one session.",
            &one(live.max_session_queued_bytes as f64),
        );
        let errors: Vec<(String, f64)> = ClientError::ALL
            .iter()
            .map(|k| (format!("{{code=\"{}\"}}", k.code()), self.client_errors(*k) as f64))
            .collect();
        metric("tickcast_client_errors_total", "counter", "Client errors by code.", &errors);
        if let Some(p) = ProcessStats::read(None) {
            metric("process_cpu_seconds_total", "counter", "User and system CPU time.", &one(p.cpu_seconds));
            metric("process_resident_memory_bytes", "gauge", "Resident set size.", &one(p.rss_bytes as f64));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_writes_every_sample() {
        let m = Metrics::default();
        m.ticks_ingested.fetch_add(42, Ordering::Relaxed);
        m.frames_encoded[Encoding::Json.index()].fetch_add(3, Ordering::Relaxed);
        m.client_error(ClientError::UnknownOp);
        let mut buffered = BufferedHistogram::default();
        for bytes in [0, 5000, 70_000, 100 << 20] {
            buffered.record(bytes);
        }
        let text = m.render(&LiveGauges { ring_capacity: 8, buffered, ..Default::default() });
        // The value on the sample line whose key (name and labels) is `key`.
        let sample = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')).and_then(|v| v.parse::<f64>().ok())
        };
        assert_eq!(sample("tickcast_session_buffered_bytes_bucket{le=\"4096\"}"), Some(1.0));
        assert_eq!(sample("tickcast_session_buffered_bytes_bucket{le=\"65536\"}"), Some(2.0));
        assert_eq!(sample("tickcast_session_buffered_bytes_bucket{le=\"262144\"}"), Some(3.0));
        assert_eq!(sample("tickcast_session_buffered_bytes_bucket{le=\"+Inf\"}"), Some(4.0));
        assert_eq!(sample("tickcast_session_buffered_bytes_count"), Some(4.0));
        assert_eq!(sample("tickcast_ticks_ingested_total"), Some(42.0));
        assert_eq!(sample("tickcast_frames_encoded_total{encoding=\"json\"}"), Some(3.0));
        assert_eq!(sample("tickcast_client_errors_total{code=\"unknown_op\"}"), Some(1.0));
        assert_eq!(sample("tickcast_ring_capacity"), Some(8.0));
        let stats = ProcessStats::read(None).expect("linux /proc");
        assert!(stats.rss_bytes > 0);
    }
}

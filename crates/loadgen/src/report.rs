//! The figures of a run: printed for people, and as one JSON line for
//! scripts (`scripts/peers_report.py` and `scripts/bench-record.sh` read
//! its field names, so they do not change).
//!
//! Imports: the flags (for what ran) and the [`Target`] (for the encoding
//! its subscribers read).

use crate::args::BenchArgs;
use crate::target::{Target, TargetKind};

/// The figures of one run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BenchReport {
    /// The system measured.
    pub target: TargetKind,
    /// Subscribers connected.
    pub subscribers: usize,
    /// Market messages received in the measured window.
    pub delivered: u64,
    /// Delivered per second.
    pub delivered_per_sec: f64,
    /// Expected per second: for tickcast, from the server's published
    /// count; for peers, from the ticks the publisher sent.
    pub expected_per_sec: f64,
    /// Ticks per second the bench's publisher sent in the window (null
    /// without --drive-feed).
    pub published_per_sec: Option<f64>,
    /// Seq gaps or repeats seen (must be 0).
    pub seq_errors: u64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
    /// Server CPU time per delivered message, ns (all its threads).
    pub server_cpu_ns_per_msg: f64,
    /// Server CPU use over the window, in cores.
    pub server_cpu_cores: f64,
    /// Server resident memory at the end, bytes.
    pub server_rss_bytes: f64,
    /// Where CPU time and RSS were read: "metrics" (`/metrics`) or "proc"
    /// (`/proc/PID/stat`).
    pub server_stats_from: &'static str,
    /// What latency is measured from: "ts_ingest" or "ts_event".
    pub latency_from: &'static str,
    /// `conflated` messages healthy subscribers received (each is also a
    /// seq error: a healthy subscriber must never fall behind).
    pub healthy_conflated: u64,
    /// Stalled subscribers (`--stalled`), connected and never read.
    pub stalled: usize,
    /// Rate-limited subscribers (`--slow-readers`).
    pub slow_readers: usize,
    /// Bytes per second each slow reader reads at most.
    pub slow_read_rate: u64,
    /// Bytes of frames the slow readers read over the whole run.
    pub slow_bytes: u64,
    /// Market messages (trade, quote, book) slow readers received.
    pub slow_market_msgs: u64,
    /// Snapshots slow readers received (first ones and recovery ones).
    pub slow_snapshots: u64,
    /// `conflated` messages slow readers received.
    pub slow_conflated_msgs: u64,
    /// Updates those `conflated` messages told them they missed
    /// (sum of `to_seq - from_seq + 1`).
    pub slow_skipped_updates: u64,
    /// Gaps slow readers saw that no `conflated` message announced, or
    /// recovery snapshots at the wrong seq (must be 0).
    pub slow_seq_errors: u64,
    /// Slow readers that read a 1008 close from the server before the run
    /// ended. The close frame waits behind whatever the server's kernel
    /// already holds for them, so `server_slow_disconnects` may be higher.
    pub slow_disconnected: usize,
    /// When each of those closes came, seconds since the bench started.
    pub slow_disconnect_at_s: Vec<f64>,
    /// Server's `tickcast_slow_disconnects_total`, delta over the run
    /// (this and the other ladder counters: tickcast only, null for peers).
    pub server_slow_disconnects: Option<f64>,
    /// Server's `tickcast_conflation_episodes_total`, delta over the run.
    pub server_conflation_episodes: Option<f64>,
    /// Server's `tickcast_conflated_messages_total`, delta over the run.
    pub server_conflated_msgs: Option<f64>,
    /// Server's `tickcast_skipped_updates_total{kind="trade"}`, delta over
    /// the run.
    pub server_skipped_trades: Option<f64>,
    /// Same, `{kind="quote"}`.
    pub server_skipped_quotes: Option<f64>,
    /// Same, `{kind="book"}`.
    pub server_skipped_books: Option<f64>,
    /// With `--rss-every`: `[seconds since the bench started, RSS bytes]`.
    pub rss_timeline: Vec<[f64; 2]>,
    /// With `--idle`: the idle-memory figures (the load figures are then 0).
    #[serde(flatten)]
    pub idle: Option<IdleFigures>,
    /// With `--snapshots`: the snapshot-storm figures.
    #[serde(flatten)]
    pub snapshots: Option<SnapshotFigures>,
    /// With `--resume`: the resume figures.
    #[serde(flatten)]
    pub resume: Option<ResumeFigures>,
}

/// What `--resume N` measures: one client coming back with `from_seq`
/// after missing N updates of one symbol. Times are from sending the
/// subscribe to the read that brought the message in.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ResumeFigures {
    /// The symbol resumed (the first of the server's `/symbols`).
    pub resume_symbol: String,
    /// N: updates published after the first client's last seq before the
    /// resuming client came back.
    pub resume_missed: u64,
    /// The seq the client resumed from (`from_seq`).
    pub resume_from_seq: u64,
    /// Updates after `from_seq` the watcher had seen when the subscribe
    /// was sent (at least N).
    pub resume_published_at_send: u64,
    /// Seconds to the ack (which said `recovered: true`).
    pub resume_ack_s: f64,
    /// Seconds to the N-th missed update, every one before it received in
    /// order.
    pub resume_nth_s: f64,
    /// Seconds to the first update ingested after the subscribe was sent.
    pub resume_live_s: f64,
    /// Updates received before that first live one: the N, those
    /// published before the subscribe reached the server, and those
    /// published during the catch-up.
    pub resume_before_live: u64,
    /// N / `resume_nth_s`.
    pub resume_updates_per_sec: f64,
    /// Payload bytes received up to the N-th missed update (the ack
    /// included; WebSocket headers are not).
    pub resume_bytes: u64,
}

/// What `--snapshots` measures: one `subscribe ["*"]` over the universe.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SnapshotFigures {
    /// Symbols in the universe, one snapshot each.
    pub snapshot_symbols: usize,
    /// Seconds from the subscribe to its ack.
    pub snapshot_ack_s: f64,
    /// Seconds from the subscribe to the first snapshot.
    pub snapshot_first_s: f64,
    /// Seconds from the subscribe to the last snapshot.
    pub snapshot_last_s: f64,
    /// Live updates of already-snapshotted symbols received meanwhile.
    pub snapshot_updates_interleaved: u64,
    /// `conflated` messages received meanwhile (the client fell behind
    /// the live updates).
    pub snapshot_conflated: u64,
    /// Server RSS before the subscriber connected, bytes.
    pub rss_before_bytes: f64,
    /// Highest server RSS sampled during the run, bytes.
    pub rss_peak_bytes: f64,
}

/// What `--idle` measures: the server's memory per idle subscriber, and
/// how fast they connected.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct IdleFigures {
    /// Subscribers connected and confirmed.
    pub idle_connections: usize,
    /// Loopback source addresses they came from (0: the system's choice).
    pub idle_sources: usize,
    /// Time from the first connect to the last confirmation, seconds.
    pub idle_connect_secs: f64,
    /// `idle_connections / idle_connect_secs`: connected and subscribed
    /// per second, at most 200 handshakes in flight.
    pub idle_connects_per_sec: f64,
    /// Server RSS before the bench connected, bytes.
    pub idle_rss_before_bytes: f64,
    /// Server RSS with every subscriber connected, after settling, bytes.
    pub idle_rss_after_bytes: f64,
    /// `(after - before) / idle_connections`, bytes.
    pub idle_rss_per_conn_bytes: f64,
    /// The kernel's memory for the machine's TCP sockets before, bytes
    /// (`/proc/net/sockstat`), where readable.
    pub kernel_tcp_before_bytes: Option<f64>,
    /// The same with every idle subscriber connected, bytes.
    pub kernel_tcp_after_bytes: Option<f64>,
    /// Its growth per connection, bytes: both ends over loopback.
    pub kernel_tcp_per_conn_bytes: Option<f64>,
}

impl BenchReport {
    /// Prints the report for people: what ran, then one line per figure.
    pub fn print(&self, args: &BenchArgs, target: &dyn Target) {
        let r = self;
        // tickcast's own runs are untagged, as they were before peers came.
        let tag = if r.target == TargetKind::Tickcast { String::new() } else { format!(" [{}]", r.target.name()) };
        if let Some(s) = &r.snapshots {
            let mib = |b: f64| b / (1024.0 * 1024.0);
            println!(
                "tickcast bench{tag}: snapshots, subscribe \"*\" over {} symbols at depth {}",
                s.snapshot_symbols, args.depth
            );
            println!(
                "  time        ack {:.3} s, first snapshot {:.3} s, last snapshot {:.3} s ({:.0} snapshots/s)",
                s.snapshot_ack_s,
                s.snapshot_first_s,
                s.snapshot_last_s,
                s.snapshot_symbols as f64 / s.snapshot_last_s.max(1e-9)
            );
            println!(
                "  updates     {} of snapshotted symbols interleaved, all in seq order; {} conflated messages",
                s.snapshot_updates_interleaved, s.snapshot_conflated
            );
            println!(
                "  server rss  before {:.1} MiB, peak {:.1} MiB  (from {})",
                mib(s.rss_before_bytes),
                mib(s.rss_peak_bytes),
                r.server_stats_from
            );
            return;
        }
        if let Some(s) = &r.resume {
            println!(
                "tickcast bench{tag}: resume of {} missed updates of {} at depth {}, {}",
                s.resume_missed,
                s.resume_symbol,
                args.depth,
                args.encoding.name()
            );
            println!(
                "  ack         {:.4} s, recovered (from seq {}; {} updates published when the subscribe was sent)",
                s.resume_ack_s, s.resume_from_seq, s.resume_published_at_send
            );
            println!(
                "  missed      the {}-th at {:.4} s: {:.0} updates/s, {} payload bytes ({:.0} per update), seqs gapless",
                s.resume_missed,
                s.resume_nth_s,
                s.resume_updates_per_sec,
                s.resume_bytes,
                s.resume_bytes as f64 / s.resume_missed.max(1) as f64
            );
            println!(
                "  live        first update ingested after the subscribe at {:.4} s, after {} from history",
                s.resume_live_s, s.resume_before_live
            );
            println!("  server rss  {:.1} MiB  (from {})", r.server_rss_bytes / (1024.0 * 1024.0), r.server_stats_from);
            return;
        }
        if let Some(idle) = &r.idle {
            let sources = match idle.idle_sources {
                0 => String::new(),
                n => format!(" from {n} source address{} from {}", if n == 1 { "" } else { "es" }, args.source_base),
            };
            println!(
                "tickcast bench{tag}: idle, {} connections x {} of {} symbols{sources}",
                idle.idle_connections, args.per_sub, args.symbols
            );
            println!(
                "  connect     {:.1} s: {:.0} connections/s subscribed and confirmed",
                idle.idle_connect_secs, idle.idle_connects_per_sec
            );
            println!(
                "  idle rss    before {:.1} MiB, after {:.1} MiB: {:.1} KiB per connection  (from {})",
                idle.idle_rss_before_bytes / (1024.0 * 1024.0),
                idle.idle_rss_after_bytes / (1024.0 * 1024.0),
                idle.idle_rss_per_conn_bytes / 1024.0,
                r.server_stats_from
            );
            if let (Some(before), Some(after), Some(per)) =
                (idle.kernel_tcp_before_bytes, idle.kernel_tcp_after_bytes, idle.kernel_tcp_per_conn_bytes)
            {
                println!(
                    "  kernel tcp  before {:.1} MiB, after {:.1} MiB: {:.2} KiB per connection, both ends  \
                     (/proc/net/sockstat)",
                    before / (1024.0 * 1024.0),
                    after / (1024.0 * 1024.0),
                    per / 1024.0
                );
            }
            if !args.with_load {
                return;
            }
            println!("  with the idle connections held:");
        }
        let mut extra = String::new();
        if r.stalled > 0 {
            extra += &format!(", + {} stalled", r.stalled);
        }
        if r.slow_readers > 0 {
            extra += &format!(", + {} slow readers at {} B/s", r.slow_readers, r.slow_read_rate);
        }
        let encoding = target.encoding(args.encoding).name();
        println!(
            "tickcast bench{tag}: {} subscribers x {} of {} symbols{extra}, {encoding}, {:?} measured",
            r.subscribers, args.per_sub, args.symbols, args.duration
        );
        println!(
            "  delivered   {:>12.0} msgs/s (expected ~{:.0}), seq errors {} (conflated {})",
            r.delivered_per_sec, r.expected_per_sec, r.seq_errors, r.healthy_conflated
        );
        if let Some(published) = r.published_per_sec {
            let format = match args.feed_format {
                crate::args::FeedFormat::Json => "",
                crate::args::FeedFormat::Binary => ", binary records",
            };
            println!("  publisher   {published:>12.0} ticks/s sent (asked {:.0}){format}", args.rate);
        }
        println!(
            "  latency     p50 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us  (receive - {})",
            r.p50_us, r.p99_us, r.p999_us, r.max_us, r.latency_from
        );
        println!(
            "  server      {:.3} us CPU per delivered msg ({:.2} cores), RSS {:.1} MiB  (from {})",
            r.server_cpu_ns_per_msg / 1000.0,
            r.server_cpu_cores,
            r.server_rss_bytes / (1024.0 * 1024.0),
            r.server_stats_from
        );
        if let (Some(episodes), Some(msgs), Some(trades), Some(quotes), Some(books), Some(disconnects)) = (
            r.server_conflation_episodes,
            r.server_conflated_msgs,
            r.server_skipped_trades,
            r.server_skipped_quotes,
            r.server_skipped_books,
            r.server_slow_disconnects,
        ) {
            println!(
                "  ladder      {episodes} conflation episodes, {msgs} conflated msgs, skipped {trades} trades {quotes} \
                 quotes {books} books, {disconnects} slow disconnects  (server, whole run)"
            );
        }
        if r.slow_readers > 0 {
            let at: Vec<String> = r.slow_disconnect_at_s.iter().map(|t| format!("{t:.1}s")).collect();
            println!(
                "  slow        {:.0} B/s read each; {} market msgs, {} snapshots, {} conflated msgs naming {} skipped \
                 updates, {} unannounced gaps; {} of {} read a 1008 close{}",
                r.slow_bytes as f64
                    / (args.warmup + args.duration).as_secs_f64().max(f64::EPSILON)
                    / r.slow_readers as f64,
                r.slow_market_msgs,
                r.slow_snapshots,
                r.slow_conflated_msgs,
                r.slow_skipped_updates,
                r.slow_seq_errors,
                r.slow_disconnected,
                r.slow_readers,
                if at.is_empty() { String::new() } else { format!(" (at {})", at.join(", ")) }
            );
        }
        for [t, bytes] in &r.rss_timeline {
            println!("  rss t={t:.1}s {:.1} MiB", bytes / (1024.0 * 1024.0));
        }
    }
}

//! `tickcast-client`: a command-line client for operators. Subscribes
//! through a [`Session`] (so it reconnects on its own) and prints one line
//! per update, each message as JSON, a live book ladder, or per-second
//! stats.
//!
//! Exit codes: 0 when `--count` or `--duration` is reached (or the session
//! ends), 2 for bad flags or a URL that is not `ws://HOST:PORT`. An
//! unreachable server is retried with backoff, each failed attempt on
//! stderr.

#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tickcast::model::{now_ns, Side};
use tickcast::wire::{Encoding, ServerMessage};
use tickcast_client::session::{Session, SessionConfig, SessionEvent};
use tickcast_client::ClientBook;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(name = "tickcast-client", about = "Subscribe to a tickcast server and print what it sends")]
struct Args {
    /// The server: ws://HOST:PORT (a trailing /ws is accepted).
    url: String,
    /// Symbols to subscribe to, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    subscribe: Vec<String>,
    /// Wire encoding.
    #[arg(long, value_enum, default_value_t = EncodingArg::Msgpack)]
    encoding: EncodingArg,
    /// Book levels per side: 1, 5, 10, 20, 25, 50, 100, 500, 1000 or full.
    #[arg(long, default_value = "10", value_parser = parse_depth)]
    depth: String,
    /// Output format of updates.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Draw this symbol's book as a ladder instead of printing updates.
    #[arg(long)]
    book: Option<String>,
    /// Print one line of stats a second instead of printing updates.
    #[arg(long)]
    stats: bool,
    /// Stop after this many market messages (and snapshots).
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (e.g. 10s, 1m).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Reconnect backoff base.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    backoff_base: Duration,
    /// Reconnect backoff cap.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    backoff_cap: Duration,
    /// No frame (data or server ping) for this long: reconnect. Twice the
    /// server's default --ping-interval (15 s), so a quiet stream is not
    /// mistaken for a dead one.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    heartbeat_timeout: Duration,
}

/// `--encoding` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum EncodingArg {
    Msgpack,
    Json,
    Protobuf,
}

/// `--format` values.
#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn parse_depth(s: &str) -> Result<String, String> {
    match s.parse::<usize>() {
        Ok(n) if tickcast::model::DEPTHS.contains(&n) => Ok(s.to_owned()),
        _ if s == "full" => Ok(s.to_owned()),
        _ => Err(format!("depth {s:?} is not offered: use one of {:?} or full", tickcast::model::DEPTHS)),
    }
}

/// `HOST:PORT` out of `ws://HOST:PORT[/ws]`.
fn host_port(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| format!("{url:?}: expected ws://HOST:PORT"))?;
    let hp = rest.strip_suffix("/ws").unwrap_or(rest).trim_end_matches('/');
    match hp.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(hp.to_owned()),
        _ => Err(format!("{url:?}: expected ws://HOST:PORT")),
    }
}

fn main() {
    let args = Args::parse();
    let addr = match host_port(&args.url) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tickcast-client: {e}");
            std::process::exit(2);
        }
    };
    if args.subscribe.iter().any(|s| s.is_empty()) {
        eprintln!("tickcast-client: --subscribe: empty symbol name");
        std::process::exit(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tickcast-client: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(args, addr));
    std::process::exit(code);
}

/// Per-second counters for `--stats`.
#[derive(Default)]
struct Stats {
    msgs: u64,
    announced_gaps: u64,
    gaps: u64,
    resets: u64,
    reconnects: u64,
    mismatches: u64,
}

async fn run(args: Args, addr: String) -> i32 {
    let mut config = SessionConfig::new(addr, args.subscribe.clone());
    config.encoding = match args.encoding {
        EncodingArg::Msgpack => Encoding::Msgpack,
        EncodingArg::Json => Encoding::Json,
        EncodingArg::Protobuf => Encoding::Protobuf,
    };
    config.depth = args.depth.clone();
    config.backoff_base = args.backoff_base;
    config.backoff_cap = args.backoff_cap.max(args.backoff_base);
    config.heartbeat_timeout = args.heartbeat_timeout;
    let mut session = Session::start(config);

    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let tty = std::io::stdout().is_terminal();
    let redraw = if tty { Duration::from_millis(100) } else { Duration::from_secs(1) };
    let mut ladder_tick = tokio::time::interval(redraw);
    let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
    stats_tick.tick().await;
    let mut stats = Stats::default();
    let mut lag = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).ok();
    let mut connected_once = false;
    let mut seen: u64 = 0;
    let mut stdout = std::io::stdout().lock();
    let quiet = args.book.is_some() || args.stats;

    loop {
        let event = tokio::select! {
            ev = session.next_event() => match ev { Some(ev) => ev, None => return 0 },
            _ = sleep_until(deadline) => return 0,
            _ = stats_tick.tick(), if args.stats => {
                let (p50, p99) = lag.as_ref().filter(|h| !h.is_empty())
                    .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99)))
                    .unwrap_or((0, 0));
                let line = format!(
                    "msgs/s {} gaps {} (announced {}, unannounced {}) resets {} reconnects {} checksum_mismatches {} lag_ms p50 {:.3} p99 {:.3}",
                    stats.msgs, stats.announced_gaps + stats.gaps, stats.announced_gaps, stats.gaps,
                    stats.resets, stats.reconnects, stats.mismatches,
                    p50 as f64 / 1e6, p99 as f64 / 1e6,
                );
                if writeln!(stdout, "{line}").and_then(|_| stdout.flush()).is_err() { return 0; }
                stats.msgs = 0;
                if let Some(h) = lag.as_mut() { h.reset(); }
                continue;
            }
            _ = ladder_tick.tick(), if args.book.is_some() => {
                let sym = args.book.as_deref().unwrap_or_default();
                let text = ladder(sym, session.book(sym).as_ref(), tty);
                if write!(stdout, "{text}").and_then(|_| stdout.flush()).is_err() { return 0; }
                continue;
            }
        };
        match event {
            SessionEvent::Connected => {
                if connected_once {
                    stats.reconnects += 1;
                }
                connected_once = true;
                eprintln!("tickcast-client: connected");
            }
            SessionEvent::Disconnected { reason, retry_in } => {
                eprintln!("tickcast-client: {reason}; retrying in {retry_in:.1?}");
            }
            SessionEvent::Gap { sym, expected, got } => {
                stats.gaps += 1;
                eprintln!("tickcast-client: gap in {sym}: expected seq {expected}, got {got}; resubscribing");
            }
            SessionEvent::BookChecksumMismatch { sym } => {
                stats.mismatches += 1;
                eprintln!("tickcast-client: book checksum mismatch for {sym}; resubscribing");
            }
            SessionEvent::Message(msg) => {
                match &msg {
                    ServerMessage::Ack { op, symbols, .. } => {
                        eprintln!("tickcast-client: {op} {}", symbols.join(","));
                        continue;
                    }
                    ServerMessage::Error { code, message, .. } => {
                        eprintln!("tickcast-client: server error {code}: {message}");
                        continue;
                    }
                    ServerMessage::Conflated { symbols } => stats.announced_gaps += symbols.len() as u64,
                    ServerMessage::Reset { .. } => stats.resets += 1,
                    _ => {}
                }
                stats.msgs += 1;
                if let (Some(h), Some(ts)) = (lag.as_mut(), msg.ts_ingest().filter(|&t| t > 0)) {
                    let _ = h.record(now_ns().saturating_sub(ts).max(1));
                }
                if !quiet {
                    let line = match args.format {
                        Format::Json => serde_json::to_string(&msg).unwrap_or_default(),
                        Format::Text => text_line(&msg),
                    };
                    if writeln!(stdout, "{line}").is_err() {
                        return 0;
                    }
                }
                if msg.sym_seq().is_some() {
                    seen += 1;
                    if args.count.is_some_and(|n| seen >= n) {
                        let _ = stdout.flush();
                        return 0;
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn side(s: Side) -> &'static str {
    match s {
        Side::Buy => "buy",
        Side::Sell => "sell",
        Side::Unknown => "unknown",
    }
}

fn levels(l: &[tickcast::model::Level]) -> String {
    l.iter().map(|l| format!("{}x{}", l.px, l.sz)).collect::<Vec<_>>().join(",")
}

/// One human line per message: `AAPL 1234 trade 189.5 x 100 buy`.
fn text_line(msg: &ServerMessage<'_>) -> String {
    match msg {
        ServerMessage::Trade { sym, seq, px, sz, side: s, .. } => format!("{sym} {seq} trade {px} x {sz} {}", side(*s)),
        ServerMessage::Quote { sym, seq, bid, bid_sz, ask, ask_sz, .. } => {
            format!("{sym} {seq} quote {bid} x {bid_sz} / {ask} x {ask_sz}")
        }
        ServerMessage::Book { sym, seq, bids, asks, checksum, .. } => {
            format!("{sym} {seq} book bids [{}] asks [{}] checksum {checksum}", levels(bids), levels(asks))
        }
        ServerMessage::Snapshot { sym, seq, depth, book, .. } => {
            format!("{sym} {seq} snapshot depth {depth} bids {} asks {}", book.bids.len(), book.asks.len())
        }
        ServerMessage::Conflated { symbols } => {
            let parts: Vec<String> =
                symbols.iter().map(|s| format!("{} {}..={}", s.sym, s.from_seq, s.to_seq)).collect();
            format!("conflated {}", parts.join(", "))
        }
        ServerMessage::Reset { sym, seq, reason } => format!("{sym} {seq} reset {}", reason.name()),
        other => serde_json::to_string(other).unwrap_or_else(|_| other.kind().to_owned()),
    }
}

/// The ladder of `sym`: asks above (best at the bottom), bids below, each
/// with a size bar scaled to the largest size shown. On a TTY it clears
/// the screen first.
fn ladder(sym: &str, book: Option<&ClientBook>, tty: bool) -> String {
    let mut out = String::new();
    if tty {
        out.push_str("\x1b[2J\x1b[H");
    }
    let Some(book) = book else {
        out.push_str(&format!("{sym}: no book yet\n"));
        return out;
    };
    const WIDTH: f64 = 40.0;
    let max = book.bids().iter().chain(book.asks()).map(|l| l.sz).fold(0.0f64, f64::max);
    let bar = |sz: f64| {
        let n = if max > 0.0 && sz.is_finite() { ((sz / max) * WIDTH).round().clamp(0.0, WIDTH) as usize } else { 0 };
        "#".repeat(n)
    };
    out.push_str(&format!("{sym} depth {} checksum {}\n", book.depth(), book.checksum()));
    for l in book.asks().iter().rev() {
        out.push_str(&format!("  ask {:>14} {:>14} {}\n", l.px, l.sz, bar(l.sz)));
    }
    out.push_str("  ----\n");
    for l in book.bids() {
        out.push_str(&format!("  bid {:>14} {:>14} {}\n", l.px, l.sz, bar(l.sz)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_depths_are_checked() {
        assert_eq!(host_port("ws://127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(host_port("ws://example.com:80/ws").unwrap(), "example.com:80");
        assert!(host_port("http://x:1").is_err());
        assert!(host_port("ws://x").is_err());
        assert!(host_port("ws://:80").is_err());
        assert!(parse_depth("10").is_ok() && parse_depth("full").is_ok());
        assert!(parse_depth("7").is_err() && parse_depth("").is_err());
    }
}

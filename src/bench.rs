//! `tickcast bench`: the load generator.
//!
//! In: a running server (and optionally its tcp feed). Out: a report of
//! delivered msgs/s, end-to-end latency percentiles (hdrhistogram), seq
//! gaps, and the server's CPU time per delivered message and RSS (scraped
//! from its `/metrics`).
//!
//! N subscribers each take K consecutive symbols of the first S (wrapping),
//! so every symbol has N·K/S subscribers. Latency is receive time minus
//! `ts_ingest`, or minus `ts_event` with `--drive-feed`, where the bench
//! itself publishes JSON ticks into the server's tcp feed, stamped at send.
//! Every run is bounded by `--warmup` + `--duration` and stops by itself.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::client::{http_get, Client};
use crate::codec::Encoding;
use crate::metrics::scrape_value;
use crate::tick::now_ns;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn encoding(s: &str) -> Result<Encoding, String> {
    Encoding::from_name(s).ok_or_else(|| format!("unknown encoding {s:?}: use msgpack, protobuf or json"))
}

/// Flags of `tickcast bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Server address (HTTP and WebSocket).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub server: SocketAddr,
    /// Number of subscribers (WebSocket connections).
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Symbols per subscriber (K).
    #[arg(long, default_value_t = 5)]
    pub per_sub: usize,
    /// Symbols in play (S): the first S of the server's `/symbols`.
    #[arg(long, default_value_t = 50)]
    pub symbols: usize,
    /// Encoding the subscribers ask for.
    #[arg(long, default_value = "msgpack", value_parser = encoding)]
    pub encoding: Encoding,
    /// Time to connect and settle before measuring.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub warmup: Duration,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// Publish ticks into the server's tcp feed at this address (the server
    /// must run with `--feed tcp://ADDR`); latency is then measured from
    /// the send time stamped into `ts_event`.
    #[arg(long)]
    pub drive_feed: Option<SocketAddr>,
    /// With --drive-feed: ticks per second over the S symbols.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Also print the summary as one JSON line (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Subscribers connected.
    pub subscribers: usize,
    /// Market messages received in the measured window.
    pub delivered: u64,
    /// Delivered per second.
    pub delivered_per_sec: f64,
    /// Expected per second, from the server's published count.
    pub expected_per_sec: f64,
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
    /// What latency is measured from: "ts_ingest" or "ts_event".
    pub latency_from: &'static str,
}

/// Fields the bench reads from each message; the rest is skipped.
#[derive(Deserialize)]
struct Light<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    sym: Cow<'a, str>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    ts_event: u64,
    #[serde(default)]
    ts_ingest: u64,
}

struct Shared {
    measuring: AtomicBool,
    stop: AtomicBool,
    delivered: AtomicU64,
    seq_errors: AtomicU64,
    connected: AtomicU64,
    histogram: Mutex<Histogram<u64>>,
    from_event: bool,
}

/// Runs the bench and prints the report.
pub fn main(args: BenchArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tickcast bench: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.clone())) {
        Ok(report) => {
            print_report(&args, &report);
            if args.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickcast bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn print_report(args: &BenchArgs, r: &BenchReport) {
    println!(
        "tickcast bench: {} subscribers x {} of {} symbols, {}, {:?} measured",
        r.subscribers,
        args.per_sub,
        args.symbols,
        args.encoding.name(),
        args.duration
    );
    println!(
        "  delivered   {:>12.0} msgs/s (expected ~{:.0}), seq errors {}",
        r.delivered_per_sec, r.expected_per_sec, r.seq_errors
    );
    println!(
        "  latency     p50 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us  (receive - {})",
        r.p50_us, r.p99_us, r.p999_us, r.max_us, r.latency_from
    );
    println!(
        "  server      {:.3} us CPU per delivered msg ({:.2} cores), RSS {:.1} MiB",
        r.server_cpu_ns_per_msg / 1000.0,
        r.server_cpu_cores,
        r.server_rss_bytes / (1024.0 * 1024.0)
    );
}

/// Runs one bench against a server; the library entry point for scripts.
pub async fn run(args: BenchArgs) -> Result<BenchReport, String> {
    if args.subscribers == 0 || args.per_sub == 0 || args.symbols == 0 {
        return Err("--subscribers, --per-sub and --symbols must be at least 1".into());
    }
    let shared = Arc::new(Shared {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        delivered: AtomicU64::new(0),
        seq_errors: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?),
        from_event: args.drive_feed.is_some(),
    });

    let mut driver = None;
    let names: Vec<String> = if let Some(feed) = args.drive_feed {
        let names: Vec<String> = (0..args.symbols).map(crate::feed::synthetic::ticker).collect();
        driver = Some(tokio::spawn(drive_feed(feed, names.clone(), args.rate, shared.clone())));
        // Wait until the server knows every symbol.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let known = fetch_symbols(args.server).await?;
            if names.iter().all(|n| known.contains(n)) {
                break;
            }
            if Instant::now() > deadline {
                return Err(
                    "the server did not learn the driven symbols within 10s: is --drive-feed its tcp feed?".into()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        names
    } else {
        let mut known = fetch_symbols(args.server).await?;
        if known.len() < args.symbols {
            return Err(format!("the server has {} symbols, fewer than --symbols {}", known.len(), args.symbols));
        }
        known.truncate(args.symbols);
        known
    };

    let mut tasks = Vec::with_capacity(args.subscribers);
    for i in 0..args.subscribers {
        let symbols: Vec<String> =
            (0..args.per_sub).map(|j| names[(i * args.per_sub + j) % names.len()].clone()).collect();
        tasks.push(tokio::spawn(subscriber(args.server, args.encoding, symbols, shared.clone())));
        if i % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }

    tokio::time::sleep(args.warmup).await;
    let connected = shared.connected.load(Ordering::Relaxed) as usize;
    if connected < args.subscribers {
        shared.stop.store(true, Ordering::Relaxed);
        return Err(format!("only {connected} of {} subscribers connected during warm-up", args.subscribers));
    }
    let before = scrape(args.server).await?;
    let started = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.duration).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let after = scrape(args.server).await?;
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(d) = driver {
        d.abort();
    }
    for t in tasks {
        t.abort();
    }

    let delivered = shared.delivered.load(Ordering::Relaxed);
    let hist = shared.histogram.lock();
    let cpu = after.cpu - before.cpu;
    let known_symbols = after.symbols.max(1.0);
    let published_per_sec = (after.published - before.published) / elapsed;
    // Each update of a symbol goes to its N·K/S subscribers; symbols outside
    // the S in play (synthetic feeds have more) receive none of ours.
    let share = (args.symbols as f64 / known_symbols).min(1.0);
    let fanout = (args.subscribers * args.per_sub) as f64 / args.symbols as f64;
    Ok(BenchReport {
        subscribers: args.subscribers,
        delivered,
        delivered_per_sec: delivered as f64 / elapsed,
        expected_per_sec: published_per_sec * share * fanout,
        seq_errors: shared.seq_errors.load(Ordering::Relaxed),
        p50_us: hist.value_at_quantile(0.50) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        p999_us: hist.value_at_quantile(0.999) as f64,
        max_us: hist.max() as f64,
        server_cpu_ns_per_msg: if delivered > 0 { cpu * 1e9 / delivered as f64 } else { 0.0 },
        server_cpu_cores: cpu / elapsed,
        server_rss_bytes: after.rss,
        latency_from: if shared.from_event { "ts_event" } else { "ts_ingest" },
    })
}

struct Scrape {
    cpu: f64,
    rss: f64,
    published: f64,
    symbols: f64,
}

async fn scrape(server: SocketAddr) -> Result<Scrape, String> {
    let (status, body) = http_get(server, "/metrics").await.map_err(|e| format!("GET /metrics: {e}"))?;
    if status != 200 {
        return Err(format!("GET /metrics: HTTP {status}"));
    }
    let get = |name| scrape_value(&body, name).ok_or_else(|| format!("/metrics lacks {name}"));
    Ok(Scrape {
        cpu: get("process_cpu_seconds_total")?,
        rss: get("process_resident_memory_bytes")?,
        published: get("tickcast_updates_published_total")?,
        symbols: get("tickcast_symbols")?,
    })
}

async fn fetch_symbols(server: SocketAddr) -> Result<Vec<String>, String> {
    let (status, body) = http_get(server, "/symbols").await.map_err(|e| format!("GET /symbols: {e}"))?;
    if status != 200 {
        return Err(format!("GET /symbols: HTTP {status}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET /symbols: {e}"))
}

async fn subscriber(server: SocketAddr, encoding: Encoding, symbols: Vec<String>, shared: Arc<Shared>) {
    let mut client = match Client::connect(server, encoding).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("subscriber: connect failed: {e}");
            return;
        }
    };
    let refs: Vec<&str> = symbols.iter().map(String::as_str).collect();
    if client.subscribe(&refs).await.is_err() {
        return;
    }
    shared.connected.fetch_add(1, Ordering::Relaxed);
    // A subscriber has a handful of symbols: a linear scan beats hashing.
    let mut last_seq: Vec<(String, u64)> = Vec::with_capacity(symbols.len());
    let mut pending: Vec<u64> = Vec::with_capacity(1024);
    let mut delivered = 0u64;
    let ws = client.raw();
    while !shared.stop.load(Ordering::Relaxed) {
        // Decode straight from the frame buffer: no copy per message.
        let frame = match ws.read_frame().await {
            Ok(f) => f,
            Err(_) => break,
        };
        match frame.opcode {
            fastwebsockets::OpCode::Text | fastwebsockets::OpCode::Binary => {}
            fastwebsockets::OpCode::Close => break,
            _ => continue,
        }
        let now = now_ns();
        let light: Light<'_> = match decode_light(encoding, &frame.payload) {
            Some(l) => l,
            None => continue,
        };
        let is_update = matches!(&*light.kind, "trade" | "quote" | "book");
        if !is_update && light.kind != "snapshot" {
            continue;
        }
        match last_seq.iter_mut().find(|(s, _)| *s == *light.sym).map(|(_, q)| q) {
            Some(prev) => {
                if is_update && light.seq != *prev + 1 {
                    shared.seq_errors.fetch_add(1, Ordering::Relaxed);
                }
                *prev = light.seq;
            }
            None => {
                last_seq.push((light.sym.into_owned(), light.seq));
            }
        }
        if is_update && shared.measuring.load(Ordering::Relaxed) {
            let from = if shared.from_event { light.ts_event } else { light.ts_ingest };
            pending.push(now.saturating_sub(from) / 1000);
            delivered += 1;
            if pending.len() == pending.capacity() {
                flush(&shared, &mut pending, &mut delivered);
            }
        } else if !pending.is_empty() {
            flush(&shared, &mut pending, &mut delivered);
        }
    }
    flush(&shared, &mut pending, &mut delivered);
}

fn flush(shared: &Shared, pending: &mut Vec<u64>, delivered: &mut u64) {
    let mut h = shared.histogram.lock();
    for &v in pending.iter() {
        h.saturating_record(v.max(1));
    }
    drop(h);
    pending.clear();
    shared.delivered.fetch_add(std::mem::take(delivered), Ordering::Relaxed);
}

fn decode_light(encoding: Encoding, payload: &[u8]) -> Option<Light<'_>> {
    match encoding {
        Encoding::Msgpack => msgpack_light(payload),
        Encoding::Json => json_light(payload).or_else(|| serde_json::from_slice(payload).ok()),
        Encoding::Protobuf => protobuf_light(payload),
    }
}

/// Reads the leading fields of a market message as the server writes them
/// (`{"type":..,"sym":..,"seq":..,"ts_event":..,"ts_ingest":..`); any
/// other shape returns `None` and is parsed in full by the caller.
fn json_light(buf: &[u8]) -> Option<Light<'_>> {
    fn string<'a>(buf: &'a [u8], prefix: &[u8]) -> Option<(&'a str, &'a [u8])> {
        let rest = buf.strip_prefix(prefix)?;
        let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
        (rest[end] == b'"').then_some(())?;
        Some((ascii(&rest[..end])?, &rest[end + 1..]))
    }
    fn number<'a>(buf: &'a [u8], prefix: &[u8]) -> Option<(u64, &'a [u8])> {
        let rest = buf.strip_prefix(prefix)?;
        let end = rest.iter().position(|b| !b.is_ascii_digit())?;
        let mut n: u64 = 0;
        for &d in &rest[..end] {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        Some((n, &rest[end..]))
    }
    let (kind, rest) = string(buf, br#"{"type":""#)?;
    let (sym, rest) = string(rest, br#","sym":""#)?;
    let (seq, rest) = number(rest, br#","seq":"#)?;
    let (ts_event, rest) = number(rest, br#","ts_event":"#)?;
    let (ts_ingest, _) = number(rest, br#","ts_ingest":"#)?;
    Some(Light { kind: Cow::Borrowed(kind), sym: Cow::Borrowed(sym), seq, ts_event, ts_ingest })
}

/// Reads fields 1-5 of a `ServerMessage` (type, sym, seq, ts_event,
/// ts_ingest) and stops at the body, without allocating.
fn protobuf_light(mut buf: &[u8]) -> Option<Light<'_>> {
    use prost::encoding::{decode_varint, WireType};
    let mut light = Light { kind: Cow::Borrowed(""), sym: Cow::Borrowed(""), seq: 0, ts_event: 0, ts_ingest: 0 };
    while !buf.is_empty() {
        let key = decode_varint(&mut buf).ok()?;
        let (tag, wire) = (key >> 3, WireType::try_from(key & 7).ok()?);
        match (tag, wire) {
            (1 | 2, WireType::LengthDelimited) => {
                let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
                let text = ascii(buf.get(..len)?)?;
                buf = &buf[len..];
                if tag == 1 {
                    light.kind = Cow::Borrowed(text);
                } else {
                    light.sym = Cow::Borrowed(text);
                }
            }
            (3, WireType::Varint) => light.seq = decode_varint(&mut buf).ok()?,
            (4, WireType::Varint) => light.ts_event = decode_varint(&mut buf).ok()?,
            (5, WireType::Varint) => light.ts_ingest = decode_varint(&mut buf).ok()?,
            // The body follows the envelope fields: nothing more to read.
            _ => break,
        }
    }
    Some(light)
}

async fn drive_feed(feed: SocketAddr, names: Vec<String>, rate: f64, shared: Arc<Shared>) {
    let mut stream = match tokio::net::TcpStream::connect(feed).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("drive-feed: cannot connect to {feed}: {e}");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut px: Vec<i64> = (0..names.len()).map(|i| 10_000 + 100 * i as i64).collect();
    // Announce every symbol first.
    for (i, name) in names.iter().enumerate() {
        line(&mut buf, name, px[i]);
    }
    if stream.write_all(&buf).await.is_err() {
        return;
    }
    let start = Instant::now();
    let mut sent = 0u64;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !shared.stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        buf.clear();
        while sent < due {
            let i = rng.usize(0..names.len());
            px[i] += rng.i64(-1..=1);
            line(&mut buf, &names[i], px[i]);
            sent += 1;
        }
        if !buf.is_empty() && stream.write_all(&buf).await.is_err() {
            return;
        }
    }
}

fn line(buf: &mut Vec<u8>, sym: &str, cents: i64) {
    use std::io::Write as _;
    let bid = cents as f64 / 100.0;
    let ask = (cents + 1) as f64 / 100.0;
    let _ = writeln!(
        buf,
        r#"{{"type":"quote","sym":"{sym}","bid":{bid},"bid_sz":100,"ask":{ask},"ask_sz":200,"ts_event":{}}}"#,
        now_ns()
    );
}

/// Reads the few fields the bench needs from a MessagePack map without
/// building the whole message (the load generator must outrun the server
/// on the same two cores). Strings are compared as bytes; values of other
/// keys are skipped by their markers.
fn msgpack_light(buf: &[u8]) -> Option<Light<'_>> {
    let mut r = MsgpackReader { buf, pos: 0 };
    let entries = r.map_len()?;
    let mut light = Light { kind: Cow::Borrowed(""), sym: Cow::Borrowed(""), seq: 0, ts_event: 0, ts_ingest: 0 };
    // The server writes these five keys first; stop once all are seen.
    let mut seen = 0u8;
    for _ in 0..entries {
        let key = r.str()?;
        let bit = match key {
            b"type" => {
                light.kind = Cow::Borrowed(ascii(r.str()?)?);
                1
            }
            b"sym" => {
                light.sym = Cow::Borrowed(ascii(r.str()?)?);
                2
            }
            b"seq" => {
                light.seq = r.uint()?;
                4
            }
            b"ts_event" => {
                light.ts_event = r.uint()?;
                8
            }
            b"ts_ingest" => {
                light.ts_ingest = r.uint()?;
                16
            }
            _ => {
                r.skip()?;
                0
            }
        };
        seen |= bit;
        if seen == 31 {
            break;
        }
    }
    Some(light)
}

/// Symbols and types are ASCII by protocol; checking that is cheaper than
/// full UTF-8 validation and just as safe.
fn ascii(bytes: &[u8]) -> Option<&str> {
    if bytes.is_ascii() {
        // ASCII is valid UTF-8.
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

struct MsgpackReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> MsgpackReader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(self.take(n)?.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn map_len(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x80..=0x8f => Some(u64::from(m & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    fn str(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => u64::from(m & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => return None,
        };
        self.take(len as usize)
    }

    fn uint(&mut self) -> Option<u64> {
        match self.byte()? {
            m @ 0x00..=0x7f => Some(u64::from(m)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            _ => None,
        }
    }

    /// Skips one value of any type.
    fn skip(&mut self) -> Option<()> {
        let m = self.byte()?;
        let (bytes, items): (u64, u64) = match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * u64::from(m & 0x0f)),
            0x90..=0x9f => (0, u64::from(m & 0x0f)),
            0xa0..=0xbf => (u64::from(m & 0x1f), 0),
            0xc4 | 0xd9 => (self.be(1)?, 0),
            0xc5 | 0xda => (self.be(2)?, 0),
            0xc6 | 0xdb => (self.be(4)?, 0),
            0xca => (4, 0),
            0xcb => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xce | 0xd2 => (4, 0),
            0xcf | 0xd3 => (8, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xc7 => (self.be(1)? + 1, 0),
            0xc8 => (self.be(2)? + 1, 0),
            0xc9 => (self.be(4)? + 1, 0),
            0xdc => (0, self.be(2)?),
            0xdd => (0, self.be(4)?),
            0xde => (0, 2 * self.be(2)?),
            0xdf => (0, 2 * self.be(4)?),
            0xc1 => return None,
        };
        self.take(bytes as usize)?;
        for _ in 0..items {
            self.skip()?;
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_payload, ServerMessage};
    use crate::tick::{BookDelta, Level, Side, Trade, Update};

    #[test]
    fn the_light_readers_agree_with_the_codec() {
        let updates = [
            Update::Trade(Trade { px: 1.5, sz: 2.0, side: Side::Buy }),
            Update::Book(BookDelta { bids: vec![Level { px: 1.0, sz: 0.0 }], asks: vec![Level { px: 2.0, sz: 3.0 }] }),
        ];
        for (i, u) in updates.iter().enumerate() {
            let seq = 1u64 << (8 * i + 7);
            let msg = ServerMessage::update("BTC-USDT", seq, u64::MAX - 1, 1_700_000_000_000_000_000, u);
            let mut buf = Vec::new();
            encode_payload(Encoding::Msgpack, &msg, &mut buf);
            for encoding in Encoding::ALL {
                let mut buf = Vec::new();
                encode_payload(encoding, &msg, &mut buf);
                let light = match encoding {
                    Encoding::Msgpack => msgpack_light(&buf),
                    Encoding::Json => json_light(&buf),
                    Encoding::Protobuf => protobuf_light(&buf),
                }
                .unwrap_or_else(|| panic!("{encoding:?} light reader failed"));
                assert_eq!(&*light.kind, u.kind().name(), "{encoding:?}");
                assert_eq!(&*light.sym, "BTC-USDT", "{encoding:?}");
                assert_eq!(
                    (light.seq, light.ts_event, light.ts_ingest),
                    (seq, u64::MAX - 1, 1_700_000_000_000_000_000),
                    "{encoding:?}"
                );
            }
        }
        assert!(msgpack_light(b"\x81").is_none());
    }
}

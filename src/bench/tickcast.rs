//! The tickcast target: subscribers speak tickcast's own protocol
//! (`/ws?encoding=...`), and the server's `/metrics` and `/symbols` give
//! the published count, the slow-consumer ladder counters and the symbols.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frames::FrameReader;
use super::light::decode_light;
use super::{small_buffer_stream, Shared, SlowStats, Tally};
use crate::client::{http_get, Client};
use crate::metrics::scrape_value;
use crate::wire::{decode, Encoding, ServerMessage};

/// Idle time a slow reader may make up for later: after a quiet spell it
/// reads at most this much time's worth of bytes in a burst.
const PACE_SLACK: Duration = Duration::from_millis(100);

/// A slow reader that is ahead of its rate by more than this sleeps; smaller
/// leads are carried over, so the timer's granularity does not matter.
const PACE_SLICE: Duration = Duration::from_millis(10);

/// How long the server may take to list symbols the bench just fed it.
const SYMBOLS_DEADLINE: Duration = Duration::from_secs(10);

/// What the bench reads from tickcast's `/metrics`.
pub(super) struct Scrape {
    pub(super) cpu: f64,
    pub(super) rss: f64,
    pub(super) published: f64,
    pub(super) symbols: f64,
    pub(super) slow_disconnects: f64,
    pub(super) conflation_episodes: f64,
    pub(super) conflated_msgs: f64,
    /// Skipped updates by kind: trade, quote, book.
    pub(super) skipped: [f64; 3],
}

/// Reads tickcast's counters from `/metrics`.
pub(super) async fn scrape(server: SocketAddr) -> Result<Scrape, String> {
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
        slow_disconnects: get("tickcast_slow_disconnects_total")?,
        conflation_episodes: get("tickcast_conflation_episodes_total")?,
        conflated_msgs: get("tickcast_conflated_messages_total")?,
        skipped: [
            get(r#"tickcast_skipped_updates_total{kind="trade"}"#)?,
            get(r#"tickcast_skipped_updates_total{kind="quote"}"#)?,
            get(r#"tickcast_skipped_updates_total{kind="book"}"#)?,
        ],
    })
}

/// The symbols a tickcast server carries, from `/symbols`.
pub(super) async fn fetch_symbols(server: SocketAddr) -> Result<Vec<String>, String> {
    let (status, body) = http_get(server, "/symbols").await.map_err(|e| format!("GET /symbols: {e}"))?;
    if status != 200 {
        return Err(format!("GET /symbols: HTTP {status}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET /symbols: {e}"))
}

/// A healthy tickcast subscriber: checks per-symbol seq continuity
/// (snapshots set the baseline; a `conflated` message is a seq error) and
/// records latency while the window is open.
pub(super) async fn subscriber(server: SocketAddr, encoding: Encoding, symbols: Vec<String>, shared: Arc<Shared>) {
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
    // Nothing has been read yet, so the framing can be handed over whole.
    let reader = FrameReader::new(client.into_inner());
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut tally = Tally::new(symbols.len());
    reader
        .run(&shared, |payload, now| {
            let Some(light) = decode_light(encoding, payload) else {
                return ControlFlow::Continue(None);
            };
            let is_update = matches!(&*light.kind, "trade" | "quote" | "book");
            if is_update {
                let from = if shared.from_event { light.ts_event } else { light.ts_ingest };
                tally.update(&shared, &light.sym, light.seq, from, now);
            } else if light.kind == "snapshot" {
                tally.baseline(&light.sym, light.seq);
            } else if light.kind == "conflated" {
                // A healthy subscriber must never fall behind; if it did,
                // the snapshots that follow would hide the gap from the
                // seq check.
                shared.healthy_conflated.fetch_add(1, Ordering::Relaxed);
                shared.seq_errors.fetch_add(1, Ordering::Relaxed);
            }
            ControlFlow::Continue(None)
        })
        .await;
    tally.flush(&shared);
}

/// Connects on a small-buffer socket and subscribes to every symbol.
async fn connect_all_symbols(server: SocketAddr, encoding: Encoding) -> Result<Client, String> {
    let stream = small_buffer_stream(server).await.map_err(|e| e.to_string())?;
    let path = format!("/ws?encoding={}", encoding.name());
    let mut client = Client::connect_stream(stream, server, &path, encoding).await.map_err(|e| e.to_string())?;
    client.subscribe(&["*"]).await.map_err(|e| e.to_string())?;
    Ok(client)
}

/// A subscriber to every symbol that never reads after subscribing. It
/// holds its connection until the run aborts it; the server may close its
/// side first (1008), which this end never looks at.
pub(super) async fn stalled(server: SocketAddr, encoding: Encoding, shared: Arc<Shared>) {
    super::hold_stalled("stalled subscriber", connect_all_symbols(server, encoding), shared).await
}

/// A subscriber to every symbol that reads at most `rate` bytes per second
/// and checks the slow-consumer contract: per symbol, `seq` goes up by 1
/// except across a `conflated` entry, which starts right after the last
/// seq received and is followed by a snapshot at its `to_seq`.
pub(super) async fn slow_reader(server: SocketAddr, encoding: Encoding, rate: u64, shared: Arc<Shared>) {
    let mut client = match connect_all_symbols(server, encoding).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("slow reader: {e}");
            return;
        }
    };
    let stats = &shared.slow;
    stats.connected.fetch_add(1, Ordering::Relaxed);
    // Per symbol: last seq received, and whether a recovery snapshot is due.
    let mut last: HashMap<String, (u64, bool)> = HashMap::new();
    let mut pace = Pacer::new(rate);
    while !shared.stop.load(Ordering::Relaxed) {
        let payload = match client.next_payload().await {
            Ok(Ok(p)) => p,
            Ok(Err((code, _))) => {
                if code == 1008 {
                    stats.disconnects.lock().push(shared.started.elapsed().as_secs_f64());
                }
                break;
            }
            Err(_) => break,
        };
        let bytes = frame_len(payload.len());
        stats.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(light) = decode_light(encoding, &payload) {
            let ok = match &*light.kind {
                "trade" | "quote" | "book" => {
                    stats.market.fetch_add(1, Ordering::Relaxed);
                    match last.get_mut(&*light.sym) {
                        Some((seq, false)) if light.seq == *seq + 1 => {
                            *seq = light.seq;
                            true
                        }
                        _ => false,
                    }
                }
                "snapshot" => {
                    stats.snapshots.fetch_add(1, Ordering::Relaxed);
                    match last.get_mut(&*light.sym) {
                        Some((seq, due)) => {
                            let ok = *due && light.seq == *seq;
                            *seq = light.seq;
                            *due = false;
                            ok
                        }
                        None => {
                            last.insert(light.sym.into_owned(), (light.seq, false));
                            true
                        }
                    }
                }
                "conflated" => {
                    stats.conflated.fetch_add(1, Ordering::Relaxed);
                    conflated(encoding, &payload, &mut last, stats)
                }
                _ => true,
            };
            if !ok {
                stats.seq_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        pace.consumed(bytes).await;
    }
}

/// Applies a `conflated` message to a slow reader's seq records; false if
/// an entry does not start right after the last seq received.
fn conflated(encoding: Encoding, payload: &[u8], last: &mut HashMap<String, (u64, bool)>, stats: &SlowStats) -> bool {
    let Ok(ServerMessage::Conflated { symbols }) = decode(encoding, payload) else { return false };
    let mut ok = true;
    for s in symbols {
        stats.skipped.fetch_add(s.to_seq.saturating_sub(s.from_seq).saturating_add(1), Ordering::Relaxed);
        match last.get_mut(&*s.sym) {
            Some((seq, due)) if !*due && s.from_seq == *seq + 1 && s.to_seq >= s.from_seq => {
                *seq = s.to_seq;
                *due = true;
            }
            _ => ok = false,
        }
    }
    ok
}

/// Bytes a server frame with this payload takes on the wire (unmasked).
fn frame_len(payload: usize) -> u64 {
    let header = match payload {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    };
    (payload as u64).saturating_add(header)
}

/// Keeps a reader at an average byte rate: after consuming bytes it sleeps
/// until the rate allows them, in slices of at least [`PACE_SLICE`], and
/// earns at most [`PACE_SLACK`] of credit while idle.
struct Pacer {
    rate: u64,
    /// When the bytes consumed so far are allowed at `rate`.
    due: Instant,
}

impl Pacer {
    fn new(rate: u64) -> Pacer {
        Pacer { rate: rate.max(1), due: Instant::now() }
    }

    async fn consumed(&mut self, bytes: u64) {
        let now = Instant::now();
        if let Some(floor) = now.checked_sub(PACE_SLACK) {
            self.due = self.due.max(floor);
        }
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.rate);
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.due = self.due.checked_add(wait).unwrap_or(self.due);
        if self.due > now + PACE_SLICE {
            tokio::time::sleep_until(self.due.into()).await;
        }
    }
}

/// Waits until the server's `/symbols` lists every one of `names` (the
/// bench just fed one tick of each into its tcp feed).
pub(super) async fn wait_for_symbols(server: SocketAddr, names: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + SYMBOLS_DEADLINE;
    loop {
        let known = fetch_symbols(server).await?;
        if names.iter().all(|n| known.contains(n)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the server did not learn the driven symbols within 10s: is --drive-feed its tcp feed?".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An idle subscriber for `--idle`: connected, subscribed to `symbols`,
/// and acknowledged by the server (its snapshots are left unread).
pub(super) async fn connect_idle(server: SocketAddr, encoding: Encoding, symbols: &[String]) -> Result<Client, String> {
    let mut client = Client::connect(server, encoding).await.map_err(|e| format!("connect: {e}"))?;
    let refs: Vec<&str> = symbols.iter().map(String::as_str).collect();
    client.subscribe(&refs).await.map_err(|e| format!("subscribe: {e}"))?;
    loop {
        match client.next_message().await.map_err(|e| format!("waiting for the ack: {e}"))? {
            ServerMessage::Ack { .. } => return Ok(client),
            ServerMessage::Error { code, message, .. } => return Err(format!("subscribe refused: {code}: {message}")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode_payload, Skipped};

    #[test]
    fn conflated_messages_are_read_and_checked() {
        let skipped = Skipped { sym: "AAPL".into(), from_seq: 3, to_seq: 9, trades: 1, quotes: 5, books: 1 };
        let msg = ServerMessage::Conflated { symbols: vec![skipped] };
        for encoding in Encoding::ALL {
            let mut buf = Vec::new();
            encode_payload(encoding, &msg, &mut buf);
            let light = decode_light(encoding, &buf).unwrap_or_else(|| panic!("{encoding:?} light reader failed"));
            assert_eq!(&*light.kind, "conflated", "{encoding:?}");
            let stats = SlowStats::default();
            let mut last = HashMap::from([("AAPL".to_owned(), (2, false))]);
            assert!(conflated(encoding, &buf, &mut last, &stats), "{encoding:?}");
            assert_eq!(stats.skipped.load(Ordering::Relaxed), 7, "{encoding:?}");
            assert_eq!(last["AAPL"], (9, true), "{encoding:?}");
            // Named again before its recovery snapshot: a broken promise.
            assert!(!conflated(encoding, &buf, &mut last, &stats), "{encoding:?}");
            assert!(!conflated(encoding, b"\x00garbage", &mut last, &stats), "{encoding:?}");
        }
    }

    #[test]
    fn frame_len_counts_the_header() {
        assert_eq!(frame_len(0), 2);
        assert_eq!(frame_len(125), 127);
        assert_eq!(frame_len(126), 130);
        assert_eq!(frame_len(70_000), 70_010);
    }
}

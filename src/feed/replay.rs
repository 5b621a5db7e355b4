//! The replay source: a recording played back as the server's live feed
//! (`--feed replay:PATH`).
//!
//! In: a recording in any format [`crate::recorded`] reads (tick log,
//! Binance capture, DBN). Out: the same normalized ticks a live source
//! would produce, pushed through the [`Publisher`] into the ring, so every
//! client sees a replay exactly as it would see the market live: through
//! the same engine, sequencing, snapshots and fan-out.
//!
//! # Pacing
//! A replay keeps the recording's own clock: the time each event reached
//! the recorder (`ts_recv`: the tick log's `ts_ingest`, a Binance
//! capture's local receive time, DBN's `ts_recv`). That clock follows file
//! order, while exchange event times need not (a Binance capture mixes the
//! exchange's trade times with local receive times, which differ by the
//! capture host's clock offset). With `--speed N` each event is published
//! at `start + (ts_recv - first_ts_recv) / N` on the monotonic clock, so
//! the recorded gaps between events are kept, scaled by N, and errors do
//! not accumulate. An event whose time has already passed (a feed behind
//! schedule, or times that go backwards) is published at once. If the
//! replay falls more than [`MAX_LAG`] behind (the ring was full for a long
//! time) the schedule restarts from the current event rather than
//! bursting to catch up. `--speed max` publishes as fast as the ring takes
//! ticks. Clients see each event's original `ts_event`.
//!
//! # Windows and loops
//! `--from` and `--to` select by event time (`ts_event`). Events before `--from` are not
//! published one by one: they are folded into each symbol's last quote and
//! book, which are published as one quote and one book update per symbol
//! just before the first event in the window, so a client's first snapshot
//! already shows the market as it stood at `--from`. (Trades before
//! `--from` are history, not state, and are not published.)
//!
//! With `--loop` the recording starts again after its end (or `--to`).
//! Before each new pass every book the replay built is emptied with one
//! book update of deletes per symbol, so clients' books never mix the end
//! of one pass with the start of the next. Seqs keep rising across passes.
//!
//! # Errors
//! A recording that cannot be opened, or turns out corrupt or truncated
//! part-way, is reported with its path and offset (log, and
//! `tickcast_feed_errors_total`); the ticks before the bad spot have been
//! published, the feed stops, and the server keeps serving. Gaps the
//! recording reveals (seq or update-id breaks) are logged, rate-limited.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{ErrorLog, FeedContext, FeedHandle, Publisher};
use crate::recorded::{self, Gap, Source};
use crate::tick::{BookDelta, Level, Quote, SymbolId, Update};
use crate::topic::Book;

/// How far behind schedule a paced replay may fall before its schedule
/// restarts from the current event.
pub const MAX_LAG: Duration = Duration::from_secs(1);

/// Longest burst a replay publishes before it closes it and opens the
/// next: at `--speed max` (one long burst otherwise) subscribers are then
/// written at least this often, counted in ticks, besides the engine's
/// own time bound.
const MAX_BURST: u64 = 512;

/// Longest single sleep, so shutdown is noticed promptly.
const SLEEP_STEP: Duration = Duration::from_millis(50);

/// How fast a recording is replayed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the pipeline takes it.
    Max,
    /// Recorded gaps divided by this factor (1 = real time).
    Times(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "max" {
            return Ok(Speed::Max);
        }
        let factor = s.strip_suffix('x').unwrap_or(s);
        match factor.parse::<f64>() {
            Ok(f) if f.is_finite() && (0.001..=1_000_000.0).contains(&f) => Ok(Speed::Times(f)),
            _ => Err(format!("speed {s:?}: expected \"max\" or a factor from 0.001 to 1000000 (e.g. 1, 10, 0.5)")),
        }
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Times(x) => write!(f, "{x}"),
        }
    }
}

/// Parses an event time: integer ns since the Unix epoch, or RFC 3339
/// (`2024-08-08T23:55:00Z`, fractions allowed).
pub fn parse_event_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(ns) = s.parse::<u64>() {
        return Ok(ns);
    }
    humantime::parse_rfc3339_weak(s)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .ok_or_else(|| format!("time {s:?}: expected ns since the Unix epoch or RFC 3339 (e.g. 2024-08-08T23:55:00Z)"))
}

/// Settings of `--feed replay:PATH`: the path comes from `--feed`, the
/// rest from `--speed`, `--loop`, `--from` and `--to`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplaySettings {
    /// The recording.
    pub path: PathBuf,
    /// `--speed`.
    pub speed: Speed,
    /// `--loop`.
    pub looped: bool,
    /// `--from`: first event time published, ns.
    pub from: Option<u64>,
    /// `--to`: last event time published, ns (inclusive).
    pub to: Option<u64>,
}

/// Wall-clock schedule of a paced replay.
pub struct Pacer {
    speed: Speed,
    /// (event time, instant) the schedule counts from.
    base: Option<(u64, Instant)>,
}

impl Pacer {
    /// A schedule that starts at the first event it is asked about.
    pub fn new(speed: Speed) -> Pacer {
        Pacer { speed, base: None }
    }

    /// Starts the schedule afresh at the next event (after a pause, a
    /// speed change, a seek, a new pass).
    pub fn rebase(&mut self) {
        self.base = None;
    }

    /// Changes the speed from the next event on.
    pub fn set_speed(&mut self, speed: Speed) {
        self.speed = speed;
        self.base = None;
    }

    /// The current speed.
    pub fn speed(&self) -> Speed {
        self.speed
    }

    /// When the event with time `ts_event` is due; `None` = now.
    pub fn due(&mut self, ts_event: u64, now: Instant) -> Option<Instant> {
        let Speed::Times(factor) = self.speed else { return None };
        let (base_ts, base_at) = *self.base.get_or_insert((ts_event, now));
        let offset_ns = ts_event.saturating_sub(base_ts) as f64 / factor;
        let due = base_at + Duration::from_nanos(offset_ns.min(u64::MAX as f64 / 2.0) as u64);
        if now > due + MAX_LAG {
            self.base = Some((ts_event, now));
            return None;
        }
        (due > now).then_some(due)
    }
}

/// Last quote and full book of one symbol, folded from events that are
/// not published one by one.
#[derive(Default)]
struct Folded {
    quote: Option<(u64, Quote)>,
    book: Book,
    book_ts: u64,
}

/// Starts the replay thread.
pub fn start(settings: ReplaySettings, ctx: FeedContext) -> std::io::Result<FeedHandle> {
    // Open once up front so a missing or unreadable file fails start-up
    // with a clear message instead of a silent feed.
    let source = recorded::open(&settings.path).map_err(|e| std::io::Error::other(e.to_string()))?;
    let thread = std::thread::Builder::new().name("feed-replay".into()).spawn(move || run(settings, source, ctx))?;
    Ok(FeedHandle { threads: vec![thread], local_addr: None })
}

fn run(settings: ReplaySettings, first: Box<dyn Source>, ctx: FeedContext) {
    let mut publisher = Publisher::new(ctx.clone());
    let mut errors = ErrorLog::new();
    let mut source = Some(first);
    let mut pass = 0u64;
    // Books published, per symbol: emptied before a new pass.
    let mut books: HashMap<SymbolId, Book> = HashMap::new();
    loop {
        pass += 1;
        let mut src = match source.take() {
            Some(s) => s,
            None => match recorded::open(&settings.path) {
                Ok(s) => s,
                Err(e) => {
                    errors.report(&ctx.metrics, "replay", &e);
                    tracing::error!("replay feed stopped: {e}");
                    return;
                }
            },
        };
        let started = Instant::now();
        match play(&settings, src.as_mut(), &mut publisher, &mut errors, &mut books) {
            Ok(Some(n)) => {
                tracing::info!(
                    pass,
                    ticks = n,
                    secs = started.elapsed().as_secs_f64(),
                    path = %settings.path.display(),
                    "replay pass finished"
                );
            }
            Ok(None) => return, // shutting down
            Err(e) => {
                errors.report(&ctx.metrics, "replay", &e);
                tracing::error!("replay feed stopped: {e} (everything before it was published)");
                return;
            }
        }
        if !settings.looped {
            return;
        }
        for (symbol, book) in books.drain() {
            let delta = BookDelta {
                bids: book.bids(usize::MAX).iter().map(|l| Level { px: l.px, sz: 0.0 }).collect(),
                asks: book.asks(usize::MAX).iter().map(|l| Level { px: l.px, sz: 0.0 }).collect(),
            };
            if !(delta.bids.is_empty() && delta.asks.is_empty())
                && publisher.publish(symbol, crate::tick::now_ns(), Update::Book(delta)).is_err()
            {
                return;
            }
        }
    }
}

/// One pass over the recording. `Ok(Some(ticks))` at its end, `Ok(None)`
/// when the server is shutting down.
fn play(
    settings: &ReplaySettings,
    src: &mut dyn Source,
    publisher: &mut Publisher,
    errors: &mut ErrorLog,
    books: &mut HashMap<SymbolId, Book>,
) -> Result<Option<u64>, recorded::SourceError> {
    let ctx = publisher.context().clone();
    let mut pacer = Pacer::new(settings.speed);
    let mut ids: Vec<Option<SymbolId>> = Vec::new();
    let mut folded: HashMap<u32, Folded> = HashMap::new();
    let mut gaps: Vec<Gap> = Vec::new();
    let mut published = 0u64;
    let mut since_check = 0u32;
    while let Some(ev) = src.next_event()? {
        since_check += 1;
        if since_check >= 1024 {
            since_check = 0;
            if ctx.stopping() {
                return Ok(None);
            }
            report_gaps(src, &mut gaps, &ctx, errors);
        }
        if settings.from.is_some_and(|from| ev.ts_event < from) {
            let f = folded.entry(ev.sym).or_default();
            match &ev.update {
                Update::Quote(q) => f.quote = Some((ev.ts_event, *q)),
                Update::Book(delta) => {
                    f.book.apply(delta);
                    f.book_ts = ev.ts_event;
                }
                Update::Trade(_) => {}
            }
            continue;
        }
        if settings.to.is_some_and(|to| ev.ts_event > to) {
            break;
        }
        if !folded.is_empty() {
            for (sym, f) in std::mem::take(&mut folded) {
                let Some(symbol) = intern(src, sym, &mut ids, publisher, errors) else { continue };
                if let Some((ts, q)) = f.quote {
                    if publisher.publish(symbol, ts, Update::Quote(q)).is_err() {
                        return Ok(None);
                    }
                }
                let delta =
                    BookDelta { bids: f.book.bids(usize::MAX).to_vec(), asks: f.book.asks(usize::MAX).to_vec() };
                if !(delta.bids.is_empty() && delta.asks.is_empty()) {
                    if settings.looped {
                        books.entry(symbol).or_default().apply(&delta);
                    }
                    if publisher.publish(symbol, f.book_ts, Update::Book(delta)).is_err() {
                        return Ok(None);
                    }
                }
            }
        }
        if let Some(due) = pacer.due(ev.ts_recv, Instant::now()) {
            // What was due before this wait is one burst.
            publisher.end_burst();
            if !sleep_until(due, &ctx) {
                return Ok(None);
            }
        }
        let Some(symbol) = intern(src, ev.sym, &mut ids, publisher, errors) else { continue };
        if settings.looped {
            if let Update::Book(delta) = &ev.update {
                books.entry(symbol).or_default().apply(delta);
            }
        }
        // Events due together go as one burst: the engine is woken every
        // few ticks and writes to subscribers once the burst is in.
        if publisher.publish_in_burst(symbol, ev.ts_event, ev.update).is_err() {
            return Ok(None);
        }
        published += 1;
        if published % MAX_BURST == 0 {
            publisher.end_burst();
        }
    }
    publisher.end_burst();
    report_gaps(src, &mut gaps, &ctx, errors);
    Ok(Some(published))
}

/// The server's id for a source-local symbol (cached per pass).
fn intern(
    src: &dyn Source,
    sym: u32,
    ids: &mut Vec<Option<SymbolId>>,
    publisher: &mut Publisher,
    errors: &mut ErrorLog,
) -> Option<SymbolId> {
    let i = sym as usize;
    if i >= ids.len() {
        ids.resize(i + 1, None);
    }
    if ids[i].is_none() {
        match publisher.symbol(&src.symbol(sym)) {
            Ok(id) => ids[i] = Some(id),
            Err(e) => {
                errors.report(&publisher.context().metrics, "replay", &e);
                return None;
            }
        }
    }
    ids[i]
}

fn report_gaps(src: &mut dyn Source, gaps: &mut Vec<Gap>, ctx: &FeedContext, errors: &mut ErrorLog) {
    src.take_gaps(gaps);
    for gap in gaps.drain(..) {
        let msg = format!(
            "recording has a gap in {} of {}: expected {}, got {} (at ts_event {})",
            gap.what,
            src.symbol(gap.sym),
            gap.expected,
            gap.got,
            gap.ts_event
        );
        // Counted as a feed error: the recording is missing data.
        errors.report(&ctx.metrics, "replay", &msg);
    }
}

/// Sleeps until `due` in short steps; false if the server is stopping.
fn sleep_until(due: Instant, ctx: &FeedContext) -> bool {
    loop {
        if ctx.stopping() {
            return false;
        }
        let now = Instant::now();
        if now >= due {
            return true;
        }
        std::thread::sleep((due - now).min(SLEEP_STEP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds_and_times_parse_with_clear_errors() {
        assert_eq!("max".parse(), Ok(Speed::Max));
        assert_eq!("10".parse(), Ok(Speed::Times(10.0)));
        assert_eq!("0.5x".parse(), Ok(Speed::Times(0.5)));
        assert!("0".parse::<Speed>().unwrap_err().contains("expected"));
        assert!("fast".parse::<Speed>().is_err());
        assert!("inf".parse::<Speed>().is_err());
        assert_eq!(parse_event_time("1723161254206652067"), Ok(1_723_161_254_206_652_067));
        assert_eq!(parse_event_time("2024-08-08T23:55:00Z"), Ok(1_723_161_300_000_000_000));
        assert_eq!(parse_event_time("2024-08-08T23:55:00.5Z"), Ok(1_723_161_300_500_000_000));
        assert!(parse_event_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn the_pacer_keeps_recorded_gaps_scaled_by_speed() {
        let t0 = Instant::now();
        let mut p = Pacer::new(Speed::Times(10.0));
        assert_eq!(p.due(1_000_000_000, t0), None, "the first event is due at once");
        // 50 ms later in event time is 5 ms later at 10x.
        assert_eq!(p.due(1_050_000_000, t0), Some(t0 + Duration::from_millis(5)));
        // Times going backwards are due at once.
        assert_eq!(p.due(900_000_000, t0 + Duration::from_millis(1)), None);
        // Far behind schedule: the schedule restarts instead of bursting.
        let late = t0 + Duration::from_secs(5);
        assert_eq!(p.due(1_060_000_000, late), None);
        assert_eq!(p.due(1_070_000_000, late), Some(late + Duration::from_millis(1)));
        let mut max = Pacer::new(Speed::Max);
        assert_eq!(max.due(1, t0), None);
        assert_eq!(max.due(u64::MAX, t0), None);
    }
}

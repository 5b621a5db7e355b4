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
//! By the recording's own receive clock, scaled by `--speed` (see
//! [`super::pacing`]).
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
//! # Universe
//! Before its first tick, the replay thread declares the recording's
//! symbols: it interns every name [`recorded::symbols`] finds (DBN from
//! its metadata; a tick log from its symbol definitions; a Binance capture
//! by reading it once), in the recording's order, after any
//! `--symbols-file` names. The server waits for this before it listens,
//! so a client can subscribe to any symbol of the recording (and gets a
//! seq-0 snapshot) the moment the server is up, even at a slow `--speed`.
//! The read is bounded by the recording and stops at `--max-symbols`
//! names; on a large Binance capture it delays startup by about one
//! `--speed max` pass over the file (DBN and tick logs are cheap: no
//! tick is decoded). Replay has no symbol filter: every symbol of the
//! recording is declared.
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

use super::pacing::{Pacer, Speed};
use super::{ErrorLog, FeedContext, FeedHandle, Publisher};
use crate::model::{Book, BookDelta, Level, Quote, SymbolError, SymbolId, Update};
use crate::recorded::{self, Gap, Source};

/// Longest burst a replay publishes before it closes it and opens the
/// next: at `--speed max` (one long burst otherwise) subscribers are then
/// written at least this often, counted in ticks, besides the engine's
/// own time bound.
const MAX_BURST: u64 = 512;

/// Longest single sleep, so shutdown is noticed promptly.
const SLEEP_STEP: Duration = Duration::from_millis(50);

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
    let (declared, declared_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new().name("feed-replay".into()).spawn(move || {
        declare_universe(&settings, &ctx);
        let _ = declared.send(());
        run(settings, source, ctx)
    })?;
    Ok(FeedHandle { threads: vec![thread], local_addr: None, declared: Some(declared_rx) })
}

/// Interns every symbol of the recording (see "Universe" above). Runs on
/// the replay thread, before the first tick is published.
fn declare_universe(settings: &ReplaySettings, ctx: &FeedContext) {
    let started = Instant::now();
    let found = recorded::symbols(&settings.path, ctx.max_symbols);
    let mut declared = 0usize;
    for name in &found.names {
        match ctx.symbols.intern(name, ctx.max_symbols) {
            Ok(_) => declared += 1,
            Err(e @ SymbolError::Full(_)) => {
                tracing::warn!(
                    "replay: {e}; the recording's other symbols are not declared (and not replayed) past the limit"
                );
                break;
            }
            Err(e) => tracing::warn!("replay: not declaring a symbol of the recording: {e}"),
        }
    }
    if let Some(e) = &found.error {
        tracing::warn!("replay: reading the recording's symbols stopped early: {e}");
    }
    tracing::info!(
        symbols = declared,
        ms = started.elapsed().as_millis() as u64,
        path = %settings.path.display(),
        "replay: the recording's symbols are declared"
    );
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
                && publisher.publish(symbol, crate::model::now_ns(), Update::Book(delta)).is_err()
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
        if published.is_multiple_of(MAX_BURST) {
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

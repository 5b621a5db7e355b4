//! `tickcast inspect`: what a recording holds, per symbol (counts by kind,
//! first and last event time, gaps), read through [`crate::recorded`].
//!
//! A corrupt or truncated file is reported with its path and offset, after
//! everything read before it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::model::UpdateKind;
use crate::recorded::{self, Gap};

/// One symbol's summary in `inspect`.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct SymbolSummary {
    /// Trade prints.
    pub trades: u64,
    /// Best bid/offer updates.
    pub quotes: u64,
    /// Book changes.
    pub books: u64,
    /// Event time of the first event, ns.
    pub first_ts_event: u64,
    /// Event time of the last event, ns.
    pub last_ts_event: u64,
    /// Gaps found, all of them.
    pub gap_count: u64,
    /// The first `--max-gaps` gaps.
    pub gaps: Vec<GapSummary>,
}

/// One gap as `inspect` prints it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct GapSummary {
    /// Which id broke.
    pub what: &'static str,
    /// The id expected next.
    pub expected: u64,
    /// The id that came.
    pub got: u64,
    /// Event time where it showed.
    pub ts_event: u64,
}

/// The whole `inspect` report.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// The file.
    pub path: String,
    /// Its format.
    pub format: String,
    /// Events read.
    pub events: u64,
    /// Per symbol, by name.
    pub symbols: BTreeMap<String, SymbolSummary>,
    /// The error that stopped the read, if any (names file and offset).
    pub error: Option<String>,
}

/// Reads a whole recording into a [`Summary`].
pub fn summarize(path: &Path, max_gaps: usize) -> Result<Summary, recorded::SourceError> {
    let mut src = recorded::open(path)?;
    let mut by_id: Vec<SymbolSummary> = Vec::new();
    let mut gaps: Vec<Gap> = Vec::new();
    let mut events = 0u64;
    let error = loop {
        match src.next_event() {
            Ok(Some(ev)) => {
                let i = ev.sym as usize;
                if i >= by_id.len() {
                    by_id.resize_with(i + 1, SymbolSummary::default);
                }
                let s = &mut by_id[i];
                match ev.update.kind() {
                    UpdateKind::Trade => s.trades += 1,
                    UpdateKind::Quote => s.quotes += 1,
                    UpdateKind::Book => s.books += 1,
                }
                if s.trades + s.quotes + s.books == 1 {
                    s.first_ts_event = ev.ts_event;
                }
                s.last_ts_event = ev.ts_event;
                events += 1;
            }
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    src.take_gaps(&mut gaps);
    for gap in gaps {
        let i = gap.sym as usize;
        if i >= by_id.len() {
            by_id.resize_with(i + 1, SymbolSummary::default);
        }
        let s = &mut by_id[i];
        s.gap_count += 1;
        if s.gaps.len() < max_gaps {
            s.gaps.push(GapSummary { what: gap.what, expected: gap.expected, got: gap.got, ts_event: gap.ts_event });
        }
    }
    let symbols = by_id.into_iter().enumerate().map(|(i, s)| (src.symbol(i as u32).to_string(), s)).collect();
    Ok(Summary { path: path.display().to_string(), format: src.format().to_string(), events, symbols, error })
}

/// Formats ns since the epoch as RFC 3339 with nanoseconds.
fn rfc3339(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_nanos(ns);
    humantime::format_rfc3339_nanos(t).to_string()
}

/// The summary as the table `tickcast inspect` prints.
pub fn table(summary: &Summary) -> String {
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{} ({}): {} events, {} symbols",
        summary.path,
        summary.format,
        summary.events,
        summary.symbols.len()
    );
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>10}  {:<30}  {:<30}  {:>6}",
        "symbol", "trades", "quotes", "books", "first ts_event", "last ts_event", "gaps"
    );
    for (name, s) in &summary.symbols {
        let _ = writeln!(
            out,
            "{:<16} {:>10} {:>10} {:>10}  {:<30}  {:<30}  {:>6}",
            name,
            s.trades,
            s.quotes,
            s.books,
            rfc3339(s.first_ts_event),
            rfc3339(s.last_ts_event),
            s.gap_count
        );
        for g in &s.gaps {
            let _ = writeln!(
                out,
                "    gap in {}: expected {}, got {} ({} missing) at {}",
                g.what,
                g.expected,
                g.got,
                g.got.saturating_sub(g.expected),
                rfc3339(g.ts_event)
            );
        }
        if s.gap_count > s.gaps.len() as u64 {
            let _ = writeln!(out, "    … and {} more gaps", s.gap_count - s.gaps.len() as u64);
        }
    }
    out
}

//! `tickcast convert` and `tickcast inspect`: the command-line tools for
//! recordings.
//!
//! In: a recording in any format [`crate::recorded`] reads. Out: a tick
//! log (`convert`), or a per-symbol summary on stdout (`inspect`).
//!
//! Both stop at the first bad record and say where it is (file and
//! offset), after reporting everything read before it; the exit status is
//! then 1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::recorded::{self, Gap};
use crate::tick::UpdateKind;
use crate::ticklog::{Fsync, LogTick, TickLogWriter, WriterOptions};

/// `tickcast convert IN OUT`.
#[derive(Debug, Clone, Args)]
pub struct ConvertArgs {
    /// The recording to read: a Binance capture (plain or gzip), a DBN file
    /// (plain or zstd) or a tick log.
    pub input: PathBuf,
    /// The tick-log directory to write (created; must not already hold a
    /// tick log).
    pub output: PathBuf,
    /// Start a new segment file at this size.
    #[arg(long, default_value = "256MiB", value_parser = crate::config::byte_size)]
    pub segment_bytes: usize,
}

/// `tickcast inspect FILE`.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// The recording: a tick log (directory or segment), a Binance capture
    /// or a DBN file.
    pub path: PathBuf,
    /// Print JSON instead of a table (for scripts).
    #[arg(long)]
    pub json: bool,
    /// Most gaps listed per symbol (all are counted).
    #[arg(long, default_value_t = 20)]
    pub max_gaps: usize,
}

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

/// Runs `tickcast inspect`.
pub fn inspect(args: InspectArgs) -> ExitCode {
    let summary = match summarize(&args.path, args.max_gaps) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tickcast inspect: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One write at the end, and a closed pipe (`| head`) is not an error:
    // `println!` would panic on it.
    let mut out = String::new();
    if args.json {
        match serde_json::to_string_pretty(&summary) {
            Ok(text) => out = text + "\n",
            Err(e) => {
                eprintln!("tickcast inspect: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
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
    }
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("tickcast inspect: cannot write the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match &summary.error {
        Some(e) => {
            eprintln!("tickcast inspect: stopped at a bad record: {e}");
            ExitCode::FAILURE
        }
        None => ExitCode::SUCCESS,
    }
}

/// Runs `tickcast convert`.
pub fn convert(args: ConvertArgs) -> ExitCode {
    match convert_to_ticklog(&args.input, &args.output, args.segment_bytes as u64) {
        Ok(report) => {
            eprintln!(
                "tickcast convert: {} events of {} symbols from {} to {} in {:.2}s ({:.0} events/s)",
                report.events,
                report.symbols,
                args.input.display(),
                args.output.display(),
                report.elapsed.as_secs_f64(),
                report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
            );
            if report.gaps > 0 {
                eprintln!(
                    "tickcast convert: the input has {} id gaps (kept as they are; `tickcast inspect` lists them)",
                    report.gaps
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tickcast convert: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What a conversion did.
#[derive(Debug)]
pub struct ConvertReport {
    /// Events written.
    pub events: u64,
    /// Distinct symbols.
    pub symbols: usize,
    /// Gaps the input revealed.
    pub gaps: usize,
    /// Wall time taken.
    pub elapsed: Duration,
}

/// Converts any recording to a tick log in `output`. Seqs are those the
/// engine would assign (per symbol from 1), or the tick log's own when the
/// input is one; `ts_ingest` is the recorder's receive time.
pub fn convert_to_ticklog(input: &Path, output: &Path, segment_bytes: u64) -> Result<ConvertReport, String> {
    let started = Instant::now();
    if output.exists() {
        let has_segments = std::fs::read_dir(output)
            .map_err(|e| format!("{}: {e}", output.display()))?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".tlog"));
        if has_segments {
            return Err(format!("{} already holds a tick log: choose a new directory", output.display()));
        }
    }
    let mut src = recorded::open(input).map_err(|e| e.to_string())?;
    let options = WriterOptions { segment_bytes, segment_age: Duration::from_secs(u64::MAX / 4), fsync: Fsync::Never };
    let (mut writer, _) = TickLogWriter::open(output, options).map_err(|e| e.to_string())?;
    let mut names: Vec<std::sync::Arc<str>> = Vec::new();
    let mut seqs: Vec<u64> = Vec::new();
    let mut events = 0u64;
    let mut gaps = Vec::new();
    let result = loop {
        let ev = match src.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        };
        let i = ev.sym as usize;
        while names.len() <= i {
            names.push(src.symbol(names.len() as u32));
            seqs.push(0);
        }
        seqs[i] = ev.seq.unwrap_or(seqs[i] + 1);
        let tick =
            LogTick { sym: &names[i], seq: seqs[i], ts_event: ev.ts_event, ts_ingest: ev.ts_recv, update: &ev.update };
        if let Err(e) = writer.append(&tick) {
            break Err(e.to_string());
        }
        events += 1;
    };
    src.take_gaps(&mut gaps);
    // Keep what was converted before a bad record: it is all valid.
    let finished = writer.finish().map_err(|e| e.to_string());
    result?;
    finished?;
    Ok(ConvertReport { events, symbols: names.len(), gaps: gaps.len(), elapsed: started.elapsed() })
}

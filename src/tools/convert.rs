//! `tickcast convert`: any recording (Binance capture, DBN file, tick log)
//! rewritten as a tick log, with the seqs the engine would assign.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::recorded::ticklog::{Fsync, LogTick, TickLogError, TickLogWriter, WriterOptions};
use crate::recorded::{self, SourceError};

/// Why a conversion failed. What was converted before a bad input record
/// is kept (it is all valid).
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// The output directory could not be read.
    #[error("{}: {source}", path.display())]
    Output {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The output directory already holds a tick log.
    #[error("{} already holds a tick log: choose a new directory", .0.display())]
    NotEmpty(PathBuf),
    /// The input could not be read (names the file and offset).
    #[error("{0}")]
    Read(SourceError),
    /// The tick log could not be written.
    #[error("{0}")]
    Write(TickLogError),
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
pub fn convert_to_ticklog(input: &Path, output: &Path, segment_bytes: u64) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    if output.exists() {
        let has_segments = std::fs::read_dir(output)
            .map_err(|source| ConvertError::Output { path: output.to_owned(), source })?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().ends_with(".tlog"));
        if has_segments {
            return Err(ConvertError::NotEmpty(output.to_owned()));
        }
    }
    let mut src = recorded::open(input).map_err(ConvertError::Read)?;
    let options = WriterOptions { segment_bytes, segment_age: Duration::from_secs(u64::MAX / 4), fsync: Fsync::Never };
    let (mut writer, _) = TickLogWriter::open(output, options).map_err(ConvertError::Write)?;
    let mut names: Vec<std::sync::Arc<str>> = Vec::new();
    let mut seqs: Vec<u64> = Vec::new();
    let mut events = 0u64;
    let mut gaps = Vec::new();
    let result = loop {
        let ev = match src.next_event() {
            Ok(Some(ev)) => ev,
            Ok(None) => break Ok(()),
            Err(e) => break Err(ConvertError::Read(e)),
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
            break Err(ConvertError::Write(e));
        }
        events += 1;
    };
    src.take_gaps(&mut gaps);
    // Keep what was converted before a bad record: it is all valid.
    let finished = writer.finish().map_err(ConvertError::Write);
    result?;
    finished?;
    Ok(ConvertReport { events, symbols: names.len(), gaps: gaps.len(), elapsed: started.elapsed() })
}

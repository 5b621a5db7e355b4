//! [`TickLogReader`]: a log directory (every segment in order) or one
//! segment read back as [`Event`]s of the [`Source`] trait, with reader-wide
//! symbol ids and the per-symbol seq gaps found on the way.
//!
//! Records are parsed in place from the segment reader's 2 MiB buffer;
//! only book records allocate (their level `Vec`s). Errors are
//! [`SourceError`]s naming the file and the offset of the bad record's
//! start, as for every other recording format.
//!
//! Imports: its siblings `format` and `segment`, and
//! `crate::recorded::source`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::format::{decode_symbol, decode_tick, BadRecord, KIND_BOOK, KIND_QUOTE, KIND_SYMBOL, KIND_TRADE};
use super::segment::{corrupt, segment_paths, SegmentFile};
use crate::recorded::source::{Event, Format, Gap, Source, SourceError};

/// The reader's symbols: reader-wide ids by name, the current segment's
/// local ids, and per-symbol seq tracking.
#[derive(Default)]
struct Symbols {
    /// Segment-local id (the index) to global id, for the current segment.
    local: Vec<u32>,
    names: Vec<Arc<str>>,
    by_name: HashMap<Arc<str>, u32>,
    /// Last seq seen per global id.
    last_seq: Vec<Option<u64>>,
    gaps: Vec<Gap>,
}

impl Symbols {
    /// Takes a symbol definition: the next local id gets the name's global
    /// id (a new one for a name not seen before).
    fn define(&mut self, body: &[u8]) -> Result<(), BadRecord> {
        let name = decode_symbol(body, self.local.len())?;
        let global = match self.by_name.get(name) {
            Some(&g) => g,
            None => {
                let g = self.names.len() as u32;
                let name: Arc<str> = Arc::from(name);
                self.names.push(name.clone());
                self.by_name.insert(name, g);
                self.last_seq.push(None);
                g
            }
        };
        self.local.push(global);
        Ok(())
    }

    /// Decodes a trade, quote or book body into an event with a global id,
    /// noting a seq gap.
    #[inline]
    fn tick(&mut self, kind: u8, body: &[u8]) -> Result<Event, BadRecord> {
        let tick = decode_tick(kind, body)?;
        let sym = *self.local.get(tick.local as usize).ok_or(BadRecord::UndefinedSymbol(tick.local))?;
        let (seq, ts_event) = (tick.seq, tick.ts_event);
        if let Some(last) = self.last_seq.get_mut(sym as usize) {
            if let Some(prev) = *last {
                let expected = prev.wrapping_add(1);
                if seq != expected && seq != 1 {
                    self.gaps.push(Gap { sym, what: "seq", expected, got: seq, ts_event });
                }
            }
            *last = Some(seq);
        }
        Ok(Event { sym, ts_event, ts_recv: tick.ts_ingest, seq: Some(seq), update: tick.update })
    }
}

/// Reads a tick log directory (every segment in order) or one segment.
///
/// Symbol ids in the events are reader-wide (stable across segments), seq
/// gaps per symbol are reported through [`Source::take_gaps`] (a seq of 1
/// starts a new run, as after a server restart, and is no gap). After an
/// error, `next_event` returns `Ok(None)`.
pub struct TickLogReader {
    /// The directory, when opened as one: [`TickLogReader::follow`] looks
    /// in it for segments created since.
    dir: Option<PathBuf>,
    segments: Vec<PathBuf>,
    /// Index in `segments` of the next segment to open.
    next: usize,
    cur: Option<SegmentFile>,
    /// The last segment's buffer, reused for the next.
    spare: Vec<u8>,
    syms: Symbols,
    done: bool,
}

impl TickLogReader {
    /// Opens a directory or a segment file.
    ///
    /// A directory's segments (`ticks-*.tlog`, in index order) are read one
    /// after another; an empty directory holds no events. The first
    /// segment's header is checked here, the others' when they are reached.
    pub fn open(path: &Path) -> Result<TickLogReader, SourceError> {
        let dir = path.is_dir().then(|| path.to_owned());
        let segments = if dir.is_some() { segment_paths(path)? } else { vec![path.to_owned()] };
        let mut reader = TickLogReader {
            dir,
            segments,
            next: 0,
            cur: None,
            spare: Vec::new(),
            syms: Symbols::default(),
            done: false,
        };
        reader.open_next()?;
        Ok(reader)
    }

    /// Opens the next segment; false when there is none.
    fn open_next(&mut self) -> Result<bool, SourceError> {
        if let Some(seg) = self.cur.take() {
            self.spare = seg.into_buffer();
        }
        let Some(path) = self.segments.get(self.next) else {
            return Ok(false);
        };
        self.next += 1;
        let file = File::open(path).map_err(|source| SourceError::Io { path: path.clone(), source })?;
        let mut seg = SegmentFile::new(path.clone(), file, std::mem::take(&mut self.spare));
        seg.read_header()?;
        self.syms.local.clear();
        self.cur = Some(seg);
        Ok(true)
    }

    /// The names the log defines, in order of first definition, at most
    /// `limit` of them, without decoding a single tick: every record is
    /// still read and CRC-checked (symbol definitions can appear anywhere
    /// in a segment), but only definitions are decoded. Consumes the reader:
    /// it is for declaring a log's universe before replaying it.
    pub fn into_symbols(mut self, limit: usize) -> Result<Vec<Arc<str>>, SourceError> {
        while self.syms.names.len() < limit {
            let Some(seg) = self.cur.as_mut() else {
                if self.open_next()? {
                    continue;
                }
                break;
            };
            let Some((start, from, to)) = seg.next_record()? else {
                if self.open_next()? {
                    continue;
                }
                break;
            };
            let body = seg.body(from, to);
            if body[0] == KIND_SYMBOL {
                if let Err(reason) = self.syms.define(body) {
                    return Err(corrupt(seg.path(), start, reason.to_string()));
                }
            }
        }
        Ok(self.syms.names)
    }

    /// The next event of a log that a recorder is still appending to:
    /// `Ok(None)` means "nothing more is written yet", not the end. At the
    /// end of the last segment, or at a record whose end is not written
    /// yet, it returns `Ok(None)` and keeps its place; a later call reads
    /// what was appended since, and goes on into segments created since.
    /// Anything damaged before the tail is an error, as for
    /// [`Source::next_event`]. For live with rewind (`from_ts`), which
    /// reads up to the newest records.
    pub fn follow(&mut self) -> Result<Option<Event>, SourceError> {
        loop {
            let Some(seg) = self.cur.as_mut() else {
                if self.open_next()? || (self.find_new_segments()? && self.open_next()?) {
                    continue;
                }
                return Ok(None);
            };
            let record = match seg.next_record() {
                Ok(Some(record)) => record,
                // The end of this segment, or a record still being written:
                // if a later segment exists this one is complete.
                Ok(None) | Err(SourceError::Truncated { .. })
                    if self.next >= self.segments.len() && !self.find_new_segments()? =>
                {
                    if let Some(seg) = self.cur.as_mut() {
                        seg.clear_eof();
                    }
                    return Ok(None);
                }
                Ok(None) => {
                    self.open_next()?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(seg) = self.cur.as_ref() else { return Ok(None) };
            if let Some(event) = decode_record(&mut self.syms, seg, record)? {
                return Ok(Some(event));
            }
        }
    }

    /// Adds the directory's segments created since it was listed; returns
    /// whether there are any.
    fn find_new_segments(&mut self) -> Result<bool, SourceError> {
        let Some(dir) = &self.dir else { return Ok(false) };
        let known = self.segments.len();
        let last = self.segments.last().cloned();
        for path in segment_paths(dir)? {
            if last.as_ref().is_none_or(|l| path.file_name() > l.file_name()) {
                self.segments.push(path);
            }
        }
        Ok(self.segments.len() > known)
    }

    fn next_inner(&mut self) -> Result<Option<Event>, SourceError> {
        loop {
            let Some(seg) = self.cur.as_mut() else {
                if self.open_next()? {
                    continue;
                }
                return Ok(None);
            };
            let Some((start, from, to)) = seg.next_record()? else {
                if self.open_next()? {
                    continue;
                }
                return Ok(None);
            };
            if let Some(event) = decode_record(&mut self.syms, seg, (start, from, to))? {
                return Ok(Some(event));
            }
        }
    }
}

/// Decodes one record that [`SegmentFile::next_record`] returned: a tick is
/// an event, a symbol definition is taken into `syms` (`None`), anything
/// else is an error naming the file and offset.
fn decode_record(
    syms: &mut Symbols,
    seg: &SegmentFile,
    (start, from, to): (u64, usize, usize),
) -> Result<Option<Event>, SourceError> {
    let body = seg.body(from, to);
    let result = match body[0] {
        KIND_SYMBOL => syms.define(body).map(|()| None),
        kind @ (KIND_TRADE | KIND_QUOTE | KIND_BOOK) => syms.tick(kind, body).map(Some),
        kind => Err(BadRecord::UnknownKind(kind)),
    };
    result.map_err(|reason| corrupt(seg.path(), start, reason.to_string()))
}

impl Source for TickLogReader {
    fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        if self.done {
            return Ok(None);
        }
        match self.next_inner() {
            Ok(Some(event)) => Ok(Some(event)),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                self.cur = None;
                Err(e)
            }
        }
    }

    /// The name of a reader-wide id; an id no event carried gives `""`.
    fn symbol(&self, id: u32) -> Arc<str> {
        self.syms.names.get(id as usize).cloned().unwrap_or_else(|| Arc::from(""))
    }

    fn take_gaps(&mut self, out: &mut Vec<Gap>) {
        out.append(&mut self.syms.gaps);
    }

    fn format(&self) -> Format {
        Format::TickLog
    }
}

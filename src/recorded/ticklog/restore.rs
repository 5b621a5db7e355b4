//! [`restore`]: every symbol's state at the end of a tick log, folded from
//! its records, so a server restarted on its `--record` directory goes on
//! from the seq and the state it had.
//!
//! The fold is the engine's (`Topic::apply`): a quote replaces the last
//! quote, a trade the last trade, a book delta is applied to the full book
//! ([`Book::apply`], at most [`MAX_BOOK_LEVELS`](crate::model::MAX_BOOK_LEVELS)
//! levels a side), and the record's seq and both timestamps become the
//! symbol's. The log is streamed through the segment reader's 2 MiB buffer,
//! never loaded whole, so memory is bounded by symbols × book size, not by
//! the log's length.
//!
//! Imports: its siblings `format`, `recover` and `segment`,
//! [`crate::model`] and `crate::recorded::source`.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::format::{
    decode_symbol, decode_tick, BadRecord, HEADER_LEN, KIND_BOOK, KIND_QUOTE, KIND_SYMBOL, KIND_TRADE,
};
use super::recover::{Recovery, MAX_RECOVERY_CUT};
use super::segment::{corrupt, list_segments, SegmentFile};
use crate::model::{Image, TopicState, Update};
use crate::recorded::source::SourceError;

/// Every symbol's state at the end of a tick log, as [`restore`] found it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Restored {
    /// Each symbol with at least one tick in the log and its state after
    /// its last record, in the order the log first defines them (the
    /// order they first ticked in). The image's `seq` is the highest seq
    /// the log holds for the symbol: the next update gets `seq + 1`.
    pub topics: Vec<(Arc<str>, Image)>,
    /// Tick records folded (symbol definitions not counted).
    pub ticks: u64,
    /// Segment files in the log.
    pub segments: usize,
    /// Records whose seq was not above the previous one of their symbol:
    /// each starts a new run of an old log (see [`restore`]). 0 in a log
    /// written by servers that restore.
    pub restarts: u64,
    /// The torn tail at the end of the last segment that was left out of
    /// the fold: exactly what the writer's recovery will cut when it next
    /// opens the directory. `None` if the log ends cleanly.
    pub torn_tail: Option<Recovery>,
    /// How long the restore took.
    pub elapsed: Duration,
}

/// Why a tick log could not be restored. Every variant names the file and,
/// for its contents, the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// A segment could not be listed, opened or read, or is damaged in a
    /// way the writer's recovery would not cut (a bad header, a bad record
    /// in a segment other than the last, damage more than
    /// [`MAX_RECOVERY_CUT`] bytes before the end of the last, a record
    /// whose CRC matches but whose body is invalid): the reader's error,
    /// with the file and the offset of the bad record.
    #[error(transparent)]
    Read(#[from] SourceError),
    /// The log defines more symbols than the server may hold.
    #[error(
        "{}: symbol definition at offset {offset}: the tick log holds more than {limit} symbols, the most this \
         server may hold (--max-symbols): raise the limit, or record into another directory",
        .path.display()
    )]
    TooManySymbols {
        /// The segment.
        path: PathBuf,
        /// Offset of the definition that went over the limit.
        offset: u64,
        /// The limit.
        limit: usize,
    },
}

/// One symbol's state while the log is folded: the engine's own fold
/// ([`TopicState`]), and what restore needs besides.
#[derive(Default)]
struct State {
    /// The state, its seq the highest seen.
    state: TopicState,
    /// Seq of the last record, to tell a new run.
    last_seq: u64,
    ticks: u64,
}

impl State {
    /// Folds one record in, as `Topic::apply` does, keeping the highest
    /// seq; true if its seq starts a new run.
    fn apply(&mut self, seq: u64, ts_event: u64, ts_ingest: u64, update: &Update) -> bool {
        let restart = self.ticks > 0 && seq <= self.last_seq;
        self.ticks += 1;
        self.last_seq = seq;
        self.state.apply(update, self.state.seq.max(seq), ts_event, ts_ingest);
        restart
    }
}

/// Reads every segment of the tick log in `dir`, in order, and folds each
/// record into its symbol's state: what the server had published when the
/// log was last written. A directory that does not exist or holds no
/// segment restores to nothing (an empty [`Restored`]).
///
/// **When.** Once, at start-up, on the main thread, before the runtime
/// starts serving, and while holding the directory's lock (so no writer
/// appends meanwhile). It blocks on the disk for as long as the log takes
/// to read: 0.19 s for a million ticks (74 MB, 100 symbols, books of tens
/// of levels) in release on a warm page cache, measured by the ignored
/// test `restore_speed`; from a cold cache, add the time to read the log
/// from disk. The server is not yet listening while it runs.
///
/// **Torn tails.** It runs before the writer's open, which is what cuts a
/// crash's torn tail ([`recover_segment`](super::recover_segment)), and it
/// writes nothing itself. It therefore tolerates exactly the tail that
/// recovery would cut, by the same rule: in the **last** segment, a file
/// shorter than a header, or the first record that is incomplete, too
/// long or fails its CRC with at most [`MAX_RECOVERY_CUT`] bytes from its
/// start to the end of the file, ends the fold there and is reported in
/// [`Restored::torn_tail`]. What it restores is thus the state of the log
/// after recovery, whichever runs first. Anything else that is damaged is
/// an error naming the file and the offset, never skipped: a sequencer
/// must not continue from a state it could not read to the end.
///
/// **Seqs.** A symbol's restored seq is the highest seq the log holds for
/// it. A log written before servers restored (where every restart began
/// again at seq 1) has runs whose seq goes back down: a record whose seq is
/// not above the previous one of its symbol starts a new run (counted in
/// [`Restored::restarts`]), the state keeps folding across it (as a server
/// that did not restore kept its book empty at restart, levels of the
/// earlier run that the later one never deleted stay in the restored book),
/// and the seq stays the highest seen, so no seq the log holds is reused.
///
/// **Bounds.** At most `max_symbols` symbols: a log defining more is
/// [`RestoreError::TooManySymbols`] (the server could not hold them, and
/// would reuse the seqs of those it dropped). Memory is that many books of
/// at most [`MAX_BOOK_LEVELS`](crate::model::MAX_BOOK_LEVELS) levels a side,
/// plus one 2 MiB read buffer, however long the log.
pub fn restore(dir: &Path, max_symbols: usize) -> Result<Restored, RestoreError> {
    let started = Instant::now();
    let segments = match list_segments(dir) {
        Ok(segments) => segments,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(SourceError::Io { path: dir.to_owned(), source }.into()),
    };
    let mut names: Vec<Arc<str>> = Vec::new();
    let mut by_name: HashMap<Arc<str>, u32> = HashMap::new();
    let mut states: Vec<State> = Vec::new();
    // Segment-local id to global id, for the current segment.
    let mut local: Vec<u32> = Vec::new();
    let mut restored = Restored { segments: segments.len(), ..Restored::default() };
    let mut spare = Vec::new();
    for (i, (_, path)) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let io = |source| SourceError::Io { path: path.clone(), source };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if last && len < HEADER_LEN as u64 {
            // A crash right after the segment was created: recovery removes it.
            restored.torn_tail = Some(Recovery { path: path.clone(), offset: 0, dropped_bytes: len });
            break;
        }
        let mut seg = SegmentFile::new(path.clone(), file, std::mem::take(&mut spare));
        seg.read_header()?;
        local.clear();
        loop {
            let (start, from, to) = match seg.next_record() {
                Ok(Some(record)) => record,
                Ok(None) => break,
                Err(SourceError::Corrupt { offset, .. } | SourceError::Truncated { offset, .. })
                    if last && len.saturating_sub(offset) <= MAX_RECOVERY_CUT =>
                {
                    let dropped_bytes = len - offset;
                    restored.torn_tail = Some(Recovery { path: path.clone(), offset, dropped_bytes });
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let body = seg.body(from, to);
            let bad = |reason: BadRecord| RestoreError::from(corrupt(path, start, reason.to_string()));
            match body[0] {
                KIND_SYMBOL => {
                    let name = decode_symbol(body, local.len()).map_err(bad)?;
                    let global = match by_name.get(name) {
                        Some(&g) => g,
                        None => {
                            if names.len() >= max_symbols {
                                return Err(RestoreError::TooManySymbols {
                                    path: path.clone(),
                                    offset: start,
                                    limit: max_symbols,
                                });
                            }
                            let g = names.len() as u32;
                            let name: Arc<str> = Arc::from(name);
                            names.push(name.clone());
                            by_name.insert(name, g);
                            states.push(State::default());
                            g
                        }
                    };
                    // The writer defines each symbol once a segment, so a
                    // segment defines at most as many ids as there are
                    // symbols; more would grow `local` with the log.
                    if local.len() >= max_symbols {
                        return Err(RestoreError::TooManySymbols {
                            path: path.clone(),
                            offset: start,
                            limit: max_symbols,
                        });
                    }
                    local.push(global);
                }
                kind @ (KIND_TRADE | KIND_QUOTE | KIND_BOOK) => {
                    let tick = decode_tick(kind, body).map_err(bad)?;
                    let global =
                        *local.get(tick.local as usize).ok_or(BadRecord::UndefinedSymbol(tick.local)).map_err(bad)?;
                    let state = &mut states[global as usize];
                    if state.apply(tick.seq, tick.ts_event, tick.ts_ingest, &tick.update) {
                        restored.restarts += 1;
                    }
                    restored.ticks += 1;
                }
                kind => return Err(bad(BadRecord::UnknownKind(kind))),
            }
        }
        spare = seg.into_buffer();
    }
    restored.topics = names
        .into_iter()
        .zip(states)
        .filter(|(_, state)| state.ticks > 0)
        .map(|(name, s)| (name, s.state.image()))
        .collect();
    restored.elapsed = started.elapsed();
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};

    use super::super::format::{encode_header, LogTick, PREFIX_LEN};
    use super::super::segment::{segment_file_name, segment_paths};
    use super::super::tests::{opts, TempDir};
    use super::super::writer::{TickLogWriter, WriterOptions};
    use super::*;
    use crate::model::{Book, BookDelta, Level, Quote, Side, Trade};

    /// Deterministic pseudo-random numbers (xorshift).
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A random update on a small price grid, so book levels keep being
    /// added, changed and deleted.
    fn update(rng: &mut Rng) -> Update {
        let px = |rng: &mut Rng, base: f64| base + rng.below(40) as f64 * 0.25;
        match rng.below(10) {
            0..=3 => Update::Quote(Quote {
                bid: px(rng, 90.0),
                bid_sz: 1.0 + rng.below(9) as f64,
                ask: px(rng, 101.0),
                ask_sz: rng.below(9) as f64,
            }),
            4..=5 => Update::Trade(Trade {
                px: px(rng, 95.0),
                sz: 0.5 + rng.below(4) as f64,
                side: [Side::Buy, Side::Sell, Side::Unknown][rng.below(3) as usize],
            }),
            _ => {
                let mut delta = BookDelta::default();
                for _ in 0..1 + rng.below(5) {
                    let sz = if rng.below(3) == 0 { 0.0 } else { 1.0 + rng.below(7) as f64 };
                    if rng.below(2) == 0 {
                        delta.bids.push(Level { px: px(rng, 90.0), sz });
                    } else {
                        delta.asks.push(Level { px: px(rng, 101.0), sz });
                    }
                }
                Update::Book(delta)
            }
        }
    }

    /// What the engine holds after each tick, folded here on its own (as
    /// `Topic::apply` does, with a book per symbol), in first-seen order.
    #[derive(Default)]
    struct Expected {
        topics: Vec<(String, Image, Book)>,
    }

    impl Expected {
        fn apply(&mut self, sym: &str, seq: u64, ts_event: u64, ts_ingest: u64, update: &Update) {
            let i = match self.topics.iter().position(|(name, ..)| name == sym) {
                Some(i) => i,
                None => {
                    self.topics.push((sym.to_owned(), Image::default(), Book::default()));
                    self.topics.len() - 1
                }
            };
            let (_, image, book) = &mut self.topics[i];
            match update {
                Update::Quote(q) => image.quote = Some(*q),
                Update::Trade(t) => image.trade = Some(*t),
                Update::Book(d) => {
                    book.apply(d);
                    image.bids = book.bids(usize::MAX).to_vec();
                    image.asks = book.asks(usize::MAX).to_vec();
                }
            }
            image.seq = image.seq.max(seq);
            image.ts_event = ts_event;
            image.ts_ingest = ts_ingest;
        }

        fn images(&self) -> Vec<(Arc<str>, Image)> {
            self.topics.iter().map(|(name, image, _)| (Arc::from(name.as_str()), image.clone())).collect()
        }
    }

    /// One server run: opens a writer on `dir` and appends `n` random
    /// ticks of `syms`, with seqs from `seqs` (per symbol, the last one
    /// given; `restart` starts them at 1 again, as servers did before
    /// they restored). Returns what each tick was, in order.
    #[allow(clippy::too_many_arguments)]
    fn run(
        dir: &Path,
        o: WriterOptions,
        rng: &mut Rng,
        syms: &[&str],
        n: u64,
        seqs: &mut HashMap<String, u64>,
        restart: bool,
        expected: &mut Expected,
    ) {
        if restart {
            seqs.clear();
        }
        let (mut w, _) = TickLogWriter::open(dir, o).unwrap();
        for i in 0..n {
            let sym = syms[rng.below(syms.len() as u64) as usize];
            let seq = seqs.entry(sym.to_owned()).or_insert(0);
            *seq += 1;
            let u = update(rng);
            let (ts_event, ts_ingest) = (1_000_000 + i * 3, 2_000_000 + i * 5 + rng.below(3));
            w.append(&LogTick { sym, seq: *seq, ts_event, ts_ingest, update: &u }).unwrap();
            expected.apply(sym, *seq, ts_event, ts_ingest, &u);
            if i % 97 == 0 {
                w.flush().unwrap();
            }
        }
        w.finish().unwrap();
    }

    fn small_segments() -> WriterOptions {
        WriterOptions { segment_bytes: 16 << 10, ..opts() }
    }

    #[test]
    fn two_runs_restore_every_symbol_as_the_engine_folded_it() {
        let dir = TempDir::new("restore-runs");
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut seqs = HashMap::new();
        let mut expected = Expected::default();
        let first = ["AAA", "BTC-USDT", "ESH1:CME/fut_2", "Z"];
        run(&dir.0, small_segments(), &mut rng, &first, 3000, &mut seqs, false, &mut expected);
        let second = ["Z", "NEW", "AAA", "LATE.X"];
        run(&dir.0, small_segments(), &mut rng, &second, 3000, &mut seqs, false, &mut expected);

        let restored = restore(&dir.0, 100).unwrap();
        assert_eq!(restored.topics, expected.images());
        // In first-seen order (the fold above pushes them so): the first
        // run's symbols, then those only the second run has.
        let mut names: Vec<&str> = restored.topics.iter().map(|(n, _)| &**n).collect();
        names[..4].sort_unstable();
        names[4..].sort_unstable();
        assert_eq!(names, ["AAA", "BTC-USDT", "ESH1:CME/fut_2", "Z", "LATE.X", "NEW"]);
        assert_eq!(restored.ticks, 6000);
        assert_eq!(restored.segments, segment_paths(&dir.0).unwrap().len());
        assert!(restored.segments > 4, "rolled: {}", restored.segments);
        assert_eq!(restored.restarts, 0);
        assert_eq!(restored.torn_tail, None);
        for (name, image) in &restored.topics {
            assert_eq!(image.seq, seqs[&**name], "{name}: the last seq written");
            assert!(!image.bids.is_empty() && !image.asks.is_empty(), "{name}: a book");
        }
        // Exactly the symbols' count is enough.
        assert_eq!(restore(&dir.0, 6).unwrap().topics.len(), 6);
    }

    #[test]
    fn an_old_log_whose_runs_restart_at_seq_1_restores_the_highest_seq() {
        let dir = TempDir::new("restore-old");
        let mut rng = Rng(42);
        let mut seqs = HashMap::new();
        let mut expected = Expected::default();
        run(&dir.0, opts(), &mut rng, &["A", "B", "C"], 900, &mut seqs, false, &mut expected);
        let first_run = seqs.clone();
        run(&dir.0, opts(), &mut rng, &["A", "B"], 300, &mut seqs, true, &mut expected);
        let restored = restore(&dir.0, 10).unwrap();
        assert_eq!(restored.topics, expected.images());
        for (name, image) in &restored.topics {
            assert_eq!(image.seq, first_run[&**name], "{name}: the highest seq, not the last");
        }
        assert_eq!(restored.restarts, 2, "A and B each restarted once");
        assert_eq!(restored.ticks, 1200);
    }

    #[test]
    fn a_torn_tail_is_left_out_exactly_as_recovery_cuts_it() {
        for cut in [1u64, 8, 9, 30] {
            let dir = TempDir::new("restore-torn");
            let mut rng = Rng(7 + cut);
            let mut seqs = HashMap::new();
            let mut all = Expected::default();
            run(&dir.0, opts(), &mut rng, &["A", "B"], 500, &mut seqs, false, &mut all);
            // A second run: a new symbol's quote, then a last record torn
            // by a crash.
            let mut w = TickLogWriter::open(&dir.0, opts()).unwrap().0;
            let seg = w.current_segment().to_owned();
            let u = Update::Quote(Quote { bid: 1.0, bid_sz: 1.0, ask: 2.0, ask_sz: 1.0 });
            w.append(&LogTick { sym: "TORN", seq: 1, ts_event: 1, ts_ingest: 2, update: &u }).unwrap();
            w.append(&LogTick { sym: "A", seq: 10_000, ts_event: 1, ts_ingest: 2, update: &u }).unwrap();
            w.finish().unwrap();
            let len = fs::metadata(&seg).unwrap().len();
            let last_start = len - (PREFIX_LEN + 61) as u64;
            OpenOptions::new().write(true).open(&seg).unwrap().set_len(last_start + cut).unwrap();

            let restored = restore(&dir.0, 10).unwrap();
            let torn = Recovery { path: seg.clone(), offset: last_start, dropped_bytes: cut };
            assert_eq!(restored.torn_tail, Some(torn.clone()), "cut {cut}");
            // Everything before the torn record: the first run's ticks
            // plus TORN's quote.
            let mut want = all.images();
            want.push((
                Arc::from("TORN"),
                Image {
                    seq: 1,
                    ts_event: 1,
                    ts_ingest: 2,
                    quote: Some(Quote { bid: 1.0, bid_sz: 1.0, ask: 2.0, ask_sz: 1.0 }),
                    ..Image::default()
                },
            ));
            assert_eq!(restored.topics, want, "cut {cut}");
            assert_eq!(restored.ticks, 501);

            // Recovery cuts the same tail; the log then restores the same.
            let (w, recovery) = TickLogWriter::open(&dir.0, opts()).unwrap();
            assert_eq!(recovery, Some(torn));
            w.finish().unwrap();
            let again = restore(&dir.0, 10).unwrap();
            assert_eq!(again.topics, restored.topics);
            assert_eq!(again.torn_tail, None);
        }
    }

    #[test]
    fn a_last_segment_without_a_whole_header_is_left_out() {
        let dir = TempDir::new("restore-header");
        let mut expected = Expected::default();
        run(&dir.0, opts(), &mut Rng(3), &["A"], 100, &mut HashMap::new(), false, &mut expected);
        let path = dir.0.join(segment_file_name(2));
        fs::write(&path, &encode_header(2, 0)[..10]).unwrap();
        let restored = restore(&dir.0, 10).unwrap();
        assert_eq!(restored.topics, expected.images());
        assert_eq!(restored.torn_tail, Some(Recovery { path, offset: 0, dropped_bytes: 10 }));
    }

    /// The error's file and offset, or a panic.
    fn corrupt_at(result: Result<Restored, RestoreError>) -> (PathBuf, u64, String) {
        match result {
            Err(RestoreError::Read(SourceError::Corrupt { path, offset, reason })) => (path, offset, reason),
            other => panic!("expected a Corrupt error, got {other:?}"),
        }
    }

    #[test]
    fn damage_recovery_would_not_cut_is_an_error_naming_file_and_offset() {
        // A flipped bit in a segment before the last.
        let dir = TempDir::new("restore-damage");
        let mut expected = Expected::default();
        run(&dir.0, opts(), &mut Rng(5), &["A", "B"], 200, &mut HashMap::new(), false, &mut expected);
        run(&dir.0, opts(), &mut Rng(6), &["A", "B"], 200, &mut HashMap::new(), false, &mut expected);
        let first = dir.0.join(segment_file_name(1));
        let mut bytes = fs::read(&first).unwrap();
        let at = bytes.len() - 20;
        bytes[at] ^= 0x10;
        fs::write(&first, &bytes).unwrap();
        let (path, offset, reason) = corrupt_at(restore(&dir.0, 10));
        assert_eq!(path, first);
        assert!(offset > HEADER_LEN as u64 && offset <= at as u64, "{offset}");
        assert!(reason.contains("CRC"), "{reason}");

        // A record whose CRC matches but whose symbol was never defined,
        // at the end of the last segment: not a torn write.
        let dir = TempDir::new("restore-undefined");
        let path = dir.0.join(segment_file_name(1));
        let mut bytes = encode_header(1, 0).to_vec();
        let mut body = vec![KIND_QUOTE];
        body.extend_from_slice(&7u32.to_le_bytes());
        body.extend_from_slice(&[0; 24 + 32]);
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        fs::write(&path, &bytes).unwrap();
        let (p, offset, reason) = corrupt_at(restore(&dir.0, 10));
        assert_eq!((p, offset), (path.clone(), HEADER_LEN as u64));
        assert!(reason.contains("not defined"), "{reason}");

        // A bad header.
        fs::write(&path, b"NOTALOG\0 and then some more bytes beyond 32").unwrap();
        let (p, offset, _) = corrupt_at(restore(&dir.0, 10));
        assert_eq!((p, offset), (path.clone(), 0));

        // More than MAX_RECOVERY_CUT bytes after the first bad record of
        // the last segment: damage, not a tear.
        let mut bytes = encode_header(1, 0).to_vec();
        bytes.resize(HEADER_LEN + MAX_RECOVERY_CUT as usize + 1, 0);
        fs::write(&path, &bytes).unwrap();
        let (p, offset, reason) = corrupt_at(restore(&dir.0, 10));
        assert_eq!((p, offset), (path.clone(), HEADER_LEN as u64));
        assert!(reason.contains("empty body"), "{reason}");
        // One byte less is a torn tail.
        bytes.pop();
        fs::write(&path, &bytes).unwrap();
        let restored = restore(&dir.0, 10).unwrap();
        assert_eq!(
            restored.torn_tail,
            Some(Recovery { path, offset: HEADER_LEN as u64, dropped_bytes: MAX_RECOVERY_CUT })
        );
        assert!(restored.topics.is_empty());
    }

    #[test]
    fn more_symbols_than_the_limit_is_an_error() {
        let dir = TempDir::new("restore-limit");
        let mut expected = Expected::default();
        let syms = ["A", "B", "C", "D", "E"];
        run(&dir.0, opts(), &mut Rng(11), &syms, 200, &mut HashMap::new(), false, &mut expected);
        assert_eq!(restore(&dir.0, 5).unwrap().topics.len(), 5);
        match restore(&dir.0, 4) {
            Err(e @ RestoreError::TooManySymbols { .. }) => {
                let RestoreError::TooManySymbols { ref path, offset, limit } = e else { unreachable!() };
                assert_eq!((path.clone(), limit), (dir.0.join(segment_file_name(1)), 4));
                assert!(offset > HEADER_LEN as u64);
                let text = e.to_string();
                assert!(text.contains("--max-symbols") && text.contains(&format!("offset {offset}")), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_or_missing_directory_restores_nothing() {
        let dir = TempDir::new("restore-empty");
        fs::write(dir.0.join("tickcast.lock"), "123\n").unwrap();
        fs::write(dir.0.join("epoch"), "5 clean\n").unwrap();
        for path in [dir.0.clone(), dir.0.join("missing")] {
            let restored = restore(&path, 10).unwrap();
            assert_eq!((restored.topics.len(), restored.ticks, restored.segments), (0, 0, 0));
            assert_eq!((restored.restarts, restored.torn_tail), (0, None));
        }
        // A segment holding only its header restores nothing either.
        let (w, _) = TickLogWriter::open(&dir.0, opts()).unwrap();
        w.finish().unwrap();
        let restored = restore(&dir.0, 10).unwrap();
        assert_eq!((restored.topics.len(), restored.segments), (0, 1));
    }

    /// By hand, in release mode:
    /// `cargo test --release --lib restore_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "timing, run by hand in release mode"]
    fn restore_speed() {
        const N: u64 = 1_000_000;
        const SYMBOLS: usize = 100;
        let dir = TempDir::new("restore-speed");
        let names: Vec<String> = (0..SYMBOLS).map(|i| format!("SYM{i:03}")).collect();
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let updates: Vec<Update> = (0..4096).map(|_| update(&mut rng)).collect();
        let mut seqs = vec![0u64; SYMBOLS];
        let (mut w, _) = TickLogWriter::open(&dir.0, opts()).unwrap();
        for i in 0..N {
            let s = rng.below(SYMBOLS as u64) as usize;
            seqs[s] += 1;
            let t = LogTick {
                sym: &names[s],
                seq: seqs[s],
                ts_event: i,
                ts_ingest: i + 1,
                update: &updates[rng.below(updates.len() as u64) as usize],
            };
            w.append(&t).unwrap();
        }
        w.finish().unwrap();
        let bytes: u64 = segment_paths(&dir.0).unwrap().iter().map(|p| fs::metadata(p).unwrap().len()).sum();
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let restored = restore(&dir.0, SYMBOLS).unwrap();
            assert_eq!(restored.ticks, N);
            assert_eq!(restored.topics.len(), SYMBOLS);
            best = best.min(restored.elapsed);
        }
        println!(
            "restore: {N} ticks ({:.1} MB, {SYMBOLS} symbols, 40% quotes, 20% trades, 40% book deltas of 1-5 levels) \
             in {best:?} = {:.2} M ticks/s (page cache warm, best of 3)",
            bytes as f64 / 1e6,
            N as f64 / best.as_secs_f64() / 1e6
        );
    }
}

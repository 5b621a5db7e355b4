//! The recording stage: every sequenced tick, appended to the tick log.
//!
//! In: ticks the engine has sequenced, handed over in batches through a
//! bounded queue ([`RecordTap`]). Out: records in the tick log under
//! `--record DIR` ([`crate::recorded::ticklog`]).
//!
//! Recording is its own thread, fed by the engine after sequencing, so the
//! tick log holds exactly the seq every client saw. Neither the ingest
//! thread nor the engine ever waits on the disk: the engine only moves each
//! tick (no copy, no encoding) into a batch `Vec` and, once per engine
//! batch, offers the batch to the queue without blocking.
//!
//! # Bound and full policy
//! The queue holds at most [`QUEUE_TICKS`] ticks (in batches of 1 to
//! the engine's `MAX_BATCH`, counted exactly): at 1M
//! ticks/s that is about a quarter of a second of disk stall, or of the
//! recorder thread not being scheduled, absorbed, in about 20 MiB at most.
//! When a batch does not fit it is **dropped** and counted (`tickcast_record_dropped_total`, and a
//! rate-limited error log): live fan-out must never stall behind a disk.
//! Nothing is silently lost from the recording's point of view either:
//! every tick carries its seq, so a drop is a seq gap that `tickcast
//! inspect` and the replay reader report per symbol.
//!
//! # Writes and durability
//! The recorder wakes at the first batch, lets the burst gather for
//! [`COALESCE`] (5 ms), drains whatever is queued, appends it, and hands it
//! to the OS in one write before it waits again, so at any moment the only
//! ticks not yet written are the ones that arrived in the last few
//! milliseconds. A kill
//! of the process loses only those; `--fsync` decides what a power loss
//! may lose. A torn last record is cut off when the log is next opened.
//!
//! A write error (disk full, say) loses that batch, is counted
//! (`tickcast_record_errors_total`) and logged, and the recorder reopens the
//! log (which cuts any torn tail) before the next batch, at most once a
//! second.
//!
//! # One recorder per directory
//! [`RecordLock::acquire`] takes an exclusive `flock` on [`LOCK_FILE`] in
//! the directory and writes the holder's PID into it; the recorder thread
//! holds it until its last flush. A second tickcast on the same directory
//! is refused at start-up, with the PID of the one recording there,
//! instead of writing a second stream of segments beside the first. The
//! server takes the lock first, binds its addresses, and only then
//! [`start`]s the recorder (which creates the run's segment), so a failed
//! start-up leaves the directory as it found it.
//!
//! # Restarting on the same directory
//! A server restarted on a directory that already holds a tick log goes on
//! from it, with two pieces run while it holds the lock, before it serves:
//! - [`restore`] (the tick log's, re-exported here) folds the log into
//!   every symbol's state and last seq, so seqs continue instead of
//!   starting at 1 again, and snapshots are not empty.
//! - The epoch file ([`EpochFile`], `DIR/epoch`, see [`epoch`]) gives the
//!   run its sequencer epoch: the same as the last run's if that ended
//!   cleanly, a new one after a crash. [`RecordLock::open_epoch`] opens it
//!   and keeps it in the lock; the recorder thread, which owns the lock,
//!   marks it clean after its final flush if the run lost no tick
//!   ([`start`] says exactly when).
//!
//! # Files
//! | file | what it owns |
//! |---|---|
//! | this file | the lock, the queue ([`RecordTap`]), the recorder thread |
//! | `epoch.rs` | the epoch file: [`EpochFile`] |
//!
//! Imports: [`crate::model`], [`crate::recorded`] (the tick log's writer
//! and restore), [`crate::metrics`] and [`crate::sys`] (`flock`). The
//! engine hands it ticks through a [`RecordTap`]; it never calls the
//! engine.

pub mod epoch;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::metrics::Metrics;
use crate::model::{SymbolTable, Tick};
use crate::recorded::ticklog::{LogTick, TickLogError, TickLogWriter, WriterOptions};

pub use crate::recorded::ticklog::{restore, RestoreError, Restored};
pub use epoch::{EpochError, EpochFile, EPOCH_FILE};

/// Ticks the recorder queue holds (see the module doc for the policy).
pub const QUEUE_TICKS: usize = 1 << 18;

/// Emptied batch buffers kept for reuse.
const RECYCLED_BATCHES: usize = 64;

/// How long the recorder lets ticks gather after the first of a burst
/// arrives, before it writes them all at once. Bounds what a kill can lose
/// beyond the queue: about this much.
pub const COALESCE: Duration = Duration::from_millis(5);

/// How often an idle recorder wakes to apply the fsync policy.
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// One sequenced tick on its way to the tick log.
pub struct Sequenced {
    /// The tick as the engine published it.
    pub tick: Tick,
    /// The seq it was published with.
    pub seq: u64,
}

/// Where the recording goes and how.
#[derive(Clone, Debug)]
pub struct RecordSettings {
    /// The tick-log directory (`--record`).
    pub dir: PathBuf,
    /// Segment roll and fsync policy.
    pub options: WriterOptions,
}

/// The engine's end of the recorder queue. Owned by the engine thread.
pub struct RecordTap {
    tx: Sender<Vec<Sequenced>>,
    /// Emptied batches coming back, so steady state allocates nothing.
    recycled: Receiver<Vec<Sequenced>>,
    batch: Vec<Sequenced>,
    metrics: Arc<Metrics>,
    /// Ticks in the queue now: the engine adds, the recorder subtracts.
    queued: Arc<AtomicUsize>,
    last_drop_log: Option<Instant>,
    dropped_since_log: u64,
}

impl RecordTap {
    /// Adds one sequenced tick to the current batch.
    #[inline]
    pub fn push(&mut self, tick: Tick, seq: u64) {
        self.batch.push(Sequenced { tick, seq });
    }

    /// Offers the current batch to the recorder without waiting; a full
    /// queue drops it (counted). Called once per engine batch.
    pub fn end_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let next = self.recycled.try_recv().unwrap_or_default();
        let batch = std::mem::replace(&mut self.batch, next);
        let n = batch.len();
        let sent = if self.queued.load(Ordering::Acquire) + n > QUEUE_TICKS {
            Err(batch)
        } else {
            self.queued.fetch_add(n, Ordering::AcqRel);
            self.tx.try_send(batch).map_err(|e| {
                self.queued.fetch_sub(n, Ordering::AcqRel);
                match e {
                    TrySendError::Full(b) | TrySendError::Disconnected(b) => b,
                }
            })
        };
        let n = n as u64;
        match sent {
            Ok(()) => {
                self.metrics.record_ticks.fetch_add(n, Ordering::Relaxed);
            }
            Err(mut batch) => {
                self.metrics.record_dropped.fetch_add(n, Ordering::Relaxed);
                self.dropped_since_log += n;
                if self.last_drop_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::error!(
                        dropped = self.dropped_since_log,
                        "recorder queue full: ticks not recorded (the disk is slower than the feed); \
                         they show as seq gaps in the tick log"
                    );
                    self.last_drop_log = Some(Instant::now());
                    self.dropped_since_log = 0;
                }
                batch.clear();
                self.batch = batch;
            }
        }
    }
}

/// The running recorder thread.
pub struct Recorder {
    /// Joined at shutdown, after the engine (which owns the tap) stops.
    pub thread: JoinHandle<()>,
}

/// The lock file in a `--record` directory. Readers ignore it (it is not a
/// segment); it is left in place at exit, since deleting a lock file races
/// with the next process taking it.
pub const LOCK_FILE: &str = "tickcast.lock";

/// This process's exclusive hold on a `--record` directory, released when
/// dropped (or when the process dies, however it dies). It also carries
/// the run's [`EpochFile`], once [`open_epoch`](RecordLock::open_epoch)d,
/// to the recorder thread, which marks it clean at the end of a clean run.
#[derive(Debug)]
pub struct RecordLock {
    /// Open for as long as the lock is held: closing it releases it.
    _file: File,
    /// The locked directory.
    dir: PathBuf,
    /// This run's epoch file, if opened.
    epoch: Option<EpochFile>,
}

impl RecordLock {
    /// Creates `dir` if missing and locks it for this process, or says
    /// which process holds it.
    pub fn acquire(dir: &Path) -> Result<RecordLock, RecordError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| RecordError::Lock { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        if !crate::sys::try_lock_exclusive(&file).map_err(io)? {
            // The holder wrote its PID when it took the lock; a holder
            // caught between its lock and its write reads as unknown.
            let mut text = String::new();
            let holder = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
            return Err(RecordError::Locked { dir: dir.to_owned(), path, holder });
        }
        file.set_len(0).and_then(|()| writeln!(file, "{}", std::process::id())).map_err(io)?;
        Ok(RecordLock { _file: file, dir: dir.to_owned(), epoch: None })
    }

    /// Opens the directory's epoch file ([`EpochFile::open`]) and keeps it
    /// in the lock, so the recorder [`start`]ed with this lock marks it
    /// clean after its final flush. Returns this run's epoch and whether
    /// the previous run ended cleanly (its epoch is then continued). Call
    /// it once, before [`start`]; a lock whose epoch was never opened
    /// leaves the epoch file alone.
    pub fn open_epoch(&mut self) -> Result<(u64, bool), RecordError> {
        let file = EpochFile::open(&self.dir)?;
        let opened = (file.epoch(), file.was_clean());
        self.epoch = Some(file);
        Ok(opened)
    }

    /// Releases the lock at the end of the recorder thread, first marking
    /// the epoch file clean if the run was (see [`start`]).
    fn release(mut self, clean: bool) {
        let Some(epoch) = self.epoch.take() else { return };
        if !clean {
            tracing::warn!(
                "the recorder lost ticks in this run (see tickcast_record_dropped_total and                  tickcast_record_errors_total): the epoch file stays `running`, so the next run takes a new epoch"
            );
            return;
        }
        if let Err(e) = epoch.mark_clean() {
            tracing::error!("{e}: the next run takes a new epoch");
        }
    }
}

/// Why recording could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Another process is recording into the directory.
    #[error(
        "{} is already being recorded by {} (it holds {}): stop it, or record into another directory",
        .dir.display(),
        match .holder { Some(pid) => format!("process {pid}"), None => "another process".to_owned() },
        .path.display()
    )]
    Locked {
        /// The `--record` directory.
        dir: PathBuf,
        /// Its lock file.
        path: PathBuf,
        /// The PID written in the lock file by the process holding it.
        holder: Option<u32>,
    },
    /// The directory or its lock file could not be created or locked.
    #[error("cannot lock {}: {source}", .path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The tick log could not be opened (or its torn tail not recovered).
    #[error(transparent)]
    Open(#[from] TickLogError),
    /// The recorder thread could not be spawned.
    #[error("cannot start the recorder thread: {0}")]
    Thread(std::io::Error),
    /// The epoch file could not be written.
    #[error(transparent)]
    Epoch(#[from] EpochError),
}

/// Opens the tick log (recovering a torn tail, starting this run's
/// segment) and starts the recorder thread, which holds `lock` until its
/// last flush. Fails if the directory cannot be opened, so a bad
/// `--record` stops the server at start-up rather than losing the
/// recording.
///
/// If `lock` carries the run's epoch file ([`RecordLock::open_epoch`]),
/// the recorder thread marks it clean as its very last act, after the
/// final flush (and sync, per `--fsync`) of the log, and only if the run
/// lost nothing: the final flush succeeded and no tick was dropped or lost
/// to a write error since `start` (`tickcast_record_dropped_total` and
/// `tickcast_record_errors_total` unchanged). A lost tick may have been a
/// symbol's last, so its seq would be missing from the log and reused by
/// the next run: such a run ends `running`, and the next takes a new epoch.
pub fn start(
    settings: RecordSettings,
    lock: RecordLock,
    symbols: Arc<SymbolTable>,
    metrics: Arc<Metrics>,
) -> Result<(RecordTap, Recorder), RecordError> {
    let (writer, recovery) = TickLogWriter::open(&settings.dir, settings.options)?;
    if let Some(r) = recovery {
        tracing::warn!(
            segment = %r.path.display(),
            offset = r.offset,
            dropped_bytes = r.dropped_bytes,
            "tick log: cut a torn tail left by a crash; every complete record before it is kept"
        );
    }
    // The channel's own bound only backs up the tick count: every batch
    // holds at least one tick.
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_TICKS);
    let (recycle_tx, recycled) = crossbeam_channel::bounded(RECYCLED_BATCHES);
    let queued = Arc::new(AtomicUsize::new(0));
    let thread_metrics = metrics.clone();
    let thread_queued = queued.clone();
    let losses_before = losses(&metrics);
    let thread = std::thread::Builder::new()
        .name("recorder".into())
        .spawn(move || {
            let flushed = run(writer, settings, rx, recycle_tx, thread_queued, symbols, thread_metrics.clone());
            // After the last flush: the engine (which owns the tap) has
            // stopped, so every tick it published is in the log unless
            // one was lost.
            lock.release(flushed && losses(&thread_metrics) == losses_before);
        })
        .map_err(RecordError::Thread)?;
    let tap = RecordTap { tx, recycled, batch: Vec::new(), metrics, queued, last_drop_log: None, dropped_since_log: 0 };
    Ok((tap, Recorder { thread }))
}

/// Ticks the recorder dropped or lost to write errors so far.
fn losses(metrics: &Metrics) -> (u64, u64) {
    let load = |c: &AtomicU64| c.load(Ordering::Acquire);
    (load(&metrics.record_dropped), load(&metrics.record_errors))
}

/// The recorder loop, until the engine drops its tap; true if the log's
/// final flush succeeded.
fn run(
    writer: TickLogWriter,
    settings: RecordSettings,
    rx: Receiver<Vec<Sequenced>>,
    recycle: Sender<Vec<Sequenced>>,
    queued: Arc<AtomicUsize>,
    symbols: Arc<SymbolTable>,
    metrics: Arc<Metrics>,
) -> bool {
    let mut writer = Some(writer);
    let mut names: Vec<Option<Arc<str>>> = Vec::new();
    let mut last_reopen: Option<Instant> = None;
    loop {
        let first = match rx.recv_timeout(IDLE_WAKE) {
            Ok(batch) => {
                // Let a burst gather: one larger write instead of many
                // small ones, and the engine's sends find no one waiting
                // to be woken.
                std::thread::sleep(COALESCE);
                Some(batch)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if writer.is_none() && last_reopen.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            last_reopen = Some(Instant::now());
            match TickLogWriter::open(&settings.dir, settings.options) {
                Ok((w, _)) => {
                    tracing::info!(dir = %settings.dir.display(), "tick log reopened");
                    writer = Some(w);
                }
                Err(e) => tracing::error!("tick log: cannot reopen: {e}"),
            }
        }
        let Some(w) = writer.as_mut() else {
            // No log to write to: count what is lost and keep draining, so
            // the engine's queue never fills behind a dead disk.
            for batch in first.into_iter().chain(rx.try_iter()) {
                metrics.record_errors.fetch_add(1, Ordering::Relaxed);
                metrics.record_dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                recycle_batch(&recycle, &queued, batch);
            }
            continue;
        };
        let mut result = Ok(());
        let bytes_before = w.bytes_written();
        for batch in first.into_iter().chain(rx.try_iter()) {
            if result.is_ok() {
                result = append_batch(w, &batch, &mut names, &symbols);
            } else {
                metrics.record_dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            recycle_batch(&recycle, &queued, batch);
        }
        if result.is_ok() {
            result = w.flush();
        }
        metrics.record_bytes.fetch_add(w.bytes_written() - bytes_before, Ordering::Relaxed);
        if let Err(e) = result {
            metrics.record_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!("tick log write failed, batch lost; reopening: {e}");
            writer = None;
        }
    }
    let Some(w) = writer else { return false };
    if let Err(e) = w.finish() {
        metrics.record_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!("tick log: final flush failed: {e}");
        return false;
    }
    true
}

fn append_batch(
    w: &mut TickLogWriter,
    batch: &[Sequenced],
    names: &mut Vec<Option<Arc<str>>>,
    symbols: &SymbolTable,
) -> Result<(), TickLogError> {
    for s in batch {
        let index = s.tick.symbol as usize;
        if index >= names.len() {
            names.resize(index + 1, None);
        }
        if names[index].is_none() {
            names[index] = symbols.name(s.tick.symbol);
        }
        let Some(sym) = names[index].as_deref() else { continue };
        w.append_keyed(
            s.tick.symbol,
            &LogTick {
                sym,
                seq: s.seq,
                ts_event: s.tick.ts_event,
                ts_ingest: s.tick.ts_ingest,
                update: &s.tick.update,
            },
        )?;
    }
    Ok(())
}

fn recycle_batch(recycle: &Sender<Vec<Sequenced>>, queued: &AtomicUsize, mut batch: Vec<Sequenced>) {
    queued.fetch_sub(batch.len(), Ordering::AcqRel);
    batch.clear();
    let _ = recycle.try_send(batch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Quote, Update};
    use crate::recorded::ticklog::Fsync;

    pub(super) use crate::recorded::ticklog::tests::TempDir;

    /// One recorder run on `dir` that records `ticks` quotes of "AAA"
    /// (seqs from `first_seq`) and, if `lose`, counts a dropped tick as
    /// the engine's tap would. Returns the epoch and whether the last run
    /// was clean, as the run saw them.
    fn recorder_run(dir: &Path, first_seq: u64, ticks: u64, lose: bool) -> (u64, bool) {
        let mut lock = RecordLock::acquire(dir).unwrap();
        let opened = lock.open_epoch().unwrap();
        let symbols = Arc::new(SymbolTable::default());
        let id = symbols.intern("AAA", 10).unwrap();
        let metrics = Arc::new(Metrics::default());
        let options =
            WriterOptions { segment_bytes: 1 << 20, segment_age: Duration::from_secs(3600), fsync: Fsync::Never };
        let settings = RecordSettings { dir: dir.to_owned(), options };
        let (mut tap, recorder) = start(settings, lock, symbols, metrics.clone()).unwrap();
        for seq in first_seq..first_seq + ticks {
            let update = Update::Quote(Quote { bid: 1.0, bid_sz: 2.0, ask: 3.0, ask_sz: seq as f64 });
            tap.push(Tick { symbol: id, ts_event: seq, ts_ingest: seq + 1, update }, seq);
            tap.end_batch();
        }
        if lose {
            metrics.record_dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(tap); // The engine stops.
        recorder.thread.join().unwrap();
        opened
    }

    #[test]
    fn the_recorder_marks_the_epoch_clean_after_its_final_flush_unless_ticks_were_lost() {
        let dir = TempDir::new("clean");
        let (epoch, was_clean) = recorder_run(&dir.0, 1, 10, false);
        assert!(!was_clean, "a fresh directory");
        let text = std::fs::read_to_string(dir.0.join(EPOCH_FILE)).unwrap();
        assert_eq!(text, format!("{epoch} clean\n"));

        // Restarted: the same epoch, and the seqs go on from the log.
        let restored = restore(&dir.0, 10).unwrap();
        assert_eq!(restored.topics.len(), 1);
        let next = restored.topics[0].1.seq + 1;
        assert_eq!(next, 11);
        assert_eq!(recorder_run(&dir.0, next, 5, true), (epoch, true));
        // That run lost a tick: still `running`, so the next one takes a new epoch.
        let text = std::fs::read_to_string(dir.0.join(EPOCH_FILE)).unwrap();
        assert_eq!(text, format!("{epoch} running\n"));
        let (third, was_clean) = recorder_run(&dir.0, 16, 1, false);
        assert!(!was_clean && third > epoch);
        assert_eq!(restore(&dir.0, 10).unwrap().topics[0].1.seq, 16);

        // A lock whose epoch was never opened leaves the file alone.
        let lock = RecordLock::acquire(&dir.0).unwrap();
        lock.release(true);
        let text = std::fs::read_to_string(dir.0.join(EPOCH_FILE)).unwrap();
        assert_eq!(text, format!("{third} clean\n"));
    }
}

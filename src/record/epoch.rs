//! The sequencer epoch file, [`EPOCH_FILE`] in a `--record` directory,
//! beside the lock: the epoch this directory's server sequences under, and
//! whether its last run ended cleanly.
//!
//! # Why
//! A restarted server continues every symbol's seq from the tick log
//! ([`restore`](crate::recorded::ticklog::restore)). That is only exact if
//! the log holds every tick the last run published. After a clean
//! shutdown it does: the engine stopped first and the recorder flushed
//! everything queued before it ended. After a crash it may not: the
//! recorder lets ticks gather for [`COALESCE`](super::COALESCE) (5 ms)
//! before writing them, and the queue may hold more, all already
//! published; the log then ends a few ms short and its seqs would be
//! handed out a second time. So a crashed run's seqs cannot be trusted to
//! continue, and the next run starts a **new epoch**; a clean one
//! continues the **same epoch**. Clients and edges compare `(epoch, seq)`:
//! a new epoch tells them the seqs of the old one are not continued.
//!
//! # The file
//! One line of ASCII: the epoch as a decimal `u64` (never 0, which the
//! binary record reserves for "not sequenced"), a space, and the state,
//! `running` or `clean`, e.g. `1723161254206652067 running`. It is only
//! ever replaced whole: written to `epoch.tmp`, synced, renamed over
//! `epoch`, and the directory synced, so a crash leaves the old file or
//! the new one, never a mix. Readers of the tick log ignore both (they
//! are not segments).
//!
//! Imports: [`crate::model`] (`now_ns`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The epoch file's name in a `--record` directory.
pub const EPOCH_FILE: &str = "epoch";

/// The temporary file the epoch file is written to before the rename.
const EPOCH_TEMP: &str = "epoch.tmp";

const RUNNING: &str = "running";
const CLEAN: &str = "clean";

/// The epoch file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the epoch file {}: {source}", .path.display())]
pub struct EpochError {
    /// The file (or directory) that failed.
    pub path: PathBuf,
    /// The cause.
    pub source: io::Error,
}

/// This run's epoch, taken from (and recorded in) a directory's
/// [`EPOCH_FILE`]. Open it once per run, while holding the directory's
/// [`RecordLock`](super::RecordLock).
#[derive(Debug)]
pub struct EpochFile {
    dir: PathBuf,
    epoch: u64,
    was_clean: bool,
}

/// What the file said about the previous run.
enum Previous {
    Missing,
    Clean(u64),
    Running(u64),
    Unreadable(String),
}

impl EpochFile {
    /// Reads `dir`'s epoch file and starts this run's epoch: the previous
    /// run's epoch if the file says it ended `clean`; otherwise (no file, a
    /// run that never marked clean, or a file that cannot be read or
    /// parsed, which is logged as a warning) a new one, the current time
    /// in ns, and never below the previous epoch + 1 when that is known.
    /// Either way the file is rewritten at once with the state `running`,
    /// so a crash from now on makes the next run take a new epoch.
    ///
    /// Fails only if that write fails (`dir` must exist).
    pub fn open(dir: &Path) -> Result<EpochFile, EpochError> {
        let path = dir.join(EPOCH_FILE);
        let (epoch, was_clean) = match read(&path) {
            Previous::Clean(epoch) => (epoch, true),
            Previous::Missing => (new_epoch(0), false),
            Previous::Running(old) => {
                let epoch = new_epoch(old);
                tracing::warn!(
                    path = %path.display(),
                    old_epoch = old,
                    epoch,
                    "the last run on this record directory did not end cleanly (a crash may have lost \
                     its last published ticks): sequencing under a new epoch"
                );
                (epoch, false)
            }
            Previous::Unreadable(why) => {
                let epoch = new_epoch(0);
                tracing::warn!(path = %path.display(), epoch, "epoch file unreadable ({why}): sequencing under a new epoch");
                (epoch, false)
            }
        };
        let file = EpochFile { dir: dir.to_owned(), epoch, was_clean };
        file.write(RUNNING)?;
        Ok(file)
    }

    /// This run's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the previous run ended cleanly, so this run continues its
    /// epoch (and its seqs, restored from the tick log, are exact).
    pub fn was_clean(&self) -> bool {
        self.was_clean
    }

    /// Records that this run ended cleanly: every tick it published is in
    /// the tick log, so the next run may continue the same epoch. Call it
    /// last, after the recorder's final flush.
    pub fn mark_clean(self) -> Result<(), EpochError> {
        self.write(CLEAN)
    }

    /// Replaces the file with `epoch state`, atomically and durably.
    fn write(&self, state: &str) -> Result<(), EpochError> {
        let temp = self.dir.join(EPOCH_TEMP);
        let path = self.dir.join(EPOCH_FILE);
        let fail = |path: &Path| {
            let path = path.to_owned();
            move |source| EpochError { path, source }
        };
        let mut file = File::create(&temp).map_err(fail(&temp))?;
        file.write_all(format!("{} {state}\n", self.epoch).as_bytes()).map_err(fail(&temp))?;
        file.sync_all().map_err(fail(&temp))?;
        drop(file);
        fs::rename(&temp, &path).map_err(fail(&path))?;
        sync_dir(&self.dir).map_err(fail(&self.dir))
    }
}

/// A new epoch: now, in ns, and above `previous`.
fn new_epoch(previous: u64) -> u64 {
    crate::model::now_ns().max(previous.saturating_add(1)).max(1)
}

fn read(path: &Path) -> Previous {
    let text = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Previous::Missing,
        Err(e) => return Previous::Unreadable(e.to_string()),
    };
    let Ok(text) = std::str::from_utf8(&text) else {
        return Previous::Unreadable("not UTF-8".to_owned());
    };
    let mut words = text.split_ascii_whitespace();
    let (Some(epoch), Some(state), None) = (words.next(), words.next(), words.next()) else {
        return Previous::Unreadable(format!("expected \"EPOCH STATE\", found {:?}", shown(text)));
    };
    let epoch = match epoch.parse::<u64>() {
        Ok(0) | Err(_) => return Previous::Unreadable(format!("bad epoch {:?}", shown(epoch))),
        Ok(e) => e,
    };
    match state {
        CLEAN => Previous::Clean(epoch),
        RUNNING => Previous::Running(epoch),
        other => Previous::Unreadable(format!("unknown state {:?}", shown(other))),
    }
}

/// At most 64 characters of what the file held, for a log line.
fn shown(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::TempDir;
    use super::*;

    fn contents(dir: &Path) -> String {
        fs::read_to_string(dir.join(EPOCH_FILE)).unwrap()
    }

    #[test]
    fn a_fresh_directory_gets_a_new_epoch_marked_running() {
        let dir = TempDir::new("fresh");
        let before = crate::model::now_ns();
        let e = EpochFile::open(&dir.0).unwrap();
        assert!(!e.was_clean());
        assert!(e.epoch() >= before && e.epoch() <= crate::model::now_ns(), "the epoch is the time in ns");
        assert_eq!(contents(&dir.0), format!("{} running\n", e.epoch()));
        assert!(!dir.0.join(EPOCH_TEMP).exists());
    }

    #[test]
    fn a_clean_run_is_continued_under_the_same_epoch() {
        let dir = TempDir::new("clean");
        let first = EpochFile::open(&dir.0).unwrap();
        let epoch = first.epoch();
        first.mark_clean().unwrap();
        assert_eq!(contents(&dir.0), format!("{epoch} clean\n"));
        let second = EpochFile::open(&dir.0).unwrap();
        assert!(second.was_clean());
        assert_eq!(second.epoch(), epoch);
        // Running again: a crash now must not reuse it.
        assert_eq!(contents(&dir.0), format!("{epoch} running\n"));
        drop(second);
        let third = EpochFile::open(&dir.0).unwrap();
        assert!(!third.was_clean());
        assert!(third.epoch() > epoch);
    }

    #[test]
    fn a_run_that_did_not_mark_clean_gets_a_new_epoch_above_the_old() {
        let dir = TempDir::new("crash");
        let first = EpochFile::open(&dir.0).unwrap().epoch();
        let second = EpochFile::open(&dir.0).unwrap();
        assert!(!second.was_clean());
        assert!(second.epoch() > first);
        // Even with the clock behind the recorded epoch.
        let future = u64::MAX - 10;
        fs::write(dir.0.join(EPOCH_FILE), format!("{future} running\n")).unwrap();
        let third = EpochFile::open(&dir.0).unwrap();
        assert_eq!(third.epoch(), future + 1);
    }

    #[test]
    fn a_garbage_file_gives_a_new_epoch_and_no_panic() {
        let garbage: [&[u8]; 10] = [
            b"",
            b"\n",
            b"hello",
            b"123",
            b"0 clean",
            b"-5 clean",
            b"18446744073709551616 clean",
            b"42 clean extra",
            b"42 sleeping",
            b"\xff\xfe 42 clean",
        ];
        for bytes in garbage {
            let dir = TempDir::new("garbage");
            fs::write(dir.0.join(EPOCH_FILE), bytes).unwrap();
            let e = EpochFile::open(&dir.0).unwrap();
            assert!(!e.was_clean(), "{bytes:?}");
            assert!(e.epoch() > 1_000_000_000_000_000_000, "{bytes:?}: a time in ns, got {}", e.epoch());
            assert_eq!(contents(&dir.0), format!("{} running\n", e.epoch()));
        }
        // A directory where the file should be is unreadable, and cannot
        // be replaced either: an error naming it, still no panic.
        let dir = TempDir::new("dir");
        fs::create_dir(dir.0.join(EPOCH_FILE)).unwrap();
        let err = EpochFile::open(&dir.0).unwrap_err();
        assert_eq!(err.path, dir.0.join(EPOCH_FILE), "{err}");
        // A missing directory cannot be written.
        let gone = dir.0.join("missing");
        let err = EpochFile::open(&gone).unwrap_err();
        assert_eq!(err.path, gone.join(EPOCH_TEMP), "{err}");
        // Extra whitespace is fine.
        fs::remove_dir(dir.0.join(EPOCH_FILE)).unwrap();
        fs::write(dir.0.join(EPOCH_FILE), "  77\tclean \r\n").unwrap();
        let e = EpochFile::open(&dir.0).unwrap();
        assert_eq!((e.epoch(), e.was_clean()), (77, true));
    }
}

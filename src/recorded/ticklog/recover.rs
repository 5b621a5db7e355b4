//! Crash recovery: cutting the torn tail a crash leaves at the end of the
//! last segment, so the log reads back every complete record and nothing
//! else.
//!
//! A crash can cut a `write` short (the kernel copies page by page), so the
//! last segment may end in a partial or CRC-failing record. Only the last
//! segment can: the writer rolls only after a write completed. Damage
//! larger than a torn write ([`MAX_RECOVERY_CUT`]) is logged and left for a
//! human, never cut. `docs/TICKLOG.md` ("Recovery") states the rules.
//!
//! Imports: its siblings `error`, `format` and `segment`, and
//! `crate::recorded::source`.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use super::error::TickLogError;
use super::format::HEADER_LEN;
use super::segment::{sync_dir, SegmentFile};
use crate::recorded::source::SourceError;

/// The most bytes recovery cuts from a segment. A longer "tail" is not a
/// torn write but damage in the middle of the file, which recovery leaves
/// as it is (and logs) rather than destroying good records after it.
pub const MAX_RECOVERY_CUT: u64 = 8 << 20;

/// A torn tail found and cut off when a log directory was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The segment that was cut.
    pub path: PathBuf,
    /// Its new length: the end of the last complete record.
    pub offset: u64,
    /// Bytes removed.
    pub dropped_bytes: u64,
}

/// Scans the segment at `path` and cuts its torn tail, if any: the first
/// record that is incomplete, too long or fails its CRC, and everything
/// after it. A file too short to hold a header (a crash right after it was
/// created) is removed.
/// [`TickLogWriter::open`](crate::recorded::ticklog::TickLogWriter::open)
/// runs this on the last segment; it is public for tools that repair a log
/// without writing.
///
/// Returns `Ok(None)` when there is nothing to cut, and also when the cut
/// would drop more than [`MAX_RECOVERY_CUT`] bytes: that is damage, not a
/// torn write, so the file is left as it is and an error is logged (the
/// reader will report the damage with its exact offset). A header that is
/// complete but not a tick log header this version reads is
/// [`TickLogError::UnreadableSegment`]; a failed read, cut or sync is
/// [`TickLogError::Io`].
pub fn recover_segment(path: &Path) -> Result<Option<Recovery>, TickLogError> {
    let io = |e| TickLogError::io(path, e);
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    if file_len < HEADER_LEN as u64 {
        drop(file);
        fs::remove_file(path).map_err(io)?;
        if let Some(dir) = path.parent() {
            sync_dir(dir).map_err(|e| TickLogError::io(dir, e))?;
        }
        let recovery = Recovery { path: path.to_owned(), offset: 0, dropped_bytes: file_len };
        tracing::warn!(
            path = %path.display(),
            offset = 0,
            dropped_bytes = file_len,
            "tick log: removed a segment with an incomplete header (crash right after it was created)"
        );
        return Ok(Some(recovery));
    }
    let mut seg = SegmentFile::new(path.to_owned(), file, Vec::new());
    seg.read_header().map_err(TickLogError::from_segment)?;
    let (offset, why) = loop {
        match seg.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(SourceError::Corrupt { offset, reason, .. } | SourceError::Truncated { offset, reason, .. }) => {
                break (offset, reason)
            }
            Err(e) => return Err(TickLogError::from_segment(e)),
        }
    };
    let dropped_bytes = file_len.saturating_sub(offset);
    if dropped_bytes > MAX_RECOVERY_CUT {
        tracing::error!(
            path = %path.display(),
            offset,
            bytes_after = dropped_bytes,
            reason = %why,
            "tick log segment is damaged, not torn: more than {MAX_RECOVERY_CUT} bytes follow the bad record, so \
             nothing was cut; the file is left as it is and a new segment starts after it"
        );
        return Ok(None);
    }
    let file = seg.into_file();
    file.set_len(offset).map_err(io)?;
    file.sync_all().map_err(io)?;
    tracing::warn!(
        path = %path.display(),
        offset,
        dropped_bytes,
        reason = %why,
        "tick log: cut a torn tail left by a crash"
    );
    Ok(Some(Recovery { path: path.to_owned(), offset, dropped_bytes }))
}

//! A file reader that remembers its own read errors.
//!
//! The compressed formats (gzip, zstd) read through a decompressor, which
//! reports a failed read of the file and a corrupt byte stream alike; the
//! flag set here tells the two apart, so a bad disk is reported as an I/O
//! error and a bad file as corrupt.

use std::io::Read;

/// A file reader that marks its own read errors, so the compressed-format
/// readers can tell an I/O error of the file from the decompressor's
/// complaints about the bytes (I/O error vs corrupt file).
pub(crate) struct Watched<R> {
    /// The file.
    pub(crate) inner: R,
    /// Set by a read error of `inner`.
    pub(crate) failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != std::io::ErrorKind::Interrupted {
                self.failed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
    }
}

//! INTERFACE STUB, being implemented.

use std::path::Path;
use std::sync::Arc;

use super::{Event, Format, Source, SourceError};

/// Reader of one file in this format.
pub struct DbnReader {}

impl DbnReader {
    /// Opens the file.
    pub fn open(path: &Path) -> Result<DbnReader, SourceError> {
        let _ = path;
        todo!()
    }
}

impl Source for DbnReader {
    fn next_event(&mut self) -> Result<Option<Event>, SourceError> {
        todo!()
    }
    fn symbol(&self, id: u32) -> Arc<str> {
        let _ = id;
        todo!()
    }
    fn format(&self) -> Format {
        Format::Dbn
    }
}

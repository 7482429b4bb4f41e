//! Sources find devices. Each sits behind the small [`DeviceSource`] trait so
//! the stages after it can be tested with any device table, and each reads
//! only what a handler's [`Requirements`] ask for.

pub mod monitor;
pub mod path;
pub mod udev;
pub mod watch;

use std::path::PathBuf;

use crate::handler::bindings::Requirements;
use crate::snapshot::DeviceTable;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("udev: {context}: {source}")]
    Udev { context: String, source: std::io::Error },
    #[error("path pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
}

/// Something that finds devices.
pub trait DeviceSource: Send + Sync {
    /// Adds the devices `needs` asks for (and their ancestors) to `table`.
    /// `roots` confines anything the source resolves by path.
    fn collect(&self, needs: &Requirements, roots: &[PathBuf], table: &mut DeviceTable) -> Result<(), SourceError>;

    /// One device and its ancestors, read again after an event about it.
    /// Sources that have no events answer `None`.
    fn reread(&self, syspath: &std::path::Path, needs: &Requirements, candidate: bool) -> Option<DeviceTable> {
        let _ = (syspath, needs, candidate);
        None
    }

    /// One path a pattern matches, read again after an inotify event named
    /// it: `Some` table holding it if this source serves paths and it is
    /// there, `Some` empty table if it serves paths and it is gone, `None`
    /// if this source does not serve paths.
    fn reread_path(&self, path: &std::path::Path, roots: &[PathBuf]) -> Option<DeviceTable> {
        let _ = (path, roots);
        None
    }
}

/// Every source the agent reads, asked in turn.
pub struct Sources {
    sources: Vec<Box<dyn DeviceSource>>,
}

impl Sources {
    pub fn new(sources: Vec<Box<dyn DeviceSource>>) -> Self {
        Sources { sources }
    }

    /// The local machine: libudev and the filesystem.
    pub fn local() -> Self {
        Sources::new(vec![Box::new(udev::UdevSource), Box::new(path::PathSource)])
    }

    /// Everything `needs` asks for, from every source.
    pub fn collect(&self, needs: &Requirements, roots: &[PathBuf]) -> Result<DeviceTable, SourceError> {
        let mut table = DeviceTable::default();
        for source in &self.sources {
            source.collect(needs, roots, &mut table)?;
        }
        Ok(table)
    }

    /// One device (by sysfs path) and its ancestors, as `needs` asks for
    /// them, after a udev event; `None` if no source knows it (it is gone).
    pub fn reread(&self, syspath: &std::path::Path, needs: &Requirements, candidate: bool) -> Option<DeviceTable> {
        self.sources.iter().find_map(|source| source.reread(syspath, needs, candidate))
    }

    /// One matched path read again after an inotify event: an empty table
    /// when it is gone (or no source serves paths).
    pub fn reread_path(&self, path: &std::path::Path, roots: &[PathBuf]) -> DeviceTable {
        self.sources.iter().find_map(|source| source.reread_path(path, roots)).unwrap_or_default()
    }
}

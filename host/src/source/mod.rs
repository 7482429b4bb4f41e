//! Sources find devices. Each sits behind the small [`DeviceSource`] trait so
//! the stages after it can be tested with any device table, and each reads
//! only what a handler's [`Requirements`] ask for. Beside them, the watches
//! that say when to look again: the udev [`monitor`] and inotify ([`watch`]).
//!
//! Sources are the first stage: they import the contract's types and the
//! model, nothing of the stages after them.

mod memory;
pub mod monitor;
pub mod path;
mod udev;
pub mod usbip;
pub mod watch;

use std::path::PathBuf;

use crate::contract::Requirements;
use crate::model::DeviceTable;
pub use memory::MemorySource;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("udev: {context}: {source}")]
    Udev { context: &'static str, source: std::io::Error },
    #[error("path pattern {pattern:?}: {problem}")]
    Pattern { pattern: String, problem: PatternProblem },
}

/// Why a path pattern cannot be expanded.
#[derive(Debug, thiserror::Error)]
pub enum PatternProblem {
    #[error("must be an absolute path without `.` or `..`")]
    NotNormal,
    #[error("lies outside the allowed roots ({0}); add a root with `allowedRoots`")]
    OutsideRoots(String),
    #[error(transparent)]
    Syntax(#[from] glob::PatternError),
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

    /// The local machine (libudev and the filesystem) and the devices of
    /// USB/IP servers, as last listed into `remote`.
    pub fn node(remote: usbip::RemoteDevices) -> Self {
        Sources::new(vec![Box::new(udev::UdevSource), Box::new(path::PathSource), Box::new(usbip::UsbipSource(remote))])
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

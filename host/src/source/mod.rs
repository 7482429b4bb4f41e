//! Sources find devices. Each sits behind the small [`DeviceSource`] trait so
//! the stages after it can be tested with any device table, and each reads
//! only what a handler's [`Requirements`] ask for.

pub mod path;
pub mod udev;

use std::path::PathBuf;

use crate::handler::bindings::{Requirements, Snapshot};
use crate::snapshot::SnapshotBuilder;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("udev: {context}: {source}")]
    Udev { context: String, source: std::io::Error },
    #[error("path pattern {pattern:?}: {reason}")]
    Pattern { pattern: String, reason: String },
}

/// Something that finds devices.
pub trait DeviceSource: Send + Sync {
    /// Adds the devices `needs` asks for (and their ancestors) to `builder`.
    /// `roots` confines anything the source resolves by path.
    fn collect(&self, needs: &Requirements, roots: &[PathBuf], builder: &mut SnapshotBuilder) -> Result<(), SourceError>;
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

    pub fn snapshot(&self, needs: &Requirements, roots: &[PathBuf]) -> Result<Snapshot, SourceError> {
        let mut builder = SnapshotBuilder::default();
        for source in &self.sources {
            source.collect(needs, roots, &mut builder)?;
        }
        Ok(builder.finish())
    }
}

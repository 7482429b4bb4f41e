//! A source that serves a device table held in memory: what the evaluation's
//! tests and `devsieve bench` feed the stages after the sources with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{DeviceSource, SourceError};
use crate::contract::Requirements;
use crate::model::DeviceTable;

/// Serves whatever its table holds now: `collect` copies it, `reread` and
/// `reread_path` give a device's record and its ancestors' (a devpath is its
/// syspath without `/sys`, a path is its own devpath).
#[derive(Clone, Debug, Default)]
pub struct MemorySource(Arc<Mutex<DeviceTable>>);

impl MemorySource {
    /// The table, to change what the source serves.
    pub fn table(&self) -> MutexGuard<'_, DeviceTable> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl DeviceSource for MemorySource {
    fn collect(&self, _: &Requirements, _: &[PathBuf], table: &mut DeviceTable) -> Result<(), SourceError> {
        table.absorb(&self.table());
        Ok(())
    }

    fn reread(&self, syspath: &Path, _: &Requirements, _: bool) -> Option<DeviceTable> {
        let devpath = syspath.strip_prefix("/sys").ok()?.to_string_lossy().into_owned();
        self.table().chain(&format!("/{devpath}"))
    }

    fn reread_path(&self, path: &Path, _: &[PathBuf]) -> Option<DeviceTable> {
        Some(self.table().chain(&path.to_string_lossy()).unwrap_or_default())
    }
}

//! Device events as the sources report them: a udev event, or what a batch
//! of inotify events says changed among watched paths.

use std::collections::BTreeSet;
use std::path::PathBuf;

/// What a udev event says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Add,
    Change,
    Remove,
    Bind,
    Unbind,
}

/// A udev event, as the monitor hands it on.
#[derive(Clone, Debug)]
pub struct UdevEvent {
    pub action: Action,
    /// `/devices/...`: the table's key.
    pub devpath: String,
    /// `/sys/devices/...`: where to read the device again.
    pub syspath: PathBuf,
    pub subsystem: String,
}

/// What one batch of inotify events says changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathChange {
    /// Entries created, deleted or renamed (either name of a rename).
    pub entries: BTreeSet<PathBuf>,
    /// Something the entries cannot describe happened: look at everything
    /// again (and plan the watches again).
    pub rescan: bool,
}

impl PathChange {
    /// A change no entry describes: look at everything again.
    pub fn everything() -> PathChange {
        PathChange { entries: BTreeSet::new(), rescan: true }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && !self.rescan
    }

    pub fn extend(&mut self, other: PathChange) {
        self.entries.extend(other.entries);
        self.rescan |= other.rescan;
    }
}

//! Evaluating one resource, incrementally.
//!
//! A [`ResourceEval`] keeps what its sources found (a [`DeviceTable`]) and
//! the handler's verdict on every candidate. A change to the table — a udev
//! event, a re-read directory — re-asks `select` about the candidates it
//! touched only (the device itself or one of its ancestors changed), and
//! calls `group` over the selected set only when that set, or a selected
//! device, changed. One event among 10,000 devices therefore costs about one
//! device's evaluation, as the contract intends.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap as HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::discover::{Advertised, Prepared, ResourceError, advertise};
use crate::handler::Runtime;
use crate::snapshot::{Changes, DeviceTable};
use crate::source::Sources;

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
    pub syspath: std::path::PathBuf,
    pub subsystem: String,
}

/// The result of one step, when the step asked the handler anything.
#[derive(Debug)]
pub struct Evaluation {
    /// Groups are shared, not copied, with the registry and the next evaluation.
    pub outcome: Result<Vec<Arc<Advertised>>, ResourceError>,
    pub took: Duration,
}

pub struct ResourceEval {
    pub prepared: Prepared,
    table: DeviceTable,
    /// Candidate devpath → selected, for every candidate asked about.
    verdicts: HashMap<String, bool>,
    /// After a failure nothing cached can be trusted: ask about everything.
    stale: bool,
    last_groups: Vec<Arc<Advertised>>,
}

impl ResourceEval {
    pub fn new(prepared: Prepared) -> Self {
        ResourceEval {
            prepared,
            table: DeviceTable::default(),
            verdicts: HashMap::default(),
            stale: true,
            last_groups: Vec::new(),
        }
    }

    /// Whether this resource reads udev devices at all.
    pub fn wants_udev(&self) -> bool {
        let needs = &self.prepared.needs;
        needs.all_udev || !needs.subsystems.is_empty()
    }

    /// Whether this resource expands path patterns.
    pub fn wants_paths(&self) -> bool {
        !self.prepared.needs.paths.is_empty()
    }

    pub fn table(&self) -> &DeviceTable {
        &self.table
    }

    /// Collects everything again and evaluates what changed since the last
    /// collection (everything, the first time); `None` if nothing did.
    pub fn rescan(&mut self, runtime: &Runtime, sources: &Sources) -> Option<Evaluation> {
        let started = Instant::now();
        match self.take_rescan(sources) {
            Ok(changes) => self.evaluate(runtime, changes, started),
            Err(error) => Some(Evaluation { outcome: Err(error), took: started.elapsed() }),
        }
    }

    /// Takes in a udev event and evaluates; `None` if it did not concern
    /// this resource.
    pub fn on_udev(&mut self, runtime: &Runtime, sources: &Sources, event: &UdevEvent) -> Option<Evaluation> {
        let started = Instant::now();
        let changes = self.take_udev(sources, event);
        self.evaluate(runtime, changes, started)
    }

    /// Updates the table from a full re-collection.
    pub fn take_rescan(&mut self, sources: &Sources) -> Result<Changes, ResourceError> {
        let resource = &self.prepared.resource;
        match sources.collect(&self.prepared.needs, &resource.allowed_roots) {
            Ok(table) => Ok(self.table.replace(table)),
            Err(error) => {
                self.stale = true;
                Err(ResourceError::Source { resource: resource.name.clone(), error })
            }
        }
    }

    /// Updates the table from a udev event (reading the device again).
    pub fn take_udev(&mut self, sources: &Sources, event: &UdevEvent) -> Changes {
        if !self.wants_udev() {
            return Changes::default();
        }
        let needs = &self.prepared.needs;
        let candidate = needs.all_udev || needs.subsystems.contains(&event.subsystem);
        match event.action {
            Action::Remove if self.table.contains(&event.devpath) => self.table.remove_subtree(&event.devpath),
            Action::Remove => Changes::default(),
            _ if candidate || self.table.contains(&event.devpath) => {
                match sources.reread(&event.syspath, needs, candidate) {
                    Some(update) => self.table.merge(update),
                    // Gone again before it could be read.
                    None => self.table.remove_subtree(&event.devpath),
                }
            }
            _ => Changes::default(),
        }
    }

    /// The groups of the last successful evaluation.
    pub fn last_groups(&self) -> &[Arc<Advertised>] {
        &self.last_groups
    }

    /// Re-selects the candidates `changes` touched and regroups if the
    /// selection changed; `None` if the handler had nothing to be asked.
    pub fn evaluate(&mut self, runtime: &Runtime, changes: Changes, started: Instant) -> Option<Evaluation> {
        let resource = &self.prepared.resource;
        let handler_error = |error| ResourceError::Handler { resource: resource.name.clone(), error };

        let mut selection_changed = self.stale;
        for removed in &changes.removed {
            selection_changed |= self.verdicts.remove(removed) == Some(true);
        }
        let dirty: BTreeSet<&str> = if self.stale {
            self.verdicts.clear();
            self.table.candidates().collect()
        } else {
            self.table.candidates_under(&changes.changed)
        };
        if dirty.is_empty() && !selection_changed {
            return None;
        }
        if !dirty.is_empty() {
            let snapshot = self.table.snapshot(dirty.iter().copied());
            let verdicts = match self.prepared.handler.select(runtime, &resource.handler_config, &snapshot) {
                Ok(verdicts) => verdicts,
                Err(error) => {
                    self.stale = true;
                    return Some(Evaluation { outcome: Err(handler_error(error)), took: started.elapsed() });
                }
            };
            for (devpath, selected) in dirty.iter().zip(verdicts) {
                let before = self.verdicts.insert(devpath.to_string(), selected);
                // A selected device whose record changed may change its group.
                selection_changed |= selected || before == Some(true);
            }
        }
        if !selection_changed {
            return Some(Evaluation { outcome: Ok(self.last_groups.clone()), took: started.elapsed() });
        }
        let selected: Vec<&str> =
            self.table.candidates().filter(|c| self.verdicts.get(*c).copied().unwrap_or(false)).collect();
        let snapshot = self.table.snapshot(selected);
        match self.prepared.handler.group(runtime, &resource.handler_config, &snapshot, &resource.allowed_roots) {
            Ok(groups) => {
                let mut advertised: Vec<Arc<Advertised>> =
                    groups.into_iter().map(|g| Arc::new(advertise(&snapshot, g))).collect();
                advertised.sort_by(|a, b| a.id.cmp(&b.id));
                self.stale = false;
                self.last_groups = advertised.clone();
                Some(Evaluation { outcome: Ok(advertised), took: started.elapsed() })
            }
            Err(error) => {
                self.stale = true;
                Some(Evaluation { outcome: Err(handler_error(error)), took: started.elapsed() })
            }
        }
    }

    /// Whether a change under `dir` may concern this resource's patterns.
    pub fn watches(&self, changed: &Path) -> bool {
        self.prepared.needs.paths.iter().any(|pattern| {
            let literal = crate::source::path::literal_prefix(pattern);
            changed.starts_with(&literal) || literal.starts_with(changed)
        })
    }
}

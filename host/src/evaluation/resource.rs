//! Evaluating one resource, incrementally.
//!
//! A [`ResourceEval`] keeps what its sources found (a [`DeviceTable`]) and
//! the handler's verdict on every candidate. A change to the table — a udev
//! event, a file inotify named — re-asks `select` about the candidates it
//! touched only (the device itself or one of its ancestors changed). A
//! device that stands alone comes back with its groups; the others carry a
//! key, and `group` is called over the devices of the keys that changed
//! only. One event among 10,000 devices therefore costs about one device's
//! evaluation, as the contract intends.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;

use super::prepare::{Prepared, ResourceError};
use crate::contract::{SnapshotView, Verdict};
use crate::handler::{Error as HandlerError, Invalid, Runtime};
use crate::model::{Action, Advertised, Changes, DeviceTable, PathChange, UdevEvent};
use crate::source::Sources;
use crate::source::path::{Bearing, bearing, check_pattern};

/// The result of one step, when the step asked the handler anything.
#[derive(Debug)]
pub struct Evaluation {
    /// Groups are shared, not copied, with the registry and the next evaluation.
    pub outcome: Result<Vec<Arc<Advertised>>, ResourceError>,
    pub took: Duration,
}

/// What `select` said about a selected device, kept until it changes.
#[derive(Debug)]
enum Held {
    /// It stands alone: these are its groups.
    Alone(Vec<Arc<Advertised>>),
    /// `group` makes its groups with the other devices of this key.
    Grouped(Arc<str>),
}

pub struct ResourceEval {
    pub prepared: Prepared,
    table: DeviceTable,
    selection: Selection,
    /// After a failure nothing cached can be trusted: ask about everything.
    stale: bool,
    last_groups: Vec<Arc<Advertised>>,
}

/// What the handler said about the table, kept between evaluations.
#[derive(Default)]
struct Selection {
    /// Candidate devpath → what `select` said, for every selected candidate.
    held: HashMap<String, Held>,
    /// Per key, the groups `group` made of its devices.
    keyed: HashMap<Arc<str>, Vec<Arc<Advertised>>>,
    /// Every group in force, alone or keyed, by kubelet id.
    advertised: BTreeMap<String, Arc<Advertised>>,
}

/// Why an evaluation step failed.
enum StepError {
    Handler(HandlerError),
    /// What the handler returned does not fit together: two devices' groups
    /// with one kubelet id, a group joining devices of different keys.
    Invalid {
        call: &'static str,
        problem: Box<Invalid>,
    },
}

impl ResourceEval {
    pub fn new(prepared: Prepared) -> Self {
        ResourceEval {
            prepared,
            table: DeviceTable::default(),
            selection: Selection::default(),
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
    /// Whether it takes the devices of USB/IP servers.
    pub fn wants_remote(&self) -> bool {
        self.prepared.needs.usbip
    }

    pub fn wants_paths(&self) -> bool {
        !self.prepared.needs.paths.is_empty()
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
            Err(source) => {
                self.stale = true;
                Err(ResourceError::Source { resource: resource.name.clone(), source })
            }
        }
    }

    /// Takes in what inotify reported and evaluates; `None` if nothing
    /// changed for this resource.
    pub fn on_paths(&mut self, runtime: &Runtime, sources: &Sources, change: &PathChange) -> Option<Evaluation> {
        let started = Instant::now();
        match self.take_paths(sources, change) {
            Ok(changes) => self.evaluate(runtime, changes, started),
            Err(error) => Some(Evaluation { outcome: Err(error), took: started.elapsed() }),
        }
    }

    /// Updates the table from what inotify reported: each entry a pattern
    /// matches is read again on its own, unless [`paths_need_rescan`]
    /// (Self::paths_need_rescan), when everything is collected again.
    pub fn take_paths(&mut self, sources: &Sources, change: &PathChange) -> Result<Changes, ResourceError> {
        if !self.wants_paths() {
            return Ok(Changes::default());
        }
        if self.paths_need_rescan(change) {
            return self.take_rescan(sources);
        }
        let matched: Vec<&Path> =
            change.entries.iter().map(PathBuf::as_path).filter(|e| self.bearing(e) == Bearing::Match).collect();
        let mut changes = Changes::default();
        for entry in matched {
            let read = sources.reread_path(entry, &self.prepared.resource.allowed_roots);
            if read.is_empty() {
                changes.extend(self.table.remove_subtree(&entry.to_string_lossy()));
            } else {
                changes.extend(self.table.merge(read));
            }
        }
        Ok(changes)
    }

    /// Whether `change` cannot be taken entry by entry: inotify could not
    /// name what changed, an entry may be a directory on the way to matches,
    /// or a pattern is refused (the full collection reports why).
    pub fn paths_need_rescan(&self, change: &PathChange) -> bool {
        let needs = &self.prepared.needs;
        self.wants_paths()
            && (change.rescan
                || needs.paths.iter().any(|p| check_pattern(p, &self.prepared.resource.allowed_roots).is_err())
                || change.entries.iter().any(|e| self.bearing(e) == Bearing::OnTheWay))
    }

    /// How `entry` bears on this resource's patterns: the strongest bearing.
    fn bearing(&self, entry: &Path) -> Bearing {
        self.prepared.needs.paths.iter().map(|pattern| bearing(pattern, entry)).max().unwrap_or(Bearing::None)
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

    /// Re-selects the candidates `changes` touched and regroups the keys
    /// whose devices changed; `None` if the handler had nothing to be asked.
    pub fn evaluate(&mut self, runtime: &Runtime, changes: Changes, started: Instant) -> Option<Evaluation> {
        let full = self.stale;
        let mut dirty_keys: BTreeSet<Arc<str>> = BTreeSet::new();
        let mut released = false;
        if full {
            self.selection = Selection::default();
        } else {
            for removed in &changes.removed {
                if let Some(held) = self.selection.held.remove(removed) {
                    release(&mut self.selection.advertised, held, &mut dirty_keys);
                    released = true;
                }
            }
        }
        let dirty: Vec<&str> = if full {
            self.table.candidates().collect()
        } else {
            self.table.candidates_under(&changes.changed).into_iter().collect()
        };
        if dirty.is_empty() && !released && !full {
            return None;
        }
        let outcome = self.selection.step(runtime, &self.prepared, &self.table, &dirty, dirty_keys);
        let outcome = match outcome {
            Ok(()) => {
                self.stale = false;
                self.last_groups = self.selection.advertised.values().cloned().collect();
                Ok(self.last_groups.clone())
            }
            Err(error) => {
                self.stale = true;
                let resource = self.prepared.resource.name.clone();
                let source = match error {
                    StepError::Handler(error) => error,
                    StepError::Invalid { call, problem } => self.prepared.handler.invalid(call, *problem),
                };
                Err(ResourceError::Handler { resource, source })
            }
        };
        Some(Evaluation { outcome, took: started.elapsed() })
    }
}

impl Selection {
    /// `select` over `dirty` (devpaths, in order), then `group` over every
    /// device of the keys that changed, folding both into `advertised`.
    fn step(
        &mut self,
        runtime: &Runtime,
        prepared: &Prepared,
        table: &DeviceTable,
        dirty: &[&str],
        mut dirty_keys: BTreeSet<Arc<str>>,
    ) -> Result<(), StepError> {
        let resource = &prepared.resource;
        let handler = &prepared.handler;
        let config = resource.handler_config.as_str();
        let roots = resource.allowed_roots.as_slice();
        let extras = resource.extra_device_nodes.as_slice();
        if !dirty.is_empty() {
            let snapshot = table.snapshot(dirty.iter().copied());
            let verdicts = handler.select(runtime, config, &snapshot, roots).map_err(StepError::Handler)?;
            for (devpath, verdict) in dirty.iter().zip(verdicts) {
                if let Some(before) = self.held.remove(*devpath) {
                    release(&mut self.advertised, before, &mut dirty_keys);
                }
                let held = match verdict {
                    Verdict::Skip => continue,
                    Verdict::Alone(groups) => {
                        let groups: Vec<Arc<Advertised>> =
                            groups.into_iter().map(|g| Arc::new(Advertised::new(&snapshot, g, extras))).collect();
                        for group in &groups {
                            insert(&mut self.advertised, group, "select")?;
                        }
                        Held::Alone(groups)
                    }
                    Verdict::Grouped(key) => {
                        let key: Arc<str> = dirty_keys.get(key.as_str()).cloned().unwrap_or_else(|| key.into());
                        dirty_keys.insert(key.clone());
                        Held::Grouped(key)
                    }
                };
                self.held.insert(devpath.to_string(), held);
            }
        }
        if dirty_keys.is_empty() {
            return Ok(());
        }
        for key in &dirty_keys {
            for group in self.keyed.remove(key).into_iter().flatten() {
                self.advertised.remove(&group.id);
            }
        }
        let mut members: Vec<(&str, &Arc<str>)> = self
            .held
            .iter()
            .filter_map(|(devpath, held)| match held {
                Held::Grouped(key) if dirty_keys.contains(key) => Some((devpath.as_str(), key)),
                _ => None,
            })
            .collect();
        if members.is_empty() {
            return Ok(());
        }
        members.sort_unstable();
        let snapshot = table.snapshot(members.iter().map(|(devpath, _)| *devpath));
        let groups = handler.group(runtime, config, &snapshot, roots).map_err(StepError::Handler)?;
        let key_of: HashMap<u32, &Arc<str>> =
            snapshot.candidates.iter().zip(members.iter().map(|(_, key)| *key)).map(|(&i, key)| (i, key)).collect();
        let mut keyed: HashMap<Arc<str>, Vec<Arc<Advertised>>> = HashMap::default();
        for group in groups {
            let key = group_key(&snapshot, &key_of, &group.members, &group.id)?;
            let group = Arc::new(Advertised::new(&snapshot, group, extras));
            insert(&mut self.advertised, &group, "group")?;
            keyed.entry(key.clone()).or_default().push(group);
        }
        self.keyed.extend(keyed);
        Ok(())
    }
}

/// Takes a device's alone groups out of `advertised`, or marks its key for regrouping.
fn release(advertised: &mut BTreeMap<String, Arc<Advertised>>, held: Held, dirty_keys: &mut BTreeSet<Arc<str>>) {
    match held {
        Held::Alone(groups) => {
            for group in groups {
                advertised.remove(&group.id);
            }
        }
        Held::Grouped(key) => {
            dirty_keys.insert(key);
        }
    }
}

/// Adds `group`, refusing a kubelet id that another device's group holds.
fn insert(
    advertised: &mut BTreeMap<String, Arc<Advertised>>,
    group: &Arc<Advertised>,
    call: &'static str,
) -> Result<(), StepError> {
    let first_device = |group: &Advertised| group.members.first().map_or("no device", String::as_str).to_string();
    match advertised.insert(group.id.clone(), group.clone()) {
        None => Ok(()),
        Some(other) => Err(StepError::Invalid {
            call,
            problem: Box::new(Invalid::SameDeviceId {
                id: group.id.clone(),
                first: other.handler_id.clone(),
                first_device: first_device(&other),
                second: group.handler_id.clone(),
                second_device: first_device(group),
            }),
        }),
    }
}

/// The key of the candidates a group of `group` names (they must share one).
fn group_key<'k>(
    snapshot: &SnapshotView<'_>,
    key_of: &HashMap<u32, &'k Arc<str>>,
    members: &[u32],
    id: &str,
) -> Result<&'k Arc<str>, StepError> {
    let mut keys = members.iter().filter_map(|m| key_of.get(m).map(|key| (*m, *key)));
    // `check::groups` made sure a group names at least one candidate.
    let Some((first, key)) = keys.next() else {
        return Err(StepError::Invalid { call: "group", problem: Box::new(Invalid::NoDevice(id.into())) });
    };
    match keys.find(|(_, other)| *other != key) {
        None => Ok(key),
        Some((second, other)) => Err(StepError::Invalid {
            call: "group",
            problem: Box::new(Invalid::MixedKeys {
                id: id.into(),
                first: snapshot.nodes[first as usize].devpath.into(),
                first_key: key.to_string(),
                second: snapshot.nodes[second as usize].devpath.into(),
                second_key: other.to_string(),
            }),
        }),
    }
}

/// Runs the whole pipeline once over every resource of `config`, whose
/// handlers are in `fetched`: each resource's groups, or why it has none.
pub fn evaluate_once(
    runtime: &Runtime,
    fetched: &super::Fetched,
    sources: &Sources,
    config: &crate::config::Config,
) -> Vec<Result<Vec<Arc<Advertised>>, ResourceError>> {
    super::prepare(runtime, fetched, config)
        .into_iter()
        .map(|prepared| {
            let mut resource = ResourceEval::new(prepared?);
            resource.rescan(runtime, sources).map_or(Ok(Vec::new()), |evaluation| evaluation.outcome)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Incremental evaluation must end where a fresh one does, whatever
    //! changed: the built-ins' partitions (alone, keyed, all) against
    //! devices that come, go and change.

    use super::*;
    use crate::builtin;
    use crate::config::{HandlerRef, Resource};
    use crate::contract::{Node, Origin};
    use crate::handler::{Compiler, Limits};
    use crate::model::node;
    use crate::source::MemorySource;

    fn prepared(runtime: &Runtime, handler: &str, config: &str) -> Prepared {
        let builtin = builtin::get(handler).unwrap();
        let handler_ref = runtime.load(handler, builtin.bytes, builtin.digest).unwrap();
        let needs = handler_ref.needs(runtime, config).unwrap();
        let resource = Resource::plain(format!("devsieve.io/{handler}"), HandlerRef::Builtin(handler.into()), config);
        Prepared { resource, handler: handler_ref, needs }
    }

    fn file(path: &str) -> Node {
        let mut n = node(path);
        n.origin = Origin::Path;
        n.devnode = Some(path.into());
        n.attributes = vec![("type".into(), "char".into())];
        n
    }

    /// A USB device `1-{i}` (1a86:7523, with `serial` if any) and its tty `ttyUSB{i}`.
    fn usb_serial(table: &mut DeviceTable, i: usize, serial: Option<&str>) {
        table.add(node("/devices/usb1"), None, false);
        let usb = format!("/devices/usb1/1-{i}");
        let mut device = node(&usb);
        device.subsystem = "usb".into();
        device.devtype = Some("usb_device".into());
        device.devnode = Some(format!("/dev/bus/usb/001/{i:03}"));
        device.attributes = vec![("idProduct".into(), "7523".into()), ("idVendor".into(), "1a86".into())];
        if let Some(serial) = serial {
            device.attributes.push(("serial".into(), serial.into()));
        }
        table.add(device, Some("/devices/usb1".into()), true);
        let tty = format!("{usb}/1-{i}:1.0/ttyUSB{i}");
        let mut child = node(&tty);
        child.subsystem = "tty".into();
        child.devnode = Some(format!("/dev/ttyUSB{i}"));
        table.add(child, Some(usb), true);
    }

    /// What the groups must be: `group` over every selected device at once,
    /// whatever `select` said about partitions.
    fn whole(runtime: &Runtime, prepared: &Prepared, table: &DeviceTable) -> Vec<Arc<Advertised>> {
        let (handler, resource) = (&prepared.handler, &prepared.resource);
        let all = table.snapshot_all();
        let verdicts = handler.select(runtime, &resource.handler_config, &all, &resource.allowed_roots).unwrap();
        let selected = table.candidates().zip(&verdicts).filter(|(_, v)| !matches!(v, Verdict::Skip)).map(|(c, _)| c);
        let snapshot = table.snapshot(selected);
        let groups = handler.group(runtime, &resource.handler_config, &snapshot, &resource.allowed_roots).unwrap();
        let mut groups: Vec<Arc<Advertised>> =
            groups.into_iter().map(|g| Arc::new(Advertised::new(&snapshot, g, &[]))).collect();
        groups.sort_by(|a, b| a.id.cmp(&b.id));
        groups
    }

    /// Applies each change to the served table, evaluates incrementally and
    /// compares with a fresh evaluation of the same table and with grouping
    /// every selected device at once.
    fn incremental_matches_fresh(handler: &str, config: &str, changes: &[&dyn Fn(&mut DeviceTable)]) {
        let runtime = Runtime::new(None, Limits::default(), Compiler::in_process()).unwrap();
        let source = MemorySource::default();
        let sources = Sources::new(vec![Box::new(source.clone())]);
        let mut eval = ResourceEval::new(prepared(&runtime, handler, config));
        let ids = |groups: &[Arc<Advertised>]| groups.iter().map(|g| g.id.clone()).collect::<Vec<_>>();
        for (step, change) in changes.iter().enumerate() {
            change(&mut source.table());
            if let Some(evaluation) = eval.rescan(&runtime, &sources) {
                evaluation.outcome.unwrap_or_else(|e| panic!("{handler}, step {step}: {e}"));
            }
            let mut fresh = ResourceEval::new(prepared(&runtime, handler, config));
            let fresh = fresh.rescan(&runtime, &sources).unwrap().outcome.unwrap();
            let expected = whole(&runtime, &eval.prepared, &source.table());
            assert_eq!(ids(eval.last_groups()), ids(&expected), "{handler}, step {step}");
            assert_eq!(eval.last_groups(), expected.as_slice(), "{handler}, step {step}");
            assert_eq!(fresh, expected, "{handler}, step {step}: a fresh evaluation");
        }
    }

    #[test]
    fn glob_alone_and_paired_groups() {
        // One single-path group (alone) and a two-path group (grouped together).
        let config = r#"{"groups":[{"paths":[{"path":"/dev/tty*"}]},
            {"paths":[{"path":"/dev/snd/controlC*"},{"path":"/dev/snd/pcmC*"}]}]}"#;
        let add = |paths: &'static [&'static str]| {
            move |t: &mut DeviceTable| {
                for path in paths {
                    t.add(file(path), None, true);
                }
            }
        };
        let remove = |path: &'static str| move |t: &mut DeviceTable| drop(t.remove_subtree(path));
        incremental_matches_fresh(
            "glob",
            config,
            &[
                &add(&["/dev/tty0", "/dev/tty1", "/dev/snd/controlC0", "/dev/snd/pcmC0"]),
                &add(&["/dev/tty2"]),
                &add(&["/dev/snd/controlC1"]),
                &add(&["/dev/snd/pcmC1"]),
                &remove("/dev/tty0"),
                &remove("/dev/snd/pcmC0"),
                &add(&["/dev/other"]),
            ],
        );
    }

    #[test]
    fn usb_id_keys_by_serial_and_owner() {
        let config = r#"{"usb":[{"vendor":"1a86","product":"7523"}],"includeChildren":true}"#;
        let plug = |i: usize, serial: Option<&'static str>| move |t: &mut DeviceTable| usb_serial(t, i, serial);
        let unplug = |i: usize| move |t: &mut DeviceTable| drop(t.remove_subtree(&format!("/devices/usb1/1-{i}")));
        incremental_matches_fresh(
            "usb-id",
            config,
            &[
                &plug(1, Some("A1")),
                &plug(2, None),
                // Same serial as 1-1: both are named by devpath from now on.
                &plug(3, Some("A1")),
                &unplug(1),
                &unplug(3),
                &plug(4, Some("B2")),
            ],
        );
    }

    #[test]
    fn udev_rule_alone_and_recursive() {
        let rule = r#"SUBSYSTEM==\"tty|usb\", ATTRS{idVendor}==\"1a86\""#;
        let plug = |i: usize| move |t: &mut DeviceTable| usb_serial(t, i, None);
        let unplug = |i: usize| move |t: &mut DeviceTable| drop(t.remove_subtree(&format!("/devices/usb1/1-{i}")));
        for recursive in [false, true] {
            let config = format!(r#"{{"udevRules":["{rule}"],"groupRecursive":{recursive}}}"#);
            incremental_matches_fresh("udev-rule", &config, &[&plug(1), &plug(2), &unplug(1), &plug(3)]);
        }
    }
}

//! The inventory stage: what the kubelet is told about each resource.
//!
//! It owns device health. The evaluation tells it which groups each resource
//! has (or that its handler failed); the inventory turns that into kubelet
//! devices — one id per share unit, `Healthy` or `Unhealthy` — and publishes
//! an immutable [`DeviceList`] per resource on a `watch` channel whenever the
//! list changes. Its rules:
//! - a group that disappears stays, `Unhealthy`, for the grace period, so the
//!   kubelet sees it go, then leaves the list (a timer, armed only while a
//!   group is in its grace period);
//! - a failed evaluation keeps the last good groups, all `Unhealthy`, until
//!   an evaluation succeeds again.
//!
//! The set of resources (which the advertiser serves) is published on a
//! second channel, and each resource's last evaluation on a third, for
//! `/status`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub use crate::evaluation::ResourceSpec;
use crate::evaluation::{EvaluationInfo, Update};
use crate::metrics::Metrics;
use crate::model::Advertised;
use crate::support::names;

/// One kubelet device: a share unit of a group.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    pub healthy: bool,
    pub group: Arc<Advertised>,
}

/// Everything the kubelet may know about one resource, as of one change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeviceList {
    /// Kubelet device id → unit, in id order.
    pub units: BTreeMap<String, Unit>,
}

impl DeviceList {
    pub fn healthy(&self) -> usize {
        self.units.values().filter(|u| u.healthy).count()
    }
}

/// A served resource: its spec and its device list.
#[derive(Clone, Debug)]
pub struct Published {
    pub spec: ResourceSpec,
    pub devices: watch::Receiver<Arc<DeviceList>>,
}

/// The resources of the config in force.
#[derive(Clone, Debug, Default)]
pub struct ResourceSet {
    pub resources: BTreeMap<String, Published>,
}

/// What the inventory tells `/status` about one resource.
#[derive(Clone, Debug, Serialize)]
pub struct ResourceStatus {
    pub name: String,
    pub handler: String,
    pub healthy: usize,
    pub unhealthy: usize,
    pub groups: usize,
    pub last_evaluation: Option<EvaluationInfo>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub config_generation: u64,
    /// Why the last config change was refused, if it was.
    pub config_error: Option<String>,
    pub resources: Vec<ResourceStatus>,
}

/// Handles to what the inventory publishes.
#[derive(Clone)]
pub struct Outputs {
    pub resources: watch::Receiver<Arc<ResourceSet>>,
    pub status: watch::Receiver<Arc<Status>>,
}

struct GroupState {
    group: Arc<Advertised>,
    /// When the group was last missing from a successful evaluation.
    gone_since: Option<Instant>,
}

struct ResourceState {
    spec: ResourceSpec,
    groups: BTreeMap<String, GroupState>,
    failing: bool,
    last_evaluation: Option<EvaluationInfo>,
    devices: watch::Sender<Arc<DeviceList>>,
}

impl ResourceState {
    fn new(spec: ResourceSpec) -> Self {
        let (devices, _) = watch::channel(Arc::new(DeviceList::default()));
        ResourceState { spec, groups: BTreeMap::new(), failing: false, last_evaluation: None, devices }
    }

    fn apply(&mut self, groups: Option<Vec<Arc<Advertised>>>, now: Instant) {
        match groups {
            Some(groups) => {
                self.failing = false;
                let mut fresh: BTreeMap<String, Arc<Advertised>> =
                    groups.into_iter().map(|g| (g.id.clone(), g)).collect();
                for (id, state) in self.groups.iter_mut() {
                    match fresh.remove(id) {
                        Some(group) => {
                            state.group = group;
                            state.gone_since = None;
                        }
                        None => {
                            state.gone_since.get_or_insert(now);
                        }
                    }
                }
                for (id, group) in fresh {
                    self.groups.insert(id, GroupState { group, gone_since: None });
                }
            }
            None => self.failing = true,
        }
    }

    /// Drops groups whose grace period ended; returns the next end, if any.
    fn expire(&mut self, now: Instant, grace: Duration) -> Option<Instant> {
        self.groups.retain(|_, state| state.gone_since.is_none_or(|since| since + grace > now));
        self.groups.values().filter_map(|state| state.gone_since).map(|since| since + grace).min()
    }

    fn device_list(&self) -> DeviceList {
        let mut units = BTreeMap::new();
        for state in self.groups.values() {
            let healthy = !self.failing && state.gone_since.is_none();
            let group = &state.group;
            for unit in 0..group.share {
                // A group of one unit has its own id (hashed once, when the
                // group was made): every publish of 10,000 groups would
                // hash each again.
                let id = if group.share <= 1 {
                    group.id.clone()
                } else {
                    names::unit_id(&group.handler_id, unit, group.share)
                };
                if units.contains_key(&id) {
                    tracing::error!(resource = %self.spec.name, %id, "two groups map to one device id; keeping the first");
                    continue;
                }
                units.insert(id, Unit { healthy, group: group.clone() });
            }
        }
        DeviceList { units }
    }

    /// Publishes the device list if it changed.
    fn publish(&self) {
        let list = self.device_list();
        self.devices.send_if_modified(|current| {
            if **current == list {
                false
            } else {
                *current = Arc::new(list);
                true
            }
        });
    }

    fn status(&self) -> ResourceStatus {
        let list = self.devices.borrow();
        let healthy = list.healthy();
        ResourceStatus {
            name: self.spec.name.clone(),
            handler: self.spec.handler.clone(),
            healthy,
            unhealthy: list.units.len() - healthy,
            groups: self.groups.len(),
            last_evaluation: self.last_evaluation.clone(),
        }
    }
}

/// The inventory's state; [`Inventory::run`] drives it from the evaluation's updates.
pub struct Inventory {
    grace: Duration,
    resources: BTreeMap<String, ResourceState>,
    config_generation: u64,
    config_error: Option<String>,
    set: watch::Sender<Arc<ResourceSet>>,
    status: watch::Sender<Arc<Status>>,
    metrics: Arc<Metrics>,
}

impl Inventory {
    pub fn new(grace: Duration, metrics: Arc<Metrics>) -> (Inventory, Outputs) {
        let (set, resources) = watch::channel(Arc::new(ResourceSet::default()));
        let (status_tx, status) = watch::channel(Arc::new(Status::default()));
        let inventory = Inventory {
            grace,
            resources: BTreeMap::new(),
            config_generation: 0,
            config_error: None,
            set,
            status: status_tx,
            metrics,
        };
        (inventory, Outputs { resources, status })
    }

    /// Applies inputs until the channel closes.
    pub async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Update>) {
        let mut next_expiry: Option<Instant> = None;
        loop {
            let input = match next_expiry {
                Some(at) => tokio::select! {
                    input = inputs.recv() => input,
                    () = tokio::time::sleep_until(at) => {
                        next_expiry = self.expire(Instant::now());
                        continue;
                    }
                },
                None => inputs.recv().await,
            };
            let Some(input) = input else { return };
            self.handle(input, Instant::now());
            next_expiry = self.expire(Instant::now());
        }
    }

    pub fn handle(&mut self, input: Update, now: Instant) {
        match input {
            Update::Resources { generation, resources } => {
                self.config_generation = generation;
                let mut old = std::mem::take(&mut self.resources);
                for spec in resources {
                    let state = match old.remove(&spec.name) {
                        // Same channel: the resource's streams stay open.
                        Some(mut state) => {
                            state.spec = spec.clone();
                            state
                        }
                        None => ResourceState::new(spec.clone()),
                    };
                    self.resources.insert(spec.name, state);
                }
                for name in old.keys() {
                    self.metrics.forget_resource(name);
                }
                // Dropping the removed states closes their channels: their
                // ListAndWatch streams end and the advertiser stops them.
                self.publish_set();
            }
            Update::ConfigRejected(error) => self.config_error = error,
            Update::Evaluated { resource, groups, info } => {
                let Some(state) = self.resources.get_mut(&resource) else {
                    // An evaluation that finished as its resource was removed.
                    return;
                };
                state.apply(groups, now);
                state.last_evaluation = Some(info);
                state.publish();
            }
        }
        self.publish_status();
    }

    /// Ends grace periods due by `now`; returns when the next one ends.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for state in self.resources.values_mut() {
            let before = state.groups.len();
            let due = state.expire(now, self.grace);
            if state.groups.len() != before {
                state.publish();
            }
            next = match (next, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        self.publish_status();
        next
    }

    fn publish_set(&self) {
        let resources = self
            .resources
            .iter()
            .map(|(name, state)| {
                (name.clone(), Published { spec: state.spec.clone(), devices: state.devices.subscribe() })
            })
            .collect();
        self.set.send_replace(Arc::new(ResourceSet { resources }));
    }

    fn publish_status(&self) {
        let resources: Vec<ResourceStatus> = self.resources.values().map(ResourceState::status).collect();
        for status in &resources {
            self.metrics.set_devices(&status.name, status.healthy, status.unhealthy);
        }
        self.status.send_replace(Arc::new(Status {
            config_generation: self.config_generation,
            config_error: self.config_error.clone(),
            resources,
        }));
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn group(id: &str, share: u32) -> Advertised {
        Advertised {
            id: id.into(),
            handler_id: id.into(),
            members: vec![format!("/devices/{id}")],
            device_nodes: vec![],
            mounts: vec![],
            env: vec![],
            share,
        }
    }

    fn info() -> EvaluationInfo {
        EvaluationInfo { at: SystemTime::UNIX_EPOCH, took: Duration::ZERO, error: None }
    }

    fn spec(name: &str) -> ResourceSpec {
        ResourceSpec { name: name.into(), handler: "builtin:glob".into(), cdi: false }
    }

    fn inventory() -> (Inventory, Outputs) {
        Inventory::new(Duration::from_secs(30), Arc::new(Metrics::new()))
    }

    fn health(outputs: &Outputs, resource: &str) -> Vec<(String, bool)> {
        let set = outputs.resources.borrow();
        let list = set.resources[resource].devices.borrow();
        list.units.iter().map(|(id, unit)| (id.clone(), unit.healthy)).collect()
    }

    /// An evaluation's groups, or its failure.
    fn evaluated(resource: &str, outcome: Result<Vec<Advertised>, &str>) -> Update {
        let error = outcome.as_ref().err().map(|e| e.to_string());
        let groups = outcome.ok().map(|groups| groups.into_iter().map(Arc::new).collect());
        Update::Evaluated { resource: resource.into(), groups, info: EvaluationInfo { error, ..info() } }
    }

    #[test]
    fn shares_become_units_and_vanished_groups_stay_unhealthy_for_the_grace_period() {
        let (mut inventory, outputs) = inventory();
        let t0 = Instant::now();
        inventory.handle(Update::Resources { generation: 1, resources: vec![spec("d/r")] }, t0);
        inventory.handle(evaluated("d/r", Ok(vec![group("a", 1), group("b", 2)])), t0);
        assert_eq!(health(&outputs, "d/r"), [("a".into(), true), ("b-0".into(), true), ("b-1".into(), true)]);

        inventory.handle(evaluated("d/r", Ok(vec![group("b", 2)])), t0);
        assert_eq!(health(&outputs, "d/r")[0], ("a".into(), false), "a vanished: unhealthy, still listed");
        assert_eq!(inventory.expire(t0 + Duration::from_secs(29)), Some(t0 + Duration::from_secs(30)));
        assert_eq!(health(&outputs, "d/r").len(), 3);
        assert_eq!(inventory.expire(t0 + Duration::from_secs(30)), None);
        assert_eq!(health(&outputs, "d/r"), [("b-0".into(), true), ("b-1".into(), true)]);
    }

    #[test]
    fn a_group_back_within_its_grace_period_is_healthy_again() {
        let (mut inventory, outputs) = inventory();
        let t0 = Instant::now();
        inventory.handle(Update::Resources { generation: 1, resources: vec![spec("d/r")] }, t0);
        inventory.handle(evaluated("d/r", Ok(vec![group("a", 1)])), t0);
        inventory.handle(evaluated("d/r", Ok(vec![])), t0);
        inventory.handle(evaluated("d/r", Ok(vec![group("a", 1)])), t0 + Duration::from_secs(5));
        assert_eq!(inventory.expire(t0 + Duration::from_secs(31)), None);
        assert_eq!(health(&outputs, "d/r"), [("a".into(), true)]);
    }

    #[test]
    fn a_failing_handler_keeps_its_last_good_devices_unhealthy_and_recovers() {
        let (mut inventory, outputs) = inventory();
        let t0 = Instant::now();
        inventory.handle(Update::Resources { generation: 1, resources: vec![spec("d/r"), spec("d/other")] }, t0);
        inventory.handle(evaluated("d/r", Ok(vec![group("a", 1)])), t0);
        inventory.handle(evaluated("d/other", Ok(vec![group("o", 1)])), t0);
        inventory.handle(evaluated("d/r", Err("handler trapped")), t0);
        assert_eq!(health(&outputs, "d/r"), [("a".into(), false)]);
        assert_eq!(health(&outputs, "d/other"), [("o".into(), true)], "other resources are untouched");
        assert_eq!(inventory.expire(t0 + Duration::from_secs(3600)), None, "kept while failing");
        assert_eq!(health(&outputs, "d/r"), [("a".into(), false)]);
        inventory.handle(evaluated("d/r", Ok(vec![group("a", 1)])), t0);
        assert_eq!(health(&outputs, "d/r"), [("a".into(), true)]);
    }

    #[test]
    fn unchanged_resources_keep_their_channel_across_config_changes() {
        let (mut inventory, outputs) = inventory();
        let t0 = Instant::now();
        inventory.handle(Update::Resources { generation: 1, resources: vec![spec("d/keep"), spec("d/drop")] }, t0);
        let kept = outputs.resources.borrow().resources["d/keep"].devices.clone();
        let dropped = outputs.resources.borrow().resources["d/drop"].devices.clone();
        inventory.handle(Update::Resources { generation: 2, resources: vec![spec("d/keep"), spec("d/new")] }, t0);
        assert!(dropped.has_changed().is_err(), "a removed resource's channel closes");
        inventory.handle(evaluated("d/keep", Ok(vec![group("k", 1)])), t0);
        assert!(kept.has_changed().unwrap(), "the kept channel still delivers");
        let set = outputs.resources.borrow();
        assert_eq!(outputs.status.borrow().config_generation, 2);
        assert_eq!(set.resources.keys().collect::<Vec<_>>(), ["d/keep", "d/new"]);
    }

    #[test]
    fn an_evaluation_that_changes_nothing_is_not_sent_again() {
        let (mut inventory, outputs) = inventory();
        let t0 = Instant::now();
        inventory.handle(Update::Resources { generation: 1, resources: vec![spec("d/r")] }, t0);
        inventory.handle(evaluated("d/r", Ok(vec![group("a", 1)])), t0);
        let mut devices = outputs.resources.borrow().resources["d/r"].devices.clone();
        devices.mark_unchanged();
        inventory.handle(evaluated("d/r", Ok(vec![group("a", 1)])), t0);
        assert!(!devices.has_changed().unwrap());
    }
}

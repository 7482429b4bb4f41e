//! The `udev-rule` discovery handler: Akri's udev Configuration, made exact.
//!
//! Config (JSON): `udevRules` (required, a device matching ANY rule is
//! selected), `groupRecursive` (group devices under their top-most selected
//! ancestor), `permissions` (cgroup access to grant, default `rwm`),
//! `capacity` (how many containers may share a group, default 1).
//!
//! Rules are parsed in every entry point (each call is a fresh sandbox) but
//! only once per call: the parsed rules are cached in the config value.

pub mod matcher;
pub mod pattern;
pub mod rule;

use devsieve_sdk::prelude::*;
use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Akri's names for the variables a workload receives.
pub const UDEV_DEVPATH: &str = "UDEV_DEVPATH";
pub const UDEV_DEVNODE: &str = "UDEV_DEVNODE";

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub udev_rules: Vec<String>,
    #[serde(default)]
    pub group_recursive: bool,
    #[serde(default = "default_permissions")]
    pub permissions: String,
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// The rules parsed on first use, so one call parses them once.
    #[serde(skip)]
    parsed: OnceCell<Result<Vec<rule::Rule>, HandlerError>>,
}

fn default_permissions() -> String {
    "rwm".to_string()
}
fn default_capacity() -> u32 {
    1
}

impl Config {
    /// Checks everything serde cannot, and returns the parsed rules.
    pub fn rules(&self) -> Result<&[rule::Rule], HandlerError> {
        self.parsed.get_or_init(|| self.validate()).as_deref().map_err(Clone::clone)
    }

    fn validate(&self) -> Result<Vec<rule::Rule>, HandlerError> {
        if self.udev_rules.is_empty() {
            return Err(HandlerError::field(
                "udevRules",
                "at least one rule is needed, e.g. 'SUBSYSTEM==\"tty\", ATTRS{idVendor}==\"1a86\"'",
            ));
        }
        devsieve_sdk::permissions("permissions", Some(&self.permissions), "rwm")?;
        if self.capacity == 0 {
            return Err(HandlerError::field(
                "capacity",
                "must be at least 1 (how many containers may share one device)",
            ));
        }
        self.udev_rules
            .iter()
            .enumerate()
            .map(|(i, text)| {
                rule::parse(text).map_err(|e| HandlerError::field(format!("udevRules[{i}]"), e.to_string()))
            })
            .collect()
    }
}

pub struct UdevRule;

impl Handler for UdevRule {
    const NAME: &'static str = "udev-rule";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Config = Config;

    fn needs(config: &Config) -> Result<Requirements, HandlerError> {
        let rules = config.rules()?;
        let mut subsystems = BTreeSet::new();
        let mut pinned = true;
        for rule in rules {
            // A rule pins the subsystem if one of its keys is a positive
            // SUBSYSTEM== over literal values only (all keys must match, so one suffices).
            let literal = rule
                .keys
                .iter()
                .filter(|key| key.field == rule::Field::Subsystem && !key.negated)
                .find_map(|key| key.pattern.literals());
            match literal {
                Some(values) => subsystems.extend(values.into_iter().map(str::to_string)),
                None => pinned = false,
            }
        }
        let mut attributes = BTreeSet::new();
        let mut properties = BTreeSet::new();
        for key in rules.iter().flat_map(|rule| &rule.keys) {
            match &key.field {
                rule::Field::Attr(name) | rule::Field::Attrs(name) => {
                    attributes.insert(name.clone());
                }
                rule::Field::Env(name) => {
                    properties.insert(name.clone());
                }
                _ => {}
            }
        }
        let base = if pinned { Requirements::udev(subsystems) } else { Requirements::all_udev() };
        Ok(base.attributes(attributes).properties(properties))
    }

    fn select(config: &Config, device: Device<'_>) -> bool {
        // `needs` refused an invalid config before any device was looked at;
        // should one arrive here anyway, nothing is selected.
        match config.rules() {
            Ok(rules) => rules.iter().any(|rule| matcher::rule_matches(rule, device)),
            Err(_) => false,
        }
    }

    /// One group per device, unless `groupRecursive` gathers devices under
    /// their top-most selected ancestor: which one that is depends on the
    /// other devices' verdicts, so then every device is grouped together.
    fn partition(config: &Config, _: Device<'_>) -> Partition {
        if config.group_recursive { Partition::All } else { Partition::Alone }
    }

    fn group(config: &Config, selected: &[Device<'_>]) -> Result<Vec<DeviceGroup>, HandlerError> {
        config.rules()?;
        if !config.group_recursive {
            return Ok(selected
                .iter()
                .filter_map(|device| {
                    let devnode = device.devnode()?;
                    Some(DeviceGroup {
                        id: device.devpath().to_string(),
                        members: vec![device.index()],
                        device_nodes: vec![device_node(devnode, &config.permissions)],
                        mounts: Vec::new(),
                        env: vec![
                            (UDEV_DEVPATH.to_string(), device.devpath().to_string()),
                            (UDEV_DEVNODE.to_string(), devnode.to_string()),
                        ],
                        share: config.capacity,
                    })
                })
                .collect());
        }

        // Group under the top-most selected device of each chain, following
        // the snapshot's parent links (never devpath prefixes).
        let chosen: HashSet<u32> = selected.iter().map(Device::index).collect();
        let mut groups: BTreeMap<&str, (Device<'_>, Vec<Device<'_>>)> = BTreeMap::new();
        let mut seen = HashSet::new();
        for device in selected {
            if !seen.insert(device.index()) {
                continue;
            }
            let root = device.self_and_ancestors().filter(|d| chosen.contains(&d.index())).last().unwrap_or(*device);
            let entry = groups.entry(root.devpath()).or_insert_with(|| (root, Vec::new()));
            if device.index() != root.index() {
                entry.1.push(*device);
            }
        }
        Ok(groups
            .into_values()
            .filter_map(|(root, mut descendants)| {
                descendants.sort_by(|a, b| a.devpath().cmp(b.devpath()));
                let members: Vec<Device<'_>> = std::iter::once(root).chain(descendants).collect();
                let devnodes: Vec<&str> = members.iter().filter_map(Device::devnode).collect();
                if devnodes.is_empty() {
                    return None;
                }
                let mut env = vec![(UDEV_DEVPATH.to_string(), root.devpath().to_string())];
                env.extend(
                    devnodes.iter().enumerate().map(|(i, node)| (format!("{UDEV_DEVNODE}_{i}"), node.to_string())),
                );
                Some(DeviceGroup {
                    id: root.devpath().to_string(),
                    members: members.iter().map(Device::index).collect(),
                    device_nodes: devnodes.iter().map(|node| device_node(node, &config.permissions)).collect(),
                    mounts: Vec::new(),
                    env,
                    share: config.capacity,
                })
            })
            .collect())
    }
}

fn device_node(path: &str, permissions: &str) -> DeviceNode {
    DeviceNode { host_path: path.to_string(), container_path: None, permissions: permissions.to_string() }
}

export_handler!(UdevRule);

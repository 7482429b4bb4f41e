//! The host never trusts a handler's output. Every group is checked against
//! the snapshot the handler was given and the roots the operator allowed:
//! a device node must be a node (or devlink) of a device in that snapshot, a
//! mount must lie under an allowed root, and everything a container will be
//! given must be well formed.

// Paths and ids the agent gathered itself: a fast hash is enough.
use rustc_hash::FxHashSet;
use std::path::{Path, PathBuf};

use crate::contract::{DeviceGroup, SnapshotView};
use crate::support::paths::is_normal_absolute;

/// The most containers one group may be shared by (a typo guard, not a policy).
pub const MAX_SHARE: u32 = 10_000;

/// Why a handler's answer cannot be used: it does not fit the snapshot it
/// was given, or its parts do not fit together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{verdicts} verdicts for {candidates} candidates")]
    VerdictCount { verdicts: usize, candidates: usize },
    #[error("the verdict on {devpath}: {problem}")]
    Verdict { devpath: String, problem: Box<Invalid> },
    #[error("group {index} ({id:?}): {problem}")]
    Group { index: usize, id: String, problem: GroupProblem },
    #[error("group {0:?} does not name the device among its members")]
    NotItsDevice(String),
    #[error("two groups have the device id {id:?}: {first:?} (of {first_device}) and {second:?} (of {second_device})")]
    SameDeviceId { id: String, first: String, first_device: String, second: String, second_device: String },
    #[error("group {0:?} names none of the devices it was given")]
    NoDevice(String),
    #[error(
        "group {id:?} joins {first} (key {first_key:?}) and {second} (key {second_key:?}): `select` gave them different keys"
    )]
    MixedKeys { id: String, first: String, first_key: String, second: String, second_key: String },
}

/// What is wrong with one group.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupProblem {
    #[error("id is used by another group")]
    DuplicateId,
    #[error("empty id")]
    EmptyId,
    #[error("share {0} is not in 1..={MAX_SHARE}")]
    Share(u32),
    #[error("member {0} is not a node of the snapshot")]
    NotANode(u32),
    #[error("no member is one of the candidates it was given")]
    NoCandidate,
    #[error("device node {0} is not the node of any device it was given")]
    NodeNotGiven(String),
    #[error("container path {0:?} must be absolute, without `.` or `..`")]
    ContainerPath(String),
    #[error("permissions {0:?} may hold only r, w and m")]
    PermissionLetters(String),
    #[error("permissions {0:?} repeat {1:?}")]
    PermissionRepeated(String, char),
    #[error("permissions are empty")]
    NoPermissions,
    #[error("mount {mount} is outside the allowed roots ({roots})")]
    MountOutside { mount: String, roots: String },
    #[error("env var name {0:?} is not a valid name")]
    EnvName(String),
    #[error(
        "env var {name} is {len} bytes; a container's exec fails on one over {} KiB (Linux MAX_ARG_STRLEN)",
        MAX_ENV_BYTES >> 10
    )]
    EnvTooLong { name: String, len: usize },
}

/// The longest `NAME=value` Linux takes in an exec (MAX_ARG_STRLEN, 32
/// pages): a longer variable would fail every container it is given to.
const MAX_ENV_BYTES: usize = 128 << 10;

/// Checks `groups` against the snapshot they were made from.
pub fn groups(snapshot: &SnapshotView<'_>, groups: &[DeviceGroup], allowed_roots: &[PathBuf]) -> Result<(), Invalid> {
    Checker::new(snapshot, allowed_roots).groups(groups)
}

/// What one snapshot lets a handler grant, gathered once for every group
/// made from it (`select` answers with groups per device).
pub struct Checker<'a> {
    granted_paths: FxHashSet<&'a str>,
    /// Per node of the snapshot: is it a candidate?
    candidate: Vec<bool>,
    allowed_roots: &'a [PathBuf],
}

impl<'a> Checker<'a> {
    pub fn new(snapshot: &'a SnapshotView<'a>, allowed_roots: &'a [PathBuf]) -> Self {
        let granted_paths = snapshot
            .nodes
            .iter()
            .flat_map(|node| node.devnode.into_iter().chain(node.devlinks.iter().map(String::as_str)))
            .collect();
        let mut candidate = vec![false; snapshot.nodes.len()];
        for &c in &snapshot.candidates {
            if let Some(slot) = candidate.get_mut(c as usize) {
                *slot = true;
            }
        }
        Checker { granted_paths, candidate, allowed_roots }
    }

    /// One call's groups: each well formed, and no id used twice.
    pub fn groups(&self, groups: &[DeviceGroup]) -> Result<(), Invalid> {
        let mut ids = FxHashSet::default();
        for (index, group) in groups.iter().enumerate() {
            let at = |problem| Invalid::Group { index, id: group.id.clone(), problem };
            if !ids.insert(group.id.as_str()) {
                return Err(at(GroupProblem::DuplicateId));
            }
            self.group(group).map_err(at)?;
        }
        Ok(())
    }

    fn group(&self, group: &DeviceGroup) -> Result<(), GroupProblem> {
        if group.id.is_empty() {
            return Err(GroupProblem::EmptyId);
        }
        if group.share == 0 || group.share > MAX_SHARE {
            return Err(GroupProblem::Share(group.share));
        }
        if let Some(&member) = group.members.iter().find(|&&m| m as usize >= self.candidate.len()) {
            return Err(GroupProblem::NotANode(member));
        }
        if !group.members.iter().any(|&m| self.candidate[m as usize]) {
            return Err(GroupProblem::NoCandidate);
        }
        for node in &group.device_nodes {
            if !self.granted_paths.contains(node.host_path.as_str()) {
                return Err(GroupProblem::NodeNotGiven(node.host_path.clone()));
            }
            if let Some(container_path) = &node.container_path {
                container_path_ok(container_path)?;
            }
            permissions_ok(&node.permissions)?;
        }
        for mount in &group.mounts {
            let host = Path::new(&mount.host_path);
            if !is_normal_absolute(host) || !self.allowed_roots.iter().any(|root| host.starts_with(root)) {
                return Err(GroupProblem::MountOutside {
                    mount: mount.host_path.clone(),
                    roots: self.allowed_roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "),
                });
            }
            container_path_ok(&mount.container_path)?;
        }
        if let Some((name, _)) = group.env.iter().find(|(name, _)| !env_name_ok(name)) {
            return Err(GroupProblem::EnvName(name.clone()));
        }
        if let Some((name, value)) =
            group.env.iter().find(|(name, value)| name.len() + 1 + value.len() >= MAX_ENV_BYTES)
        {
            return Err(GroupProblem::EnvTooLong { name: name.clone(), len: name.len() + 1 + value.len() });
        }
        Ok(())
    }
}

fn container_path_ok(path: &str) -> Result<(), GroupProblem> {
    if is_normal_absolute(Path::new(path)) { Ok(()) } else { Err(GroupProblem::ContainerPath(path.into())) }
}

fn permissions_ok(permissions: &str) -> Result<(), GroupProblem> {
    let mut seen = [false; 3];
    for c in permissions.chars() {
        let slot = match c {
            'r' => 0,
            'w' => 1,
            'm' => 2,
            _ => return Err(GroupProblem::PermissionLetters(permissions.into())),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(GroupProblem::PermissionRepeated(permissions.into(), c));
        }
    }
    if permissions.is_empty() {
        return Err(GroupProblem::NoPermissions);
    }
    Ok(())
}

/// What a container runtime accepts as an env var name.
fn env_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{DeviceNode, Mount, Node, NodeView, Origin};

    fn snapshot() -> SnapshotView<'static> {
        let node = Box::leak(Box::new(Node {
            origin: Origin::Udev,
            devpath: "/devices/x/ttyUSB0".into(),
            kernel: "ttyUSB0".into(),
            subsystem: "tty".into(),
            devtype: None,
            driver: None,
            devnode: Some("/dev/ttyUSB0".into()),
            devlinks: vec!["/dev/serial/by-id/usb-1a86".into()],
            properties: vec![],
            attributes: vec![],
            tags: vec![],
            parent: None,
        }));
        SnapshotView { nodes: vec![NodeView::new(node, None)], candidates: vec![0] }
    }

    fn group(host_path: &str) -> DeviceGroup {
        DeviceGroup {
            id: "g".into(),
            members: vec![0],
            device_nodes: vec![DeviceNode {
                host_path: host_path.into(),
                container_path: None,
                permissions: "rw".into(),
            }],
            mounts: vec![],
            env: vec![],
            share: 1,
        }
    }

    #[test]
    fn grants_only_nodes_of_the_snapshot() {
        let roots = [PathBuf::from("/dev")];
        assert!(groups(&snapshot(), &[group("/dev/ttyUSB0")], &roots).is_ok());
        assert!(groups(&snapshot(), &[group("/dev/serial/by-id/usb-1a86")], &roots).is_ok());
        let err = groups(&snapshot(), &[group("/etc/shadow")], &roots).unwrap_err().to_string();
        assert!(err.contains("/etc/shadow"), "{err}");
    }

    #[test]
    fn mounts_stay_under_allowed_roots() {
        let roots = [PathBuf::from("/dev")];
        let mut g = group("/dev/ttyUSB0");
        g.mounts.push(Mount { host_path: "/dev/../etc".into(), container_path: "/x".into(), read_only: true });
        assert!(
            groups(&snapshot(), &[g.clone()], &roots).unwrap_err().to_string().contains("outside the allowed roots")
        );
        g.mounts[0].host_path = "/devices".into();
        assert!(groups(&snapshot(), &[g.clone()], &roots).is_err(), "/devices is not under /dev");
        g.mounts[0].host_path = "/dev/shm".into();
        assert!(groups(&snapshot(), &[g], &roots).is_ok());
    }

    #[test]
    fn rejects_malformed_groups() {
        let roots = [PathBuf::from("/dev")];
        let mut g = group("/dev/ttyUSB0");
        g.share = 0;
        assert!(groups(&snapshot(), &[g], &roots).unwrap_err().to_string().contains("share"));
        let mut g = group("/dev/ttyUSB0");
        g.device_nodes[0].permissions = "rwx".into();
        assert!(groups(&snapshot(), &[g], &roots).is_err());
        let mut g = group("/dev/ttyUSB0");
        g.members = vec![7];
        assert!(groups(&snapshot(), &[g], &roots).is_err());
        let mut g = group("/dev/ttyUSB0");
        g.members = vec![];
        assert!(
            groups(&snapshot(), &[g], &roots).unwrap_err().to_string().contains("no member"),
            "a group stands for a candidate"
        );
        let g = group("/dev/ttyUSB0");
        assert!(groups(&snapshot(), &[g.clone(), g], &roots).unwrap_err().to_string().contains("another group"));
        let mut g = group("/dev/ttyUSB0");
        g.env.push(("1BAD".into(), "x".into()));
        assert!(groups(&snapshot(), &[g], &roots).is_err());
        let mut g = group("/dev/ttyUSB0");
        g.env.push(("BIG".into(), "x".repeat(MAX_ENV_BYTES - 5)));
        assert!(groups(&snapshot(), &[g.clone()], &roots).is_ok(), "just under the kernel's limit");
        g.env[0].1.push('x');
        let error = groups(&snapshot(), &[g], &roots).unwrap_err().to_string();
        assert!(error.contains("env var BIG is 131072 bytes"), "{error}");
    }
}

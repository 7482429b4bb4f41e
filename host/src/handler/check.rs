//! The host never trusts a handler's output. Every group is checked against
//! the snapshot the handler was given and the roots the operator allowed:
//! a device node must be a node (or devlink) of a device in that snapshot, a
//! mount must lie under an allowed root, and everything a container will be
//! given must be well formed.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use super::bindings::{DeviceGroup, SnapshotView};

/// The most containers one group may be shared by (a typo guard, not a policy).
pub const MAX_SHARE: u32 = 10_000;

pub fn groups(snapshot: &SnapshotView<'_>, groups: &[DeviceGroup], allowed_roots: &[PathBuf]) -> Result<(), String> {
    let granted_paths: HashSet<&str> = snapshot
        .nodes
        .iter()
        .flat_map(|node| node.devnode.into_iter().chain(node.devlinks.iter().map(String::as_str)))
        .collect();
    let mut ids = HashSet::new();
    for (index, group) in groups.iter().enumerate() {
        let at = |reason: String| format!("group {index} ({:?}): {reason}", group.id);
        if group.id.is_empty() {
            return Err(at("empty id".into()));
        }
        if !ids.insert(group.id.as_str()) {
            return Err(at("id is used by another group".into()));
        }
        if group.share == 0 || group.share > MAX_SHARE {
            return Err(at(format!("share {} is not in 1..={MAX_SHARE}", group.share)));
        }
        if let Some(member) = group.members.iter().find(|&&m| m as usize >= snapshot.nodes.len()) {
            return Err(at(format!("member {member} is not a node of the snapshot")));
        }
        for node in &group.device_nodes {
            if !granted_paths.contains(node.host_path.as_str()) {
                return Err(at(format!("device node {} is not the node of any device it was given", node.host_path)));
            }
            if let Some(container_path) = &node.container_path {
                container_path_ok(container_path).map_err(&at)?;
            }
            permissions_ok(&node.permissions).map_err(&at)?;
        }
        for mount in &group.mounts {
            let host = Path::new(&mount.host_path);
            if !is_normal_absolute(host) || !allowed_roots.iter().any(|root| host.starts_with(root)) {
                return Err(at(format!(
                    "mount {} is outside the allowed roots ({})",
                    mount.host_path,
                    allowed_roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
                )));
            }
            container_path_ok(&mount.container_path).map_err(&at)?;
        }
        for (name, _) in &group.env {
            if !env_name_ok(name) {
                return Err(at(format!("env var name {name:?} is not a valid name")));
            }
        }
    }
    Ok(())
}

/// Absolute, with no `.` or `..` (so `starts_with` on it means what it says).
fn is_normal_absolute(path: &Path) -> bool {
    path.is_absolute() && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

fn container_path_ok(path: &str) -> Result<(), String> {
    if is_normal_absolute(Path::new(path)) {
        Ok(())
    } else {
        Err(format!("container path {path:?} must be absolute, without `.` or `..`"))
    }
}

pub fn permissions_ok(permissions: &str) -> Result<(), String> {
    let mut seen = [false; 3];
    for c in permissions.chars() {
        let slot = match c {
            'r' => 0,
            'w' => 1,
            'm' => 2,
            _ => return Err(format!("permissions {permissions:?} may hold only r, w and m")),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(format!("permissions {permissions:?} repeat {c:?}"));
        }
    }
    if permissions.is_empty() {
        return Err("permissions are empty".into());
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
    use crate::handler::bindings::{DeviceNode, Mount, Node, NodeView, Origin};

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
        let err = groups(&snapshot(), &[group("/etc/shadow")], &roots).unwrap_err();
        assert!(err.contains("/etc/shadow"), "{err}");
    }

    #[test]
    fn mounts_stay_under_allowed_roots() {
        let roots = [PathBuf::from("/dev")];
        let mut g = group("/dev/ttyUSB0");
        g.mounts.push(Mount { host_path: "/dev/../etc".into(), container_path: "/x".into(), read_only: true });
        assert!(groups(&snapshot(), &[g.clone()], &roots).unwrap_err().contains("outside the allowed roots"));
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
        assert!(groups(&snapshot(), &[g], &roots).unwrap_err().contains("share"));
        let mut g = group("/dev/ttyUSB0");
        g.device_nodes[0].permissions = "rwx".into();
        assert!(groups(&snapshot(), &[g], &roots).is_err());
        let mut g = group("/dev/ttyUSB0");
        g.members = vec![7];
        assert!(groups(&snapshot(), &[g], &roots).is_err());
        let g = group("/dev/ttyUSB0");
        assert!(groups(&snapshot(), &[g.clone(), g], &roots).unwrap_err().contains("another group"));
        let mut g = group("/dev/ttyUSB0");
        g.env.push(("1BAD".into(), "x".into()));
        assert!(groups(&snapshot(), &[g], &roots).is_err());
    }
}

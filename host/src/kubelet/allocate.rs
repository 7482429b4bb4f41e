//! What a container gets for the device ids the kubelet picked (`Allocate`),
//! and which ids devsieve would rather it picked (`GetPreferredAllocation`).
//! Pure functions of one [`DeviceList`]: the gRPC layer only converts.

use std::collections::{BTreeMap, HashMap, HashSet};

use devsieve_proto::v1beta1::{CdiDevice, ContainerAllocateResponse, DeviceSpec, Mount};

use crate::inventory::DeviceList;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AllocateError {
    #[error("{resource}: no device {id} (known: {known}); it may have been removed")]
    Unknown { resource: String, id: String, known: String },
    #[error(
        "{resource}: device {id} is unhealthy (its device went away or its handler is failing); \
         it cannot be given to a container"
    )]
    Unhealthy { resource: String, id: String },
    #[error("{resource}: a container asked for no devices")]
    Empty { resource: String },
}

/// The response for one container that was given `ids` of `resource`.
///
/// Units of one group given to one container grant that group once. With
/// several groups, device nodes and mounts are merged (a container path
/// granted twice is granted once, by the first group); env vars of the first
/// group keep their names and a later group's variable whose name is taken
/// gets the suffix `_<n>`, its position among the container's groups
/// (`UDEV_DEVNODE`, `UDEV_DEVNODE_1`, ...), so no value is lost.
/// With `cdi`, devices are named as CDI devices `<resource>=<group id>`
/// (the spec devsieve writes holds their nodes, mounts and env) instead of
/// being listed.
pub fn container_response(
    resource: &str,
    list: &DeviceList,
    ids: &[String],
    cdi: bool,
) -> Result<ContainerAllocateResponse, AllocateError> {
    if ids.is_empty() {
        return Err(AllocateError::Empty { resource: resource.into() });
    }
    let mut groups = Vec::new();
    let mut seen_groups = HashSet::new();
    for id in ids {
        let Some(unit) = list.units.get(id) else {
            let mut known: Vec<&str> = list.units.keys().map(String::as_str).take(8).collect();
            if list.units.len() > known.len() {
                known.push("...");
            }
            let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
            return Err(AllocateError::Unknown { resource: resource.into(), id: id.clone(), known });
        };
        if !unit.healthy {
            return Err(AllocateError::Unhealthy { resource: resource.into(), id: id.clone() });
        }
        if seen_groups.insert(unit.group.id.as_str()) {
            groups.push(&unit.group);
        }
    }

    let mut response = ContainerAllocateResponse::default();
    let mut node_paths = HashSet::new();
    let mut mount_paths = HashSet::new();
    for (position, group) in groups.iter().enumerate() {
        for (name, value) in &group.env {
            let name = if position == 0 || !response.envs.contains_key(name) {
                name.clone()
            } else {
                format!("{name}_{position}")
            };
            response.envs.insert(name, value.clone());
        }
        if cdi {
            response.cdi_devices.push(CdiDevice { name: format!("{resource}={}", group.id) });
            continue;
        }
        for node in &group.device_nodes {
            if node_paths.insert(node.container_path.as_str()) {
                response.devices.push(DeviceSpec {
                    container_path: node.container_path.clone(),
                    host_path: node.host_path.clone(),
                    permissions: node.permissions.clone(),
                });
            }
        }
        for mount in &group.mounts {
            if mount_paths.insert(mount.container_path.as_str()) {
                response.mounts.push(Mount {
                    container_path: mount.container_path.clone(),
                    host_path: mount.host_path.clone(),
                    read_only: mount.read_only,
                });
            }
        }
    }
    Ok(response)
}

/// The ids to prefer for a container that needs `size` of `available`,
/// `must_include` among them. Keeps a container's units on as few physical
/// devices as possible — first the devices it must have, then the device
/// with the most free units — and so spreads different containers across
/// devices. Deterministic: ties go to the smaller group id.
pub fn preferred(list: &DeviceList, available: &[String], must_include: &[String], size: usize) -> Vec<String> {
    let mut chosen: Vec<String> = Vec::with_capacity(size);
    let mut taken: HashSet<&str> = HashSet::new();
    for id in must_include {
        if taken.insert(id.as_str()) {
            chosen.push(id.clone());
        }
    }
    // Free units per physical device (group), in id order.
    let mut free: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut group_of: HashMap<&str, &str> = HashMap::new();
    for id in available {
        // Ids the list does not know (a race with a removal) are left to the kubelet.
        let Some(unit) = list.units.get(id) else { continue };
        group_of.insert(id.as_str(), unit.group.id.as_str());
        if !taken.contains(id.as_str()) {
            free.entry(unit.group.id.as_str()).or_default().push(id.as_str());
        }
    }
    for units in free.values_mut() {
        units.sort_unstable();
    }
    let mut order: Vec<&str> = Vec::new();
    for id in must_include {
        if let Some(group) = group_of.get(id.as_str())
            && !order.contains(group)
        {
            order.push(group);
        }
    }
    let mut rest: Vec<(&str, usize)> =
        free.iter().filter(|(g, _)| !order.contains(g)).map(|(g, units)| (*g, units.len())).collect();
    rest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    order.extend(rest.into_iter().map(|(group, _)| group));
    for group in order {
        for id in free.get(group).into_iter().flatten() {
            if chosen.len() >= size {
                return chosen;
            }
            chosen.push(id.to_string());
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::inventory::Unit;
    use crate::model::{Advertised, GrantedMount, GrantedNode};

    fn group(id: &str, share: u32, nodes: &[&str], env: &[(&str, &str)]) -> Arc<Advertised> {
        Arc::new(Advertised {
            id: id.into(),
            handler_id: id.into(),
            members: vec![],
            device_nodes: nodes
                .iter()
                .map(|n| GrantedNode {
                    host_path: n.to_string(),
                    container_path: n.to_string(),
                    permissions: "rw".into(),
                })
                .collect(),
            mounts: vec![GrantedMount { host_path: "/dev/shm".into(), container_path: "/shm".into(), read_only: true }],
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            share,
        })
    }

    fn list(groups: &[Arc<Advertised>], unhealthy: &[&str]) -> DeviceList {
        let mut list = DeviceList::default();
        for group in groups {
            for unit in 0..group.share {
                let id = crate::support::names::unit_id(&group.handler_id, unit, group.share);
                let healthy = !unhealthy.contains(&id.as_str());
                list.units.insert(id, Unit { healthy, group: group.clone() });
            }
        }
        list
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn grants_nodes_mounts_and_env_once_per_group() {
        let a = group("a", 2, &["/dev/ttyUSB0"], &[("UDEV_DEVNODE", "/dev/ttyUSB0")]);
        let b = group("b", 1, &["/dev/ttyUSB1", "/dev/ttyUSB0"], &[("UDEV_DEVNODE", "/dev/ttyUSB1"), ("X", "1")]);
        let list = list(&[a, b], &[]);
        let response = container_response("d/r", &list, &ids(&["a-0", "a-1", "b"]), false).unwrap();
        let nodes: Vec<&str> = response.devices.iter().map(|d| d.host_path.as_str()).collect();
        assert_eq!(nodes, ["/dev/ttyUSB0", "/dev/ttyUSB1"]);
        assert_eq!(response.devices[0].permissions, "rw");
        assert_eq!(response.mounts.len(), 1);
        assert_eq!(response.envs["UDEV_DEVNODE"], "/dev/ttyUSB0");
        assert_eq!(response.envs["UDEV_DEVNODE_1"], "/dev/ttyUSB1");
        assert_eq!(response.envs["X"], "1");
        assert!(response.cdi_devices.is_empty());
    }

    #[test]
    fn cdi_resources_name_their_devices() {
        let list = list(&[group("a", 1, &["/dev/ttyUSB0"], &[])], &[]);
        let response = container_response("devsieve.io/printer", &list, &ids(&["a"]), true).unwrap();
        assert!(response.devices.is_empty() && response.mounts.is_empty());
        assert_eq!(response.cdi_devices[0].name, "devsieve.io/printer=a");
    }

    #[test]
    fn refuses_unknown_and_unhealthy_ids() {
        let list = list(&[group("a", 1, &["/dev/x"], &[]), group("b", 1, &["/dev/y"], &[])], &["b"]);
        let unknown = container_response("d/r", &list, &ids(&["zz"]), false).unwrap_err();
        assert!(unknown.to_string().contains("no device zz (known: a, b)"), "{unknown}");
        let unhealthy = container_response("d/r", &list, &ids(&["a", "b"]), false).unwrap_err();
        assert_eq!(unhealthy, AllocateError::Unhealthy { resource: "d/r".into(), id: "b".into() });
    }

    #[test]
    fn prefers_one_device_per_container_and_spreads_containers() {
        let list = list(&[group("a", 4, &["/dev/a"], &[]), group("b", 4, &["/dev/b"], &[])], &[]);
        // a-0 and a-1 are held by another container: b has the most free units.
        let available = ids(&["a-2", "a-3", "b-0", "b-1", "b-2", "b-3"]);
        assert_eq!(preferred(&list, &available, &[], 2), ["b-0", "b-1"]);
        // A unit the container must have pulls the rest onto its device.
        assert_eq!(preferred(&list, &available, &ids(&["a-3"]), 2), ["a-3", "a-2"]);
        // More than one device holds: spill over to the next.
        assert_eq!(preferred(&list, &available, &[], 5), ["b-0", "b-1", "b-2", "b-3", "a-2"]);
        assert_eq!(preferred(&list, &available, &[], 10).len(), 6);
    }
}

//! A group as the kubelet will see it: its device id and what a container
//! that is given it gets.

use serde::Serialize;

use crate::contract::{DeviceGroup, SnapshotView};
use crate::support::names;

/// A group as the kubelet will see it: a device id and what a container gets.
/// `Eq`, so that comparing two lists of shared groups (`Arc`s) compares
/// pointers first.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Advertised {
    /// The kubelet device id (at most 63 characters, stable per device).
    pub id: String,
    /// What the handler said identifies the device.
    pub handler_id: String,
    /// devpaths of the devices in the group.
    pub members: Vec<String>,
    pub device_nodes: Vec<GrantedNode>,
    pub mounts: Vec<GrantedMount>,
    pub env: Vec<(String, String)>,
    pub share: u32,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GrantedNode {
    pub host_path: String,
    pub container_path: String,
    pub permissions: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct GrantedMount {
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
}

impl Advertised {
    /// `group` as the kubelet will see it; `snapshot` is the one the
    /// handler was given (its members are indices into it). `extras` (the
    /// resource's own device nodes) are granted too, where the handler does
    /// not grant that container path already.
    pub fn new(snapshot: &SnapshotView<'_>, group: DeviceGroup, extras: &[GrantedNode]) -> Advertised {
        let mut advertised = Advertised {
            id: names::device_id(&group.id),
            members: group.members.iter().map(|&m| snapshot.nodes[m as usize].devpath.to_string()).collect(),
            device_nodes: group
                .device_nodes
                .into_iter()
                .map(|node| GrantedNode {
                    container_path: node.container_path.unwrap_or_else(|| node.host_path.clone()),
                    host_path: node.host_path,
                    permissions: node.permissions,
                })
                .collect(),
            mounts: group
                .mounts
                .into_iter()
                .map(|m| GrantedMount {
                    host_path: m.host_path,
                    container_path: m.container_path,
                    read_only: m.read_only,
                })
                .collect(),
            env: group.env,
            share: group.share,
            handler_id: group.id,
        };
        for extra in extras {
            if !advertised.device_nodes.iter().any(|node| node.container_path == extra.container_path) {
                advertised.device_nodes.push(extra.clone());
            }
        }
        advertised
    }
}

//! A checked snapshot and the `Device` view handlers match on: a node plus
//! navigation to its ancestors and lookups of its properties and attributes.

use crate::bindings::devsieve::handler::types;
use crate::{DeviceGroup, DeviceNode, HandlerError, Node, Origin};

/// A snapshot whose parent links are known to be in range and acyclic.
#[derive(Debug)]
pub struct Snapshot {
    nodes: Vec<Node>,
    candidates: Vec<u32>,
}

impl Snapshot {
    /// Checks the host's snapshot once so that navigation never panics.
    pub fn new(raw: types::Snapshot) -> Result<Self, HandlerError> {
        let types::Snapshot { nodes, candidates } = raw;
        let len = nodes.len();
        for (index, node) in nodes.iter().enumerate() {
            // A parent must come later in the table: cycles are impossible then.
            if let Some(parent) = node.parent
                && (parent as usize >= len || parent as usize <= index)
            {
                return Err(HandlerError::new(format!(
                    "snapshot node {index} ({}) has parent {parent}, which is not a later node",
                    node.devpath
                )));
            }
        }
        if let Some(bad) = candidates.iter().find(|&&c| c as usize >= len) {
            return Err(HandlerError::new(format!("snapshot candidate {bad} is out of range")));
        }
        Ok(Snapshot { nodes, candidates })
    }

    /// Builds a snapshot from nodes and candidate indices (for tests).
    pub fn from_parts(nodes: Vec<Node>, candidates: Vec<u32>) -> Result<Self, HandlerError> {
        Self::new(types::Snapshot { nodes, candidates })
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn device(&self, index: u32) -> Device<'_> {
        Device { snapshot: self, index }
    }

    pub fn candidates(&self) -> impl Iterator<Item = Device<'_>> {
        self.candidates.iter().map(|&index| self.device(index))
    }
}

/// One node of a snapshot, with its ancestors reachable.
#[derive(Clone, Copy, Debug)]
pub struct Device<'a> {
    snapshot: &'a Snapshot,
    index: u32,
}

impl PartialEq for Device<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.snapshot, other.snapshot) && self.index == other.index
    }
}
impl Eq for Device<'_> {}

impl<'a> Device<'a> {
    pub fn index(&self) -> u32 {
        self.index
    }
    pub fn node(&self) -> &'a Node {
        &self.snapshot.nodes[self.index as usize]
    }
    pub fn origin(&self) -> Origin {
        self.node().origin
    }
    pub fn devpath(&self) -> &'a str {
        &self.node().devpath
    }
    pub fn kernel(&self) -> &'a str {
        &self.node().kernel
    }
    pub fn subsystem(&self) -> &'a str {
        &self.node().subsystem
    }
    pub fn devtype(&self) -> Option<&'a str> {
        self.node().devtype.as_deref()
    }
    pub fn driver(&self) -> Option<&'a str> {
        self.node().driver.as_deref()
    }
    pub fn devnode(&self) -> Option<&'a str> {
        self.node().devnode.as_deref()
    }
    pub fn tags(&self) -> &'a [String] {
        &self.node().tags
    }
    pub fn property(&self, key: &str) -> Option<&'a str> {
        lookup(&self.node().properties, key)
    }
    pub fn attribute(&self, key: &str) -> Option<&'a str> {
        lookup(&self.node().attributes, key)
    }
    pub fn parent(&self) -> Option<Device<'a>> {
        self.node().parent.map(|index| self.snapshot.device(index))
    }
    /// This device, then its parent, grandparent, ... (udev's order for
    /// KERNELS/ATTRS matching).
    pub fn self_and_ancestors(&self) -> impl Iterator<Item = Device<'a>> + use<'a> {
        std::iter::successors(Some(*self), |device| device.parent())
    }
    /// True if `other` is this device or one of its ancestors.
    pub fn is_within(&self, other: Device<'_>) -> bool {
        self.self_and_ancestors().any(|device| device.index == other.index)
    }

    /// A group of just this device, granting its node with `permissions`, or
    /// `None` if it has no device node.
    pub fn single_group(&self, permissions: &str) -> Option<DeviceGroup> {
        let devnode = self.devnode()?;
        Some(DeviceGroup {
            id: self.devpath().to_string(),
            members: vec![self.index],
            device_nodes: vec![DeviceNode {
                host_path: devnode.to_string(),
                container_path: None,
                permissions: permissions.to_string(),
            }],
            mounts: Vec::new(),
            env: Vec::new(),
            share: 1,
        })
    }
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    // The host sorts keys; a linear scan is still fine for the handful a
    // handler asks for, and it does not trust the order.
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Builds nodes for native unit tests of handlers.
pub mod testing {
    use std::collections::BTreeMap;

    use super::*;
    use crate::__private::{Verdict, verdict};
    use crate::Handler;

    /// The groups the host ends up with for `snapshot`'s candidates, made the
    /// way it makes them: the contract's `select` over every candidate (so
    /// each [`Partition::Alone`](crate::Partition::Alone) device is grouped
    /// on its own), then `group` once per key over that key's devices.
    /// Sorted by id.
    pub fn partitioned<H: Handler>(config: &H::Config, snapshot: &Snapshot) -> Result<Vec<DeviceGroup>, HandlerError> {
        let mut groups = Vec::new();
        let mut keyed: BTreeMap<String, Vec<Device<'_>>> = BTreeMap::new();
        for device in snapshot.candidates() {
            match verdict::<H>(config, device)? {
                Verdict::Skip => {}
                Verdict::Alone(own) => groups.extend(own),
                Verdict::Grouped(key) => keyed.entry(key).or_default().push(device),
            }
        }
        for devices in keyed.values() {
            groups.extend(H::group(config, devices)?);
        }
        groups.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(groups)
    }

    /// `group` over every selected candidate at once, sorted by id: what
    /// [`partitioned`] must give too, whatever the devices, for a handler's
    /// `partition` to be right.
    pub fn whole<H: Handler>(config: &H::Config, snapshot: &Snapshot) -> Result<Vec<DeviceGroup>, HandlerError> {
        let selected: Vec<Device<'_>> = snapshot.candidates().filter(|d| H::select(config, *d)).collect();
        let mut groups = H::group(config, &selected)?;
        groups.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(groups)
    }

    /// A udev node with the given devpath and subsystem; the kernel name is
    /// the last component of the devpath.
    pub fn udev_node(devpath: &str, subsystem: &str) -> Node {
        Node {
            origin: Origin::Udev,
            devpath: devpath.to_string(),
            kernel: devpath.rsplit('/').next().unwrap_or_default().to_string(),
            subsystem: subsystem.to_string(),
            devtype: None,
            driver: None,
            devnode: None,
            devlinks: Vec::new(),
            properties: Vec::new(),
            attributes: Vec::new(),
            tags: Vec::new(),
            parent: None,
        }
    }
}

//! A checked snapshot and the `Device` view handlers match on: a node plus
//! navigation to its ancestors and lookups of its properties and attributes.
//!
//! The contract sends a snapshot's strings as spans of one text (one guest
//! allocation for all of them); [`Snapshot::new`] checks every span and
//! index once, so that the views below never panic.

use crate::bindings::devsieve::handler::types::{self as wire, Pair, Range, Span};
use crate::{DeviceGroup, DeviceNode, HandlerError, Origin};

/// A device as a handler's native tests build it; [`Snapshot::from_parts`]
/// lays such nodes out as the host does.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub origin: Origin,
    pub devpath: String,
    pub kernel: String,
    pub subsystem: String,
    pub devtype: Option<String>,
    pub driver: Option<String>,
    pub devnode: Option<String>,
    pub devlinks: Vec<String>,
    pub properties: Vec<(String, String)>,
    pub attributes: Vec<(String, String)>,
    pub tags: Vec<String>,
    /// Index of the parent in the node list given to `from_parts`.
    pub parent: Option<u32>,
}

/// A snapshot whose spans, ranges and parent links are known to be in range
/// (and the links acyclic).
#[derive(Debug)]
pub struct Snapshot {
    raw: wire::Snapshot,
}

impl Snapshot {
    /// Checks the host's snapshot once so that navigation never panics.
    pub fn new(raw: wire::Snapshot) -> Result<Self, HandlerError> {
        let text = raw.text.as_str();
        // Sums checked: a usize is 32 bits in the guest.
        let span_ok = |span: &Span| {
            let start = span.start as usize;
            start
                .checked_add(span.len as usize)
                .is_some_and(|end| end <= text.len() && text.is_char_boundary(start) && text.is_char_boundary(end))
        };
        let range_ok = |range: &Range, len: usize| {
            (range.start as usize).checked_add(range.len as usize).is_some_and(|end| end <= len)
        };
        if let Some(at) = raw.names.iter().position(|span| !span_ok(span)) {
            return Err(HandlerError::new(format!("snapshot name {at} is not a span of its text")));
        }
        if let Some(at) = raw.pairs.iter().position(|pair| !span_ok(&pair.key) || !span_ok(&pair.value)) {
            return Err(HandlerError::new(format!("snapshot pair {at} is not a span of its text")));
        }
        let len = raw.nodes.len();
        for (index, node) in raw.nodes.iter().enumerate() {
            let spans =
                [Some(node.devpath), Some(node.kernel), Some(node.subsystem), node.devtype, node.driver, node.devnode];
            let ranges_ok = range_ok(&node.devlinks, raw.names.len())
                && range_ok(&node.tags, raw.names.len())
                && range_ok(&node.properties, raw.pairs.len())
                && range_ok(&node.attributes, raw.pairs.len());
            if !spans.iter().flatten().all(span_ok) || !ranges_ok {
                return Err(HandlerError::new(format!(
                    "snapshot node {index} refers past the snapshot's text or lists"
                )));
            }
            // A parent must come later in the table: cycles are impossible then.
            if let Some(parent) = node.parent
                && (parent as usize >= len || parent as usize <= index)
            {
                let devpath = &text[node.devpath.start as usize..][..node.devpath.len as usize];
                return Err(HandlerError::new(format!(
                    "snapshot node {index} ({devpath}) has parent {parent}, which is not a later node"
                )));
            }
        }
        if let Some(bad) = raw.candidates.iter().find(|&&c| c as usize >= len) {
            return Err(HandlerError::new(format!("snapshot candidate {bad} is out of range")));
        }
        Ok(Snapshot { raw })
    }

    /// Lays out `nodes` as the host does and checks the result (for tests).
    pub fn from_parts(nodes: Vec<Node>, candidates: Vec<u32>) -> Result<Self, HandlerError> {
        let mut raw =
            wire::Snapshot { text: String::new(), nodes: Vec::new(), names: Vec::new(), pairs: Vec::new(), candidates };
        let span = |text: &mut String, s: &str| {
            let start = text.len() as u32;
            text.push_str(s);
            Span { start, len: s.len() as u32 }
        };
        for node in &nodes {
            let text = &mut raw.text;
            let mut names = |list: &[String], names: &mut Vec<Span>| {
                let start = names.len() as u32;
                names.extend(list.iter().map(|name| span(text, name)));
                Range { start, len: list.len() as u32 }
            };
            let devlinks = names(&node.devlinks, &mut raw.names);
            let tags = names(&node.tags, &mut raw.names);
            let mut pairs = |list: &[(String, String)], pairs: &mut Vec<Pair>| {
                let start = pairs.len() as u32;
                pairs.extend(list.iter().map(|(k, v)| Pair { key: span(text, k), value: span(text, v) }));
                Range { start, len: list.len() as u32 }
            };
            let properties = pairs(&node.properties, &mut raw.pairs);
            let attributes = pairs(&node.attributes, &mut raw.pairs);
            raw.nodes.push(wire::Node {
                origin: node.origin,
                devpath: span(text, &node.devpath),
                kernel: span(text, &node.kernel),
                subsystem: span(text, &node.subsystem),
                devtype: node.devtype.as_deref().map(|s| span(text, s)),
                driver: node.driver.as_deref().map(|s| span(text, s)),
                devnode: node.devnode.as_deref().map(|s| span(text, s)),
                devlinks,
                properties,
                attributes,
                tags,
                parent: node.parent,
            });
        }
        Self::new(raw)
    }

    /// How many nodes (candidates and ancestors) the snapshot holds.
    pub fn len(&self) -> usize {
        self.raw.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw.nodes.is_empty()
    }

    /// The node at `index`; panics past [`len`](Self::len).
    pub fn device(&self, index: u32) -> Device<'_> {
        assert!((index as usize) < self.raw.nodes.len(), "no node {index} in a snapshot of {}", self.len());
        Device { snapshot: self, index }
    }

    pub fn candidates(&self) -> impl Iterator<Item = Device<'_>> {
        self.raw.candidates.iter().map(|&index| Device { snapshot: self, index })
    }

    fn text(&self, span: Span) -> &str {
        // In range and on boundaries: `new` checked it.
        &self.raw.text[span.start as usize..][..span.len as usize]
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
    fn node(&self) -> &'a wire::Node {
        &self.snapshot.raw.nodes[self.index as usize]
    }
    fn text(&self, span: Span) -> &'a str {
        self.snapshot.text(span)
    }
    fn names(&self, range: Range) -> impl ExactSizeIterator<Item = &'a str> + use<'a> {
        let snapshot = self.snapshot;
        snapshot.raw.names[range.start as usize..][..range.len as usize].iter().map(|&span| snapshot.text(span))
    }
    fn pairs(&self, range: Range) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + use<'a> {
        let snapshot = self.snapshot;
        snapshot.raw.pairs[range.start as usize..][..range.len as usize]
            .iter()
            .map(|pair| (snapshot.text(pair.key), snapshot.text(pair.value)))
    }
    pub fn origin(&self) -> Origin {
        self.node().origin
    }
    pub fn devpath(&self) -> &'a str {
        self.text(self.node().devpath)
    }
    pub fn kernel(&self) -> &'a str {
        self.text(self.node().kernel)
    }
    pub fn subsystem(&self) -> &'a str {
        self.text(self.node().subsystem)
    }
    pub fn devtype(&self) -> Option<&'a str> {
        self.node().devtype.map(|span| self.text(span))
    }
    pub fn driver(&self) -> Option<&'a str> {
        self.node().driver.map(|span| self.text(span))
    }
    pub fn devnode(&self) -> Option<&'a str> {
        self.node().devnode.map(|span| self.text(span))
    }
    /// Symlinks to the device node (`/dev/serial/by-id/...`).
    pub fn devlinks(&self) -> impl ExactSizeIterator<Item = &'a str> + use<'a> {
        self.names(self.node().devlinks)
    }
    /// udev tags, sorted.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = &'a str> + use<'a> {
        self.names(self.node().tags)
    }
    /// The udev properties the handler asked for, sorted by key.
    pub fn properties(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + use<'a> {
        self.pairs(self.node().properties)
    }
    /// The sysfs attributes the handler asked for, sorted by key.
    pub fn attributes(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + use<'a> {
        self.pairs(self.node().attributes)
    }
    pub fn property(&self, key: &str) -> Option<&'a str> {
        lookup(self.properties(), key)
    }
    pub fn attribute(&self, key: &str) -> Option<&'a str> {
        lookup(self.attributes(), key)
    }
    pub fn parent(&self) -> Option<Device<'a>> {
        self.node().parent.map(|index| Device { snapshot: self.snapshot, index })
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

fn lookup<'a>(mut pairs: impl Iterator<Item = (&'a str, &'a str)>, key: &str) -> Option<&'a str> {
    // The host sorts keys; a linear scan is still fine for the handful a
    // handler asks for, and it does not trust the order.
    pairs.find(|(k, _)| *k == key).map(|(_, v)| v)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn printer() -> Vec<Node> {
        let mut tty = testing::udev_node("/devices/usb1/1-1/1-1:1.0/ttyUSB0", "tty");
        tty.devnode = Some("/dev/ttyUSB0".into());
        tty.devlinks = vec!["/dev/serial/by-id/usb-1a86_ch340".into(), "/dev/printer".into()];
        tty.properties = vec![("ID_MODEL".into(), "CH340 🖨".into())];
        tty.tags = vec!["seat".into()];
        tty.parent = Some(1);
        let mut usb = testing::udev_node("/devices/usb1/1-1", "usb");
        usb.devtype = Some("usb_device".into());
        usb.attributes = vec![("idProduct".into(), "7523".into()), ("idVendor".into(), "1a86".into())];
        vec![tty, usb]
    }

    fn raw(nodes: Vec<Node>) -> wire::Snapshot {
        Snapshot::from_parts(nodes, vec![0]).unwrap().raw
    }

    #[test]
    fn a_laid_out_node_reads_back_as_it_was() {
        let nodes = printer();
        let snapshot = Snapshot::from_parts(nodes.clone(), vec![0]).unwrap();
        let tty = snapshot.device(0);
        assert_eq!(tty.devpath(), nodes[0].devpath);
        assert_eq!(tty.kernel(), "ttyUSB0");
        assert_eq!(tty.subsystem(), "tty");
        assert_eq!((tty.devtype(), tty.driver(), tty.devnode()), (None, None, Some("/dev/ttyUSB0")));
        assert_eq!(tty.devlinks().collect::<Vec<_>>(), ["/dev/serial/by-id/usb-1a86_ch340", "/dev/printer"]);
        assert_eq!(tty.tags().collect::<Vec<_>>(), ["seat"]);
        assert_eq!(tty.property("ID_MODEL"), Some("CH340 🖨"));
        assert_eq!(tty.attribute("idVendor"), None);
        let usb = tty.parent().unwrap();
        assert_eq!(usb.devtype(), Some("usb_device"));
        assert_eq!(usb.attributes().collect::<Vec<_>>(), [("idProduct", "7523"), ("idVendor", "1a86")]);
        assert_eq!(usb.tags().len(), 0);
        assert!(usb.parent().is_none());
    }

    #[test]
    fn a_span_past_the_text_is_refused() {
        let mut raw = raw(printer());
        raw.nodes[1].kernel = Span { start: raw.text.len() as u32 - 2, len: 3 };
        let error = Snapshot::new(raw).unwrap_err();
        assert_eq!(error.message, "snapshot node 1 refers past the snapshot's text or lists");
    }

    #[test]
    fn a_span_that_cuts_a_character_is_refused() {
        let mut raw = raw(printer());
        let emoji = raw.text.find('🖨').unwrap() as u32;
        raw.pairs[0].value = Span { start: emoji + 1, len: 1 };
        let error = Snapshot::new(raw).unwrap_err();
        assert_eq!(error.message, "snapshot pair 0 is not a span of its text");
    }

    #[test]
    fn a_span_whose_end_overflows_is_refused() {
        let mut raw = raw(printer());
        raw.nodes[0].devpath = Span { start: u32::MAX, len: u32::MAX };
        assert!(Snapshot::new(raw).is_err());
        let mut raw = self::raw(printer());
        raw.nodes[0].devlinks = Range { start: u32::MAX, len: 2 };
        assert!(Snapshot::new(raw).is_err());
    }

    #[test]
    fn a_range_past_its_list_is_refused() {
        let mut raw = raw(printer());
        raw.nodes[0].tags = Range { start: raw.names.len() as u32, len: 1 };
        assert!(Snapshot::new(raw).is_err());
        let mut raw = self::raw(printer());
        raw.nodes[1].attributes = Range { start: 0, len: raw.pairs.len() as u32 + 1 };
        assert!(Snapshot::new(raw).is_err());
    }

    #[test]
    fn a_parent_before_its_child_is_refused() {
        let mut nodes = printer();
        nodes[1].parent = Some(0);
        let error = Snapshot::from_parts(nodes, vec![0]).unwrap_err();
        assert_eq!(error.message, "snapshot node 1 (/devices/usb1/1-1) has parent 0, which is not a later node");
    }
}

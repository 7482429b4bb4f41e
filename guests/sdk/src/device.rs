//! A checked snapshot and the `Device` view handlers match on: a node plus
//! navigation to its ancestors and lookups of its properties and attributes.
//!
//! The contract sends a snapshot as one text and lists of words (its layout
//! is in `wit/handler.wit`); [`Snapshot::new`] checks every span, range and
//! index once, so that the views below never panic.

use crate::bindings::devsieve::handler::types as wire;
use crate::{DeviceGroup, DeviceNode, HandlerError, Origin};

/// Where each field of a node is among its words (`wit/handler.wit`).
mod word {
    pub const PER_NODE: usize = 22;
    pub const ORIGIN: usize = 0;
    pub const DEVPATH: usize = 1;
    pub const KERNEL: usize = 3;
    pub const SUBSYSTEM: usize = 5;
    pub const DEVTYPE: usize = 7;
    pub const DRIVER: usize = 9;
    pub const DEVNODE: usize = 11;
    pub const DEVLINKS: usize = 13;
    pub const PROPERTIES: usize = 15;
    pub const ATTRIBUTES: usize = 17;
    pub const TAGS: usize = 19;
    pub const PARENT: usize = 21;
    /// An optional span's start, or a parent, that is not there.
    pub const ABSENT: u32 = u32::MAX;
    /// Words per entry of `names` (a span) and of `pairs` (two spans).
    pub const PER_NAME: usize = 2;
    pub const PER_PAIR: usize = 4;
}

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
        let span_ok = |start: u32, len: u32| {
            let start = start as usize;
            start
                .checked_add(len as usize)
                .is_some_and(|end| end <= text.len() && text.is_char_boundary(start) && text.is_char_boundary(end))
        };
        let range_ok = |first: u32, count: u32, len: usize| {
            (first as usize).checked_add(count as usize).is_some_and(|end| end <= len)
        };
        if !raw.names.len().is_multiple_of(word::PER_NAME) || !raw.pairs.len().is_multiple_of(word::PER_PAIR) {
            return Err(HandlerError::new("snapshot names or pairs end in the middle of an entry"));
        }
        if let Some(at) = raw.names.chunks_exact(2).position(|span| !span_ok(span[0], span[1])) {
            return Err(HandlerError::new(format!("snapshot name {at} is not a span of its text")));
        }
        if let Some(at) = raw.pairs.chunks_exact(2).position(|span| !span_ok(span[0], span[1])) {
            return Err(HandlerError::new(format!("snapshot pair {} is not two spans of its text", at / 2)));
        }
        if !raw.nodes.len().is_multiple_of(word::PER_NODE) {
            return Err(HandlerError::new(format!(
                "snapshot nodes are {} words, not a multiple of {}",
                raw.nodes.len(),
                word::PER_NODE
            )));
        }
        let (names, pairs) = (raw.names.len() / word::PER_NAME, raw.pairs.len() / word::PER_PAIR);
        let len = raw.nodes.len() / word::PER_NODE;
        for (index, node) in raw.nodes.chunks_exact(word::PER_NODE).enumerate() {
            let span = |at: usize| span_ok(node[at], node[at + 1]);
            let optional = |at: usize| (node[at] == word::ABSENT && node[at + 1] == 0) || span(at);
            let fits = node[word::ORIGIN] <= 2
                && [word::DEVPATH, word::KERNEL, word::SUBSYSTEM].into_iter().all(span)
                && [word::DEVTYPE, word::DRIVER, word::DEVNODE].into_iter().all(optional)
                && [word::DEVLINKS, word::TAGS].into_iter().all(|at| range_ok(node[at], node[at + 1], names))
                && [word::PROPERTIES, word::ATTRIBUTES].into_iter().all(|at| range_ok(node[at], node[at + 1], pairs));
            if !fits {
                return Err(HandlerError::new(format!(
                    "snapshot node {index} has an unknown origin or refers past the snapshot's text or lists"
                )));
            }
            // A parent must come later in the table: cycles are impossible then.
            let parent = node[word::PARENT];
            if parent != word::ABSENT && (parent as usize >= len || parent as usize <= index) {
                let devpath = &text[node[word::DEVPATH] as usize..][..node[word::DEVPATH + 1] as usize];
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
        let mut layout = Layout::default();
        for node in &nodes {
            layout.node(node);
        }
        let Layout { text, nodes, names, pairs } = layout;
        Self::new(wire::Snapshot { text, nodes, names, pairs, candidates })
    }

    /// How many nodes (candidates and ancestors) the snapshot holds.
    pub fn len(&self) -> usize {
        self.raw.nodes.len() / word::PER_NODE
    }

    pub fn is_empty(&self) -> bool {
        self.raw.nodes.is_empty()
    }

    /// The node at `index`; panics past [`len`](Self::len).
    pub fn device(&self, index: u32) -> Device<'_> {
        assert!((index as usize) < self.len(), "no node {index} in a snapshot of {}", self.len());
        Device { snapshot: self, index }
    }

    pub fn candidates(&self) -> impl Iterator<Item = Device<'_>> {
        self.raw.candidates.iter().map(|&index| Device { snapshot: self, index })
    }

    fn text(&self, start: u32, len: u32) -> &str {
        // In range and on boundaries: `new` checked it.
        &self.raw.text[start as usize..][..len as usize]
    }
}

/// The contract's layout of nodes, as [`Snapshot::from_parts`] builds it.
#[derive(Default)]
struct Layout {
    text: String,
    nodes: Vec<u32>,
    names: Vec<u32>,
    pairs: Vec<u32>,
}

impl Layout {
    fn span(&mut self, s: &str) -> [u32; 2] {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        [start, s.len() as u32]
    }

    fn optional(&mut self, s: Option<&str>) -> [u32; 2] {
        s.map_or([word::ABSENT, 0], |s| self.span(s))
    }

    fn names(&mut self, names: &[String]) -> [u32; 2] {
        let first = (self.names.len() / word::PER_NAME) as u32;
        for name in names {
            let span = self.span(name);
            self.names.extend(span);
        }
        [first, names.len() as u32]
    }

    fn pairs(&mut self, pairs: &[(String, String)]) -> [u32; 2] {
        let first = (self.pairs.len() / word::PER_PAIR) as u32;
        for (key, value) in pairs {
            let (key, value) = (self.span(key), self.span(value));
            self.pairs.extend(key.into_iter().chain(value));
        }
        [first, pairs.len() as u32]
    }

    fn node(&mut self, node: &Node) {
        let origin = match node.origin {
            Origin::Udev => 0,
            Origin::Path => 1,
            Origin::Usbip => 2,
        };
        let fields = [
            self.span(&node.devpath),
            self.span(&node.kernel),
            self.span(&node.subsystem),
            self.optional(node.devtype.as_deref()),
            self.optional(node.driver.as_deref()),
            self.optional(node.devnode.as_deref()),
            self.names(&node.devlinks),
            self.pairs(&node.properties),
            self.pairs(&node.attributes),
            self.names(&node.tags),
        ];
        self.nodes.push(origin);
        self.nodes.extend(fields.into_iter().flatten());
        self.nodes.push(node.parent.unwrap_or(word::ABSENT));
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
    /// This node's words.
    fn words(&self) -> &'a [u32] {
        &self.snapshot.raw.nodes[self.index as usize * word::PER_NODE..][..word::PER_NODE]
    }
    fn span(&self, at: usize) -> &'a str {
        let words = self.words();
        self.snapshot.text(words[at], words[at + 1])
    }
    fn optional(&self, at: usize) -> Option<&'a str> {
        (self.words()[at] != word::ABSENT).then(|| self.span(at))
    }
    fn names(&self, at: usize) -> impl ExactSizeIterator<Item = &'a str> + use<'a> {
        let (snapshot, words) = (self.snapshot, self.words());
        let names =
            &snapshot.raw.names[words[at] as usize * word::PER_NAME..][..words[at + 1] as usize * word::PER_NAME];
        names.chunks_exact(word::PER_NAME).map(|span| snapshot.text(span[0], span[1]))
    }
    fn pairs(&self, at: usize) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + use<'a> {
        let (snapshot, words) = (self.snapshot, self.words());
        let pairs =
            &snapshot.raw.pairs[words[at] as usize * word::PER_PAIR..][..words[at + 1] as usize * word::PER_PAIR];
        pairs.chunks_exact(word::PER_PAIR).map(|p| (snapshot.text(p[0], p[1]), snapshot.text(p[2], p[3])))
    }
    pub fn origin(&self) -> Origin {
        match self.words()[word::ORIGIN] {
            0 => Origin::Udev,
            1 => Origin::Path,
            // `new` let nothing above 2 in.
            _ => Origin::Usbip,
        }
    }
    pub fn devpath(&self) -> &'a str {
        self.span(word::DEVPATH)
    }
    pub fn kernel(&self) -> &'a str {
        self.span(word::KERNEL)
    }
    pub fn subsystem(&self) -> &'a str {
        self.span(word::SUBSYSTEM)
    }
    pub fn devtype(&self) -> Option<&'a str> {
        self.optional(word::DEVTYPE)
    }
    pub fn driver(&self) -> Option<&'a str> {
        self.optional(word::DRIVER)
    }
    pub fn devnode(&self) -> Option<&'a str> {
        self.optional(word::DEVNODE)
    }
    /// Symlinks to the device node (`/dev/serial/by-id/...`).
    pub fn devlinks(&self) -> impl ExactSizeIterator<Item = &'a str> + use<'a> {
        self.names(word::DEVLINKS)
    }
    /// udev tags, sorted.
    pub fn tags(&self) -> impl ExactSizeIterator<Item = &'a str> + use<'a> {
        self.names(word::TAGS)
    }
    /// The udev properties the handler asked for, sorted by key.
    pub fn properties(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + use<'a> {
        self.pairs(word::PROPERTIES)
    }
    /// The sysfs attributes the handler asked for, sorted by key.
    pub fn attributes(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + use<'a> {
        self.pairs(word::ATTRIBUTES)
    }
    pub fn property(&self, key: &str) -> Option<&'a str> {
        lookup(self.properties(), key)
    }
    pub fn attribute(&self, key: &str) -> Option<&'a str> {
        lookup(self.attributes(), key)
    }
    pub fn parent(&self) -> Option<Device<'a>> {
        let parent = self.words()[word::PARENT];
        (parent != word::ABSENT).then_some(Device { snapshot: self.snapshot, index: parent })
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
        usb.origin = Origin::Usbip;
        vec![tty, usb]
    }

    fn raw(nodes: Vec<Node>) -> wire::Snapshot {
        Snapshot::from_parts(nodes, vec![0]).unwrap().raw
    }

    /// Word `at` of node `node`.
    fn word_of(raw: &mut wire::Snapshot, node: usize, at: usize) -> &mut u32 {
        &mut raw.nodes[node * word::PER_NODE + at]
    }

    #[test]
    fn a_laid_out_node_reads_back_as_it_was() {
        let nodes = printer();
        let snapshot = Snapshot::from_parts(nodes.clone(), vec![0]).unwrap();
        assert_eq!(snapshot.len(), 2);
        let tty = snapshot.device(0);
        assert_eq!(tty.origin(), Origin::Udev);
        assert_eq!(tty.devpath(), nodes[0].devpath);
        assert_eq!(tty.kernel(), "ttyUSB0");
        assert_eq!(tty.subsystem(), "tty");
        assert_eq!((tty.devtype(), tty.driver(), tty.devnode()), (None, None, Some("/dev/ttyUSB0")));
        assert_eq!(tty.devlinks().collect::<Vec<_>>(), ["/dev/serial/by-id/usb-1a86_ch340", "/dev/printer"]);
        assert_eq!(tty.tags().collect::<Vec<_>>(), ["seat"]);
        assert_eq!(tty.property("ID_MODEL"), Some("CH340 🖨"));
        assert_eq!(tty.attribute("idVendor"), None);
        let usb = tty.parent().unwrap();
        assert_eq!(usb.origin(), Origin::Usbip);
        assert_eq!(usb.devtype(), Some("usb_device"));
        assert_eq!(usb.attributes().collect::<Vec<_>>(), [("idProduct", "7523"), ("idVendor", "1a86")]);
        assert_eq!(usb.tags().len(), 0);
        assert!(usb.parent().is_none());
        assert_eq!(snapshot.candidates().map(|d| d.index()).collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_span_past_the_text_is_refused() {
        let mut raw = raw(printer());
        let end = raw.text.len() as u32;
        (*word_of(&mut raw, 1, word::KERNEL), *word_of(&mut raw, 1, word::KERNEL + 1)) = (end - 2, 3);
        let error = Snapshot::new(raw).unwrap_err();
        assert_eq!(error.message, "snapshot node 1 has an unknown origin or refers past the snapshot's text or lists");
    }

    #[test]
    fn a_span_that_cuts_a_character_is_refused() {
        let mut raw = raw(printer());
        let emoji = raw.text.find('🖨').unwrap() as u32;
        (raw.pairs[2], raw.pairs[3]) = (emoji + 1, 1);
        let error = Snapshot::new(raw).unwrap_err();
        assert_eq!(error.message, "snapshot pair 0 is not two spans of its text");
    }

    #[test]
    fn a_span_whose_end_overflows_is_refused() {
        let mut raw = raw(printer());
        (*word_of(&mut raw, 0, word::DEVPATH), *word_of(&mut raw, 0, word::DEVPATH + 1)) = (u32::MAX, u32::MAX);
        assert!(Snapshot::new(raw).is_err());
        let mut raw = self::raw(printer());
        *word_of(&mut raw, 0, word::DEVLINKS) = u32::MAX;
        assert!(Snapshot::new(raw).is_err());
    }

    #[test]
    fn a_range_past_its_list_is_refused() {
        let mut raw = raw(printer());
        let names = (raw.names.len() / word::PER_NAME) as u32;
        (*word_of(&mut raw, 0, word::TAGS), *word_of(&mut raw, 0, word::TAGS + 1)) = (names, 1);
        assert!(Snapshot::new(raw).is_err());
        let mut raw = self::raw(printer());
        let pairs = (raw.pairs.len() / word::PER_PAIR) as u32;
        (*word_of(&mut raw, 1, word::ATTRIBUTES), *word_of(&mut raw, 1, word::ATTRIBUTES + 1)) = (0, pairs + 1);
        assert!(Snapshot::new(raw).is_err());
    }

    #[test]
    fn a_broken_layout_is_refused() {
        let mut raw = raw(printer());
        raw.nodes.pop();
        let error = Snapshot::new(raw).unwrap_err();
        assert_eq!(error.message, "snapshot nodes are 43 words, not a multiple of 22");
        let mut raw = self::raw(printer());
        raw.pairs.pop();
        assert!(Snapshot::new(raw).is_err());
        let mut raw = self::raw(printer());
        *word_of(&mut raw, 0, word::ORIGIN) = 3;
        assert!(Snapshot::new(raw).is_err());
        let mut raw = self::raw(printer());
        *word_of(&mut raw, 0, word::DEVTYPE + 1) = 1; // absent, yet with a length
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

//! The handler contract: the `devsieve:handler` WIT package as Rust, and the
//! agent's device record, [`Node`], which sources build and a
//! [`SnapshotView`] lays out as the contract's snapshot (every string a span
//! of one text) for each call. It sits at the bottom, beside the model, and
//! imports nothing of the crate.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    // Records compare so that a re-read device is known to be unchanged.
    additional_derives: [PartialEq],
});

pub use devsieve::handler::types::{
    DeviceGroup, HandlerError as GuestError, HandlerInfo, Origin, Requirements, Snapshot as WireSnapshot, Verdict,
};
#[cfg(test)]
pub use devsieve::handler::types::{DeviceNode, Mount};

/// The contract version this agent speaks: the WIT package's version, which
/// build.rs reads from `wit/handler.wit`. A handler must export
/// `devsieve:handler/discovery@` this version.
pub const CONTRACT_VERSION: &str = env!("DEVSIEVE_CONTRACT_VERSION");
pub const DISCOVERY_EXPORT_PREFIX: &str = "devsieve:handler/discovery@";

/// One device, or an ancestor of one, as a source found it: the contract's
/// `node` with its strings in place. `parent` is set per snapshot.
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
    pub parent: Option<u32>,
}

impl Node {
    /// A device known by its devpath and subsystem only (its kernel name is
    /// the devpath's last part), for tables built by hand: tests and `bench`.
    pub fn bare(origin: Origin, devpath: &str, subsystem: &str) -> Node {
        Node {
            origin,
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

/// A snapshot as the evaluation cuts it from a device table: each node
/// borrowed, not copied. [`encode`](Self::encode) lays it out for the guest.
#[derive(Debug)]
pub struct SnapshotView<'a> {
    pub nodes: Vec<NodeView<'a>>,
    pub candidates: Vec<u32>,
}

/// A node of a [`SnapshotView`], borrowed from its table, with `parent` as
/// this snapshot's index of its parent.
#[derive(Clone, Copy, Debug)]
pub struct NodeView<'a> {
    pub origin: Origin,
    pub devpath: &'a str,
    pub kernel: &'a str,
    pub subsystem: &'a str,
    pub devtype: Option<&'a str>,
    pub driver: Option<&'a str>,
    pub devnode: Option<&'a str>,
    pub devlinks: &'a [String],
    pub properties: &'a [(String, String)],
    pub attributes: &'a [(String, String)],
    pub tags: &'a [String],
    pub parent: Option<u32>,
}

impl SnapshotView<'_> {
    /// The contract's snapshot (its layout is in `wit/handler.wit`): every
    /// string copied once into one text, each node 22 words, the devlinks
    /// and tags one list of spans, the properties and attributes one list of
    /// span pairs. wasmtime copies each list into the guest with one memcpy,
    /// and the guest takes them as they are; a record per node would be
    /// converted field by field on both sides.
    pub fn encode(&self) -> WireSnapshot {
        let text_len: usize = self.nodes.iter().map(NodeView::text_len).sum();
        let names_len: usize = self.nodes.iter().map(|n| n.devlinks.len() + n.tags.len()).sum();
        let pairs_len: usize = self.nodes.iter().map(|n| n.properties.len() + n.attributes.len()).sum();
        let mut out = Layout {
            text: String::with_capacity(text_len),
            nodes: Vec::with_capacity(self.nodes.len() * NODE_WORDS),
            names: Vec::with_capacity(names_len * 2),
            pairs: Vec::with_capacity(pairs_len * 4),
        };
        for node in &self.nodes {
            out.node(node);
        }
        let Layout { text, nodes, names, pairs } = out;
        WireSnapshot { text, nodes, names, pairs, candidates: self.candidates.clone() }
    }
}

/// Words per node in the contract's snapshot.
const NODE_WORDS: usize = 22;
/// An absent optional span's start, and an absent parent.
const ABSENT: u32 = u32::MAX;

/// The buffers of [`SnapshotView::encode`]. Offsets are u32, as the
/// contract's are: a snapshot past 4 GiB of text would not fit a guest's
/// memory (nor its cap) anyway.
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
        s.map_or([ABSENT, 0], |s| self.span(s))
    }

    fn names(&mut self, names: &[String]) -> [u32; 2] {
        let first = (self.names.len() / 2) as u32;
        for name in names {
            let span = self.span(name);
            self.names.extend(span);
        }
        [first, names.len() as u32]
    }

    fn pairs(&mut self, pairs: &[(String, String)]) -> [u32; 2] {
        let first = (self.pairs.len() / 4) as u32;
        for (key, value) in pairs {
            let (key, value) = (self.span(key), self.span(value));
            self.pairs.extend(key.into_iter().chain(value));
        }
        [first, pairs.len() as u32]
    }

    /// `node`'s words, in the contract's order.
    fn node(&mut self, node: &NodeView<'_>) {
        let origin = match node.origin {
            Origin::Udev => 0,
            Origin::Path => 1,
            Origin::Usbip => 2,
        };
        let fields = [
            self.span(node.devpath),
            self.span(node.kernel),
            self.span(node.subsystem),
            self.optional(node.devtype),
            self.optional(node.driver),
            self.optional(node.devnode),
            self.names(node.devlinks),
            self.pairs(node.properties),
            self.pairs(node.attributes),
            self.names(node.tags),
        ];
        self.nodes.push(origin);
        self.nodes.extend(fields.into_iter().flatten());
        self.nodes.push(node.parent.unwrap_or(ABSENT));
    }
}

impl<'a> NodeView<'a> {
    /// `node`'s record with `parent` as this snapshot's index of its parent.
    pub fn new(node: &'a Node, parent: Option<u32>) -> Self {
        NodeView {
            origin: node.origin,
            devpath: &node.devpath,
            kernel: &node.kernel,
            subsystem: &node.subsystem,
            devtype: node.devtype.as_deref(),
            driver: node.driver.as_deref(),
            devnode: node.devnode.as_deref(),
            devlinks: &node.devlinks,
            properties: &node.properties,
            attributes: &node.attributes,
            tags: &node.tags,
            parent,
        }
    }

    fn text_len(&self) -> usize {
        let strings =
            [Some(self.devpath), Some(self.kernel), Some(self.subsystem), self.devtype, self.driver, self.devnode];
        let names = self.devlinks.iter().chain(self.tags);
        let pairs = self.properties.iter().chain(self.attributes).map(|(k, v)| k.len() + v.len());
        strings.iter().flatten().map(|s| s.len()).sum::<usize>()
            + names.map(String::len).sum::<usize>()
            + pairs.sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_laid_out_as_the_contract_says() {
        let mut usb = Node::bare(Origin::Usbip, "usbip://h:3240/1-1", "usb");
        usb.devtype = Some("usb_device".into());
        usb.attributes = vec![("idVendor".into(), "1a86".into())];
        let mut tty = Node::bare(Origin::Udev, "/devices/x/ttyUSB0", "tty");
        tty.tags = vec!["seat".into(), "uaccess".into()];
        let view =
            SnapshotView { nodes: vec![NodeView::new(&tty, Some(1)), NodeView::new(&usb, None)], candidates: vec![0] };
        let wire = view.encode();
        let text = |start: u32, len: u32| &wire.text[start as usize..][..len as usize];
        assert_eq!(wire.nodes.len(), 2 * NODE_WORDS);
        let (tty, usb) = wire.nodes.split_at(NODE_WORDS);
        assert_eq!(tty[0], 0, "udev");
        assert_eq!(text(tty[1], tty[2]), "/devices/x/ttyUSB0");
        assert_eq!(text(tty[3], tty[4]), "ttyUSB0");
        assert_eq!(text(tty[5], tty[6]), "tty");
        assert_eq!(&tty[7..9], [ABSENT, 0], "no devtype");
        assert_eq!(&tty[19..21], [0, 2], "two tags from the first name");
        assert_eq!(text(wire.names[2], wire.names[3]), "uaccess");
        assert_eq!(tty[21], 1, "the usb device is its parent");
        assert_eq!(usb[0], 2, "usbip");
        assert_eq!(text(usb[7], usb[8]), "usb_device");
        assert_eq!(&usb[15..17], [0, 0], "no properties");
        assert_eq!(&usb[17..19], [0, 1], "one attribute, the first pair");
        assert_eq!((text(wire.pairs[0], wire.pairs[1]), text(wire.pairs[2], wire.pairs[3])), ("idVendor", "1a86"));
        assert_eq!(usb[21], ABSENT, "no parent");
        assert_eq!(wire.candidates, [0]);
        assert_eq!(wire.text.len(), view.nodes.iter().map(NodeView::text_len).sum::<usize>());
    }
}

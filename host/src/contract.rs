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
use devsieve::handler::types::{Node as WireNode, Pair, Range, Span};

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
    /// The contract's snapshot: every string copied once into one text, the
    /// nodes' devlinks and tags into one list of spans, their properties and
    /// attributes into one list of pairs. wasmtime then copies five buffers
    /// into the guest, where one string per allocation cost a call into the
    /// guest's allocator for every string and list of every node.
    pub fn encode(&self) -> WireSnapshot {
        let text_len: usize = self.nodes.iter().map(NodeView::text_len).sum();
        let names_len: usize = self.nodes.iter().map(|n| n.devlinks.len() + n.tags.len()).sum();
        let pairs_len: usize = self.nodes.iter().map(|n| n.properties.len() + n.attributes.len()).sum();
        let mut out = Layout {
            text: String::with_capacity(text_len),
            names: Vec::with_capacity(names_len),
            pairs: Vec::with_capacity(pairs_len),
        };
        let nodes = self
            .nodes
            .iter()
            .map(|node| WireNode {
                origin: node.origin,
                devpath: out.span(node.devpath),
                kernel: out.span(node.kernel),
                subsystem: out.span(node.subsystem),
                devtype: node.devtype.map(|s| out.span(s)),
                driver: node.driver.map(|s| out.span(s)),
                devnode: node.devnode.map(|s| out.span(s)),
                devlinks: out.names(node.devlinks),
                properties: out.pairs(node.properties),
                attributes: out.pairs(node.attributes),
                tags: out.names(node.tags),
                parent: node.parent,
            })
            .collect();
        WireSnapshot { text: out.text, nodes, names: out.names, pairs: out.pairs, candidates: self.candidates.clone() }
    }
}

/// The shared buffers of [`SnapshotView::encode`].
struct Layout {
    text: String,
    names: Vec<Span>,
    pairs: Vec<Pair>,
}

impl Layout {
    fn span(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Span { start, len: s.len() as u32 }
    }

    fn names(&mut self, names: &[String]) -> Range {
        let start = self.names.len() as u32;
        for name in names {
            let span = self.span(name);
            self.names.push(span);
        }
        Range { start, len: names.len() as u32 }
    }

    fn pairs(&mut self, pairs: &[(String, String)]) -> Range {
        let start = self.pairs.len() as u32;
        for (key, value) in pairs {
            let pair = Pair { key: self.span(key), value: self.span(value) };
            self.pairs.push(pair);
        }
        Range { start, len: pairs.len() as u32 }
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

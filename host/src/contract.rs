//! The handler contract: the `devsieve:handler` WIT package as Rust. Its
//! record types are also the agent's device model — sources build `Node`s,
//! the runtime lowers them into the guest without converting — so this
//! module sits at the bottom, beside the model, and imports nothing of the
//! crate.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    // Records compare so that a re-read device is known to be unchanged.
    additional_derives: [PartialEq],
});

pub use devsieve::handler::types::{
    DeviceGroup, HandlerError as GuestError, HandlerInfo, Node, Origin, Requirements, Verdict,
};
#[cfg(test)]
pub use devsieve::handler::types::{DeviceNode, Mount};

/// The contract version this agent speaks: the WIT package's version, which
/// build.rs reads from `wit/handler.wit`. A handler must export
/// `devsieve:handler/discovery@` this version.
pub const CONTRACT_VERSION: &str = env!("DEVSIEVE_CONTRACT_VERSION");
pub const DISCOVERY_EXPORT_PREFIX: &str = "devsieve:handler/discovery@";

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

/// The WIT `snapshot` record as the evaluation lowers it: each node borrowed
/// from its device table instead of copied (wasmtime copies the strings
/// into the guest's memory either way). The field names and order are the
/// WIT record's; wasmtime checks them against the handler's export when the
/// handler is loaded.
#[derive(Debug, wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct SnapshotView<'a> {
    pub nodes: Vec<NodeView<'a>>,
    pub candidates: Vec<u32>,
}

/// The WIT `node` record, borrowed; see [`SnapshotView`].
#[derive(Clone, Copy, Debug, wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
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
}

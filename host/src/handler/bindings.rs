//! Host bindings for the `devsieve:handler` WIT package. Its record types are
//! also the agent's device model: sources build `Node`s, the runtime lowers
//! them into the guest without converting.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "handler",
    // Records compare so that a re-read device is known to be unchanged.
    additional_derives: [PartialEq],
});

pub use devsieve::handler::types::{
    DeviceGroup, DeviceNode, HandlerError as GuestError, HandlerInfo, Mount, Node, Origin, Requirements, Verdict,
};

/// The contract version this agent speaks; a handler must export
/// `devsieve:handler/discovery@` this version.
pub const CONTRACT_VERSION: &str = "0.2.0";
pub const DISCOVERY_EXPORT_PREFIX: &str = "devsieve:handler/discovery@";

/// The WIT `snapshot` record as the evaluator lowers it: each node borrowed
/// from the evaluator's table instead of copied (wasmtime copies the strings
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

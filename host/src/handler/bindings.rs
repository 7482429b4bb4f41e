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
    DeviceGroup, DeviceNode, HandlerError as GuestError, HandlerInfo, Mount, Node, Origin,
    Requirements, Snapshot,
};

/// The contract version this agent speaks; a handler must export
/// `devsieve:handler/discovery@` this version.
pub const CONTRACT_VERSION: &str = "0.1.0";
pub const DISCOVERY_EXPORT_PREFIX: &str = "devsieve:handler/discovery@";

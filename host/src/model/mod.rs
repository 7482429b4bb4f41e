//! The plain data the stages hand each other: device tables and the
//! snapshots cut from them, device events, and groups as the kubelet will
//! see them. It imports only the contract's types and [`crate::support`].

mod advertised;
mod event;
mod table;

#[cfg(test)]
pub use advertised::GrantedMount;
pub use advertised::{Advertised, GrantedNode};
pub use event::{Action, PathChange, UdevEvent};
pub use table::{Changes, DeviceTable};

#[cfg(test)]
pub(crate) use table::tests::node;

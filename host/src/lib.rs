//! devsieve: a Kubernetes node agent that finds a node's devices, sifts them
//! through sandboxed WebAssembly discovery handlers and advertises the groups
//! they match to the kubelet.
//!
//! Data flows one way: [`source`] → [`handler`] → (registry → kubelet
//! advertiser). Each stage owns its state and hands immutable snapshots on;
//! only the binary's wiring knows all stages.

pub mod bench;
pub mod config;
pub mod discover;
pub mod handler;
pub mod inspect;
pub mod loader;
pub mod names;
pub mod output;
pub mod snapshot;
pub mod source;

//! devsieve: a Kubernetes node agent that finds a node's devices, sifts them
//! through sandboxed WebAssembly discovery handlers and advertises the groups
//! they match to the kubelet.
//!
//! Data flows one way: [`source`] → [`evaluator`] (running [`handler`]s) →
//! [`registry`] → [`kubelet`] advertiser. Each stage owns its state and
//! hands immutable snapshots on; only [`agent`], the wiring of `devsieve
//! run`, knows all stages.

pub mod agent;
pub mod bench;
pub mod config;
pub mod digest;
pub mod discover;
pub mod evaluate;
pub mod evaluator;
pub mod files;
pub mod handler;
pub mod inspect;
pub mod kubelet;
pub mod loader;
pub mod metrics;
pub mod names;
pub mod ops;
pub mod output;
pub mod registry;
pub mod snapshot;
pub mod source;
pub mod status;

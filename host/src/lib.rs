//! devsieve: a Kubernetes node agent that finds a node's devices, sifts them
//! through sandboxed WebAssembly discovery handlers and advertises the groups
//! they match to the kubelet.
//!
//! Data flows one way, and so do the imports: a module uses only the
//! modules above it in this list, never one below.
//!
//! | module | what it is |
//! | --- | --- |
//! | `support`, `metrics` | digests, atomic files, backoff, path and name checks; the metrics every stage records into |
//! | `contract` | the handler WIT contract as Rust types (also the device model) |
//! | `model` | the data stages hand on: device tables and snapshots, device events, advertised groups |
//! | `builtin` | the built-in handler components, embedded at build time |
//! | [`config`] | the config file and handler references |
//! | `handler` | the sandboxed runtime: one engine, a fresh store per call |
//! | [`loader`] | handler components from files, OCI registries and ConfigMaps |
//! | `source` | stage 1: finding devices (udev, paths, USB/IP servers) and watching for changes |
//! | `evaluation` | stage 2: handlers over what the sources found, incrementally |
//! | `inventory` | stage 3: kubelet devices, health and grace periods |
//! | `attach` | USB/IP devices attached through vhci_hcd on `Allocate`, recorded, detached when no pod holds them |
//! | `kubelet` | stage 4: one device-plugin server per resource |
//! | `ops` | `/healthz`, `/readyz`, `/metrics`, `/status` |
//! | `agent` | `devsieve run`: the wiring, the only module that knows every stage |
//! | [`cli`] | the commands, one file each |
//!
//! Errors are one `thiserror` enum per module boundary. A message says what
//! is wrong and where, and may quote its cause; whoever prints an error
//! prints `support::error_chain`, which says each cause once.

mod agent;
mod attach;
mod builtin;
pub mod cli;
pub mod config;
mod contract;
mod evaluation;
mod handler;
mod inventory;
mod kubelet;
pub mod loader;
mod metrics;
mod model;
mod ops;
mod source;
mod support;

pub use support::digest;

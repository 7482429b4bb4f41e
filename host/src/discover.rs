//! One pass of the pipeline for every configured resource: load its handler,
//! ask what to collect, collect it, select, group, check. `devsieve discover`
//! prints the result; the agent advertises it.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, HandlerRef, Resource};
use crate::evaluate::ResourceEval;
use crate::handler::bindings::{DeviceGroup, Requirements};
use crate::handler::{self, LoadedHandler, Runtime};
use crate::loader::{HandlerBytes, LoadError, Loader};
use crate::names;
use crate::source::{SourceError, Sources};

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{resource}: {error}")]
    Handler { resource: String, error: handler::Error },
    #[error("{resource}: {error}")]
    Load { resource: String, error: Arc<LoadError> },
    #[error("{resource}: {error}")]
    Source { resource: String, error: SourceError },
}

/// A resource whose handler is loaded and whose config the handler accepted.
pub struct Prepared {
    pub resource: Resource,
    pub handler: Arc<LoadedHandler>,
    pub needs: Requirements,
}

/// Every distinct handler of a config, fetched by the [`Loader`].
#[derive(Debug, Default)]
pub struct Fetched {
    handlers: HashMap<HandlerRef, Result<HandlerBytes, Arc<LoadError>>>,
}

/// Fetches every distinct handler of `config`, concurrently (a slow registry
/// does not delay the others). Handler calls must not run on a tokio
/// runtime's thread (wasmtime-wasi's sync bindings block on their own), so
/// fetching is this async step and [`prepare`] the sync one after it.
pub async fn fetch(loader: &Loader, config: &Config) -> Fetched {
    fetch_refs(loader, config.resources.iter().map(|r| &r.handler)).await
}

/// Fetches the distinct handlers among `references`.
pub async fn fetch_refs<'a>(loader: &Loader, references: impl IntoIterator<Item = &'a HandlerRef>) -> Fetched {
    let mut distinct: Vec<&HandlerRef> = Vec::new();
    for reference in references {
        if !distinct.contains(&reference) {
            distinct.push(reference);
        }
    }
    let results = futures_util::future::join_all(distinct.iter().map(|reference| loader.fetch(reference))).await;
    Fetched { handlers: distinct.into_iter().cloned().zip(results.into_iter().map(|r| r.map_err(Arc::new))).collect() }
}

impl Fetched {
    /// `reference`'s bytes as they arrived some other way (a ConfigMap update).
    pub fn insert(&mut self, reference: HandlerRef, bytes: HandlerBytes) {
        self.handlers.insert(reference, Ok(bytes));
    }

    /// The digest of what was fetched for `reference`, if it was.
    pub fn digest(&self, reference: &HandlerRef) -> Option<&str> {
        match self.handlers.get(reference) {
            Some(Ok(bytes)) => Some(&bytes.digest),
            _ => None,
        }
    }
}

/// Handlers loaded so far, by reference: each distinct handler is loaded once.
pub type Loaded = HashMap<HandlerRef, Arc<LoadedHandler>>;

/// Loads each resource's handler (once per distinct handler) and checks the
/// resource's config with it. One bad resource does not stop the others.
pub fn prepare(runtime: &Runtime, fetched: &Fetched, config: &Config) -> Vec<Result<Prepared, ResourceError>> {
    let mut loaded = Loaded::new();
    config.resources.iter().map(|resource| prepare_one(runtime, fetched, resource, &mut loaded)).collect()
}

/// Loads `resource`'s handler (reusing one in `loaded`) and asks it what to collect.
pub fn prepare_one(
    runtime: &Runtime,
    fetched: &Fetched,
    resource: &Resource,
    loaded: &mut Loaded,
) -> Result<Prepared, ResourceError> {
    let handler = match loaded.get(&resource.handler) {
        Some(handler) => handler.clone(),
        None => {
            let handler = load(runtime, resource, fetched)?;
            loaded.insert(resource.handler.clone(), handler.clone());
            handler
        }
    };
    let needs = handler
        .needs(runtime, &resource.handler_config)
        .map_err(|error| ResourceError::Handler { resource: resource.name.clone(), error })?;
    Ok(Prepared { resource: resource.clone(), handler, needs })
}

fn load(runtime: &Runtime, resource: &Resource, fetched: &Fetched) -> Result<Arc<LoadedHandler>, ResourceError> {
    let load_error = |error| ResourceError::Load { resource: resource.name.clone(), error };
    let bytes = match fetched.handlers.get(&resource.handler) {
        Some(Ok(bytes)) => bytes,
        Some(Err(error)) => return Err(load_error(error.clone())),
        None => {
            return Err(load_error(Arc::new(LoadError::Artifact {
                reference: resource.handler.to_string(),
                reason: "was not fetched (fetch with the config it belongs to)".into(),
            })));
        }
    };
    runtime
        .load(&resource.handler.to_string(), &bytes.bytes, &bytes.digest)
        .map_err(|error| ResourceError::Handler { resource: resource.name.clone(), error })
}

/// A group as the kubelet will see it: a device id and what a container gets.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Advertised {
    /// The kubelet device id (at most 63 characters, stable per device).
    pub id: String,
    /// What the handler said identifies the device.
    pub handler_id: String,
    /// devpaths of the devices in the group.
    pub members: Vec<String>,
    pub device_nodes: Vec<GrantedNode>,
    pub mounts: Vec<GrantedMount>,
    pub env: Vec<(String, String)>,
    pub share: u32,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GrantedNode {
    pub host_path: String,
    pub container_path: String,
    pub permissions: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GrantedMount {
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
}

/// The group as the kubelet will see it; `snapshot` is the one `group` was given.
pub fn advertise(snapshot: &crate::handler::bindings::SnapshotView<'_>, group: DeviceGroup) -> Advertised {
    Advertised {
        id: names::device_id(&group.id),
        members: group.members.iter().map(|&m| snapshot.nodes[m as usize].devpath.to_string()).collect(),
        device_nodes: group
            .device_nodes
            .into_iter()
            .map(|node| GrantedNode {
                container_path: node.container_path.unwrap_or_else(|| node.host_path.clone()),
                host_path: node.host_path,
                permissions: node.permissions,
            })
            .collect(),
        mounts: group
            .mounts
            .into_iter()
            .map(|m| GrantedMount { host_path: m.host_path, container_path: m.container_path, read_only: m.read_only })
            .collect(),
        env: group.env,
        share: group.share,
        handler_id: group.id,
    }
}

/// What `discover` reports for one resource.
#[derive(Debug, Serialize)]
pub struct Report {
    pub resource: String,
    pub handler: String,
    pub groups: Vec<Advertised>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs the whole pipeline once over every resource of `config`, whose
/// handlers are in `fetched`.
pub fn discover(runtime: &Runtime, fetched: &Fetched, sources: &Sources, config: &Config) -> Vec<Report> {
    prepare(runtime, fetched, config)
        .into_iter()
        .zip(&config.resources)
        .map(|(prepared, resource)| {
            let outcome = prepared.and_then(|prepared| {
                let mut resource = ResourceEval::new(prepared);
                resource.rescan(runtime, sources).map_or(Ok(Vec::new()), |evaluation| evaluation.outcome)
            });
            let (groups, error) = match outcome {
                Ok(groups) => (groups.into_iter().map(Arc::unwrap_or_clone).collect(), None),
                Err(error) => (Vec::new(), Some(error.to_string())),
            };
            Report { resource: resource.name.clone(), handler: resource.handler.to_string(), groups, error }
        })
        .collect()
}

//! Preparing resources: fetching every handler of a config (the async
//! step), then loading each and asking it what to collect for its resource's
//! config (the sync one). A prepared resource is what a
//! [`ResourceEval`](super::ResourceEval) evaluates.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, HandlerRef, Resource};
use crate::contract::Requirements;
use crate::handler::{self, LoadedHandler, Runtime};
use crate::loader::{HandlerBytes, LoadError, Loader};
use crate::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("{resource}: {source}")]
    Handler { resource: String, source: handler::Error },
    #[error("{resource}: {source}")]
    Load { resource: String, source: Arc<LoadError> },
    #[error("{resource}: handler {handler} was not fetched (fetch with the config it belongs to)")]
    NotFetched { resource: String, handler: String },
    #[error("{resource}: {source}")]
    Source { resource: String, source: SourceError },
    #[error(
        "{resource}: takes remote devices (`from:`), but handler {handler} does not judge USB/IP devices; \
         use `usb-id`, or a handler whose requirements ask for them"
    )]
    NotRemote { resource: String, handler: String },
}

impl ResourceError {
    /// A short stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ResourceError::Handler { source, .. } => source.kind(),
            ResourceError::Load { .. } | ResourceError::NotFetched { .. } => "load",
            ResourceError::Source { .. } => "source",
            ResourceError::NotRemote { .. } => "config",
        }
    }

    /// The handler could not be had (rather than the config being wrong):
    /// the resource waits for it without stopping the others.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ResourceError::Load { .. } | ResourceError::NotFetched { .. })
    }

    /// The resource it is about.
    pub fn resource(&self) -> &str {
        match self {
            ResourceError::Handler { resource, .. }
            | ResourceError::Load { resource, .. }
            | ResourceError::NotFetched { resource, .. }
            | ResourceError::Source { resource, .. }
            | ResourceError::NotRemote { resource, .. } => resource,
        }
    }
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
        .map_err(|source| ResourceError::Handler { resource: resource.name.clone(), source })?;
    let needs = restrict_to_locality(resource, needs)?;
    Ok(Prepared { resource: resource.clone(), handler, needs })
}

/// What to collect for `resource`: what its handler asks for, from where
/// the resource takes devices (`from:`). A handler must say it judges
/// USB/IP devices (`usbip` in its requirements) to be given any.
fn restrict_to_locality(resource: &Resource, mut needs: Requirements) -> Result<Requirements, ResourceError> {
    if resource.from.takes_remote() && !needs.usbip {
        return Err(ResourceError::NotRemote {
            resource: resource.name.clone(),
            handler: resource.handler.to_string(),
        });
    }
    if !resource.from.takes_local() {
        needs.subsystems.clear();
        needs.all_udev = false;
        needs.paths.clear();
    }
    needs.usbip = resource.from.takes_remote();
    Ok(needs)
}

fn load(runtime: &Runtime, resource: &Resource, fetched: &Fetched) -> Result<Arc<LoadedHandler>, ResourceError> {
    let bytes = match fetched.handlers.get(&resource.handler) {
        Some(Ok(bytes)) => bytes,
        Some(Err(source)) => {
            return Err(ResourceError::Load { resource: resource.name.clone(), source: source.clone() });
        }
        None => {
            return Err(ResourceError::NotFetched {
                resource: resource.name.clone(),
                handler: resource.handler.to_string(),
            });
        }
    };
    runtime
        .load(&resource.handler.to_string(), &bytes.bytes, &bytes.digest)
        .map_err(|source| ResourceError::Handler { resource: resource.name.clone(), source })
}

//! Handlers from a ConfigMap's `binaryData`, read and watched through the
//! Kubernetes API.
//!
//! Only the one object is read: a `get` of the ConfigMap, then a `watch` with
//! the field selector `metadata.name=NAME` from the resourceVersion the get
//! returned. So the RBAC the agent needs is `get` and `watch` on that
//! ConfigMap (`resourceNames: [NAME]`), and no `list`. See
//! deploy/rbac-configmap-handlers.yaml.
//!
//! `kubectl create configmap NAME --from-file=KEY=handler.wasm` puts a
//! component (not UTF-8) into `binaryData` by itself.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, WatchEvent, WatchParams};
use tokio::sync::watch;

use super::{HandlerBytes, Inner, LoadError, WatchItem};
use crate::config::ConfigMapRef;
use crate::support::backoff::Backoff;
use crate::support::digest::sha256_digest;
use crate::support::error_chain;

/// Why a ConfigMap reference gives no handler now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigMapProblem {
    #[error("ConfigMap {0} does not exist")]
    Missing(String),
    #[error("ConfigMap {0} was deleted; the agent keeps the handler it last loaded")]
    Deleted(String),
    #[error(
        "key {key:?} is in `data`, not `binaryData`; a handler is binary: create it with \
         `kubectl create configmap {name} --from-file={key}=handler.wasm`"
    )]
    NotBinary { key: String, name: String },
    #[error("ConfigMap {configmap} has no key {key:?} (its keys: {keys})")]
    NoKey { configmap: String, key: String, keys: String },
    #[error(
        "the agent may not read this ConfigMap ({0}); grant get and watch on it \
         (deploy/rbac-configmap-handlers.yaml)"
    )]
    Forbidden(String),
    /// The API server failed otherwise (its error chain).
    #[error("{0}")]
    Api(String),
    #[error("cannot read it: {0}")]
    Unreachable(String),
}

fn problem(cm: &ConfigMapRef, problem: ConfigMapProblem) -> LoadError {
    LoadError::ConfigMap { reference: cm.to_string(), problem }
}

/// The handler in `object`'s `binaryData[key]`, or why there is none.
fn extract(inner: &Inner, cm: &ConfigMapRef, object: &ConfigMap) -> Result<HandlerBytes, LoadError> {
    let reference = cm.to_string();
    let version = object.metadata.resource_version.as_deref().unwrap_or("?");
    if let Some(bytes) = object.binary_data.as_ref().and_then(|data| data.get(&cm.key)) {
        let bytes = &bytes.0;
        let cap = inner.options.max_module_bytes;
        if bytes.len() as u64 > cap {
            return Err(LoadError::TooLarge { origin: reference, size: bytes.len() as u64, cap });
        }
        return Ok(HandlerBytes {
            digest: sha256_digest(bytes),
            bytes: Bytes::copy_from_slice(bytes),
            origin: format!("{reference} (resourceVersion {version})"),
            pinned: None,
        });
    }
    if object.data.as_ref().is_some_and(|data| data.contains_key(&cm.key)) {
        return Err(problem(cm, ConfigMapProblem::NotBinary { key: cm.key.clone(), name: cm.name.clone() }));
    }
    let mut keys: Vec<&str> = object.binary_data.iter().flat_map(|d| d.keys().map(String::as_str)).collect();
    keys.extend(object.data.iter().flat_map(|d| d.keys().map(String::as_str)));
    Err(problem(
        cm,
        ConfigMapProblem::NoKey {
            configmap: cm.object(),
            key: cm.key.clone(),
            keys: if keys.is_empty() { "none".to_string() } else { keys.join(", ") },
        },
    ))
}

/// An API error as the problem it is for this reference.
fn api_problem(error: &kube::Error) -> ConfigMapProblem {
    match error {
        kube::Error::Api(status) if status.code == 403 => ConfigMapProblem::Forbidden(status.message.clone()),
        other => ConfigMapProblem::Api(error_chain(other)),
    }
}

fn missing(cm: &ConfigMapRef) -> LoadError {
    problem(cm, ConfigMapProblem::Missing(cm.object()))
}

/// Reads the handler once.
pub(super) async fn fetch(inner: &Inner, cm: &ConfigMapRef) -> Result<HandlerBytes, LoadError> {
    let reference = cm.to_string();
    let client = inner.kube_client(&reference).await?;
    let api: Api<ConfigMap> = Api::namespaced(client, &cm.namespace);
    let got = tokio::time::timeout(inner.options.timeout, api.get_opt(&cm.name)).await;
    let object = match got {
        Ok(Ok(Some(object))) => object,
        Ok(Ok(None)) => return Err(missing(cm)),
        Ok(Err(error @ kube::Error::Api(_))) if matches!(api_problem(&error), ConfigMapProblem::Forbidden(_)) => {
            return Err(problem(cm, api_problem(&error)));
        }
        Ok(Err(error)) => return fallback(inner, cm, format!("the API server: {}", error_chain(&error))),
        Err(_) => {
            return fallback(inner, cm, format!("the API server did not answer within {:?}", inner.options.timeout));
        }
    };
    let found = extract(inner, cm, &object)?;
    if let Some(blobs) = &inner.blobs {
        blobs.put(&found.digest, &found.bytes);
        blobs.remember(&reference, &found.digest);
    }
    Ok(found)
}

/// When the API server cannot be reached: the bytes this key last held, from the blob cache.
fn fallback(inner: &Inner, cm: &ConfigMapRef, why: String) -> Result<HandlerBytes, LoadError> {
    let reference = cm.to_string();
    let cached = inner.blobs.as_ref().and_then(|blobs| {
        let digest = blobs.recall(&reference)?;
        blobs.get(&digest, inner.options.max_module_bytes).map(|bytes| (digest, bytes))
    });
    match cached {
        Some((digest, bytes)) => {
            tracing::warn!(handler = %reference, %digest, reason = %why, "using the blob cache's copy of what this key last held");
            Ok(HandlerBytes {
                bytes: bytes.into(),
                origin: format!("{reference} (from the blob cache)"),
                digest,
                pinned: None,
            })
        }
        None => Err(problem(cm, ConfigMapProblem::Unreachable(why))),
    }
}

/// Sends `item` unless it says what the last item said.
fn publish(tx: &watch::Sender<WatchItem>, last: &mut Option<String>, item: WatchItem) {
    let key = match &item {
        Ok(found) => format!("ok {}", found.digest),
        Err(error) => format!("err {error}"),
    };
    if last.as_deref() != Some(key.as_str()) {
        match &item {
            Ok(found) => tracing::info!(origin = %found.origin, digest = %found.digest, "handler ConfigMap read"),
            Err(error) => tracing::warn!(%error, "handler ConfigMap unusable"),
        }
        *last = Some(key);
        let _ = tx.send(item);
    }
}

/// Keeps `tx` up to date with the ConfigMap until every receiver is gone.
pub(super) async fn watch(inner: Arc<Inner>, cm: ConfigMapRef, tx: watch::Sender<WatchItem>) {
    tokio::select! {
        _ = watch_loop(&inner, &cm, &tx) => {}
        _ = tx.closed() => {}
    }
    tracing::debug!(handler = %cm, "ConfigMap watch ended");
}

async fn watch_loop(inner: &Inner, cm: &ConfigMapRef, tx: &watch::Sender<WatchItem>) {
    let reference = cm.to_string();
    let mut last: Option<String> = None;
    let first_backoff = inner.options.backoff.max(Duration::from_millis(100));
    let mut backoff = Backoff::new(first_backoff, Duration::from_secs(60));
    let pause = |backoff: &mut Backoff| tokio::time::sleep(backoff.next_delay());
    loop {
        let client = match inner.kube_client(&reference).await {
            Ok(client) => client,
            Err(error) => {
                publish(tx, &mut last, Err(Arc::new(error)));
                pause(&mut backoff).await;
                continue;
            }
        };
        let api: Api<ConfigMap> = Api::namespaced(client, &cm.namespace);
        // The current state, and where to watch from.
        let version = match tokio::time::timeout(inner.options.timeout, api.get_opt(&cm.name)).await {
            Ok(Ok(Some(object))) => {
                publish(tx, &mut last, extract(inner, cm, &object).map_err(Arc::new));
                object.metadata.resource_version.unwrap_or_default()
            }
            Ok(Ok(None)) => {
                publish(tx, &mut last, Err(Arc::new(missing(cm))));
                String::new()
            }
            Ok(Err(error)) => {
                let problem = api_problem(&error);
                if matches!(problem, ConfigMapProblem::Forbidden(_)) {
                    publish(tx, &mut last, Err(Arc::new(self::problem(cm, problem))));
                } else {
                    tracing::warn!(handler = %reference, error = %problem, "cannot read the handler ConfigMap; retrying");
                }
                pause(&mut backoff).await;
                continue;
            }
            Err(_) => {
                tracing::warn!(handler = %reference, timeout = ?inner.options.timeout, "the API server did not answer; retrying");
                pause(&mut backoff).await;
                continue;
            }
        };
        let params = WatchParams::default().fields(&format!("metadata.name={}", cm.name)).timeout(290);
        let mut stream = match api.watch(&params, &version).await {
            Ok(stream) => stream.boxed(),
            Err(error) => {
                tracing::warn!(handler = %reference, error = %api_problem(&error), "cannot watch the handler ConfigMap; retrying");
                pause(&mut backoff).await;
                continue;
            }
        };
        backoff.reset();
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => {
                    publish(tx, &mut last, extract(inner, cm, &object).map_err(Arc::new));
                }
                Ok(WatchEvent::Deleted(_)) => {
                    let deleted = ConfigMapProblem::Deleted(cm.object());
                    publish(tx, &mut last, Err(Arc::new(problem(cm, deleted))));
                }
                Ok(WatchEvent::Bookmark(_)) => {}
                Ok(WatchEvent::Error(status)) => {
                    // 410 Gone: the version is too old; read the object again.
                    tracing::debug!(handler = %reference, code = status.code, message = %status.message, "watch error");
                    break;
                }
                Err(error) => {
                    tracing::warn!(handler = %reference, error = %error_chain(&error), "the ConfigMap watch broke; watching again");
                    break;
                }
            }
        }
        // Ended (the server closes watches every few minutes) or broke: read and watch again.
        tokio::time::sleep(first_backoff).await;
    }
}

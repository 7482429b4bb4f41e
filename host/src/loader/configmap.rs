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

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, WatchEvent, WatchParams};
use tokio::sync::watch;

use crate::digest::sha256_digest;
use super::{HandlerBytes, Inner, LoadError, WatchItem, error_chain};
use crate::config::ConfigMapRef;

fn describe(cm: &ConfigMapRef) -> String {
    format!("configmap:{}/{}/{}", cm.namespace, cm.name, cm.key)
}

/// The handler in `object`'s `binaryData[key]`, or why there is none.
fn extract(inner: &Inner, cm: &ConfigMapRef, object: &ConfigMap) -> Result<HandlerBytes, String> {
    let reference = describe(cm);
    let version = object.metadata.resource_version.as_deref().unwrap_or("?");
    if let Some(bytes) = object.binary_data.as_ref().and_then(|data| data.get(&cm.key)) {
        let bytes = &bytes.0;
        let cap = inner.options.max_module_bytes;
        if bytes.len() as u64 > cap {
            return Err(LoadError::TooLarge { origin: reference, size: bytes.len() as u64, cap }.to_string());
        }
        return Ok(HandlerBytes {
            digest: sha256_digest(bytes),
            bytes: Bytes::copy_from_slice(bytes),
            origin: format!("{reference} (resourceVersion {version})"),
            pinned: None,
        });
    }
    if object.data.as_ref().is_some_and(|data| data.contains_key(&cm.key)) {
        return Err(format!(
            "{reference}: key {:?} is in `data`, not `binaryData`; a handler is binary: create it with \
             `kubectl create configmap {} --from-file={}=handler.wasm`",
            cm.key, cm.name, cm.key
        ));
    }
    let mut keys: Vec<&str> = object.binary_data.iter().flat_map(|d| d.keys().map(String::as_str)).collect();
    keys.extend(object.data.iter().flat_map(|d| d.keys().map(String::as_str)));
    Err(format!(
        "{reference}: ConfigMap {}/{} has no key {:?} (its keys: {})",
        cm.namespace,
        cm.name,
        cm.key,
        if keys.is_empty() { "none".to_string() } else { keys.join(", ") }
    ))
}

fn api_error(reference: &str, error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "{reference}: the agent may not read this ConfigMap ({}); grant get and watch on it \
             (deploy/rbac-configmap-handlers.yaml)",
            status.message
        ),
        other => format!("{reference}: {}", error_chain(other)),
    }
}

/// Reads the handler once.
pub(super) async fn fetch(inner: &Inner, cm: &ConfigMapRef) -> Result<HandlerBytes, LoadError> {
    let reference = describe(cm);
    let client = inner.kube_client(&reference).await?;
    let api: Api<ConfigMap> = Api::namespaced(client, &cm.namespace);
    let got = tokio::time::timeout(inner.options.timeout, api.get_opt(&cm.name)).await;
    let fail = |reason: String| LoadError::ConfigMap { reference: reference.clone(), reason };
    let object = match got {
        Ok(Ok(Some(object))) => object,
        Ok(Ok(None)) => {
            return Err(fail(format!("ConfigMap {}/{} does not exist", cm.namespace, cm.name)));
        }
        Ok(Err(kube::Error::Api(status))) if status.code == 403 => {
            return Err(fail(api_error(&reference, &kube::Error::Api(status)).replace(&format!("{reference}: "), "")));
        }
        Ok(Err(error)) => return fallback(inner, cm, format!("the API server: {}", error_chain(&error))),
        Err(_) => {
            return fallback(inner, cm, format!("the API server did not answer within {:?}", inner.options.timeout));
        }
    };
    let found = extract(inner, cm, &object).map_err(|reason| LoadError::ConfigMap {
        reference: reference.clone(),
        reason: reason.trim_start_matches(&format!("{reference}: ")).to_string(),
    })?;
    if let Some(blobs) = &inner.blobs {
        blobs.put(&found.digest, &found.bytes);
        blobs.remember(&reference, &found.digest);
    }
    Ok(found)
}

/// When the API server cannot be reached: the bytes this key last held, from the blob cache.
fn fallback(inner: &Inner, cm: &ConfigMapRef, why: String) -> Result<HandlerBytes, LoadError> {
    let reference = describe(cm);
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
        None => Err(LoadError::ConfigMap { reference, reason: format!("cannot read it: {why}") }),
    }
}

/// Sends `item` unless it says what the last item said.
fn publish(tx: &watch::Sender<WatchItem>, last: &mut Option<String>, item: WatchItem) {
    let key = match &item {
        Ok(found) => format!("ok {}", found.digest),
        Err(message) => format!("err {message}"),
    };
    if last.as_deref() != Some(key.as_str()) {
        match &item {
            Ok(found) => tracing::info!(origin = %found.origin, digest = %found.digest, "handler ConfigMap read"),
            Err(message) => tracing::warn!(%message, "handler ConfigMap unusable"),
        }
        *last = Some(key);
        let _ = tx.send(item);
    }
}

/// Keeps `tx` up to date with the ConfigMap until every receiver is gone.
pub(super) async fn watch(inner: std::sync::Arc<Inner>, cm: ConfigMapRef, tx: watch::Sender<WatchItem>) {
    tokio::select! {
        _ = watch_loop(&inner, &cm, &tx) => {}
        _ = tx.closed() => {}
    }
    tracing::debug!(handler = %describe(&cm), "ConfigMap watch ended");
}

async fn watch_loop(inner: &Inner, cm: &ConfigMapRef, tx: &watch::Sender<WatchItem>) {
    let reference = describe(cm);
    let mut last: Option<String> = None;
    let first_backoff = inner.options.backoff.max(Duration::from_millis(100));
    let mut backoff = first_backoff;
    let pause = |backoff: &mut Duration| {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(Duration::from_secs(60));
        tokio::time::sleep(wait)
    };
    loop {
        let client = match inner.kube_client(&reference).await {
            Ok(client) => client,
            Err(error) => {
                publish(tx, &mut last, Err(error.to_string()));
                pause(&mut backoff).await;
                continue;
            }
        };
        let api: Api<ConfigMap> = Api::namespaced(client, &cm.namespace);
        // The current state, and where to watch from.
        let version = match tokio::time::timeout(inner.options.timeout, api.get_opt(&cm.name)).await {
            Ok(Ok(Some(object))) => {
                publish(tx, &mut last, extract(inner, cm, &object));
                object.metadata.resource_version.unwrap_or_default()
            }
            Ok(Ok(None)) => {
                publish(
                    tx,
                    &mut last,
                    Err(format!("{reference}: ConfigMap {}/{} does not exist", cm.namespace, cm.name)),
                );
                String::new()
            }
            Ok(Err(error)) => {
                let message = api_error(&reference, &error);
                if matches!(&error, kube::Error::Api(status) if status.code == 403) {
                    publish(tx, &mut last, Err(message));
                } else {
                    tracing::warn!(handler = %reference, error = %message, "cannot read the handler ConfigMap; retrying");
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
                tracing::warn!(handler = %reference, error = %api_error(&reference, &error), "cannot watch the handler ConfigMap; retrying");
                pause(&mut backoff).await;
                continue;
            }
        };
        backoff = first_backoff;
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(object) | WatchEvent::Modified(object)) => {
                    publish(tx, &mut last, extract(inner, cm, &object));
                }
                Ok(WatchEvent::Deleted(_)) => {
                    publish(
                        tx,
                        &mut last,
                        Err(format!(
                            "{reference}: ConfigMap {}/{} was deleted; the agent keeps the handler it last loaded",
                            cm.namespace, cm.name
                        )),
                    );
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

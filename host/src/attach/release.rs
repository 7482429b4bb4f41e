//! Release: detaching what no container holds. The kubelet has no
//! deallocate call; its pod-resources API (`List`) says which device ids
//! containers hold. It is asked only while something is attached (so, at
//! start, when a previous run left attachments): an agent with no
//! attachment does no periodic work. An attachment nobody holds for the
//! grace period is detached — at start too, since a kubelet that has just
//! restarted may list no pod yet; one whose vhci port went free by itself
//! is forgotten.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use devsieve_proto::podresources::ListPodResourcesRequest;
use devsieve_proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Attacher;

/// `(resource, device id)` pairs that containers hold.
pub type Held = BTreeSet<(String, String)>;

/// Per devpath: since when nobody has held it, for the attachment made at
/// that time (an attachment made anew starts its grace period again).
pub type Unheld = BTreeMap<String, (std::time::SystemTime, Instant)>;

#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    #[error("pod-resources API at {}: cannot connect: {source}", .socket.display())]
    Connect { socket: PathBuf, source: tonic::transport::Error },
    #[error("pod-resources API at {}: List: {}", .socket.display(), .status.message())]
    List { socket: PathBuf, status: tonic::Status },
}

/// Who holds which devices: the kubelet's pod-resources API, or a fake.
pub trait PodResources: Send + Sync {
    fn held(&self) -> impl Future<Output = Result<Held, PodResourcesError>> + Send;
}

/// The kubelet's pod-resources API on its Unix socket.
pub struct KubeletPodResources {
    pub socket: PathBuf,
}

impl PodResources for KubeletPodResources {
    async fn held(&self) -> Result<Held, PodResourcesError> {
        let channel = devsieve_proto::dial(&self.socket)
            .await
            .map_err(|source| PodResourcesError::Connect { socket: self.socket.clone(), source })?;
        let response = PodResourcesListerClient::new(channel)
            .list(ListPodResourcesRequest {})
            .await
            .map_err(|status| PodResourcesError::List { socket: self.socket.clone(), status })?;
        Ok(response
            .into_inner()
            .pod_resources
            .into_iter()
            .flat_map(|pod| pod.containers)
            .flat_map(|container| container.devices)
            .flat_map(|devices| {
                let resource = devices.resource_name;
                devices.device_ids.into_iter().map(move |id| (resource.clone(), id))
            })
            .collect())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct ReleaseOptions {
    /// How long an attachment nobody holds stays attached (a container
    /// restarting, the kubelet between Allocate and the container's start).
    pub grace: Duration,
    /// How often holders are asked while something is attached.
    pub interval: Duration,
}

/// Detaches what nobody holds until `shutdown`.
pub async fn run(
    attacher: Arc<Attacher>,
    pods: impl PodResources,
    options: ReleaseOptions,
    shutdown: CancellationToken,
) {
    let mut unheld_since = Unheld::new();
    loop {
        if attacher.current().is_empty() {
            unheld_since.clear();
            tokio::select! {
                _ = attacher.attached.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            // A permit stored while something was attached wakes this at once: look again.
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(options.interval) => {}
            _ = shutdown.cancelled() => return,
        }
        release(&attacher, &pods, &mut unheld_since, options.grace).await;
    }
}

/// One round: forget what went away by itself, then detach what nobody
/// has held for `grace`.
pub async fn release(attacher: &Attacher, pods: &impl PodResources, unheld_since: &mut Unheld, grace: Duration) {
    if let Err(error) = attacher.forget_vanished() {
        tracing::error!(error = %crate::support::error_chain(&error), "cannot record a vanished attachment");
    }
    let held = match pods.held().await {
        Ok(held) => held,
        Err(error) => {
            // Nothing is detached on a guess.
            tracing::warn!(error = %crate::support::error_chain(&error), "cannot tell which containers hold USB/IP devices; nothing detached");
            return;
        }
    };
    let now = Instant::now();
    let attachments = attacher.current();
    unheld_since.retain(|devpath, _| attachments.contains_key(devpath));
    for (devpath, attachment) in attachments {
        let is_held = attachment.device_ids.iter().any(|id| held.contains(&(attachment.resource.clone(), id.clone())));
        if is_held {
            unheld_since.remove(&devpath);
            continue;
        }
        let entry = unheld_since.entry(devpath.clone()).or_insert((attachment.attached_at, now));
        if entry.0 != attachment.attached_at {
            *entry = (attachment.attached_at, now);
        }
        if now.duration_since(entry.1) >= grace {
            match attacher.detach(&devpath, &attachment).await {
                Ok(()) => {
                    unheld_since.remove(&devpath);
                    tracing::info!(device = %devpath, resource = %attachment.resource, "no container holds it: detached");
                }
                Err(error) => {
                    tracing::error!(device = %devpath, error = %crate::support::error_chain(&error), "cannot detach")
                }
            }
        }
    }
}

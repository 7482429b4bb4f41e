//! CDI specs for resources configured with `cdi: true`: a JSON file per
//! resource in the CDI spec directory (default `/var/run/cdi`), rewritten
//! atomically whenever its device list changes, naming one CDI device per
//! group (`<resource>=<group id>`) with the nodes, mounts and env a container
//! of that group gets. `Allocate` then answers with those names, and the
//! container runtime applies the edits.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::inventory::DeviceList;
use crate::model::Advertised;
use crate::support::backoff::Backoff;
use crate::support::files::{SHARED, write_atomically};

/// The CDI spec version written; 0.5.0 added `hostPath` on device nodes.
const CDI_VERSION: &str = "0.6.0";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec<'a> {
    cdi_version: &'static str,
    kind: &'a str,
    devices: Vec<CdiDevice<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CdiDevice<'a> {
    name: &'a str,
    container_edits: Edits<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Edits<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    env: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    device_nodes: Vec<DeviceNode<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mounts: Vec<CdiMount<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeviceNode<'a> {
    path: &'a str,
    host_path: &'a str,
    permissions: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CdiMount<'a> {
    host_path: &'a str,
    container_path: &'a str,
    options: Vec<&'static str>,
}

/// The spec text for `resource`'s current groups.
pub fn spec(resource: &str, list: &DeviceList) -> String {
    let mut groups: Vec<&Advertised> = list.units.values().map(|u| &*u.group).collect();
    groups.sort_by(|a, b| a.id.cmp(&b.id));
    groups.dedup_by(|a, b| a.id == b.id);
    let devices = groups
        .into_iter()
        .map(|group| CdiDevice {
            name: &group.id,
            container_edits: Edits {
                env: group.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                device_nodes: group
                    .device_nodes
                    .iter()
                    .map(|n| DeviceNode {
                        path: &n.container_path,
                        host_path: &n.host_path,
                        permissions: &n.permissions,
                    })
                    .collect(),
                mounts: group
                    .mounts
                    .iter()
                    .map(|m| CdiMount {
                        host_path: &m.host_path,
                        container_path: &m.container_path,
                        options: if m.read_only { vec!["ro", "bind"] } else { vec!["rw", "bind"] },
                    })
                    .collect(),
            },
        })
        .collect();
    serde_json::to_string_pretty(&Spec { cdi_version: CDI_VERSION, kind: resource, devices }).expect("spec serializes")
}

pub fn spec_path(dir: &Path, resource: &str) -> PathBuf {
    dir.join(format!("devsieve-{}.json", super::slug(resource)))
}

/// Keeps `resource`'s spec in `dir` current until its channel closes, then removes it.
/// Keeps `resource`'s CDI spec in `dir` equal to its device list, and
/// publishes each list on `served` only once its spec is on disk: the
/// container runtime resolves a CDI name when it creates the container, so
/// the kubelet must never be told (nor `Allocate` answer) a name the spec
/// lacks. A spec that cannot be written (the directory full, read-only or
/// not a directory) keeps the last list served, is retried with backoff and
/// is reported through `report` until it is written.
pub async fn maintain(
    dir: PathBuf,
    resource: String,
    mut devices: watch::Receiver<Arc<DeviceList>>,
    served: watch::Sender<Arc<DeviceList>>,
    report: impl Fn(Option<String>),
) {
    let path = spec_path(&dir, &resource);
    let mut retry = WRITE_RETRY;
    let mut failing: Option<String> = None;
    loop {
        let list = devices.borrow_and_update().clone();
        let text = spec(&resource, &list);
        let written = std::fs::create_dir_all(&dir).and_then(|()| write_atomically(&path, text.as_bytes(), SHARED));
        let wait = match written {
            Ok(()) => {
                served.send_replace(list);
                retry.reset();
                if failing.take().is_some() {
                    tracing::info!(%resource, path = %path.display(), "CDI spec written again");
                    report(None);
                }
                None
            }
            Err(error) => {
                let error = format!("cannot write the CDI spec {}: {error}", path.display());
                if failing.as_deref() != Some(error.as_str()) {
                    tracing::error!(%resource, %error, "new devices are not advertised until it is written");
                    report(Some(error.clone()));
                    failing = Some(error);
                }
                Some(retry.next_delay())
            }
        };
        let changed = match wait {
            None => devices.changed().await,
            Some(delay) => tokio::select! {
                changed = devices.changed() => changed,
                () = tokio::time::sleep(delay) => Ok(()),
            },
        };
        if changed.is_err() {
            let _ = std::fs::remove_file(&path);
            return;
        }
    }
}

/// Writing a CDI spec again after it failed.
const WRITE_RETRY: Backoff = Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_secs(5));

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Unit;
    use crate::model::{GrantedMount, GrantedNode};

    #[test]
    fn one_cdi_device_per_group_with_its_edits() {
        let group = Arc::new(Advertised {
            id: "ttyUSB0".into(),
            handler_id: "ttyUSB0".into(),
            members: vec![],
            device_nodes: vec![GrantedNode {
                host_path: "/dev/ttyUSB0".into(),
                container_path: "/dev/printer".into(),
                permissions: "rw".into(),
            }],
            mounts: vec![GrantedMount { host_path: "/dev/shm".into(), container_path: "/shm".into(), read_only: true }],
            env: vec![("UDEV_DEVNODE".into(), "/dev/ttyUSB0".into())],
            share: 2,
        });
        let mut list = DeviceList::default();
        for unit in ["ttyUSB0-0", "ttyUSB0-1"] {
            list.units.insert(unit.into(), Unit { healthy: true, group: group.clone() });
        }
        let spec: serde_json::Value = serde_json::from_str(&spec("devsieve.io/printer", &list)).unwrap();
        assert_eq!(spec["kind"], "devsieve.io/printer");
        assert_eq!(spec["devices"].as_array().unwrap().len(), 1, "units of one group are one CDI device");
        let edits = &spec["devices"][0]["containerEdits"];
        assert_eq!(spec["devices"][0]["name"], "ttyUSB0");
        assert_eq!(edits["deviceNodes"][0]["path"], "/dev/printer");
        assert_eq!(edits["deviceNodes"][0]["hostPath"], "/dev/ttyUSB0");
        assert_eq!(edits["env"][0], "UDEV_DEVNODE=/dev/ttyUSB0");
        assert_eq!(edits["mounts"][0]["options"][0], "ro");
    }
}

//! The agent's local HTTP endpoint: `/healthz`, `/readyz`, Prometheus
//! `/metrics`, and `/status` (JSON, what `devsieve status` prints).
//!
//! It only reads what the stages publish: the inventory's status, the
//! advertiser's registrations, the metrics.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::attach::Attacher;
use crate::inventory;
use crate::kubelet::AdvertiserStatus;
use crate::metrics::Metrics;
use crate::source::usbip::RemoteDevices;

#[derive(Clone)]
pub struct Ops {
    pub config_file: std::path::PathBuf,
    pub metrics: Arc<Metrics>,
    pub status: watch::Receiver<Arc<inventory::Status>>,
    pub advertiser: watch::Receiver<AdvertiserStatus>,
    /// What each USB/IP server listed last.
    pub remote: RemoteDevices,
    pub attacher: Option<Arc<Attacher>>,
}

/// `/status`, as `devsieve status` reads it.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub config_file: String,
    pub config_generation: u64,
    pub config_error: Option<String>,
    pub kubelet_present: bool,
    pub ready: bool,
    pub resources: Vec<ResourceReport>,
    #[serde(default)]
    pub usbip_servers: Vec<ServerReport>,
    #[serde(default)]
    pub usbip_attachments: Vec<AttachmentReport>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ServerReport {
    pub server: String,
    pub devices: usize,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AttachmentReport {
    /// `usbip://HOST:PORT/BUSID`.
    pub device: String,
    pub resource: String,
    pub device_ids: Vec<String>,
    pub vhci_port: u32,
    pub local_busid: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResourceReport {
    pub name: String,
    pub handler: String,
    pub healthy: usize,
    pub unhealthy: usize,
    pub groups: usize,
    pub registered: bool,
    pub socket: Option<String>,
    /// Why its CDI spec cannot be written: its new devices are not advertised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdi_error: Option<String>,
    /// Seconds since the Unix epoch.
    pub last_evaluation_at: Option<f64>,
    pub last_evaluation_ms: Option<f64>,
    pub last_error: Option<String>,
}

impl Ops {
    pub fn report(&self) -> StatusReport {
        let status = self.status.borrow().clone();
        let advertiser = self.advertiser.borrow().clone();
        let resources = status
            .resources
            .iter()
            .map(|r| {
                let plugin = advertiser.plugins.get(&r.name);
                let evaluation = r.last_evaluation.as_ref();
                ResourceReport {
                    name: r.name.clone(),
                    handler: r.handler.clone(),
                    healthy: r.healthy,
                    unhealthy: r.unhealthy,
                    groups: r.groups,
                    registered: plugin.is_some_and(|p| p.registered),
                    socket: plugin.map(|p| p.socket.display().to_string()),
                    cdi_error: plugin.and_then(|p| p.cdi_error.clone()),
                    last_evaluation_at: evaluation
                        .map(|e| e.at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64()),
                    last_evaluation_ms: evaluation.map(|e| e.took.as_secs_f64() * 1e3),
                    last_error: evaluation.and_then(|e| e.error.clone()),
                }
            })
            .collect();
        StatusReport {
            config_file: self.config_file.display().to_string(),
            config_generation: status.config_generation,
            config_error: status.config_error.clone(),
            kubelet_present: advertiser.kubelet_present,
            ready: advertiser.ready() && status.config_error.is_none(),
            resources,
            usbip_servers: self
                .remote
                .listings()
                .into_iter()
                .map(|(server, listing)| ServerReport {
                    server: server.to_string(),
                    devices: listing.devices.len(),
                    error: listing.error,
                })
                .collect(),
            usbip_attachments: self
                .attacher
                .iter()
                .flat_map(|attacher| attacher.current())
                .map(|(device, a)| AttachmentReport {
                    device,
                    resource: a.resource,
                    device_ids: a.device_ids,
                    vhci_port: a.port,
                    local_busid: a.local_busid,
                })
                .collect(),
        }
    }
}

pub fn router(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(ops)
}

/// Ready when every resource is registered with the kubelet and the config
/// file in force is the one on disk (a refused change makes the pod unready,
/// so a bad rollout shows, while the old config keeps serving).
async fn readyz(State(ops): State<Ops>) -> Response {
    let report = ops.report();
    let mut problems = Vec::new();
    if let Some(error) = &report.config_error {
        problems.push(format!("config change refused (the previous config is serving): {error}"));
    }
    if !report.kubelet_present {
        problems.push("no kubelet: waiting for kubelet.sock".to_string());
    }
    for resource in report.resources.iter().filter(|r| !r.registered) {
        problems.push(format!("{}: not registered with the kubelet", resource.name));
    }
    for resource in &report.resources {
        if let Some(error) = &resource.cdi_error {
            problems.push(format!("{}: {error}; its new devices are not advertised", resource.name));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n").into_response()
    }
}

async fn metrics(State(ops): State<Ops>) -> Response {
    ops.metrics.set_async_tasks(tokio::runtime::Handle::current().metrics().num_alive_tasks());
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], ops.metrics.encode())
        .into_response()
}

async fn status(State(ops): State<Ops>) -> Response {
    axum::Json(ops.report()).into_response()
}

/// Serves until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, ops: Ops, shutdown: tokio_util::sync::CancellationToken) {
    if let Err(error) = axum::serve(listener, router(ops)).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::error!(%error, "the HTTP endpoint stopped");
    }
}

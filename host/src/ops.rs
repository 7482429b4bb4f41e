//! The agent's local HTTP endpoint: `/healthz`, `/readyz`, Prometheus
//! `/metrics`, and `/status` (JSON, what `devsieve status` prints).
//!
//! It only reads what the stages publish: the registry's status, the
//! advertiser's registrations, the metrics.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::kubelet::AdvertiserStatus;
use crate::metrics::Metrics;
use crate::registry;

#[derive(Clone)]
pub struct Ops {
    pub config_file: std::path::PathBuf,
    pub metrics: Arc<Metrics>,
    pub status: watch::Receiver<Arc<registry::Status>>,
    pub advertiser: watch::Receiver<AdvertiserStatus>,
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

/// `devsieve status`: the running agent's `/status`, as a table.
pub fn format_report(report: &StatusReport, now: SystemTime) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "config {}  generation {}", report.config_file, report.config_generation);
    if let Some(error) = &report.config_error {
        let _ = writeln!(out, "  last change refused (the previous config is serving): {error}");
    }
    let _ = writeln!(
        out,
        "kubelet {}  ready {}",
        if report.kubelet_present { "present" } else { "absent" },
        if report.ready { "yes" } else { "no" }
    );
    let header = ["RESOURCE", "HANDLER", "HEALTHY", "UNHEALTHY", "REGISTERED", "LAST EVALUATION"];
    let rows: Vec<[String; 6]> = report
        .resources
        .iter()
        .map(|r| {
            let last = match (r.last_evaluation_at, r.last_evaluation_ms) {
                (Some(at), Some(ms)) => {
                    let now = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
                    format!("{} ago, took {ms:.2} ms", human(Duration::from_secs_f64((now - at).max(0.0))))
                }
                _ => "never".to_string(),
            };
            [
                r.name.clone(),
                r.handler.clone(),
                r.healthy.to_string(),
                r.unhealthy.to_string(),
                if r.registered { "yes" } else { "no" }.to_string(),
                last,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i == 5 {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        text.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header));
    for (row, resource) in rows.iter().zip(&report.resources) {
        let _ = writeln!(out, "{}", line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]));
        if let Some(error) = &resource.last_error {
            let _ = writeln!(out, "  error: {error}");
        }
    }
    out
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_shows_health_errors_and_refusals() {
        let report = StatusReport {
            config_file: "/etc/devsieve/config.yaml".into(),
            config_generation: 3,
            config_error: Some("resources[0].name: bad".into()),
            kubelet_present: true,
            ready: false,
            resources: vec![ResourceReport {
                name: "devsieve.io/printer".into(),
                handler: "builtin:udev-rule".into(),
                healthy: 1,
                unhealthy: 2,
                groups: 3,
                registered: true,
                socket: None,
                last_evaluation_at: Some(100.0),
                last_evaluation_ms: Some(0.5),
                last_error: Some("handler trapped".into()),
            }],
        };
        let text = format_report(&report, SystemTime::UNIX_EPOCH + Duration::from_secs(165));
        assert!(text.contains("generation 3"), "{text}");
        assert!(
            text.contains("last change refused (the previous config is serving): resources[0].name: bad"),
            "{text}"
        );
        assert!(
            text.contains(
                "devsieve.io/printer  builtin:udev-rule  1        2          yes         1m5s ago, took 0.50 ms"
            ),
            "{text}"
        );
        assert!(text.contains("  error: handler trapped"), "{text}");
    }
}

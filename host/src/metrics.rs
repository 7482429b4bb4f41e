//! The agent's Prometheus metrics, served on `/metrics`. Every stage records
//! into the one [`Metrics`] it is handed; nothing reads them back but the
//! HTTP endpoint.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabel {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    resource: String,
    health: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    resource: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    resource: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    server: String,
    operation: &'static str,
    result: &'static str,
}

fn attach_histogram() -> Histogram {
    // 10 ms .. ~40 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

fn evaluation_histogram() -> Histogram {
    // 100 µs .. ~3 s.
    Histogram::new(exponential_buckets(0.0001, 2.5, 12))
}

pub struct Metrics {
    registry: Registry,
    devices: Family<HealthLabels, Gauge>,
    registrations: Family<ResultLabels, Counter>,
    kubelet_reconnects: Counter,
    allocations: Family<ResourceLabel, Counter>,
    allocation_errors: Family<ResourceLabel, Counter>,
    evaluation_seconds: Family<ResourceLabel, Histogram, fn() -> Histogram>,
    handler_failures: Family<KindLabels, Counter>,
    config_reloads: Family<OutcomeLabel, Counter>,
    config_generation: Gauge,
    async_tasks: Gauge,
    usbip_up: Family<ServerLabel, Gauge>,
    usbip_devices: Family<ServerLabel, Gauge>,
    usbip_operations: Family<OperationLabels, Counter>,
    usbip_attach_seconds: Family<ServerLabel, Histogram, fn() -> Histogram>,
    /// Serializes encoding (the registry is not meant to be encoded concurrently with itself).
    encode_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("devsieve");
        let devices = Family::<HealthLabels, Gauge>::default();
        registry.register("devices", "Kubelet devices per resource and health", devices.clone());
        let registrations = Family::<ResultLabels, Counter>::default();
        registry.register("registrations", "Registrations with the kubelet, by result", registrations.clone());
        let kubelet_reconnects = Counter::default();
        registry.register(
            "kubelet_reconnects",
            "Times the kubelet's registration socket was created anew (kubelet restarts)",
            kubelet_reconnects.clone(),
        );
        let allocations = Family::<ResourceLabel, Counter>::default();
        registry.register("allocations", "Allocate calls answered", allocations.clone());
        let allocation_errors = Family::<ResourceLabel, Counter>::default();
        registry.register("allocation_errors", "Allocate calls refused", allocation_errors.clone());
        let evaluation_seconds =
            Family::<ResourceLabel, Histogram, fn() -> Histogram>::new_with_constructor(evaluation_histogram);
        registry.register(
            "handler_evaluation_seconds",
            "Time to collect, select and group a resource's devices",
            evaluation_seconds.clone(),
        );
        let handler_failures = Family::<KindLabels, Counter>::default();
        registry.register("handler_failures", "Failed evaluations by kind", handler_failures.clone());
        let config_reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register("config_reloads", "Config changes applied or refused", config_reloads.clone());
        let config_generation = Gauge::default();
        registry.register("config_generation", "Generation of the config in force", config_generation.clone());
        let async_tasks = Gauge::default();
        registry.register("async_tasks", "Tasks alive in the agent's async runtime (leak check)", async_tasks.clone());
        let usbip_up = Family::<ServerLabel, Gauge>::default();
        registry.register("usbip_server_up", "Whether the USB/IP server answered its last listing", usbip_up.clone());
        let usbip_devices = Family::<ServerLabel, Gauge>::default();
        registry.register("usbip_server_devices", "Devices the USB/IP server listed last", usbip_devices.clone());
        let usbip_operations = Family::<OperationLabels, Counter>::default();
        registry.register(
            "usbip_operations",
            "USB/IP operations per server (list, import, attach, detach), by result",
            usbip_operations.clone(),
        );
        let usbip_attach_seconds =
            Family::<ServerLabel, Histogram, fn() -> Histogram>::new_with_constructor(attach_histogram);
        registry.register(
            "usbip_attach_seconds",
            "Allocate of a remote device: import, attach and its nodes appearing",
            usbip_attach_seconds.clone(),
        );
        Metrics {
            async_tasks,
            usbip_up,
            usbip_devices,
            usbip_operations,
            usbip_attach_seconds,
            registry,
            devices,
            registrations,
            kubelet_reconnects,
            allocations,
            allocation_errors,
            evaluation_seconds,
            handler_failures,
            config_reloads,
            config_generation,
            encode_lock: Mutex::new(()),
        }
    }

    pub fn set_devices(&self, resource: &str, healthy: usize, unhealthy: usize) {
        for (health, count) in [("Healthy", healthy), ("Unhealthy", unhealthy)] {
            self.devices.get_or_create(&HealthLabels { resource: resource.into(), health }).set(count as i64);
        }
    }

    /// Drops a removed resource's series.
    pub fn forget_resource(&self, resource: &str) {
        for health in ["Healthy", "Unhealthy"] {
            self.devices.remove(&HealthLabels { resource: resource.into(), health });
        }
    }

    pub fn registration(&self, resource: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.registrations.get_or_create(&ResultLabels { resource: resource.into(), result }).inc();
    }

    pub fn kubelet_reconnect(&self) {
        self.kubelet_reconnects.inc();
    }

    pub fn allocation(&self, resource: &str, ok: bool) {
        let label = ResourceLabel { resource: resource.into() };
        if ok {
            self.allocations.get_or_create(&label).inc()
        } else {
            self.allocation_errors.get_or_create(&label).inc()
        };
    }

    pub fn evaluation(&self, resource: &str, took: Duration, failure: Option<&'static str>) {
        self.evaluation_seconds.get_or_create(&ResourceLabel { resource: resource.into() }).observe(took.as_secs_f64());
        if let Some(kind) = failure {
            self.handler_failures.get_or_create(&KindLabels { resource: resource.into(), kind }).inc();
        }
    }

    pub fn config_reload(&self, applied: bool, generation: u64) {
        let result = if applied { "applied" } else { "refused" };
        self.config_reloads.get_or_create(&OutcomeLabel { result }).inc();
        self.config_generation.set(generation as i64);
    }

    /// A USB/IP server's listing: how many devices, or `None` if it failed.
    pub fn usbip_listed(&self, server: &str, devices: Option<usize>) {
        let label = ServerLabel { server: server.into() };
        self.usbip_up.get_or_create(&label).set(i64::from(devices.is_some()));
        self.usbip_devices.get_or_create(&label).set(devices.unwrap_or(0) as i64);
        self.usbip_operation(server, "list", devices.is_some());
    }

    /// One import, attach or detach of a device of `server`.
    pub fn usbip_operation(&self, server: &str, operation: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.usbip_operations.get_or_create(&OperationLabels { server: server.into(), operation, result }).inc();
    }

    pub fn usbip_attached(&self, server: &str, took: Duration) {
        self.usbip_attach_seconds.get_or_create(&ServerLabel { server: server.into() }).observe(took.as_secs_f64());
    }

    pub fn set_async_tasks(&self, tasks: usize) {
        self.async_tasks.set(tasks as i64);
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let _guard = self.encode_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_appear_and_removed_resources_vanish() {
        let metrics = Metrics::new();
        metrics.set_devices("devsieve.io/printer", 2, 1);
        metrics.evaluation("devsieve.io/printer", Duration::from_millis(3), Some("trap"));
        metrics.registration("devsieve.io/printer", true);
        let text = metrics.encode();
        assert!(text.contains(r#"devsieve_devices{resource="devsieve.io/printer",health="Healthy"} 2"#), "{text}");
        assert!(
            text.contains(r#"devsieve_handler_failures_total{resource="devsieve.io/printer",kind="trap"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"devsieve_registrations_total{resource="devsieve.io/printer",result="ok"} 1"#),
            "{text}"
        );
        metrics.usbip_listed("10.0.0.5:3240", None);
        metrics.usbip_operation("10.0.0.5:3240", "attach", true);
        let text = metrics.encode();
        assert!(text.contains(r#"devsieve_usbip_server_up{server="10.0.0.5:3240"} 0"#), "{text}");
        assert!(
            text.contains(
                r#"devsieve_usbip_operations_total{server="10.0.0.5:3240",operation="list",result="error"} 1"#
            ),
            "{text}"
        );
        metrics.forget_resource("devsieve.io/printer");
        assert!(!metrics.encode().contains("devsieve_devices{"), "{}", metrics.encode());
    }
}

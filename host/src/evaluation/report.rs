//! What the evaluation stage tells the stage after it (the inventory), and
//! the one place that sends it: every evaluation is counted, and a failing
//! resource is logged once per distinct error, not once per event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::prepare::ResourceError;
use super::resource::Evaluation;
use crate::config::Resource;
use crate::metrics::Metrics;
use crate::model::Advertised;

/// What the inventory is told.
#[derive(Debug)]
pub enum Update {
    /// The config in force now has exactly these resources.
    Resources { generation: u64, resources: Vec<ResourceSpec> },
    /// A config change was refused (the old one stays in force); `None`
    /// once a change is accepted again.
    ConfigRejected(Option<String>),
    /// An evaluation of `resource` finished: its groups, or `None` if it
    /// failed (`info.error` says why; the last good groups stay, unhealthy).
    Evaluated { resource: String, groups: Option<Vec<Arc<Advertised>>>, info: EvaluationInfo },
}

/// What the kubelet advertiser needs to serve one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceSpec {
    pub name: String,
    /// The handler reference as configured (for status and logs).
    pub handler: String,
    /// Answer `Allocate` with CDI device names (and keep a CDI spec).
    pub cdi: bool,
}

impl ResourceSpec {
    pub fn of(resource: &Resource) -> Self {
        ResourceSpec { name: resource.name.clone(), handler: resource.handler.to_string(), cdi: resource.cdi }
    }
}

/// The last evaluation of a resource, for `/status` and `devsieve status`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EvaluationInfo {
    pub at: SystemTime,
    pub took: Duration,
    pub error: Option<String>,
}

/// Sends [`Update`]s and records each in the metrics.
pub(super) struct Reporter {
    updates: UnboundedSender<Update>,
    metrics: Arc<Metrics>,
    /// The last error logged per resource, so a failing handler is logged once.
    last_error: BTreeMap<String, String>,
}

impl Reporter {
    pub(super) fn new(updates: UnboundedSender<Update>, metrics: Arc<Metrics>) -> Self {
        Reporter { updates, metrics, last_error: BTreeMap::new() }
    }

    /// Hands an evaluation on (nothing if the handler had nothing to be asked).
    pub(super) fn evaluation(&mut self, name: &str, evaluation: Option<Evaluation>) {
        let Some(Evaluation { outcome, took }) = evaluation else { return };
        self.metrics.evaluation(name, took, outcome.as_ref().err().map(ResourceError::kind));
        let (groups, error) = match outcome {
            Err(error) => {
                let error = crate::support::error_chain(&error);
                self.log_failure(name, &error, "evaluation failed: its devices stay, unhealthy");
                (None, Some(error))
            }
            Ok(groups) => {
                if self.last_error.remove(name).is_some() {
                    tracing::info!(resource = %name, "evaluation succeeds again");
                }
                tracing::debug!(resource = %name, groups = groups.len(), took_us = took.as_micros() as u64, "evaluated");
                (Some(groups), None)
            }
        };
        let info = EvaluationInfo { at: SystemTime::now(), took, error };
        self.send(Update::Evaluated { resource: name.to_string(), groups, info });
    }

    /// A resource whose handler cannot be had: its devices stay as they
    /// are, unhealthy.
    pub(super) fn unavailable(&mut self, name: &str, error: &ResourceError) {
        let error = crate::support::error_chain(error);
        self.metrics.evaluation(name, Duration::ZERO, Some("load"));
        self.log_failure(name, &error, "no handler to evaluate with");
        let info = EvaluationInfo { at: SystemTime::now(), took: Duration::ZERO, error: Some(error) };
        self.send(Update::Evaluated { resource: name.to_string(), groups: None, info });
    }

    /// The running handler stays although its source changed (a refused
    /// file or ConfigMap update): its `groups` stay healthy.
    pub(super) fn kept(&mut self, name: &str, message: String, groups: Vec<Arc<Advertised>>) {
        tracing::error!(resource = %name, "{message}");
        self.metrics.evaluation(name, Duration::ZERO, Some("reload"));
        let info = EvaluationInfo { at: SystemTime::now(), took: Duration::ZERO, error: Some(message) };
        self.send(Update::Evaluated { resource: name.to_string(), groups: Some(groups), info });
    }

    /// The config in force (its `generation`) serves exactly `resources`.
    pub(super) fn resources(&self, generation: u64, resources: Vec<ResourceSpec>) {
        self.send(Update::Resources { generation, resources });
    }

    /// A config change was applied (`refused` is `None`) or refused.
    pub(super) fn config_change(&self, generation: u64, refused: Option<String>) {
        self.metrics.config_reload(refused.is_none(), generation);
        self.send(Update::ConfigRejected(refused));
    }

    /// A removed resource's failures are forgotten.
    pub(super) fn forget(&mut self, name: &str) {
        self.last_error.remove(name);
    }

    fn log_failure(&mut self, name: &str, error: &str, what: &'static str) {
        if self.last_error.get(name).map(String::as_str) != Some(error) {
            tracing::warn!(resource = %name, %error, "{what}");
            self.last_error.insert(name.to_string(), error.to_string());
        }
    }

    fn send(&self, update: Update) {
        // The inventory is gone only when the agent is stopping.
        let _ = self.updates.send(update);
    }
}

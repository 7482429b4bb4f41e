//! The evaluator stage: sources in, evaluations out.
//!
//! It runs on a thread of its own (handler calls are synchronous) and owns
//! the handler runtime, every resource's [`ResourceEval`], the config in
//! force and the watches that tell it something changed: udev events,
//! path-pattern directories, and the config and handler files. It waits
//! without a timeout, so an agent whose devices do not change does no work;
//! the one exception is re-enumeration with backoff while the udev monitor is
//! down.
//!
//! Events are coalesced: after the first, the stage keeps taking events
//! while they arrive less than `settle` apart (at most `burst` in all), then
//! evaluates each touched resource once. A USB device with five interfaces
//! (a dozen uevents within a few ms) becomes one update.
//!
//! A config change is validated in full (parse, names, every handler loaded
//! and its config accepted) before anything changes; then only the
//! difference is applied. A refused change leaves the old config serving.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedSender;

use crate::config::{Config, HandlerRef, Resource};
use crate::discover::{self, Fetched, Loaded, ResourceError};
use crate::evaluate::{Evaluation, ResourceEval, UdevEvent};
use crate::handler::Runtime;
use crate::loader::{Loader, WatchItem};
use crate::metrics::Metrics;
use crate::registry::{self, EvaluationInfo, ResourceSpec};
use crate::snapshot::Changes;
use crate::source::Sources;
use crate::source::monitor::MonitorReport;
use crate::source::watch::{FileWatch, PathChange, PathWatch};

/// What wakes the evaluator.
#[derive(Debug)]
pub enum Input {
    Udev(MonitorReport),
    /// Something changed in a directory a path pattern can match in.
    Paths(PathChange),
    /// Something changed next to the config file or a handler file.
    Files,
    /// A handler that can change at its source (a ConfigMap) changed.
    Handler {
        reference: HandlerRef,
        update: WatchItem,
    },
    /// Handlers fetched in the background (a registry may be slow: the
    /// evaluator never waits for one).
    Fetched {
        purpose: FetchPurpose,
        fetched: Fetched,
    },
    Shutdown,
}

/// What a background fetch was for.
#[derive(Debug)]
pub enum FetchPurpose {
    /// The handlers of resources that could not be had yet.
    Pending,
    /// A new config (the `serial`-th change seen), to validate and apply.
    Config { serial: u64, config: Box<Config> },
}

#[derive(Clone, Copy, Debug)]
pub struct Coalescing {
    /// Events less than this apart are one burst.
    pub settle: Duration,
    /// A burst is cut after this long, however busy.
    pub burst: Duration,
}

impl Default for Coalescing {
    fn default() -> Self {
        Coalescing { settle: Duration::from_millis(3), burst: Duration::from_millis(50) }
    }
}

/// Re-enumeration while the udev monitor is down.
const FALLBACK_FIRST: Duration = Duration::from_secs(1);
const FALLBACK_MAX: Duration = Duration::from_secs(30);
/// Fetching again a handler that could not be fetched (a registry down).
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

pub struct Evaluator {
    runtime: Runtime,
    sources: Sources,
    config_file: PathBuf,
    /// Digest of the config text last read, good or bad: a refused config is
    /// reported once, not on every unrelated event in its directory.
    config_digest: [u8; 32],
    generation: u64,
    resources: BTreeMap<String, ResourceEval>,
    /// The last error logged per resource, so a failing handler is logged once.
    last_error: BTreeMap<String, String>,
    registry: UnboundedSender<registry::Input>,
    metrics: Arc<Metrics>,
    coalescing: Coalescing,
    paths: Option<PathWatch>,
    files: Option<FileWatch>,
    /// `Some(next delay)` while the udev monitor is down.
    fallback: Option<Duration>,
    /// Per resource, the digest of a handler file that was refused.
    refused_handlers: BTreeMap<String, String>,
    loader: Arc<Loader>,
    /// The agent's async runtime, for fetching and for ConfigMap watches.
    handle: tokio::runtime::Handle,
    inputs: Option<std::sync::mpsc::Sender<Input>>,
    /// Forwarders of handler updates (ConfigMaps), by reference.
    forwarders: BTreeMap<String, (HandlerRef, tokio::task::JoinHandle<()>)>,
    /// Resources whose handler could not be fetched yet: served with no
    /// devices, fetched again with backoff.
    pending: BTreeMap<String, Resource>,
    /// `Some(next delay)` while a resource is pending.
    retry: Option<Duration>,
    /// A background fetch of the pending handlers is under way.
    fetching_pending: bool,
    /// Counts config changes seen, so a slow fetch for an older one is dropped.
    config_serial: u64,
}

/// One burst of inputs, folded.
#[derive(Default)]
struct Batch {
    udev: Vec<UdevEvent>,
    monitor_up: bool,
    monitor_down: Option<String>,
    paths: PathChange,
    files: bool,
    handlers: Vec<(HandlerRef, WatchItem)>,
    fetched: Vec<(FetchPurpose, Fetched)>,
    shutdown: bool,
}

impl Batch {
    fn add(&mut self, input: Input) {
        match input {
            Input::Udev(MonitorReport::Event(event)) => self.udev.push(event),
            Input::Udev(MonitorReport::Up) => {
                self.monitor_up = true;
                self.monitor_down = None;
            }
            Input::Udev(MonitorReport::Down(error)) => {
                self.monitor_down = Some(error);
                self.monitor_up = false;
            }
            Input::Paths(change) => self.paths.extend(change),
            Input::Files => self.files = true,
            Input::Handler { reference, update } => self.handlers.push((reference, update)),
            Input::Fetched { purpose, fetched } => self.fetched.push((purpose, fetched)),
            Input::Shutdown => self.shutdown = true,
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn spec(resource: &crate::config::Resource) -> ResourceSpec {
    ResourceSpec { name: resource.name.clone(), handler: resource.handler.to_string(), cdi: resource.cdi }
}

impl Evaluator {
    /// The stage for `config`, whose resources are `prepared` already or
    /// `pending` (their handler could not be fetched: the agent starts
    /// anyway and fetches them again).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        runtime: Runtime,
        sources: Sources,
        config: &Config,
        prepared: Vec<discover::Prepared>,
        pending: Vec<Resource>,
        loader: Arc<Loader>,
        handle: tokio::runtime::Handle,
        registry: UnboundedSender<registry::Input>,
        metrics: Arc<Metrics>,
        coalescing: Coalescing,
    ) -> Evaluator {
        let config_digest = std::fs::read(&config.file).map(|text| digest(&text)).unwrap_or_default();
        let resources = prepared.into_iter().map(|p| (p.resource.name.clone(), ResourceEval::new(p))).collect();
        Evaluator {
            runtime,
            sources,
            config_file: config.file.clone(),
            config_digest,
            generation: 1,
            resources,
            last_error: BTreeMap::new(),
            registry,
            metrics,
            coalescing,
            paths: None,
            files: None,
            fallback: None,
            refused_handlers: BTreeMap::new(),
            loader,
            handle,
            inputs: None,
            forwarders: BTreeMap::new(),
            retry: (!pending.is_empty()).then_some(RETRY_FIRST),
            pending: pending.into_iter().map(|r| (r.name.clone(), r)).collect(),
            fetching_pending: false,
            config_serial: 0,
        }
    }

    /// Whether any resource reads udev (and so needs the monitor).
    pub fn wants_udev(&self) -> bool {
        self.resources.values().any(ResourceEval::wants_udev)
    }

    /// Starts the path, file and ConfigMap watches, reporting into `inputs`.
    pub fn watch(&mut self, inputs: std::sync::mpsc::Sender<Input>) -> std::io::Result<()> {
        self.inputs = Some(inputs.clone());
        let paths_tx = inputs.clone();
        self.paths = Some(PathWatch::start(move |change| paths_tx.send(Input::Paths(change)).is_ok())?);
        let files_tx = inputs;
        self.files = Some(
            FileWatch::start(move || {
                let _ = files_tx.send(Input::Files);
            })
            .map_err(std::io::Error::other)?,
        );
        self.replan_watches();
        Ok(())
    }

    /// Tells the registry the resources and evaluates each once.
    pub fn initial(&mut self, pending_errors: Vec<(String, String)>) {
        self.send_resources();
        for (name, error) in pending_errors {
            self.report_error(&name, error, "load");
        }
        let names: Vec<String> = self.resources.keys().cloned().collect();
        for name in names {
            let resource = self.resources.get_mut(&name).expect("listed above");
            let evaluation = resource.rescan(&self.runtime, &self.sources);
            self.report(&name, evaluation);
        }
    }

    /// Serves inputs until `Shutdown` or until every sender is gone.
    pub fn run(mut self, inputs: Receiver<Input>) {
        loop {
            // Idle means blocked without a timeout; timers run only while
            // the udev monitor is down or a handler could not be fetched.
            let timer = match (self.fallback, self.retry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = match timer {
                None => match inputs.recv() {
                    Ok(input) => input,
                    Err(_) => return,
                },
                Some(delay) => match inputs.recv_timeout(delay) {
                    Ok(input) => input,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Some(fallback) = self.fallback {
                            self.fallback = Some((fallback * 2).min(FALLBACK_MAX));
                            self.rescan(|r| r.wants_udev());
                        }
                        if let Some(retry) = self.retry {
                            self.retry = Some((retry * 2).min(RETRY_MAX));
                            self.retry_pending();
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                },
            };
            let mut batch = Batch::default();
            batch.add(first);
            let started = Instant::now();
            while !batch.shutdown {
                let left = self.coalescing.burst.saturating_sub(started.elapsed());
                if left.is_zero() {
                    break;
                }
                match inputs.recv_timeout(self.coalescing.settle.min(left)) {
                    Ok(input) => batch.add(input),
                    Err(_) => break,
                }
            }
            if batch.shutdown {
                return;
            }
            self.process(batch);
        }
    }

    fn process(&mut self, batch: Batch) {
        if batch.files {
            self.reload_files();
            self.retry_pending();
        }
        for (reference, update) in batch.handlers {
            self.handler_changed(&reference, update);
        }
        for (purpose, fetched) in batch.fetched {
            match purpose {
                FetchPurpose::Pending => {
                    self.fetching_pending = false;
                    self.prepare_pending(&fetched);
                }
                FetchPurpose::Config { serial, config } if serial == self.config_serial => {
                    self.apply_config(*config, &fetched)
                }
                FetchPurpose::Config { .. } => {}
            }
        }
        if let Some(error) = batch.monitor_down {
            tracing::error!(%error, "udev events are not seen: re-enumerating with backoff until the monitor is back");
            self.fallback = Some(FALLBACK_FIRST);
        }
        let mut touched: BTreeMap<String, Changes> = BTreeMap::new();
        let started = Instant::now();
        if batch.monitor_up {
            if self.fallback.take().is_some() {
                tracing::info!("the udev monitor is back: re-enumerating once");
            }
            // Events missed while it was down (or before it started) are in a fresh collection.
            self.collect_rescans(&mut touched, |r| r.wants_udev());
        }
        for event in &batch.udev {
            for (name, resource) in self.resources.iter_mut() {
                let changes = resource.take_udev(&self.sources, event);
                if !changes.is_empty() {
                    touched.entry(name.clone()).or_default().extend(changes);
                }
            }
        }
        if self.resources.values().any(|r| r.paths_need_rescan(&batch.paths)) {
            // Watch first, then look: what appears in between is in the collection.
            self.replan_watches();
        }
        if !batch.paths.is_empty() {
            let names: Vec<String> =
                self.resources.iter().filter(|(_, r)| r.wants_paths()).map(|(n, _)| n.clone()).collect();
            for name in names {
                let resource = self.resources.get_mut(&name).expect("listed above");
                match resource.take_paths(&self.sources, &batch.paths) {
                    Ok(changes) => touched.entry(name).or_default().extend(changes),
                    Err(error) => self.report(&name, Some(Evaluation { outcome: Err(error), took: started.elapsed() })),
                }
            }
        }
        for (name, changes) in touched {
            let resource = self.resources.get_mut(&name).expect("touched resources exist");
            let evaluation = resource.evaluate(&self.runtime, changes, started);
            self.report(&name, evaluation);
        }
    }

    /// Re-collects the resources `which` selects, folding their changes
    /// into `touched`; a collection that fails is reported at once.
    fn collect_rescans(&mut self, touched: &mut BTreeMap<String, Changes>, which: impl Fn(&ResourceEval) -> bool) {
        let names: Vec<String> = self.resources.iter().filter(|(_, r)| which(r)).map(|(n, _)| n.clone()).collect();
        for name in names {
            let started = Instant::now();
            let resource = self.resources.get_mut(&name).expect("listed above");
            match resource.take_rescan(&self.sources) {
                Ok(changes) => touched.entry(name).or_default().extend(changes),
                Err(error) => self.report(&name, Some(Evaluation { outcome: Err(error), took: started.elapsed() })),
            }
        }
    }

    fn rescan(&mut self, which: impl Fn(&ResourceEval) -> bool) {
        let mut touched = BTreeMap::new();
        let started = Instant::now();
        self.collect_rescans(&mut touched, which);
        for (name, changes) in touched {
            let resource = self.resources.get_mut(&name).expect("touched resources exist");
            let evaluation = resource.evaluate(&self.runtime, changes, started);
            self.report(&name, evaluation);
        }
    }

    /// Hands an evaluation to the registry and records it.
    fn report(&mut self, name: &str, evaluation: Option<Evaluation>) {
        let Some(Evaluation { outcome, took }) = evaluation else { return };
        let failure = outcome.as_ref().err().map(|error| match error {
            ResourceError::Handler { error, .. } => error.kind(),
            ResourceError::Load { .. } => "load",
            ResourceError::Source { .. } => "source",
        });
        self.metrics.evaluation(name, took, failure);
        let outcome = outcome.map_err(|error| error.to_string());
        match &outcome {
            Err(error) => {
                if self.last_error.get(name) != Some(error) {
                    tracing::warn!(resource = %name, %error, "evaluation failed: its devices stay, unhealthy");
                    self.last_error.insert(name.to_string(), error.clone());
                }
            }
            Ok(groups) => {
                if self.last_error.remove(name).is_some() {
                    tracing::info!(resource = %name, "evaluation succeeds again");
                }
                tracing::debug!(resource = %name, groups = groups.len(), took_us = took.as_micros() as u64, "evaluated");
            }
        }
        let info = EvaluationInfo { at: SystemTime::now(), took, error: outcome.as_ref().err().cloned() };
        let _ = self.registry.send(registry::Input::Evaluated { resource: name.to_string(), outcome, info });
    }

    /// Reports a failure that is not an evaluation (the handler could not be
    /// had): the resource's devices stay as they are, unhealthy.
    fn report_error(&mut self, name: &str, error: String, kind: &'static str) {
        self.metrics.evaluation(name, Duration::ZERO, Some(kind));
        if self.last_error.get(name) != Some(&error) {
            tracing::warn!(resource = %name, %error, "no handler to evaluate with");
            self.last_error.insert(name.to_string(), error.clone());
        }
        let info = EvaluationInfo { at: SystemTime::now(), took: Duration::ZERO, error: Some(error.clone()) };
        let _ =
            self.registry.send(registry::Input::Evaluated { resource: name.to_string(), outcome: Err(error), info });
    }

    /// Reports that the running handler stays although its source changed
    /// (a refused file or ConfigMap update): devices stay healthy.
    fn report_kept(&mut self, name: &str, message: String) {
        tracing::error!(resource = %name, "{message}");
        self.metrics.evaluation(name, Duration::ZERO, Some("reload"));
        let groups = self.resources.get(name).map(|r| r.last_groups().to_vec()).unwrap_or_default();
        let info = EvaluationInfo { at: SystemTime::now(), took: Duration::ZERO, error: Some(message) };
        let _ =
            self.registry.send(registry::Input::Evaluated { resource: name.to_string(), outcome: Ok(groups), info });
    }

    /// Files and built-ins: read at once (no network involved).
    fn fetch_local<'a>(&self, references: impl IntoIterator<Item = &'a HandlerRef>) -> Fetched {
        self.handle.block_on(discover::fetch_refs(&self.loader, references))
    }

    /// Fetches `references` on the async runtime and hands the result back
    /// as [`Input::Fetched`], so a slow registry never holds up events.
    fn fetch_in_background(&self, references: Vec<HandlerRef>, purpose: FetchPurpose) {
        let Some(inputs) = self.inputs.clone() else { return };
        let loader = self.loader.clone();
        self.handle.spawn(async move {
            let fetched = discover::fetch_refs(&loader, references.iter()).await;
            let _ = inputs.send(Input::Fetched { purpose, fetched });
        });
    }

    /// Fetches the pending resources' handlers again (in the background).
    fn retry_pending(&mut self) {
        if self.pending.is_empty() {
            self.retry = None;
            return;
        }
        if !self.fetching_pending {
            self.fetching_pending = true;
            let references = self.pending.values().map(|r| r.handler.clone()).collect();
            self.fetch_in_background(references, FetchPurpose::Pending);
        }
    }

    /// Pending resources whose handler now loads join the rest.
    fn prepare_pending(&mut self, fetched: &Fetched) {
        let resources: Vec<Resource> = self.pending.values().cloned().collect();
        let mut loaded = Loaded::new();
        for resource in resources {
            match discover::prepare_one(&self.runtime, fetched, &resource, &mut loaded) {
                Ok(prepared) => {
                    tracing::info!(resource = %resource.name, handler = %resource.handler, "handler fetched: serving");
                    self.pending.remove(&resource.name);
                    let mut eval = ResourceEval::new(prepared);
                    let evaluation = eval.rescan(&self.runtime, &self.sources);
                    self.resources.insert(resource.name.clone(), eval);
                    self.report(&resource.name, evaluation);
                }
                Err(error) => self.report_error(&resource.name, error.to_string(), "load"),
            }
        }
        if self.pending.is_empty() {
            self.retry = None;
        }
        self.replan_watches();
    }

    /// A ConfigMap handler changed or went away.
    fn handler_changed(&mut self, reference: &HandlerRef, update: WatchItem) {
        let users: Vec<String> = self
            .resources
            .iter()
            .filter(|(_, r)| r.prepared.resource.handler == *reference)
            .map(|(name, _)| name.clone())
            .collect();
        let bytes = match update {
            Ok(bytes) => bytes,
            Err(error) => {
                for name in users {
                    self.report_kept(
                        &name,
                        format!("handler {reference}: {error}; the last good handler keeps running"),
                    );
                }
                return;
            }
        };
        let mut fetched = Fetched::default();
        fetched.insert(reference.clone(), bytes.clone());
        let mut loaded = Loaded::new();
        for name in users {
            if self.resources[&name].prepared.handler.digest() == bytes.digest {
                continue;
            }
            let resource = self.resources[&name].prepared.resource.clone();
            match discover::prepare_one(&self.runtime, &fetched, &resource, &mut loaded) {
                Ok(prepared) => {
                    tracing::info!(resource = %name, handler = %reference, digest = %bytes.digest, "handler updated: reloaded");
                    let eval = self.resources.get_mut(&name).expect("listed above");
                    *eval = ResourceEval::new(prepared);
                    let evaluation = eval.rescan(&self.runtime, &self.sources);
                    self.report(&name, evaluation);
                }
                Err(error) => self.report_kept(
                    &name,
                    format!("handler {reference} changed but was refused, the previous handler keeps running: {error}"),
                ),
            }
        }
        if self.pending.values().any(|r| r.handler == *reference) {
            self.retry_pending();
        }
    }

    /// Follows the ConfigMap handlers in use: one forwarder per reference.
    fn replan_forwarders(&mut self) {
        let Some(inputs) = self.inputs.clone() else { return };
        let wanted: BTreeMap<String, HandlerRef> = self
            .resources
            .values()
            .map(|r| &r.prepared.resource.handler)
            .chain(self.pending.values().map(|r| &r.handler))
            .filter(|h| matches!(h, HandlerRef::ConfigMap(_)))
            .map(|h| (h.to_string(), h.clone()))
            .collect();
        self.forwarders.retain(|key, (_, task)| {
            let keep = wanted.contains_key(key);
            if !keep {
                task.abort();
            }
            keep
        });
        let _guard = self.handle.enter();
        for (key, reference) in wanted {
            if self.forwarders.contains_key(&key) {
                continue;
            }
            let Some(mut updates) = self.loader.watch(&reference) else { continue };
            let inputs = inputs.clone();
            let forwarded = reference.clone();
            let task = self.handle.spawn(async move {
                while updates.changed().await.is_ok() {
                    let update = updates.borrow_and_update().clone();
                    if inputs.send(Input::Handler { reference: forwarded.clone(), update }).is_err() {
                        return;
                    }
                }
            });
            self.forwarders.insert(key, (reference, task));
        }
    }

    fn send_resources(&self) {
        let resources = self
            .resources
            .values()
            .map(|r| spec(&r.prepared.resource))
            .chain(self.pending.values().map(spec))
            .collect();
        let _ = self.registry.send(registry::Input::Resources { generation: self.generation, resources });
    }

    fn replan_watches(&mut self) {
        self.replan_forwarders();
        if let Some(paths) = &mut self.paths {
            let dirs: BTreeSet<PathBuf> = self
                .resources
                .values()
                .flat_map(|r| r.prepared.needs.paths.iter())
                .flat_map(|pattern| crate::source::watch::plan(pattern))
                .collect();
            paths.set(&dirs);
        }
        if let Some(files) = &mut self.files {
            let handler_files = self
                .resources
                .values()
                .map(|r| &r.prepared.resource.handler)
                .chain(self.pending.values().map(|r| &r.handler))
                .filter_map(|handler| match handler {
                    HandlerRef::File(path) => Some(path.as_path()),
                    _ => None,
                });
            files.set(std::iter::once(self.config_file.as_path()).chain(handler_files));
        }
    }

    /// Something changed near the config or a handler file: reload what did.
    fn reload_files(&mut self) {
        match std::fs::read(&self.config_file) {
            Ok(text) if digest(&text) != self.config_digest => {
                self.config_digest = digest(&text);
                self.reload_config(&String::from_utf8_lossy(&text));
                return;
            }
            Ok(_) => {}
            // Mid-swap (a ConfigMap's `..data` link) or deleted: keep serving.
            Err(error) => tracing::debug!(file = %self.config_file.display(), %error, "config not readable now"),
        }
        self.reload_handler_files();
    }

    fn refuse(&self, error: String) {
        tracing::error!(file = %self.config_file.display(), %error, "config change refused; the previous config stays in force");
        self.metrics.config_reload(false, self.generation);
        let _ = self.registry.send(registry::Input::ConfigRejected(Some(error)));
    }

    fn reload_config(&mut self, text: &str) {
        self.config_serial += 1;
        let config = match Config::parse(&self.config_file, text) {
            Ok(config) => config,
            Err(error) => return self.refuse(error.to_string()),
        };
        // Every handler of the new config must be had before it is checked:
        // fetched in the background, then applied (if still the latest).
        let references = config.resources.iter().map(|r| r.handler.clone()).collect();
        let purpose = FetchPurpose::Config { serial: self.config_serial, config: Box::new(config) };
        self.fetch_in_background(references, purpose);
    }

    /// Validates a new config with its handlers fetched, and applies only
    /// the difference; refuses it whole if anything is wrong.
    fn apply_config(&mut self, config: Config, fetched: &Fetched) {
        let mut loaded = Loaded::new();
        let mut next: Vec<(String, Option<discover::Prepared>)> = Vec::new();
        for resource in &config.resources {
            let unchanged = self.resources.get(&resource.name).is_some_and(|r| {
                r.prepared.resource == *resource
                    && handler_file_unchanged(&r.prepared.resource.handler, r.prepared.handler.digest())
            });
            if unchanged {
                next.push((resource.name.clone(), None));
                continue;
            }
            match discover::prepare_one(&self.runtime, fetched, resource, &mut loaded) {
                Ok(prepared) => next.push((resource.name.clone(), Some(prepared))),
                Err(error) => return self.refuse(error.to_string()),
            }
        }
        let mut old = std::mem::take(&mut self.resources);
        let mut evaluate = Vec::new();
        for (name, prepared) in next {
            match prepared {
                None => {
                    let kept = old.remove(&name).expect("unchanged resources exist");
                    self.resources.insert(name, kept);
                }
                Some(prepared) => {
                    let verb = if old.remove(&name).is_some() { "changed" } else { "added" };
                    tracing::info!(resource = %name, "resource {verb}");
                    self.resources.insert(name.clone(), ResourceEval::new(prepared));
                    evaluate.push(name);
                }
            }
        }
        for name in old.keys().chain(self.pending.keys()) {
            tracing::info!(resource = %name, "resource removed");
            self.last_error.remove(name);
        }
        self.pending.clear();
        self.retry = None;
        self.generation += 1;
        self.metrics.config_reload(true, self.generation);
        tracing::info!(generation = self.generation, resources = self.resources.len(), "config applied");
        let _ = self.registry.send(registry::Input::ConfigRejected(None));
        self.send_resources();
        self.replan_watches();
        for name in evaluate {
            let resource = self.resources.get_mut(&name).expect("inserted above");
            let evaluation = resource.rescan(&self.runtime, &self.sources);
            self.report(&name, evaluation);
        }
    }

    /// A `.wasm` handler file that changed is loaded anew; one that does not
    /// load, or refuses its resource's config, leaves the old one running.
    fn reload_handler_files(&mut self) {
        let names: Vec<String> = self
            .resources
            .iter()
            .filter(|(_, r)| !handler_file_unchanged(&r.prepared.resource.handler, r.prepared.handler.digest()))
            .map(|(name, _)| name.clone())
            .collect();
        // A file back to what is running is no longer refused.
        self.refused_handlers.retain(|name, _| names.contains(name));
        let resources: Vec<Resource> =
            names.iter().map(|name| self.resources[name].prepared.resource.clone()).collect();
        let fetched = self.fetch_local(resources.iter().map(|r| &r.handler));
        let mut loaded = Loaded::new();
        for resource in resources {
            let name = resource.name.clone();
            match discover::prepare_one(&self.runtime, &fetched, &resource, &mut loaded) {
                Ok(prepared) => {
                    tracing::info!(resource = %name, handler = %resource.handler, digest = prepared.handler.digest(), "handler file changed: reloaded");
                    self.refused_handlers.remove(&name);
                    let eval = self.resources.get_mut(&name).expect("listed above");
                    *eval = ResourceEval::new(prepared);
                    let evaluation = eval.rescan(&self.runtime, &self.sources);
                    self.report(&name, evaluation);
                }
                Err(error) => {
                    // Report a refused file once, not on every event in its directory.
                    let refused = handler_file_digest(&resource.handler);
                    if self.refused_handlers.get(&name) == refused.as_ref() {
                        continue;
                    }
                    self.refused_handlers.insert(name.clone(), refused.unwrap_or_default());
                    self.report_kept(
                        &name,
                        format!("handler file changed but was refused, the previous handler keeps running: {error}"),
                    );
                }
            }
        }
    }
}

/// Whether a file handler's bytes still have `digest` (other references
/// change only with the config). An unreadable file counts as unchanged:
/// it may be mid-replace, and the running handler is kept either way.
fn handler_file_unchanged(handler: &HandlerRef, loaded_digest: &str) -> bool {
    handler_file_digest(handler).is_none_or(|digest| digest == loaded_digest)
}

/// `sha256:<hex>` of a file handler's bytes as they are now.
fn handler_file_digest(handler: &HandlerRef) -> Option<String> {
    match handler {
        HandlerRef::File(path) => std::fs::read(path).ok().map(|bytes| format!("sha256:{:x}", Sha256::digest(&bytes))),
        _ => None,
    }
}

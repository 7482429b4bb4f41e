//! The evaluation stage's loop: sources in, evaluations out.
//!
//! It runs on a thread of its own (handler calls are synchronous) and owns
//! the handler runtime, every resource's [`ResourceEval`], and the watches
//! that tell it something changed: udev events, path-pattern directories,
//! and the config and handler files. It waits without a timeout, so an
//! agent whose devices do not change does no work; the exceptions are
//! re-enumeration with backoff while the udev monitor is down and fetching
//! again a handler that could not be fetched.
//!
//! Events are coalesced on both edges: the first event after a quiet spell
//! (nothing for `settle`) is evaluated at once, with whatever is already
//! queued behind it, so a single plug waits for no window; the events that
//! follow it are taken while they arrive less than `settle` apart (at most
//! `burst` in all) and evaluated together. A USB device with five
//! interfaces (a dozen uevents within a few ms) becomes one or two updates:
//! the device, then its interfaces and nodes.
//!
//! What changes the resources themselves (config reloads, handler updates,
//! pending handlers) is in [`super::lifecycle`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::lifecycle::{FetchPurpose, Lifecycle};
use super::prepare::{Prepared, ResourceError};
use super::report::{Reporter, ResourceSpec, Update};
use super::resource::{Evaluation, ResourceEval};
use crate::config::{Config, HandlerRef, Resource};
use crate::handler::Runtime;
use crate::loader::{Loader, WatchItem};
use crate::metrics::Metrics;
use crate::model::{Changes, PathChange, UdevEvent};
use crate::source::Sources;
use crate::source::monitor::MonitorReport;
use crate::source::watch::{FileWatch, PathWatch};
use crate::support::backoff::Backoff;

/// What wakes the evaluation stage.
#[derive(Debug)]
pub enum Input {
    Udev(MonitorReport),
    /// Something changed in a directory a path pattern can match in.
    Paths(PathChange),
    /// Something changed next to the config file or a handler file.
    Files,
    /// A USB/IP server's device list changed (or it stopped or started answering).
    Remote,
    /// A handler that can change at its source (a ConfigMap) changed.
    Handler {
        reference: HandlerRef,
        update: WatchItem,
    },
    /// Handlers fetched in the background (a registry may be slow: the
    /// stage never waits for one).
    Fetched {
        purpose: FetchPurpose,
        fetched: super::Fetched,
    },
    Shutdown,
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
const FALLBACK: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

/// What the stage is built from, besides the config.
pub struct StageParts {
    pub runtime: Runtime,
    pub sources: Sources,
    pub loader: Arc<Loader>,
    /// The agent's async runtime, for fetching and for ConfigMap watches.
    pub handle: tokio::runtime::Handle,
    /// Where evaluations go: the inventory.
    pub updates: UnboundedSender<Update>,
    pub metrics: Arc<Metrics>,
    pub coalescing: Coalescing,
    /// Where the `usbip:` settings of each applied config go.
    pub usbip: tokio::sync::watch::Sender<crate::config::UsbipSettings>,
}

pub struct Evaluator {
    pub(super) runtime: Runtime,
    pub(super) sources: Sources,
    pub(super) resources: BTreeMap<String, ResourceEval>,
    pub(super) reporter: Reporter,
    pub(super) lifecycle: Lifecycle,
    coalescing: Coalescing,
    /// When the last batch was taken: events within `settle` of it are the
    /// tail of a burst, to be coalesced; later ones lead a new one.
    last_batch: Option<Instant>,
    /// What each resource's last evaluation took: the order of the next.
    cost: BTreeMap<String, Duration>,
    paths: Option<PathWatch>,
    /// `Some` while the udev monitor is down.
    fallback: Option<Backoff>,
}

/// One burst of inputs, folded.
#[derive(Default)]
struct Batch {
    udev: Vec<UdevEvent>,
    monitor_up: bool,
    monitor_down: Option<String>,
    paths: PathChange,
    files: bool,
    remote: bool,
    handlers: Vec<(HandlerRef, WatchItem)>,
    fetched: Vec<(FetchPurpose, super::Fetched)>,
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
            Input::Remote => self.remote = true,
            Input::Handler { reference, update } => self.handlers.push((reference, update)),
            Input::Fetched { purpose, fetched } => self.fetched.push((purpose, fetched)),
            Input::Shutdown => self.shutdown = true,
        }
    }
}

impl Evaluator {
    /// The stage for `config`, whose resources are `prepared` already or
    /// `pending` (their handler could not be fetched: the agent starts
    /// anyway and fetches them again).
    pub fn new(parts: StageParts, config: &Config, prepared: Vec<Prepared>, pending: Vec<Resource>) -> Evaluator {
        let resources = prepared.into_iter().map(|p| (p.resource.name.clone(), ResourceEval::new(p))).collect();
        Evaluator {
            runtime: parts.runtime,
            sources: parts.sources,
            resources,
            reporter: Reporter::new(parts.updates, parts.metrics),
            lifecycle: Lifecycle::new(config, pending, parts.loader, parts.handle, parts.usbip),
            coalescing: parts.coalescing,
            last_batch: None,
            cost: BTreeMap::new(),
            paths: None,
            fallback: None,
        }
    }

    /// Whether any resource reads udev (and so needs the monitor).
    pub fn wants_udev(&self) -> bool {
        self.resources.values().any(ResourceEval::wants_udev)
    }

    /// Starts the path, file and ConfigMap watches, reporting into `inputs`.
    pub fn watch(&mut self, inputs: Sender<Input>) -> std::io::Result<()> {
        let paths_tx = inputs.clone();
        self.paths = Some(PathWatch::start(move |change| paths_tx.send(Input::Paths(change)).is_ok())?);
        let files_tx = inputs.clone();
        let files = FileWatch::start(move || {
            let _ = files_tx.send(Input::Files);
        })
        .map_err(std::io::Error::other)?;
        self.lifecycle.watch(inputs, files);
        self.replan_watches();
        Ok(())
    }

    /// Tells the inventory the resources and evaluates each once; the
    /// resources that wait for their handler are reported with why.
    pub fn initial(&mut self, unavailable: Vec<ResourceError>) {
        self.send_resources();
        for error in unavailable {
            self.reporter.unavailable(error.resource(), &error);
        }
        let names: Vec<String> = self.resources.keys().cloned().collect();
        for name in names {
            self.rescan_one(&name);
        }
    }

    /// Serves inputs until `Shutdown` or until every sender is gone.
    pub fn run(mut self, inputs: Receiver<Input>) {
        loop {
            // Idle means blocked without a timeout; timers run only while
            // the udev monitor is down or a handler could not be fetched.
            let timer = [self.fallback.map(|b| b.peek()), self.lifecycle.retry_delay()].into_iter().flatten().min();
            let first = match timer {
                None => match inputs.recv() {
                    Ok(input) => input,
                    Err(_) => return,
                },
                Some(delay) => match inputs.recv_timeout(delay) {
                    Ok(input) => input,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Some(fallback) = &mut self.fallback {
                            fallback.next_delay();
                            self.rescan(ResourceEval::wants_udev);
                        }
                        if self.lifecycle.retry_due() {
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
            let leads = self.last_batch.is_none_or(|last| started - last >= self.coalescing.settle);
            if leads {
                // The leading edge: at once, with what is already queued.
                while let (false, Ok(input)) = (batch.shutdown, inputs.try_recv()) {
                    batch.add(input);
                }
            } else {
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
            }
            self.last_batch = Some(Instant::now());
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
            self.fetched(purpose, &fetched);
        }
        if let Some(error) = batch.monitor_down {
            tracing::error!(%error, "udev events are not seen: re-enumerating with backoff until the monitor is back");
            self.fallback = Some(FALLBACK);
        }
        let mut touched: BTreeMap<String, Changes> = BTreeMap::new();
        let started = Instant::now();
        if batch.monitor_up {
            if self.fallback.take().is_some() {
                tracing::info!("the udev monitor is back: re-enumerating once");
            }
            // Events missed while it was down (or before it started) are in a fresh collection.
            self.collect_rescans(&mut touched, ResourceEval::wants_udev);
        }
        if batch.remote {
            self.collect_rescans(&mut touched, ResourceEval::wants_remote);
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
            for (name, resource) in self.resources.iter_mut().filter(|(_, r)| r.wants_paths()) {
                match resource.take_paths(&self.sources, &batch.paths) {
                    Ok(changes) => touched.entry(name.clone()).or_default().extend(changes),
                    Err(error) => self
                        .reporter
                        .evaluation(name, Some(Evaluation { outcome: Err(error), took: started.elapsed() })),
                }
            }
        }
        self.evaluate_touched(touched, started);
    }

    /// Evaluates each touched resource once, over what changed for it, the
    /// cheapest first: each result goes to the kubelet as soon as it is
    /// there, so a handler that runs into its time budget (or is merely
    /// slow) delays only the resources costlier than itself.
    fn evaluate_touched(&mut self, touched: BTreeMap<String, Changes>, started: Instant) {
        let mut touched: Vec<(String, Changes)> = touched.into_iter().collect();
        touched.sort_by_key(|(name, _)| self.cost.get(name).copied().unwrap_or_default());
        for (name, changes) in touched {
            let resource = self.resources.get_mut(&name).expect("touched resources exist");
            let began = Instant::now();
            let evaluation = resource.evaluate(&self.runtime, changes, started);
            self.cost.insert(name.clone(), began.elapsed());
            self.reporter.evaluation(&name, evaluation);
        }
        if self.cost.len() > self.resources.len() {
            self.cost.retain(|name, _| self.resources.contains_key(name));
        }
    }

    /// Re-collects the resources `which` selects, folding their changes
    /// into `touched`; a collection that fails is reported at once.
    fn collect_rescans(&mut self, touched: &mut BTreeMap<String, Changes>, which: impl Fn(&ResourceEval) -> bool) {
        for (name, resource) in self.resources.iter_mut().filter(|(_, r)| which(r)) {
            let started = Instant::now();
            match resource.take_rescan(&self.sources) {
                Ok(changes) => touched.entry(name.clone()).or_default().extend(changes),
                Err(error) => {
                    self.reporter.evaluation(name, Some(Evaluation { outcome: Err(error), took: started.elapsed() }))
                }
            }
        }
    }

    fn rescan(&mut self, which: impl Fn(&ResourceEval) -> bool) {
        let mut touched = BTreeMap::new();
        let started = Instant::now();
        self.collect_rescans(&mut touched, which);
        self.evaluate_touched(touched, started);
    }

    /// Collects and evaluates one resource from scratch, and reports it.
    pub(super) fn rescan_one(&mut self, name: &str) {
        let resource = self.resources.get_mut(name).expect("rescanned resources exist");
        let evaluation = resource.rescan(&self.runtime, &self.sources);
        self.reporter.evaluation(name, evaluation);
    }

    /// Serves `prepared` (new, or in place of the resource of its name) and
    /// evaluates it.
    pub(super) fn install(&mut self, prepared: Prepared) {
        let name = prepared.resource.name.clone();
        self.resources.insert(name.clone(), ResourceEval::new(prepared));
        self.rescan_one(&name);
    }

    /// Tells the inventory which resources the config in force has.
    pub(super) fn send_resources(&self) {
        let resources = self
            .resources
            .values()
            .map(|r| ResourceSpec::of(&r.prepared.resource))
            .chain(self.lifecycle.pending().map(ResourceSpec::of))
            .collect();
        self.reporter.resources(self.lifecycle.generation(), resources);
    }

    /// Watches what the resources in force need watched: the directories
    /// their path patterns can match in, their handler files and ConfigMaps.
    pub(super) fn replan_watches(&mut self) {
        let served: Vec<&Resource> = self.resources.values().map(|r| &r.prepared.resource).collect();
        self.lifecycle.replan(&served);
        if let Some(paths) = &mut self.paths {
            let dirs = self
                .resources
                .values()
                .flat_map(|r| r.prepared.needs.paths.iter())
                .flat_map(|pattern| crate::source::watch::plan(pattern))
                .collect();
            paths.set(&dirs);
        }
    }
}

//! What changes the resources themselves while the agent runs, as opposed
//! to their devices: the config file (validated in full, then only the
//! difference applied; a refused change leaves the old config serving),
//! `.wasm` handler files and ConfigMap handlers (a refused update keeps the
//! running handler), and resources whose handler could not be fetched yet
//! (served without devices, fetched again with backoff).
//!
//! [`Lifecycle`] holds their state; the methods that change the resources
//! continue `impl Evaluator` here, since they act on the stage's resources,
//! reporter and watches together.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::prepare::{self, Fetched, Loaded, Prepared};
use super::stage::{Evaluator, Input};
use crate::config::{Config, HandlerRef, Resource, UsbipSettings};
use crate::loader::{Loader, WatchItem};
use crate::source::watch::FileWatch;
use crate::support::backoff::Backoff;
use crate::support::digest::sha256_digest;

/// Fetching again a handler that could not be fetched (a registry down).
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));

/// What a background fetch was for.
#[derive(Debug)]
pub enum FetchPurpose {
    /// The handlers of resources that could not be had yet.
    Pending,
    /// A new config (the `serial`-th change seen), to validate and apply.
    Config { serial: u64, config: Box<Config> },
}

/// The state of the config and handlers in force.
pub struct Lifecycle {
    config_file: PathBuf,
    /// Digest of the config text last read, good or bad: a refused config is
    /// reported once, not on every unrelated event in its directory.
    config_digest: Option<String>,
    generation: u64,
    /// Counts config changes seen, so a slow fetch for an older one is dropped.
    config_serial: u64,
    /// Per resource, the digest of a handler file that was refused.
    refused_handlers: BTreeMap<String, String>,
    /// Resources whose handler could not be fetched yet.
    pending: BTreeMap<String, Resource>,
    /// `Some` while a resource is pending.
    retry: Option<Backoff>,
    /// A background fetch of the pending handlers is under way.
    fetching_pending: bool,
    loader: Arc<Loader>,
    handle: tokio::runtime::Handle,
    inputs: Option<Sender<Input>>,
    files: Option<FileWatch>,
    /// Forwarders of handler updates (ConfigMaps), by reference.
    forwarders: BTreeMap<String, tokio::task::JoinHandle<()>>,
    /// The `usbip:` settings in force, for whoever lists the servers.
    usbip: tokio::sync::watch::Sender<UsbipSettings>,
}

impl Lifecycle {
    pub(super) fn new(
        config: &Config,
        pending: Vec<Resource>,
        loader: Arc<Loader>,
        handle: tokio::runtime::Handle,
        usbip: tokio::sync::watch::Sender<UsbipSettings>,
    ) -> Self {
        Lifecycle {
            config_digest: crate::config::read_file(&config.file).ok().map(|text| sha256_digest(text.as_bytes())),
            config_file: config.file.clone(),
            generation: 1,
            config_serial: 0,
            refused_handlers: BTreeMap::new(),
            retry: (!pending.is_empty()).then_some(RETRY),
            pending: pending.into_iter().map(|r| (r.name.clone(), r)).collect(),
            fetching_pending: false,
            loader,
            handle,
            inputs: None,
            files: None,
            forwarders: BTreeMap::new(),
            usbip,
        }
    }

    /// Where fetches and ConfigMap updates report, and the watch on the
    /// config's and handler files' directories.
    pub(super) fn watch(&mut self, inputs: Sender<Input>, files: FileWatch) {
        self.inputs = Some(inputs);
        self.files = Some(files);
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    pub(super) fn pending(&self) -> impl Iterator<Item = &Resource> {
        self.pending.values()
    }

    /// How long until pending handlers are fetched again, if any are pending.
    pub(super) fn retry_delay(&self) -> Option<Duration> {
        self.retry.map(|retry| retry.peek())
    }

    /// The retry timer fired: the next wait is longer. Whether one was due.
    pub(super) fn retry_due(&mut self) -> bool {
        self.retry.as_mut().map(Backoff::next_delay).is_some()
    }

    /// Follows the files and ConfigMaps of `served` and the pending resources.
    pub(super) fn replan(&mut self, served: &[&Resource]) {
        let handlers: Vec<HandlerRef> =
            served.iter().map(|r| &r.handler).chain(self.pending.values().map(|r| &r.handler)).cloned().collect();
        self.replan_forwarders(&handlers);
        if let Some(files) = &mut self.files {
            let handler_files = handlers.iter().filter_map(|handler| match handler {
                HandlerRef::File(path) => Some(path.as_path()),
                _ => None,
            });
            files.set(std::iter::once(self.config_file.as_path()).chain(handler_files));
        }
    }

    /// One forwarder per ConfigMap reference in use, handing its updates in
    /// as [`Input::Handler`].
    fn replan_forwarders(&mut self, handlers: &[HandlerRef]) {
        let Some(inputs) = self.inputs.clone() else { return };
        let wanted: BTreeMap<String, &HandlerRef> =
            handlers.iter().filter(|h| matches!(h, HandlerRef::ConfigMap(_))).map(|h| (h.to_string(), h)).collect();
        self.forwarders.retain(|key, task| {
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
            let Some(mut updates) = self.loader.watch(reference) else { continue };
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
            self.forwarders.insert(key, task);
        }
    }

    /// Files and built-ins: read at once (no network involved).
    fn fetch_local<'a>(&self, references: impl IntoIterator<Item = &'a HandlerRef>) -> Fetched {
        self.handle.block_on(prepare::fetch_refs(&self.loader, references))
    }

    /// Fetches `references` on the async runtime and hands the result back
    /// as [`Input::Fetched`], so a slow registry never holds up events.
    fn fetch_in_background(&self, references: Vec<HandlerRef>, purpose: FetchPurpose) {
        let Some(inputs) = self.inputs.clone() else { return };
        let loader = self.loader.clone();
        self.handle.spawn(async move {
            let fetched = prepare::fetch_refs(&loader, references.iter()).await;
            let _ = inputs.send(Input::Fetched { purpose, fetched });
        });
    }
}

impl Evaluator {
    /// Handlers fetched in the background arrived.
    pub(super) fn fetched(&mut self, purpose: FetchPurpose, fetched: &Fetched) {
        match purpose {
            FetchPurpose::Pending => {
                self.lifecycle.fetching_pending = false;
                self.prepare_pending(fetched);
            }
            FetchPurpose::Config { serial, config } if serial == self.lifecycle.config_serial => {
                self.apply_config(*config, fetched)
            }
            // A newer config has been seen since: this one is out of date.
            FetchPurpose::Config { .. } => {}
        }
    }

    /// Fetches the pending resources' handlers again (in the background).
    pub(super) fn retry_pending(&mut self) {
        let lifecycle = &mut self.lifecycle;
        if lifecycle.pending.is_empty() {
            lifecycle.retry = None;
            return;
        }
        if !lifecycle.fetching_pending {
            lifecycle.fetching_pending = true;
            let references = lifecycle.pending.values().map(|r| r.handler.clone()).collect();
            lifecycle.fetch_in_background(references, FetchPurpose::Pending);
        }
    }

    /// Pending resources whose handler now loads join the rest.
    fn prepare_pending(&mut self, fetched: &Fetched) {
        let resources: Vec<Resource> = self.lifecycle.pending.values().cloned().collect();
        let mut loaded = Loaded::new();
        for resource in resources {
            match prepare::prepare_one(&self.runtime, fetched, &resource, &mut loaded) {
                Ok(prepared) => {
                    tracing::info!(resource = %resource.name, handler = %resource.handler, "handler fetched: serving");
                    self.lifecycle.pending.remove(&resource.name);
                    self.install(prepared);
                }
                Err(error) => self.reporter.unavailable(&resource.name, &error),
            }
        }
        if self.lifecycle.pending.is_empty() {
            self.lifecycle.retry = None;
        }
        self.replan_watches();
    }

    /// A ConfigMap handler changed or went away.
    pub(super) fn handler_changed(&mut self, reference: &HandlerRef, update: WatchItem) {
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
                    // The error names the reference already.
                    self.keep(&name, format!("handler {error}; the last good handler keeps running"));
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
            match prepare::prepare_one(&self.runtime, &fetched, &resource, &mut loaded) {
                Ok(prepared) => {
                    tracing::info!(resource = %name, handler = %reference, digest = %bytes.digest, "handler updated: reloaded");
                    self.install(prepared);
                }
                Err(error) => self.keep(
                    &name,
                    format!("handler {reference} changed but was refused, the previous handler keeps running: {error}"),
                ),
            }
        }
        if self.lifecycle.pending.values().any(|r| r.handler == *reference) {
            self.retry_pending();
        }
    }

    /// Reports that `name`'s running handler stays (its devices stay healthy).
    fn keep(&mut self, name: &str, message: String) {
        let groups = self.resources.get(name).map(|r| r.last_groups().to_vec()).unwrap_or_default();
        self.reporter.kept(name, message, groups);
    }

    /// Something changed near the config or a handler file: reload what did.
    pub(super) fn reload_files(&mut self) {
        let file = self.lifecycle.config_file.clone();
        match crate::config::read_file(&file) {
            Ok(text) if self.lifecycle.config_digest.as_deref() != Some(sha256_digest(text.as_bytes()).as_str()) => {
                self.lifecycle.config_digest = Some(sha256_digest(text.as_bytes()));
                self.reload_config(&text);
                return;
            }
            Ok(_) => {}
            // Deleted, or between the steps of a swap: keep serving. The
            // file that comes back is read whatever its contents.
            Err(crate::config::ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(file = %file.display(), "config file gone for now; the last config keeps serving");
                self.lifecycle.config_digest = None;
            }
            // Unreadable (a symlink loop, no permission, not UTF-8, too large):
            // a change that is refused, named where operators look.
            // Kept as the "digest", so the same failure seen by several
            // events is refused once, and any readable file after it reloads.
            Err(error) => {
                let error = crate::support::error_chain(&error);
                let seen = format!("unreadable: {error}");
                if self.lifecycle.config_digest.as_deref() != Some(seen.as_str()) {
                    self.lifecycle.config_digest = Some(seen);
                    self.lifecycle.config_serial += 1;
                    self.refuse(error);
                }
            }
        }
        self.reload_handler_files();
    }

    fn refuse(&self, error: String) {
        tracing::error!(file = %self.lifecycle.config_file.display(), %error, "config change refused; the previous config stays in force");
        self.reporter.config_change(self.lifecycle.generation, Some(error));
    }

    fn reload_config(&mut self, text: &str) {
        self.lifecycle.config_serial += 1;
        let config = match Config::parse(&self.lifecycle.config_file, text) {
            Ok(config) => config,
            Err(error) => return self.refuse(crate::support::error_chain(&error)),
        };
        config.log_ignored_fields();
        // Every handler of the new config must be had before it is checked:
        // fetched in the background, then applied (if still the latest).
        let references = config.resources.iter().map(|r| r.handler.clone()).collect();
        let purpose = FetchPurpose::Config { serial: self.lifecycle.config_serial, config: Box::new(config) };
        self.lifecycle.fetch_in_background(references, purpose);
    }

    /// Validates a new config with its handlers fetched, and applies only
    /// the difference; refuses it whole if anything is wrong.
    fn apply_config(&mut self, config: Config, fetched: &Fetched) {
        let mut loaded = Loaded::new();
        let mut next: Vec<(String, Option<Prepared>)> = Vec::new();
        for resource in &config.resources {
            let unchanged = self.resources.get(&resource.name).is_some_and(|r| {
                r.prepared.resource == *resource
                    && handler_file_unchanged(&r.prepared.resource.handler, r.prepared.handler.digest())
            });
            if unchanged {
                next.push((resource.name.clone(), None));
                continue;
            }
            match prepare::prepare_one(&self.runtime, fetched, resource, &mut loaded) {
                Ok(prepared) => next.push((resource.name.clone(), Some(prepared))),
                Err(error) => return self.refuse(crate::support::error_chain(&error)),
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
                    self.resources.insert(name.clone(), super::ResourceEval::new(prepared));
                    evaluate.push(name);
                }
            }
        }
        for name in old.keys().chain(self.lifecycle.pending.keys()) {
            tracing::info!(resource = %name, "resource removed");
            self.reporter.forget(name);
        }
        let lifecycle = &mut self.lifecycle;
        lifecycle.usbip.send_if_modified(|settings| {
            let changed = *settings != config.usbip;
            if changed {
                tracing::info!(servers = config.usbip.servers.len(), "USB/IP settings changed");
                *settings = config.usbip.clone();
            }
            changed
        });
        lifecycle.pending.clear();
        lifecycle.retry = None;
        lifecycle.generation += 1;
        tracing::info!(generation = lifecycle.generation, resources = self.resources.len(), "config applied");
        self.reporter.config_change(lifecycle.generation, None);
        // The inventory knows the new resources before their first evaluation.
        self.send_resources();
        self.replan_watches();
        for name in evaluate {
            self.rescan_one(&name);
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
        self.lifecycle.refused_handlers.retain(|name, _| names.contains(name));
        let resources: Vec<Resource> =
            names.iter().map(|name| self.resources[name].prepared.resource.clone()).collect();
        let fetched = self.lifecycle.fetch_local(resources.iter().map(|r| &r.handler));
        let mut loaded = Loaded::new();
        for resource in resources {
            let name = resource.name.clone();
            match prepare::prepare_one(&self.runtime, &fetched, &resource, &mut loaded) {
                Ok(prepared) => {
                    tracing::info!(resource = %name, handler = %resource.handler, digest = prepared.handler.digest(), "handler file changed: reloaded");
                    self.lifecycle.refused_handlers.remove(&name);
                    self.install(prepared);
                }
                Err(error) => {
                    // Report a refused file once, not on every event in its directory.
                    let refused = handler_file_digest(&resource.handler);
                    if self.lifecycle.refused_handlers.get(&name) == refused.as_ref() {
                        continue;
                    }
                    self.lifecycle.refused_handlers.insert(name.clone(), refused.unwrap_or_default());
                    self.keep(
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
        HandlerRef::File(path) => std::fs::read(path).ok().map(|bytes| sha256_digest(&bytes)),
        _ => None,
    }
}

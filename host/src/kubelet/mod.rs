//! The kubelet advertiser: one device-plugin gRPC server per resource, on a
//! Unix socket in the plugin directory, registered with the kubelet.
//!
//! It follows the inventory's resource set (serving resources as they are
//! added, stopping those removed) and the plugin directory through inotify:
//! - `kubelet.sock` created (the kubelet started or restarted): register every
//!   resource at once;
//! - one of our sockets deleted (the kubelet deletes every socket in the
//!   directory when it restarts): serve that resource again on a new socket,
//!   then register it as soon as a kubelet is there;
//! - `kubelet.sock` deleted: stop trying to register until it is back;
//! - the kubelet ends a registered resource's last `ListAndWatch` stream
//!   while `kubelet.sock` stays, or opens none within a second of `Register`
//!   (the kubelet then marks the resource's devices unhealthy and never dials
//!   again by itself): register it again.
//!
//! No poll interval and no fixed sleep: the only timers are the backoff of a
//! registration that failed while `kubelet.sock` exists, and the moment a
//! resource waits after its last stream ended (a registration that replaces
//! a stream opens the new one before the old one closes; see
//! [`STREAM_REPLACED_WITHIN`]).

mod allocate;
mod cdi;
mod plugin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use devsieve_proto::v1beta1::device_plugin_server::DevicePluginServer;
use devsieve_proto::v1beta1::registration_client::RegistrationClient;
use devsieve_proto::v1beta1::{KUBELET_SOCKET, RegisterRequest, VERSION};
use notify::{EventKind, RecursiveMode, Watcher};
use serde::Serialize;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use crate::attach::Attacher;
use crate::inventory::{DeviceList, ResourceSet, ResourceSpec};
use crate::metrics::Metrics;
use crate::support::backoff::Backoff;
use crate::support::digest::sha256_hex_of;

/// The longest path a Unix socket may have (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// Registering again after a failed `Register` (while `kubelet.sock` exists).
const REGISTER_RETRY_MAX: Duration = Duration::from_secs(5);
const REGISTER_RETRY: Backoff = Backoff::new(Duration::from_millis(20), REGISTER_RETRY_MAX);
/// How long a registered resource may have no `ListAndWatch` stream before
/// it registers again: the kubelet opens a replacing stream inside
/// `Register`, so a stream ended by a replacement is followed by the new one
/// at once, and only an ended stream with none after it is the kubelet
/// letting the plugin go.
const STREAM_REPLACED_WITHIN: Duration = Duration::from_millis(100);
/// Registering again after the kubelet ended the streams: a kubelet that
/// keeps ending them is not asked more often than this allows.
const STREAM_RETRY: Backoff = Backoff::new(STREAM_REPLACED_WITHIN, REGISTER_RETRY_MAX);
/// How long after `Register` answered the kubelet has to open the stream
/// (the kubelet starts `ListAndWatch` on a goroutine of its own) before the
/// resource registers again.
const STREAM_OPENS_WITHIN: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("plugin directory {dir}: {reason}")]
    PluginDir { dir: PathBuf, reason: String },
    #[error("cannot watch the plugin directory {dir} (inotify): {source}")]
    Watch { dir: PathBuf, source: notify::Error },
    #[error("{resource}: cannot serve on {socket}: {source}")]
    Serve { resource: String, socket: PathBuf, source: std::io::Error },
}

#[derive(Clone, Debug)]
pub struct AdvertiserOptions {
    /// The kubelet's device-plugin directory.
    pub plugin_dir: PathBuf,
    /// Where CDI specs are written, for resources with `cdi: true`.
    pub cdi_dir: PathBuf,
    /// How long one `Register` call may take (the kubelet dials back inside it).
    pub register_timeout: Duration,
    /// What attaches remote (USB/IP) devices on `Allocate`, or why nothing can here.
    pub attacher: Attach,
}

/// The attacher, or why this node cannot attach (no vhci_hcd, a damaged attachment record).
pub type Attach = Result<Arc<Attacher>, Arc<str>>;

/// What the advertiser reports to `/readyz` and `/status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AdvertiserStatus {
    pub kubelet_present: bool,
    /// Per resource: its socket, and whether the current kubelet has it registered.
    pub plugins: BTreeMap<String, PluginStatus>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PluginStatus {
    pub socket: PathBuf,
    pub registered: bool,
    /// Why its CDI spec cannot be written (its new devices are not advertised).
    pub cdi_error: Option<String>,
}

impl AdvertiserStatus {
    /// Every resource is registered with a kubelet.
    pub fn ready(&self) -> bool {
        self.kubelet_present && self.plugins.values().all(|p| p.registered && p.cdi_error.is_none())
    }
}

struct Plugin {
    spec: ResourceSpec,
    /// The inventory's device list.
    devices: watch::Receiver<Arc<DeviceList>>,
    /// What the server tells the kubelet: `devices`, or for a CDI resource
    /// each list once its CDI spec is on disk.
    served: watch::Receiver<Arc<DeviceList>>,
    socket: PathBuf,
    /// `ListAndWatch` streams open on the current server.
    streams: Arc<AtomicUsize>,
    /// Between registrations the kubelet's ended streams asked for.
    stream_retry: Backoff,
    stop: CancellationToken,
    server: JoinHandle<()>,
    registration: Option<JoinHandle<()>>,
    cdi: Option<JoinHandle<()>>,
}

pub struct Advertiser {
    options: AdvertiserOptions,
    kubelet_socket: PathBuf,
    metrics: Arc<Metrics>,
    status: Arc<watch::Sender<AdvertiserStatus>>,
    /// Distinguishes this process's sockets from an earlier start's.
    nonce: u64,
    serial: AtomicU64,
    /// Each server says here (by its socket) when one of its streams ended;
    /// the advertiser says it again to itself once the replacement window passed.
    stream_ended: mpsc::UnboundedSender<StreamEvent>,
    stream_events: Option<mpsc::UnboundedReceiver<StreamEvent>>,
}

/// What a resource's streams are up to, by the socket of its server.
#[derive(Debug)]
enum StreamEvent {
    /// One of its `ListAndWatch` streams ended.
    Ended(PathBuf),
    /// `Register` answered: a stream should be open, or open soon.
    Registered(PathBuf),
    /// The window for a stream to (re)open has passed: look again.
    Recheck(PathBuf),
}

impl Advertiser {
    pub fn new(options: AdvertiserOptions, metrics: Arc<Metrics>) -> (Advertiser, watch::Receiver<AdvertiserStatus>) {
        let (status, status_rx) = watch::channel(AdvertiserStatus::default());
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        let (stream_ended, stream_events) = mpsc::unbounded_channel();
        let advertiser = Advertiser {
            stream_ended,
            stream_events: Some(stream_events),
            kubelet_socket: options.plugin_dir.join(KUBELET_SOCKET),
            options,
            metrics,
            status: Arc::new(status),
            nonce: nanos ^ (u64::from(std::process::id()) << 32),
            serial: AtomicU64::new(0),
        };
        (advertiser, status_rx)
    }

    /// Checks, before anything is served, that sockets can be made in the
    /// plugin directory.
    pub fn check(&self) -> Result<(), KubeletError> {
        let dir = &self.options.plugin_dir;
        let fail = |reason: String| KubeletError::PluginDir { dir: dir.clone(), reason };
        let meta =
            std::fs::metadata(dir).map_err(|e| fail(format!("{e} (is the kubelet's plugin directory mounted?)")))?;
        if !meta.is_dir() {
            return Err(fail("is not a directory".into()));
        }
        if rustix::fs::access(dir, rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK).is_err() {
            return Err(fail(format!(
                "is not writable by this process (uid {}); the agent creates its sockets there",
                rustix::process::geteuid().as_raw()
            )));
        }
        let longest = dir.join(socket_name("x".repeat(SLUG_MAX).as_str(), 0));
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(fail(format!("is too long for Unix socket paths (at most {} bytes)", MAX_SOCKET_PATH - 64)));
        }
        Ok(())
    }

    /// Serves and registers the inventory's resources until `shutdown`, then
    /// stops every server and removes its socket.
    pub async fn run(
        mut self,
        mut resources: watch::Receiver<Arc<ResourceSet>>,
        shutdown: CancellationToken,
    ) -> Result<(), KubeletError> {
        let dir = self.options.plugin_dir.clone();
        // Watch first, then look: nothing that happens in between is missed.
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = events_tx.send(event);
        })
        .map_err(|source| KubeletError::Watch { dir: dir.clone(), source })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| KubeletError::Watch { dir: dir.clone(), source })?;

        let mut stream_events = self.stream_events.take().expect("run is called once");
        // When to look again at a resource that has no stream: timers of the
        // loop itself, not tasks.
        let mut rechecks = Rechecks::new();
        let mut plugins: BTreeMap<String, Plugin> = BTreeMap::new();
        let initial = resources.borrow_and_update().clone();
        self.start_all(&initial, &mut plugins)?;
        let mut kubelet_present = self.kubelet_socket.exists();
        self.status.send_modify(|s| s.kubelet_present = kubelet_present);
        if kubelet_present {
            tracing::info!(socket = %self.kubelet_socket.display(), "kubelet is there");
            for plugin in plugins.values_mut() {
                self.register(plugin);
            }
        } else {
            tracing::info!(socket = %self.kubelet_socket.display(), "waiting for the kubelet");
        }

        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = resources.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let set = resources.borrow_and_update().clone();
                    self.sync(&set, &mut plugins, kubelet_present);
                }
                Some(event) = events.recv() => {
                    let event = match event {
                        Ok(event) => event,
                        Err(error) => {
                            tracing::warn!(%error, "plugin directory watch reported an error");
                            continue;
                        }
                    };
                    for path in &event.paths {
                        if *path == self.kubelet_socket {
                            if appeared(&event.kind) {
                                if kubelet_present {
                                    tracing::info!("kubelet.sock was created again: the kubelet restarted");
                                } else {
                                    tracing::info!("kubelet.sock appeared");
                                }
                                self.metrics.kubelet_reconnect();
                                kubelet_present = true;
                                self.status.send_modify(|s| s.kubelet_present = true);
                                for plugin in plugins.values_mut() {
                                    plugin.stream_retry.reset();
                                    self.register(plugin);
                                }
                            } else if vanished(&event.kind) {
                                tracing::info!("kubelet.sock was removed: waiting for the kubelet");
                                kubelet_present = false;
                                self.status.send_modify(|s| s.kubelet_present = false);
                                for plugin in plugins.values_mut() {
                                    self.unregister(plugin);
                                }
                            }
                        } else if vanished(&event.kind)
                            && let Some(plugin) = plugins.values_mut().find(|p| p.socket == *path)
                        {
                            tracing::info!(resource = %plugin.spec.name, "our socket was removed: serving on a new one");
                            if let Err(error) = self.restart(plugin) {
                                tracing::error!(%error, "cannot serve again");
                                continue;
                            }
                            if kubelet_present {
                                self.register(plugin);
                            }
                        }
                    }
                }
                Some(event) = stream_events.recv() => {
                    if kubelet_present {
                        self.stream_event(event, &mut plugins, &mut rechecks);
                    }
                }
                () = sleep_until_first(&rechecks) => {
                    let Some((_, socket)) = rechecks.pop_first() else { continue };
                    if kubelet_present {
                        self.stream_event(StreamEvent::Recheck(socket), &mut plugins, &mut rechecks);
                    }
                }
            }
        }
        drop(watcher);
        self.stop_all(std::mem::take(&mut plugins)).await;
        Ok(())
    }

    /// A stream ended: once no stream followed it within the replacement
    /// window, a registered resource registers again.
    fn stream_event(&self, event: StreamEvent, plugins: &mut BTreeMap<String, Plugin>, rechecks: &mut Rechecks) {
        let (StreamEvent::Ended(socket) | StreamEvent::Registered(socket) | StreamEvent::Recheck(socket)) = &event;
        // A server that was replaced or stopped ends its streams too: not news.
        let Some(plugin) = plugins.values_mut().find(|p| p.socket == *socket) else { return };
        if plugin.streams.load(Ordering::SeqCst) > 0 {
            return;
        }
        let mut recheck_later = |delay: Duration| {
            rechecks.insert((tokio::time::Instant::now() + delay, socket.clone()));
        };
        // The kubelet opens the stream in `Register` or just after it; one it
        // ended (or never opened) before `Register` answered is decided once
        // the registration has.
        if matches!(event, StreamEvent::Registered(_)) {
            recheck_later(STREAM_OPENS_WITHIN);
            return;
        }
        if plugin.registration.as_ref().is_some_and(|task| !task.is_finished()) {
            recheck_later(STREAM_REPLACED_WITHIN);
            return;
        }
        let registered = self.status.borrow().plugins.get(&plugin.spec.name).is_some_and(|p| p.registered);
        if !registered {
            return;
        }
        match event {
            StreamEvent::Ended(_) => recheck_later(plugin.stream_retry.next_delay()),
            StreamEvent::Registered(_) => unreachable!("handled above"),
            StreamEvent::Recheck(_) => {
                tracing::warn!(
                    resource = %plugin.spec.name,
                    "the kubelet ended ListAndWatch and opened no other stream: registering again"
                );
                self.metrics.kubelet_reconnect();
                self.register(plugin);
            }
        }
    }

    /// The first set: every socket is bound before any is registered, and a
    /// failure leaves nothing behind.
    fn start_all(&self, set: &ResourceSet, plugins: &mut BTreeMap<String, Plugin>) -> Result<(), KubeletError> {
        for published in set.resources.values() {
            match self.start(&published.spec, published.devices.clone()) {
                Ok(plugin) => {
                    plugins.insert(published.spec.name.clone(), plugin);
                }
                Err(error) => {
                    for (_, plugin) in std::mem::take(plugins) {
                        self.discard(plugin);
                    }
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Follows a new resource set: starts what is new, stops what is gone,
    /// restarts what changed; unchanged resources are not touched.
    fn sync(&self, set: &ResourceSet, plugins: &mut BTreeMap<String, Plugin>, kubelet_present: bool) {
        let gone: Vec<String> = plugins.keys().filter(|name| !set.resources.contains_key(*name)).cloned().collect();
        for name in gone {
            if let Some(plugin) = plugins.remove(&name) {
                tracing::info!(resource = %name, "resource removed from the config: unregistering");
                self.discard(plugin);
                self.status.send_modify(|s| {
                    s.plugins.remove(&name);
                });
            }
        }
        for (name, published) in &set.resources {
            // What the server depends on: its device channel and whether it
            // answers with CDI names. Anything else (the handler) changes
            // the devices, not the server, so the kubelet's stream stays.
            if let Some(plugin) = plugins.get_mut(name)
                && plugin.spec.cdi == published.spec.cdi
                && plugin.devices.same_channel(&published.devices)
            {
                plugin.spec = published.spec.clone();
                continue;
            }
            if let Some(old) = plugins.remove(name) {
                self.discard(old);
            }
            match self.start(&published.spec, published.devices.clone()) {
                Ok(mut plugin) => {
                    if kubelet_present {
                        self.register(&mut plugin);
                    }
                    plugins.insert(name.clone(), plugin);
                }
                Err(error) => tracing::error!(%error, "cannot serve a new resource"),
            }
        }
    }

    /// Stops a plugin at once and removes its socket and CDI spec.
    fn discard(&self, plugin: Plugin) {
        plugin.stop.cancel();
        plugin.server.abort();
        if let Some(task) = plugin.registration {
            task.abort();
        }
        if let Some(task) = plugin.cdi {
            task.abort();
            let _ = std::fs::remove_file(cdi::spec_path(&self.options.cdi_dir, &plugin.spec.name));
        }
        let _ = std::fs::remove_file(&plugin.socket);
    }

    fn next_socket(&self, resource: &str) -> PathBuf {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let tag = self.nonce.wrapping_add(serial.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.options.plugin_dir.join(socket_name(&slug(resource), tag))
    }

    fn start(&self, spec: &ResourceSpec, devices: watch::Receiver<Arc<DeviceList>>) -> Result<Plugin, KubeletError> {
        let socket = self.next_socket(&spec.name);
        let stop = CancellationToken::new();
        let streams = Arc::new(AtomicUsize::new(0));
        let (served, cdi) = if spec.cdi {
            let (gate, served) = watch::channel(Arc::new(DeviceList::default()));
            let status = self.status.clone();
            let name = spec.name.clone();
            let report = move |error: Option<String>| {
                status.send_modify(|s| {
                    if let Some(p) = s.plugins.get_mut(&name) {
                        p.cdi_error = error;
                    }
                })
            };
            let dir = self.options.cdi_dir.clone();
            (served, Some(tokio::spawn(cdi::maintain(dir, spec.name.clone(), devices.clone(), gate, report))))
        } else {
            (devices.clone(), None)
        };
        let server = match self.serve(spec, &socket, served.clone(), stop.clone(), streams.clone()) {
            Ok(server) => server,
            Err(error) => {
                if let Some(task) = cdi {
                    task.abort();
                }
                return Err(error);
            }
        };
        self.status.send_modify(|s| {
            let cdi_error = s.plugins.get(&spec.name).and_then(|p| p.cdi_error.clone());
            s.plugins.insert(spec.name.clone(), PluginStatus { socket: socket.clone(), registered: false, cdi_error });
        });
        tracing::info!(resource = %spec.name, socket = %socket.display(), "serving");
        Ok(Plugin {
            spec: spec.clone(),
            devices,
            served,
            socket,
            streams,
            stream_retry: STREAM_RETRY,
            stop,
            server,
            registration: None,
            cdi,
        })
    }

    /// Serves `plugin` again on a new socket (the old one was deleted).
    fn restart(&self, plugin: &mut Plugin) -> Result<(), KubeletError> {
        self.unregister(plugin);
        plugin.stop.cancel();
        plugin.server.abort();
        let socket = self.next_socket(&plugin.spec.name);
        let stop = CancellationToken::new();
        plugin.streams = Arc::new(AtomicUsize::new(0));
        plugin.server =
            self.serve(&plugin.spec, &socket, plugin.served.clone(), stop.clone(), plugin.streams.clone())?;
        plugin.stop = stop;
        plugin.socket = socket.clone();
        self.status.send_modify(|s| {
            if let Some(p) = s.plugins.get_mut(&plugin.spec.name) {
                p.socket = socket;
                p.registered = false;
            }
        });
        Ok(())
    }

    fn serve(
        &self,
        spec: &ResourceSpec,
        socket: &Path,
        devices: watch::Receiver<Arc<DeviceList>>,
        stop: CancellationToken,
        streams: Arc<AtomicUsize>,
    ) -> Result<JoinHandle<()>, KubeletError> {
        let listener = UnixListener::bind(socket).map_err(|source| KubeletError::Serve {
            resource: spec.name.clone(),
            socket: socket.to_path_buf(),
            source,
        })?;
        let service = plugin::PluginService {
            resource: spec.name.clone(),
            cdi: spec.cdi,
            devices,
            metrics: self.metrics.clone(),
            attacher: self.options.attacher.clone(),
            streams: plugin::Streams { open: streams, socket: socket.to_path_buf(), ended: self.stream_ended.clone() },
        };
        let resource = spec.name.clone();
        Ok(tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(DevicePluginServer::new(service))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%resource, %error, "device-plugin server stopped");
            }
        }))
    }

    /// (Re)registers `plugin` with the kubelet, retrying with backoff while
    /// the kubelet is there; a registration in flight is replaced.
    fn register(&self, plugin: &mut Plugin) {
        self.unregister(plugin);
        let request = RegisterRequest {
            version: VERSION.to_string(),
            endpoint: plugin.socket.file_name().expect("socket paths have a file name").to_string_lossy().into_owned(),
            resource_name: plugin.spec.name.clone(),
            options: Some(plugin::options()),
        };
        let kubelet = self.kubelet_socket.clone();
        let timeout = self.options.register_timeout;
        let metrics = self.metrics.clone();
        let status = self.status.clone();
        let streams = self.stream_ended.clone();
        let socket = plugin.socket.clone();
        plugin.registration = Some(tokio::spawn(async move {
            let mut backoff = REGISTER_RETRY;
            let mut last_error: Option<String> = None;
            loop {
                let started = std::time::Instant::now();
                match register_once(&kubelet, request.clone(), timeout).await {
                    Ok(()) => {
                        metrics.registration(&request.resource_name, true);
                        tracing::info!(
                            resource = %request.resource_name,
                            endpoint = %request.endpoint,
                            took_ms = started.elapsed().as_secs_f64() * 1e3,
                            "registered with the kubelet"
                        );
                        status.send_modify(|s| {
                            if let Some(p) = s.plugins.get_mut(&request.resource_name) {
                                p.registered = true;
                            }
                        });
                        let _ = streams.send(StreamEvent::Registered(socket));
                        return;
                    }
                    Err(error) => {
                        metrics.registration(&request.resource_name, false);
                        // Once per distinct failure, not once per attempt.
                        let error = error.to_string();
                        if last_error.as_deref() != Some(error.as_str()) {
                            tracing::warn!(
                                resource = %request.resource_name,
                                %error,
                                "registration failed; retrying with backoff (up to {REGISTER_RETRY_MAX:?})"
                            );
                            last_error = Some(error);
                        }
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }));
    }

    fn unregister(&self, plugin: &mut Plugin) {
        if let Some(task) = plugin.registration.take() {
            task.abort();
        }
        self.status.send_modify(|s| {
            if let Some(p) = s.plugins.get_mut(&plugin.spec.name) {
                p.registered = false;
            }
        });
    }

    /// Stops every server: graceful for a moment (a kubelet holding a
    /// ListAndWatch stream keeps a graceful shutdown waiting), then at once.
    /// Sockets are removed; CDI specs stay (they describe devices still there).
    async fn stop_all(&self, plugins: BTreeMap<String, Plugin>) {
        let mut plugins: Vec<Plugin> = plugins.into_values().collect();
        for plugin in &mut plugins {
            self.unregister(plugin);
            plugin.stop.cancel();
        }
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            futures_util::future::join_all(plugins.iter_mut().map(|p| &mut p.server)),
        )
        .await;
        for plugin in plugins {
            plugin.server.abort();
            if let Some(cdi) = plugin.cdi {
                cdi.abort();
            }
            let _ = std::fs::remove_file(&plugin.socket);
            tracing::info!(resource = %plugin.spec.name, "stopped serving");
        }
    }
}

/// Resources to look at again, by when.
type Rechecks = std::collections::BTreeSet<(tokio::time::Instant, PathBuf)>;

/// Sleeps until the earliest recheck is due; forever if there is none.
async fn sleep_until_first(rechecks: &Rechecks) {
    match rechecks.first() {
        Some((at, _)) => tokio::time::sleep_until(*at).await,
        None => std::future::pending().await,
    }
}

fn appeared(kind: &EventKind) -> bool {
    use notify::event::{ModifyKind, RenameMode};
    matches!(kind, EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)))
}

fn vanished(kind: &EventKind) -> bool {
    use notify::event::{ModifyKind, RenameMode};
    matches!(kind, EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(RenameMode::From)))
}

/// Why one `Register` call failed.
#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error("cannot connect to {}: {}", .socket.display(), crate::support::error_chain(.source))]
    Connect { socket: PathBuf, source: tonic::transport::Error },
    #[error("the kubelet refused: {}", .0.message())]
    Refused(tonic::Status),
    #[error("no answer from the kubelet within {0:?}")]
    Timeout(Duration),
}

async fn register_once(kubelet: &Path, request: RegisterRequest, timeout: Duration) -> Result<(), RegisterError> {
    let call = async {
        let channel = devsieve_proto::dial(kubelet)
            .await
            .map_err(|source| RegisterError::Connect { socket: kubelet.to_path_buf(), source })?;
        RegistrationClient::new(channel).register(request).await.map_err(RegisterError::Refused)?;
        Ok(())
    };
    tokio::time::timeout(timeout, call).await.unwrap_or(Err(RegisterError::Timeout(timeout)))
}

/// How long a resource's part of a socket name may be.
const SLUG_MAX: usize = 40;

/// A file-name-safe, bounded form of a resource name: `devsieve.io_printer`.
fn slug(resource: &str) -> String {
    let plain: String = resource
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
        .collect();
    if plain.len() <= SLUG_MAX {
        return plain;
    }
    let digest = sha256_hex_of(resource.as_bytes());
    format!("{}-{}", &plain[..SLUG_MAX - 9], &digest[..8])
}

fn socket_name(slug: &str, tag: u64) -> String {
    format!("devsieve-{slug}-{:08x}.sock", tag as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_are_bounded_and_new_per_serve() {
        assert_eq!(slug("devsieve.io/printer"), "devsieve.io_printer");
        let long = format!("{}.example.com/{}", "a".repeat(200), "b".repeat(63));
        assert_eq!(slug(&long).len(), SLUG_MAX);
        assert_ne!(slug(&long), slug(&long.replace("bbb", "bbc")));
        let (advertiser, _) = Advertiser::new(
            AdvertiserOptions {
                plugin_dir: "/var/lib/kubelet/device-plugins".into(),
                cdi_dir: "/var/run/cdi".into(),
                register_timeout: Duration::from_secs(1),
                attacher: Err("not in this test".into()),
            },
            Arc::new(Metrics::new()),
        );
        let a = advertiser.next_socket("devsieve.io/printer");
        let b = advertiser.next_socket("devsieve.io/printer");
        assert_ne!(a, b);
        assert!(a.as_os_str().len() <= MAX_SOCKET_PATH);
    }
}

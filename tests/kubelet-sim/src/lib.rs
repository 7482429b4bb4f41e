//! A kubelet's device manager, simulated over real Unix sockets, for the
//! integration tests and benchmarks that run the real `devsieve run` against it.
//!
//! [`KubeletSim`] owns `kubelet.sock` in a plugin directory the caller gives it
//! and does there what the kubelet's device manager does
//! (`pkg/kubelet/cm/devicemanager/plugin/v1beta1`):
//!
//! - It serves `Registration`. Inside `Register`, before answering, it checks
//!   the request, dials the plugin back at `<dir>/<endpoint>` and asks for its
//!   options, so a plugin that serves only after registering fails here as it
//!   would against a kubelet (there it deadlocks).
//! - Once it accepts a registration, it opens `ListAndWatch` (as the kubelet
//!   does, just before `Register` answers, so the stream can come first), keeps
//!   the stream and records every device list with the instant it arrived. A
//!   new registration of a resource replaces the old one and drops its stream;
//!   a stream that ends disconnects its plugin.
//! - It starts and restarts as a kubelet does: it drops every connection,
//!   deletes every socket in the directory (the plugins' too), then serves a
//!   fresh `kubelet.sock`.
//!
//! A test can teach it the kubelet's faults ([`Faults`]): refusing the next
//! `Register` calls, dialing back late, and ending a plugin's `ListAndWatch`
//! stream while it keeps running (the kubelet then marks the plugin's devices
//! unhealthy and waits for it to register again).
//!
//! It calls the plugins on a test's behalf (`Allocate`, `GetPreferredAllocation`,
//! `GetDevicePluginOptions`, `PreStartContainer`) and passes the ids on as it
//! gets them. It keeps none of the kubelet's device accounting or checkpoint;
//! the pod-resources API is served apart, as a test sets it
//! ([`PodResourcesSim`]). Waiting is driven by events: everything the simulator
//! holds sits behind one `watch` channel, so a waiter wakes on each change and
//! never polls.
//!
//! Every method must be called inside a Tokio runtime, because serving and
//! dialing spawn tasks.

mod pod_resources;

use std::collections::BTreeMap;
use std::error::Error;
use std::fmt;
use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devsieve_proto::dial;
use devsieve_proto::v1beta1::device_plugin_client::DevicePluginClient;
use devsieve_proto::v1beta1::registration_server::{self, RegistrationServer};
use devsieve_proto::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerPreferredAllocationRequest, Empty, ListAndWatchResponse,
    PreStartContainerRequest, PreferredAllocationRequest, RegisterRequest,
};
pub use devsieve_proto::v1beta1::{AllocateResponse, Device, DevicePluginOptions};
use devsieve_proto::v1beta1::{KUBELET_SOCKET, VERSION};
use tokio::net::UnixListener;
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

pub use pod_resources::PodResourcesSim;

/// How long `Register` waits to reach the plugin and get its options. The
/// kubelet allows 10 s for the dial alone; a failing test should not wait that long.
pub const DIAL_BACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call made for a test waits for the plugin's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One accepted `Register`.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    pub resource: String,
    /// The plugin's socket: a file name in the plugin directory.
    pub endpoint: String,
    /// The plugin's answer to `GetDevicePluginOptions` during `Register`. The
    /// kubelet uses these options and ignores the ones in the request.
    pub options: DevicePluginOptions,
    /// When the registration was accepted: after the dial-back, before `Register` answered.
    pub registered_at: Instant,
    /// Counts from 1 for the resource's first accepted registration, across
    /// restarts, so a test can wait for the next one.
    pub nth: u64,
}

/// One `ListAndWatch` response, as received.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceList {
    pub received_at: Instant,
    pub devices: Vec<Device>,
}

/// A kubelet device manager serving one plugin directory. Dropping it stops it.
pub struct KubeletSim {
    state: Arc<watch::Sender<State>>,
}

/// Everything the simulator has seen and holds, behind one lock, so a waiter
/// reads a consistent view.
#[derive(Default)]
struct State {
    /// The directory the kubelet last started in, kept for `restart`.
    dir: Option<PathBuf>,
    /// Set while the kubelet runs. `None` means the kubelet is absent.
    running: Option<Running>,
    /// Incremented on every start. A `Register` that was still pending when
    /// its kubelet stopped is refused, not recorded.
    starts: u64,
    /// Every accepted registration, oldest first.
    history: Vec<Registration>,
    /// The plugins the running kubelet knows, by resource.
    plugins: BTreeMap<String, Plugin>,
    faults: Faults,
}

/// Faults the kubelet injects until a test clears them.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Refuse this many more `Register` calls (with the kubelet's code Unknown).
    pub refuse_registrations: u32,
    /// Wait this long inside `Register` before dialing the plugin back.
    pub dial_back_delay: Duration,
    /// Wait this long after accepting a registration (its stream is open)
    /// before `Register` answers.
    pub answer_delay: Duration,
}

/// A running Registration server. Dropping it stops the server.
struct Running {
    start: u64,
    _shutdown: oneshot::Sender<()>,
}

/// A registered plugin, as the kubelet knows it.
struct Plugin {
    registration: Registration,
    /// The device lists received since `registration`, oldest first.
    updates: Vec<DeviceList>,
    /// Why `ListAndWatch` ended, once it has. The kubelet then disconnects the
    /// plugin, so `client` is `None` from then on.
    ended: Option<String>,
    client: Option<DevicePluginClient<Channel>>,
    /// Aborts the task that reads `ListAndWatch` when the plugin is replaced
    /// or the kubelet stops.
    _stream: AbortOnDrop,
}

struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn none() -> Self {
        AbortOnDrop(None)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

impl KubeletSim {
    /// A kubelet that has not started yet: see [`start_in`](Self::start_in).
    pub fn absent() -> Self {
        Self { state: Arc::new(watch::Sender::new(State::default())) }
    }

    /// A kubelet started in `dir`, as [`start_in`](Self::start_in) starts it.
    pub fn start(dir: impl AsRef<Path>) -> io::Result<Self> {
        let kubelet = Self::absent();
        kubelet.start_in(dir)?;
        Ok(kubelet)
    }

    /// Starts the kubelet in `dir`, stopping it first if it runs. Like a
    /// starting kubelet it creates the directory, deletes every socket in it
    /// and serves `Registration` on a new `kubelet.sock`. Returns the instant
    /// `kubelet.sock` was created, so a benchmark can measure re-registration from there.
    pub fn start_in(&self, dir: impl AsRef<Path>) -> io::Result<Instant> {
        let dir = dir.as_ref().to_path_buf();
        self.stop();
        fs::create_dir_all(&dir)?;
        delete_sockets(&dir)?;
        let listener = UnixListener::bind(dir.join(KUBELET_SOCKET))?;
        let serving_since = Instant::now();

        let (shutdown, stopped) = oneshot::channel();
        let mut start = 0;
        self.state.send_modify(|state| {
            state.starts += 1;
            start = state.starts;
            state.dir = Some(dir.clone());
            state.running = Some(Running { start, _shutdown: shutdown });
        });
        let registration = KubeletRegistration { state: Arc::clone(&self.state), start, dir };
        let server = Server::builder()
            .add_service(RegistrationServer::new(registration))
            // Dropping `Running` drops the sender and so ends the server.
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stopped.await;
            });
        tokio::spawn(async move {
            if let Err(error) = server.await {
                eprintln!("kubelet-sim: the Registration server failed: {}", error_chain(&error));
            }
        });
        Ok(serving_since)
    }

    /// Restarts the kubelet in the directory it last started in. The
    /// restart is [`stop`](Self::stop) followed by [`start_in`](Self::start_in).
    pub fn restart(&self) -> io::Result<Instant> {
        let dir = self.state.borrow().dir.clone();
        let dir = dir.ok_or_else(|| io::Error::other("cannot restart a kubelet simulator that never started"))?;
        self.start_in(dir)
    }

    /// Makes the kubelet absent. Every plugin connection and stream closes, the
    /// Registration server stops accepting connections and `kubelet.sock` is
    /// removed. Does nothing if the kubelet is not running.
    pub fn stop(&self) {
        let mut stopped = None;
        self.state.send_if_modified(|state| {
            stopped = state.running.take().map(|running| (running, std::mem::take(&mut state.plugins)));
            stopped.is_some()
        });
        let Some((running, plugins)) = stopped else { return };
        // Dropped outside the lock: the server, the streams and the clients close here.
        drop((running, plugins));
        if let Some(dir) = &self.state.borrow().dir {
            // Nothing is lost if someone else already removed the file, for
            // example when a test's temporary directory was dropped first.
            let _ = fs::remove_file(dir.join(KUBELET_SOCKET));
        }
    }

    /// `<dir>/kubelet.sock` while the kubelet runs.
    pub fn kubelet_socket(&self) -> Option<PathBuf> {
        let state = self.state.borrow();
        state.running.as_ref().and(state.dir.as_ref()).map(|dir| dir.join(KUBELET_SOCKET))
    }

    /// Sets the faults the kubelet injects from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.state.send_modify(|state| state.faults = faults);
    }

    /// Ends `resource`'s `ListAndWatch` stream from the kubelet's side, as a
    /// kubelet does whose client failed: the stream and connection close, the
    /// plugin is disconnected, and nothing more is recorded until it
    /// registers again. Returns false if `resource` is not registered.
    pub fn end_stream(&self, resource: &str) -> bool {
        let mut aborted = None;
        let ended = self.state.send_if_modified(|state| match state.plugins.get_mut(resource) {
            Some(plugin) if plugin.client.is_some() => {
                aborted = Some((plugin.client.take(), std::mem::replace(&mut plugin._stream, AbortOnDrop::none())));
                plugin.ended = Some("the kubelet ended ListAndWatch (a test's fault)".into());
                true
            }
            _ => false,
        });
        drop(aborted);
        ended
    }

    /// The running kubelet's registration of `resource`.
    pub fn registration(&self, resource: &str) -> Option<Registration> {
        self.state.borrow().plugins.get(resource).map(|plugin| plugin.registration.clone())
    }

    /// Every registration accepted since the simulator was created, oldest first.
    pub fn registrations(&self) -> Vec<Registration> {
        self.state.borrow().history.clone()
    }

    /// The device list most recently received from `resource`'s current registration.
    pub fn latest(&self, resource: &str) -> Option<DeviceList> {
        self.state.borrow().plugins.get(resource)?.updates.last().cloned()
    }

    /// Every device list received from `resource`'s current registration, oldest first.
    pub fn updates(&self, resource: &str) -> Vec<DeviceList> {
        let state = self.state.borrow();
        state.plugins.get(resource).map(|plugin| plugin.updates.clone()).unwrap_or_default()
    }

    /// Waits until the running kubelet has a registration of `resource`. After a
    /// restart, that is a new registration.
    pub async fn wait_registered(&self, resource: &str, timeout: Duration) -> Result<Registration, Timeout> {
        self.wait(
            timeout,
            format!("{resource} to be registered"),
            |state| state.plugins.get(resource).map(|plugin| plugin.registration.clone()),
            |state| state.describe_registrations(resource),
        )
        .await
    }

    /// Waits for the `nth` accepted registration of `resource` (counting from
    /// 1, across restarts), whether or not it is still current.
    pub async fn wait_registration(
        &self,
        resource: &str,
        nth: u64,
        timeout: Duration,
    ) -> Result<Registration, Timeout> {
        assert!(nth >= 1, "registrations are counted from 1");
        self.wait(
            timeout,
            format!("registration #{nth} of {resource}"),
            |state| state.history.iter().find(|r| r.resource == resource && r.nth == nth).cloned(),
            |state| state.describe_registrations(resource),
        )
        .await
    }

    /// Waits for a device list from `resource`'s current registration that
    /// satisfies `predicate`. The list can be the latest one when this is
    /// called or any list received later. Every list is checked in order, so a
    /// state that lasts a single update is not missed.
    pub async fn wait_devices(
        &self,
        resource: &str,
        timeout: Duration,
        mut predicate: impl FnMut(&[Device]) -> bool,
    ) -> Result<DeviceList, Timeout> {
        // The next list to check: (registration number, index in its updates).
        let mut next: Option<(u64, usize)> = None;
        let found = move |state: &State| {
            let plugin = state.plugins.get(resource);
            // At the first look, start from the latest list. A registration that
            // was not there yet (number 0) is checked from its first list.
            let (nth, index) = *next.get_or_insert_with(|| {
                plugin.map_or((0, 0), |p| (p.registration.nth, p.updates.len().saturating_sub(1)))
            });
            let plugin = plugin?;
            let index = if plugin.registration.nth == nth { index } else { 0 };
            next = Some((plugin.registration.nth, plugin.updates.len()));
            plugin.updates[index..].iter().find(|list| predicate(&list.devices)).cloned()
        };
        self.wait(timeout, format!("a device list of {resource} that satisfies the predicate"), found, |state| {
            state.describe_devices(resource)
        })
        .await
    }

    /// Calls `Allocate` with one container request per element of `container_requests`.
    pub async fn allocate(
        &self,
        resource: &str,
        container_requests: Vec<Vec<String>>,
    ) -> Result<AllocateResponse, Status> {
        let container_requests =
            container_requests.into_iter().map(|devices_ids| ContainerAllocateRequest { devices_ids }).collect();
        let mut client = self.client(resource)?;
        call("Allocate", resource, client.allocate(AllocateRequest { container_requests })).await
    }

    /// Calls `GetPreferredAllocation` for one container and returns the
    /// plugin's preferred ids. It calls even if the plugin's options do not
    /// offer preferred allocation, which the kubelet never does, so that a
    /// test can check how the plugin answers.
    pub async fn preferred_allocation(
        &self,
        resource: &str,
        available: Vec<String>,
        must_include: Vec<String>,
        size: i32,
    ) -> Result<Vec<String>, Status> {
        let request = PreferredAllocationRequest {
            container_requests: vec![ContainerPreferredAllocationRequest {
                available_device_i_ds: available,
                must_include_device_i_ds: must_include,
                allocation_size: size,
            }],
        };
        let mut client = self.client(resource)?;
        let mut response = call("GetPreferredAllocation", resource, client.get_preferred_allocation(request)).await?;
        match response.container_responses.len() {
            1 => Ok(response.container_responses.swap_remove(0).device_i_ds),
            n => Err(Status::internal(format!("{resource}'s plugin answered {n} container responses to 1 request"))),
        }
    }

    /// Calls `GetDevicePluginOptions` again. [`Registration::options`] holds
    /// the options the plugin gave when it registered.
    pub async fn options(&self, resource: &str) -> Result<DevicePluginOptions, Status> {
        let mut client = self.client(resource)?;
        call("GetDevicePluginOptions", resource, client.get_device_plugin_options(Empty {})).await
    }

    /// Calls `PreStartContainer` for one container's devices. It calls even if
    /// the plugin did not ask for it, which the kubelet never does.
    pub async fn pre_start_container(&self, resource: &str, devices_ids: Vec<String>) -> Result<(), Status> {
        let mut client = self.client(resource)?;
        call("PreStartContainer", resource, client.pre_start_container(PreStartContainerRequest { devices_ids }))
            .await
            .map(drop)
    }

    fn client(&self, resource: &str) -> Result<DevicePluginClient<Channel>, Status> {
        let state = self.state.borrow();
        let plugin = state.plugins.get(resource).ok_or_else(|| {
            Status::failed_precondition(format!("no plugin is registered for {resource}; {}", state.describe_plugins()))
        })?;
        plugin.client.clone().ok_or_else(|| {
            let ended = plugin.ended.as_deref().unwrap_or("ListAndWatch ended");
            Status::unavailable(format!("{resource}'s plugin is disconnected: {ended}"))
        })
    }

    /// Waits until `found` finds something in the state. Runs `found` on the
    /// current state, then again after each change.
    async fn wait<T>(
        &self,
        timeout: Duration,
        awaited: String,
        mut found: impl FnMut(&State) -> Option<T>,
        last_seen: impl FnOnce(&State) -> String,
    ) -> Result<T, Timeout> {
        let mut changes = self.state.subscribe();
        let mut result = None;
        let _ = tokio::time::timeout(
            timeout,
            changes.wait_for(|state| {
                result = found(state);
                result.is_some()
            }),
        )
        .await;
        result.ok_or_else(|| Timeout { awaited, waited: timeout, last_seen: last_seen(&self.state.borrow()) })
    }
}

impl Drop for KubeletSim {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A wait that ran out of time, with what was awaited and what the simulator
/// saw last.
pub struct Timeout {
    awaited: String,
    waited: Duration,
    last_seen: String,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "waited {:?} for {}; last seen: {}", self.waited, self.awaited, self.last_seen)
    }
}

// Debug prints the same text as Display, because a test's `.unwrap()` prints
// Debug and the reader needs the message.
impl fmt::Debug for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error for Timeout {}

impl State {
    fn is_running(&self, start: u64) -> bool {
        self.running.as_ref().is_some_and(|running| running.start == start)
    }

    fn describe_plugins(&self) -> String {
        if self.running.is_none() {
            return "the kubelet is not running".to_string();
        }
        if self.plugins.is_empty() {
            return "no plugin is registered".to_string();
        }
        let plugins: Vec<String> = self
            .plugins
            .values()
            .map(|p| format!("{} (#{} at {})", p.registration.resource, p.registration.nth, p.registration.endpoint))
            .collect();
        format!("registered: {}", plugins.join(", "))
    }

    fn describe_registrations(&self, resource: &str) -> String {
        let count = self.history.iter().filter(|r| r.resource == resource).count();
        format!("{}; {resource} was accepted {count} time(s) in all", self.describe_plugins())
    }

    fn describe_devices(&self, resource: &str) -> String {
        let Some(plugin) = self.plugins.get(resource) else {
            return format!("{resource} is not registered ({})", self.describe_plugins());
        };
        let mut seen = format!("registration #{} of {resource}, ", plugin.registration.nth);
        match plugin.updates.last() {
            None => seen.push_str("no device list yet"),
            Some(list) => {
                let devices: Vec<String> = list.devices.iter().map(|d| format!("{} {}", d.id, d.health)).collect();
                seen.push_str(&format!("{} list(s), the latest [{}]", plugin.updates.len(), devices.join(", ")));
            }
        }
        if let Some(ended) = &plugin.ended {
            seen.push_str(&format!("; {ended}"));
        }
        seen
    }
}

/// The `Registration` service of one kubelet start.
struct KubeletRegistration {
    state: Arc<watch::Sender<State>>,
    start: u64,
    dir: PathBuf,
}

#[tonic::async_trait]
impl registration_server::Registration for KubeletRegistration {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        // The kubelet answers with plain Go errors, which reach the plugin as
        // code Unknown. The simulator does the same, so that a plugin cannot come
        // to depend on codes the kubelet never sends.
        check_register_request(&request, &self.dir).map_err(Status::unknown)?;
        let mut refused = false;
        self.state.send_if_modified(|state| {
            refused = state.faults.refuse_registrations > 0;
            state.faults.refuse_registrations = state.faults.refuse_registrations.saturating_sub(1);
            refused
        });
        if refused {
            return Err(Status::unknown("kubelet-sim: this registration is refused (a test's fault)"));
        }
        let delay = self.state.borrow().faults.dial_back_delay;
        tokio::time::sleep(delay).await;
        let socket = self.dir.join(&request.endpoint);
        let (client, options) = tokio::time::timeout(DIAL_BACK_TIMEOUT, dial_back(&socket)).await.map_err(|_| {
            Status::unknown(format!(
                "device plugin at {} did not answer GetDevicePluginOptions within {DIAL_BACK_TIMEOUT:?}",
                socket.display()
            ))
        })??;
        self.accept(request, client, options)?;
        let delay = self.state.borrow().faults.answer_delay;
        tokio::time::sleep(delay).await;
        Ok(Response::new(Empty {}))
    }
}

impl KubeletRegistration {
    /// Records the registration and starts reading the plugin's
    /// `ListAndWatch`. This replaces an earlier registration of the same resource.
    fn accept(
        &self,
        request: RegisterRequest,
        client: DevicePluginClient<Channel>,
        options: DevicePluginOptions,
    ) -> Result<(), Status> {
        let resource = request.resource_name;
        let mut replaced = None;
        let accepted = self.state.send_if_modified(|state| {
            if !state.is_running(self.start) {
                return false;
            }
            let earlier = state.history.iter().filter(|r| r.resource == resource).count() as u64;
            let registration = Registration {
                resource: resource.clone(),
                endpoint: request.endpoint,
                options,
                registered_at: Instant::now(),
                nth: earlier + 1,
            };
            // Spawned under the lock so that the task and the registration it
            // records for are installed together.
            let stream = tokio::spawn(record_device_lists(
                Arc::clone(&self.state),
                resource.clone(),
                registration.nth,
                client.clone(),
            ));
            state.history.push(registration.clone());
            let plugin = Plugin {
                registration,
                updates: Vec::new(),
                ended: None,
                client: Some(client),
                _stream: AbortOnDrop(Some(stream.abort_handle())),
            };
            replaced = state.plugins.insert(resource.clone(), plugin);
            true
        });
        // The replaced plugin's stream and connection close here, outside the lock.
        drop(replaced);
        if accepted {
            Ok(())
        } else {
            Err(Status::unavailable("the kubelet stopped while this registration was pending"))
        }
    }
}

/// Refuses what the kubelet's `Register` refuses, in the kubelet's words.
///
/// It also refuses an endpoint that is not the name of a socket file in the
/// plugin directory. The kubelet would join any path to the directory, but a
/// socket elsewhere survives the kubelet's restart cleanup, and devsieve must
/// not depend on that.
fn check_register_request(request: &RegisterRequest, dir: &Path) -> Result<(), String> {
    if request.version != VERSION {
        return Err(format!(
            "requested API version {:?} is not supported by kubelet. Supported version is [{VERSION:?}]",
            request.version
        ));
    }
    if !is_extended_resource_name(&request.resource_name) {
        return Err(format!("the ResourceName {:?} is invalid", request.resource_name));
    }
    let endpoint = &request.endpoint;
    if Path::new(endpoint).file_name() != Some(endpoint.as_ref()) {
        return Err(format!("endpoint {endpoint:?} is not a file name in the plugin directory {}", dir.display()));
    }
    let socket = dir.join(endpoint);
    match fs::metadata(&socket) {
        Ok(metadata) if metadata.file_type().is_socket() => Ok(()),
        Ok(_) => Err(format!("endpoint {endpoint:?}: {} is not a socket", socket.display())),
        Err(error) => Err(format!("endpoint {endpoint:?}: {}: {error}", socket.display())),
    }
}

/// `IsExtendedResourceName` from Kubernetes' v1 helpers. The name must be
/// `domain/name` outside `kubernetes.io/`, must not start with `requests.`,
/// and must stay a qualified name as the quota resource `requests.<name>`.
fn is_extended_resource_name(name: &str) -> bool {
    name.contains('/')
        && !name.contains("kubernetes.io/")
        && !name.starts_with("requests.")
        && is_qualified_name(&format!("requests.{name}"))
}

/// apimachinery's `IsQualifiedName`: an optional DNS-1123 subdomain and `/`,
/// then 1 to 63 ASCII letters, digits, `-`, `_` or `.`, beginning and ending
/// with a letter or digit.
fn is_qualified_name(value: &str) -> bool {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    let bytes = name.as_bytes();
    prefix.is_none_or(is_dns1123_subdomain)
        && (1..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// apimachinery's `IsDNS1123Subdomain`: at most 253 characters, made of
/// dot-separated labels of lowercase letters, digits and `-` that begin and
/// end with a letter or digit.
fn is_dns1123_subdomain(value: &str) -> bool {
    let is_label = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
    };
    value.len() <= 253 && value.split('.').all(is_label)
}

/// Does what a starting kubelet does to its plugin directory: removes every
/// socket in it (its own stale `kubelet.sock` and every plugin's) and leaves
/// other files, such as its checkpoint, in place.
fn delete_sockets(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        // Symlinks are followed, as the kubelet's os.Stat follows them, so a
        // link to a socket is removed too.
        let is_socket = fs::metadata(&path).is_ok_and(|metadata| metadata.file_type().is_socket());
        if is_socket
            && let Err(error) = fs::remove_file(&path)
            && error.kind() != io::ErrorKind::NotFound
        {
            return Err(io::Error::new(error.kind(), format!("deleting {}: {error}", path.display())));
        }
    }
    Ok(())
}

/// Connects to the plugin and asks for its options, as the kubelet does
/// before `Register` answers.
async fn dial_back(socket: &Path) -> Result<(DevicePluginClient<Channel>, DevicePluginOptions), Status> {
    let channel = dial(socket).await.map_err(|error| {
        Status::unknown(format!("failed to dial device plugin at {}: {}", socket.display(), error_chain(&error)))
    })?;
    let mut client = DevicePluginClient::new(channel);
    let options = client
        .get_device_plugin_options(Empty {})
        .await
        .map_err(|status| Status::unknown(format!("failed to get device plugin options: {}", describe(&status))))?;
    Ok((client, options.into_inner()))
}

/// Reads `resource`'s `ListAndWatch` for registration `nth` and records every
/// list until the stream ends. Then it disconnects the plugin, as the kubelet
/// does. Records nothing once the registration is no longer current.
async fn record_device_lists(
    state: Arc<watch::Sender<State>>,
    resource: String,
    nth: u64,
    mut client: DevicePluginClient<Channel>,
) {
    let ended = match client.list_and_watch(Empty {}).await {
        Err(status) => format!("ListAndWatch failed: {}", describe(&status)),
        Ok(response) => {
            let mut lists = response.into_inner();
            loop {
                match lists.message().await {
                    Ok(Some(ListAndWatchResponse { devices })) => {
                        let list = DeviceList { received_at: Instant::now(), devices };
                        update_plugin(&state, &resource, nth, |plugin| plugin.updates.push(list));
                    }
                    Ok(None) => break "the plugin ended ListAndWatch".to_string(),
                    Err(status) => break format!("ListAndWatch failed: {}", describe(&status)),
                }
            }
        }
    };
    update_plugin(&state, &resource, nth, |plugin| {
        plugin.ended = Some(ended);
        plugin.client = None;
    });
}

/// Applies `update` to `resource`'s plugin if registration `nth` is still current.
fn update_plugin(state: &watch::Sender<State>, resource: &str, nth: u64, update: impl FnOnce(&mut Plugin)) {
    state.send_if_modified(|state| match state.plugins.get_mut(resource) {
        Some(plugin) if plugin.registration.nth == nth => {
            update(plugin);
            true
        }
        _ => false,
    });
}

/// Calls the plugin for a test and gives up after [`CALL_TIMEOUT`].
async fn call<T>(
    method: &str,
    resource: &str,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, Status> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(answer) => answer.map(Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "{resource}'s plugin did not answer {method} within {CALL_TIMEOUT:?}"
        ))),
    }
}

fn describe(status: &Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

/// `error` followed by its sources. tonic's transport errors say only
/// "transport error" at the top level.
fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use devsieve_proto::v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
    use devsieve_proto::v1beta1::registration_client::RegistrationClient;
    use devsieve_proto::v1beta1::{
        ContainerAllocateResponse, ContainerPreferredAllocationResponse, HEALTHY, PreStartContainerResponse,
        PreferredAllocationResponse, UNHEALTHY,
    };
    use tokio_stream::wrappers::WatchStream;
    use tokio_stream::{Stream, StreamExt};

    use super::*;

    const RESOURCE: &str = "example.com/widget";
    /// Generous: a wait only takes this long when the test fails.
    const WAIT: Duration = Duration::from_secs(5);

    /// A device plugin that sends the current value of `devices` on every
    /// `ListAndWatch` stream, then each new value, and counts its open streams.
    #[derive(Clone)]
    struct FakePlugin {
        devices: watch::Receiver<Vec<Device>>,
        open_streams: Arc<watch::Sender<usize>>,
    }

    /// Counts one open stream for as long as it lives.
    struct OpenStream(Arc<watch::Sender<usize>>);

    impl Drop for OpenStream {
        fn drop(&mut self) {
            self.0.send_modify(|open| *open -= 1);
        }
    }

    #[tonic::async_trait]
    impl DevicePlugin for FakePlugin {
        type ListAndWatchStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

        async fn get_device_plugin_options(&self, _: Request<Empty>) -> Result<Response<DevicePluginOptions>, Status> {
            Ok(Response::new(DevicePluginOptions {
                pre_start_required: false,
                get_preferred_allocation_available: true,
            }))
        }

        async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<Self::ListAndWatchStream>, Status> {
            self.open_streams.send_modify(|open| *open += 1);
            let open = OpenStream(Arc::clone(&self.open_streams));
            let lists = WatchStream::new(self.devices.clone()).map(move |devices| {
                let _open = &open;
                Ok(ListAndWatchResponse { devices })
            });
            Ok(Response::new(Box::pin(lists)))
        }

        async fn get_preferred_allocation(
            &self,
            request: Request<PreferredAllocationRequest>,
        ) -> Result<Response<PreferredAllocationResponse>, Status> {
            let container_responses = request
                .into_inner()
                .container_requests
                .into_iter()
                .map(|c| {
                    let others: Vec<String> = c
                        .available_device_i_ds
                        .into_iter()
                        .filter(|id| !c.must_include_device_i_ds.contains(id))
                        .collect();
                    let mut device_i_ds = c.must_include_device_i_ds;
                    device_i_ds.extend(others);
                    device_i_ds.truncate(c.allocation_size as usize);
                    ContainerPreferredAllocationResponse { device_i_ds }
                })
                .collect();
            Ok(Response::new(PreferredAllocationResponse { container_responses }))
        }

        async fn allocate(&self, request: Request<AllocateRequest>) -> Result<Response<AllocateResponse>, Status> {
            let container_responses = request
                .into_inner()
                .container_requests
                .into_iter()
                .map(|c| ContainerAllocateResponse {
                    envs: [("WIDGETS".to_string(), c.devices_ids.join(","))].into(),
                    ..Default::default()
                })
                .collect();
            Ok(Response::new(AllocateResponse { container_responses }))
        }

        async fn pre_start_container(
            &self,
            _: Request<PreStartContainerRequest>,
        ) -> Result<Response<PreStartContainerResponse>, Status> {
            Ok(Response::new(PreStartContainerResponse {}))
        }
    }

    fn device(id: &str, health: &str) -> Device {
        Device { id: id.to_string(), health: health.to_string(), topology: None }
    }

    /// A fake plugin, the sender of its device list and a receiver of its
    /// open stream count.
    fn fake_plugin(devices: Vec<Device>) -> (FakePlugin, watch::Sender<Vec<Device>>, watch::Receiver<usize>) {
        let (devices, receiver) = watch::channel(devices);
        let open_streams = Arc::new(watch::Sender::new(0));
        let open = open_streams.subscribe();
        (FakePlugin { devices: receiver, open_streams }, devices, open)
    }

    /// Serves `plugin` on `<dir>/<endpoint>` until the test's runtime ends.
    fn serve(plugin: FakePlugin, dir: &Path, endpoint: &str) {
        let listener = UnixListener::bind(dir.join(endpoint)).unwrap();
        let server = Server::builder()
            .add_service(DevicePluginServer::new(plugin))
            .serve_with_incoming(UnixListenerStream::new(listener));
        tokio::spawn(server);
    }

    /// Registers with the kubelet in `dir` as a plugin does.
    async fn register(dir: &Path, version: &str, resource: &str, endpoint: &str) -> Result<(), Status> {
        let channel = dial(&dir.join(KUBELET_SOCKET)).await.map_err(|e| Status::unavailable(error_chain(&e)))?;
        let request = RegisterRequest {
            version: version.to_string(),
            endpoint: endpoint.to_string(),
            resource_name: resource.to_string(),
            options: None,
        };
        RegistrationClient::new(channel).register(request).await.map(drop)
    }

    async fn wait_streams_closed(mut open_streams: watch::Receiver<usize>) {
        let closed = tokio::time::timeout(WAIT, open_streams.wait_for(|open| *open == 0)).await.is_ok();
        assert!(closed, "the plugin still has {} ListAndWatch stream(s) open", *open_streams.borrow());
    }

    #[tokio::test]
    async fn register_dials_back_before_answering_and_refuses_what_the_kubelet_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let kubelet = KubeletSim::start(dir.path()).unwrap();
        let (plugin, _devices, _) = fake_plugin(vec![device("w1", HEALTHY)]);
        serve(plugin, dir.path(), "widget.sock");
        // A socket file that nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(dir.path().join("dead.sock")).unwrap());

        let refused = [
            ("v1alpha1", RESOURCE, "widget.sock", "API version \"v1alpha1\" is not supported"),
            (VERSION, "widget", "widget.sock", "ResourceName \"widget\" is invalid"),
            (VERSION, "kubernetes.io/widget", "widget.sock", "is invalid"),
            (VERSION, "Example.com/widget", "widget.sock", "is invalid"),
            (VERSION, RESOURCE, "../widget.sock", "not a file name"),
            (VERSION, RESOURCE, "missing.sock", "No such file"),
            (VERSION, RESOURCE, "dead.sock", "failed to dial"),
        ];
        for (version, resource, endpoint, why) in refused {
            let refusal = register(dir.path(), version, resource, endpoint).await.expect_err(endpoint);
            assert!(refusal.message().contains(why), "{version} {resource} {endpoint}: {refusal:?}");
        }
        assert_eq!(kubelet.registrations(), []);

        register(dir.path(), VERSION, RESOURCE, "widget.sock").await.unwrap();
        // Recorded before Register answered, with the options the dial-back got
        // (the request carried none).
        let registration = kubelet.registration(RESOURCE).expect("registered when Register answered");
        assert_eq!((registration.endpoint.as_str(), registration.nth), ("widget.sock", 1));
        assert!(registration.options.get_preferred_allocation_available);

        let allocated = kubelet.allocate(RESOURCE, vec![vec!["w1".into()]]).await.unwrap();
        assert_eq!(allocated.container_responses[0].envs["WIDGETS"], "w1");
        let preferred = kubelet.preferred_allocation(RESOURCE, vec!["w1".into(), "w2".into()], vec!["w2".into()], 1);
        assert_eq!(preferred.await.unwrap(), ["w2"]);
        let unknown = kubelet.allocate("example.com/other", vec![vec!["w1".into()]]).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::FailedPrecondition, "{unknown:?}");
    }

    #[tokio::test]
    async fn every_device_list_is_recorded_and_a_new_registration_replaces_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let kubelet = KubeletSim::start(dir.path()).unwrap();
        let (plugin, devices, first_streams) = fake_plugin(vec![device("w1", HEALTHY)]);
        serve(plugin, dir.path(), "widget-1.sock");
        register(dir.path(), VERSION, RESOURCE, "widget-1.sock").await.unwrap();

        kubelet.wait_devices(RESOURCE, WAIT, |d| d.len() == 1).await.unwrap();
        let second = vec![device("w1", UNHEALTHY), device("w2", HEALTHY)];
        devices.send(second.clone()).unwrap();
        let latest = kubelet.wait_devices(RESOURCE, WAIT, |d| d.len() == 2).await.unwrap();
        assert_eq!(latest.devices, second);
        let updates = kubelet.updates(RESOURCE);
        let lists: Vec<_> = updates.iter().map(|u| u.devices.clone()).collect();
        assert_eq!(lists, [vec![device("w1", HEALTHY)], second]);
        assert!(updates[0].received_at <= updates[1].received_at);
        assert_eq!(kubelet.latest(RESOURCE), Some(latest));

        let (plugin, _devices, _) = fake_plugin(vec![device("w3", HEALTHY)]);
        serve(plugin, dir.path(), "widget-2.sock");
        register(dir.path(), VERSION, RESOURCE, "widget-2.sock").await.unwrap();
        let registration = kubelet.wait_registration(RESOURCE, 2, WAIT).await.unwrap();
        assert_eq!(registration.endpoint, "widget-2.sock");
        let list = kubelet.wait_devices(RESOURCE, WAIT, |d| d.iter().any(|d| d.id == "w3")).await.unwrap();
        assert_eq!(kubelet.updates(RESOURCE), [list], "only the new registration's lists");
        wait_streams_closed(first_streams).await;

        let timeout = kubelet.wait_devices(RESOURCE, Duration::from_millis(20), |d| d.is_empty()).await.unwrap_err();
        let message = timeout.to_string();
        assert!(
            message.contains("registration #2 of example.com/widget") && message.contains("w3 Healthy"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn restart_deletes_every_socket_and_sees_the_plugin_register_again() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoint = dir.path().join("kubelet_internal_checkpoint");
        fs::write(&checkpoint, "{}").unwrap();
        let kubelet = KubeletSim::start(dir.path()).unwrap();
        let (plugin, _devices, open_streams) = fake_plugin(vec![device("w1", HEALTHY)]);
        serve(plugin.clone(), dir.path(), "widget-1.sock");
        register(dir.path(), VERSION, RESOURCE, "widget-1.sock").await.unwrap();
        kubelet.wait_devices(RESOURCE, WAIT, |d| !d.is_empty()).await.unwrap();

        let restarted = kubelet.restart().unwrap();
        let mut left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        left.sort();
        assert_eq!(left, ["kubelet.sock", "kubelet_internal_checkpoint"], "the plugin's socket is deleted");
        assert_eq!(kubelet.registration(RESOURCE), None, "a restarted kubelet knows no plugin");
        wait_streams_closed(open_streams.clone()).await;

        serve(plugin, dir.path(), "widget-2.sock");
        register(dir.path(), VERSION, RESOURCE, "widget-2.sock").await.unwrap();
        let registration = kubelet.wait_registered(RESOURCE, WAIT).await.unwrap();
        assert_eq!((registration.endpoint.as_str(), registration.nth), ("widget-2.sock", 2));
        assert!(registration.registered_at >= restarted);
        kubelet.wait_devices(RESOURCE, WAIT, |d| !d.is_empty()).await.unwrap();

        kubelet.stop();
        assert!(!dir.path().join(KUBELET_SOCKET).exists() && kubelet.kubelet_socket().is_none());
        wait_streams_closed(open_streams).await;
        kubelet.start_in(dir.path()).unwrap();
        assert!(!dir.path().join("widget-2.sock").exists(), "a starting kubelet deletes the plugins' sockets");
        assert_eq!(kubelet.kubelet_socket(), Some(dir.path().join(KUBELET_SOCKET)));
        assert_eq!(kubelet.registrations().len(), 2);
    }
}

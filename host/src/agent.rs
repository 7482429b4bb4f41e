//! `devsieve run`: the node agent. Wires the stages — sources and the
//! evaluation (a thread), inventory, kubelet advertiser and HTTP endpoint
//! (tasks) — and
//! runs them until SIGTERM or SIGINT, then stops serving, removes its
//! sockets and returns.
//!
//! Everything that can be wrong with the input is checked before anything
//! is served: the config (with every handler loaded and its config accepted),
//! the plugin directory, the listen address. A bad start leaves nothing
//! behind.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::attach::release::{self, KubeletPodResources, ReleaseOptions};
use crate::attach::state::StateFile;
use crate::attach::vhci::SysfsVhci;
use crate::attach::{self, AttachError, Attacher, AttacherParts};
use crate::config::Config;
use crate::evaluation::{self, Coalescing, Evaluator, Input, StageParts};
use crate::handler::Runtime;
use crate::inventory::Inventory;
use crate::kubelet::{Advertiser, AdvertiserOptions, KubeletError};
use crate::loader::Loader;
use crate::metrics::Metrics;
use crate::ops::{self, Ops};
use crate::source::Sources;
use crate::source::monitor::{self, MonitorReport};
use crate::source::usbip::{self, RemoteDevices};

#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub config_file: PathBuf,
    pub plugin_dir: PathBuf,
    pub cdi_dir: PathBuf,
    pub listen: SocketAddr,
    /// How long a device that went away stays listed as unhealthy.
    pub grace: Duration,
    pub coalescing: Coalescing,
    pub register_timeout: Duration,
    /// Where sysfs is (vhci_hcd for USB/IP attach).
    pub sysfs_root: PathBuf,
    /// Where the agent keeps what must survive a restart (USB/IP attachments).
    pub state_dir: PathBuf,
    /// Bounds each step of a USB/IP attach (import, attach, the device's nodes).
    pub attach_timeout: Duration,
    /// The kubelet's pod-resources API: which containers hold attached devices.
    pub pod_resources_socket: PathBuf,
    /// How long an attached device no container holds stays attached.
    pub release_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{file}: {count} resource(s) cannot be prepared:\n  {errors}")]
    Prepare { file: PathBuf, count: usize, errors: String },
    #[error(transparent)]
    Kubelet(#[from] KubeletError),
    #[error("cannot listen on {addr} for /healthz, /readyz, /metrics and /status: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
}

impl AgentOptions {
    /// Every path made absolute against the working directory (symlinks
    /// left as they are: a ConfigMap volume swaps its `..data` link). The
    /// agent watches the directories its files are in, and the directory of
    /// `config.yaml` is `""`, not the working directory: a relative path
    /// must mean the same to every part of the agent.
    fn absolute(mut self) -> Result<AgentOptions, AgentError> {
        for path in [
            &mut self.config_file,
            &mut self.plugin_dir,
            &mut self.cdi_dir,
            &mut self.sysfs_root,
            &mut self.state_dir,
            &mut self.pod_resources_socket,
        ] {
            *path = std::path::absolute(&*path)
                .map_err(|source| AgentError::Io { what: "finding the working directory", source })?;
        }
        Ok(self)
    }
}

pub fn run(options: AgentOptions, runtime: Runtime, loader: Loader) -> Result<(), AgentError> {
    let options = options.absolute()?;
    let config = Config::load(&options.config_file)?;
    config.log_ignored_fields();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| AgentError::Io { what: "starting the async runtime", source })?;
    let loader = Arc::new(loader);
    let fetched = tokio.block_on(evaluation::fetch(&loader, &config));
    let mut prepared = Vec::new();
    let mut pending = Vec::new();
    let mut unavailable = Vec::new();
    let mut errors = Vec::new();
    for (result, resource) in evaluation::prepare(&runtime, &fetched, &config).into_iter().zip(&config.resources) {
        match result {
            Ok(p) => prepared.push(p),
            // A handler that cannot be had now (a registry down, not cached)
            // costs that resource only: it is served without devices and
            // fetched again. Anything wrong with the config stops the start.
            Err(error) if error.is_unavailable() => {
                unavailable.push(error);
                pending.push(resource.clone());
            }
            Err(error) => errors.push(crate::support::error_chain(&error)),
        }
    }
    // The loaded handlers keep none of the components' bytes; nor does the agent.
    drop(fetched);
    if !errors.is_empty() {
        return Err(AgentError::Prepare {
            file: config.file.clone(),
            count: errors.len(),
            errors: errors.join("\n  "),
        });
    }

    let metrics = Arc::new(Metrics::new());
    let remote = RemoteDevices::default();
    let attacher = attacher(&options, remote.clone(), metrics.clone()).map(Arc::new).map_err(|error| {
        let why = crate::support::error_chain(&error);
        if !config.usbip.servers.is_empty() {
            tracing::warn!(error = %why, "USB/IP devices are listed but cannot be attached on this node");
        }
        Arc::from(why)
    });
    let (advertiser, advertiser_status) = Advertiser::new(
        AdvertiserOptions {
            plugin_dir: options.plugin_dir.clone(),
            cdi_dir: options.cdi_dir.clone(),
            register_timeout: options.register_timeout,
            attacher: attacher.clone(),
        },
        metrics.clone(),
    );
    advertiser.check()?;
    let listener = std::net::TcpListener::bind(options.listen)
        .map_err(|source| AgentError::Listen { addr: options.listen, source })?;
    listener.set_nonblocking(true).map_err(|source| AgentError::Io { what: "listen socket", source })?;

    let (mut inventory, outputs) = Inventory::new(options.grace, metrics.clone());
    let (updates_tx, mut updates_rx) = tokio::sync::mpsc::unbounded_channel();
    let (usbip_tx, usbip_rx) = tokio::sync::watch::channel(config.usbip.clone());
    let parts = StageParts {
        runtime,
        sources: Sources::node(remote.clone()),
        loader,
        handle: tokio.handle().clone(),
        updates: updates_tx,
        metrics: metrics.clone(),
        coalescing: options.coalescing,
        usbip: usbip_tx,
    };
    let mut evaluator = Evaluator::new(parts, &config, prepared, pending);

    let (inputs_tx, inputs_rx) = std::sync::mpsc::channel();
    if evaluator.wants_udev() {
        if !std::path::Path::new("/run/udev/control").exists() {
            tracing::warn!(
                "/run/udev/control is missing: no udev daemon is visible, so udev events may never arrive \
                 (in a pod: mount /run/udev and use hostNetwork, udev's netlink events live in the host's network namespace)"
            );
        }
        // Listen before enumerating, so no event falls in between.
        let (first_tx, first_rx) = std::sync::mpsc::sync_channel(1);
        let tx = inputs_tx.clone();
        let mut first = Some(first_tx);
        monitor::spawn(monitor::Libudev, move |report: MonitorReport| {
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
            tx.send(Input::Udev(report)).is_ok()
        })
        .map_err(|source| AgentError::Io { what: "starting the udev monitor thread", source })?;
        let _ = first_rx.recv_timeout(Duration::from_secs(2));
    }
    evaluator.watch(inputs_tx.clone()).map_err(|source| AgentError::Io { what: "watching files (inotify)", source })?;
    evaluator.initial(unavailable);
    // The first evaluations are in before the first registration, so the
    // kubelet's first list is the full one.
    while let Ok(update) = updates_rx.try_recv() {
        inventory.handle(update, tokio::time::Instant::now());
    }
    let evaluator_thread = std::thread::Builder::new()
        .name("devsieve-evaluator".into())
        .spawn(move || evaluator.run(inputs_rx))
        .map_err(|source| AgentError::Io { what: "starting the evaluation thread", source })?;

    let remote_changed = inputs_tx.clone();
    let result = tokio.block_on(async move {
        // Each USB/IP server is listed on its own task; a change wakes the evaluation.
        tokio::spawn(usbip::supervise(usbip_rx, remote.clone(), metrics.clone(), move || {
            let _ = remote_changed.send(Input::Remote);
        }));
        let shutdown = CancellationToken::new();
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|source| AgentError::Io { what: "listen socket", source })?;
        let ops = Ops {
            config_file: options.config_file.clone(),
            metrics: metrics.clone(),
            status: outputs.status.clone(),
            advertiser: advertiser_status,
            remote,
            attacher: attacher.as_ref().ok().cloned(),
        };
        tracing::info!(listen = %options.listen, "serving /healthz, /readyz, /metrics and /status");
        let http = tokio::spawn(ops::serve(listener, ops, shutdown.clone()));
        tokio::spawn(inventory.run(updates_rx));
        if let Ok(attacher) = attacher {
            let pods = KubeletPodResources { socket: options.pod_resources_socket.clone() };
            let grace = options.release_grace;
            let interval = (grace / 3).clamp(Duration::from_secs(1), Duration::from_secs(10));
            tokio::spawn(release::run(attacher, pods, ReleaseOptions { grace, interval }, shutdown.clone()));
        }
        tokio::spawn(stop_on_signal(shutdown.clone()));
        let advertised = advertiser.run(outputs.resources.clone(), shutdown.clone()).await;
        shutdown.cancel();
        let _ = http.await;
        advertised.map_err(AgentError::from)
    });
    let _ = inputs_tx.send(Input::Shutdown);
    let _ = evaluator_thread.join();
    result
}

/// The USB/IP attacher over this node's vhci_hcd, with the attachments a
/// previous run left.
fn attacher(options: &AgentOptions, remote: RemoteDevices, metrics: Arc<Metrics>) -> Result<Attacher, AttachError> {
    let vhci = SysfsVhci::probe(&options.sysfs_root).map_err(|e| AttachError::Controller(Box::new(e)))?;
    tracing::info!(controller = %vhci.dir().display(), "USB/IP devices are attached through vhci_hcd");
    Attacher::new(AttacherParts {
        vhci: Arc::new(vhci),
        local: Arc::new(attach::local::Udev),
        sysfs_root: options.sysfs_root.clone(),
        state: StateFile::in_dir(&options.state_dir),
        timeout: options.attach_timeout,
        remote,
        metrics,
    })
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
    shutdown.cancel();
}

//! Attaching remote USB devices to this node on `Allocate`: a USB/IP import
//! on a fresh connection, handed to the kernel's `vhci_hcd` ([`vhci`]), then
//! a bounded wait on udev events for the device's nodes ([`local`]); what is
//! attached is recorded ([`state`]) so a restart re-pairs it exactly.
//!
//! Each device has its own lock, so attaching one never waits for another
//! (nor for any `ListAndWatch`). A failure after the kernel took the socket
//! detaches again: nothing half-attached stays behind.
//!
//! The attacher is called by the kubelet stage and tells the USB/IP source
//! to keep serving what it attached ([`RemoteDevices::pin`]): a server stops
//! listing a device once it is imported, and a device a pod holds must not
//! look gone.

#[cfg(test)]
pub mod fake;
pub mod local;
pub mod release;
pub mod state;
pub mod vhci;

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use devsieve_proto::usbip;

use crate::config::Server;
use crate::metrics::Metrics;
use crate::source::usbip::{ListError, RemoteDevices, resolve};
use local::{LocalDevice, LocalDevices, WaitError};
use state::{Attachment, StateError, StateFile};
use vhci::{Vhci, VhciError};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("{0:?} is not a USB/IP device (usbip://HOST:PORT/BUSID)")]
    NotRemote(String),
    #[error("{devpath}: the attach task ended: {detail}")]
    Ended { devpath: String, detail: String },
    #[error("{}", import_message(server, busid, source))]
    Import { server: Server, busid: String, source: Box<ListError> },
    #[error("{busid} from USB/IP server {server}: attaching to vhci_hcd: {source}")]
    Vhci { server: Server, busid: String, source: Box<VhciError> },
    #[error("{busid} from USB/IP server {server}, attached on vhci port {port}: {source}; {undone}")]
    NotReady { server: Server, busid: String, port: u32, source: WaitError, undone: &'static str },
    #[error("{busid} from USB/IP server {server} is attached for {holder} already; one device serves one resource")]
    OtherResource { server: Server, busid: String, holder: String },
    #[error(
        "{busid} from USB/IP server {server}: the server says bus {busnum} device {devnum}, beyond vhci_hcd's 16 bits each"
    )]
    DeviceNumber { server: Server, busid: String, busnum: u32, devnum: u32 },
    #[error("recording the attachments: {0}")]
    State(#[from] StateError),
    #[error(transparent)]
    Controller(Box<VhciError>),
    #[error("{busid} from USB/IP server {server}: {what}: {detail}")]
    Task { server: Server, busid: String, what: &'static str, detail: String },
}

/// How the attacher reaches the OS, and how long it may take.
pub struct AttacherParts {
    pub vhci: Arc<dyn Vhci>,
    pub local: Arc<dyn LocalDevices>,
    pub sysfs_root: PathBuf,
    pub state: StateFile,
    /// Import, attach and the wait for the device's nodes, each.
    pub timeout: Duration,
    pub remote: RemoteDevices,
    pub metrics: Arc<Metrics>,
}

pub struct Attacher {
    parts: AttacherParts,
    attachments: Mutex<BTreeMap<String, Attachment>>,
    /// One lock per device, held for a whole attach of it.
    device_locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Told of each new attachment (the release loop sleeps while there is none).
    pub attached: tokio::sync::Notify,
}

impl std::fmt::Debug for Attacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attacher").field("attachments", &self.attachments().len()).finish_non_exhaustive()
    }
}

/// `usbip://HOST:PORT/BUSID` as its server and busid.
pub fn parse_devpath(devpath: &str) -> Option<(Server, String)> {
    let rest = devpath.strip_prefix("usbip://")?;
    let (address, busid) = rest.rsplit_once('/')?;
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((Server { host: host.into(), port: port.parse().ok()? }, busid.into()))
}

impl Attacher {
    /// The attacher, with the attachments a previous run recorded that the
    /// kernel still holds (the others are forgotten): each is served again.
    pub fn new(parts: AttacherParts) -> Result<Attacher, AttachError> {
        let recorded = parts.state.load()?;
        let (held, gone): (BTreeMap<_, _>, BTreeMap<_, _>) = match parts.vhci.ports() {
            Ok(ports) => recorded.into_iter().partition(|(_, a)| a.is_on(&ports)),
            // What the kernel holds cannot be told now: keep every record.
            Err(error) => {
                tracing::warn!(%error, "cannot read vhci_hcd's ports; keeping every recorded attachment");
                (recorded, BTreeMap::new())
            }
        };
        for attachment in gone.values() {
            parts.remote.unpin(&attachment.server, &attachment.busid);
            tracing::info!(device = %attachment.devpath(), port = attachment.port, "recorded attachment is gone from vhci_hcd; forgotten");
        }
        if !gone.is_empty() {
            parts.state.save(&held)?;
        }
        for (devpath, attachment) in &held {
            tracing::info!(device = %devpath, port = attachment.port, local = %attachment.local_busid, "attachment kept from the previous run");
            parts.remote.pin(&attachment.server, attachment.device.clone());
        }
        Ok(Attacher {
            parts,
            attachments: Mutex::new(held),
            device_locks: Mutex::default(),
            attached: tokio::sync::Notify::new(),
        })
    }

    fn attachments(&self) -> MutexGuard<'_, BTreeMap<String, Attachment>> {
        self.attachments.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What is attached now.
    pub fn current(&self) -> BTreeMap<String, Attachment> {
        self.attachments().clone()
    }

    /// Attaches the remote device `devpath` for `resource`'s `device_ids`
    /// (or finds it attached already) and waits until it is usable. It runs
    /// on a task of its own: a caller that gives up (the kubelet dropped the
    /// call) leaves it to finish and record what it attached.
    pub async fn attach(
        self: &Arc<Self>,
        resource: &str,
        device_ids: &[String],
        devpath: &str,
    ) -> Result<LocalDevice, AttachError> {
        let this = self.clone();
        let (resource, device_ids, owned) = (resource.to_string(), device_ids.to_vec(), devpath.to_string());
        let task = tokio::spawn(async move { this.attach_here(&resource, &device_ids, &owned).await });
        task.await.unwrap_or_else(|e| Err(AttachError::Ended { devpath: devpath.to_string(), detail: e.to_string() }))
    }

    async fn attach_here(
        &self,
        resource: &str,
        device_ids: &[String],
        devpath: &str,
    ) -> Result<LocalDevice, AttachError> {
        let (server, busid) = parse_devpath(devpath).ok_or_else(|| AttachError::NotRemote(devpath.into()))?;
        let lock = self.device_lock(devpath);
        let _held = lock.lock().await;

        let existing = self.attachments().get(devpath).cloned();
        if let Some(attachment) = existing {
            if attachment.resource != resource {
                return Err(AttachError::OtherResource { server, busid, holder: attachment.resource });
            }
            match self.ready(&attachment).await {
                Ok(device) => return Ok(device),
                Err(error) => {
                    tracing::warn!(device = %devpath, %error, "recorded attachment is not usable; attaching again");
                    // Ours, if the port still holds it: let it go before importing again.
                    self.detach_recorded(devpath, &attachment)?;
                }
            }
        }

        let started = Instant::now();
        let timeout = self.parts.timeout;
        // The list's record has the interfaces (an import's reply has none).
        let listed = self.parts.remote.listed(&server, &busid);
        let import_error =
            |source| AttachError::Import { server: server.clone(), busid: busid.clone(), source: Box::new(source) };
        let metrics = &self.parts.metrics;
        let server_name = server.to_string();
        let imported = match resolve(&server, timeout).await {
            Ok(address) => usbip::import(address, &busid, timeout).await.map_err(ListError::Usbip),
            Err(error) => Err(error),
        };
        metrics.usbip_operation(&server_name, "import", imported.is_ok());
        let (stream, device) = imported.map_err(import_error)?;
        let task_error =
            |what, detail: String| AttachError::Task { server: server.clone(), busid: busid.clone(), what, detail };
        if device.busnum > 0xffff || device.devnum > 0xffff {
            let (busnum, devnum) = (device.busnum, device.devnum);
            return Err(AttachError::DeviceNumber { server, busid, busnum, devnum });
        }
        let stream = stream.into_std().map_err(|e| task_error("taking the import's socket", e.to_string()))?;
        // The kernel keeps this connection for the device's life: let TCP notice a dead peer.
        if let Err(error) = rustix::net::sockopt::set_socket_keepalive(&stream, true) {
            tracing::warn!(%server, %error, "cannot turn TCP keepalive on for an import");
        }

        let vhci = self.parts.vhci.clone();
        let local = self.parts.local.clone();
        let sysfs_root = self.parts.sysfs_root.clone();
        let devid = state::devid(&device);
        let speed = device.speed;
        let attached = tokio::task::spawn_blocking(move || {
            let port = vhci::attach_free_port(vhci.as_ref(), stream.as_fd(), devid, speed).map_err(Failure::Vhci)?;
            // The kernel holds its own reference to the socket now.
            drop(stream);
            let local_busid = || local_busid_of(&vhci.ports().map_err(|e| e.to_string())?, port);
            match local.wait_ready(&sysfs_root, &local_busid, timeout) {
                Ok(ready) => Ok((port, ready)),
                Err(error) => {
                    let undone = match vhci.detach(port) {
                        Ok(()) => "detached again",
                        // The device left the port by itself.
                        Err(VhciError::DetachRefused { .. }) => "the port is free again",
                        Err(detach) => {
                            tracing::error!(port, error = %detach, "cannot detach a device that did not become usable");
                            "and it could not be detached (see the log)"
                        }
                    };
                    Err(Failure::NotReady(port, error, undone))
                }
            }
        })
        .await
        .map_err(|e| task_error("the attach task", e.to_string()))?;
        metrics.usbip_operation(&server_name, "attach", attached.is_ok());
        let (port, ready) = attached.map_err(|failure| match failure {
            Failure::Vhci(source) => {
                AttachError::Vhci { server: server.clone(), busid: busid.clone(), source: Box::new(source) }
            }
            Failure::NotReady(port, source, undone) => {
                AttachError::NotReady { server: server.clone(), busid: busid.clone(), port, source, undone }
            }
        })?;

        let local_busid = ready.syspath.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let attachment = Attachment {
            server: server.clone(),
            busid: busid.clone(),
            resource: resource.into(),
            device_ids: device_ids.to_vec(),
            port,
            local_busid,
            devid,
            attached_at: std::time::SystemTime::now(),
            device: listed.unwrap_or(device),
        };
        self.parts.remote.pin(&server, attachment.device.clone());
        let mut attachments = self.attachments();
        attachments.insert(devpath.to_string(), attachment);
        self.parts.state.save(&attachments)?;
        drop(attachments);
        self.attached.notify_one();
        metrics.usbip_attached(&server_name, started.elapsed());
        tracing::info!(device = %devpath, port, local = %ready.syspath.display(), took = ?started.elapsed(), "attached");
        Ok(ready)
    }

    /// An attachment's device, if the kernel still holds it and it is usable.
    async fn ready(&self, attachment: &Attachment) -> Result<LocalDevice, WaitError> {
        let local = self.parts.local.clone();
        let vhci = self.parts.vhci.clone();
        let sysfs_root = self.parts.sysfs_root.clone();
        let attachment = attachment.clone();
        let timeout = self.parts.timeout;
        tokio::task::spawn_blocking(move || {
            let local_busid = || {
                let ports = vhci.ports().map_err(|e| e.to_string())?;
                if !attachment.is_on(&ports) {
                    return Err(format!("vhci port {} no longer holds it", attachment.port));
                }
                local_busid_of(&ports, attachment.port)
            };
            local.wait_ready(&sysfs_root, &local_busid, timeout)
        })
        .await
        .unwrap_or_else(|e| Err(WaitError::Gone(format!("the readiness check failed: {e}"))))
    }

    fn device_lock(&self, devpath: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.device_locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(devpath.to_string())
            .or_default()
            .clone()
    }

    /// Detaches `judged` (an attachment nobody holds) and forgets it, unless
    /// it changed since it was judged (an `Allocate` attached it anew).
    pub async fn detach(&self, devpath: &str, judged: &Attachment) -> Result<(), AttachError> {
        let lock = self.device_lock(devpath);
        let _held = lock.lock().await;
        if self.attachments().get(devpath) != Some(judged) {
            return Ok(());
        }
        self.detach_recorded(devpath, judged)
    }

    /// Detaches `attachment` if its port still holds it (never a device that
    /// took the port since), then forgets it. The caller holds its lock.
    fn detach_recorded(&self, devpath: &str, attachment: &Attachment) -> Result<(), AttachError> {
        let on_port = self.parts.vhci.ports().map(|ports| attachment.is_on(&ports));
        if matches!(on_port, Ok(false)) {
            return self.forget(devpath);
        }
        let detached = self.parts.vhci.detach(attachment.port);
        let gone_already = matches!(detached, Err(VhciError::DetachRefused { .. }));
        self.parts.metrics.usbip_operation(&attachment.server.to_string(), "detach", detached.is_ok() || gone_already);
        match detached {
            Ok(()) => tracing::info!(device = %devpath, port = attachment.port, "detached"),
            // Gone by itself already (the server unbound it, the network went).
            Err(VhciError::DetachRefused { .. }) => {}
            Err(source) => {
                let (server, busid, source) = (attachment.server.clone(), attachment.busid.clone(), Box::new(source));
                return Err(AttachError::Vhci { server, busid, source });
            }
        }
        self.forget(devpath)
    }

    /// Drops the record of `devpath`, and stops serving it unless its server lists it.
    fn forget(&self, devpath: &str) -> Result<(), AttachError> {
        let mut attachments = self.attachments();
        if let Some(attachment) = attachments.remove(devpath) {
            self.parts.remote.unpin(&attachment.server, &attachment.busid);
            self.parts.state.save(&attachments)?;
        }
        Ok(())
    }

    /// Attachments whose vhci port no longer holds their device (it went
    /// away by itself): forgotten, and their devpaths returned.
    pub fn forget_vanished(&self) -> Result<Vec<String>, AttachError> {
        let Ok(ports) = self.parts.vhci.ports() else {
            return Ok(Vec::new());
        };
        let vanished: Vec<String> =
            self.attachments().iter().filter(|(_, a)| !a.is_on(&ports)).map(|(devpath, _)| devpath.clone()).collect();
        for devpath in &vanished {
            tracing::warn!(device = %devpath, "attached device went away by itself (server unbound it, or the network was lost)");
            self.forget(devpath)?;
        }
        Ok(vanished)
    }
}

/// The configured server, the busid, then what went wrong (a refusal's
/// reason; otherwise the client's error, which names the address it reached).
fn import_message(server: &Server, busid: &str, source: &ListError) -> String {
    match source {
        ListError::Usbip(devsieve_proto::usbip::UsbipError::Refused { refused, .. }) => {
            format!("USB/IP server {server}: importing {busid}: {refused}")
        }
        _ => format!("USB/IP server {server}: importing {busid}: {source}"),
    }
}

enum Failure {
    Vhci(VhciError),
    NotReady(u32, WaitError, &'static str),
}

/// The local busid the kernel gave the device on `port` (of `ports`, as
/// vhci_hcd lists them), once it has enumerated it (`0-0` until then).
fn local_busid_of(ports: &[vhci::PortStatus], port: u32) -> Result<Option<String>, String> {
    let status = ports.iter().find(|p| p.port == port).ok_or_else(|| format!("vhci port {port} is not listed"))?;
    if status.is_free() {
        return Err(format!("vhci port {port} is free again: the device went away"));
    }
    Ok((status.local_busid != "0-0").then(|| status.local_busid.clone()))
}

#[cfg(test)]
mod tests {
    //! The attacher over a real USB/IP server (the usbip crate's, on
    //! loopback) and a model of the kernel's vhci_hcd; the local side (udev)
    //! is faked, since attaching for real needs a kernel (the qemu test).

    use std::path::Path;

    use devsieve_proto::usbip::list_devices;
    use devsieve_usbip_server::{cdc_acm, serve};

    use super::release::{Held, PodResources, PodResourcesError};
    use super::*;
    use crate::contract::Requirements;
    use crate::model::DeviceTable;
    use crate::source::DeviceSource;
    use crate::source::usbip::{Listing, UsbipSource};
    use fake::FakeVhci;
    use local::LocalBusid;

    /// udev as the fake kernel would make it: the device is ready once the
    /// port has a local busid, unless `ready` is false.
    struct FakeLocal {
        ready: bool,
    }

    impl LocalDevices for FakeLocal {
        fn wait_ready(
            &self,
            _: &Path,
            local_busid: LocalBusid<'_>,
            timeout: Duration,
        ) -> Result<LocalDevice, WaitError> {
            match local_busid() {
                Err(gone) => Err(WaitError::Gone(gone)),
                Ok(Some(busid)) if self.ready => Ok(LocalDevice {
                    syspath: format!("/sys/devices/platform/vhci_hcd.0/usb3/{busid}").into(),
                    devnode: "/dev/bus/usb/003/002".into(),
                    interface_nodes: vec!["/dev/ttyACM0".into()],
                }),
                _ => Err(WaitError::Timeout { timeout, missing: "interface 3-1:1.0 has no device node yet".into() }),
            }
        }
    }

    struct Fixture {
        server: Server,
        vhci: Arc<FakeVhci>,
        remote: RemoteDevices,
        state_dir: tempfile::TempDir,
    }

    impl Fixture {
        async fn new() -> Fixture {
            let address = serve(vec![cdc_acm("1-1", 0x1a86, 0x7523)]).await;
            let server = Server { host: address.ip().to_string(), port: address.port() };
            let remote = RemoteDevices::default();
            let devices = list_devices(address, Duration::from_secs(5)).await.unwrap();
            remote.set(&server, Listing { devices, error: None });
            Fixture { server, vhci: Arc::new(FakeVhci::new(2)), remote, state_dir: tempfile::tempdir().unwrap() }
        }

        fn attacher(&self, ready: bool) -> Arc<Attacher> {
            Arc::new(
                Attacher::new(AttacherParts {
                    vhci: self.vhci.clone(),
                    local: Arc::new(FakeLocal { ready }),
                    sysfs_root: "/sys".into(),
                    state: StateFile::in_dir(self.state_dir.path()),
                    timeout: Duration::from_secs(5),
                    remote: self.remote.clone(),
                    metrics: Arc::new(Metrics::new()),
                })
                .unwrap(),
            )
        }

        fn devpath(&self) -> String {
            crate::source::usbip::devpath(&self.server, "1-1")
        }

        fn served(&self) -> bool {
            let needs = Requirements {
                subsystems: Vec::new(),
                all_udev: false,
                properties: Vec::new(),
                attributes: Vec::new(),
                paths: Vec::new(),
                usbip: true,
            };
            let mut table = DeviceTable::default();
            UsbipSource(self.remote.clone()).collect(&needs, &[], &mut table).unwrap();
            table.contains(&self.devpath())
        }
    }

    fn ids() -> Vec<String> {
        vec!["stick-0".to_string(), "stick-1".to_string()]
    }

    #[tokio::test]
    async fn attaches_records_and_keeps_serving_what_its_server_stops_listing() {
        let fixture = Fixture::new().await;
        let attacher = fixture.attacher(true);
        let device = attacher.attach("devsieve.io/stick", &ids(), &fixture.devpath()).await.unwrap();
        assert_eq!(device.devnode, "/dev/bus/usb/003/002");
        assert_eq!(fixture.vhci.used_ports(), [0], "a high-speed device on the first free hs port");
        let port = fixture.vhci.port(0);
        assert_eq!((port.devid, port.speed), ((1 << 16) | 2, 3), "devid is busnum<<16|devnum, speed as listed");

        let recorded = StateFile::in_dir(fixture.state_dir.path()).load().unwrap();
        let attachment = &recorded[&fixture.devpath()];
        assert_eq!((attachment.port, attachment.local_busid.as_str()), (0, "3-1"));
        assert_eq!(attachment.device_ids, ids());
        assert_eq!(attachment.device.interfaces.len(), 1, "the listed record, with its interfaces");

        // Its server no longer lists an imported device: it is served anyway.
        fixture.remote.set(&fixture.server, Listing::default());
        assert!(fixture.served());

        // Asked again (a container restart): the same attachment, no second import.
        attacher.attach("devsieve.io/stick", &ids(), &fixture.devpath()).await.unwrap();
        assert_eq!(fixture.vhci.used_ports(), [0]);

        let judged = attacher.current()[&fixture.devpath()].clone();
        attacher.detach(&fixture.devpath(), &judged).await.unwrap();
        assert!(fixture.vhci.used_ports().is_empty());
        assert!(StateFile::in_dir(fixture.state_dir.path()).load().unwrap().is_empty());
        assert!(fixture.served(), "detached: served until its server's next listing says what it is");
        fixture.remote.set(&fixture.server, Listing::default());
        assert!(!fixture.served(), "detached and unlisted: gone");
    }

    #[tokio::test]
    async fn a_device_that_never_becomes_usable_is_detached_again_with_a_named_error() {
        let fixture = Fixture::new().await;
        let attacher = fixture.attacher(false);
        let error = attacher.attach("devsieve.io/stick", &ids(), &fixture.devpath()).await.unwrap_err().to_string();
        let expected = format!("1-1 from USB/IP server {}, attached on vhci port 0", fixture.server);
        assert!(
            error.contains(&expected) && error.contains("has no device node") && error.ends_with("detached again"),
            "{error}"
        );
        assert!(fixture.vhci.used_ports().is_empty(), "nothing half-attached stays");
        assert!(attacher.current().is_empty());
    }

    #[tokio::test]
    async fn an_import_the_server_refuses_names_the_server_and_the_device() {
        let fixture = Fixture::new().await;
        let attacher = fixture.attacher(true);
        let devpath = crate::source::usbip::devpath(&fixture.server, "9-9");
        let error =
            crate::support::error_chain(&attacher.attach("devsieve.io/stick", &ids(), &devpath).await.unwrap_err());
        // The usbip crate answers NA (1) where the kernel's usbipd answers NODEV (4).
        assert_eq!(
            error,
            format!("USB/IP server {}: importing 9-9: the device is not available (status 1)", fixture.server)
        );
        assert!(fixture.vhci.used_ports().is_empty());
    }

    #[tokio::test]
    async fn a_restart_re_pairs_what_the_kernel_still_holds_and_forgets_the_rest() {
        let fixture = Fixture::new().await;
        fixture.attacher(true).attach("devsieve.io/stick", &ids(), &fixture.devpath()).await.unwrap();
        let restarted = fixture.attacher(true);
        assert_eq!(restarted.current()[&fixture.devpath()].port, 0, "the same device on the same port");
        fixture.remote.set(&fixture.server, Listing::default());
        assert!(fixture.served(), "served again after the restart");

        // The port went free while the agent was down (the server unbound it).
        fixture.vhci.detach(0).unwrap();
        let again = fixture.attacher(true);
        assert!(again.current().is_empty());
        assert!(StateFile::in_dir(fixture.state_dir.path()).load().unwrap().is_empty());
        fixture.remote.set(&fixture.server, Listing::default());
        assert!(!fixture.served(), "forgotten and unlisted: gone");
    }

    #[tokio::test]
    async fn a_port_another_device_took_is_never_detached_for_the_one_that_left() {
        let fixture = Fixture::new().await;
        let attacher = fixture.attacher(true);
        attacher.attach("devsieve.io/stick", &ids(), &fixture.devpath()).await.unwrap();
        let judged = attacher.current()[&fixture.devpath()].clone();
        // Ours went away by itself, and another device was attached on the same port.
        fixture.vhci.detach(0).unwrap();
        fixture.vhci.occupy(0, 0x0007_0007);
        attacher.detach(&fixture.devpath(), &judged).await.unwrap();
        assert_eq!(fixture.vhci.used_ports(), [0], "the other device stays attached");
        assert!(attacher.current().is_empty(), "ours is forgotten");
        // And the release loop's check tells them apart too.
        attacher.attach("devsieve.io/stick", &ids(), &fixture.devpath()).await.unwrap();
        let port = attacher.current()[&fixture.devpath()].port;
        assert_eq!(port, 1, "the next free port");
        fixture.vhci.detach(1).unwrap();
        fixture.vhci.occupy(1, 0x0008_0008);
        assert_eq!(attacher.forget_vanished().unwrap(), [fixture.devpath()]);
    }

    #[tokio::test]
    async fn one_device_serves_one_resource() {
        let fixture = Fixture::new().await;
        let attacher = fixture.attacher(true);
        attacher.attach("devsieve.io/stick", &ids(), &fixture.devpath()).await.unwrap();
        let error = attacher.attach("devsieve.io/other", &ids(), &fixture.devpath()).await.unwrap_err().to_string();
        assert!(error.contains("is attached for devsieve.io/stick already"), "{error}");
    }

    struct Holding(Held);

    impl PodResources for Holding {
        async fn held(&self) -> Result<Held, PodResourcesError> {
            Ok(self.0.clone())
        }
    }

    #[tokio::test]
    async fn release_detaches_only_what_no_container_holds_for_the_grace_period() {
        let fixture = Fixture::new().await;
        let attacher = fixture.attacher(true);
        attacher.attach("devsieve.io/stick", &ids(), &fixture.devpath()).await.unwrap();
        let mut since = release::Unheld::new();

        // A container holds the second unit: kept.
        let held = Holding([("devsieve.io/stick".to_string(), "stick-1".to_string())].into());
        release::release(&attacher, &held, &mut since, Duration::ZERO).await;
        assert_eq!(attacher.current().len(), 1);

        // The same id of another resource does not hold it; within the grace period it stays.
        let other = Holding([("devsieve.io/other".to_string(), "stick-1".to_string())].into());
        release::release(&attacher, &other, &mut since, Duration::from_secs(3600)).await;
        assert_eq!(attacher.current().len(), 1);
        release::release(&attacher, &other, &mut since, Duration::ZERO).await;
        assert!(attacher.current().is_empty());
        assert!(fixture.vhci.used_ports().is_empty());

        // A port that went free by itself is forgotten in the next round,
        // and the evaluation is told: the device turns Unhealthy, then leaves.
        attacher.attach("devsieve.io/stick", &ids(), &fixture.devpath()).await.unwrap();
        fixture.remote.set(&fixture.server, Listing::default());
        let mut versions = fixture.remote.subscribe();
        versions.borrow_and_update();
        fixture.vhci.detach(0).unwrap();
        release::release(&attacher, &held, &mut since, Duration::ZERO).await;
        assert!(attacher.current().is_empty());
        assert!(versions.has_changed().unwrap(), "the change is announced");
        fixture.remote.set(&fixture.server, Listing::default());
        assert!(!fixture.served(), "released and unlisted: gone");
    }
}

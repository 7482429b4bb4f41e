//! Remote devices: what the configured USB/IP servers export, as snapshot
//! nodes shaped like local USB devices, so `usb-id` and custom handlers
//! match them unchanged.
//!
//! [`refresh`] lists each server on its own task, every refresh interval
//! (sooner, backing off, while it fails), and keeps what each last said in
//! [`RemoteDevices`]; [`UsbipSource`] serves that to the evaluation. A
//! server that fails never delays another: each has its own task, and a
//! failed listing drops that server's devices only.
//!
//! A device is `usbip://HOST:PORT/BUSID` (subsystem `usb`, devtype
//! `usb_device`, kernel name the busid, no device node), with the sysfs
//! attributes a local USB device has (`idVendor`, `idProduct`, `bcdDevice`,
//! `bDeviceClass`, `speed`, `busnum`, `devnum`, ...), and each listed
//! interface a child `.../BUSID/BUSID:C.N` (devtype `usb_interface`). The
//! device list carries no serial number.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use devsieve_proto::usbip::{self, ExportedDevice, UsbipError};

use super::{DeviceSource, SourceError};
use crate::config::{Server, UsbipSettings};
use crate::contract::{Node, Origin, Requirements};
use crate::metrics::Metrics;
use crate::model::DeviceTable;
use crate::support::backoff::Backoff;

/// What each server said last, shared by the refresh tasks (which write)
/// and the source (which reads); and the devices this node attached, which
/// their servers no longer list but which are served while attached. Every
/// change bumps a version that [`supervise`] turns into a re-evaluation.
#[derive(Clone, Debug, Default)]
pub struct RemoteDevices(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    remote: Mutex<Remote>,
    version: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Remote {
    listings: BTreeMap<Server, Listing>,
    /// Attached here, by devpath.
    pinned: BTreeMap<String, (Server, ExportedDevice)>,
    /// Detached here since its server's last listing, by devpath: served
    /// until that server's next listing says whether it is exported again
    /// (while attached, the server lists it as in use, not as exported).
    released: BTreeMap<String, (Server, ExportedDevice)>,
}

/// One server's last answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Listing {
    pub devices: Vec<ExportedDevice>,
    /// Why the last listing failed; its devices are then not served.
    pub error: Option<String>,
}

impl RemoteDevices {
    fn lock(&self) -> MutexGuard<'_, Remote> {
        self.0.remote.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.0.version.send_modify(|version| *version += 1);
    }

    /// Told of every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.version.subscribe()
    }

    /// Records `listing` for `server` (subscribers hear of it if it differs from the last).
    pub fn set(&self, server: &Server, listing: Listing) {
        let mut remote = self.lock();
        let released = remote.released.len();
        remote.released.retain(|_, (released_by, _)| released_by != server);
        if remote.listings.get(server) == Some(&listing) && remote.released.len() == released {
            return;
        }
        remote.listings.insert(server.clone(), listing);
        drop(remote);
        self.bump();
    }

    /// `busid` as `server` last listed it.
    pub fn listed(&self, server: &Server, busid: &str) -> Option<ExportedDevice> {
        let remote = self.lock();
        remote.listings.get(server)?.devices.iter().find(|d| d.busid == busid).cloned()
    }

    /// Serves `device` of `server` whether or not its server lists it (it is attached here).
    pub fn pin(&self, server: &Server, device: ExportedDevice) {
        self.lock().pinned.insert(devpath(server, &device.busid), (server.clone(), device));
        self.bump();
    }

    /// Stops serving `busid` of `server` as attached: it is served until the
    /// server's next listing, which says whether it is exported again (a
    /// release must not blink the device Unhealthy) or went away by itself
    /// (it then turns Unhealthy, and leaves).
    pub fn unpin(&self, server: &Server, busid: &str) {
        let mut remote = self.lock();
        let key = devpath(server, busid);
        if let Some(device) = remote.pinned.remove(&key) {
            remote.released.insert(key, device);
            drop(remote);
            self.bump();
        }
    }

    /// Forgets servers not in `servers`.
    fn retain(&self, servers: &[Server]) {
        let mut remote = self.lock();
        let before = (remote.listings.len(), remote.released.len());
        remote.listings.retain(|server, _| servers.contains(server));
        remote.released.retain(|_, (server, _)| servers.contains(server));
        if (remote.listings.len(), remote.released.len()) != before {
            drop(remote);
            self.bump();
        }
    }

    /// Every server's last answer.
    pub fn listings(&self) -> BTreeMap<Server, Listing> {
        self.lock().listings.clone()
    }
}

/// Serves the remote devices to handlers that take them.
pub struct UsbipSource(pub RemoteDevices);

impl DeviceSource for UsbipSource {
    fn collect(&self, needs: &Requirements, _: &[PathBuf], table: &mut DeviceTable) -> Result<(), SourceError> {
        if !needs.usbip {
            return Ok(());
        }
        let remote = self.0.lock();
        for (server, listing) in &remote.listings {
            if listing.error.is_none() {
                for device in &listing.devices {
                    add_device(server, device, needs, table);
                }
            }
        }
        for (devpath, (server, device)) in remote.pinned.iter().chain(&remote.released) {
            if !table.contains(devpath) {
                add_device(server, device, needs, table);
            }
        }
        Ok(())
    }
}

/// `usbip://HOST:PORT/BUSID`: a remote device's devpath.
pub fn devpath(server: &Server, busid: &str) -> String {
    format!("usbip://{server}/{busid}")
}

/// The sysfs `speed` attribute for the kernel's `enum usb_device_speed`.
fn speed_attribute(speed: u32) -> &'static str {
    match speed {
        1 => "1.5",
        2 => "12",
        3 => "480",
        4 => "480",
        5 => "5000",
        6 => "10000",
        _ => "unknown",
    }
}

fn add_device(server: &Server, device: &ExportedDevice, needs: &Requirements, table: &mut DeviceTable) {
    let all_properties = needs.properties.iter().any(|p| p == "*");
    let pick = |asked: &[String], all: bool, offered: Vec<(&str, String)>| -> Vec<(String, String)> {
        let mut picked: Vec<(String, String)> = offered
            .into_iter()
            .filter(|(name, _)| all || asked.iter().any(|a| a == name))
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        picked.sort();
        picked
    };
    let device_path = devpath(server, &device.busid);
    // The values sysfs and udev give a local device, in their formats.
    let attributes = vec![
        ("bConfigurationValue", device.configuration_value.to_string()),
        ("bDeviceClass", format!("{:02x}", device.device_class)),
        ("bDeviceProtocol", format!("{:02x}", device.device_protocol)),
        ("bDeviceSubClass", format!("{:02x}", device.device_subclass)),
        ("bNumConfigurations", device.num_configurations.to_string()),
        ("bNumInterfaces", format!("{:2}", device.num_interfaces)),
        ("bcdDevice", format!("{:04x}", device.bcd_device)),
        ("busnum", device.busnum.to_string()),
        ("devnum", device.devnum.to_string()),
        ("idProduct", format!("{:04x}", device.id_product)),
        ("idVendor", format!("{:04x}", device.id_vendor)),
        ("speed", speed_attribute(device.speed).to_string()),
    ];
    let properties = vec![
        ("BUSNUM", format!("{:03}", device.busnum)),
        ("DEVNUM", format!("{:03}", device.devnum)),
        ("DEVTYPE", "usb_device".to_string()),
        ("ID_MODEL_ID", format!("{:04x}", device.id_product)),
        ("ID_REVISION", format!("{:04x}", device.bcd_device)),
        ("ID_VENDOR_ID", format!("{:04x}", device.id_vendor)),
        ("PRODUCT", format!("{:x}/{:x}/{:x}", device.id_vendor, device.id_product, device.bcd_device)),
        ("SUBSYSTEM", "usb".to_string()),
    ];
    for (number, interface) in device.interfaces.iter().enumerate() {
        let kernel = format!("{}:{}.{number}", device.busid, device.configuration_value);
        let attributes = vec![
            ("bInterfaceClass", format!("{:02x}", interface.class)),
            ("bInterfaceNumber", format!("{number:02x}")),
            ("bInterfaceProtocol", format!("{:02x}", interface.protocol)),
            ("bInterfaceSubClass", format!("{:02x}", interface.subclass)),
        ];
        let node = Node {
            devtype: Some("usb_interface".into()),
            attributes: pick(&needs.attributes, false, attributes),
            properties: pick(&needs.properties, all_properties, vec![("DEVTYPE", "usb_interface".to_string())]),
            ..Node::bare(Origin::Usbip, &format!("{device_path}/{kernel}"), "usb")
        };
        table.add(node, Some(device_path.clone()), true);
    }
    let node = Node {
        devtype: Some("usb_device".into()),
        attributes: pick(&needs.attributes, false, attributes),
        properties: pick(&needs.properties, all_properties, properties),
        ..Node::bare(Origin::Usbip, &device_path, "usb")
    };
    table.add(node, None, true);
}

/// Keeps the servers of the settings in force listed: on each change of
/// `settings`, the old servers' tasks stop, servers no longer configured
/// are forgotten, and the new ones are listed at once. `changed` is called
/// after every change to what is served (a listing, an attach, a detach).
pub async fn supervise(
    mut settings: tokio::sync::watch::Receiver<UsbipSettings>,
    remote: RemoteDevices,
    metrics: Arc<Metrics>,
    changed: impl Fn() + Send + 'static,
) {
    let mut versions = remote.subscribe();
    tokio::spawn(async move {
        while versions.changed().await.is_ok() {
            changed();
        }
    });
    loop {
        let current = settings.borrow_and_update().clone();
        remote.retain(&current.servers);
        let tasks = refresh(&current, &remote, &metrics);
        let closed = settings.changed().await.is_err();
        for task in tasks {
            task.abort();
        }
        if closed {
            return;
        }
    }
}

/// Lists every configured server on its own task, forever: each listing
/// is kept in `remote` (which tells its subscribers when one differs from
/// the last). Idle cost: one wake-up per server per refresh interval.
pub fn refresh(
    settings: &UsbipSettings,
    remote: &RemoteDevices,
    metrics: &Arc<Metrics>,
) -> Vec<tokio::task::JoinHandle<()>> {
    settings
        .servers
        .iter()
        .map(|server| {
            let lister = Lister {
                server: server.clone(),
                refresh: settings.refresh,
                timeout: settings.timeout,
                remote: remote.clone(),
                metrics: metrics.clone(),
            };
            tokio::spawn(lister.run())
        })
        .collect()
}

/// One server's refresh task.
struct Lister {
    server: Server,
    refresh: Duration,
    timeout: Duration,
    remote: RemoteDevices,
    metrics: Arc<Metrics>,
}

impl Lister {
    async fn run(self) {
        let Lister { server, refresh, timeout, remote, metrics } = self;
        // A server that fails is asked again sooner, backing off up to the
        // refresh interval: one that comes back is seen within one interval.
        let mut retry = Backoff::new(Duration::from_secs(1).min(refresh), refresh);
        loop {
            let listing = match list(&server, timeout).await {
                Ok(devices) => {
                    retry.reset();
                    Listing { devices, error: None }
                }
                Err(error) => {
                    let error = crate::support::error_chain(&error);
                    tracing::warn!(%server, %error, "USB/IP server not listed; its devices are not served until it answers");
                    Listing { devices: Vec::new(), error: Some(error) }
                }
            };
            let failed = listing.error.is_some();
            metrics.usbip_listed(&server.to_string(), (!failed).then_some(listing.devices.len()));
            remote.set(&server, listing);
            let delay = if failed { retry.next_delay() } else { refresh };
            tokio::time::sleep(delay).await;
        }
    }
}

/// Every configured server listed once, at the same time: what `discover`
/// shows (it lists, never attaches).
pub async fn list_once(settings: &UsbipSettings) -> RemoteDevices {
    let remote = RemoteDevices::default();
    let listings = futures_util::future::join_all(settings.servers.iter().map(|server| async move {
        let listing = match list(server, settings.timeout).await {
            Ok(devices) => Listing { devices, error: None },
            Err(error) => Listing { devices: Vec::new(), error: Some(crate::support::error_chain(&error)) },
        };
        (server, listing)
    }))
    .await;
    for (server, listing) in listings {
        remote.set(server, listing);
    }
    remote
}

/// Why a server could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("USB/IP server {server}: cannot resolve: {source}")]
    Resolve { server: Server, source: std::io::Error },
    #[error("USB/IP server {server}: resolves to no address")]
    NoAddress { server: Server },
    #[error(transparent)]
    Usbip(#[from] UsbipError),
}

/// `server`'s address now (names may move), first of those it resolves to.
pub async fn resolve(server: &Server, timeout: Duration) -> Result<SocketAddr, ListError> {
    let lookup = tokio::net::lookup_host((server.host.as_str(), server.port));
    let mut addresses = tokio::time::timeout(timeout, lookup)
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))
        })
        .map_err(|source| ListError::Resolve { server: server.clone(), source })?;
    addresses.next().ok_or_else(|| ListError::NoAddress { server: server.clone() })
}

/// What `server` exports now.
pub async fn list(server: &Server, timeout: Duration) -> Result<Vec<ExportedDevice>, ListError> {
    let address = resolve(server, timeout).await?;
    Ok(usbip::list_devices(address, timeout).await?)
}

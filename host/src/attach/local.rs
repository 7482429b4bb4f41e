//! The local side of an attach: waiting, on udev events and bounded, for
//! the device the kernel made on a vhci port to be usable — its
//! `/dev/bus/usb/BBB/DDD` node and the nodes its interfaces bring (ttyACM,
//! ttyUSB, hidraw, video, sound) — behind the small [`LocalDevices`] trait.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A USB device attached through vhci_hcd, ready to be given to a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalDevice {
    pub syspath: PathBuf,
    /// `/dev/bus/usb/BBB/DDD`.
    pub devnode: String,
    /// The device nodes of its interfaces, sorted.
    pub interface_nodes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("udev: {context}: {source}")]
    Udev { context: &'static str, source: std::io::Error },
    #[error("not ready within {timeout:?}: {missing}")]
    Timeout { timeout: Duration, missing: String },
    #[error("{0}")]
    Gone(String),
}

/// The local busid the kernel gave an attached device: `None` until it has
/// enumerated it, an error when it never will (the port went free).
pub type LocalBusid<'a> = &'a dyn Fn() -> Result<Option<String>, String>;

/// Where attached devices show up.
pub trait LocalDevices: Send + Sync {
    /// Waits until the USB device `local_busid` names (under `sysfs_root`)
    /// exists with its node and its interfaces' nodes.
    fn wait_ready(
        &self,
        sysfs_root: &Path,
        local_busid: LocalBusid<'_>,
        timeout: Duration,
    ) -> Result<LocalDevice, WaitError>;
}

/// The real one: libudev, woken by its monitor.
pub struct Udev;

impl LocalDevices for Udev {
    fn wait_ready(
        &self,
        sysfs_root: &Path,
        local_busid: LocalBusid<'_>,
        timeout: Duration,
    ) -> Result<LocalDevice, WaitError> {
        let err = |context: &'static str| move |source| WaitError::Udev { context, source };
        // Listen first, then look: an event in between is not lost.
        let monitor = udev::MonitorBuilder::new().map_err(err("creating a monitor"))?;
        let monitor = monitor.listen().map_err(err("listening for events"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let missing = match local_busid() {
                Err(gone) => return Err(WaitError::Gone(gone)),
                Ok(None) => "the kernel has not enumerated the device yet".to_string(),
                Ok(Some(busid)) => {
                    // /sys/bus/usb/devices/2-1 links to the device under its vhci controller.
                    let link = sysfs_root.join("bus/usb/devices").join(&busid);
                    match std::fs::canonicalize(&link) {
                        Ok(syspath) => match readiness(&syspath) {
                            Ok(device) => return Ok(device),
                            Err(missing) => missing,
                        },
                        Err(_) => format!("{} does not exist yet", link.display()),
                    }
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::Timeout { timeout, missing });
            }
            wait_readable(&monitor, left).map_err(err("waiting for events"))?;
            // What the events say is read from sysfs and the udev database again.
            for _ in monitor.iter() {}
        }
    }
}

fn wait_readable(monitor: &udev::MonitorSocket, timeout: Duration) -> std::io::Result<()> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let mut fds = [PollFd::new(monitor, PollFlags::IN)];
    let timeout = Timespec::try_from(timeout).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 });
    match poll(&mut fds, Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// Whether an interface brings a device node once its driver binds: CDC
/// ACM (a tty), HID (hidraw), video (video4linux), audio (sound), and a
/// vendor-specific one with a driver bound (ch341, cp210x, ftdi_sio make a
/// ttyUSB). Others (CDC Ethernet, Bluetooth, mass storage's are block
/// devices elsewhere) are not waited for.
fn expects_node(interface: &udev::Device, attribute: impl Fn(&udev::Device, &str) -> String) -> bool {
    match (attribute(interface, "bInterfaceClass").as_str(), attribute(interface, "bInterfaceSubClass").as_str()) {
        ("02", "02") | ("03", _) | ("0e", _) | ("01", _) => true,
        ("ff", _) => interface.driver().is_some(),
        _ => false,
    }
}

/// The device at `syspath` if it is ready, else what it still lacks.
fn readiness(syspath: &Path) -> Result<LocalDevice, String> {
    let device = udev::Device::from_syspath(syspath).map_err(|_| format!("{} does not exist", syspath.display()))?;
    let devnode = match (device.is_initialized(), device.devnode()) {
        (true, Some(node)) => node.to_string_lossy().into_owned(),
        _ => return Err(format!("{} has no device node yet", syspath.display())),
    };
    let attribute = |device: &udev::Device, name: &str| {
        device.attribute_value(name).map(|v| v.to_string_lossy().trim().to_string()).unwrap_or_default()
    };
    let interfaces_wanted: usize = attribute(&device, "bNumInterfaces").parse().unwrap_or(0);
    let mut enumerator = udev::Enumerator::new().map_err(|e| e.to_string())?;
    enumerator.match_parent(&device).map_err(|e| e.to_string())?;
    let descendants: Vec<udev::Device> = enumerator.scan_devices().map_err(|e| e.to_string())?.collect();
    let interfaces: Vec<&udev::Device> =
        descendants.iter().filter(|d| d.devtype().is_some_and(|t| t == "usb_interface")).collect();
    if interfaces.len() < interfaces_wanted {
        return Err(format!("{} of {interfaces_wanted} interfaces are there", interfaces.len()));
    }
    if let Some(pending) = interfaces.iter().find(|i| !i.is_initialized()) {
        return Err(format!("udev has not processed interface {} yet", pending.sysname().to_string_lossy()));
    }
    let node_of = |d: &udev::Device| d.devnode().map(|n| n.to_string_lossy().into_owned());
    let mut interface_nodes: Vec<String> = descendants
        .iter()
        .filter(|d| interfaces.iter().any(|i| d.syspath() != i.syspath() && d.syspath().starts_with(i.syspath())))
        .filter(|d| d.is_initialized())
        .filter_map(node_of)
        .collect();
    // A device whose interfaces bring nodes (a tty, a video or sound node,
    // hidraw; or any a bound driver makes, as ch341 or cp210x do) is ready
    // once one is there. Per interface would wait forever: a webcam's
    // streaming interfaces and a CDC data interface have none of their own.
    let brings_nodes = interfaces.iter().any(|i| expects_node(i, attribute));
    if brings_nodes && interface_nodes.is_empty() {
        return Err("its interfaces have no device node yet".to_string());
    }
    interface_nodes.sort();
    interface_nodes.dedup();
    Ok(LocalDevice { syspath: syspath.to_path_buf(), devnode, interface_nodes })
}

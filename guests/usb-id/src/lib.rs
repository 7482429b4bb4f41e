//! The `usb-id` discovery handler: USB devices by vendor, product and serial.
//!
//! It speaks both configs users bring:
//!
//! ```yaml
//! # squat/generic-device-plugin: hex strings
//! usb:
//!   - vendor: "1a86"
//!     product: "7523"
//! # usbip-device-plugin: YAML numbers (0x1050 arrives as 4176) or hex strings;
//! # a zero or empty field matches anything; `selectors` lists several
//! selector:
//!   vendor: 0x1050
//!   product: 0x0407
//!   busId: 1-1.2                  # optional, both dialects
//!   server: usbip.example.com:3240  # optional: only this USB/IP server's devices
//! ```
//!
//! plus `includeChildren` (also grant the tty/video/sound/hidraw nodes the
//! device brings), `count` and `permissions`. Each matching `usb_device` with
//! a device node becomes one group; so does each matching device a USB/IP
//! server exports (origin `usbip`, no device node until the agent attaches
//! it on `Allocate`). The USB/IP device list carries no serial: a spec with
//! a serial matches local devices only.

use std::collections::BTreeMap;
use std::fmt;

use devsieve_sdk::prelude::*;
use serde::de::{self, Deserializer, Visitor};

/// The handler's config.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// generic-device-plugin dialect: any of these devices (hex strings).
    #[serde(default)]
    pub usb: Option<Vec<UsbSpec>>,
    /// usbip-device-plugin dialect: one device (numbers or hex strings).
    #[serde(default)]
    pub selector: Option<UsbSpec>,
    /// usbip-device-plugin dialect, several devices (one resource's entries).
    #[serde(default)]
    pub selectors: Option<Vec<UsbSpec>>,
    /// Also grant the device nodes of the device's children (ttyUSB0,
    /// hidraw3, video0, /dev/snd/pcmC1D0c, ...).
    #[serde(default)]
    pub include_children: bool,
    /// How many containers may hold one device at once (default 1).
    #[serde(default)]
    pub count: Option<u32>,
    /// Access to the granted nodes: any of `r`, `w`, `m` (default `rwm`).
    #[serde(default)]
    pub permissions: Option<String>,
    /// [`check`]'s answer, on first use: `select` runs once per candidate.
    #[serde(skip)]
    checked: std::cell::OnceCell<Result<Checked, HandlerError>>,
}

impl Config {
    fn checked(&self) -> Result<&Checked, HandlerError> {
        self.checked.get_or_init(|| check(self)).as_ref().map_err(Clone::clone)
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbSpec {
    #[serde(default)]
    pub vendor: Option<IdValue>,
    #[serde(default)]
    pub product: Option<IdValue>,
    #[serde(default)]
    pub serial: Option<IdValue>,
    /// The device's bus id (`1-1.2`: udev's KERNEL of the `usb_device`).
    #[serde(default, rename = "busId", alias = "bus_id")]
    pub bus_id: Option<String>,
    /// `HOST:PORT` of the USB/IP server the device must come from.
    #[serde(default)]
    pub server: Option<String>,
}

/// A value as the config wrote it: YAML may have made an id a number.
#[derive(Clone, Debug, PartialEq)]
pub enum IdValue {
    Text(String),
    Integer(i128),
    Float(f64),
}

impl<'de> serde::Deserialize<'de> for IdValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IdValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hex string like \"1a86\" or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IdValue, E> {
                Ok(IdValue::Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IdValue, E> {
                Ok(IdValue::Integer(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IdValue, E> {
                Ok(IdValue::Integer(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<IdValue, E> {
                Ok(IdValue::Float(v))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Which config a spec came from: the two read numbers differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dialect {
    /// generic-device-plugin `usb:` — ids are hex strings only.
    Gdp,
    /// usbip-device-plugin `selector:` — numbers are values, strings are hex.
    Usbip,
}

/// A resolved match rule; `None` matches anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub vendor: Option<u16>,
    pub product: Option<u16>,
    pub serial: Option<String>,
    pub bus_id: Option<String>,
    /// The devpath prefix of the server's devices: `usbip://HOST:PORT/`.
    pub server: Option<String>,
}

/// The config after validation.
#[derive(Debug)]
pub struct Checked {
    pub wanted: Vec<Wanted>,
    pub include_children: bool,
    pub share: u32,
    pub permissions: String,
}

/// Subsystems whose nodes a USB device commonly brings.
pub const CHILD_SUBSYSTEMS: [&str; 5] = ["tty", "video4linux", "sound", "hidraw", "usbmisc"];
const ATTRIBUTES: [&str; 7] = ["idVendor", "idProduct", "serial", "busnum", "devnum", "product", "manufacturer"];
const DEFAULT_PERMISSIONS: &str = "rwm";

fn parse_hex(field: &str, text: &str) -> Result<u16, HandlerError> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")).unwrap_or(digits);
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(HandlerError::field(
            field,
            format!(
                "`{text}` is not a 16-bit hex USB id: write 1 to 4 hex digits, with or without `0x` (e.g. \"1a86\")"
            ),
        ));
    }
    u16::from_str_radix(digits, 16).map_err(|e| HandlerError::field(field, e.to_string()))
}

fn resolve_id(field: &str, value: &IdValue, dialect: Dialect) -> Result<u16, HandlerError> {
    match (value, dialect) {
        (IdValue::Text(text), _) => parse_hex(field, text),
        (IdValue::Integer(n), Dialect::Gdp) => {
            let hint = match u16::try_from(*n) {
                Ok(v) => format!(" If you wrote {n}, write \"{n}\"; if you wrote 0x{v:04x}, write \"{v:04x}\"."),
                Err(_) => String::new(),
            };
            Err(HandlerError::field(
                field,
                format!(
                    "USB ids under `usb:` are hex strings, but this is the number {n}: YAML reads an unquoted id as a \
                     number (1209 as decimal 1209, 0x1209 as 4617), so it would match the wrong device. \
                     Quote it.{hint}"
                ),
            ))
        }
        (IdValue::Integer(n), Dialect::Usbip) => u16::try_from(*n)
            .map_err(|_| HandlerError::field(field, format!("{n} does not fit a 16-bit USB id (0 to 0xffff)"))),
        (IdValue::Float(f), _) => Err(HandlerError::field(
            field,
            format!("{f} is not a USB id: write a hex string like \"1a86\" or an integer like 0x1a86"),
        )),
    }
}

fn resolve_serial(field: &str, value: &Option<IdValue>) -> Result<Option<String>, HandlerError> {
    match value {
        None => Ok(None),
        Some(IdValue::Text(s)) if s.is_empty() => Ok(None),
        Some(IdValue::Text(s)) => Ok(Some(s.clone())),
        Some(_) => Err(HandlerError::field(
            field,
            "a serial is text: quote it (YAML turned it into a number, which loses leading zeros)",
        )),
    }
}

/// An id to match: under `usb:` one must be given; in the usbip dialect a
/// missing, zero or empty one matches anything, as in usbip-device-plugin.
fn resolve_wanted_id(field: &str, value: &Option<IdValue>, dialect: Dialect) -> Result<Option<u16>, HandlerError> {
    match (value, dialect) {
        (None, Dialect::Gdp) => {
            let which = field.rsplit('.').next().unwrap_or(field);
            Err(HandlerError::field(field, format!("missing: give the {which} id as a hex string, e.g. \"1a86\"")))
        }
        (None, Dialect::Usbip) => Ok(None),
        (Some(IdValue::Text(text)), Dialect::Usbip) if text.trim().is_empty() => Ok(None),
        (Some(value), _) => match resolve_id(field, value, dialect)? {
            0 if dialect == Dialect::Usbip => Ok(None),
            id => Ok(Some(id)),
        },
    }
}

fn resolve_spec(prefix: &str, spec: &UsbSpec, dialect: Dialect) -> Result<Wanted, HandlerError> {
    let text = |value: &Option<String>| value.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let server = match text(&spec.server) {
        None => None,
        Some(server) if server.contains('/') || !server.contains(':') => {
            return Err(HandlerError::field(
                format!("{prefix}.server"),
                format!("`{server}` is not HOST:PORT (e.g. usbip.example.com:3240)"),
            ));
        }
        Some(server) => Some(format!("usbip://{server}/")),
    };
    Ok(Wanted {
        vendor: resolve_wanted_id(&format!("{prefix}.vendor"), &spec.vendor, dialect)?,
        product: resolve_wanted_id(&format!("{prefix}.product"), &spec.product, dialect)?,
        serial: resolve_serial(&format!("{prefix}.serial"), &spec.serial)?,
        bus_id: text(&spec.bus_id),
        server,
    })
}

/// Validates the config and resolves ids.
pub fn check(config: &Config) -> Result<Checked, HandlerError> {
    let selectors = match (&config.selector, &config.selectors) {
        (Some(_), Some(_)) => {
            return Err(HandlerError::new("give either `selector` (one device) or `selectors` (a list), not both"));
        }
        (Some(one), None) => Some(vec![("selector".to_string(), one)]),
        (None, Some(list)) => {
            Some(list.iter().enumerate().map(|(i, spec)| (format!("selectors[{i}]"), spec)).collect())
        }
        (None, None) => None,
    };
    let wanted = match (&config.usb, selectors) {
        (Some(_), Some(_)) => {
            return Err(HandlerError::new(
                "give either `usb` (generic-device-plugin style: a list of {vendor, product, serial}) or `selector` \
                 (usbip-device-plugin style: one {vendor, product}), not both",
            ));
        }
        (None, None) => {
            return Err(HandlerError::new(
                "say which devices to match: `usb: [{vendor: \"1a86\", product: \"7523\"}]` or \
                 `selector: {vendor: 0x1a86, product: 0x7523}`",
            ));
        }
        (Some(list), None) => {
            if list.is_empty() {
                return Err(HandlerError::field("usb", "list at least one {vendor, product} to match"));
            }
            list.iter()
                .enumerate()
                .map(|(i, spec)| resolve_spec(&format!("usb[{i}]"), spec, Dialect::Gdp))
                .collect::<Result<Vec<_>, _>>()?
        }
        (None, Some(selectors)) => {
            if selectors.is_empty() {
                return Err(HandlerError::field("selectors", "list at least one selector"));
            }
            selectors
                .into_iter()
                .map(|(field, spec)| resolve_spec(&field, spec, Dialect::Usbip))
                .collect::<Result<Vec<_>, _>>()?
        }
    };
    let share = match config.count {
        None => 1,
        Some(0) => {
            return Err(HandlerError::field("count", "count must be at least 1 (omit it for 1)"));
        }
        Some(n) => n,
    };
    let permissions = devsieve_sdk::permissions("permissions", config.permissions.as_deref(), DEFAULT_PERMISSIONS)?;
    Ok(Checked { wanted, include_children: config.include_children, share, permissions })
}

fn hex_attribute(device: Device<'_>, name: &str) -> Option<u16> {
    u16::from_str_radix(device.attribute(name)?.trim(), 16).ok()
}

/// The device's serial as sysfs gives it (trimmed), if it has a non-empty one.
fn serial(device: Device<'_>) -> Option<&str> {
    device.attribute("serial").map(str::trim).filter(|s| !s.is_empty())
}

/// Is this a `usb_device` the config asks for?
pub fn is_wanted_usb_device(checked: &Checked, device: Device<'_>) -> bool {
    if device.subsystem() != "usb" || device.devtype() != Some("usb_device") {
        return false;
    }
    let (Some(vendor), Some(product)) = (hex_attribute(device, "idVendor"), hex_attribute(device, "idProduct")) else {
        return false;
    };
    let remote = device.origin() == Origin::Usbip;
    checked.wanted.iter().any(|w| {
        w.vendor.is_none_or(|v| v == vendor)
            && w.product.is_none_or(|p| p == product)
            && w.serial.as_deref().is_none_or(|s| serial(device) == Some(s))
            && w.bus_id.as_deref().is_none_or(|b| device.kernel() == b)
            && w.server.as_deref().is_none_or(|prefix| remote && device.devpath().starts_with(prefix))
    })
}

/// The nearest strict ancestor that is a wanted `usb_device`.
fn wanted_ancestor<'a>(checked: &Checked, device: Device<'a>) -> Option<Device<'a>> {
    device.self_and_ancestors().skip(1).find(|a| is_wanted_usb_device(checked, *a))
}

/// A device a USB/IP server exports: nothing to grant until the agent
/// attaches it (it then grants the local nodes), so the group is its
/// identity: the server and bus id, which no restart or twin changes.
fn remote_group(checked: &Checked, root: Device<'_>) -> DeviceGroup {
    let id = |name| root.attribute(name).map(str::trim).unwrap_or_default().to_ascii_lowercase();
    let server = root.devpath().strip_prefix("usbip://").and_then(|rest| rest.rsplit_once('/')).map(|(s, _)| s);
    let mut env = vec![
        ("USB_BUSID".to_string(), root.kernel().to_string()),
        ("USB_PRODUCT_ID".to_string(), id("idProduct")),
        ("USB_VENDOR_ID".to_string(), id("idVendor")),
        ("USBIP_SERVER".to_string(), server.unwrap_or_default().to_string()),
    ];
    env.sort();
    DeviceGroup {
        id: root.devpath().to_string(),
        members: vec![root.index()],
        device_nodes: Vec::new(),
        mounts: Vec::new(),
        env,
        share: checked.share,
    }
}

pub struct UsbId;

impl Handler for UsbId {
    const NAME: &'static str = "usb-id";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Config = Config;

    fn needs(config: &Config) -> Result<Requirements, HandlerError> {
        let checked = config.checked()?;
        let mut subsystems = vec!["usb"];
        if checked.include_children {
            subsystems.extend(CHILD_SUBSYSTEMS);
        }
        Ok(Requirements::udev(subsystems).attributes(ATTRIBUTES).with_usbip())
    }

    fn select(config: &Config, device: Device<'_>) -> bool {
        let Ok(checked) = config.checked() else {
            return false;
        };
        is_wanted_usb_device(checked, device)
            || (checked.include_children && device.devnode().is_some() && wanted_ancestor(checked, device).is_some())
    }

    /// A device's group is its wanted `usb_device` with the children it
    /// owns, named by vendor:product:serial unless another device has the
    /// same (see `group`). So the key is that name when there is a serial
    /// (every device that could share it is grouped at once), else the
    /// `usb_device`'s devpath; a `usb_device` without a serial or children
    /// stands alone.
    fn partition(config: &Config, device: Device<'_>) -> Partition {
        let Ok(checked) = config.checked() else {
            return Partition::All;
        };
        let owner = if is_wanted_usb_device(checked, device) { Some(device) } else { wanted_ancestor(checked, device) };
        let Some(owner) = owner else {
            return Partition::All;
        };
        match serial(owner) {
            Some(serial) => {
                let id = |name| owner.attribute(name).map(str::trim).unwrap_or_default().to_ascii_lowercase();
                Partition::Key(format!("{}:{}:{serial}", id("idVendor"), id("idProduct")))
            }
            None if checked.include_children => Partition::Key(owner.devpath().to_string()),
            None => Partition::Alone,
        }
    }

    fn group(config: &Config, selected: &[Device<'_>]) -> Result<Vec<DeviceGroup>, HandlerError> {
        let checked = config.checked()?;
        // Each matching usb_device with the selected descendants it owns
        // (a descendant belongs to its nearest matching usb_device).
        let mut owned: BTreeMap<u32, (Device<'_>, Vec<Device<'_>>)> = BTreeMap::new();
        for &device in selected {
            if is_wanted_usb_device(checked, device) {
                owned.entry(device.index()).or_insert((device, Vec::new()));
            }
        }
        if checked.include_children {
            for &device in selected {
                if is_wanted_usb_device(checked, device) || device.devnode().is_none() {
                    continue;
                }
                if let Some(root) = wanted_ancestor(checked, device) {
                    owned.entry(root.index()).or_insert((root, Vec::new())).1.push(device);
                }
            }
        }

        let mut groups = Vec::new();
        for (root, children) in owned.values() {
            let Some(devnode) = root.devnode() else {
                if root.origin() == Origin::Usbip {
                    groups.push((remote_group(checked, *root), root.devpath()));
                }
                continue;
            };
            let mut members = vec![root.index()];
            let mut child_nodes: Vec<(&str, u32)> =
                children.iter().filter_map(|c| c.devnode().map(|n| (n, c.index()))).collect();
            child_nodes.sort();
            child_nodes.dedup_by(|a, b| a.0 == b.0);
            let mut paths = vec![devnode];
            for (node, index) in &child_nodes {
                members.push(*index);
                if *node != devnode {
                    paths.push(node);
                }
            }
            let device_nodes = paths
                .iter()
                .map(|p| DeviceNode {
                    host_path: p.to_string(),
                    container_path: None,
                    permissions: checked.permissions.clone(),
                })
                .collect();

            let vendor = root.attribute("idVendor").map(str::trim).unwrap_or_default().to_ascii_lowercase();
            let product = root.attribute("idProduct").map(str::trim).unwrap_or_default().to_ascii_lowercase();
            let mut env = vec![
                ("USB_BUSID".to_string(), root.kernel().to_string()),
                ("USB_DEVNODE".to_string(), devnode.to_string()),
                ("USB_PRODUCT_ID".to_string(), product.clone()),
                ("USB_VENDOR_ID".to_string(), vendor.clone()),
            ];
            if let Some(serial) = serial(*root) {
                env.push(("USB_SERIAL".to_string(), serial.to_string()));
            }
            if !child_nodes.is_empty() {
                let list: Vec<&str> = child_nodes.iter().map(|(n, _)| *n).collect();
                env.push(("USB_CHILD_DEVNODES".to_string(), list.join(" ")));
            }
            env.sort();
            let id = match serial(*root) {
                Some(serial) => format!("{vendor}:{product}:{serial}"),
                None => root.devpath().to_string(),
            };
            let group = DeviceGroup { id, members, device_nodes, mounts: Vec::new(), env, share: checked.share };
            groups.push((group, root.devpath()));
        }

        // Serials are not always unique (cheap clones share "0001"): devices
        // whose vendor:product:serial collide are named by devpath instead.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (group, _) in &groups {
            *seen.entry(group.id.clone()).or_default() += 1;
        }
        let mut groups: Vec<DeviceGroup> = groups
            .into_iter()
            .map(|(mut group, devpath)| {
                if seen[&group.id] > 1 {
                    group.id = devpath.to_string();
                }
                group
            })
            .collect();
        groups.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(groups)
    }
}

export_handler!(UsbId);

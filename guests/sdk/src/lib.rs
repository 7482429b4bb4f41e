//! The devsieve handler SDK: everything a discovery handler author needs.
//!
//! Implement [`Handler`] for a type and call [`export_handler!`] once:
//!
//! ```ignore
//! use devsieve_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config { vendor: String }
//!
//! struct Zigbee;
//! impl Handler for Zigbee {
//!     const NAME: &'static str = "zigbee";
//!     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
//!     type Config = Config;
//!     fn needs(_: &Config) -> Result<Requirements, HandlerError> {
//!         Ok(Requirements::udev(["usb"]).attributes(["idVendor"]))
//!     }
//!     fn select(config: &Config, device: Device<'_>) -> bool {
//!         device.attribute("idVendor") == Some(config.vendor.as_str())
//!     }
//!     // The default `group` makes one group per device: say so, and a
//!     // change to one device never regroups the others.
//!     fn partition(_: &Config, _: Device<'_>) -> Partition {
//!         Partition::Alone
//!     }
//! }
//! export_handler!(Zigbee);
//! ```
//!
//! The SDK owns the generated WIT bindings and hides them: handlers see plain
//! Rust types and a [`Device`] view with parent navigation.

mod device;

pub use device::{Device, Node, Snapshot, testing};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "handler",
        pub_export_macro: true,
        export_macro_name: "__export_discovery",
        default_bindings_module: "::devsieve_sdk::bindings",
        // Tests compare groups (`testing::partitioned` against `testing::whole`).
        additional_derives: [PartialEq],
    });
}

use bindings::devsieve::handler::types;
pub use types::{DeviceGroup, DeviceNode, HandlerError, HandlerInfo, Mount, Origin, Requirements};

/// The contract version this SDK builds handlers for: the WIT package version,
/// which build.rs reads from `wit/handler.wit`.
pub const CONTRACT_VERSION: &str = env!("DEVSIEVE_CONTRACT_VERSION");

/// Everything a handler usually imports.
pub mod prelude {
    pub use crate::{
        Device, DeviceGroup, DeviceNode, Handler, HandlerError, Mount, Node, Origin, Partition, Requirements, Snapshot,
        export_handler,
    };
}

/// Which other selected devices a selected device's groups depend on; see
/// [`Handler::partition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Partition {
    /// None: its groups are `group(config, &[device])`, made at once while
    /// selecting, and a change to any other device never regroups it.
    Alone,
    /// The other selected devices with the same key: `group` sees them
    /// together, and a change to one regroups that key only.
    Key(String),
    /// Every selected device that says `All` (the same as one shared key).
    All,
}

/// A discovery handler. Only `needs` and `select` are required; the default
/// `group` advertises every selected device that has a device node on its own.
pub trait Handler {
    /// Short name, shown by `devsieve handler inspect` and in logs.
    const NAME: &'static str;
    /// The handler's own version (usually `env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;
    /// The handler's config, deserialized from the JSON the operator's YAML
    /// became. Use `#[serde(deny_unknown_fields)]` so typos are errors.
    type Config: serde::de::DeserializeOwned;

    /// What the host must collect for this config. Also the place to reject
    /// a config that parses but makes no sense.
    fn needs(config: &Self::Config) -> Result<Requirements, HandlerError>;

    /// Does the handler want this device? Called per candidate; the host
    /// caches the answer until the device or one of its ancestors changes.
    fn select(config: &Self::Config, device: Device<'_>) -> bool;

    /// Which other selected devices `device`'s groups depend on. The
    /// default, [`Partition::All`], is always right and regroups every
    /// selected device whenever one changes; a handler whose groups are per
    /// device says [`Partition::Alone`], one whose groups gather the devices
    /// under a parent says [`Partition::Key`] with that parent's devpath.
    /// `testing::partitioned` checks the answer against grouping everything.
    fn partition(config: &Self::Config, device: Device<'_>) -> Partition {
        let _ = (config, device);
        Partition::All
    }

    /// Groups to advertise from the selected devices: those of one partition
    /// (one device, for [`Partition::Alone`]), or all of them.
    fn group(config: &Self::Config, selected: &[Device<'_>]) -> Result<Vec<DeviceGroup>, HandlerError> {
        let _ = config;
        Ok(selected.iter().filter_map(|device| device.single_group("rwm")).collect())
    }
}

impl Requirements {
    /// Nothing: extend with the builder methods below.
    pub fn none() -> Self {
        Requirements {
            subsystems: Vec::new(),
            all_udev: false,
            properties: Vec::new(),
            attributes: Vec::new(),
            paths: Vec::new(),
            usbip: false,
        }
    }
    /// udev devices of these subsystems.
    pub fn udev<I: IntoIterator<Item = S>, S: Into<String>>(subsystems: I) -> Self {
        Requirements { subsystems: subsystems.into_iter().map(Into::into).collect(), ..Self::none() }
    }
    /// Every udev device, whatever its subsystem.
    pub fn all_udev() -> Self {
        Requirements { all_udev: true, ..Self::none() }
    }
    pub fn properties<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.properties.extend(names.into_iter().map(Into::into));
        self
    }
    pub fn attributes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.attributes.extend(names.into_iter().map(Into::into));
        self
    }
    pub fn paths<I: IntoIterator<Item = S>, S: Into<String>>(mut self, patterns: I) -> Self {
        self.paths.extend(patterns.into_iter().map(Into::into));
        self
    }
    pub fn with_usbip(mut self) -> Self {
        self.usbip = true;
        self
    }
}

impl HandlerError {
    /// An error about the whole config or the devices.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError { field: None, message: message.into() }
    }
    /// An error about one config field, e.g. `udevRules[2]`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError { field: Some(field.into()), message: message.into() }
    }
}

/// Checks the device access a handler's config asks for (cgroup style: any
/// of `r` read, `w` write, `m` mknod, each at most once); `None` or empty
/// means `default`. `field` names it in the error (`groups[0].paths[1].permissions`).
pub fn permissions(field: &str, given: Option<&str>, default: &str) -> Result<String, HandlerError> {
    let given = match given {
        None | Some("") => return Ok(default.to_string()),
        Some(given) => given,
    };
    let mut seen = String::new();
    for c in given.chars() {
        if !matches!(c, 'r' | 'w' | 'm') {
            return Err(HandlerError::field(
                field,
                format!(
                    "`{given}`: `{c}` is not a permission; use any of r (read), w (write) and m (mknod), each once, e.g. \"rw\""
                ),
            ));
        }
        if seen.contains(c) {
            return Err(HandlerError::field(field, format!("`{given}`: `{c}` is given twice")));
        }
        seen.push(c);
    }
    Ok(given.to_string())
}

/// Parses a handler's config, naming the field that is wrong.
pub fn parse_config<C: serde::de::DeserializeOwned>(json: &str) -> Result<C, HandlerError> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        if path == "." { HandlerError::new(message) } else { HandlerError::field(path, message) }
    })
}

/// Glue between the generated bindings and a [`Handler`]; used by
/// [`export_handler!`] only.
#[doc(hidden)]
pub mod __private {
    use super::*;
    pub use bindings::__export_discovery as export;
    pub use bindings::exports::devsieve::handler::discovery::Guest;
    pub use types::Verdict;

    pub fn metadata<H: Handler>() -> HandlerInfo {
        HandlerInfo {
            name: H::NAME.to_string(),
            version: H::VERSION.to_string(),
            contract: CONTRACT_VERSION.to_string(),
        }
    }

    pub fn needs<H: Handler>(config: &str) -> Result<Requirements, HandlerError> {
        H::needs(&parse_config::<H::Config>(config)?)
    }

    pub fn select<H: Handler>(config: &str, snapshot: types::Snapshot) -> Result<Vec<Verdict>, HandlerError> {
        let config = parse_config::<H::Config>(config)?;
        let snapshot = Snapshot::new(snapshot)?;
        snapshot.candidates().map(|device| verdict::<H>(&config, device)).collect()
    }

    /// What the contract's `select` answers about one device.
    pub fn verdict<H: Handler>(config: &H::Config, device: Device<'_>) -> Result<Verdict, HandlerError> {
        if !H::select(config, device) {
            return Ok(Verdict::Skip);
        }
        Ok(match H::partition(config, device) {
            Partition::Alone => Verdict::Alone(H::group(config, &[device])?),
            Partition::Key(key) => Verdict::Grouped(key),
            Partition::All => Verdict::Grouped(String::new()),
        })
    }

    pub fn group<H: Handler>(config: &str, snapshot: types::Snapshot) -> Result<Vec<DeviceGroup>, HandlerError> {
        let config = parse_config::<H::Config>(config)?;
        let snapshot = Snapshot::new(snapshot)?;
        let selected: Vec<Device<'_>> = snapshot.candidates().collect();
        H::group(&config, &selected)
    }
}

/// Exports a [`Handler`] as the component's `devsieve:handler/discovery`.
/// On other targets than wasm32 it expands to nothing, so a handler's unit
/// tests run natively.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        #[cfg(target_arch = "wasm32")]
        // The generated ABI glue is the one place a handler needs `unsafe`.
        #[allow(unsafe_code)]
        const _: () = {
            struct DevsieveExport;
            impl $crate::__private::Guest for DevsieveExport {
                fn metadata() -> $crate::HandlerInfo {
                    $crate::__private::metadata::<$handler>()
                }
                fn needs(config: String) -> Result<$crate::Requirements, $crate::HandlerError> {
                    $crate::__private::needs::<$handler>(&config)
                }
                fn select(
                    config: String,
                    snapshot: $crate::bindings::devsieve::handler::types::Snapshot,
                ) -> Result<Vec<$crate::__private::Verdict>, $crate::HandlerError> {
                    $crate::__private::select::<$handler>(&config, snapshot)
                }
                fn group(
                    config: String,
                    snapshot: $crate::bindings::devsieve::handler::types::Snapshot,
                ) -> Result<Vec<$crate::DeviceGroup>, $crate::HandlerError> {
                    $crate::__private::group::<$handler>(&config, snapshot)
                }
            }
    $crate::__private::export!(DevsieveExport with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    /// build.rs took the version from the package line itself: the line
    /// rebuilt from `CONTRACT_VERSION` is in the WIT the bindings come from.
    #[test]
    fn contract_version_is_the_wit_package_version() {
        let wit = include_str!("../../../wit/handler.wit");
        let line = format!("package devsieve:handler@{};", super::CONTRACT_VERSION);
        assert!(wit.lines().any(|l| l.trim() == line), "no `{line}` in wit/handler.wit");
    }
}

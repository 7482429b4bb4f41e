//! usbip-device-plugin's `config.yaml`, read as the devsieve config it
//! means, so its users keep their file and their pods' resource names.

use std::path::Path;

use serde::Deserialize;
use serde_json::json;

use super::{Format, Imported};
use crate::config::usbip::RawUsbip;
use crate::config::{ConfigError, ExtraNode, Locality, RawConfig, RawResource, Server, deserialize};

/// usbip-device-plugin's resource domain: its users' pods ask for
/// `usbip.dev.mvalvekens.be/NAME`.
pub const USBIP_PLUGIN_DOMAIN: &str = "usbip.dev.mvalvekens.be";

/// `text`, whose `resources` is a mapping, as usbip-device-plugin means it.
pub(super) fn read(file: &Path, text: &str) -> Result<Imported, ConfigError> {
    let raw = deserialize::<PluginConfig>(file, text)?.into_raw();
    Ok(Imported { format: Format::UsbipDevicePlugin, raw, notes: Vec::new() })
}

/// usbip-device-plugin's file: `resources` maps each resource name to the
/// devices that may serve it. `domain` is devsieve's addition (the plugin
/// takes it from a flag).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginConfig {
    #[serde(default)]
    domain: Option<String>,
    resources: std::collections::BTreeMap<String, Vec<PluginDevice>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginDevice {
    target: Server,
    #[serde(default)]
    selector: PluginSelector,
    #[serde(default)]
    extras: Vec<PluginExtra>,
}

/// Which device of the target: a zero or empty field matches anything.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginSelector {
    #[serde(default)]
    vendor: Option<serde_json::Value>,
    #[serde(default)]
    product: Option<serde_json::Value>,
    #[serde(default)]
    bus_id: Option<String>,
}

/// A host device node granted beside the USB device.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginExtra {
    host_path: String,
    #[serde(default)]
    container_path: Option<String>,
    #[serde(default)]
    permissions: Option<String>,
}

impl PluginConfig {
    /// The devsieve config this file means: one `usb-id` resource per name,
    /// taking remote devices only, with each entry a selector pinned to its
    /// server; every target a server to list.
    fn into_raw(self) -> RawConfig {
        let mut servers: Vec<Server> = Vec::new();
        let resources = self
            .resources
            .into_iter()
            .map(|(name, devices)| {
                let mut selectors = Vec::with_capacity(devices.len());
                let mut extras = Vec::new();
                for device in devices {
                    if !servers.contains(&device.target) {
                        servers.push(device.target.clone());
                    }
                    let mut selector = serde_json::Map::new();
                    selector.insert("server".into(), json!(device.target.to_string()));
                    for (field, value) in [("vendor", device.selector.vendor), ("product", device.selector.product)] {
                        if let Some(value) = value {
                            selector.insert(field.into(), hex_id(value));
                        }
                    }
                    if let Some(bus_id) = device.selector.bus_id {
                        selector.insert("busId".into(), json!(bus_id));
                    }
                    selectors.push(serde_json::Value::Object(selector));
                    extras.extend(device.extras.into_iter().map(|extra| ExtraNode {
                        container_path: extra.container_path,
                        host_path: extra.host_path.into(),
                        permissions: extra.permissions,
                    }));
                }
                RawResource {
                    name,
                    handler: "usb-id".into(),
                    from: Locality::Remote,
                    config: json!({ "selectors": selectors }),
                    extra_device_nodes: extras,
                    ..RawResource::default()
                }
            })
            .collect();
        RawConfig {
            domain: Some(self.domain.unwrap_or_else(|| USBIP_PLUGIN_DOMAIN.to_string())),
            usbip: Some(RawUsbip { servers, ..RawUsbip::default() }),
            resources,
        }
    }
}

/// A USB id the plugin's YAML gave as a number (`0x1050` is 4176 to YAML)
/// as the hex text people read ids in, `"1050"`, which `usb-id` takes as the
/// same id. Zero (any id) and what is not a 16-bit id stay as they are, for
/// the handler to read or refuse.
fn hex_id(value: serde_json::Value) -> serde_json::Value {
    match value.as_u64() {
        Some(id @ 1..=0xffff) => json!(format!("{id:04x}")),
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, HandlerRef};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/devsieve/config.yaml"), text).map_err(|e| e.to_string())
    }

    /// The example from usbip-device-plugin's README, as its users have it.
    const PLUGIN_README: &str = "resources:
  some-device:
    - target:
        host: usbip.example.com
        port: 3240
      selector:
        vendor: 0x1050
        product: 0x0407
  other-device:
    - target:
        host: usbip.example.com
        port: 3240
      selector:
        vendor: 0x20a0
        product: 0x4230
      extras:
        - host_path: /dev/bus/usb
          container_path: /dev/bus/usb
";

    #[test]
    fn usbip_device_plugin_config_is_read_as_it_is() {
        let config = parse(PLUGIN_README).unwrap();
        assert_eq!(config.domain, USBIP_PLUGIN_DOMAIN);
        assert_eq!(config.usbip.servers, [Server { host: "usbip.example.com".into(), port: 3240 }]);
        let names: Vec<&str> = config.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["usbip.dev.mvalvekens.be/other-device", "usbip.dev.mvalvekens.be/some-device"]);
        let some = &config.resources[1];
        assert_eq!(some.handler, HandlerRef::Builtin("usb-id".into()));
        assert_eq!(some.from, Locality::Remote);
        assert_eq!(
            some.handler_config,
            r#"{"selectors":[{"product":"0407","server":"usbip.example.com:3240","vendor":"1050"}]}"#
        );
        let other = &config.resources[0];
        assert_eq!(other.extra_device_nodes.len(), 1);
        assert_eq!(other.extra_device_nodes[0].host_path, "/dev/bus/usb");
        assert_eq!(other.extra_device_nodes[0].permissions, "rwm");
    }

    #[test]
    fn usbip_device_plugin_domain_and_errors() {
        let config =
            parse("domain: usb.example.com\nresources: {a: [{target: {host: h}, selector: {bus_id: 1-1}}]}\n").unwrap();
        assert_eq!(config.resources[0].name, "usb.example.com/a");
        assert!(config.resources[0].handler_config.contains(r#""busId":"1-1""#));
        let error = parse("resources: {a: [{target: {host: h}, selector: {vendr: 1}}]}\n").unwrap_err();
        assert!(error.contains("resources.a[0].selector") && error.contains("vendr"), "{error}");
        let error = parse("resources: {a: [{selector: {vendor: 1}}]}\n").unwrap_err();
        assert!(error.contains("missing field `target`"), "{error}");
    }

    #[test]
    fn import_round_trips() {
        super::super::tests::import_round_trip(PLUGIN_README);
    }
}

//! Finds Zigbee coordinator sticks and grants their serial port.
//!
//! A coordinator is a USB device whose vendor:product ids are one of the
//! known sticks' and — where those ids belong to a general-purpose USB-serial
//! bridge that many non-Zigbee adaptors use too — whose USB product string
//! says Zigbee. Each stick found becomes one device a pod can request; the
//! pod gets the tty node (`/dev/ttyUSB0`, `/dev/ttyACM0`).
//!
//! Config (every field optional):
//!
//! ```yaml
//! families: [ti, silabs]        # which chips to look for (default: both)
//! permissions: rw               # access to the tty node (default rw)
//! extra:                        # more sticks: ids, and optionally a product string
//!   - {vendor: "1cf1", product: "0030", productContains: "ConBee"}
//! ```

use devsieve_sdk::prelude::*;

/// The handler's config, as the operator writes it under `config:`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub families: Option<Vec<Family>>,
    #[serde(default)]
    pub permissions: Option<String>,
    #[serde(default)]
    pub extra: Vec<Stick>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Texas Instruments CC2531 / CC2652 (Z-Stack).
    Ti,
    /// Silicon Labs EFR32 (EmberZNet).
    Silabs,
}

/// One kind of stick: USB ids (4 hex digits) and, optionally, a piece of the
/// USB product string that must be there (case-insensitive).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Stick {
    pub vendor: String,
    pub product: String,
    #[serde(default)]
    pub product_contains: Option<String>,
}

/// The sticks this handler knows, with the chip family each carries.
pub const KNOWN: &[(Family, &str, &str, Option<&str>, &str)] = &[
    // Silicon Labs CP210x bridge: also on countless plain serial adaptors, so the product string must say Zigbee.
    (Family::Ti, "10c4", "ea60", Some("zigbee"), "TI CC2652P behind a CP210x (Sonoff ZBDongle-P)"),
    // TI's own USB id: the CC2531 (and CC2652 firmwares with native USB).
    (Family::Ti, "0451", "16a8", None, "TI CC2531 / CC2652, native USB"),
    // WCH CH9102 bridge: the same, the product string must say Zigbee.
    (Family::Silabs, "1a86", "55d4", Some("zigbee"), "Silicon Labs EFR32MG21 behind a CH9102 (Sonoff ZBDongle-E)"),
];

/// Node subsystems a coordinator's serial port shows up in.
const TTY: &str = "tty";

struct Checked {
    sticks: Vec<Stick>,
    permissions: String,
}

fn check(config: &Config) -> Result<Checked, HandlerError> {
    let hex4 = |s: &str| s.len() == 4 && s.bytes().all(|b| b.is_ascii_hexdigit());
    for (i, stick) in config.extra.iter().enumerate() {
        for (field, value) in [("vendor", &stick.vendor), ("product", &stick.product)] {
            if !hex4(value) {
                return Err(HandlerError::field(
                    format!("extra[{i}].{field}"),
                    format!("{value:?} is not a USB id: write 4 hex digits, e.g. \"10c4\""),
                ));
            }
        }
    }
    let permissions = config.permissions.clone().unwrap_or_else(|| "rw".into());
    if permissions.is_empty() || !permissions.chars().all(|c| "rwm".contains(c)) {
        return Err(HandlerError::field("permissions", format!("{permissions:?}: use any of r, w, m")));
    }
    let families = config.families.clone().unwrap_or_else(|| vec![Family::Ti, Family::Silabs]);
    if families.is_empty() {
        return Err(HandlerError::field("families", "name at least one of ti, silabs"));
    }
    let mut sticks: Vec<Stick> = KNOWN
        .iter()
        .filter(|(family, ..)| families.contains(family))
        .map(|(_, vendor, product, contains, _)| Stick {
            vendor: vendor.to_string(),
            product: product.to_string(),
            product_contains: contains.map(str::to_string),
        })
        .collect();
    sticks.extend(config.extra.iter().cloned());
    Ok(Checked { sticks, permissions })
}

/// Is `device` (a tty) the serial port of one of `sticks`? Its nearest USB
/// device ancestor (the one with ids) decides.
fn is_coordinator(sticks: &[Stick], device: Device<'_>) -> bool {
    if device.subsystem() != TTY || device.devnode().is_none() {
        return false;
    }
    let Some(usb) = device.self_and_ancestors().find(|d| d.attribute("idVendor").is_some()) else {
        return false;
    };
    let (vendor, product) = (usb.attribute("idVendor"), usb.attribute("idProduct"));
    let name = usb.attribute("product").unwrap_or_default().to_ascii_lowercase();
    sticks.iter().any(|stick| {
        vendor.is_some_and(|v| v.eq_ignore_ascii_case(&stick.vendor))
            && product.is_some_and(|p| p.eq_ignore_ascii_case(&stick.product))
            && stick.product_contains.as_ref().is_none_or(|want| name.contains(&want.to_ascii_lowercase()))
    })
}

pub struct ZigbeeCoordinator;

impl Handler for ZigbeeCoordinator {
    const NAME: &'static str = "zigbee-coordinator";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Config = Config;

    fn needs(config: &Config) -> Result<Requirements, HandlerError> {
        check(config)?;
        // tty devices, and the USB ids and product string of their parents.
        Ok(Requirements::udev([TTY]).attributes(["idVendor", "idProduct", "product"]))
    }

    fn select(config: &Config, device: Device<'_>) -> bool {
        match check(config) {
            Ok(checked) => is_coordinator(&checked.sticks, device),
            Err(_) => false,
        }
    }

    /// Each coordinator is a group of its own: a stick plugged in or out
    /// never regroups the others.
    fn partition(_: &Config, _: Device<'_>) -> Partition {
        Partition::Alone
    }

    fn group(config: &Config, selected: &[Device<'_>]) -> Result<Vec<DeviceGroup>, HandlerError> {
        let checked = check(config)?;
        Ok(selected.iter().filter_map(|device| device.single_group(&checked.permissions)).collect())
    }
}

export_handler!(ZigbeeCoordinator);

#[cfg(test)]
mod tests {
    use super::*;
    use devsieve_sdk::testing::udev_node;

    /// tty node (0) → its usb_device (1, ids and product); parents come later.
    fn stick(vendor: &str, product: &str, name: &str) -> Snapshot {
        let mut usb = udev_node("/devices/usb1/1-1", "usb");
        usb.attributes = vec![
            ("idProduct".into(), product.into()),
            ("idVendor".into(), vendor.into()),
            ("product".into(), name.into()),
        ];
        let mut tty = udev_node("/devices/usb1/1-1/1-1:1.0/ttyUSB0/tty/ttyUSB0", "tty");
        tty.devnode = Some("/dev/ttyUSB0".into());
        tty.parent = Some(1);
        Snapshot::from_parts(vec![tty, usb], vec![0]).unwrap()
    }

    fn config(yaml_json: &str) -> Config {
        devsieve_sdk::parse_config(yaml_json).unwrap()
    }

    fn selects(config: &Config, snapshot: &Snapshot) -> bool {
        ZigbeeCoordinator::select(config, snapshot.device(0))
    }

    #[test]
    fn finds_the_known_sticks() {
        let all = config("{}");
        assert!(selects(&all, &stick("10c4", "ea60", "Sonoff Zigbee 3.0 USB Dongle Plus")));
        assert!(selects(&all, &stick("1a86", "55d4", "Sonoff Zigbee 3.0 USB Dongle Plus V2")));
        assert!(selects(&all, &stick("0451", "16a8", "TI CC2531 USB CDC")));
    }

    #[test]
    fn a_plain_serial_bridge_is_not_a_coordinator() {
        let all = config("{}");
        assert!(!selects(&all, &stick("10c4", "ea60", "CP2102 USB to UART Bridge Controller")));
        assert!(!selects(&all, &stick("1a86", "55d4", "USB Single Serial")));
        assert!(!selects(&all, &stick("1a86", "7523", "USB2.0-Serial")));
    }

    #[test]
    fn families_and_extra_sticks() {
        let ti = config(r#"{"families": ["ti"]}"#);
        assert!(!selects(&ti, &stick("1a86", "55d4", "Sonoff Zigbee 3.0 USB Dongle Plus V2")));
        assert!(selects(&ti, &stick("0451", "16a8", "")));
        let conbee = config(r#"{"extra": [{"vendor": "1cf1", "product": "0030", "productContains": "ConBee"}]}"#);
        assert!(selects(&conbee, &stick("1cf1", "0030", "ConBee II")));
    }

    #[test]
    fn bad_configs_name_the_field() {
        let error =
            ZigbeeCoordinator::needs(&config(r#"{"extra": [{"vendor": "10c", "product": "ea60"}]}"#)).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("extra[0].vendor"));
        let error = ZigbeeCoordinator::needs(&config(r#"{"permissions": "rwx"}"#)).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("permissions"));
        assert!(devsieve_sdk::parse_config::<Config>(r#"{"famlies": []}"#).is_err());
    }

    #[test]
    fn grants_the_tty_node() {
        let snapshot = stick("10c4", "ea60", "Sonoff Zigbee 3.0 USB Dongle Plus");
        let groups = ZigbeeCoordinator::group(&config("{}"), &[snapshot.device(0)]).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].device_nodes[0].host_path, "/dev/ttyUSB0");
        assert_eq!(groups[0].device_nodes[0].permissions, "rw");
    }
}

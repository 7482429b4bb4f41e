//! Local devices from the udev database, through the real libudev.
//!
//! Enumerates only the subsystems a handler asked for and reads only the
//! properties and attributes it named, on each device and its ancestors
//! (udev's ATTRS/KERNELS keys match on parents). An ancestor shared by many
//! devices is read once.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::{DeviceSource, SourceError};
use crate::contract::{Node, Origin, Requirements};
use crate::model::DeviceTable;

pub struct UdevSource;

impl DeviceSource for UdevSource {
    fn collect(&self, needs: &Requirements, _roots: &[PathBuf], table: &mut DeviceTable) -> Result<(), SourceError> {
        if !needs.all_udev && needs.subsystems.is_empty() {
            return Ok(());
        }
        let err = |context: &'static str| move |source| SourceError::Udev { context, source };
        let scans: Vec<Option<&str>> =
            if needs.all_udev { vec![None] } else { needs.subsystems.iter().map(|s| Some(s.as_str())).collect() };
        for subsystem in scans {
            let mut enumerator = udev::Enumerator::new().map_err(err("creating an enumerator"))?;
            if let Some(subsystem) = subsystem {
                enumerator.match_subsystem(subsystem).map_err(err("matching a subsystem"))?;
            }
            for device in enumerator.scan_devices().map_err(err("scanning devices"))? {
                let candidate = !through_vhci(&device);
                add_with_ancestors(&device, needs, table, candidate);
            }
        }
        Ok(())
    }

    fn reread(&self, syspath: &Path, needs: &Requirements, candidate: bool) -> Option<DeviceTable> {
        let device = udev::Device::from_syspath(syspath).ok()?;
        let mut table = DeviceTable::default();
        let candidate = candidate && !through_vhci(&device);
        add_with_ancestors(&device, needs, &mut table, candidate);
        Some(table)
    }
}

/// A device attached through USB/IP's virtual host controller is a remote
/// device: the resource it was attached for holds it, and no local resource
/// may offer it to another pod.
fn through_vhci(device: &udev::Device) -> bool {
    device.devpath().to_string_lossy().contains("/vhci_hcd.")
}

fn add_with_ancestors(device: &udev::Device, needs: &Requirements, table: &mut DeviceTable, candidate: bool) {
    let mut current = Some(device.clone());
    let mut candidate = candidate;
    while let Some(device) = current {
        let devpath = lossy(device.devpath());
        let parent = device.parent();
        let parent_devpath = parent.as_ref().map(|p| lossy(p.devpath()));
        let known = table.contains(&devpath);
        table.add(node(&device, devpath, needs), parent_devpath, candidate);
        if known {
            // Its ancestors are in already.
            return;
        }
        candidate = false;
        current = parent;
    }
}

fn node(device: &udev::Device, devpath: String, needs: &Requirements) -> Node {
    let all_properties = needs.properties.iter().any(|p| p == "*");
    let mut properties: Vec<(String, String)> = if all_properties {
        device.properties().map(|p| (lossy(p.name()), lossy(p.value()))).collect()
    } else {
        needs
            .properties
            .iter()
            .filter_map(|name| device.property_value(name).map(|v| (name.clone(), lossy(v))))
            .collect()
    };
    properties.sort();
    let mut attributes: Vec<(String, String)> = needs
        .attributes
        .iter()
        .filter_map(|name| device.attribute_value(name).map(|v| (name.clone(), lossy(v))))
        .collect();
    attributes.sort();
    let split = |name: &str, separator: char| -> Vec<String> {
        let mut items: Vec<String> = device
            .property_value(name)
            .map(|v| lossy(v).split(separator).filter(|s| !s.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        items.sort();
        items.dedup();
        items
    };
    Node {
        origin: Origin::Udev,
        kernel: lossy(device.sysname()),
        subsystem: device.subsystem().map(lossy).unwrap_or_default(),
        devtype: device.devtype().map(lossy),
        driver: device.driver().map(lossy),
        devnode: device.devnode().map(|p| p.to_string_lossy().into_owned()),
        devlinks: split("DEVLINKS", ' '),
        tags: split("TAGS", ':'),
        properties,
        attributes,
        parent: None,
        devpath,
    }
}

fn lossy(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

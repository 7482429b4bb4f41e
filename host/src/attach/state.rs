//! The attachments this node holds, on disk: which remote device (server
//! and busid) sits on which vhci port as which local device, for which
//! kubelet device id. Written atomically on every change, read at start,
//! so a restarted agent re-pairs each device exactly — two identical
//! sticks never swap ids, as they do when pairing by vendor and product.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use devsieve_proto::usbip::ExportedDevice;

use crate::config::Server;
use crate::support::files;

/// One remote device attached here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub server: Server,
    pub busid: String,
    /// The resource it was attached for, and the kubelet device ids it
    /// stands for (one per share unit): a container holding any holds it.
    pub resource: String,
    pub device_ids: Vec<String>,
    /// The vhci port it was attached on, and the local busid the kernel gave it.
    pub port: u32,
    pub local_busid: String,
    /// What was written to `attach` as the device: the remote bus and
    /// device number (`busnum << 16 | devnum`), which vhci_hcd's status
    /// shows for the port; a port another device took shows another.
    pub devid: u32,
    /// When it was attached: an attachment made anew is another one.
    pub attached_at: std::time::SystemTime,
    /// The device as its server described it, served while it is attached
    /// (its server no longer lists it).
    pub device: ExportedDevice,
}

/// vhci_hcd's device id of `device`: its remote bus and device number, 16 bits each.
pub fn devid(device: &ExportedDevice) -> u32 {
    (device.busnum << 16) | (device.devnum & 0xffff)
}

impl Attachment {
    /// Whether vhci_hcd's `ports` show this device on its port.
    pub fn is_on(&self, ports: &[super::vhci::PortStatus]) -> bool {
        ports.iter().any(|p| p.port == self.port && !p.is_free() && p.devid == self.devid)
    }

    /// Its remote devpath, `usbip://HOST:PORT/BUSID`: the key.
    pub fn devpath(&self) -> String {
        crate::source::usbip::devpath(&self.server, &self.busid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: cannot read: {source}", .file.display())]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{}: not an attachment record: {source}; delete it to start over (what it recorded stays attached: `usbip port` lists it, `usbip detach -p PORT` detaches it)", .file.display())]
    Parse { file: PathBuf, source: serde_json::Error },
    #[error("{}: cannot write: {source}", .file.display())]
    Write { file: PathBuf, source: std::io::Error },
}

/// The record file, `usbip-attachments.json` in the state directory.
#[derive(Clone, Debug)]
pub struct StateFile {
    file: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Record {
    attachments: Vec<Attachment>,
}

impl StateFile {
    pub fn in_dir(dir: &Path) -> StateFile {
        StateFile { file: dir.join("usbip-attachments.json") }
    }

    /// The attachments recorded, by devpath; none if there is no file.
    pub fn load(&self) -> Result<BTreeMap<String, Attachment>, StateError> {
        let bytes = match std::fs::read(&self.file) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => return Err(StateError::Read { file: self.file.clone(), source }),
        };
        let record: Record =
            serde_json::from_slice(&bytes).map_err(|source| StateError::Parse { file: self.file.clone(), source })?;
        Ok(record.attachments.into_iter().map(|a| (a.devpath(), a)).collect())
    }

    /// Replaces the record with `attachments`, atomically.
    pub fn save(&self, attachments: &BTreeMap<String, Attachment>) -> Result<(), StateError> {
        let record = Record { attachments: attachments.values().cloned().collect() };
        let text = serde_json::to_vec_pretty(&record).expect("attachments serialize");
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Write { file: self.file.clone(), source })?;
        }
        files::write_atomically(&self.file, &text, files::PRIVATE)
            .map_err(|source| StateError::Write { file: self.file.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(busid: &str, port: u32) -> Attachment {
        Attachment {
            server: Server { host: "10.0.0.5".into(), port: 3240 },
            busid: busid.into(),
            resource: "devsieve.io/stick".into(),
            device_ids: vec![format!("{busid}-id")],
            port,
            local_busid: format!("2-{}", port + 1),
            devid: (1 << 16) | (port + 2),
            attached_at: std::time::SystemTime::UNIX_EPOCH,
            device: ExportedDevice {
                path: format!("/sys/devices/platform/dummy_hcd.0/usb1/{busid}"),
                busid: busid.into(),
                busnum: 1,
                devnum: port + 2,
                speed: 3,
                id_vendor: 0x1a86,
                id_product: 0x7523,
                bcd_device: 0x0264,
                device_class: 0,
                device_subclass: 0,
                device_protocol: 0,
                configuration_value: 1,
                num_configurations: 1,
                num_interfaces: 1,
                interfaces: vec![devsieve_proto::usbip::Interface { class: 2, subclass: 2, protocol: 0 }],
            },
        }
    }

    #[test]
    fn round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::in_dir(&dir.path().join("state"));
        assert!(state.load().unwrap().is_empty(), "no file: nothing attached");
        let attachments: BTreeMap<String, Attachment> =
            [attachment("1-1", 0), attachment("1-2", 1)].into_iter().map(|a| (a.devpath(), a)).collect();
        state.save(&attachments).unwrap();
        assert_eq!(state.load().unwrap(), attachments);
        assert!(attachments.contains_key("usbip://10.0.0.5:3240/1-2"));
    }

    #[test]
    fn a_damaged_record_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::in_dir(dir.path());
        std::fs::write(dir.path().join("usbip-attachments.json"), "{\"attachments\": [").unwrap();
        let error = state.load().unwrap_err().to_string();
        assert!(error.contains("usbip-attachments.json") && error.contains("not an attachment record"), "{error}");
    }
}

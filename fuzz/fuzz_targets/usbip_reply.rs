//! Any bytes a USB/IP server sends, as a device list and as an import reply:
//! decoding never panics, never reads past the input, and whatever it
//! accepts holds no more than the protocol's bounds allow.
#![no_main]

use devsieve_proto::usbip::{ImportReply, MAX_DEVICES, MAX_INTERFACES, decode_devlist, decode_import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(devices) = decode_devlist(bytes) {
        assert!(devices.len() <= MAX_DEVICES as usize);
        for device in &devices {
            assert!(device.num_interfaces <= MAX_INTERFACES);
            assert_eq!(device.interfaces.len(), usize::from(device.num_interfaces));
            assert!(device.busid.len() < 32 && device.path.len() < 256);
        }
    }
    if let Ok(ImportReply::Imported(device)) = decode_import(bytes) {
        assert!(device.interfaces.is_empty());
    }
});

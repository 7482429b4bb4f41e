//! Sending uevents to the libudev monitors of preloaded processes.
//!
//! `umockdev_testbed_uevent` cannot be used from a process that is not itself
//! preloaded: it looks the device up with the caller's own libudev, which then
//! reads the real `/sys` ("ERROR: uevent_sender_send: No such device …", and no
//! event). So this sends the same datagrams itself. The protocol is umockdev's:
//! the preload library turns each libudev monitor's netlink socket into a Unix
//! datagram socket bound at `$UMOCKDEV_DIR/event<fd>` and, on receipt, fakes a
//! netlink sender (udev group, uid 0). The payload is libudev's own monitor
//! format (the `udev_monitor_netlink_header` udevd sends, then NUL-separated
//! `KEY=VALUE` properties), which the child's libudev parses and filters.
//!
//! Unlike umockdev's sender, which sends only ACTION, DEVPATH, SUBSYSTEM,
//! SEQNUM, DEVNAME and DEVTYPE, this one sends every property of the device's
//! `uevent` file (the record's `E:` lines), as udevd does, and the tag bloom
//! filter, so monitors matching tags work.

use std::collections::HashMap;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// `UDEV_MONITOR_MAGIC`.
const MAGIC: u32 = 0xfeed_cafe;
/// `sizeof(struct udev_monitor_netlink_header)`.
const HEADER_LEN: u32 = 40;

/// A device's uevent properties, in order, without ACTION and SEQNUM.
pub(crate) type Properties = Vec<(String, String)>;

/// Reads what udevd would send for the device at `sys_dir/<devpath>`:
/// DEVPATH, SUBSYSTEM, then its `uevent` file (DEVNAME made absolute) and DRIVER.
/// `None` if the device is not in the testbed.
pub(crate) fn read_properties(root_dir: &Path, devpath: &str) -> io::Result<Option<Properties>> {
    let dir = root_dir.join("sys").join(devpath.trim_start_matches('/'));
    let uevent = match std::fs::read_to_string(dir.join("uevent")) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let link_name = |name: &str| {
        std::fs::read_link(dir.join(name))
            .ok()
            .and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    let mut file: Properties = uevent
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .filter(|(key, _)| !matches!(key.as_str(), "ACTION" | "DEVPATH" | "SEQNUM"))
        .collect();
    let from_file =
        |file: &mut Properties, key: &str| file.iter().position(|(k, _)| k == key).map(|at| file.remove(at).1);
    // The `subsystem` link is what libudev trusts; the file's SUBSYSTEM is a fallback.
    let file_subsystem = from_file(&mut file, "SUBSYSTEM");
    let Some(subsystem) = link_name("subsystem").or(file_subsystem) else {
        return Err(io::Error::other(format!("device {devpath} has no subsystem")));
    };
    for (key, value) in &mut file {
        if key == "DEVNAME" && !value.starts_with('/') {
            *value = format!("/dev/{value}");
        }
    }
    if !file.iter().any(|(key, _)| key == "DRIVER")
        && let Some(driver) = link_name("driver")
    {
        file.push(("DRIVER".to_owned(), driver));
    }
    let mut properties = vec![("DEVPATH".to_owned(), devpath.to_owned()), ("SUBSYSTEM".to_owned(), subsystem)];
    properties.extend(file);
    Ok(Some(properties))
}

/// The datagram libudev's monitor expects (systemd's `device_monitor_send_device`).
pub(crate) fn message(action: &str, seqnum: u64, properties: &Properties) -> Vec<u8> {
    let value = |key: &str| properties.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let mut body = Vec::new();
    let mut push = |key: &str, value: &str| {
        body.extend_from_slice(key.as_bytes());
        body.push(b'=');
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    };
    push("ACTION", action);
    // DEVPATH and SUBSYSTEM come first in `properties`.
    let mut rest = properties.iter();
    for (key, value) in rest.by_ref().take(2) {
        push(key, value);
    }
    push("SEQNUM", &seqnum.to_string());
    for (key, value) in rest {
        push(key, value);
    }

    let subsystem_hash = value("SUBSYSTEM").map_or(0, string_hash32);
    let devtype_hash = value("DEVTYPE").map_or(0, string_hash32);
    let bloom = value("TAGS")
        .into_iter()
        .flat_map(|tags| tags.split(':'))
        .filter(|tag| !tag.is_empty())
        .fold(0u64, |bits, tag| bits | string_bloom64(tag));

    let mut message = Vec::with_capacity(HEADER_LEN as usize + body.len());
    message.extend_from_slice(b"libudev\0");
    message.extend_from_slice(&MAGIC.to_be_bytes());
    // Sizes and offsets in host order, hashes in network order, as udevd sends them.
    message.extend_from_slice(&HEADER_LEN.to_ne_bytes());
    message.extend_from_slice(&HEADER_LEN.to_ne_bytes());
    message.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_ne_bytes());
    message.extend_from_slice(&subsystem_hash.to_be_bytes());
    message.extend_from_slice(&devtype_hash.to_be_bytes());
    message.extend_from_slice(&bloom.to_be_bytes()); // hi then lo, each big-endian
    message.extend_from_slice(&body);
    message
}

/// The monitor sockets preloaded processes have bound in the testbed.
pub(crate) fn sockets(root_dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut sockets = Vec::new();
    for entry in std::fs::read_dir(root_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.strip_prefix("event").is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit())) {
            sockets.push(entry.path());
        }
    }
    Ok(sockets)
}

/// Sends `message` to every live monitor socket; returns how many got it.
/// Sockets of closed monitors refuse the connection and are removed, as
/// umockdev does.
pub(crate) fn send_all(root_dir: &Path, message: &[u8]) -> io::Result<usize> {
    let mut sent = 0;
    for socket in sockets(root_dir)? {
        let sender = UnixDatagram::unbound()?;
        // A monitor that stopped reading must not hang the test.
        sender.set_nonblocking(true)?;
        match sender.send_to(message, &socket) {
            Ok(_) => sent += 1,
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                let _ = std::fs::remove_file(&socket);
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(io::Error::new(error.kind(), format!("sending to {}: {error}", socket.display())));
            }
        }
    }
    Ok(sent)
}

/// Whether a monitor is still bound at `socket`, removing it if not.
pub(crate) fn is_live(socket: &Path) -> bool {
    let Ok(probe) = UnixDatagram::unbound() else {
        return false;
    };
    match probe.connect(socket) {
        Ok(()) => true,
        Err(error) => {
            if error.kind() == io::ErrorKind::ConnectionRefused {
                let _ = std::fs::remove_file(socket);
            }
            false
        }
    }
}

/// Known properties of devices, for `remove` events after the device is gone.
pub(crate) type Known = HashMap<String, Properties>;

/// systemd's `string_hash32`: MurmurHash2 with seed 0.
fn string_hash32(text: &str) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let data = text.as_bytes();
    // MurmurHash2 mixes in the length mod 2^32.
    let mut h = data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in chunks.by_ref() {
        let mut k = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// systemd's `string_bloom64`: four bits from the hash.
fn string_bloom64(text: &str) -> u64 {
    let hash = string_hash32(text);
    [0, 6, 12, 18].iter().fold(0, |bits, shift| bits | (1u64 << ((hash >> shift) & 63)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let properties = vec![("DEVPATH".into(), "/devices/x".into()), ("SUBSYSTEM".into(), "tty".into())];
        let message = message("add", 7, &properties);
        assert_eq!(&message[..8], b"libudev\0");
        assert_eq!(&message[8..12], &[0xfe, 0xed, 0xca, 0xfe]);
        assert_eq!(&message[40..], b"ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=tty\0SEQNUM=7\0".as_slice());
        assert_eq!(u32::from_ne_bytes(message[20..24].try_into().unwrap()) as usize, message.len() - 40);
    }

    #[test]
    fn hashes_match_the_c_implementation() {
        // Computed with the C `string_hash32` umockdev copies from systemd; every
        // tail length (0 to 3 bytes after the 4-byte blocks) is covered.
        let known = [
            ("", 0x0000_0000),
            ("u", 0x5827_c2fc),
            ("us", 0x7226_53b6),
            ("usb", 0x0577_c5e5),
            ("tty", 0x8afa_90c8),
            ("input", 0xc1a2_8470),
            ("hidraw", 0xc2ca_f397),
            ("uaccess", 0xe88e_d0cc),
            ("usb-serial", 0x4563_f9ab),
            ("usb_device", 0x27f8_f50c),
        ];
        for (text, hash) in known {
            assert_eq!(string_hash32(text), hash, "{text:?}");
        }
    }
}

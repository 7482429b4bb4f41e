//! The built-in handlers, compiled from `guests/` by build.rs and embedded.

/// Name and component bytes of every built-in handler.
pub const BUILTINS: &[(&str, &[u8])] = &[
    ("udev-rule", include_bytes!(concat!(env!("OUT_DIR"), "/devsieve_udev_rule.wasm"))),
    ("glob", include_bytes!(concat!(env!("OUT_DIR"), "/devsieve_glob.wasm"))),
    ("usb-id", include_bytes!(concat!(env!("OUT_DIR"), "/devsieve_usb_id.wasm"))),
];

pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(builtin, _)| *builtin == name).map(|(_, bytes)| *bytes)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(name, _)| *name)
}

//! The built-in handler components, compiled from `guests/` by build.rs and embedded
//! with their digests, which build.rs computes: a start with a warm cache
//! finds each built-in's compiled code by digest and never reads (or
//! hashes) the component's bytes.

/// One built-in handler.
#[derive(Debug)]
pub struct Builtin {
    pub name: &'static str,
    pub bytes: &'static [u8],
    /// `sha256:<hex>` of `bytes`.
    pub digest: &'static str,
}

macro_rules! builtin {
    ($name:literal, $file:literal, $digest:literal) => {
        Builtin { name: $name, bytes: include_bytes!(concat!(env!("OUT_DIR"), "/", $file)), digest: env!($digest) }
    };
}

/// Every built-in handler.
pub const BUILTINS: &[Builtin] = &[
    builtin!("udev-rule", "devsieve_udev_rule.wasm", "DEVSIEVE_DIGEST_UDEV_RULE"),
    builtin!("glob", "devsieve_glob.wasm", "DEVSIEVE_DIGEST_GLOB"),
    builtin!("usb-id", "devsieve_usb_id.wasm", "DEVSIEVE_DIGEST_USB_ID"),
];

pub fn get(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|builtin| builtin.name == name)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|builtin| builtin.name)
}

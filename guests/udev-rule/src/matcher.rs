//! Evaluates a parsed rule on a device and its parent chain, as udev does
//! (systemd `udev_rule_apply_line_to_event` and
//! `udev_rule_apply_parent_token_to_event`):
//!
//! - device keys (`KERNEL`, `SUBSYSTEM`, `DRIVER`, `DEVPATH`, `TAG`,
//!   `ATTR{}`, `ENV{}`) look at the device only;
//! - parent keys (`KERNELS`, `SUBSYSTEMS`, `DRIVERS`, `ATTRS{}`, `TAGS`) are
//!   tried together on the device, then its parent, grandparent, ...: the rule
//!   matches only if ONE device of the chain passes ALL of them;
//! - a missing subsystem, driver or property is the empty string, so
//!   `ENV{X}!="1"` matches a device without `X`;
//! - a missing sysfs attribute fails the key whatever the operator
//!   (`ATTR{x}!="1"` does not match a device without `x`);
//! - `TAG=="x"` matches if any tag matches, `TAG!="x"` if none does;
//! - attribute values lose trailing whitespace before matching unless the
//!   match value itself ends in whitespace (see `Pattern::strips_trailing_whitespace`).

use crate::rule::{Field, Key, Rule};
use devsieve_sdk::Device;

/// udev's WHITESPACE, as `delete_trailing_chars(value, NULL)` removes it.
const TRAILING: [char; 4] = [' ', '\t', '\n', '\r'];

/// Does `rule` match `device`?
pub fn rule_matches(rule: &Rule, device: Device<'_>) -> bool {
    let mut has_parent_keys = false;
    for key in &rule.keys {
        if key.field.is_parent_key() {
            has_parent_keys = true;
        } else if !key_matches(key, device) {
            return false;
        }
    }
    if !has_parent_keys {
        return true;
    }
    device.self_and_ancestors().any(|candidate| {
        rule.keys.iter().filter(|key| key.field.is_parent_key()).all(|key| key_matches(key, candidate))
    })
}

/// Does one key match on `device` (the device itself, or the ancestor being tried)?
pub fn key_matches(key: &Key, device: Device<'_>) -> bool {
    let compare = |text: &str| key.pattern.matches(text) != key.negated;
    match &key.field {
        Field::Kernel | Field::Kernels => compare(device.kernel()),
        Field::Subsystem | Field::Subsystems => compare(device.subsystem()),
        Field::Driver | Field::Drivers => compare(device.driver().unwrap_or("")),
        Field::Devpath => compare(device.devpath()),
        Field::Env(name) => compare(device.property(name).unwrap_or("")),
        Field::Attr(name) | Field::Attrs(name) => match device.attribute(name) {
            None => false,
            Some(value) if key.pattern.strips_trailing_whitespace() => compare(value.trim_end_matches(TRAILING)),
            Some(value) => compare(value),
        },
        Field::Tag | Field::Tags => {
            let any = device.tags().any(|tag| key.pattern.matches(tag));
            any != key.negated
        }
    }
}

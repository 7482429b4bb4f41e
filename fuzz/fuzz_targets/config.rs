//! Any text as a config file, in every format the agent reads (devsieve's
//! own and the peers': generic-device-plugin's config and DaemonSet, Akri's
//! Configurations and Helm values, usbip-device-plugin's): reading and
//! checking never panic, and whatever is accepted, `devsieve import`'s
//! output for it is read back as devsieve's own config meaning the same.
#![no_main]

use std::path::Path;

use devsieve::config::{Config, Format, Imported};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let file = Path::new("/etc/devsieve/config.yaml");
    let Ok(imported) = Imported::parse(file, text) else { return };
    let yaml = imported.to_yaml(file);
    let Ok(config) = imported.check(file) else { return };
    let native = Config::parse(file, &yaml).unwrap_or_else(|e| panic!("import printed a config it refuses: {e}\n{yaml}"));
    assert_eq!(native.format, Format::Devsieve, "{yaml}");
    assert_eq!((&native.domain, &native.usbip, &native.resources), (&config.domain, &config.usbip, &config.resources));
});

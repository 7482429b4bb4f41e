//! Any text as a handler reference (built-in, file, OCI, ConfigMap), an OCI
//! manifest and a Docker config: parsing never panics, and an OCI
//! reference reads back from how it is written.
#![no_main]

use std::path::Path;

use devsieve::config::HandlerRef;
use devsieve::loader::{component_layer, parse_docker_config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, bool, &[u8])| {
    let (text, allow_tags, bytes) = input;
    if let Ok(reference @ HandlerRef::Oci(_)) = HandlerRef::parse(Path::new("/etc/devsieve"), text, allow_tags) {
        let written = reference.to_string();
        let again = HandlerRef::parse(Path::new("/etc/devsieve"), &written, allow_tags);
        assert_eq!(again.as_ref().ok(), Some(&reference), "{text:?} is written {written:?}");
    }
    let _ = component_layer(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = parse_docker_config(text);
    }
});

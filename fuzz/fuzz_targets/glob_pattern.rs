//! Any text as a generic-device-plugin path pattern: parsing never panics,
//! matching any name never panics, and every accepted pattern's rewrite for
//! the agent (`host_glob`) is one the agent's `glob` crate accepts, so an
//! accepted config never fails at expansion.
#![no_main]

use devsieve_glob::pattern::Pattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (text, name) = input;
    let Ok(pattern) = Pattern::parse(text) else { return };
    let _ = pattern.matches(name);
    let host = pattern.host_glob();
    if let Err(error) = glob::Pattern::new(&host) {
        panic!("{text:?} is accepted, but the agent cannot expand its rewrite {host:?}: {error}");
    }
});

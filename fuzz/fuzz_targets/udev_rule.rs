//! Any text as a udev rule, evaluated on a device chain made from the rest
//! of the input: parsing never panics, a refused rule names a column inside
//! the text, and an accepted rule evaluates on any chain (attributes,
//! properties, tags, missing values) without panicking.
#![no_main]

use devsieve_sdk::Snapshot;
use devsieve_sdk::testing::udev_node;
use devsieve_udev_rule::{matcher, rule};
use libfuzzer_sys::fuzz_target;

/// One device of the chain: kernel name, subsystem, one attribute value,
/// one property value, tags. The first is the leaf, each next its parent.
type FuzzDevice = (String, String, Option<String>, Option<String>, Vec<String>);

fuzz_target!(|input: (&str, Vec<FuzzDevice>)| {
    let (text, chain) = input;
    let parsed = match rule::parse(text) {
        Ok(parsed) => parsed,
        Err(error) => {
            assert!(error.column >= 1 && error.column <= text.chars().count() + 1, "{error:?} for {text:?}");
            return;
        }
    };
    let chain: Vec<FuzzDevice> = chain.into_iter().take(8).collect();
    if chain.is_empty() {
        return;
    }
    let mut devpath = String::from("/devices");
    let mut paths = Vec::new();
    for (kernel, ..) in chain.iter().rev() {
        devpath.push('/');
        devpath.push_str(if kernel.is_empty() || kernel.contains('/') { "x" } else { kernel });
        paths.push(devpath.clone());
    }
    paths.reverse();
    let nodes = chain
        .iter()
        .zip(paths)
        .enumerate()
        .map(|(i, ((_, subsystem, attribute, property, tags), path))| {
            let mut node = udev_node(&path, subsystem);
            node.parent = (i + 1 < chain.len()).then_some(i as u32 + 1);
            node.attributes = attribute.iter().map(|v| ("idVendor".to_string(), v.clone())).collect();
            node.properties = property.iter().map(|v| ("ID_SERIAL".to_string(), v.clone())).collect();
            node.tags = tags.clone();
            node
        })
        .collect();
    let Ok(snapshot) = Snapshot::from_parts(nodes, vec![0]) else { return };
    let _ = matcher::rule_matches(&parsed, snapshot.device(0));
});

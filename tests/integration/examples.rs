//! The configs in examples/ are what users copy: every one must validate,
//! and the one meant for any Linux machine must find something here.

use std::path::{Path, PathBuf};

use crate::common::*;

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension().is_some_and(|e| e == "yaml")
                && !path.file_name().unwrap().to_string_lossy().starts_with("pod-")
        })
        .collect();
    configs.sort();
    configs
}

#[test]
fn every_example_config_validates() {
    let configs = examples();
    assert!(configs.len() >= 4, "examples/ lost its configs: {configs:?}");
    let mut failures = Vec::new();
    for config in &configs {
        let output = devsieve().args(["validate", "--config"]).arg(config).output().unwrap();
        if !output.status.success() {
            failures.push(format!("{}: {}", config.display(), text(&output).1));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_anywhere_example_finds_this_machines_null_device() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/anywhere.yaml");
    let (reports, output) = discover_json(&config, &[]);
    assert!(output.status.success(), "{}", text(&output).1);
    let null = report(&reports, "devsieve.io/null");
    assert_eq!(null["groups"][0]["device_nodes"][0]["host_path"], "/dev/null");
    assert_eq!(null["groups"][0]["share"], 10);
    // The mem subsystem exists on every Linux kernel, with or without a udev daemon.
    let mem = report(&reports, "devsieve.io/mem");
    let nodes: Vec<&str> =
        mem["groups"].as_array().unwrap().iter().map(|g| g["device_nodes"][0]["host_path"].as_str().unwrap()).collect();
    assert!(nodes.contains(&"/dev/null") && nodes.contains(&"/dev/zero"), "{mem:#}");
}

//! Hostile handlers are contained: each failure is reported for its own
//! resource, with a message that says what happened, and a well-behaved
//! resource in the same config keeps its device.

use crate::common::*;

#[test]
fn hostile_handlers_are_contained_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = test_handler("hostile-handler");
    let resource = |name: &str, misbehave: &str| {
        format!(
            "  - name: {name}\n    handler: {}\n    config: {{misbehave: {misbehave}, paths: [/dev/null]}}\n",
            hostile.display()
        )
    };
    // Two devices: for lies that take two.
    let two = |name: &str, misbehave: &str| {
        resource(name, misbehave).replace("paths: [/dev/null]", "paths: [/dev/null, /dev/zero]")
    };
    let config = dir.path().join("config.yaml");
    let text = format!(
        "resources:\n{}{}{}{}{}{}{}{}{}{}{}",
        resource("million", "million-groups"),
        resource("huge", "huge-string"),
        resource("loops", "loop"),
        resource("hoards", "allocate"),
        resource("traps", "trap"),
        resource("shadow", "shadow"),
        resource("mounts-etc", "mount"),
        resource("alone-shadow", "alone-shadow"),
        two("same-id", "same-id"),
        two("mixed-keys", "mixed-keys"),
        resource("behaves", "none"),
    );
    std::fs::write(&config, text).unwrap();
    let (reports, output) = discover_json(&config, &["--handler-time-budget-ms", "300"]);
    assert!(!output.status.success(), "failures must show in the exit code");

    let error =
        |name: &str| report(&reports, &format!("devsieve.io/{name}"))["error"].as_str().unwrap_or_default().to_string();
    let million = error("million");
    assert!(million.contains("memory cap of 64 MiB"), "{million}");
    let huge = error("huge");
    assert!(huge.contains("env var HUGE is 16777221 bytes"), "{huge}");
    let loops = error("loops");
    assert!(loops.contains("time budget") && loops.contains("select"), "{loops}");
    let hoards = error("hoards");
    assert!(hoards.contains("memory cap of 64 MiB"), "{hoards}");
    let traps = error("traps");
    assert!(traps.contains("trapped") && traps.contains("panics on purpose"), "{traps}");
    let shadow = error("shadow");
    assert!(shadow.contains("/etc/shadow") && shadow.contains("not the node of any device"), "{shadow}");
    let mounts = error("mounts-etc");
    assert!(mounts.contains("mount /etc is outside the allowed roots"), "{mounts}");
    // The new contract's own ways to lie: groups from `select`, keys.
    let alone = error("alone-shadow");
    assert!(alone.contains("`select`") && alone.contains("/dev/null") && alone.contains("/etc/shadow"), "{alone}");
    let same = error("same-id");
    assert!(same.contains("two groups have the device id \"same\""), "{same}");
    let mixed = error("mixed-keys");
    assert!(mixed.contains("joins /dev/null") && mixed.contains("different keys"), "{mixed}");

    let behaves = report(&reports, "devsieve.io/behaves");
    assert!(behaves.get("error").is_none(), "{behaves:#}");
    assert_eq!(behaves["groups"][0]["device_nodes"][0]["host_path"], "/dev/null");
}

#[test]
fn a_handler_for_another_contract_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("resources:\n  - name: future\n    handler: {}\n", test_handler("old-contract-handler").display()),
    )
    .unwrap();
    let output = devsieve().args(["validate", "--config"]).arg(&config).output().unwrap();
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("devsieve:handler@9.0.0") && stderr.contains("devsieve:handler@0.3.0"), "{stderr}");
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("junk.wasm");
    std::fs::write(&wasm, b"\0asm\x01\0\0\0").unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("resources:\n  - name: junk\n    handler: {}\n", wasm.display())).unwrap();
    let output = devsieve().args(["validate", "--config"]).arg(&config).output().unwrap();
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("devsieve.io/junk") && stderr.contains("not a WebAssembly component"), "{stderr}");
}

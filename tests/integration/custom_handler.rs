//! The example handler a user copies (examples/custom-handler), built with
//! plain cargo as its README says, run as a file reference over a mocked
//! tree of Zigbee sticks; and the compiled-handler cache across restarts.

use crate::common::*;

#[test]
fn the_example_handler_finds_the_zigbee_coordinators_and_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "resources:\n  - name: zigbee\n    handler: {}\n    config: {{permissions: rw}}\n",
            example_handler().display()
        ),
    )
    .unwrap();
    let mut command = devsieve();
    command.args(["discover", "--json", "--config"]).arg(&config);
    let output = under_umockdev(&case_file("custom-handler/zigbee-sticks.umockdev"), &command);
    let reports = reports_of(&output);
    assert!(output.status.success(), "{}", text(&output).1);
    let zigbee = report(&reports, "devsieve.io/zigbee");
    // ZBDongle-P (CP210x), ZBDongle-E (CH9102), CC2531; not the plain CP2102 on ttyUSB1.
    assert_eq!(granted_nodes(zigbee), ["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyUSB0"], "{zigbee:#}");
    assert_eq!(zigbee["groups"][0]["device_nodes"][0]["permissions"], "rw");
}

#[test]
fn handler_inspect_shows_metadata_contract_size_and_digest() {
    let output = devsieve().args(["handler", "inspect", "--json"]).arg(example_handler()).output().unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    let info: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let bytes = std::fs::read(example_handler()).unwrap();
    assert_eq!(info["name"], "zigbee-coordinator");
    assert_eq!(info["version"], "1.0.0");
    assert_eq!(info["contract"], "devsieve:handler@0.3.0");
    assert_eq!(info["size"], bytes.len());
    assert_eq!(info["digest"], devsieve::digest::sha256_digest(&bytes));

    // The contract check holds for inspect too.
    let output = devsieve().args(["handler", "inspect"]).arg(test_handler("old-contract-handler")).output().unwrap();
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("devsieve:handler@9.0.0") && stderr.contains("devsieve:handler@0.3.0"), "{stderr}");
}

#[test]
fn a_restart_does_not_recompile() {
    let cache = tempfile::tempdir().unwrap();
    let inspect = || {
        let output = devsieve()
            .env("DEVSIEVE_CACHE_DIR", cache.path())
            .env("DEVSIEVE_LOG", "devsieve=debug")
            .env("NO_COLOR", "1")
            .args(["handler", "inspect"])
            .arg(example_handler())
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output).1);
        text(&output).1
    };
    let first = inspect();
    assert!(first.contains("compiled the handler") && !first.contains("from the cache"), "{first}");
    let artifacts: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let second = inspect();
    assert!(second.contains("loaded the compiled handler from the cache"), "{second}");
    assert!(!second.contains("compiled the handler "), "{second}");

    // An artifact another user could have written is not loaded: make the
    // directory group-writable and the agent compiles again, refusing the cache.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
    let third = inspect();
    assert!(third.contains("compiled the handler") && third.contains("may be written by other users"), "{third}");
}

//! Events, not polling: udev devices plugged in and out of a umockdev testbed
//! while `devsieve run` watches it, files and directories appearing under a
//! watched directory, and a config and handler file changed under a running
//! agent. Every change must reach the kubelet simulator.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use devsieve_kubelet_sim::KubeletSim;
use devsieve_umockdev::Testbed;
pub use devsieve_umockdev::records::ch340;

use crate::agent::{Agent, SECS, free_port, run_command, sockets};
use crate::common::test_handler;
use crate::kubelet::{Node, health_of, ids};

/// `command`, run under the testbed (its args and environment carried over).
fn under(testbed: &Testbed, command: Command) -> Command {
    let mut wrapped = testbed.command(command.get_program());
    wrapped.args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped
}

pub const PRINTER: &str = "devsieve.io/printer";
pub const STICK: &str = "devsieve.io/stick";

pub const UDEV_CONFIG: &str = r#"resources:
  - name: printer
    handler: udev-rule
    config:
      udevRules: ['SUBSYSTEM=="tty", ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523"']
  - name: stick
    handler: usb-id
    config: {usb: [{vendor: "1a86", product: "7523"}], includeChildren: true}
"#;

/// The agent under `testbed`, its udev monitor listening.
pub fn agent_under(testbed: &Testbed, node: &Node, extra: &[&str]) -> Agent {
    let listen = free_port();
    let agent = Agent::spawn(under(testbed, run_command(&node.config(), &node.plugins(), listen, extra)), listen);
    assert!(testbed.wait_for_monitors(1, SECS(30)), "the agent never listened for udev events\n{}", agent.log());
    agent
}

/// Emits the uevents of plugging in (parents first) the devices `record`
/// added, `gap` apart (a real device's events arrive within a few ms).
pub fn plug(testbed: &Testbed, record: &str, gap: Duration) -> Vec<String> {
    let devices = testbed.add_from_string(record).unwrap();
    for device in devices.iter().rev() {
        testbed.uevent(device, "add").unwrap();
        std::thread::sleep(gap);
    }
    devices
}

/// Removes the devices and emits their `remove` events (children first).
pub fn unplug(testbed: &Testbed, devices: &[String]) {
    testbed.remove_device(devices.last().unwrap()).unwrap();
    for device in devices {
        testbed.uevent(device, "remove").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udev_hotplug_reaches_the_kubelet_and_a_burst_is_one_or_two_updates() {
    let testbed = Testbed::new().unwrap();
    testbed.add_from_string(&ch340(1, 0)).unwrap();
    let node = Node::new();
    node.write_config(UDEV_CONFIG);
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    // A settle window well above the 1 ms gaps, so a loaded machine does not split the burst.
    let agent = agent_under(&testbed, &node, &["--grace-period", "1s", "--event-settle", "20ms"]);
    for resource in [PRINTER, STICK] {
        kubelet.wait_registered(resource, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        kubelet
            .wait_devices(resource, SECS(5), |d| d.len() == 1)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    }
    let updates_before = kubelet.updates(STICK).len();
    let sticks_before = ids(&kubelet.latest(STICK).unwrap().devices);
    let printers_before = ids(&kubelet.latest(PRINTER).unwrap().devices);

    // Four devices, four add events 1 ms apart: the first goes out at once
    // (the USB device), the three after it together (its interface and tty).
    let devices = plug(&testbed, &ch340(2, 1), Duration::from_millis(1));
    let printer = kubelet
        .wait_devices(PRINTER, SECS(5), |d| d.len() == 2)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(printer.devices.iter().all(|d| d.health == "Healthy"));
    let stick = kubelet.wait_devices(STICK, SECS(5), |d| d.len() == 2).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let updates = kubelet.updates(STICK).len() - updates_before;
    assert!(
        (1..=2).contains(&updates),
        "the burst was not coalesced: {updates} updates: {:#?}",
        kubelet.updates(STICK)
    );

    // The new stick grants its USB node and, with includeChildren, its tty.
    let new_stick = ids(&stick.devices).difference(&sticks_before).next().cloned().expect("a new id");
    let response = kubelet.allocate(STICK, vec![vec![new_stick]]).await.unwrap();
    let nodes: Vec<&str> = response.container_responses[0].devices.iter().map(|d| d.host_path.as_str()).collect();
    assert!(nodes.contains(&"/dev/bus/usb/001/002") && nodes.contains(&"/dev/ttyUSB1"), "{nodes:?}");

    // Unplugged: unhealthy for the grace period, then gone.
    let gone = ids(&printer.devices).difference(&printers_before).next().cloned().expect("a new id");
    unplug(&testbed, &devices);
    kubelet
        .wait_devices(PRINTER, SECS(5), |d| health_of(d, &gone) == Some("Unhealthy"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    kubelet.wait_devices(PRINTER, SECS(5), |d| d.len() == 1).await.unwrap();
    kubelet.wait_devices(STICK, SECS(5), |d| d.len() == 1).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_events_follow_creation_removal_renames_late_directories_and_symlinks() {
    let node = Node::new();
    node.write_config(
        "resources:
  - name: serial
    handler: glob
    allowedRoots: [$DEV]
    config: {groups: [{paths: [{path: $DEV/ttyFAKE*}]}]}
  - name: by-id
    handler: glob
    allowedRoots: [$DEV]
    config: {groups: [{paths: [{path: $DEV/serial/by-id/*}]}]}
",
    );
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &["--grace-period", "500ms"]);
    for resource in ["devsieve.io/serial", "devsieve.io/by-id"] {
        kubelet.wait_registered(resource, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        kubelet.wait_devices(resource, SECS(5), |d| d.is_empty()).await.unwrap();
    }
    let serial = "devsieve.io/serial";
    let healthy = |d: &[devsieve_kubelet_sim::Device]| d.iter().filter(|d| d.health == "Healthy").count();

    std::fs::write(node.dev().join("ttyFAKE0"), b"").unwrap();
    let created = kubelet
        .wait_devices(serial, SECS(5), |d| healthy(d) == 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    std::fs::rename(node.dev().join("ttyFAKE0"), node.dev().join("ttyFAKE1")).unwrap();
    let renamed = kubelet.wait_devices(serial, SECS(5), |d| d.len() == 2 && healthy(d) == 1).await.unwrap();
    assert_eq!(health_of(&renamed.devices, &created.devices[0].id), Some("Unhealthy"), "the old name went away");
    kubelet.wait_devices(serial, SECS(5), |d| d.len() == 1).await.unwrap();

    // A directory that appears later, then a symlink in it (how udev makes by-id links).
    std::fs::create_dir_all(node.dev().join("serial/by-id")).unwrap();
    std::os::unix::fs::symlink("../../ttyFAKE1", node.dev().join("serial/by-id/usb-1a86_USB2.0-Serial")).unwrap();
    let linked = kubelet
        .wait_devices("devsieve.io/by-id", SECS(5), |d| healthy(d) == 1)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let response = kubelet.allocate("devsieve.io/by-id", vec![vec![linked.devices[0].id.clone()]]).await.unwrap();
    assert!(response.container_responses[0].devices[0].host_path.ends_with("serial/by-id/usb-1a86_USB2.0-Serial"));

    std::fs::remove_file(node.dev().join("ttyFAKE1")).unwrap();
    kubelet.wait_devices(serial, SECS(5), |d| d.is_empty()).await.unwrap();
}

/// A copy of `wasm` that differs only in a custom section (same behaviour, new digest).
fn with_custom_section(wasm: &[u8], tag: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                break;
            }
        }
    }
    let mut payload = Vec::new();
    leb128("devsieve-test".len(), &mut payload);
    payload.extend_from_slice(b"devsieve-test");
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    leb128(payload.len(), &mut out);
    out.extend(payload);
    out
}

fn replace_file(path: &Path, bytes: &[u8]) {
    let temp = path.with_extension("swap");
    std::fs::write(&temp, bytes).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_apply_only_the_difference_and_bad_ones_keep_the_old_config() {
    let node = Node::new();
    for file in ["a0", "b0", "c0", "c1"] {
        std::fs::write(node.dev().join(file), b"").unwrap();
    }
    let glob = |name: &str, pattern: &str| {
        format!(
            "  - name: {name}\n    handler: glob\n    allowedRoots: [$DEV]\n    config: {{groups: [{{paths: [{{path: $DEV/{pattern}}}]}}]}}\n"
        )
    };
    node.write_config(&format!("resources:\n{}{}{}", glob("keep", "a*"), glob("change", "b*"), glob("drop", "b*")));
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    for resource in ["keep", "change", "drop"] {
        let resource = format!("devsieve.io/{resource}");
        kubelet.wait_registered(&resource, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        kubelet.wait_devices(&resource, SECS(5), |d| d.len() == 1).await.unwrap();
    }
    let keep_updates = kubelet.updates("devsieve.io/keep").len();
    let drop_socket = kubelet.registration("devsieve.io/drop").unwrap().endpoint;

    node.write_config(&format!("resources:\n{}{}{}", glob("keep", "a*"), glob("change", "c*"), glob("new", "c0")));
    kubelet.wait_registered("devsieve.io/new", SECS(5)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    // b0 left "change": unhealthy for its grace period; c0 and c1 joined.
    let healthy = |d: &[devsieve_kubelet_sim::Device]| d.iter().filter(|d| d.health == "Healthy").count();
    kubelet.wait_devices("devsieve.io/change", SECS(5), |d| healthy(d) == 2).await.unwrap();
    agent.wait_status(SECS(5), "generation 2", |s| s["config_generation"] == 2).await;
    assert!(!sockets(&node.plugins()).contains(&drop_socket), "the dropped resource's socket is removed");
    assert_eq!(
        kubelet.registration("devsieve.io/change").unwrap().nth,
        1,
        "a changed resource keeps its registration and stream"
    );
    assert_eq!(kubelet.registration("devsieve.io/keep").unwrap().nth, 1);
    assert_eq!(kubelet.updates("devsieve.io/keep").len(), keep_updates, "an unchanged resource is not touched");

    // A bad change is refused: the old config keeps serving, and it shows.
    node.write_config("resources:\n  - name: keep\n    handler: glob\n    colour: blue\n");
    agent
        .wait_status(SECS(5), "the refusal", |s| s["config_error"].as_str().is_some_and(|e| e.contains("colour")))
        .await;
    let (code, body) = agent.get("/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("config change refused") && body.contains("colour"), "{body}");
    assert_eq!(agent.metric(r#"devsieve_config_reloads_total{result="refused"}"#), Some(1.0));
    let status = agent.status();
    assert_eq!(status["config_generation"], 2);
    assert_eq!(status["resources"].as_array().unwrap().len(), 3, "{status:#}");
    assert_eq!(healthy(&kubelet.latest("devsieve.io/change").unwrap().devices), 2);

    // Fixed again: ready, no error.
    node.write_config(&format!("resources:\n{}{}{}", glob("keep", "a*"), glob("change", "c*"), glob("new", "c0")));
    agent.wait_status(SECS(5), "the error to clear", |s| s["config_error"].is_null() && s["ready"] == true).await;
    assert_eq!(agent.get("/readyz").unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swapped_handler_file_is_reloaded_and_a_broken_one_leaves_the_old_running() {
    let node = Node::new();
    std::fs::write(node.dev().join("x0"), b"").unwrap();
    let handler = node.root.path().join("handlers/flaky.wasm");
    std::fs::create_dir_all(handler.parent().unwrap()).unwrap();
    let original = std::fs::read(test_handler("hostile-handler")).unwrap();
    std::fs::write(&handler, &original).unwrap();
    node.write_config(&format!(
        "resources:\n  - name: custom\n    handler: {}\n    allowedRoots: [$DEV]\n    config: {{misbehave: none, paths: [$DEV/x0]}}\n",
        handler.display()
    ));
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    let custom = "devsieve.io/custom";
    kubelet.wait_registered(custom, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    kubelet.wait_devices(custom, SECS(5), |d| d.len() == 1 && d[0].health == "Healthy").await.unwrap();

    replace_file(&handler, &with_custom_section(&original, "v2"));
    agent.wait_status(SECS(10), "a reload", |_| agent.log().contains("handler file changed: reloaded")).await;

    replace_file(&handler, b"\0asm\x0d\0\x01\0 not a component");
    agent
        .wait_status(SECS(10), "the refusal", |s| {
            s["resources"][0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("refused") && e.contains("previous handler keeps running"))
        })
        .await;
    assert_eq!(kubelet.latest(custom).unwrap().devices[0].health, "Healthy", "the old handler keeps serving");
    assert_eq!(kubelet.registration(custom).unwrap().nth, 1);

    replace_file(&handler, &with_custom_section(&original, "v3"));
    agent.wait_status(SECS(10), "the error to clear", |s| s["resources"][0]["last_error"].is_null()).await;
}

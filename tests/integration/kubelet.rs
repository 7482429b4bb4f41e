//! `devsieve run` against a kubelet simulator that behaves like the kubelet
//! (tests/kubelet-sim): registration with dial-back, ListAndWatch, Allocate,
//! restarts that delete every socket, a kubelet that comes late, devices
//! that go away, handlers that start failing, and bad input at start.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use devsieve_kubelet_sim::{Device, KubeletSim};

use crate::agent::{Agent, SECS, free_port, run_command, sockets, write_atomically};
use crate::common::{discover_json, report, test_handler};

/// A fake /dev under a temp dir, a plugin dir, and a config over both.
pub struct Node {
    pub root: tempfile::TempDir,
}

impl Node {
    pub fn new() -> Node {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("dev")).unwrap();
        std::fs::create_dir_all(root.path().join("plugins")).unwrap();
        Node { root }
    }
    pub fn dev(&self) -> PathBuf {
        self.root.path().join("dev")
    }
    pub fn plugins(&self) -> PathBuf {
        self.root.path().join("plugins")
    }
    pub fn config(&self) -> PathBuf {
        self.root.path().join("config.yaml")
    }
    pub fn write_config(&self, text: &str) {
        write_atomically(&self.config(), &text.replace("$DEV", &self.dev().display().to_string()));
    }
}

pub fn ids(devices: &[Device]) -> BTreeSet<String> {
    devices.iter().map(|d| d.id.clone()).collect()
}

pub fn health_of<'a>(devices: &'a [Device], id: &str) -> Option<&'a str> {
    devices.iter().find(|d| d.id == id).map(|d| d.health.as_str())
}

/// The kubelet ids `discover` implies for a resource: one per share unit.
fn discovered_ids(reports: &serde_json::Value, resource: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for group in report(reports, resource)["groups"].as_array().unwrap() {
        let id = group["id"].as_str().unwrap();
        let share = group["share"].as_u64().unwrap();
        if share == 1 {
            ids.insert(id.to_string());
        } else {
            ids.extend((0..share).map(|u| format!("{id}-{u}")));
        }
    }
    ids
}

const SERIAL: &str = "devsieve.io/serial";

fn serial_config() -> &'static str {
    "resources:\n  - name: serial\n    handler: glob\n    allowedRoots: [$DEV]\n    config:\n      groups: [{paths: [{path: $DEV/ttyFAKE*}]}]\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_what_discover_reports_and_allocates_nodes_mounts_and_env() {
    let node = Node::new();
    std::fs::write(node.dev().join("ttyFAKE0"), b"").unwrap();
    std::fs::write(node.dev().join("ttyFAKE1"), b"").unwrap();
    std::fs::create_dir(node.dev().join("data")).unwrap();
    node.write_config(
        "resources:
  - name: serial
    handler: glob
    allowedRoots: [$DEV]
    config:
      groups:
        - paths:
            - {path: $DEV/ttyFAKE*, permissions: rw, mountPath: /dev/printer}
            - {path: $DEV/data, type: Mount, mountPath: /data, readOnly: true}
  - name: null
    handler: glob
    config: {groups: [{count: 3, paths: [{path: /dev/null}]}]}
  - name: mem
    handler: udev-rule
    config: {udevRules: ['SUBSYSTEM==\"mem\", KERNEL==\"null|zero\"'], permissions: rw}
",
    );
    let (reports, output) = discover_json(&node.config(), &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let mut agent = Agent::start(&node.config(), &node.plugins(), &[]);
    for resource in ["devsieve.io/serial", "devsieve.io/null", "devsieve.io/mem"] {
        let registration =
            kubelet.wait_registered(resource, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        assert!(registration.options.get_preferred_allocation_available);
        let expected = discovered_ids(&reports, resource);
        assert!(!expected.is_empty(), "{resource}: discover found nothing: {reports:#}");
        let list = kubelet
            .wait_devices(resource, SECS(5), |devices| ids(devices) == expected)
            .await
            .unwrap_or_else(|e| panic!("{resource}: capacity differs from discover ({expected:?}): {e}"));
        assert!(list.devices.iter().all(|d| d.health == "Healthy"), "{list:?}");
    }

    // Allocate: what discover said a container gets.
    let serial = report(&reports, "devsieve.io/serial")["groups"][0].clone();
    let response =
        kubelet.allocate("devsieve.io/serial", vec![vec![serial["id"].as_str().unwrap().into()]]).await.unwrap();
    let container = &response.container_responses[0];
    assert_eq!(container.devices.len(), 1, "{container:?}");
    assert_eq!(container.devices[0].host_path, node.dev().join("ttyFAKE0").display().to_string());
    assert_eq!(container.devices[0].container_path, "/dev/printer");
    assert_eq!(container.devices[0].permissions, "rw");
    assert_eq!(container.mounts.len(), 1);
    assert_eq!((container.mounts[0].container_path.as_str(), container.mounts[0].read_only), ("/data", true));

    let mem = report(&reports, "devsieve.io/mem")["groups"][0].clone();
    let response = kubelet.allocate("devsieve.io/mem", vec![vec![mem["id"].as_str().unwrap().into()]]).await.unwrap();
    let container = &response.container_responses[0];
    for pair in mem["env"].as_array().unwrap() {
        assert_eq!(
            container.envs.get(pair[0].as_str().unwrap()).map(String::as_str),
            pair[1].as_str(),
            "{container:?}"
        );
    }
    assert!(
        container.envs.contains_key("UDEV_DEVNODE") && container.envs.contains_key("UDEV_DEVPATH"),
        "{container:?}"
    );

    // Two containers at once; the shared /dev/null.
    let null: Vec<String> = discovered_ids(&reports, "devsieve.io/null").into_iter().collect();
    let response = kubelet
        .allocate("devsieve.io/null", vec![vec![null[0].clone()], vec![null[1].clone(), null[2].clone()]])
        .await
        .unwrap();
    assert_eq!(response.container_responses.len(), 2);
    assert_eq!(response.container_responses[1].devices.len(), 1, "units of one device grant it once");
    assert_eq!(response.container_responses[1].devices[0].permissions, "mrw");

    let refused = kubelet.allocate("devsieve.io/null", vec![vec!["no-such-device".into()]]).await.unwrap_err();
    assert!(refused.message().contains("no device no-such-device"), "{refused:?}");

    let preferred = kubelet
        .preferred_allocation("devsieve.io/null", vec![null[2].clone(), null[0].clone(), null[1].clone()], vec![], 2)
        .await
        .unwrap();
    assert_eq!(preferred, null[..2]);

    // SIGTERM: stop serving, remove our sockets, exit 0.
    let status = agent.terminate(SECS(10)).expect("the agent stops on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", agent.log());
    assert_eq!(sockets(&node.plugins()), ["kubelet.sock"], "the agent's sockets are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_kubelet_restarts_then_a_hotplug_still_reaches_the_kubelet() {
    let node = Node::new();
    std::fs::write(node.dev().join("ttyFAKE0"), b"").unwrap();
    node.write_config(serial_config());
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    let mut registration =
        kubelet.wait_registered(SERIAL, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 1).await.unwrap();
    // One restart first: whatever is created lazily on the first one is not growth.
    kubelet.restart().unwrap();
    registration = kubelet.wait_registration(SERIAL, registration.nth + 1, SECS(5)).await.unwrap();
    let before = agent.footprint();
    let tasks_before = agent.metric("devsieve_async_tasks").expect("the agent exposes its task count");

    for _ in 0..50 {
        kubelet.restart().unwrap();
        registration = kubelet
            .wait_registration(SERIAL, registration.nth + 1, SECS(5))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 1).await.unwrap();
    }
    std::fs::write(node.dev().join("ttyFAKE1"), b"").unwrap();
    let list = kubelet
        .wait_devices(SERIAL, SECS(5), |d| d.len() == 2)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(list.devices.iter().all(|d| d.health == "Healthy"));

    let after = agent.footprint();
    assert_eq!(after.0, before.0, "threads before/after: {before:?} {after:?}");
    assert!(after.1 <= before.1, "open descriptors grew: {before:?} → {after:?}");
    assert!(after.2 < before.2 + 2048, "resident memory grew by more than 2 MiB: {before:?} → {after:?}");
    // Settle: tasks of the last restart's old connections wind down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tasks_after = agent.metric("devsieve_async_tasks").unwrap();
    assert!(tasks_after <= tasks_before, "async tasks grew: {tasks_before} → {tasks_after}");
    assert_eq!(sockets(&node.plugins()).len(), 2, "kubelet.sock and one of ours: {:?}", sockets(&node.plugins()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_that_comes_late_is_registered_with_at_once() {
    let node = Node::new();
    std::fs::write(node.dev().join("ttyFAKE0"), b"").unwrap();
    node.write_config(serial_config());
    let kubelet = KubeletSim::absent();
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    agent.wait_status(SECS(20), "the resource to be served", |s| s["resources"][0]["socket"].is_string()).await;
    let (code, body) = agent.get("/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("no kubelet"), "{body}");
    let appeared = kubelet.start_in(node.plugins()).unwrap();
    let registration =
        kubelet.wait_registered(SERIAL, SECS(5)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(registration.registered_at >= appeared);
    kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 1).await.unwrap();
    agent.wait_status(SECS(5), "readiness", |s| s["ready"] == true).await;
    assert_eq!(agent.get("/readyz").unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_device_is_unhealthy_for_the_grace_period_then_gone() {
    let node = Node::new();
    std::fs::write(node.dev().join("ttyFAKE0"), b"").unwrap();
    std::fs::write(node.dev().join("ttyFAKE1"), b"").unwrap();
    node.write_config(serial_config());
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &["--grace-period", "1500ms"]);
    kubelet.wait_registered(SERIAL, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let list = kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 2).await.unwrap();
    let gone = list.devices.iter().map(|d| d.id.clone()).find(|id| id.contains("ttyFAKE1")).expect("an id per path");

    std::fs::remove_file(node.dev().join("ttyFAKE1")).unwrap();
    let unhealthy = kubelet
        .wait_devices(SERIAL, SECS(5), |d| health_of(d, &gone) == Some("Unhealthy"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert_eq!(unhealthy.devices.len(), 2, "still listed while in its grace period");
    let refused = kubelet.allocate(SERIAL, vec![vec![gone.clone()]]).await.unwrap_err();
    assert!(refused.message().contains("unhealthy"), "{refused:?}");

    let dropped = kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 1).await.unwrap();
    let waited = dropped.received_at - unhealthy.received_at;
    assert!(waited >= Duration::from_millis(1400), "dropped after {waited:?}, before the grace period ended");
    let refused = kubelet.allocate(SERIAL, vec![vec![gone.clone()]]).await.unwrap_err();
    assert!(refused.message().contains("no device"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_starts_failing_keeps_its_last_good_devices_unhealthy() {
    let node = Node::new();
    std::fs::write(node.dev().join("x0"), b"").unwrap();
    let config = |misbehave: &str| {
        format!(
            "resources:\n  - name: flaky\n    handler: {}\n    allowedRoots: [$DEV]\n    config: {{misbehave: {misbehave}, paths: [$DEV/x0]}}\n  - name: serial\n    handler: glob\n    allowedRoots: [$DEV]\n    config: {{groups: [{{paths: [{{path: $DEV/x0}}]}}]}}\n",
            test_handler("hostile-handler").display()
        )
    };
    node.write_config(&config("none"));
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    kubelet.wait_registered("devsieve.io/flaky", SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    kubelet.wait_devices("devsieve.io/flaky", SECS(5), |d| d.len() == 1 && d[0].health == "Healthy").await.unwrap();
    let serial = kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 1).await.unwrap();

    node.write_config(&config("trap"));
    let failing = kubelet
        .wait_devices("devsieve.io/flaky", SECS(10), |d| d.len() == 1 && d[0].health == "Unhealthy")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    agent
        .wait_status(SECS(5), "the failure in status", |s| {
            s["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["last_error"].as_str().is_some_and(|e| e.contains("trapped")))
        })
        .await;
    // Kept past any grace period while it fails; the other resource is untouched.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(kubelet.latest("devsieve.io/flaky").unwrap().devices.len(), 1);
    assert_eq!(kubelet.updates(SERIAL).last().unwrap().received_at, serial.received_at, "serial got no update");

    node.write_config(&config("none"));
    let recovered = kubelet
        .wait_devices("devsieve.io/flaky", SECS(10), |d| d.len() == 1 && d[0].health == "Healthy")
        .await
        .unwrap();
    assert_eq!(recovered.devices[0].id, failing.devices[0].id, "the same device id throughout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_at_start_with_nothing_registered() {
    struct Case {
        name: &'static str,
        config: &'static str,
        as_nobody: bool,
        expect: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "invalid resource name",
            config: "resources:\n  - name: Bad_Name!\n    handler: glob\n    config: {groups: [{paths: [{path: /dev/null}]}]}\n",
            as_nobody: false,
            expect: &["resources[0]", "Bad_Name!", "name"],
        },
        Case {
            name: "duplicate names",
            config: "resources:\n  - name: null\n    handler: glob\n    config: {groups: [{paths: [{path: /dev/null}]}]}\n  - name: devsieve.io/null\n    handler: glob\n    config: {groups: [{paths: [{path: /dev/null}]}]}\n",
            as_nobody: false,
            expect: &["resources[1]", "devsieve.io/null is configured twice"],
        },
        Case {
            name: "unwritable plugin directory",
            config: "resources:\n  - name: null\n    handler: glob\n    config: {groups: [{paths: [{path: /dev/null}]}]}\n",
            as_nobody: true,
            expect: &["plugin directory", "is not writable"],
        },
    ];
    for case in cases {
        let node = Node::new();
        // Readable for `nobody`; the plugin directory stays root's, mode 0755.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(node.root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        node.write_config(case.config);
        std::fs::set_permissions(node.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
        let kubelet = KubeletSim::start(node.plugins()).unwrap();
        let listen = free_port();
        let run = run_command(&node.config(), &node.plugins(), listen, &["--no-cache"]);
        let command = if case.as_nobody { as_nobody(run) } else { run };
        let mut agent = Agent::spawn(command, listen);
        let status = agent
            .wait_exit(SECS(30))
            .unwrap_or_else(|| panic!("{}: the agent kept running\n{}", case.name, agent.log()));
        let log = agent.log();
        assert!(!status.success(), "{}: exit {status:?}", case.name);
        for part in case.expect {
            assert!(log.contains(part), "{}: the error does not name {part:?}:\n{log}", case.name);
        }
        assert!(kubelet.registrations().is_empty(), "{}: something registered", case.name);
        assert_eq!(sockets(&node.plugins()), ["kubelet.sock"], "{}: sockets left behind", case.name);
    }
}

/// `command` run as the unprivileged user `nobody` (util-linux's setpriv).
fn as_nobody(command: std::process::Command) -> std::process::Command {
    let mut wrapped = std::process::Command::new("setpriv");
    wrapped
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped.env_remove("DEVSIEVE_CACHE_DIR");
    wrapped
}

//! Remote devices: the real binary against a USB/IP server (the `usbip`
//! crate's, simulated CDC-ACM and HID devices on loopback). `discover`
//! lists them without attaching, a server that does not answer costs only
//! its own devices, and the agent advertises them to the kubelet simulator
//! under usbip-device-plugin's names when given its config file; a device
//! its server stops listing goes Unhealthy, then away, and comes back.

use devsieve_kubelet_sim::KubeletSim;
use devsieve_usbip_server::{cdc_acm, hid_keyboard, serve_changeable, serve_in_background};

use crate::agent::{Agent, SECS, free_port};
use crate::common::{discover_json, report};
use crate::kubelet::{Node, ids};

#[test]
fn discover_lists_remote_devices_and_a_dead_server_costs_only_its_own() {
    let server = serve_in_background(vec![cdc_acm("1-1", 0x1a86, 0x7523), hid_keyboard("1-2")]);
    let dead = free_port();
    let node = Node::new();
    node.write_config(&format!(
        "usbip:
  servers: [{{host: 127.0.0.1, port: {}}}, {{host: 127.0.0.1, port: {}}}]
  timeout: 2s
resources:
  - name: serial
    handler: usb-id
    from: remote
    config: {{usb: [{{vendor: '1a86', product: '7523'}}]}}
  - name: any-remote
    handler: usb-id
    from: remote
    config: {{selector: {{vendor: 0}}}}
  - name: null
    handler: glob
    config: {{groups: [{{paths: [{{path: /dev/null}}]}}]}}
",
        server.port(),
        dead.port()
    ));
    let (reports, output) = discover_json(&node.config(), &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("USB/IP server {dead}")) && stderr.contains("cannot connect"), "{stderr}");

    let serial = report(&reports, "devsieve.io/serial");
    let groups = serial["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{serial:#}");
    let devpath = format!("usbip://{server}/1-1");
    assert_eq!(groups[0]["handler_id"], devpath.as_str());
    assert_eq!(groups[0]["members"][0], devpath.as_str());
    assert!(groups[0]["device_nodes"].as_array().unwrap().is_empty(), "nothing is attached by discover");
    let id = groups[0]["id"].as_str().unwrap();
    assert!(id.len() <= 63 && !id.contains('/'), "a valid kubelet id: {id}");

    let mut any: Vec<&str> = report(&reports, "devsieve.io/any-remote")["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["handler_id"].as_str().unwrap())
        .collect();
    any.sort();
    assert_eq!(any, [format!("usbip://{server}/1-1"), format!("usbip://{server}/1-2")]);
    // Local resources are untouched by remote ones, and see no remote device.
    assert_eq!(report(&reports, "devsieve.io/null")["groups"].as_array().unwrap().len(), 1);
}

#[test]
fn a_resource_whose_handler_cannot_judge_remote_devices_is_refused() {
    let server = serve_in_background(vec![cdc_acm("1-1", 0x1a86, 0x7523)]);
    let node = Node::new();
    node.write_config(&format!(
        "usbip: {{servers: [{{host: 127.0.0.1, port: {}}}]}}
resources:
  - name: serial
    handler: udev-rule
    from: both
    config: {{udevRules: ['SUBSYSTEM==\"tty\"']}}
",
        server.port()
    ));
    let (reports, _) = discover_json(&node.config(), &[]);
    let error = report(&reports, "devsieve.io/serial")["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("does not judge USB/IP devices") && error.contains("usb-id"), "{reports:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usbip_device_plugin_config_is_served_under_its_names() {
    let server = serve_in_background(vec![cdc_acm("1-1", 0x1a86, 0x7523), hid_keyboard("1-2")]);
    let node = Node::new();
    // usbip-device-plugin's config.yaml, as its README has it, pointing at the test server.
    node.write_config(&format!(
        "resources:
  serial-adapter:
    - target:
        host: 127.0.0.1
        port: {port}
      selector:
        vendor: 0x1a86
        product: 0x7523
  keyboard:
    - target:
        host: 127.0.0.1
        port: {port}
      selector:
        bus_id: 1-2
      extras:
        - host_path: /dev/null
          container_path: /dev/keyboard-companion
",
        port = server.port()
    ));
    let (reports, _) = discover_json(&node.config(), &[]);
    let keyboard = &report(&reports, "usbip.dev.mvalvekens.be/keyboard")["groups"][0];
    assert_eq!(keyboard["device_nodes"][0]["host_path"], "/dev/null", "extras are granted: {keyboard:#}");
    assert_eq!(keyboard["device_nodes"][0]["container_path"], "/dev/keyboard-companion");
    assert_eq!(keyboard["device_nodes"][0]["permissions"], "rwm");
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    for (resource, busid) in
        [("usbip.dev.mvalvekens.be/serial-adapter", "1-1"), ("usbip.dev.mvalvekens.be/keyboard", "1-2")]
    {
        kubelet.wait_registered(resource, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        let list = kubelet
            .wait_devices(resource, SECS(10), |devices| devices.len() == 1)
            .await
            .unwrap_or_else(|e| panic!("{resource}: {e}\n{}", agent.log()));
        let id = ids(&list.devices).into_iter().next().unwrap();
        assert!(id.contains(&busid.replace('-', "")) || id.contains(busid), "{resource}: id {id} names its busid");
        assert_eq!(list.devices[0].health, "Healthy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_its_server_stops_listing_goes_unhealthy_then_away_and_a_dead_server_delays_nothing() {
    let (server, usbip) = serve_changeable(vec![cdc_acm("1-1", 0x1a86, 0x7523), cdc_acm("1-2", 0x1a86, 0x7523)]).await;
    // A server that accepts and never answers, listed first: it must not hold up the live one.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = silent.local_addr().unwrap();
    let node = Node::new();
    node.write_config(&format!(
        "usbip:
  servers: [{{host: 127.0.0.1, port: {}}}, {{host: 127.0.0.1, port: {}}}]
  refresh: 500ms
  timeout: 2s
resources:
  - name: serial
    handler: usb-id
    from: remote
    config: {{usb: [{{vendor: '1a86', product: '7523'}}]}}
",
        dead.port(),
        server.port()
    ));
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &["--grace-period", "1s"]);
    let resource = "devsieve.io/serial";
    kubelet.wait_registered(resource, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let list = kubelet
        .wait_devices(resource, SECS(10), |d| d.len() == 2 && d.iter().all(|d| d.health == "Healthy"))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let before = ids(&list.devices);

    // Another client imports 1-2: its server stops listing it.
    usbip.remove_device("1-2").await.unwrap();
    let list = kubelet
        .wait_devices(resource, SECS(10), |d| d.iter().filter(|d| d.health == "Unhealthy").count() == 1)
        .await
        .unwrap_or_else(|e| panic!("the device another client took is not Unhealthy: {e}\n{}", agent.log()));
    assert_eq!(ids(&list.devices), before, "Unhealthy first, with the same ids");
    let list = kubelet
        .wait_devices(resource, SECS(10), |d| d.len() == 1)
        .await
        .unwrap_or_else(|e| panic!("the device did not leave after the grace period: {e}\n{}", agent.log()));
    assert_eq!(list.devices[0].health, "Healthy");

    // It comes back at the next refresh, under the id it had.
    usbip.add_device(cdc_acm("1-2", 0x1a86, 0x7523)).await;
    let list = kubelet
        .wait_devices(resource, SECS(10), |d| d.len() == 2 && d.iter().all(|d| d.health == "Healthy"))
        .await
        .unwrap_or_else(|e| panic!("the device did not come back: {e}\n{}", agent.log()));
    assert_eq!(ids(&list.devices), before, "the same ids after coming back");
    // The silent server is down once its listing timed out; the live one is up.
    let down = format!("devsieve_usbip_server_up{{server=\"{dead}\"}} 0");
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = agent.get("/metrics").map(|(_, body)| body).unwrap_or_default();
        if metrics.contains(&down) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(&down), "{metrics}");
    assert!(metrics.contains(&format!("devsieve_usbip_server_devices{{server=\"{server}\"}} 2")), "{metrics}");
    let status = agent.status();
    let servers = status["usbip_servers"].as_array().unwrap();
    assert!(servers.iter().any(|s| s["error"].as_str().is_some_and(|e| e.contains("no answer"))), "{status:#}");
    drop(silent);
}

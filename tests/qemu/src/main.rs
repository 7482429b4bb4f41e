//! Runs inside the qemu guest (see `scenarios/agent.sh`), where a real
//! kernel has `vhci_hcd`, `usbipd` exports a CDC-ACM gadget (1a86:7523,
//! busid 1-1) on loopback, a second gadget (serial DS-TEST-2) is plugged in
//! locally, and `systemd-udevd` runs. It drives the real `devsieve run` as
//! the kubelet would, with the kubelet simulator and a pod-resources
//! server, and checks, in order:
//!
//! 1. the remote device is listed at the kubelet, and the local gadget's tty too;
//! 2. `Allocate` attaches it through the real vhci_hcd and grants its
//!    `/dev/bus/usb` node and its ttyACM node, which passes bytes to the
//!    gadget side (`/dev/ttyGS0`); the attachment is recorded;
//! 3. while a pod holds it, it stays attached past the release grace; once
//!    no pod holds it, the agent detaches it (the vhci port is free again);
//! 4. attached again, the server unbinds it (`usbip unbind`): the vhci port
//!    goes away by itself, the device turns Unhealthy, its record is cleaned;
//! 5. real udev hotplug: the local gadget unplugged through its `UDC` file is
//!    reported Unhealthy, plugged again Healthy.
//!
//! Every step's time goes to stdout (`step NAME MS`); any failure exits 1
//! with the agent's log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devsieve_kubelet_sim::{KubeletSim, PodResourcesSim};

const STICK: &str = "devsieve.io/stick";
const LOCAL: &str = "devsieve.io/local-serial";
const GRACE: Duration = Duration::from_secs(2);
const VHCI: &str = "/sys/devices/platform/vhci_hcd.0";

struct Run {
    work: PathBuf,
    agent: Child,
    started: Instant,
}

impl Run {
    fn fail(&mut self, what: &str) -> ! {
        println!("DRIVER FAIL: {what}");
        let _ = self.agent.kill();
        let log = std::fs::read_to_string(self.work.join("agent.log")).unwrap_or_default();
        println!("---- agent log ----\n{log}");
        println!("---- vhci ----\n{}", vhci_status());
        std::process::exit(1);
    }

    fn step(&mut self, name: &str, since: Instant) {
        println!("step {name} {} ms (at {} ms)", since.elapsed().as_millis(), self.started.elapsed().as_millis());
    }
}

fn vhci_status() -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(VHCI).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("status") {
            text += &std::fs::read_to_string(entry.path()).unwrap_or_default();
        }
    }
    text
}

/// vhci ports in use (state 006), as `port local_busid`.
fn used_ports() -> Vec<String> {
    vhci_status()
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words.len() == 7 && words[2] == "006").then(|| format!("{} {}", words[1], words[6]))
        })
        .collect()
}

/// The agent's HTTP endpoint, plainly (HTTP/1.0, the body after the headers).
fn http_get(path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect("127.0.0.1:18080") else {
        return String::from("(cannot connect to 127.0.0.1:18080)");
    };
    let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or(text)
}

/// Whether the agent's attachment record comes to hold none within `timeout`
/// (polled: a test may look at a file; the agent itself never polls).
async fn wait_unrecorded(work: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let state = std::fs::read_to_string(work.join("state/usbip-attachments.json")).unwrap_or_default();
        if !state.contains("\"busid\"") {
            return true;
        }
        if Instant::now() > deadline {
            println!("still recorded: {state}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sh(script: &str) -> (bool, String) {
    let output = Command::new("sh").arg("-c").arg(script).output().expect("sh");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let agent_binary = args.next().unwrap_or_else(|| "/usr/local/bin/devsieve".into());
    let work = PathBuf::from(args.next().unwrap_or_else(|| "/tmp/devsieve".into()));
    let local_udc = args.next().unwrap_or_else(|| "dummy_udc.1".into());
    let local_gadget = args.next().unwrap_or_else(|| "/sys/kernel/config/usb_gadget/local".into());
    std::fs::create_dir_all(work.join("plugins")).unwrap();
    let config = work.join("config.yaml");
    std::fs::write(
        &config,
        "usbip:
  servers: [{host: 127.0.0.1}]
  refresh: 1s
resources:
  - name: stick
    handler: usb-id
    from: remote
    config: {usb: [{vendor: '1a86', product: '7523'}]}
  - name: local-serial
    handler: udev-rule
    config: {udevRules: ['SUBSYSTEM==\"tty\", ATTRS{serial}==\"DS-TEST-2\"']}
",
    )
    .unwrap();
    let pod_resources = PodResourcesSim::start(&work.join("pod-resources/kubelet.sock")).unwrap();
    let kubelet = KubeletSim::start(work.join("plugins")).unwrap();
    let log = std::fs::File::create(work.join("agent.log")).unwrap();
    let agent = Command::new(&agent_binary)
        .args(["run", "--config"])
        .arg(&config)
        .arg("--plugin-dir")
        .arg(work.join("plugins"))
        .arg("--cdi-dir")
        .arg(work.join("cdi"))
        .arg("--state-dir")
        .arg(work.join("state"))
        .arg("--pod-resources-socket")
        .arg(work.join("pod-resources/kubelet.sock"))
        .args(["--usbip-release-grace", "2s", "--grace-period", "3s", "--listen", "127.0.0.1:18080"])
        .env("DEVSIEVE_LOG", "devsieve=debug")
        .env("DEVSIEVE_CACHE_DIR", work.join("cache"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting devsieve run");
    let mut run = Run { work: work.clone(), agent, started: Instant::now() };

    // 1. Listed.
    let since = Instant::now();
    if let Err(e) = kubelet.wait_registered(STICK, Duration::from_secs(60)).await {
        run.fail(&format!("{STICK} not registered: {e}"));
    }
    let list = match kubelet
        .wait_devices(STICK, Duration::from_secs(30), |d| d.len() == 1 && d[0].health == "Healthy")
        .await
    {
        Ok(list) => list,
        Err(e) => run.fail(&format!("the remote device is not listed: {e}")),
    };
    let id = list.devices[0].id.clone();
    run.step("remote-listed", since);
    if let Err(e) =
        kubelet.wait_devices(LOCAL, Duration::from_secs(30), |d| d.len() == 1 && d[0].health == "Healthy").await
    {
        run.fail(&format!("the local gadget's tty is not listed: {e}"));
    }

    // 2. Allocate = attach.
    let since = Instant::now();
    let response = match kubelet.allocate(STICK, vec![vec![id.clone()]]).await {
        Ok(response) => response,
        Err(status) => run.fail(&format!("Allocate failed: {}", status.message())),
    };
    run.step("allocate-attach", since);
    // The kubelet records an allocation (pod-resources lists it) as it answers.
    pod_resources.hold("printer-pod", STICK, std::slice::from_ref(&id));
    let container = &response.container_responses[0];
    let nodes: Vec<&str> = container.devices.iter().map(|d| d.host_path.as_str()).collect();
    println!("granted {nodes:?}, env {:?}", container.envs);
    let Some(usb) = nodes.iter().find(|n| n.starts_with("/dev/bus/usb/")) else {
        run.fail(&format!("no /dev/bus/usb node granted: {nodes:?}"));
    };
    let Some(tty) = nodes.iter().find(|n| n.starts_with("/dev/ttyACM")).map(|s| s.to_string()) else {
        run.fail(&format!("no ttyACM node granted: {nodes:?}"));
    };
    for node in [*usb, tty.as_str()] {
        if !Path::new(node).exists() {
            run.fail(&format!("granted {node} does not exist"));
        }
    }
    let used = used_ports();
    if used.len() != 1 {
        run.fail(&format!("expected one vhci port in use, found {used:?}"));
    }
    println!("vhci port in use: {}", used[0]);
    let state = std::fs::read_to_string(work.join("state/usbip-attachments.json")).unwrap_or_default();
    if !state.contains("\"busid\": \"1-1\"") {
        run.fail(&format!("the attachment is not recorded: {state}"));
    }
    // What an operator sees: the attachment in /status, the attach in /metrics.
    let status = http_get("/status");
    if !status.contains("\"usbip_attachments\":[{\"device\":\"usbip://127.0.0.1:3240/1-1\"") {
        run.fail(&format!("/status does not show the attachment: {status}"));
    }
    let metrics = http_get("/metrics");
    let attached = r#"devsieve_usbip_operations_total{server="127.0.0.1:3240",operation="attach",result="ok"} 1"#;
    if !metrics.contains(attached) {
        run.fail(&format!("/metrics does not count the attach: {metrics}"));
    }
    let since = Instant::now();
    let (ok, text) = sh(&format!(
        "stty -F {tty} raw -echo && stty -F /dev/ttyGS0 raw -echo && \
         (timeout 5 cat /dev/ttyGS0 > /tmp/got &) && sleep 0.5 && \
         echo through-vhci > {tty} && for i in $(seq 50); do grep -q through-vhci /tmp/got && exit 0; sleep 0.1; done; \
         echo 'nothing arrived'; exit 1"
    ));
    if !ok {
        run.fail(&format!("bytes written to {tty} did not reach /dev/ttyGS0: {text}"));
    }
    run.step("bytes-through-vhci", since);

    // 3. Held: kept past the grace; released: detached.
    tokio::time::sleep(GRACE * 3).await;
    if used_ports().len() != 1 {
        run.fail("the device was detached while a pod held it");
    }
    let since = Instant::now();
    pod_resources.release("printer-pod");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !used_ports().is_empty() {
        if Instant::now() > deadline {
            run.fail("the device was not detached after no pod held it");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.step("released-detached", since);
    // The port is freed first, the record written right after.
    if !wait_unrecorded(&work, Duration::from_secs(10)).await {
        run.fail("the detached device is still recorded");
    }

    // 4. Attached again, then the server unbinds it: the vhci port goes away
    //    by itself; the device turns Unhealthy and its record is cleaned.
    if let Err(e) =
        kubelet.wait_devices(STICK, Duration::from_secs(20), |d| d.len() == 1 && d[0].health == "Healthy").await
    {
        run.fail(&format!("the detached device is not listed again: {e}"));
    }
    if let Err(status) = kubelet.allocate(STICK, vec![vec![id.clone()]]).await {
        run.fail(&format!("the second Allocate failed: {}", status.message()));
    }
    pod_resources.hold("second-pod", STICK, std::slice::from_ref(&id));
    let since = Instant::now();
    let (ok, text) = sh("usbip unbind -b 1-1");
    if !ok {
        run.fail(&format!("usbip unbind -b 1-1: {text}"));
    }
    if let Err(e) =
        kubelet.wait_devices(STICK, Duration::from_secs(20), |d| d.iter().all(|d| d.health == "Unhealthy")).await
    {
        run.fail(&format!("the device its server unbound is not Unhealthy: {e}"));
    }
    run.step("server-unbound-unhealthy", since);
    if !wait_unrecorded(&work, Duration::from_secs(10)).await {
        run.fail("the attachment the server ended is still recorded");
    }
    pod_resources.release("second-pod");

    // 5. Real hotplug of the local gadget through its UDC file.
    let udc = format!("{local_gadget}/UDC");
    let since = Instant::now();
    std::fs::write(&udc, "\n").unwrap();
    if let Err(e) = kubelet
        .wait_devices(LOCAL, Duration::from_secs(20), |d| d.iter().all(|d| d.health == "Unhealthy") || d.is_empty())
        .await
    {
        run.fail(&format!("the unplugged gadget is not reported Unhealthy: {e}"));
    }
    run.step("unplugged-unhealthy", since);
    let since = Instant::now();
    std::fs::write(&udc, format!("{local_udc}\n")).unwrap();
    if let Err(e) =
        kubelet.wait_devices(LOCAL, Duration::from_secs(20), |d| d.len() == 1 && d[0].health == "Healthy").await
    {
        run.fail(&format!("the replugged gadget is not reported Healthy: {e}"));
    }
    run.step("replugged-healthy", since);

    let _ = run.agent.kill();
    let _ = run.agent.wait();
    println!("DRIVER OK");
}

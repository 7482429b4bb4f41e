//! The agent's end-to-end benchmarks (`tests/bench/run` runs them; ignored
//! otherwise): the real `devsieve run` against the kubelet simulator, files
//! and a umockdev testbed, measured as the kubelet would see it. This module
//! owns the scenarios and the JSON they write — one object, `figures`, each
//! with a name, a unit, n and its values — to `$DEVSIEVE_BENCH_OUT`
//! (default `$CARGO_TARGET_DIR/bench/agent.json`). The in-process scale
//! figures are `devsieve bench`'s.
//!
//! Latencies run from an `Instant` taken at the action to the simulator's
//! `received_at` (or `registered_at`); every wait is the simulator's, driven
//! by its events. Only that things happened is asserted, never a timing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use devsieve_kubelet_sim::{Device, KubeletSim};
use devsieve_umockdev::Testbed;
use serde_json::{Value, json};

use crate::agent::Agent;
use crate::hotplug::{PRINTER, STICK, UDEV_CONFIG, agent_under, ch340};
use crate::kubelet::{Node, health_of};

/// Generous: a wait only takes this long when something is broken.
const WAIT: Duration = Duration::from_secs(30);
/// Logging at debug would time the log writer, not the agent.
const QUIET: [&str; 2] = ["--log", "warn"];
/// A removed device is dropped this soon, so the next round starts from an empty list.
const GRACE: [&str; 2] = ["--grace-period", "100ms"];
/// Deliberate quiet between rounds, so each one meets a settled agent.
const SPACING: Duration = Duration::from_millis(20);

const START_RUNS: usize = 20;
const RESTARTS: usize = 100;
const ALLOCATES: usize = 1000;
const HOTPLUGS: usize = 100;
const SCALE_DEVICES: usize = 10_000;
const SCALE_EVENTS: usize = 21;

const SERIAL: &str = "devsieve.io/serial";
const MEM: &str = "devsieve.io/mem";
const FILES: &str = "devsieve.io/files";
/// One resource per built-in handler.
const BUILTINS: [&str; 3] = [SERIAL, MEM, STICK];
const BUILTINS_CONFIG: &str = r#"resources:
  - name: serial
    handler: glob
    allowedRoots: [$DEV]
    config: {groups: [{paths: [{path: $DEV/ttyFAKE*}]}]}
  - name: mem
    handler: udev-rule
    config: {udevRules: ['SUBSYSTEM=="mem", KERNEL=="null|zero"']}
  - name: stick
    handler: usb-id
    config: {usb: [{vendor: "1a86", product: "7523"}]}
"#;

fn files_config(pattern: &str) -> String {
    format!(
        "resources:\n  - name: files\n    handler: glob\n    allowedRoots: [$DEV]\n    config: {{groups: [{{paths: [{{path: $DEV/{pattern}}}]}}]}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run by tests/bench/run"]
async fn suite() {
    let began = Instant::now();
    let mut figures =
        vec![latency("start → registered (3 built-in resources, warm cache)", &start_to_registered().await)];
    let (restart, allocate, memory) = restart_and_allocate().await;
    figures.push(latency("kubelet restart → registered again (all 3)", &restart));
    figures.push(latency("Allocate (call → response)", &allocate));
    figures.push(memory);
    let (added, removed) = file_hotplug().await;
    figures.push(latency("hotplug: file created → listed (glob)", &added));
    figures.push(latency("removal: file removed → Unhealthy (glob)", &removed));
    figures.extend(udev_hotplug().await);
    figures.extend(idle().await);
    figures.extend(usbip().await);
    let (one, memory) = one_among_many().await;
    figures.push(latency("one file among 10,000 → listed (glob, end to end)", &one));
    figures.push(memory);

    let report = json!({ "suite": "agent", "took_s": began.elapsed().as_secs_f64(), "figures": figures });
    let text = serde_json::to_string_pretty(&report).unwrap();
    let out = std::env::var_os("DEVSIEVE_BENCH_OUT").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        target.join("bench/agent.json")
    });
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, &text).unwrap();
    println!("{text}\nwritten to {}", out.display());
}

/// The idle scenario alone, after one start that fills the compiled-handler
/// cache as the suite's earlier scenarios do: for working on memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: the idle figures of the suite, alone"]
async fn idle_alone() {
    let node = Node::new();
    node.write_config(BUILTINS_CONFIG);
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let mut agent = Agent::start(&node.config(), &node.plugins(), &QUIET);
    for resource in BUILTINS {
        kubelet.wait_registered(resource, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    }
    assert!(agent.terminate(WAIT).expect("the agent stops on SIGTERM").success());
    println!("{}", serde_json::to_string_pretty(&idle().await).unwrap());
}

/// The USB/IP figures alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: the USB/IP figures of the suite, alone"]
async fn usbip_alone() {
    println!("{}", serde_json::to_string_pretty(&usbip().await).unwrap());
}

/// USB/IP, against the usbip crate's server on loopback (refresh 1 s): a
/// device the server starts exporting → listed at the kubelet, at a
/// different phase of the refresh each time; then the idle agent's
/// wake-ups and listings with one server configured.
async fn usbip() -> Vec<Value> {
    const REFRESH_MS: u64 = 1000;
    const EXPORTS: u64 = 10;
    let (server, usbip) = devsieve_usbip_server::serve_changeable(Vec::new()).await;
    let node = Node::new();
    node.write_config(&format!(
        "usbip: {{servers: [{{host: 127.0.0.1, port: {}}}], refresh: {REFRESH_MS}ms}}
resources:
  - name: remote
    handler: usb-id
    from: remote
    config: {{usb: [{{vendor: '1a86', product: '7523'}}]}}
",
        server.port()
    ));
    let resource = "devsieve.io/remote";
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &QUIET);
    kubelet.wait_registered(resource, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let mut samples = Vec::new();
    for n in 1..=EXPORTS {
        // A different phase of the refresh interval each round (n * 0.37 s).
        tokio::time::sleep(Duration::from_millis(n * 370 % REFRESH_MS)).await;
        let exported = Instant::now();
        usbip.add_device(devsieve_usbip_server::cdc_acm(&format!("1-{n}"), 0x1a86, 0x7523)).await;
        let list = kubelet
            .wait_devices(resource, WAIT, |d| d.len() == n as usize)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        samples.push(list.received_at - exported);
    }

    let window =
        Duration::from_secs(std::env::var("DEVSIEVE_BENCH_IDLE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60));
    let listings = format!("devsieve_usbip_operations_total{{server=\"{server}\",operation=\"list\",result=\"ok\"}}");
    let lists_before = agent.metric(&listings).unwrap_or(0.0);
    let before = Sample::of(agent.pid());
    tokio::time::sleep(window).await;
    let after = Sample::of(agent.pid());
    let lists_after = agent.metric(&listings).unwrap_or(0.0);
    let per_minute = 60.0 / window.as_secs_f64();
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, (name, switches, _)) in &after.threads {
        let earlier = before.threads.get(tid).map_or(0, |(_, s, _)| *s);
        *by_name.entry(name.clone()).or_default() += switches - earlier;
    }
    let wakeups: u64 = by_name.values().sum();
    vec![
        latency(&format!("USB/IP: exported → listed at the kubelet (refresh {REFRESH_MS} ms)"), &samples),
        json!({"name": "idle wake-ups with 1 USB/IP server (refresh 1 s, 10 devices)", "unit": "context switches", "n": 1,
               "values": {"window_s": window.as_secs_f64(), "total": wakeups, "per_min": wakeups as f64 * per_minute,
                          "listings_per_min": (lists_after - lists_before) * per_minute},
               "per_thread": by_name}),
    ]
}

/// Spawn → every built-in resource registered, one fresh agent per run; a
/// first run, not counted, fills the compiled-handler cache.
async fn start_to_registered() -> Vec<Duration> {
    let node = Node::new();
    std::fs::write(node.dev().join("ttyFAKE0"), b"").unwrap();
    node.write_config(BUILTINS_CONFIG);
    let mut samples = Vec::new();
    for run in 0..=START_RUNS {
        let kubelet = KubeletSim::start(node.plugins()).unwrap();
        let spawned = Instant::now();
        let mut agent = Agent::start(&node.config(), &node.plugins(), &QUIET);
        let mut last = spawned;
        for resource in BUILTINS {
            let registration =
                kubelet.wait_registered(resource, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
            last = last.max(registration.registered_at);
        }
        if run > 0 {
            samples.push(last - spawned);
        }
        let status = agent.terminate(WAIT).expect("the agent stops on SIGTERM");
        assert!(status.success(), "{status:?}\n{}", agent.log());
    }
    samples
}

/// Kubelet restarts (restart → the last of the three new registrations),
/// then Allocate calls, against one agent; its memory at the end, not under
/// umockdev (beside the idle figure, which is).
async fn restart_and_allocate() -> (Vec<Duration>, Vec<Duration>, Value) {
    let node = Node::new();
    std::fs::write(node.dev().join("ttyFAKE0"), b"").unwrap();
    node.write_config(BUILTINS_CONFIG);
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &QUIET);
    let mut nth = BTreeMap::new();
    for resource in BUILTINS {
        let registration =
            kubelet.wait_registered(resource, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        nth.insert(resource, registration.nth);
        kubelet.wait_devices(resource, WAIT, |_| true).await.unwrap();
    }

    let mut restarts = Vec::new();
    for _ in 0..RESTARTS {
        let restarted = kubelet.restart().unwrap();
        let mut last = restarted;
        for resource in BUILTINS {
            let n = nth.get_mut(resource).unwrap();
            *n += 1;
            let registration =
                kubelet.wait_registration(resource, *n, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
            last = last.max(registration.registered_at);
        }
        restarts.push(last - restarted);
        // Each stream has delivered its first list before the next restart.
        for resource in BUILTINS {
            kubelet.wait_devices(resource, WAIT, |_| true).await.unwrap();
        }
        tokio::time::sleep(SPACING).await;
    }

    let id = kubelet.latest(SERIAL).unwrap().devices[0].id.clone();
    // The kubelet keeps its connection; the first calls set it up and are not counted.
    for _ in 0..10 {
        kubelet.allocate(SERIAL, vec![vec![id.clone()]]).await.unwrap();
    }
    let mut allocates = Vec::new();
    for _ in 0..ALLOCATES {
        let called = Instant::now();
        let response =
            kubelet.allocate(SERIAL, vec![vec![id.clone()]]).await.unwrap_or_else(|e| panic!("{e:?}\n{}", agent.log()));
        allocates.push(called.elapsed());
        assert_eq!(response.container_responses[0].devices.len(), 1);
    }
    (restarts, allocates, memory("memory after the restarts and Allocates (3 resources, 1 device)", agent.pid()))
}

/// Files created in and removed from a watched directory, one at a time.
async fn file_hotplug() -> (Vec<Duration>, Vec<Duration>) {
    let node = Node::new();
    node.write_config(&files_config("hp*"));
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &[&QUIET[..], &GRACE[..]].concat());
    kubelet.wait_registered(FILES, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    kubelet.wait_devices(FILES, WAIT, <[Device]>::is_empty).await.unwrap();

    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for round in 0..HOTPLUGS {
        let name = format!("hp{round:03}");
        let path = node.dev().join(&name);
        let created = Instant::now();
        std::fs::write(&path, b"").unwrap();
        let list = kubelet
            .wait_devices(FILES, WAIT, |d| d.iter().any(|d| d.id.contains(&name) && d.health == "Healthy"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        added.push(list.received_at - created);
        let id = list.devices.iter().find(|d| d.id.contains(&name)).unwrap().id.clone();

        let gone = Instant::now();
        std::fs::remove_file(&path).unwrap();
        let list = kubelet
            .wait_devices(FILES, WAIT, |d| health_of(d, &id) == Some("Unhealthy"))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        removed.push(list.received_at - gone);
        kubelet.wait_devices(FILES, WAIT, <[Device]>::is_empty).await.unwrap();
        tokio::time::sleep(SPACING).await;
    }
    (added, removed)
}

fn healthy(devices: &[Device]) -> usize {
    devices.iter().filter(|d| d.health == "Healthy").count()
}

/// CH340 adapters plugged into and out of a umockdev testbed, one at a
/// time; each reaches both the udev-rule (printer: its tty) and the usb-id
/// (stick: its USB device) resource. The clock starts at the first uevent:
/// the testbed's sysfs is written by then, as the kernel's is when it
/// announces a device. A device's events go out back to back, as a real
/// adapter's arrive within a few ms.
async fn udev_hotplug() -> Vec<Value> {
    let testbed = Testbed::new().unwrap();
    let node = Node::new();
    node.write_config(UDEV_CONFIG);
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = agent_under(&testbed, &node, &[&QUIET[..], &GRACE[..]].concat());
    let resources = [PRINTER, STICK];
    for resource in resources {
        kubelet.wait_registered(resource, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        kubelet.wait_devices(resource, WAIT, <[Device]>::is_empty).await.unwrap();
    }

    let mut added: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut removed: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for round in 0..HOTPLUGS as u32 {
        let devices = testbed.add_from_string(&ch340(round + 1, round)).unwrap();
        let plugged = Instant::now();
        // Parents first, as the kernel announces them.
        for device in devices.iter().rev() {
            testbed.uevent(device, "add").unwrap();
        }
        let mut ids = BTreeMap::new();
        for resource in resources {
            let list = kubelet
                .wait_devices(resource, WAIT, |d| healthy(d) == 1)
                .await
                .unwrap_or_else(|e| panic!("{resource}: {e}\n{}", agent.log()));
            added.entry(resource).or_default().push(list.received_at - plugged);
            ids.insert(resource, list.devices[0].id.clone());
        }

        testbed.remove_device(devices.last().unwrap()).unwrap();
        let unplugged = Instant::now();
        for device in &devices {
            testbed.uevent(device, "remove").unwrap();
        }
        for resource in resources {
            let list = kubelet
                .wait_devices(resource, WAIT, |d| health_of(d, &ids[resource]) == Some("Unhealthy"))
                .await
                .unwrap_or_else(|e| panic!("{resource}: {e}\n{}", agent.log()));
            removed.entry(resource).or_default().push(list.received_at - unplugged);
        }
        for resource in resources {
            kubelet.wait_devices(resource, WAIT, <[Device]>::is_empty).await.unwrap();
        }
        tokio::time::sleep(SPACING).await;
    }
    drop(agent);
    vec![
        latency("hotplug: udev device added → listed (udev-rule)", &added[PRINTER]),
        latency("hotplug: udev device added → listed (usb-id)", &added[STICK]),
        latency("removal: udev device removed → Unhealthy (udev-rule)", &removed[PRINTER]),
        latency("removal: udev device removed → Unhealthy (usb-id)", &removed[STICK]),
    ]
}

/// An FTDI adapter: the CH340 record with another vendor, product and driver.
fn ftdi(port: u32, n: u32) -> String {
    ch340(port, n).replace("1a86", "0403").replace("7523", "6001").replace("ch341", "ftdi_sio")
}

/// 3 resources and 100 devices, untouched for the window: memory, CPU time
/// and context switches (the wake-ups), per thread by name.
async fn idle() -> Vec<Value> {
    let window =
        Duration::from_secs(std::env::var("DEVSIEVE_BENCH_IDLE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60));
    let testbed = Testbed::new().unwrap();
    for port in 1..=25 {
        testbed.add_from_string(&ch340(port, port)).unwrap();
        testbed.add_from_string(&ftdi(port + 100, port + 100)).unwrap();
    }
    let node = Node::new();
    for i in 0..50 {
        std::fs::write(node.dev().join(format!("f{i:02}")), b"").unwrap();
    }
    // printer: the 25 CH340 ttys; stick: the 25 FTDI USB devices; files: the 50 files.
    let config = UDEV_CONFIG.replace(
        r#"{vendor: "1a86", product: "7523"}], includeChildren: true"#,
        r#"{vendor: "0403", product: "6001"}]"#,
    );
    assert_ne!(config, UDEV_CONFIG, "the stick resource matches the FTDI adapters");
    node.write_config(&format!("{config}{}", files_config("f*").trim_start_matches("resources:\n")));
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = agent_under(&testbed, &node, &QUIET);
    for (resource, count) in [(PRINTER, 25), (STICK, 25), (FILES, 50)] {
        kubelet.wait_registered(resource, WAIT).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        kubelet
            .wait_devices(resource, WAIT, |d| d.len() == count)
            .await
            .unwrap_or_else(|e| panic!("{resource}: {e}\n{}", agent.log()));
    }
    // Deliberate: whatever the start leaves behind (a freed buffer, a last
    // log line) is done before the window opens.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lists_before: usize = [PRINTER, STICK, FILES].iter().map(|r| kubelet.updates(r).len()).sum();
    let before = Sample::of(agent.pid());
    tokio::time::sleep(window).await;
    let after = Sample::of(agent.pid());
    let lists_after: usize = [PRINTER, STICK, FILES].iter().map(|r| kubelet.updates(r).len()).sum();
    assert!(!after.threads.is_empty(), "the agent is still running\n{}", agent.log());

    let tick_ms = 1000.0 / clock_ticks_per_second();
    let cpu_ms = (after.cpu_ticks - before.cpu_ticks) as f64 * tick_ms;
    let per_minute = 60.0 / window.as_secs_f64();
    // Per thread alive at the end; one that started during the window counts from zero.
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    let mut sched_ns = 0;
    for (tid, (name, switches, on_cpu)) in &after.threads {
        let (earlier_switches, earlier_on_cpu) = before.threads.get(tid).map_or((0, 0), |(_, s, ns)| (*s, *ns));
        *by_name.entry(name.clone()).or_default() += switches - earlier_switches;
        sched_ns += on_cpu - earlier_on_cpu;
    }
    let sched_ms = sched_ns as f64 / 1e6;
    let wakeups: u64 = by_name.values().sum();
    let secs = window.as_secs_f64();
    vec![
        memory("idle memory (3 resources, 100 devices, under umockdev)", agent.pid()),
        json!({"name": "idle CPU time (3 resources, 100 devices)", "unit": "ms", "n": 1,
               "values": {"window_s": secs, "utime_stime": cpu_ms, "utime_stime_per_min": cpu_ms * per_minute,
                          "schedstat": sched_ms, "schedstat_per_min": sched_ms * per_minute}}),
        json!({"name": "idle wake-ups (3 resources, 100 devices)", "unit": "context switches", "n": 1,
               "values": {"window_s": secs, "total": wakeups, "per_min": wakeups as f64 * per_minute,
                          "threads": after.threads.len(), "lists_sent": lists_after - lists_before},
               "per_thread": by_name}),
    ]
}

/// What /proc says about the agent at one moment.
struct Sample {
    /// utime + stime of the whole process, in clock ticks.
    cpu_ticks: u64,
    /// Per thread id: its name, its context switches (voluntary and not), its ns on CPU
    /// (schedstat: finer than clock ticks).
    threads: BTreeMap<String, (String, u64, u64)>,
}

impl Sample {
    fn of(pid: u32) -> Sample {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
            .unwrap_or_default();
        let cpu_ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
        let mut threads = BTreeMap::new();
        for task in std::fs::read_dir(proc.join("task")).into_iter().flatten().flatten() {
            let tid = task.file_name().to_string_lossy().into_owned();
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_string();
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let switches = field(&status, "voluntary_ctxt_switches:") + field(&status, "nonvoluntary_ctxt_switches:");
            let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            let on_cpu = schedstat.split_whitespace().next().and_then(|ns| ns.parse().ok()).unwrap_or(0);
            threads.insert(tid, (name, switches, on_cpu));
        }
        Sample { cpu_ticks, threads }
    }
}

/// VmRSS and VmHWM (the peak, start included) of `pid` now, and how much
/// of VmRSS is anonymous (heap, stacks) and how much file pages (the mapped
/// binary and libraries: clean page cache the kernel can take back).
fn memory(name: &str, pid: u32) -> Value {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let values = json!({
        "vm_rss": field(&status, "VmRSS:"),
        "vm_hwm": field(&status, "VmHWM:"),
        "rss_anon": field(&status, "RssAnon:"),
        "rss_file": field(&status, "RssFile:"),
    });
    json!({"name": name, "unit": "KiB", "n": 1, "values": values})
}

/// The number after `name` in a /proc status file.
fn field(status: &str, name: &str) -> u64 {
    status.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

fn clock_ticks_per_second() -> f64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().ok();
    output.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
}

/// 10,000 files under a glob resource, then one more at a time; the agent's memory at the end.
async fn one_among_many() -> (Vec<Duration>, Value) {
    let node = Node::new();
    let big = node.dev().join("big");
    std::fs::create_dir(&big).unwrap();
    for i in 0..SCALE_DEVICES {
        std::fs::write(big.join(format!("f{i:05}")), b"").unwrap();
    }
    node.write_config(&files_config("big/*"));
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &QUIET);
    kubelet.wait_registered(FILES, WAIT * 4).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    kubelet
        .wait_devices(FILES, WAIT * 4, |d| d.len() == SCALE_DEVICES)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));

    let mut samples = Vec::new();
    for event in 0..SCALE_EVENTS {
        let created = Instant::now();
        std::fs::write(big.join(format!("new{event:02}")), b"").unwrap();
        let list = kubelet
            .wait_devices(FILES, WAIT, |d| d.len() == SCALE_DEVICES + event + 1)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        samples.push(list.received_at - created);
        tokio::time::sleep(SPACING).await;
    }
    (samples, memory("memory with 10,021 devices (glob)", agent.pid()))
}

/// p50, p99 and max in ms (nearest rank).
fn latency(name: &str, samples: &[Duration]) -> Value {
    assert!(!samples.is_empty(), "{name}: no samples");
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    json!({"name": name, "unit": "ms", "n": ms.len(), "values": {"p50": rank(0.50), "p99": rank(0.99), "max": ms[ms.len() - 1]}})
}

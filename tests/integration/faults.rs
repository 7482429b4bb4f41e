//! Faults injected into a running `devsieve run`: its config file replaced
//! by what is not a config, the watched device directory removed and
//! re-created, paths given relative to the working directory. The agent must
//! keep serving what worked and name every refusal where operators look
//! (`/readyz`, `devsieve status`).

use std::path::Path;

use devsieve_kubelet_sim::KubeletSim;

use crate::agent::{Agent, SECS, free_port, run_command, write_atomically};
use crate::kubelet::Node;

const SERIAL: &str = "devsieve.io/serial";

fn glob_config(dev: &Path, name: &str, pattern: &str) -> String {
    format!(
        "resources:\n  - name: {name}\n    handler: glob\n    allowedRoots: [{dev}]\n    config:\n      groups: [{{paths: [{{path: {dev}/{pattern}}}]}}]\n",
        dev = dev.display()
    )
}

/// Waits until the agent refuses the config with an error containing
/// `needle`, and checks it shows on /readyz and in `devsieve status`.
async fn expect_refusal(agent: &Agent, needle: &str) {
    agent.wait_status(SECS(10), needle, |s| s["config_error"].as_str().is_some_and(|e| e.contains(needle))).await;
    let (code, body) = agent.get("/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(needle), "/readyz does not name the refusal ({needle}): {body}");
    let status = agent.status();
    assert!(status["config_error"].as_str().is_some_and(|e| e.contains(needle)), "{status:#}");
}

/// The same agent, once with every path relative to its working directory
/// and once with absolute paths: a change of the config file is applied, a
/// broken one refused, either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_given_by_a_relative_path_reloads_and_refuses_like_an_absolute_one() {
    for relative in [true, false] {
        let node = Node::new();
        std::fs::write(node.dev().join("ttyFAKE0"), b"").unwrap();
        std::fs::write(node.dev().join("other0"), b"").unwrap();
        write_atomically(&node.config(), &glob_config(&node.dev(), "serial", "ttyFAKE*"));
        let kubelet = KubeletSim::start(node.plugins()).unwrap();
        let listen = free_port();
        let mut command = if relative {
            let mut command = run_command(Path::new("config.yaml"), Path::new("plugins"), listen, &[]);
            command.current_dir(node.root.path());
            command
        } else {
            run_command(&node.config(), &node.plugins(), listen, &[])
        };
        command.env("DEVSIEVE_LOG", "devsieve=debug");
        let agent = Agent::spawn(command, listen);
        kubelet
            .wait_registered(SERIAL, SECS(20))
            .await
            .unwrap_or_else(|e| panic!("relative={relative}: {e}\n{}", agent.log()));

        let changed =
            glob_config(&node.dev(), "serial", "ttyFAKE*") + &glob_config(&node.dev(), "other", "other*")[11..];
        write_atomically(&node.config(), &changed);
        kubelet
            .wait_registered("devsieve.io/other", SECS(10))
            .await
            .unwrap_or_else(|e| panic!("relative={relative}: the change was not applied: {e}\n{}", agent.log()));

        write_atomically(&node.config(), "resources: [this is not\n");
        expect_refusal(&agent, "config.yaml").await;
        assert_eq!(
            kubelet.latest(SERIAL).unwrap().devices.len(),
            1,
            "relative={relative}: the old config keeps serving"
        );
    }
}

/// Garbage, an empty file, a symlink loop, a file of 100 MiB: each is
/// refused by name and the last good config keeps serving; a good file
/// afterwards is applied and clears the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_replaced_by_what_is_not_a_config_keeps_the_last_good_one() {
    let node = Node::new();
    std::fs::write(node.dev().join("ttyFAKE0"), b"").unwrap();
    let good = glob_config(&node.dev(), "serial", "ttyFAKE*");
    write_atomically(&node.config(), &good);
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    kubelet.wait_registered(SERIAL, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 1).await.unwrap();

    let config = node.config();
    let swap = node.root.path().join("swap");
    let replace = |make: &dyn Fn(&Path)| {
        let _ = std::fs::remove_file(&swap);
        make(&swap);
        std::fs::rename(&swap, &config).unwrap();
    };
    // (what, how to make it at a path, what the refusal must say)
    type Fault<'a> = (&'a str, &'a dyn Fn(&Path), &'a str);
    let cases: [Fault; 4] = [
        ("garbage", &|p| std::fs::write(p, b"\x00\x01{[ not yaml").unwrap(), "config.yaml"),
        ("an empty file", &|p| std::fs::write(p, b"").unwrap(), "resources"),
        // config.yaml -> config.yaml once renamed into place.
        ("a symlink loop", &|p| std::os::unix::fs::symlink(&config, p).unwrap(), "symbolic links"),
        (
            "100 MiB",
            &|p| {
                let file = std::fs::File::create(p).unwrap();
                file.set_len(100 << 20).unwrap();
            },
            "larger than 4 MiB",
        ),
    ];
    let mut refusals = 0.0;
    for (what, make, needle) in cases {
        // Back to the good config between faults, so each fault is a change.
        write_atomically(&config, &good);
        agent.wait_status(SECS(10), "the good config", |s| s["config_error"].is_null()).await;
        replace(make);
        expect_refusal(&agent, needle).await;
        refusals += 1.0;
        let list = kubelet.latest(SERIAL).unwrap();
        assert_eq!(list.devices.len(), 1, "{what}: the last good config keeps serving");
        assert!(list.devices.iter().all(|d| d.health == "Healthy"), "{what}: {list:?}");
    }
    assert_eq!(agent.metric(r#"devsieve_config_reloads_total{result="refused"}"#), Some(refusals));
    write_atomically(&config, &good);
    agent.wait_status(SECS(10), "the refusal to clear", |s| s["config_error"].is_null() && s["ready"] == true).await;
    assert_eq!(agent.get("/readyz").unwrap().0, 200);
}

/// The directory a glob expands in is removed (its devices leave) and made
/// again with a device: the device comes back, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_device_directory_removed_and_recreated_is_watched_again() {
    let node = Node::new();
    let serial = node.dev().join("serial");
    std::fs::create_dir(&serial).unwrap();
    std::fs::write(serial.join("ttyFAKE0"), b"").unwrap();
    write_atomically(&node.config(), &glob_config(&node.dev(), "serial", "serial/ttyFAKE*"));
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &["--grace-period", "100ms"]);
    kubelet.wait_registered(SERIAL, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 1).await.unwrap();

    for round in 0..3 {
        std::fs::remove_dir_all(&serial).unwrap();
        kubelet
            .wait_devices(SERIAL, SECS(5), |d| d.is_empty())
            .await
            .unwrap_or_else(|e| panic!("round {round}: the device did not leave: {e}\n{}", agent.log()));
        std::fs::create_dir(&serial).unwrap();
        std::fs::write(serial.join(format!("ttyFAKE{round}")), b"").unwrap();
        kubelet
            .wait_devices(SERIAL, SECS(5), |d| d.len() == 1 && d[0].health == "Healthy")
            .await
            .unwrap_or_else(|e| panic!("round {round}: the device did not come back: {e}\n{}", agent.log()));
    }
}

// ---- the kubelet's faults (the simulator's `Faults` and `end_stream`) ----

fn serial_node(devices: &[&str]) -> Node {
    let node = Node::new();
    for device in devices {
        std::fs::write(node.dev().join(device), b"").unwrap();
    }
    write_atomically(&node.config(), &glob_config(&node.dev(), "serial", "ttyFAKE*"));
    node
}

/// The kubelet ends the stream while a device is being plugged: the agent
/// registers again on its own, and the new stream's first list has the
/// device. Three times in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_kubelet_ends_is_registered_again_and_loses_no_update() {
    let node = serial_node(&["ttyFAKE0"]);
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    let mut registration =
        kubelet.wait_registered(SERIAL, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 1).await.unwrap();
    for round in 1..=3 {
        std::fs::write(node.dev().join(format!("ttyFAKE{round}")), b"").unwrap();
        assert!(kubelet.end_stream(SERIAL), "round {round}: the resource was not registered");
        registration = kubelet
            .wait_registration(SERIAL, registration.nth + 1, SECS(10))
            .await
            .unwrap_or_else(|e| panic!("round {round}: not registered again: {e}\n{}", agent.log()));
        kubelet
            .wait_devices(SERIAL, SECS(5), |d| d.len() == round + 1 && d.iter().all(|d| d.health == "Healthy"))
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", agent.log()));
    }
    // A registration that replaces a stream is not mistaken for the kubelet letting go.
    tokio::time::sleep(SECS(1)).await;
    assert_eq!(kubelet.registration(SERIAL).unwrap().nth, registration.nth, "registered again without a cause");

    // The stream ends before `Register` has even answered (the kubelet
    // accepted, opened the stream, and let go at once): still registered again.
    kubelet.set_faults(devsieve_kubelet_sim::Faults { answer_delay: SECS(1), ..Default::default() });
    kubelet.restart().unwrap();
    registration = kubelet.wait_registration(SERIAL, registration.nth + 1, SECS(10)).await.unwrap();
    assert!(kubelet.end_stream(SERIAL), "the new registration has its stream");
    kubelet.set_faults(devsieve_kubelet_sim::Faults::default());
    kubelet.wait_registration(SERIAL, registration.nth + 1, SECS(10)).await.unwrap_or_else(|e| {
        panic!("a stream ended before Register answered: not registered again: {e}\n{}", agent.log())
    });
    kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 4).await.unwrap();
}

/// `Register` refused three times: retried with backoff until accepted, each
/// failure counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_registrations_are_retried_until_accepted() {
    let node = serial_node(&["ttyFAKE0"]);
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    kubelet.set_faults(devsieve_kubelet_sim::Faults { refuse_registrations: 3, ..Default::default() });
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    kubelet.wait_registered(SERIAL, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 1).await.unwrap();
    // The kubelet records the registration before `Register` has answered the agent.
    agent.wait_status(SECS(5), "the registration", |s| s["resources"][0]["registered"] == true).await;
    let series = |result: &str| format!(r#"devsieve_registrations_total{{resource="{SERIAL}",result="{result}"}}"#);
    assert_eq!(agent.metric(&series("error")), Some(3.0));
    assert_eq!(agent.metric(&series("ok")), Some(1.0));
    assert_eq!(agent.log().matches("registration failed").count(), 1, "logged once per distinct failure");
}

/// The kubelet dials back 5 s after `Register` came in: the agent keeps
/// serving meanwhile, and a device plugged during the wait is in the first list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_that_dials_back_after_5_s_gets_what_was_plugged_meanwhile() {
    let node = serial_node(&["ttyFAKE0"]);
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    kubelet.set_faults(devsieve_kubelet_sim::Faults { dial_back_delay: SECS(5), ..Default::default() });
    let started = std::time::Instant::now();
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    agent.wait_status(SECS(20), "the resource to be served", |s| s["resources"][0]["socket"].is_string()).await;
    std::fs::write(node.dev().join("ttyFAKE1"), b"").unwrap();
    let registration =
        kubelet.wait_registered(SERIAL, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    assert!(registration.registered_at - started >= SECS(5), "the fault did not delay the dial-back");
    let first = kubelet.wait_devices(SERIAL, SECS(5), |_| true).await.unwrap();
    assert_eq!(first.devices.len(), 2, "the first list lacks the device plugged during the wait: {first:?}");
    assert_eq!(kubelet.registrations().len(), 1, "one Register, however slow");
}

/// A hundred kubelet restarts with a device plugged or unplugged between
/// each: every restart is followed by a registration, and every list after
/// it is exactly the devices there. (How fast: see BENCHMARKS.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_kubelet_restarts_with_a_hotplug_between_each_lose_no_update() {
    let node = serial_node(&["ttyFAKE0"]);
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    let mut registration =
        kubelet.wait_registered(SERIAL, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    let mut present = 1;
    let mut slowest = std::time::Duration::ZERO;
    for round in 1..=100 {
        // Plug a new device on odd rounds, unplug the newest on even ones.
        if round % 2 == 1 {
            std::fs::write(node.dev().join(format!("ttyFAKE{present}")), b"").unwrap();
            present += 1;
        } else {
            present -= 1;
            std::fs::remove_file(node.dev().join(format!("ttyFAKE{present}"))).unwrap();
        }
        let restarted = kubelet.restart().unwrap();
        registration = kubelet
            .wait_registration(SERIAL, registration.nth + 1, SECS(10))
            .await
            .unwrap_or_else(|e| panic!("restart {round}: {e}\n{}", agent.log()));
        slowest = slowest.max(registration.registered_at - restarted);
        let healthy = |d: &[devsieve_kubelet_sim::Device]| d.iter().filter(|d| d.health == "Healthy").count();
        kubelet
            .wait_devices(SERIAL, SECS(5), |d| healthy(d) == present)
            .await
            .unwrap_or_else(|e| panic!("restart {round}: {e}\n{}", agent.log()));
    }
    eprintln!("100 restarts: the slowest registration came {slowest:?} after kubelet.sock");
}

// ---- CDI: a name is advertised only once its spec is on disk ----

/// The CDI spec directory cannot be written (a file stands where it should
/// be): the resource registers but advertises no device, and says why on
/// /readyz and in status. Once the directory can be made, the spec is
/// written and only then the device advertised; every name the kubelet is
/// told and `Allocate` answers is in the spec on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdi_names_are_advertised_only_once_their_spec_is_on_disk() {
    let node = Node::new();
    std::fs::write(node.dev().join("ttyFAKE0"), b"").unwrap();
    let config = glob_config(&node.dev(), "serial", "ttyFAKE*")
        .replace("    handler: glob\n", "    handler: glob\n    cdi: true\n");
    write_atomically(&node.config(), &config);
    // The harness gives the agent `--cdi-dir <plugins>/cdi`.
    let cdi_dir = node.plugins().join("cdi");
    std::fs::write(&cdi_dir, b"not a directory").unwrap();
    let kubelet = KubeletSim::start(node.plugins()).unwrap();
    let agent = Agent::start(&node.config(), &node.plugins(), &[]);
    kubelet.wait_registered(SERIAL, SECS(20)).await.unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    agent
        .wait_status(SECS(10), "the CDI error", |s| {
            s["resources"][0]["cdi_error"].as_str().is_some_and(|e| e.contains("CDI spec"))
        })
        .await;
    let (code, body) = agent.get("/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("cannot write the CDI spec") && body.contains("not advertised"), "{body}");
    assert!(
        kubelet.updates(SERIAL).iter().all(|list| list.devices.is_empty()),
        "a CDI name was advertised without its spec: {:?}",
        kubelet.updates(SERIAL)
    );

    std::fs::remove_file(&cdi_dir).unwrap();
    let list = kubelet
        .wait_devices(SERIAL, SECS(10), |d| d.len() == 1)
        .await
        .unwrap_or_else(|e| panic!("the spec was not written again: {e}\n{}", agent.log()));
    agent.wait_status(SECS(5), "the CDI error to clear", |s| s["ready"] == true).await;
    let spec_text = |dir: &Path| -> String {
        std::fs::read_dir(dir).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect()
    };
    let id = &list.devices[0].id;
    assert!(spec_text(&cdi_dir).contains(&format!("\"name\": \"{id}\"")), "{}", spec_text(&cdi_dir));
    std::fs::write(node.dev().join("ttyFAKE1"), b"").unwrap();
    let list = kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 2).await.unwrap();
    let on_disk = spec_text(&cdi_dir);
    for device in &list.devices {
        assert!(on_disk.contains(&format!("\"name\": \"{}\"", device.id)), "{} is not in {on_disk}", device.id);
        let response = kubelet.allocate(SERIAL, vec![vec![device.id.clone()]]).await.unwrap();
        let names: Vec<&str> = response.container_responses[0].cdi_devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, [format!("{SERIAL}={}", device.id)]);
    }
}

// ---- the compiled-handler cache: full, or not a directory ----

/// The cache directory is a 32 KiB tmpfs (too small for any compiled
/// handler), or a path under a regular file: the agent compiles, serves
/// from memory, and says so in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_impossible_cache_directory_costs_only_the_cache() {
    let unshare_works = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=32k tmpfs /mnt"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(unshare_works, "this test needs `unshare -m` and tmpfs mounts (root, util-linux)");
    for full in [true, false] {
        let node = serial_node(&["ttyFAKE0"]);
        let kubelet = KubeletSim::start(node.plugins()).unwrap();
        let listen = free_port();
        let cache = node.root.path().join("cache");
        let inner = run_command(&node.config(), &node.plugins(), listen, &[]);
        let mut command = if full {
            std::fs::create_dir(&cache).unwrap();
            // A mount namespace of its own, with the cache on a tiny tmpfs.
            let mut wrapped = std::process::Command::new("unshare");
            wrapped
                .args(["-m", "sh", "-c", "mount -t tmpfs -o size=32k,mode=0700 tmpfs \"$0\" && exec \"$@\""])
                .arg(&cache)
                .arg(inner.get_program())
                .args(inner.get_args());
            for (key, value) in inner.get_envs() {
                if let Some(value) = value {
                    wrapped.env(key, value);
                }
            }
            wrapped
        } else {
            std::fs::write(&cache, b"a file, not a directory").unwrap();
            inner
        };
        let cache_arg = if full { cache.clone() } else { cache.join("compiled") };
        command.env("DEVSIEVE_CACHE_DIR", &cache_arg).env("DEVSIEVE_BLOB_CACHE_DIR", cache_arg.join("blobs"));
        let agent = Agent::spawn(command, listen);
        kubelet.wait_registered(SERIAL, SECS(30)).await.unwrap_or_else(|e| panic!("full={full}: {e}\n{}", agent.log()));
        kubelet.wait_devices(SERIAL, SECS(5), |d| d.len() == 1).await.unwrap();
        let log = agent.log();
        let said = if full { "could not cache a compiled handler" } else { "compiled handlers will not be cached" };
        assert!(log.contains(said), "full={full}: the log does not say the cache is not used:\n{log}");
    }
}

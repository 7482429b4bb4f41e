//! Handlers from ConfigMaps: mounted as a volume (a file reference into the
//! kubelet's `..data` layout), and read and watched through the API — against
//! a small Kubernetes API server on loopback that answers GET and WATCH for
//! one ConfigMap and records every request.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use devsieve::config::{ConfigMapRef, HandlerRef};
use devsieve::digest::sha256_digest;
use devsieve::loader::{Loader, LoaderOptions, WatchItem};

use crate::common::*;

/// Lays `files` out as the kubelet mounts a ConfigMap: `..<timestamp>/` holds
/// them, `..data` points at it, and each key is a symlink through `..data`.
/// Calling it again swaps `..data` atomically, as an update does.
fn mount_configmap(dir: &Path, stamp: &str, files: &[(&str, &[u8])]) {
    let data_dir = dir.join(format!("..{stamp}"));
    std::fs::create_dir_all(&data_dir).unwrap();
    for (key, bytes) in files {
        std::fs::write(data_dir.join(key), bytes).unwrap();
        let link = dir.join(key);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{key}"), &link).unwrap();
        }
    }
    let temp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{stamp}"), &temp).unwrap();
    std::fs::rename(&temp, dir.join("..data")).unwrap();
}

#[test]
fn a_configmap_mounted_as_a_volume_is_a_file_reference() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("handlers");
    std::fs::create_dir(&volume).unwrap();
    mount_configmap(
        &volume,
        "2025_01_01_00_00_00.000000001",
        &[("zigbee.wasm", &std::fs::read(example_handler()).unwrap())],
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("resources:\n  - name: zigbee\n    handler: {}\n", volume.join("zigbee.wasm").display()),
    )
    .unwrap();
    let mut command = devsieve();
    command.args(["discover", "--json", "--config"]).arg(&config);
    let output = under_umockdev(&case_file("custom-handler/zigbee-sticks.umockdev"), &command);
    assert!(output.status.success(), "{}", text(&output).1);
    assert_eq!(granted_nodes(report(&reports_of(&output), "devsieve.io/zigbee")).len(), 3);

    // The kubelet swaps `..data`: the next read sees the new handler.
    mount_configmap(
        &volume,
        "2025_01_02_00_00_00.000000002",
        &[("zigbee.wasm", &std::fs::read(test_handler("old-contract-handler")).unwrap())],
    );
    let output = devsieve().args(["validate", "--config"]).arg(&config).output().unwrap();
    assert!(!output.status.success());
    assert!(text(&output).1.contains("devsieve:handler@9.0.0"), "{}", text(&output).1);
}

/// What the mock API server holds and has seen.
#[derive(Default)]
struct ApiState {
    /// binaryData of the ConfigMap devsieve/handlers, or None once deleted.
    object: Option<Vec<(String, Vec<u8>)>>,
    version: u64,
    watchers: Vec<TcpStream>,
    requests: Vec<String>,
}

/// A Kubernetes API server for the ConfigMap `devsieve/handlers`.
struct MockApi {
    url: String,
    state: Arc<Mutex<ApiState>>,
}

impl MockApi {
    fn start(key: &str, bytes: &[u8]) -> MockApi {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(ApiState {
            object: Some(vec![(key.to_string(), bytes.to_vec())]),
            version: 1,
            ..Default::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, shared));
            }
        });
        MockApi { url, state }
    }

    fn set(&self, data: Option<Vec<(String, Vec<u8>)>>) {
        let mut state = self.state.lock().unwrap();
        state.version += 1;
        let kind = match (&state.object, &data) {
            (None, Some(_)) => "ADDED",
            (Some(_), None) => "DELETED",
            _ => "MODIFIED",
        };
        let object = configmap_json(data.as_ref().or(state.object.as_ref()).unwrap(), state.version);
        state.object = data;
        let event = format!("{}\n", serde_json::json!({"type": kind, "object": object}));
        state.watchers.retain_mut(|stream| write_chunk(stream, event.as_bytes()).is_ok());
    }

    fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    fn client(&self) -> devsieve::loader::KubeClientFactory {
        let url = self.url.clone();
        Arc::new(move || {
            let url = url.clone();
            Box::pin(async move {
                let config = kube::Config::new(url.parse()?);
                Ok(kube::Client::try_from(config)?)
            })
        })
    }
}

fn configmap_json(data: &[(String, Vec<u8>)], version: u64) -> serde_json::Value {
    let binary: serde_json::Map<String, serde_json::Value> =
        data.iter().map(|(k, v)| (k.clone(), base64::engine::general_purpose::STANDARD.encode(v).into())).collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "handlers", "namespace": "devsieve", "resourceVersion": version.to_string()},
        "binaryData": binary,
    })
}

fn write_chunk(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    write!(stream, "{:x}\r\n", bytes.len())?;
    stream.write_all(bytes)?;
    stream.write_all(b"\r\n")?;
    stream.flush()
}

/// HTTP/1.1, several requests per connection; a watch keeps its connection.
fn serve(stream: TcpStream, state: Arc<Mutex<ApiState>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                break;
            }
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let mut guard = state.lock().unwrap();
        guard.requests.push(target.clone());
        let respond = |stream: &mut TcpStream, status: &str, body: &str| {
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        };
        if target == "/api/v1/namespaces/devsieve/configmaps/handlers" {
            match &guard.object {
                Some(data) => respond(&mut stream, "200 OK", &configmap_json(data, guard.version).to_string()),
                None => respond(
                    &mut stream,
                    "404 Not Found",
                    r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"configmaps \"handlers\" not found"}"#,
                ),
            }
        } else if target.starts_with("/api/v1/namespaces/devsieve/configmaps?") && target.contains("watch=true") {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            );
            let _ = stream.flush();
            // As the API server does: changes after the version asked for
            // are sent, even those made before the watch connected.
            let asked = target.split(['?', '&']).find_map(|p| p.strip_prefix("resourceVersion=")).unwrap_or_default();
            if asked != guard.version.to_string() {
                let event = match &guard.object {
                    Some(data) => {
                        serde_json::json!({"type": "MODIFIED", "object": configmap_json(data, guard.version)})
                    }
                    None => serde_json::json!({"type": "DELETED", "object": configmap_json(&[], guard.version)}),
                };
                let _ = write_chunk(&mut stream, format!("{event}\n").as_bytes());
            }
            guard.watchers.push(stream);
            return;
        } else {
            respond(
                &mut stream,
                "403 Forbidden",
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403,"message":"only get and watch on configmaps/handlers"}"#,
            );
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

async fn next(updates: &mut tokio::sync::watch::Receiver<WatchItem>) -> WatchItem {
    tokio::time::timeout(Duration::from_secs(10), updates.changed())
        .await
        .expect("no update within 10 s")
        .expect("the watch ended");
    updates.borrow_and_update().clone()
}

#[test]
fn a_configmap_is_read_and_watched_through_the_api_with_only_get_and_watch() {
    let first = std::fs::read(example_handler()).unwrap();
    let second = std::fs::read(test_handler("hostile-handler")).unwrap();
    let api = MockApi::start("zigbee.wasm", &first);
    let loader = Loader::new(LoaderOptions {
        kube_client: api.client(),
        backoff: Duration::from_millis(50),
        ..Default::default()
    });
    let reference = HandlerRef::ConfigMap(ConfigMapRef {
        namespace: "devsieve".into(),
        name: "handlers".into(),
        key: "zigbee.wasm".into(),
    });
    let runtime = runtime();
    runtime.block_on(async {
        let fetched = loader.fetch(&reference).await.expect("fetch");
        assert_eq!(fetched.digest, sha256_digest(&first));
        assert!(fetched.origin.contains("configmap:devsieve/handlers/zigbee.wasm"), "{}", fetched.origin);

        let mut updates = loader.watch(&reference).expect("a ConfigMap can change");
        let current = next(&mut updates).await.expect("the current handler");
        assert_eq!(current.digest, sha256_digest(&first));
        // A second watcher of the same key shares the watch and starts from the current state.
        let mut again = loader.watch(&reference).expect("a ConfigMap can change");
        assert_eq!(next(&mut again).await.expect("the current handler").digest, sha256_digest(&first));
        drop(again);

        // An update arrives live.
        api.set(Some(vec![("zigbee.wasm".into(), second.clone())]));
        let updated = next(&mut updates).await.expect("the updated handler");
        assert_eq!(updated.digest, sha256_digest(&second));
        assert_eq!(&*updated.bytes, &second[..]);

        // A key that goes missing, then the ConfigMap deleted: error items.
        api.set(Some(vec![("other.wasm".into(), first.clone())]));
        let missing = next(&mut updates).await.unwrap_err().to_string();
        assert!(missing.contains("has no key \"zigbee.wasm\"") && missing.contains("other.wasm"), "{missing}");
        api.set(None);
        let deleted = next(&mut updates).await.unwrap_err().to_string();
        assert!(deleted.contains("was deleted") && deleted.contains("keeps the handler it last loaded"), "{deleted}");

        // Recreated: the handler is back.
        api.set(Some(vec![("zigbee.wasm".into(), first.clone())]));
        assert_eq!(next(&mut updates).await.unwrap().digest, sha256_digest(&first));
    });

    // Only the one object was read: a get by name and a watch with its
    // name as field selector; never a list of the namespace's ConfigMaps.
    let requests = api.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        let get = request == "/api/v1/namespaces/devsieve/configmaps/handlers";
        let watch = request.starts_with("/api/v1/namespaces/devsieve/configmaps?")
            && request.contains("watch=true")
            && request.contains("fieldSelector=metadata.name%3Dhandlers");
        assert!(get || watch, "a request beyond get/watch on the one ConfigMap: {request}");
    }
    // One watch, shared by both watchers.
    assert_eq!(requests.iter().filter(|r| r.contains("watch=true")).count(), 1, "{requests:?}");
}

#[test]
fn discover_reads_a_configmap_reference_through_the_kubeconfig_and_reports_a_missing_one() {
    let api = MockApi::start("zigbee.wasm", &std::fs::read(example_handler()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {}\nusers:\n- name: agent\n  user: {{}}\n\
             contexts:\n- name: mock\n  context: {{cluster: mock, user: agent, namespace: devsieve}}\ncurrent-context: mock\n",
            api.url
        ),
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "resources:\n  - name: zigbee\n    handler: configmap:devsieve/handlers/zigbee.wasm\n\
         \x20 - name: gone\n    handler: configmap:devsieve/handlers/gone.wasm\n\
         \x20 - name: null\n    handler: glob\n    config: {groups: [{paths: [{path: /dev/null}]}]}\n",
    )
    .unwrap();
    let mut command = devsieve();
    command
        .env("KUBECONFIG", &kubeconfig)
        .args(["discover", "--json", "--blob-cache-dir"])
        .arg(dir.path().join("blobs"))
        .arg("--config")
        .arg(&config);
    let output = under_umockdev(&case_file("custom-handler/zigbee-sticks.umockdev"), &command);
    let reports = reports_of(&output);
    assert!(!output.status.success());
    assert_eq!(granted_nodes(report(&reports, "devsieve.io/zigbee")).len(), 3, "{reports:#}");
    let gone = report(&reports, "devsieve.io/gone")["error"].as_str().unwrap_or_default().to_string();
    assert!(
        gone.contains("configmap:devsieve/handlers/gone.wasm") && gone.contains("has no key \"gone.wasm\""),
        "{gone}"
    );
    assert_eq!(granted_nodes(report(&reports, "devsieve.io/null")), ["/dev/null"]);
}

#[test]
fn no_configmap_reference_no_kubernetes_client() {
    // A kubeconfig that would fail loudly if anything read it.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "this is not a kubeconfig").unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "resources:\n  - name: null\n    handler: glob\n    config: {groups: [{paths: [{path: /dev/null}]}]}\n",
    )
    .unwrap();
    let output = devsieve()
        .env("KUBECONFIG", &kubeconfig)
        .env("DEVSIEVE_LOG", "devsieve=info")
        .args(["discover", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let (_, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("Kubernetes client"), "{stderr}");
}

/// `devsieve run` with a handler in a ConfigMap read through the API: an
/// update is applied live; a deletion keeps the last good handler serving
/// and is reported.
#[test]
fn the_agent_follows_a_configmap_handler_live_and_keeps_the_last_good_one() {
    use devsieve_kubelet_sim::KubeletSim;

    use crate::agent::{Agent, SECS};

    let hostile = std::fs::read(test_handler("hostile-handler")).unwrap();
    let api = MockApi::start("h.wasm", &hostile);
    let node = crate::kubelet::Node::new();
    std::fs::write(node.dev().join("x0"), b"").unwrap();
    let kubeconfig = node.root.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {}\nusers:\n- name: agent\n  user: {{}}\n\
             contexts:\n- name: mock\n  context: {{cluster: mock, user: agent}}\ncurrent-context: mock\n",
            api.url
        ),
    )
    .unwrap();
    node.write_config(
        "resources:\n  - name: cm\n    handler: configmap:devsieve/handlers/h.wasm\n    allowedRoots: [$DEV]\n    config: {misbehave: none, paths: [$DEV/x0]}\n",
    );
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let kubelet = KubeletSim::start(node.plugins()).unwrap();
        let listen = crate::agent::free_port();
        let mut command = crate::agent::run_command(&node.config(), &node.plugins(), listen, &[]);
        command.env("KUBECONFIG", &kubeconfig);
        let agent = Agent::spawn(command, listen);
        kubelet
            .wait_devices("devsieve.io/cm", SECS(20), |d| d.len() == 1 && d[0].health == "Healthy")
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));

        // The same handler with one more custom section: a new digest, applied live.
        let mut updated = hostile.clone();
        updated.extend_from_slice(&[0, 5, 4, b't', b'e', b's', b't']);
        api.set(Some(vec![("h.wasm".into(), updated.clone())]));
        agent.wait_status(SECS(10), "the update", |_| agent.log().contains("handler updated: reloaded")).await;
        assert!(agent.log().contains(&sha256_digest(&updated)), "{}", agent.log());

        api.set(None);
        agent
            .wait_status(SECS(10), "the deletion reported", |s| {
                s["resources"][0]["last_error"].as_str().is_some_and(|e| e.contains("was deleted"))
            })
            .await;
        assert_eq!(
            kubelet.latest("devsieve.io/cm").unwrap().devices[0].health,
            "Healthy",
            "the last good handler serves"
        );
        assert_eq!(kubelet.registration("devsieve.io/cm").unwrap().nth, 1);
    });
}

//! Handlers from a real OCI registry: Debian's `docker-registry` (the CNCF
//! distribution registry) on loopback, storage in a temp dir. Handlers are
//! pushed as `wkg oci push` pushes them (config
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer),
//! with the OCI client, then pulled by the real binary.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use devsieve::digest::sha256_digest;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::common::*;

const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
const WASM_LAYER: &str = "application/wasm";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A `docker-registry serve` on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    addr: String,
    storage: tempfile::TempDir,
    config: PathBuf,
    _config: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("docker-registry").is_file()));
        assert!(found, "`docker-registry` is not installed (Debian package docker-registry; .ci/setup --tests)");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let storage = tempfile::tempdir().unwrap();
        let config_dir = tempfile::tempdir().unwrap();
        let config = config_dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                storage.path().display()
            ),
        )
        .unwrap();
        let child = Registry::spawn(&config);
        let registry = Registry { child, addr, storage, config, _config: config_dir };
        registry.wait_listening();
        registry
    }

    fn spawn(config: &Path) -> Child {
        Command::new("docker-registry")
            .arg("serve")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry")
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen on {}", self.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts again after [`stop`](Self::stop): same address, same storage.
    fn resume(&mut self) {
        self.child = Registry::spawn(&self.config);
        self.wait_listening();
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Pushes `layers` (media type, bytes) under `config_type` as `repo:tag`;
    /// returns the manifest's digest.
    fn push(&self, repo: &str, tag: &str, config_type: &str, layers: &[(&str, &[u8])]) -> String {
        // The OCI client's TLS stack needs a provider even for plain http (the agent installs its own).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientConfig { protocol: ClientProtocol::Http, ..Default::default() });
        let reference = Reference::with_tag(self.addr.clone(), repo.to_string(), tag.to_string());
        let config = br#"{"type":"component"}"#.to_vec();
        let descriptor = |media_type: &str, bytes: &[u8]| serde_json::json!({"mediaType": media_type, "digest": sha256_digest(bytes), "size": bytes.len()});
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": descriptor(config_type, &config),
            "layers": layers.iter().map(|(t, b)| descriptor(t, b)).collect::<Vec<_>>(),
        }))
        .unwrap();
        runtime().block_on(async {
            client.store_auth_if_needed(&self.addr, &RegistryAuth::Anonymous).await;
            client.push_blob(&reference, config.clone(), &sha256_digest(&config)).await.expect("push config");
            for (_, bytes) in layers {
                client.push_blob(&reference, bytes.to_vec(), &sha256_digest(bytes)).await.expect("push layer");
            }
            client
                .push_manifest_raw(&reference, manifest.clone(), http::HeaderValue::from_static(MANIFEST))
                .await
                .expect("push manifest");
        });
        sha256_digest(&manifest)
    }

    /// The file the registry keeps `digest`'s bytes in.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage.path().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn example_bytes() -> Vec<u8> {
    std::fs::read(example_handler()).unwrap()
}

/// Pushes the example handler as wkg does; returns the reference with its digest.
fn push_example(registry: &Registry, repo: &str) -> String {
    let digest = registry.push(repo, "1.0.0", WASM_CONFIG, &[(WASM_LAYER, &example_bytes())]);
    format!("{}/{repo}:1.0.0@{digest}", registry.addr)
}

/// A config of `(name, handler)` resources plus a built-in one that must keep working.
fn write_config(dir: &Path, resources: &[(&str, &str)]) -> PathBuf {
    let mut text = String::from(
        "resources:\n  - name: null\n    handler: glob\n    config: {groups: [{paths: [{path: /dev/null}]}]}\n",
    );
    for (name, handler) in resources {
        text.push_str(&format!("  - name: {name}\n    handler: {handler}\n"));
    }
    let config = dir.join("config.yaml");
    std::fs::write(&config, text).unwrap();
    config
}

/// `devsieve discover --json` over the Zigbee sticks tree, pulling from `registry_addr`.
fn discover_over_sticks(
    config: &Path,
    blobs: &Path,
    registry_addr: &str,
    extra: &[&str],
) -> (serde_json::Value, Output) {
    let mut command = devsieve();
    command
        .env("DEVSIEVE_LOG", "devsieve=info")
        .env("NO_COLOR", "1")
        .args(["discover", "--json", "--insecure-registry", registry_addr, "--blob-cache-dir"])
        .arg(blobs)
        .arg("--config")
        .arg(config)
        .args(extra);
    if !extra.contains(&"--registry-attempts") {
        command.args(["--registry-attempts", "2"]);
    }
    let output = under_umockdev(&case_file("custom-handler/zigbee-sticks.umockdev"), &command);
    (reports_of(&output), output)
}

fn error_of(reports: &serde_json::Value, name: &str) -> String {
    report(reports, &format!("devsieve.io/{name}"))["error"].as_str().unwrap_or_default().to_string()
}

fn assert_null_still_works(reports: &serde_json::Value) {
    let null = report(reports, "devsieve.io/null");
    assert!(null.get("error").is_none(), "{null:#}");
    assert_eq!(granted_nodes(null), ["/dev/null"]);
}

#[test]
fn a_pushed_handler_is_pulled_by_digest_run_and_served_from_the_cache_when_the_registry_is_down() {
    let mut registry = Registry::start();
    let reference = push_example(&registry, "handlers/zigbee");
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs");

    // Pulled, verified, run: its devices are discovered.
    let config = write_config(dir.path(), &[("zigbee", &reference)]);
    let (reports, output) = discover_over_sticks(&config, &blobs, &registry.addr, &[]);
    let stderr = text(&output).1;
    assert!(output.status.success(), "{stderr}");
    assert_eq!(granted_nodes(report(&reports, "devsieve.io/zigbee")), ["/dev/ttyACM0", "/dev/ttyACM1", "/dev/ttyUSB0"]);
    assert!(stderr.contains("pulled from the registry"), "{stderr}");

    // handler inspect REF: metadata, and the component's digest.
    let output = devsieve()
        .args(["handler", "inspect", "--json", "--insecure-registry", &registry.addr, "--blob-cache-dir"])
        .arg(dir.path().join("inspect-blobs"))
        .arg(&reference)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output).1);
    let info: serde_json::Value = serde_json::from_str(&text(&output).0).unwrap();
    assert_eq!(info["name"], "zigbee-coordinator");
    assert_eq!(info["contract"], "devsieve:handler@0.3.0");
    assert_eq!(info["digest"], sha256_digest(&example_bytes()));
    assert!(info["origin"].as_str().unwrap().contains("from the registry"), "{info:#}");
    assert_eq!(info["pinned"], reference.as_str());

    // Inspecting the tag tells what to pin.
    let output = devsieve()
        .args(["handler", "inspect", "--insecure-registry", &registry.addr, "--blob-cache-dir"])
        .arg(dir.path().join("inspect-blobs"))
        .arg(format!("{}/handlers/zigbee:1.0.0", registry.addr))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains(&format!("pin as     {reference}")), "{stdout}");

    // A tag is refused without allowTags, resolved (and its digest logged) with it.
    let tagged = format!("{}/handlers/zigbee:1.0.0", registry.addr);
    let output = devsieve()
        .args(["validate", "--config"])
        .arg(write_config(dir.path(), &[("tagged", &tagged)]))
        .output()
        .unwrap();
    let stderr = text(&output).1;
    assert!(!output.status.success() && stderr.contains("allowTags"), "{stderr}");
    let tag_config = dir.path().join("tagged.yaml");
    std::fs::write(&tag_config, format!("resources:\n  - name: tagged\n    handler: {tagged}\n    allowTags: true\n"))
        .unwrap();
    let (reports, output) = discover_over_sticks(&tag_config, &blobs, &registry.addr, &[]);
    let stderr = text(&output).1;
    assert!(output.status.success(), "{stderr}");
    assert_eq!(granted_nodes(report(&reports, "devsieve.io/tagged")).len(), 3);
    let manifest_digest = reference.rsplit('@').next().unwrap();
    assert!(stderr.contains("tag resolved") && stderr.contains(manifest_digest), "{stderr}");

    // The registry goes down. The cached handler still runs, and the log
    // says it came from the cache; an uncached one fails alone, clearly.
    registry.stop();
    let missing = format!("{}/handlers/other@{}", registry.addr, sha256_digest(b"never pushed"));
    let config = write_config(dir.path(), &[("zigbee", &reference), ("uncached", &missing)]);
    let started = Instant::now();
    let (reports, output) = discover_over_sticks(&config, &blobs, &registry.addr, &["--registry-timeout-ms", "2000"]);
    let stderr = text(&output).1;
    assert!(!output.status.success(), "the uncached resource's failure shows in the exit code");
    assert_eq!(granted_nodes(report(&reports, "devsieve.io/zigbee")).len(), 3, "{reports:#}\n{stderr}");
    assert!(stderr.contains("using the blob cache; the registry was not contacted"), "{stderr}");
    let uncached = error_of(&reports, "uncached");
    assert!(
        uncached.contains("handlers/other") && uncached.contains("cannot fetch from the registry (2 attempts)"),
        "{uncached}"
    );
    assert_null_still_works(&reports);
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());

    // A tag that resolved before falls back to the digest it resolved to.
    let (reports, output) = discover_over_sticks(&tag_config, &blobs, &registry.addr, &[]);
    let stderr = text(&output).1;
    assert!(output.status.success(), "{stderr}");
    assert_eq!(granted_nodes(report(&reports, "devsieve.io/tagged")).len(), 3);
    assert!(stderr.contains("registry unreachable") && stderr.contains(manifest_digest), "{stderr}");
}

#[test]
fn tampered_wrong_oversized_and_foreign_artifacts_are_refused_each_for_its_own_resource() {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join("blobs");
    let example = example_bytes();

    // A layer altered in the registry's storage (same length, one byte off).
    // Its own bytes: the registry stores a blob once for all repositories.
    let original = [example.clone(), b"tamper".to_vec()].concat();
    let layer_digest = registry.push("handlers/tampered-layer", "1", WASM_CONFIG, &[(WASM_LAYER, &original)]);
    let tampered = format!("{}/handlers/tampered-layer@{layer_digest}", registry.addr);
    let layer_file = registry.blob_file(&sha256_digest(&original));
    let mut bytes = std::fs::read(&layer_file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer_file, &bytes).unwrap();

    // A manifest altered in storage: its digest no longer matches the reference.
    let other = [example.clone(), b"\0".to_vec()].concat();
    let manifest_digest = registry.push("handlers/tampered-manifest", "1", WASM_CONFIG, &[(WASM_LAYER, &other)]);
    let manifest_file = registry.blob_file(&manifest_digest);
    let text_ = std::fs::read_to_string(&manifest_file).unwrap().replace("\"schemaVersion\":2", "\"schemaVersion\": 2");
    std::fs::write(&manifest_file, text_).unwrap();
    let tampered_manifest = format!("{}/handlers/tampered-manifest@{manifest_digest}", registry.addr);

    // A digest the registry does not have.
    push_example(&registry, "handlers/wrong");
    let wrong = format!("{}/handlers/wrong@{}", registry.addr, sha256_digest(b"something else"));

    // A 2 MiB "component" against a 1 MiB cap.
    let big = vec![0u8; 2 << 20];
    let big_digest = registry.push("handlers/big", "1", WASM_CONFIG, &[(WASM_LAYER, &big)]);
    let oversized = format!("{}/handlers/big@{big_digest}", registry.addr);

    // A container image, not a handler artifact.
    let image_digest = registry.push(
        "handlers/image",
        "1",
        "application/vnd.oci.image.config.v1+json",
        &[("application/vnd.oci.image.layer.v1.tar+gzip", b"not a tarball")],
    );
    let image = format!("{}/handlers/image@{image_digest}", registry.addr);

    // The untouched example, which must keep working beside them.
    let good = push_example(&registry, "handlers/good");

    let config = write_config(
        dir.path(),
        &[
            ("tampered-layer", &tampered),
            ("tampered-manifest", &tampered_manifest),
            ("wrong", &wrong),
            ("oversized", &oversized),
            ("image", &image),
            ("good", &good),
        ],
    );
    let (reports, output) = discover_over_sticks(&config, &blobs, &registry.addr, &["--max-handler-mib", "1"]);
    assert!(!output.status.success());

    let layer = error_of(&reports, "tampered-layer");
    assert!(layer.contains("the layer has digest") && layer.contains(&sha256_digest(&original)), "{layer}");
    let manifest = error_of(&reports, "tampered-manifest");
    assert!(manifest.contains("the manifest has digest") && manifest.contains(&manifest_digest), "{manifest}");
    let wrong = error_of(&reports, "wrong");
    assert!(wrong.contains("not found in the registry"), "{wrong}");
    let oversized = error_of(&reports, "oversized");
    assert!(oversized.contains("2097152 bytes") && oversized.contains("1048576-byte cap"), "{oversized}");
    let image = error_of(&reports, "image");
    assert!(
        image.contains("not a WebAssembly handler artifact")
            && image.contains("application/vnd.oci.image.config.v1+json")
            && image.contains(WASM_CONFIG),
        "{image}"
    );
    // Nothing refused was cached; the good handler was, and ran.
    let cached: Vec<String> = std::fs::read_dir(blobs.join("sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    for refused in [sha256_digest(&original), sha256_digest(&big), manifest_digest.clone(), image_digest.clone()] {
        assert!(!cached.contains(&refused), "{refused} was cached: {cached:?}");
    }
    assert!(cached.contains(&sha256_digest(&example)), "{cached:?}");
    assert_eq!(granted_nodes(report(&reports, "devsieve.io/good")).len(), 3, "{reports:#}");
    assert_null_still_works(&reports);
}

#[test]
fn a_hanging_registry_is_cut_off_by_the_timeout() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            match listener.accept() {
                Ok((stream, _)) => open.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
            if open.len() > 16 {
                break;
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let hanging = format!("{addr}/handlers/zigbee@{}", sha256_digest(b"whatever"));
    let config = write_config(dir.path(), &[("hangs", &hanging)]);
    let started = Instant::now();
    let (reports, output) = discover_over_sticks(
        &config,
        &dir.path().join("blobs"),
        &addr,
        &["--registry-timeout-ms", "400", "--registry-attempts", "2"],
    );
    let elapsed = started.elapsed();
    assert!(!output.status.success());
    let error = error_of(&reports, "hangs");
    assert!(error.contains("did not answer within 400ms (2 attempts)") && error.contains(&addr), "{error}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_null_still_works(&reports);
    drop(held);
}

/// `devsieve run` with a handler the registry cannot give (it is down and
/// nothing is cached): that resource is served without devices and its error
/// reported, the others serve as usual, and once the registry is back the
/// handler is fetched on the agent's own retry.
#[test]
fn the_agent_serves_others_while_a_handler_cannot_be_fetched_and_picks_it_up_later() {
    use devsieve_kubelet_sim::KubeletSim;

    use crate::agent::{Agent, SECS};

    let mut registry = Registry::start();
    let reference = {
        let hostile = std::fs::read(test_handler("hostile-handler")).unwrap();
        let digest = registry.push("handlers/hostile", "1.0.0", WASM_CONFIG, &[(WASM_LAYER, &hostile)]);
        format!("{}/handlers/hostile:1.0.0@{digest}", registry.addr)
    };
    registry.stop();

    let node = crate::kubelet::Node::new();
    std::fs::write(node.dev().join("x0"), b"").unwrap();
    node.write_config(&format!(
        "resources:\n  - name: remote\n    handler: {reference}\n    allowedRoots: [$DEV]\n    config: {{misbehave: none, paths: [$DEV/x0]}}\n\
         \x20 - name: local\n    handler: glob\n    allowedRoots: [$DEV]\n    config: {{groups: [{{paths: [{{path: $DEV/x0}}]}}]}}\n"
    ));
    let blobs = node.root.path().join("blobs");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let kubelet = KubeletSim::start(node.plugins()).unwrap();
        let blobs = blobs.display().to_string();
        let agent = Agent::start(
            &node.config(),
            &node.plugins(),
            &[
                "--insecure-registry",
                &registry.addr,
                "--blob-cache-dir",
                &blobs,
                "--registry-attempts",
                "1",
                "--registry-timeout-ms",
                "2000",
            ],
        );
        kubelet
            .wait_devices("devsieve.io/local", SECS(20), |d| d.len() == 1)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        kubelet.wait_registered("devsieve.io/remote", SECS(5)).await.unwrap();
        assert!(kubelet.latest("devsieve.io/remote").is_none_or(|l| l.devices.is_empty()));
        agent
            .wait_status(SECS(10), "the fetch error", |s| {
                s["resources"].as_array().unwrap().iter().any(|r| {
                    r["name"] == "devsieve.io/remote"
                        && r["last_error"]
                            .as_str()
                            .is_some_and(|e| e.contains(&registry.addr) && e.contains("devsieve.io/remote"))
                })
            })
            .await;

        registry.resume();
        kubelet
            .wait_devices("devsieve.io/remote", SECS(30), |d| d.len() == 1 && d[0].health == "Healthy")
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
        agent.wait_status(SECS(5), "the error to clear", |s| s["resources"][1]["last_error"].is_null()).await;
    });
}

/// A registry that answers every request with a canned `behaviour`, on its own thread.
fn misbehaving_registry(behaviour: fn(std::net::TcpStream)) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || behaviour(stream));
        }
    });
    addr
}

/// Three registries that fail in the ways networks do — every request
/// answered 500, every connection reset, an answer sent one byte a second —
/// each cost only its own resource, each is bounded by the timeout, and
/// each is named in its resource's error.
#[test]
fn a_registry_that_fails_resets_or_trickles_costs_only_its_own_resource_within_the_timeout() {
    use std::io::{Read, Write};
    fn read_request(stream: &mut std::net::TcpStream) {
        let mut buffer = [0u8; 4096];
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.read(&mut buffer);
    }
    let failing = misbehaving_registry(|mut stream| {
        read_request(&mut stream);
        let _ = stream
            .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\nConnection: close\r\n\r\noops\n");
    });
    let resetting = misbehaving_registry(|stream| {
        // SO_LINGER 0: closing sends RST instead of FIN.
        let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
        drop(stream);
    });
    let trickling = misbehaving_registry(|mut stream| {
        read_request(&mut stream);
        for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{}".iter() {
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let digest = sha256_digest(b"whatever");
    let fails = format!("{failing}/handlers/zigbee@{digest}");
    let resets = format!("{resetting}/handlers/zigbee@{digest}");
    let trickles = format!("{trickling}/handlers/zigbee@{digest}");
    let config = write_config(dir.path(), &[("fails", &fails), ("resets", &resets), ("trickles", &trickles)]);
    let registries = format!("{failing},{resetting},{trickling}");
    let started = Instant::now();
    let (reports, output) = discover_over_sticks(
        &config,
        &dir.path().join("blobs"),
        &registries,
        &["--registry-timeout-ms", "1500", "--registry-attempts", "2"],
    );
    let elapsed = started.elapsed();
    assert!(!output.status.success());
    for (name, addr) in [("fails", &failing), ("resets", &resetting), ("trickles", &trickling)] {
        let error = error_of(&reports, name);
        assert!(error.contains(addr.as_str()), "{name}: {error}");
    }
    assert!(error_of(&reports, "fails").contains("500"), "{}", error_of(&reports, "fails"));
    assert!(
        error_of(&reports, "trickles").contains("did not answer within 1.5s"),
        "{}",
        error_of(&reports, "trickles")
    );
    // Two attempts of 1.5 s each and the backoff between them, with room for a loaded machine.
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert_null_still_works(&reports);
}

//! The container image (issue 13): `devsieve-oci-image` builds it from this
//! test run's `devsieve` binary. A second build must give the same bytes,
//! skopeo must read and copy the archive, and a private containerd (Debian's
//! containerd 1.6 and runc, its own root, state and socket under a temp dir,
//! the CRI plugin off) imports it and runs it under the manifests' security
//! context: uid 0, every capability dropped, no new privileges, the default
//! seccomp profile, a read-only root filesystem, the host's network, and
//! `/dev`, `/sys` and `/run/udev` bind-mounted read-only. There it validates
//! and discovers `examples/anywhere.yaml` and `devsieve run` registers with a
//! kubelet simulator through a bind-mounted plugin directory.
//!
//! Two things ctr 1.6 cannot say itself, done around it:
//! - it has no `--user`, and the image's default user is 65532: runc is
//!   reached through a wrapper (`--runc-binary`) that sets the process's
//!   uid and gid to 0 in the bundle's `config.json`, as the kubelet's
//!   `runAsUser: 0` does through CRI;
//! - its `--cap-drop` takes names, not `ALL`: every capability of
//!   containerd's default set is dropped by name, and the test checks in
//!   `/proc` that none is left.
//!
//! The native snapshotter (plain directory copies) needs no overlayfs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use devsieve_kubelet_sim::KubeletSim;
use devsieve_oci_image::{DEFAULT_REFERENCE, Image, Options};

use crate::common::*;

/// containerd's default capability set, which ctr gives a container.
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

fn options(out: &Path) -> Options {
    let mut options = Options::new(env!("CARGO_BIN_EXE_devsieve"), out);
    options.source_date_epoch = Some(1_700_000_000);
    // The test binary is the unoptimised one (about 200 MB): the fastest
    // level keeps the build short. The level changes the layer's size only.
    options.compression = 1;
    options
}

/// The image of this run's binary, built once for the tests here.
fn image() -> &'static Image {
    static IMAGE: OnceLock<(Image, tempfile::TempDir)> = OnceLock::new();
    &IMAGE
        .get_or_init(|| {
            let out = tempfile::tempdir().unwrap();
            let image = devsieve_oci_image::build(&options(out.path())).expect("building the image");
            (image, out)
        })
        .0
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

fn require(tools: &[&str], package: &str) {
    for tool in tools {
        assert!(on_path(tool), "`{tool}` is not installed (Debian package {package}; .ci/setup --tests)");
    }
}

fn ok(output: Output, what: &str) -> String {
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{what} failed ({}):\nstdout: {stdout}\nstderr: {stderr}", output.status);
    stdout
}

#[test]
fn the_image_is_reproducible_and_skopeo_reads_it() {
    require(&["skopeo"], "skopeo");
    let image = image();
    let again_dir = tempfile::tempdir().unwrap();
    let again = devsieve_oci_image::build(&options(again_dir.path())).expect("building the image again");
    assert_eq!(again.manifest_digest, image.manifest_digest, "the same binary gave another image");
    assert_eq!(again.layer_digest, image.layer_digest);
    assert!(fs::read(&again.archive).unwrap() == fs::read(&image.archive).unwrap(), "the archives differ");

    // What is in it: the binary, the loader at its PT_INTERP path, libudev
    // through its symlink, the CA bundle, passwd/group and /tmp.
    let paths: Vec<&str> = image.entries.iter().map(|e| e.path.as_str()).collect();
    for wanted in ["usr/local/bin/devsieve", "etc/ssl/certs/ca-certificates.crt", "etc/passwd", "etc/group", "tmp"] {
        assert!(paths.contains(&wanted), "{wanted} missing from {paths:?}");
    }
    assert!(paths.iter().any(|p| p.contains("libudev.so.1")), "no libudev in {paths:?}");

    let archive = format!("oci-archive:{}", image.archive.display());
    let inspect = ok(Command::new("skopeo").args(["inspect", &archive]).output().unwrap(), "skopeo inspect");
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], image.manifest_digest, "{inspect:#}");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(format!("linux/{}", inspect["Architecture"].as_str().unwrap_or_default()), image.platform);
    assert_eq!(inspect["Layers"], serde_json::json!([image.layer_digest]));
    let config =
        ok(Command::new("skopeo").args(["inspect", "--config", &archive]).output().unwrap(), "skopeo inspect --config");
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["config"]["Entrypoint"], serde_json::json!(["devsieve"]), "{config:#}");
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    // A copy reads every blob and checks its digest.
    let copy = tempfile::tempdir().unwrap();
    let target = format!("oci:{}:copy", copy.path().display());
    ok(Command::new("skopeo").args(["copy", "--quiet", &archive, &target]).output().unwrap(), "skopeo copy");
}

/// A containerd of the test's own, killed (with its containers) on drop.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        require(&["containerd", "ctr", "containerd-shim-runc-v2"], "containerd");
        require(&["runc"], "runc");
        // Short: the socket path must fit in a sockaddr_un.
        let dir = tempfile::Builder::new().prefix("ctd").tempdir_in("/tmp").unwrap();
        let path = dir.path();
        let config = path.join("config.toml");
        fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
                root = path.join("root").display(),
                state = path.join("state").display(),
                socket = path.join("c.sock").display(),
                opt = path.join("opt").display(),
            ),
        )
        .unwrap();
        // ctr 1.6 has no --user: the wrapper runs the container as uid/gid 0.
        let wrapper = path.join("runc-uid0");
        fs::write(
            &wrapper,
            r#"#!/bin/sh
bundle= prev=
for arg in "$@"; do
  [ "$prev" = --bundle ] && bundle=$arg
  case $arg in --bundle=*) bundle=${arg#--bundle=} ;; esac
  prev=$arg
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  sed -i -E 's/"user":\{"uid":[0-9]+,"gid":[0-9]+(,"additionalGids":\[[0-9,]*\])?/"user":{"uid":0,"gid":0/' "$bundle/config.json"
fi
exec runc "$@"
"#,
        )
        .unwrap();
        fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let log = fs::File::create(path.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        let mut containerd = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if containerd.ctr().arg("version").output().is_ok_and(|out| out.status.success()) {
                break;
            }
            if let Ok(Some(status)) = containerd.child.try_wait() {
                panic!("containerd exited ({status}):\n{}", containerd.log());
            }
            assert!(Instant::now() < deadline, "containerd did not answer:\n{}", containerd.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    fn ctr(&self) -> Command {
        let mut command = Command::new("ctr");
        command.arg("--address").arg(self.dir.path().join("c.sock")).args(["--namespace", "devsieve-test"]);
        command
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr run` of the image as the manifests run it, with `mounts`
    /// (host path, container path, read-only) besides /dev, /sys and
    /// /run/udev, `env` (`NAME=VALUE`) and `args` after `devsieve`.
    /// `detach`: the pid file and log file of a task left running.
    fn run(
        &self,
        id: &str,
        detach: Option<(&Path, &Path)>,
        mounts: &[(&Path, &str, bool)],
        env: &[&str],
        args: &[&str],
    ) -> Command {
        let mut command = self.ctr();
        command.arg("run");
        match detach {
            Some((pid_file, log)) => {
                command.arg("--detach").arg("--pid-file").arg(pid_file);
                command.arg("--log-uri").arg(format!("file://{}", log.display()));
            }
            None => {
                command.arg("--rm");
            }
        }
        command.args(["--snapshotter", "native", "--read-only", "--seccomp", "--net-host"]);
        command.arg("--runc-binary").arg(self.dir.path().join("runc-uid0"));
        for capability in DEFAULT_CAPABILITIES {
            command.args(["--cap-drop", capability]);
        }
        // The host's udev database; a machine without udevd has none, so an
        // empty directory stands in (libudev then reads sysfs alone).
        let udev =
            if Path::new("/run/udev").is_dir() { PathBuf::from("/run/udev") } else { self.dir.path().join("udev") };
        fs::create_dir_all(&udev).unwrap();
        let host =
            [(Path::new("/dev"), "/dev", true), (Path::new("/sys"), "/sys", true), (udev.as_path(), "/run/udev", true)];
        for (source, destination, read_only) in host.iter().chain(mounts) {
            let options = if *read_only { "rbind:ro" } else { "rbind:rw" };
            command
                .arg("--mount")
                .arg(format!("type=bind,src={},dst={destination},options={options}", source.display()));
        }
        for variable in env {
            command.args(["--env", variable]);
        }
        command.arg(DEFAULT_REFERENCE).arg(id).arg("devsieve").args(args);
        command
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks first: their shims outlive containerd.
        if let Ok(out) = self.ctr().args(["tasks", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr().args(["tasks", "kill", "--signal", "SIGKILL", id]).output();
                let _ = self.ctr().args(["tasks", "delete", "--force", id]).output();
            }
        }
        if let Ok(out) = self.ctr().args(["containers", "ls", "-q"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.ctr().args(["containers", "rm", id]).output();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `field:` of /proc/PID/status.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no {field} in\n{status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_in_containerd_under_the_manifests_security_context() {
    let image = image();
    let containerd = Containerd::start();
    ok(
        containerd.ctr().args(["images", "import", "--snapshotter", "native"]).arg(&image.archive).output().unwrap(),
        "ctr images import",
    );
    // ctr names it by the index's org.opencontainers.image.ref.name.
    let images = ok(containerd.ctr().args(["images", "ls", "-q"]).output().unwrap(), "ctr images ls");
    assert!(images.lines().any(|line| line == DEFAULT_REFERENCE), "imported as {images:?}");

    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/anywhere.yaml");
    let config_mount = [(config.as_path(), "/config/anywhere.yaml", true)];
    let validate = containerd
        .run("validate", None, &config_mount, &[], &["validate", "--config", "/config/anywhere.yaml"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&validate);
    assert!(validate.status.success(), "validate in the container failed:\n{stdout}\n{stderr}\n{}", containerd.log());
    assert!(stdout.contains("ok (3 resources)"), "validate printed:\n{stdout}\n{stderr}");

    let discover = containerd
        .run("discover", None, &config_mount, &[], &["discover", "--config", "/config/anywhere.yaml", "--json"])
        .output()
        .unwrap();
    assert!(discover.status.success(), "discover in the container failed: {:?}", text(&discover));
    let reports = reports_of(&discover);
    assert_eq!(granted_nodes(report(&reports, "devsieve.io/null")), ["/dev/null"], "{reports:#}");
    assert!(granted_nodes(report(&reports, "devsieve.io/mem")).contains(&"/dev/null".to_string()), "{reports:#}");

    // The agent: its plugin directory and cache bind-mounted read-write, as
    // the DaemonSet's hostPath volumes are; it registers with the kubelet.
    let node = tempfile::tempdir().unwrap();
    let plugins = node.path().join("device-plugins");
    let cache = node.path().join("cache");
    fs::create_dir_all(&cache).unwrap();
    let kubelet = KubeletSim::start(&plugins).unwrap();
    let pid_file = node.path().join("pid");
    let log = node.path().join("agent.log");
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mounts = [
        (config.as_path(), "/config/anywhere.yaml", true),
        (plugins.as_path(), "/var/lib/kubelet/device-plugins", false),
        (cache.as_path(), "/var/lib/devsieve/cache", false),
    ];
    let run = containerd
        .run(
            "agent",
            Some((&pid_file, &log)),
            &mounts,
            &["DEVSIEVE_CACHE_DIR=/var/lib/devsieve/cache"],
            &["run", "--config", "/config/anywhere.yaml", "--listen", &listen],
        )
        .output()
        .unwrap();
    ok(run, "ctr run --detach (devsieve run)");
    let agent_log = || fs::read_to_string(&log).unwrap_or_default();
    kubelet
        .wait_registered("devsieve.io/null", Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\nagent log:\n{}\ncontainerd log:\n{}", agent_log(), containerd.log()));

    let pid = fs::read_to_string(&pid_file).unwrap();
    let status = fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    assert_eq!(status_field(&status, "Uid"), "0 0 0 0", "{status}");
    assert_eq!(status_field(&status, "Gid"), "0 0 0 0", "{status}");
    for capabilities in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&status, capabilities), "0000000000000000", "{capabilities} in\n{status}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1", "{status}");
    assert_eq!(status_field(&status, "Seccomp"), "2", "{status}");
    // The root filesystem is read-only.
    let mounts = fs::read_to_string(format!("/proc/{}/mounts", pid.trim())).unwrap();
    let root = mounts.lines().find(|line| line.split(' ').nth(1) == Some("/")).expect("a / mount");
    assert!(root.split(' ').nth(3).is_some_and(|options| options.split(',').any(|o| o == "ro")), "{root}");
}

//! deploy/: every overlay rendered by `kubectl kustomize`, every plain
//! manifest and every chart rendering validated against the Kubernetes
//! 1.30-1.34 schemas (strict: unknown fields are errors); the chart compared
//! object by object with the overlay each values file stands for.

use std::collections::BTreeSet;
use std::path::PathBuf;

use devsieve_deploy_test::{
    VERSIONS, by_id, chart::Chart, first_difference, id, kustomize, parse_docs, repo, validate,
};
use serde_json::{Value, json};

/// Each overlay in deploy/ and the chart's values file that renders the same objects.
const VARIANTS: [(&str, Option<&str>); 6] = [
    ("base", None),
    ("usbip", Some("usbip.yaml")),
    ("domain", Some("domain.yaml")),
    ("configmap-handlers", Some("configmap-handlers.yaml")),
    ("metrics", Some("metrics.yaml")),
    ("podmonitor", Some("podmonitor.yaml")),
];

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn chart_dir() -> PathBuf {
    deploy().join("helm/devsieve")
}

fn overlay(name: &str) -> Vec<Value> {
    kustomize(&deploy().join(name)).unwrap_or_else(|e| panic!("{e}"))
}

/// Validates every object but PodMonitors (a CRD: see `podmonitor_fits_the_crd_and_the_pods`); returns how many were.
fn validate_all(what: &str, objects: &[Value]) -> usize {
    let objects: Vec<Value> = objects.iter().filter(|o| o["kind"] != "PodMonitor").cloned().collect();
    let errors = validate(&objects, &VERSIONS).unwrap_or_else(|e| panic!("{e}"));
    let failures: Vec<String> = objects
        .iter()
        .zip(&errors)
        .filter(|(_, e)| !e.is_empty())
        .map(|(o, e)| format!("{what}: {}:\n  {}", id(o), e.join("\n  ")))
        .collect();
    assert!(failures.is_empty(), "schema errors:\n{}", failures.join("\n"));
    objects.len()
}

#[test]
fn every_overlay_is_listed() {
    let mut dirs = BTreeSet::new();
    for entry in std::fs::read_dir(deploy()).unwrap() {
        let path = entry.unwrap().path();
        if path.join("kustomization.yaml").exists() {
            dirs.insert(path.file_name().unwrap().to_string_lossy().to_string());
        }
    }
    let listed: BTreeSet<String> = VARIANTS.iter().map(|(d, _)| d.to_string()).collect();
    assert_eq!(dirs, listed, "deploy/*/kustomization.yaml and VARIANTS differ");

    let mut files = BTreeSet::new();
    for entry in std::fs::read_dir(chart_dir().join("values")).unwrap() {
        files.insert(entry.unwrap().file_name().to_string_lossy().to_string());
    }
    let listed: BTreeSet<String> = VARIANTS.iter().filter_map(|(_, v)| v.map(String::from)).collect();
    assert_eq!(files, listed, "deploy/helm/devsieve/values/ and VARIANTS differ");
}

#[test]
fn overlays_and_manifests_validate_for_1_30_to_1_34() {
    let mut count = 0;
    for (dir, _) in VARIANTS {
        count += validate_all(dir, &overlay(dir));
    }
    for file in ["devsieve.yaml", "example-pod.yaml", "rbac-configmap-handlers.yaml"] {
        let text = std::fs::read_to_string(deploy().join(file)).unwrap();
        count += validate_all(file, &parse_docs(&text).unwrap());
    }
    eprintln!("{count} objects valid for each of {VERSIONS:?}");
}

#[test]
fn chart_renders_the_overlays_objects() {
    let chart = Chart::load(&chart_dir()).unwrap_or_else(|e| panic!("{e}"));
    let mut count = 0;
    for (dir, values) in VARIANTS {
        let file = values.map(|v| chart_dir().join("values").join(v));
        let rendered = chart.objects(file.as_deref(), "kube-system").unwrap_or_else(|e| panic!("{e}"));
        count += validate_all(&format!("chart with {values:?}"), &rendered);
        let chart_objects = by_id(&rendered).unwrap();
        let plain = by_id(&overlay(dir)).unwrap();
        assert_eq!(
            chart_objects.keys().collect::<Vec<_>>(),
            plain.keys().collect::<Vec<_>>(),
            "chart with {values:?} and deploy/{dir} render different objects"
        );
        for (key, c) in &chart_objects {
            if let Some(d) = first_difference(c, &plain[key], "") {
                panic!("chart with {values:?} vs deploy/{dir}: {key} differs at {d}");
            }
        }
    }
    eprintln!("{count} chart objects valid and equal to the overlays'");
}

#[test]
fn chart_notes_and_options_render() {
    // What no overlay covers still renders, with supported constructs only.
    let chart = Chart::load(&chart_dir()).unwrap();
    let dir = std::env::temp_dir().join(format!("devsieve-deploy-values-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let values = dir.join("all.yaml");
    std::fs::write(
        &values,
        "configYaml: |\n  # kept\n  resources: []\ncdi: {enabled: true}\nusbip: {enabled: true}\n\
         extraArgs: [--event-settle=10ms]\nextraEnv: [{name: A, value: b}]\n\
         extraVolumes: [{name: h, configMap: {name: devsieve-handlers}}]\n\
         extraVolumeMounts: [{name: h, mountPath: /etc/devsieve-handlers, readOnly: true}]\n\
         dnsPolicy: ClusterFirstWithHostNet\npodLabels: {a: b}\npodAnnotations: {c: d}\n\
         imagePullSecrets: [{name: pull}]\naffinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: k, operator: Exists}]}]}}}\n\
         metrics: {enabled: true, annotations: {e: f}, podMonitor: {enabled: true, labels: {release: prom}}}\n",
    )
    .unwrap();
    let rendered = chart.render(Some(&values), "kube-system").unwrap_or_else(|e| panic!("{e}"));
    assert!(rendered.iter().any(|(f, t)| f == "NOTES.txt" && t.contains("devsieve-metrics")));
    let objects = chart.objects(Some(&values), "kube-system").unwrap();
    validate_all("chart with every option", &objects);
    let cm = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    assert_eq!(cm["data"]["config.yaml"], "# kept\nresources: []\n");
    let ds = objects.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
    assert_eq!(ds["spec"]["template"]["spec"]["containers"][0]["args"], json!(["run", "--event-settle=10ms"]));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_evaluator_refuses_what_it_does_not_support() {
    let dir = std::env::temp_dir().join(format!("devsieve-deploy-chart-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(dir.join("Chart.yaml"), "name: x\nversion: 0.1.0\nappVersion: \"1\"\n").unwrap();
    std::fs::write(dir.join("values.yaml"), "a: [1]\nb: x\n").unwrap();
    for (template, wanted) in [
        ("{{ range .Values.a }}x{{ end }}", "unsupported construct"),
        ("{{ printf \"%s\" .Values.b }}", "unsupported term"),
        ("{{ .Values.b | upper }}", "unsupported function"),
        ("{{ .Values.missing }}", "no such value"),
        ("{{ .Values.a }}", "cannot print"),
        ("{{ if .Values.b }}x", "without end"),
    ] {
        std::fs::write(dir.join("templates/t.yaml"), template).unwrap();
        let err = Chart::load(&dir).and_then(|c| c.render(None, "ns")).expect_err(template);
        assert!(err.contains(wanted), "{template}: {err}");
    }
    std::fs::write(
        dir.join("templates/t.yaml"),
        "{{- /* c */ -}}\n  a: {{ .Values.b | quote }}{{ if .Values.a }} y{{ else }} n{{ end }}\n",
    )
    .unwrap();
    assert_eq!(Chart::load(&dir).unwrap().render(None, "ns").unwrap()[0].1, "a: \"x\" y\n");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_validator_rejects_broken_objects() {
    let ds = overlay("base").into_iter().find(|o| o["kind"] == "DaemonSet").unwrap();
    let mut misspelt = ds.clone();
    misspelt["spec"]["template"]["spec"]["hostNetwrok"] = json!(true);
    let mut wrong_type = ds.clone();
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("9470");
    let mut no_image = ds.clone();
    no_image["spec"]["template"]["spec"]["containers"][0]["name"] = Value::Null;
    let unknown_kind = json!({"apiVersion": "v1", "kind": "Nonsense", "metadata": {"name": "x"}});
    let broken = [misspelt, wrong_type, no_image, unknown_kind];
    let errors = validate(&broken, &VERSIONS).unwrap();
    for (o, e) in broken.iter().zip(&errors) {
        assert_eq!(e.len(), VERSIONS.len(), "{} accepted by some version: {e:?}", id(o));
    }
    assert!(validate(&[ds], &VERSIONS).unwrap()[0].is_empty());
}

fn daemonset(objects: &[Value]) -> Value {
    objects.iter().find(|o| o["kind"] == "DaemonSet").cloned().expect("a DaemonSet")
}

/// (mountPath, hostPath, readOnly) of every hostPath mount of the DaemonSet's container.
fn host_mounts(ds: &Value) -> BTreeSet<(String, String, bool)> {
    let spec = &ds["spec"]["template"]["spec"];
    let volumes = spec["volumes"].as_array().unwrap();
    spec["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let v = volumes.iter().find(|v| v["name"] == m["name"]).expect("mount without volume");
            let host = v["hostPath"]["path"].as_str()?;
            Some((m["mountPath"].as_str().unwrap().into(), host.into(), m["readOnly"] == true))
        })
        .collect()
}

fn mounts(list: &[(&str, bool)]) -> BTreeSet<(String, String, bool)> {
    list.iter().map(|(p, ro)| (p.to_string(), p.to_string(), *ro)).collect()
}

#[test]
fn the_local_agent_is_unprivileged_with_exactly_its_mounts() {
    let ds = daemonset(&overlay("base"));
    let base = [
        ("/var/lib/kubelet/device-plugins", false),
        ("/var/lib/kubelet/pod-resources", true),
        ("/dev", true),
        ("/run/udev", true),
        ("/sys", true),
        ("/var/lib/devsieve/cache", false),
    ];
    assert_eq!(host_mounts(&ds), mounts(&base));
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["capabilities"], json!({"drop": ["ALL"]}));
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["privileged"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object());
    assert_eq!(pod["automountServiceAccountToken"], false);

    // USB/IP adds exactly vhci_hcd (read-write) and the state directory.
    let usbip = daemonset(&overlay("usbip"));
    let mut with = mounts(&base);
    with.extend(mounts(&[("/sys/devices/platform/vhci_hcd.0", false), ("/var/lib/devsieve/state", false)]));
    assert_eq!(host_mounts(&usbip), with);
    assert_eq!(usbip["spec"]["template"]["spec"]["containers"][0]["securityContext"], c["securityContext"]);

    // The other overlays change no mount and no security setting.
    for dir in ["domain", "configmap-handlers", "metrics", "podmonitor"] {
        let o = daemonset(&overlay(dir));
        assert_eq!(host_mounts(&o), mounts(&base), "{dir}");
        assert_eq!(o["spec"]["template"]["spec"]["containers"][0]["securityContext"], c["securityContext"], "{dir}");
    }
}

#[test]
fn the_domain_overlay_is_the_base_config_with_a_domain() {
    let config = |dir: &str| {
        let cm = overlay(dir).into_iter().find(|o| o["kind"] == "ConfigMap").unwrap();
        parse_docs(cm["data"]["config.yaml"].as_str().unwrap()).unwrap().remove(0)
    };
    let mut base = config("base");
    assert!(base.get("domain").is_none());
    base["domain"] = json!("example.com");
    assert_eq!(config("domain"), base);
}

#[test]
fn metrics_listen_on_the_pod_ip_defined_before_it() {
    for dir in ["metrics", "podmonitor"] {
        let ds = daemonset(&overlay(dir));
        let c = &ds["spec"]["template"]["spec"]["containers"][0];
        let env = c["env"].as_array().unwrap();
        let at = |n: &str| env.iter().position(|e| e["name"] == n).unwrap();
        assert_eq!(env[at("DEVSIEVE_LISTEN")]["value"], "$(POD_IP):9470");
        assert!(at("POD_IP") < at("DEVSIEVE_LISTEN"), "$(POD_IP) expands only if defined before");
        assert_eq!(env[at("POD_IP")]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
        assert!(c["livenessProbe"]["httpGet"].get("host").is_none());
        assert!(c["readinessProbe"]["httpGet"].get("host").is_none());
    }
}

/// The PodMonitor is a CRD (monitoring.coreos.com/v1) that the Kubernetes
/// schemas lack. Checked here: only fields that the CRD's PodMonitor spec
/// and PodMetricsEndpoint have (prometheus-operator's
/// monitoring.coreos.com_podmonitors.yaml: `selector`, `podMetricsEndpoints`
/// with `port` (a container port's name), `path`, `interval`), that its
/// selector matches the DaemonSet's pods, in their namespace, and that the
/// port it names is the container's metrics port. Not checked: the rest of
/// the CRD's schema.
#[test]
fn podmonitor_fits_the_crd_and_the_pods() {
    let objects = overlay("podmonitor");
    let monitors: Vec<_> = objects.iter().filter(|o| o["kind"] == "PodMonitor").collect();
    assert_eq!(monitors.len(), 1);
    let pm = monitors[0];
    let ds = daemonset(&objects);
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<BTreeSet<_>>();
    let allowed = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert!(keys(pm).is_subset(&allowed(&["apiVersion", "kind", "metadata", "spec"])));
    assert!(keys(&pm["spec"]).is_subset(&allowed(&[
        "selector",
        "podMetricsEndpoints",
        "namespaceSelector",
        "jobLabel"
    ])));
    assert_eq!(pm["metadata"]["namespace"], ds["metadata"]["namespace"]);
    let pod_labels = ds["spec"]["template"]["metadata"]["labels"].as_object().unwrap();
    let selector = pm["spec"]["selector"]["matchLabels"].as_object().unwrap();
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(pod_labels.get(k), Some(v), "the PodMonitor's selector misses the pods");
    }
    let ports = ds["spec"]["template"]["spec"]["containers"][0]["ports"].as_array().unwrap();
    for ep in pm["spec"]["podMetricsEndpoints"].as_array().unwrap() {
        assert!(keys(ep).is_subset(&allowed(&["port", "path", "interval", "scheme", "scrapeTimeout"])));
        assert!(ports.iter().any(|p| p["name"] == ep["port"]), "no container port {}", ep["port"]);
        assert_eq!(ep["path"], "/metrics");
        let interval = ep["interval"].as_str().unwrap();
        assert!(interval.ends_with('s') && interval[..interval.len() - 1].parse::<u32>().is_ok());
    }
}

//! Akri's udev discovery, read as devsieve's `udev-rule` resources: a file of
//! `Configuration` objects (`apiVersion: akri.sh/v0`), or the values file of
//! Akri's Helm chart (`udev.configuration`). The resource keeps the name Akri
//! gives its Configuration's devices, `akri.sh/<configuration name>`, and the
//! `udev-rule` handler gives workloads Akri's variables (`UDEV_DEVNODE`,
//! `UDEV_DEVPATH`, `UDEV_DEVNODE_<i>`).
//!
//! Akri's broker pods and jobs and the services it creates for them are not
//! something a device plugin does: those fields are reported as ignored, by
//! name.

use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::json;
use serde_yaml_ng::Value;

use super::{Format, Imported, Note, PeerError, field_error};
use crate::config::{ConfigError, RawConfig, RawResource, deserialize, deserialize_from};

/// The domain of every resource Akri advertises.
const AKRI_DOMAIN: &str = "akri.sh";
/// The Configuration name Akri's Helm chart gives when the values name none.
const HELM_DEFAULT_NAME: &str = "akri-udev";

const CAPACITY_NOTE: &str = "Akri's capacity counts the nodes' broker slots on one device; devsieve's \
                             `capacity` is how many containers on this node may hold one device group at once";
const BROKER_NOTE: &str = "devsieve deploys no brokers: run the workload as a Deployment or DaemonSet whose \
                           containers ask for the resource in their limits";
const SERVICE_NOTE: &str = "devsieve creates no Services for brokers";
const PROPERTIES_NOTE: &str = "Akri hands these to brokers as environment variables; devsieve gives \
                               containers only the device's variables (UDEV_DEVNODE, UDEV_DEVPATH, ...)";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Configuration {
    metadata: Metadata,
    spec: Spec,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Spec {
    discovery_handler: DiscoveryHandler,
    #[serde(default)]
    capacity: Option<u32>,
    #[serde(default)]
    broker_spec: Option<IgnoredAny>,
    /// Akri before v0.8 called its broker `brokerPodSpec`, directly in `spec`.
    #[serde(default)]
    broker_pod_spec: Option<IgnoredAny>,
    #[serde(default)]
    instance_service_spec: Option<IgnoredAny>,
    #[serde(default)]
    configuration_service_spec: Option<IgnoredAny>,
    #[serde(default)]
    broker_properties: Option<std::collections::BTreeMap<String, IgnoredAny>>,
    /// Akri before v0.8: whether instances are shared between nodes.
    #[serde(default)]
    shared: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DiscoveryHandler {
    name: String,
    /// A YAML document in a string: `udevRules`, `groupRecursive`, `permissions`.
    #[serde(default)]
    discovery_details: String,
    /// Values (or Secret and ConfigMap keys) for handlers that take credentials; udev's takes none.
    #[serde(default)]
    discovery_properties: Option<IgnoredAny>,
}

/// Every document of `text` as one `udev-rule` resource per Akri Configuration.
pub(super) fn configurations(file: &Path, text: &str) -> Result<Imported, ConfigError> {
    let mut resources = Vec::new();
    let mut notes = Vec::new();
    // Each document twice: as a value to tell its kind, then as a
    // Configuration from its own deserializer, whose errors have positions.
    let values = serde_yaml_ng::Deserializer::from_str(text).map(|d| Value::deserialize(d).unwrap_or(Value::Null));
    for (index, (document, deserializer)) in values.zip(serde_yaml_ng::Deserializer::from_str(text)).enumerate() {
        if document.is_null() {
            continue;
        }
        let at = format!("documents[{index}]");
        if !super::is_akri_configuration(&document) {
            let kind = super::object_kind(&document).map_or("document without a kind".to_string(), |(_, k)| k.into());
            return Err(field_error(file, at, PeerError::NotAkriConfiguration(kind)));
        }
        let configuration: Configuration = deserialize_from(file, deserializer)?;
        let at = format!("{at} ({:?})", configuration.metadata.name);
        let spec = configuration.spec;
        if spec.discovery_handler.name != "udev" {
            return Err(field_error(
                file,
                format!("{at}.spec.discoveryHandler.name"),
                PeerError::OtherDiscoveryHandler(spec.discovery_handler.name),
            ));
        }
        let details = discovery_details(&spec.discovery_handler.discovery_details)
            .map_err(|e| field_error(file, format!("{at}.spec.discoveryHandler.discoveryDetails"), e))?;
        let resource = Some(resources.len());
        let mut note_ignored = |present: bool, field: &str, message: &str| {
            if present {
                notes.push(Note::ignored(format!("{at}.spec.{field}"), resource, message));
            }
        };
        note_ignored(spec.broker_spec.is_some(), "brokerSpec", BROKER_NOTE);
        note_ignored(spec.broker_pod_spec.is_some(), "brokerPodSpec", BROKER_NOTE);
        note_ignored(spec.instance_service_spec.is_some(), "instanceServiceSpec", SERVICE_NOTE);
        note_ignored(spec.configuration_service_spec.is_some(), "configurationServiceSpec", SERVICE_NOTE);
        note_ignored(
            spec.broker_properties.as_ref().is_some_and(|p| !p.is_empty()),
            "brokerProperties",
            PROPERTIES_NOTE,
        );
        note_ignored(
            spec.shared.is_some(),
            "shared",
            "a device plugin advertises each node's own devices; which pods share one is `capacity`",
        );
        note_ignored(
            spec.discovery_handler.discovery_properties.is_some(),
            "discoveryHandler.discoveryProperties",
            "udev discovery takes no properties",
        );
        if spec.capacity.is_some() {
            notes.push(Note::changed(format!("{at}.spec.capacity"), resource, CAPACITY_NOTE));
        }
        resources.push(udev_rule_resource(configuration.metadata.name, details, spec.capacity));
    }
    Ok(Imported {
        format: Format::AkriConfiguration,
        raw: RawConfig { domain: Some(AKRI_DOMAIN.into()), usbip: None, resources },
        notes,
    })
}

/// Akri's `discoveryDetails` text as the `udev-rule` handler's config (the
/// handler checks its fields: the same names, `udevRules`, `groupRecursive`
/// and `permissions`).
fn discovery_details(text: &str) -> Result<serde_json::Value, PeerError> {
    let details: serde_json::Value = serde_yaml_ng::from_str(text).map_err(|e| PeerError::Embedded(e.to_string()))?;
    match details {
        serde_json::Value::Object(_) => Ok(details),
        serde_json::Value::Null => Ok(json!({})),
        _ => Err(PeerError::NotAMapping),
    }
}

fn udev_rule_resource(name: String, mut details: serde_json::Value, capacity: Option<u32>) -> RawResource {
    if let (Some(capacity), Some(config)) = (capacity, details.as_object_mut()) {
        config.insert("capacity".into(), json!(capacity));
    }
    RawResource { name, handler: "udev-rule".into(), config: details, ..RawResource::default() }
}

// ---- Akri's Helm values ----

#[derive(Deserialize)]
struct HelmValues {
    udev: HelmUdev,
    /// Akri's own components and the other discovery handlers.
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, Value>,
}

#[derive(Deserialize)]
struct HelmUdev {
    #[serde(default)]
    configuration: Option<HelmUdevConfiguration>,
    #[serde(flatten)]
    other: std::collections::BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HelmUdevConfiguration {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    discovery_details: Option<serde_json::Value>,
    #[serde(default)]
    capacity: Option<u32>,
    #[serde(default)]
    broker_pod: Option<IgnoredAny>,
    #[serde(default)]
    broker_job: Option<IgnoredAny>,
    #[serde(default)]
    create_instance_services: Option<IgnoredAny>,
    #[serde(default)]
    instance_service: Option<IgnoredAny>,
    #[serde(default)]
    create_configuration_service: Option<IgnoredAny>,
    #[serde(default)]
    configuration_service: Option<IgnoredAny>,
    #[serde(default)]
    broker_properties: Option<std::collections::BTreeMap<String, IgnoredAny>>,
}

/// Akri's Helm values as the one `udev-rule` resource its chart's udev
/// Configuration would be.
pub(super) fn helm_values(file: &Path, text: &str) -> Result<Imported, ConfigError> {
    let values: HelmValues = deserialize(file, text)?;
    let mut notes = Vec::new();
    for (component, value) in &values.other {
        let enabled = value.get("configuration").and_then(|c| c.get("enabled")).and_then(Value::as_bool);
        if enabled == Some(true) {
            return Err(field_error(
                file,
                format!("{component}.configuration.enabled"),
                PeerError::OtherDiscoveryHandler(component.clone()),
            ));
        }
    }
    if !values.other.is_empty() {
        let names: Vec<&str> = values.other.keys().map(String::as_str).collect();
        notes.push(Note::ignored(names.join(", "), None, "Akri's own components and settings; devsieve needs none"));
    }
    if !values.udev.other.is_empty() {
        let names: Vec<String> = values.udev.other.keys().map(|k| format!("udev.{k}")).collect();
        notes.push(Note::ignored(
            names.join(", "),
            None,
            "the agent discovers udev devices itself; no discovery handler DaemonSet runs",
        ));
    }
    let Some(configuration) = values.udev.configuration else {
        return Err(field_error(file, "udev.configuration", PeerError::NotEnabled));
    };
    let at = "udev.configuration";
    match configuration.enabled {
        Some(false) => return Err(field_error(file, format!("{at}.enabled"), PeerError::NotEnabled)),
        Some(true) => {}
        None => notes.push(Note::changed(
            format!("{at}.enabled"),
            Some(0),
            "not set (Akri's default is false): read as true, since the values give a udev Configuration; \
             the chart must have been given `--set udev.configuration.enabled=true`",
        )),
    }
    let details = match configuration.discovery_details {
        None => json!({}),
        Some(details @ serde_json::Value::Object(_)) => details,
        Some(_) => return Err(field_error(file, format!("{at}.discoveryDetails"), PeerError::NotAMapping)),
    };
    let ignored = [
        (configuration.broker_pod.is_some(), "brokerPod", BROKER_NOTE),
        (configuration.broker_job.is_some(), "brokerJob", BROKER_NOTE),
        (configuration.create_instance_services.is_some(), "createInstanceServices", SERVICE_NOTE),
        (configuration.instance_service.is_some(), "instanceService", SERVICE_NOTE),
        (configuration.create_configuration_service.is_some(), "createConfigurationService", SERVICE_NOTE),
        (configuration.configuration_service.is_some(), "configurationService", SERVICE_NOTE),
        (configuration.broker_properties.as_ref().is_some_and(|p| !p.is_empty()), "brokerProperties", PROPERTIES_NOTE),
    ];
    for (present, field, message) in ignored {
        if present {
            notes.push(Note::ignored(format!("{at}.{field}"), Some(0), message));
        }
    }
    if configuration.capacity.is_some() {
        notes.push(Note::changed(format!("{at}.capacity"), Some(0), CAPACITY_NOTE));
    }
    let name = configuration.name.unwrap_or_else(|| HELM_DEFAULT_NAME.into());
    Ok(Imported {
        format: Format::AkriHelmValues,
        raw: RawConfig {
            domain: Some(AKRI_DOMAIN.into()),
            usbip: None,
            resources: vec![udev_rule_resource(name, details, configuration.capacity)],
        },
        notes,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::import_round_trip;
    use super::*;
    use crate::config::{Config, HandlerRef, NoteKind};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/akri/printer.yaml"), text).map_err(|e| e.to_string())
    }

    /// The walk-through's 3D printer (a CH340 serial adapter), as its author applied it.
    const PRINTER: &str = r#"apiVersion: akri.sh/v0
kind: Configuration
metadata:
  name: akri-3dprinter
spec:
  capacity: 1
  discoveryHandler:
    discoveryDetails: |
      groupRecursive: true # Recommended unless using very exact udev rules
      udevRules:
      - ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523"
    name: udev
"#;

    #[test]
    fn a_configuration_keeps_its_resource_name_rules_and_capacity() {
        let (config, imported) = import_round_trip(PRINTER);
        assert_eq!(config.format, Format::AkriConfiguration);
        assert_eq!(config.resources.len(), 1);
        let printer = &config.resources[0];
        assert_eq!(printer.name, "akri.sh/akri-3dprinter");
        assert_eq!(printer.handler, HandlerRef::Builtin("udev-rule".into()));
        assert_eq!(
            printer.handler_config,
            r#"{"capacity":1,"groupRecursive":true,"udevRules":["ATTRS{idVendor}==\"1a86\", ATTRS{idProduct}==\"7523\""]}"#
        );
        let kinds: Vec<NoteKind> = imported.notes.iter().map(|n| n.kind).collect();
        assert_eq!(kinds, [NoteKind::Changed], "{:?}", imported.notes);
        assert!(imported.notes[0].field.ends_with("spec.capacity"));
    }

    #[test]
    fn several_configurations_and_their_ignored_fields() {
        let text = format!(
            "{PRINTER}---\n---\napiVersion: akri.sh/v0\nkind: Configuration\nmetadata: {{name: cams, namespace: x}}\n\
             spec:\n  discoveryHandler: {{name: udev, discoveryDetails: \"udevRules: ['KERNEL==\\\"video[0-9]*\\\"']\"}}\n  \
             brokerSpec: {{brokerPodSpec: {{containers: []}}}}\n  instanceServiceSpec: {{type: ClusterIP}}\n  \
             configurationServiceSpec: {{type: ClusterIP}}\n  brokerProperties: {{RESOLUTION: 640x480}}\n"
        );
        let (config, imported) = import_round_trip(&text);
        let names: Vec<&str> = config.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["akri.sh/akri-3dprinter", "akri.sh/cams"]);
        let ignored: Vec<&str> = config.ignored_fields().map(|n| n.field.as_str()).collect();
        assert_eq!(
            ignored,
            [
                "documents[2] (\"cams\").spec.brokerSpec",
                "documents[2] (\"cams\").spec.instanceServiceSpec",
                "documents[2] (\"cams\").spec.configurationServiceSpec",
                "documents[2] (\"cams\").spec.brokerProperties",
            ]
        );
        assert!(imported.notes.iter().all(|n| n.field.contains("printer") == (n.resource == Some(0))));
        let yaml = imported.to_yaml(Path::new("cams.yaml"));
        assert!(
            yaml.contains("  # documents[2] (\"cams\").spec.brokerSpec: ignored: devsieve deploys no brokers"),
            "{yaml}"
        );
    }

    #[test]
    fn other_discovery_handlers_and_objects_are_refused_by_name() {
        let onvif = PRINTER.replace("name: udev", "name: onvif");
        let error = parse(&onvif).unwrap_err();
        assert!(
            error.contains(
                "documents[0] (\"akri-3dprinter\").spec.discoveryHandler.name: uses Akri's `onvif` discovery handler"
            ),
            "{error}"
        );
        let error =
            parse(&format!("{PRINTER}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: akri}}\n")).unwrap_err();
        assert!(error.contains("documents[1]: is a Namespace, not an Akri Configuration"), "{error}");
        let error = parse(&PRINTER.replace("capacity: 1", "capacty: 1")).unwrap_err();
        assert!(error.contains("capacty") && error.contains("line 6"), "{error}");
        let error = parse(&PRINTER.replace("      udevRules:\n", "      udevRules: [\n")).unwrap_err();
        assert!(error.contains("spec.discoveryHandler.discoveryDetails:"), "{error}");
    }

    #[test]
    fn helm_values_as_the_chart_renders_them() {
        let values = r#"udev:
  discovery:
    enabled: true
  configuration:
    enabled: true
    name: akri-3dprinter
    capacity: 2
    discoveryDetails:
      groupRecursive: true
      udevRules:
        - 'ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523"'
    brokerPod:
      image:
        repository: ghcr.io/example/octoprint
agent:
  full: false
controller:
  enabled: true
"#;
        let (config, imported) = import_round_trip(values);
        assert_eq!(config.format, Format::AkriHelmValues);
        assert_eq!(config.resources[0].name, "akri.sh/akri-3dprinter");
        assert!(config.resources[0].handler_config.contains(r#""capacity":2"#));
        let ignored: Vec<&str> = config.ignored_fields().map(|n| n.field.as_str()).collect();
        assert_eq!(ignored, ["agent, controller", "udev.discovery", "udev.configuration.brokerPod"]);
        assert!(imported.notes.iter().any(|n| n.field == "udev.configuration.capacity"));

        let (config, imported) = import_round_trip(
            "udev:\n  configuration:\n    discoveryDetails:\n      udevRules: ['SUBSYSTEM==\"sound\"']\n",
        );
        assert_eq!(config.resources[0].name, "akri.sh/akri-udev");
        assert_eq!(imported.notes[0].field, "udev.configuration.enabled");

        let error = parse("udev:\n  configuration:\n    enabled: false\n").unwrap_err();
        assert!(error.contains("udev.configuration.enabled: is false"), "{error}");
        let error =
            parse("udev: {configuration: {enabled: true}}\nonvif:\n  configuration:\n    enabled: true\n").unwrap_err();
        assert!(error.contains("onvif.configuration.enabled: uses Akri's `onvif` discovery handler"), "{error}");
        let error = parse("udev: {configuration: {enabled: true, udevRule: []}}\n").unwrap_err();
        assert!(error.contains("udevRule"), "{error}");
    }
}

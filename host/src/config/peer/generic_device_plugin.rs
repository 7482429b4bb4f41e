//! squat's generic-device-plugin, read as devsieve resources: its config file
//! (`devices:`, alias `device:`, plus `domain:`), or the DaemonSet manifest
//! that passes its `--device` flags. Resource names stay `squat.ai/NAME` (or
//! the `--domain` given).
//!
//! A device whose groups are all `paths` groups becomes a `glob` resource
//! with the groups as they are (the `glob` handler reads gdp's groups); one
//! whose groups are all `usb` groups becomes a `usb-id` resource. gdp grants
//! any path on the node; a devsieve resource only paths under its allowed
//! roots, so the roots the paths need are added, each with a note.

use std::path::{Path, PathBuf};

use serde_json::{Value as Json, json};
use serde_yaml_ng::Value;

use super::{Format, Imported, Note, PeerError, field_error};
use crate::config::{ConfigError, DEFAULT_ROOT, RawConfig, RawResource};

/// generic-device-plugin's domain when `--domain` is not given.
const GDP_DOMAIN: &str = "squat.ai";
/// generic-device-plugin's defaults for the flags devsieve has its own of.
const GDP_PLUGIN_DIRECTORY: &str = "/var/lib/kubelet/device-plugins";
const GDP_LISTEN: &str = ":8080";

/// What the flags (or the config file's keys) say besides the devices.
#[derive(Default)]
struct Settings {
    domain: Option<String>,
    /// Flags devsieve takes differently, with where they were given.
    other: Vec<(String, String, String)>,
}

/// A `--device` value or a `devices[]` entry: gdp's `DeviceSpec`.
struct DeviceSpec {
    /// Where it was given, for errors and notes.
    at: String,
    spec: Json,
}

/// generic-device-plugin's config file: `devices` (or `device`), `domain`,
/// and any of its other flags by name.
pub(super) fn config_file(file: &Path, document: &Value) -> Result<Imported, ConfigError> {
    let mapping = document.as_mapping().ok_or_else(|| field_error(file, ".", PeerError::NotAMapping))?;
    let mut settings = Settings::default();
    let mut devices = Vec::new();
    let mut notes = Vec::new();
    for (key, value) in mapping {
        let key = key.as_str().unwrap_or_default();
        match key {
            "devices" | "device" => {
                let list = value.as_sequence().ok_or_else(|| field_error(file, key, PeerError::DeviceSpec))?;
                for (i, spec) in list.iter().enumerate() {
                    let at = format!("{key}[{i}]");
                    let spec = to_json(spec).map_err(|e| field_error(file, &at, e))?;
                    devices.push(DeviceSpec { at, spec });
                }
            }
            "domain" => settings.domain = Some(scalar_text(value)),
            "plugin-directory" | "listen" | "log-level" => {
                settings.other.push((key.into(), key.into(), scalar_text(value)));
            }
            "config" | "config-file" | "version" => {}
            _ => notes.push(Note::ignored(key, None, "not a generic-device-plugin setting (it ignores it too)")),
        }
    }
    resources(file, Format::GenericDevicePluginConfig, settings, devices, notes)
}

/// A manifest (one or more documents) holding generic-device-plugin's
/// DaemonSet: the devices and settings of its container's flags.
pub(super) fn manifest(file: &Path, documents: &[Value]) -> Result<Imported, ConfigError> {
    let mut found = Vec::new();
    for (d, document) in documents.iter().enumerate() {
        if super::object_kind(document).is_none_or(|(_, kind)| kind != "DaemonSet") {
            continue;
        }
        let containers = document
            .get("spec")
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec"))
            .and_then(|s| s.get("containers"))
            .and_then(Value::as_sequence);
        for (c, container) in containers.into_iter().flatten().enumerate() {
            let words: Vec<(String, String)> = ["command", "args"]
                .iter()
                .flat_map(|field| {
                    let list = container.get(*field).and_then(Value::as_sequence);
                    list.into_iter().flatten().enumerate().map(move |(i, word)| {
                        let at = format!("documents[{d}].spec.template.spec.containers[{c}].{field}[{i}]");
                        (at, scalar_text(word))
                    })
                })
                .collect();
            let is_plugin = words.iter().any(|(_, w)| w.starts_with("--device") || w.starts_with("--config"));
            if is_plugin {
                found.push((format!("documents[{d}].spec.template.spec.containers[{c}]"), container, words));
            }
        }
    }
    let (at, container, words) = match found.len() {
        0 => return Err(field_error(file, "documents", PeerError::NoPluginContainer)),
        1 => found.remove(0),
        n => return Err(field_error(file, "documents", PeerError::SeveralPluginContainers(n))),
    };
    let mut settings = Settings::default();
    let mut devices = Vec::new();
    let mut notes = Vec::new();
    let mut config_file = None;
    let mut words = words.into_iter().skip_while(|(_, w)| !w.starts_with("--"));
    while let Some((word_at, word)) = words.next() {
        let Some(flag) = word.strip_prefix("--") else {
            notes.push(Note::ignored(
                word_at,
                None,
                format!("`{word}` is not a flag; generic-device-plugin takes none"),
            ));
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (flag.to_string(), None),
        };
        if name == "version" {
            continue;
        }
        if !matches!(
            name.as_str(),
            "device" | "domain" | "plugin-directory" | "listen" | "log-level" | "config" | "config-file"
        ) {
            return Err(field_error(file, word_at, PeerError::UnknownFlag(format!("--{name}"))));
        }
        let (value_at, value) = match inline {
            Some(value) => (word_at, value),
            None => {
                words.next().ok_or_else(|| field_error(file, &word_at, PeerError::FlagValue(format!("--{name}"))))?
            }
        };
        match name.as_str() {
            "device" => devices.push(device_flag(file, value_at, &value)?),
            "domain" => settings.domain = Some(value),
            "config" | "config-file" => config_file = Some((value_at, value)),
            _ => settings.other.push((value_at, format!("--{name}"), value)),
        }
    }
    if let Some(env) = container.get("env").and_then(Value::as_sequence) {
        for (i, variable) in env.iter().enumerate() {
            let name = variable.get("name").map(scalar_text).unwrap_or_default();
            notes.push(Note::ignored(
                format!("{at}.env[{i}] ({name})"),
                None,
                "generic-device-plugin reads its flags from the environment too; set what this means by hand",
            ));
        }
    }
    if let Some((value_at, path)) = config_file {
        if devices.is_empty() {
            return Err(field_error(file, value_at, PeerError::ConfigFileFlag(path)));
        }
        notes.push(Note::ignored(value_at, None, format!("{path}: the `--device` flags are read instead")));
    }
    resources(file, Format::GenericDevicePluginManifest, settings, devices, notes)
}

/// One `--device` flag's value: YAML (or JSON) text of a device spec, or
/// the `NAME,PATH,PATH...` text of generic-device-plugin's first releases.
fn device_flag(file: &Path, at: String, value: &str) -> Result<DeviceSpec, ConfigError> {
    let parsed: Value = serde_yaml_ng::from_str(value)
        .map_err(|e| field_error(file, &at, PeerError::Embedded(format!("not a device spec: {e}"))))?;
    let spec = match parsed {
        Value::String(text) if text.contains(',') => {
            let mut parts = text.split(',');
            let name = parts.next().unwrap_or_default();
            let groups: Vec<Json> = parts.map(|path| json!({ "paths": [{ "path": path }] })).collect();
            json!({ "name": name, "groups": groups })
        }
        other => to_json(&other).map_err(|e| field_error(file, &at, e))?,
    };
    Ok(DeviceSpec { at, spec })
}

/// The devices as resources under the settings' domain.
fn resources(
    file: &Path,
    format: Format,
    settings: Settings,
    devices: Vec<DeviceSpec>,
    mut notes: Vec<Note>,
) -> Result<Imported, ConfigError> {
    for (at, flag, value) in settings.other {
        if let Some(note) = flag_note(at, &flag, &value) {
            notes.push(note);
        }
    }
    let mut resources = Vec::with_capacity(devices.len());
    for device in devices {
        let index = resources.len();
        resources.push(resource(file, device, index, &mut notes)?);
    }
    let domain = settings.domain.unwrap_or_else(|| GDP_DOMAIN.into());
    Ok(Imported { format, raw: RawConfig { domain: Some(domain), usbip: None, resources }, notes })
}

/// What to do about a gdp flag devsieve takes as its own flag, if anything.
fn flag_note(at: String, flag: &str, value: &str) -> Option<Note> {
    let flag = flag.trim_start_matches("--");
    let message = match flag {
        "plugin-directory" if value.trim_end_matches('/') == GDP_PLUGIN_DIRECTORY => return None,
        "plugin-directory" => format!("run `devsieve run --plugin-dir {value}` (or set DEVSIEVE_PLUGIN_DIR)"),
        "listen" if value == GDP_LISTEN => "devsieve serves /healthz, /readyz and /metrics on 127.0.0.1:9470; \
                                            run `devsieve run --listen 0.0.0.0:8080` to keep generic-device-plugin's \
                                            address for scrapers"
            .into(),
        "listen" => format!("run `devsieve run --listen ADDRESS:PORT` (devsieve needs an address: {value:?})"),
        _ => format!("run `devsieve run --log {value}` (a tracing filter: error, warn, info, debug)"),
    };
    Some(Note::changed(at, None, message))
}

/// One gdp device as one devsieve resource.
fn resource(file: &Path, device: DeviceSpec, index: usize, notes: &mut Vec<Note>) -> Result<RawResource, ConfigError> {
    let DeviceSpec { at, spec } = device;
    let Json::Object(mut spec) = spec else { return Err(field_error(file, at, PeerError::DeviceSpec)) };
    let name = match spec.remove("name") {
        Some(Json::String(name)) => name,
        _ => return Err(field_error(file, format!("{at}.name"), PeerError::DeviceSpec)),
    };
    let at = format!("{at} ({name:?})");
    let groups = match spec.remove("groups") {
        Some(Json::Array(groups)) => groups,
        None => Vec::new(),
        Some(_) => return Err(field_error(file, format!("{at}.groups"), PeerError::DeviceSpec)),
    };
    for key in spec.keys() {
        let message = if key == "count" {
            "generic-device-plugin ignores a device's `count` too: give each group its `count`"
        } else {
            "not a field of generic-device-plugin's device spec (it ignores it too)"
        };
        notes.push(Note::ignored(format!("{at}.{key}"), Some(index), message));
    }
    let mut path_groups = Vec::new();
    let mut usb_ids = Vec::new();
    let mut usb_counts = Vec::new();
    for (g, group) in groups.into_iter().enumerate() {
        let group_at = format!("{at}.groups[{g}]");
        let Json::Object(group) = group else { return Err(field_error(file, group_at, PeerError::NotAMapping)) };
        match (group.get("paths"), group.get("usb")) {
            (Some(_), Some(_)) => return Err(field_error(file, group_at, PeerError::PathsAndUsb)),
            (None, None) => return Err(field_error(file, group_at, PeerError::EmptyGroup)),
            (Some(_), None) => path_groups.push(Json::Object(group)),
            (None, Some(usb)) => {
                if let Some(key) = group.keys().find(|k| !matches!(k.as_str(), "usb" | "count")) {
                    return Err(field_error(file, format!("{group_at}.{key}"), PeerError::UnknownGroupField));
                }
                let count = match group.get("count") {
                    None => 1,
                    Some(count) => count
                        .as_u64()
                        .filter(|c| *c > 0)
                        .ok_or_else(|| field_error(file, format!("{group_at}.count"), PeerError::Count))?,
                };
                usb_counts.push(count);
                if !usb.is_array() {
                    return Err(field_error(file, format!("{group_at}.usb"), PeerError::DeviceSpec));
                }
                for (u, id) in usb.as_array().into_iter().flatten().enumerate() {
                    for field in ["vendor", "product"] {
                        if let Some(number) = id.get(field).and_then(Json::as_u64) {
                            let field_at = format!("{group_at}.usb[{u}].{field}");
                            return Err(field_error(file, field_at, PeerError::NumericUsbId(number)));
                        }
                    }
                    usb_ids.push(id.clone());
                }
            }
        }
    }
    if !path_groups.is_empty() && !usb_counts.is_empty() {
        return Err(field_error(file, format!("{at}.groups"), PeerError::MixedGroups));
    }
    if usb_counts.is_empty() {
        let allowed_roots = roots_for(&path_groups);
        if let Some(roots) = &allowed_roots {
            let extra: Vec<String> =
                roots.iter().filter(|r| *r != Path::new(DEFAULT_ROOT)).map(|r| r.display().to_string()).collect();
            notes.push(Note::changed(
                format!("{at}.groups"),
                Some(index),
                format!(
                    "paths outside /dev: allowedRoots adds {} (generic-device-plugin grants any path; devsieve only \
                     paths under a resource's allowed roots, and the agent's pod must mount them)",
                    extra.join(", ")
                ),
            ));
        }
        return Ok(RawResource {
            name,
            handler: "glob".into(),
            allowed_roots,
            config: json!({ "groups": path_groups }),
            ..RawResource::default()
        });
    }
    let mut distinct = usb_counts.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() > 1 {
        return Err(field_error(file, format!("{at}.groups"), PeerError::UsbCounts(distinct)));
    }
    let mut config = json!({ "usb": usb_ids });
    if distinct[0] != 1 {
        config["count"] = json!(distinct[0]);
    }
    Ok(RawResource { name, handler: "usb-id".into(), config, ..RawResource::default() })
}

/// The allowed roots the groups' paths need, if any lies outside /dev:
/// /dev and the literal directory part of each such path.
fn roots_for(groups: &[Json]) -> Option<Vec<PathBuf>> {
    let mut roots: Vec<PathBuf> = vec![PathBuf::from(DEFAULT_ROOT)];
    let patterns = groups
        .iter()
        .filter_map(|g| g.get("paths").and_then(Json::as_array))
        .flatten()
        .filter_map(|p| p.get("path").and_then(Json::as_str));
    for pattern in patterns {
        let literal: PathBuf = Path::new(pattern)
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[', '\\']))
            .collect();
        if literal.is_absolute() && !roots.iter().any(|root| literal.starts_with(root)) {
            roots.retain(|root| !root.starts_with(&literal));
            roots.push(literal);
        }
    }
    (roots.len() > 1).then_some(roots)
}

/// A YAML value as JSON (what handler configs are), or why it cannot be one.
fn to_json(value: &Value) -> Result<Json, PeerError> {
    serde_json::to_value(value).map_err(|e| PeerError::Embedded(e.to_string()))
}

/// A YAML scalar as the text a flag would have.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        other => serde_yaml_ng::to_string(other).unwrap_or_default().trim_end().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::import_round_trip;
    use super::*;
    use crate::config::{Config, HandlerRef, NoteKind};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/gdp/generic-device-plugin.yaml"), text).map_err(|e| e.to_string())
    }

    /// generic-device-plugin's own manifest (manifests/generic-device-plugin.yaml), trimmed to two devices.
    const MANIFEST: &str = r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: generic-device-plugin
  namespace: kube-system
spec:
  selector:
    matchLabels:
      app.kubernetes.io/name: generic-device-plugin
  template:
    metadata:
      labels:
        app.kubernetes.io/name: generic-device-plugin
    spec:
      containers:
      - image: squat/generic-device-plugin
        args:
        - --device
        - |
          name: serial
          groups:
            - paths:
                - path: /dev/ttyUSB*
            - paths:
                - path: /dev/ttyACM*
        - --device
        - |
          name: fuse
          groups:
            - count: 10
              paths:
                - path: /dev/fuse
        - --domain=example.com
        - --listen
        - ":8080"
        name: generic-device-plugin
---
apiVersion: v1
kind: Service
metadata:
  name: generic-device-plugin
spec:
  ports:
  - port: 8080
"#;

    #[test]
    fn a_manifest_s_device_flags_become_glob_resources() {
        let (config, imported) = import_round_trip(MANIFEST);
        assert_eq!(config.format, Format::GenericDevicePluginManifest);
        let names: Vec<&str> = config.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["example.com/serial", "example.com/fuse"]);
        assert!(config.resources.iter().all(|r| r.handler == HandlerRef::Builtin("glob".into())));
        assert_eq!(config.resources[1].handler_config, r#"{"groups":[{"count":10,"paths":[{"path":"/dev/fuse"}]}]}"#);
        assert_eq!(imported.notes.len(), 1, "{:?}", imported.notes);
        assert!(imported.notes[0].field.ends_with("args[6]") && imported.notes[0].message.contains("0.0.0.0:8080"));
    }

    #[test]
    fn a_config_file_with_usb_groups_the_old_comma_form_and_paths_outside_dev() {
        let (config, imported) = import_round_trip(
            "devices:\n- name: ch340\n  count: 3\n  groups:\n  - usb: [{vendor: \"1a86\", product: \"7523\"}]\n    count: 2\n\
             - name: docker\n  groups:\n  - paths: [{path: /var/run/docker.sock, type: Mount}]\n",
        );
        assert_eq!(config.format, Format::GenericDevicePluginConfig);
        assert_eq!(config.domain, "squat.ai");
        let ch340 = &config.resources[0];
        assert_eq!(ch340.handler, HandlerRef::Builtin("usb-id".into()));
        assert_eq!(ch340.handler_config, r#"{"count":2,"usb":[{"product":"7523","vendor":"1a86"}]}"#);
        let docker = &config.resources[1];
        assert_eq!(docker.allowed_roots, [PathBuf::from("/dev"), PathBuf::from("/var/run/docker.sock")]);
        let kinds: Vec<(NoteKind, &str)> = imported.notes.iter().map(|n| (n.kind, n.field.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (NoteKind::Ignored, "devices[0] (\"ch340\").count"),
                (NoteKind::Changed, "devices[1] (\"docker\").groups")
            ]
        );

        let (config, _) = import_round_trip(
            "apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      containers:\n      - name: gdp\n        \
             args: ['--device', 'serial,/dev/ttyUSB*,/dev/ttyACM*']\n",
        );
        assert_eq!(
            config.resources[0].handler_config,
            r#"{"groups":[{"paths":[{"path":"/dev/ttyUSB*"}]},{"paths":[{"path":"/dev/ttyACM*"}]}]}"#
        );
    }

    #[test]
    fn what_devsieve_cannot_honour_is_an_error_naming_the_field() {
        let cases = [
            (
                "devices:\n- name: x\n  groups:\n  - paths: [{path: /dev/a}]\n  - usb: [{vendor: '1', product: '2'}]\n",
                "devices[0] (\"x\").groups: mixes `paths` groups and `usb` groups",
            ),
            (
                "devices:\n- name: x\n  groups:\n  - paths: [{path: /dev/a}]\n    usb: []\n",
                "devices[0] (\"x\").groups[0]: has both `paths` and `usb`",
            ),
            (
                "devices:\n- name: x\n  groups:\n  - usb: [{vendor: 1209, product: '000F'}]\n",
                "devices[0] (\"x\").groups[0].usb[0].vendor: 1209 is a YAML number",
            ),
            (
                "devices:\n- name: x\n  groups:\n  - usb: [{vendor: '1', product: '2'}]\n  - usb: [{vendor: '1', product: '3'}]\n    count: 2\n",
                "have different counts ([1, 2])",
            ),
            (
                "apiVersion: apps/v1\nkind: DaemonSet\nspec: {template: {spec: {containers: [{name: a, args: [--device, '{name: a, groups: []}', --devise, x]}]}}}\n",
                "args[2]: unknown flag `--devise`",
            ),
            (
                "apiVersion: apps/v1\nkind: DaemonSet\nspec: {template: {spec: {containers: [{name: a, args: [--config-file, /etc/gdp/config.yaml]}]}}}\n",
                "args[1]: the devices are in /etc/gdp/config.yaml",
            ),
            (
                "apiVersion: apps/v1\nkind: DaemonSet\nspec: {template: {spec: {containers: [{name: a, args: [--device]}]}}}\n",
                "args[0]: flag `--device` needs a value",
            ),
            (
                "apiVersion: apps/v1\nkind: DaemonSet\nspec: {template: {spec: {containers: [{name: a, args: [-v]}]}}}\n",
                "not generic-device-plugin's DaemonSet",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}\n{error}");
        }
    }
}

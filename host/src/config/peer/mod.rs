//! The config files of the systems devsieve replaces — generic-device-plugin,
//! Akri and usbip-device-plugin — read exactly as their users have them, as
//! the devsieve config they mean. A file's shape says which it is (see
//! [`read`]). Every field whose meaning changes on the way, and every field
//! devsieve does not act on, becomes a [`Note`]: the agent and `discover`
//! report the ignored ones, and `devsieve import` prints the result as a
//! devsieve config with every note as a comment. Nothing is dropped silently.

mod akri;
mod generic_device_plugin;
mod usbip_device_plugin;

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::{ConfigError, FieldError, RawConfig, deserialize};
pub use usbip_device_plugin::USBIP_PLUGIN_DOMAIN;

/// Which kind of file a config was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Devsieve,
    GenericDevicePluginConfig,
    GenericDevicePluginManifest,
    AkriConfiguration,
    AkriHelmValues,
    UsbipDevicePlugin,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Devsieve => "devsieve's own config",
            Format::GenericDevicePluginConfig => "generic-device-plugin's config file",
            Format::GenericDevicePluginManifest => "generic-device-plugin's DaemonSet manifest",
            Format::AkriConfiguration => "Akri Configuration",
            Format::AkriHelmValues => "Akri's Helm values",
            Format::UsbipDevicePlugin => "usbip-device-plugin's config.yaml",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteKind {
    /// Read, but it means something else here (or lands somewhere else).
    Changed,
    /// Not acted on at all.
    Ignored,
}

/// One field of a peer's file that devsieve reads differently, or not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub kind: NoteKind,
    /// Where in the peer's file, e.g. `spec.brokerSpec`.
    pub field: String,
    /// The resource it concerns (an index into the config's resources), if one.
    pub resource: Option<usize>,
    pub message: String,
}

impl Note {
    fn changed(field: impl Into<String>, resource: Option<usize>, message: impl Into<String>) -> Note {
        Note { kind: NoteKind::Changed, field: field.into(), resource, message: message.into() }
    }

    fn ignored(field: impl Into<String>, resource: Option<usize>, message: impl Into<String>) -> Note {
        Note { kind: NoteKind::Ignored, field: field.into(), resource, message: message.into() }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            NoteKind::Changed => write!(f, "{}: {}", self.field, self.message),
            NoteKind::Ignored => write!(f, "{}: ignored: {}", self.field, self.message),
        }
    }
}

/// What a peer's file says that devsieve cannot honour.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(
        "uses Akri's `{0}` discovery handler; devsieve finds udev devices, device files and USB/IP devices only \
         (Akri's `udev`): keep Akri for this Configuration"
    )]
    OtherDiscoveryHandler(String),
    #[error("is a {0}, not an Akri Configuration (apiVersion akri.sh/v0, kind Configuration)")]
    NotAkriConfiguration(String),
    #[error("is false: Akri creates no udev Configuration from these values")]
    NotEnabled,
    #[error("{0}")]
    Embedded(String),
    #[error(
        "holds no container passing generic-device-plugin's `--device` flags (or a single `--config-file`): \
         not generic-device-plugin's DaemonSet"
    )]
    NoPluginContainer,
    #[error("{0} containers pass `--device` flags; import one generic-device-plugin DaemonSet at a time")]
    SeveralPluginContainers(usize),
    #[error(
        "the devices are in {0}, a file inside the container (`--config-file`): import that file \
         (`devsieve import FILE`), e.g. the ConfigMap's value"
    )]
    ConfigFileFlag(String),
    #[error("unknown flag `{0}` (generic-device-plugin refuses it too)")]
    UnknownFlag(String),
    #[error("flag `{0}` needs a value")]
    FlagValue(String),
    #[error("must be a device spec: a mapping with `name` and `groups` (or the older `NAME,PATH,...` text)")]
    DeviceSpec,
    #[error("has both `paths` and `usb`; generic-device-plugin refuses that too: make them two groups")]
    PathsAndUsb,
    #[error("has neither `paths` nor `usb`")]
    EmptyGroup,
    #[error(
        "mixes `paths` groups and `usb` groups; a devsieve resource has one handler (`glob` for paths, `usb-id` \
         for USB ids): split it into two devices with different names"
    )]
    MixedGroups,
    #[error(
        "its `usb` groups have different counts ({0:?}); one devsieve resource shares every USB device the same \
         number of times: split it into one device per count"
    )]
    UsbCounts(Vec<u64>),
    #[error(
        "{0} is a YAML number: generic-device-plugin reads it as the decimal id {0} (= {0:#06x}), which is \
         rarely meant; write the hex id as a string: \"{0}\" or \"{0:04x}\""
    )]
    NumericUsbId(u64),
    #[error("unknown field (generic-device-plugin's groups have `paths`, `usb` and `count`)")]
    UnknownGroupField,
    #[error("must be a mapping")]
    NotAMapping,
    #[error("must be a positive whole number")]
    Count,
}

/// A file read as devsieve's config, with what changed on the way.
#[derive(Debug)]
pub struct Imported {
    pub format: Format,
    pub(super) raw: RawConfig,
    pub notes: Vec<Note>,
}

/// A field error naming `field` in `file`.
fn field_error(file: &Path, field: impl Into<String>, error: impl Into<FieldError>) -> ConfigError {
    ConfigError::Field { file: file.to_path_buf(), field: field.into(), source: Box::new(error.into()) }
}

impl From<PeerError> for FieldError {
    fn from(error: PeerError) -> Self {
        FieldError::Peer(error)
    }
}

/// `apiVersion` and `kind` of a Kubernetes object, if `document` is one.
fn object_kind(document: &Value) -> Option<(&str, &str)> {
    Some((document.get("apiVersion")?.as_str()?, document.get("kind")?.as_str()?))
}

fn is_akri_configuration(document: &Value) -> bool {
    object_kind(document).is_some_and(|(api, kind)| api.starts_with("akri.sh/") && kind == "Configuration")
}

/// Reads `text` (the contents of `file`) by its shape:
///
/// - Kubernetes objects: Akri `Configuration`s (one or several documents), or
///   a manifest holding generic-device-plugin's DaemonSet;
/// - `resources:` a list: devsieve's own config; a mapping: usbip-device-plugin's;
/// - `devices:` (or `device:`): generic-device-plugin's config file;
/// - `udev:` with no `resources:`: Akri's Helm values.
pub(super) fn read(file: &Path, text: &str) -> Result<Imported, ConfigError> {
    let documents: Option<Vec<Value>> =
        serde_yaml_ng::Deserializer::from_str(text).map(Value::deserialize).collect::<Result<_, _>>().ok();
    let documents: Vec<Value> = documents.unwrap_or_default().into_iter().filter(|d| !d.is_null()).collect();
    let native = |text| Ok(Imported { format: Format::Devsieve, raw: deserialize(file, text)?, notes: Vec::new() });
    if documents.iter().any(|d| object_kind(d).is_some()) {
        if documents.iter().any(is_akri_configuration) {
            return akri::configurations(file, text);
        }
        return generic_device_plugin::manifest(file, &documents);
    }
    let [document] = documents.as_slice() else { return native(text) };
    if document.get("resources").is_some_and(Value::is_mapping) {
        return usbip_device_plugin::read(file, text);
    }
    if document.get("resources").is_none() {
        if document.get("devices").or_else(|| document.get("device")).is_some() {
            return generic_device_plugin::config_file(file, document);
        }
        if document.get("udev").is_some_and(Value::is_mapping) {
            return akri::helm_values(file, text);
        }
    }
    native(text)
}

impl Imported {
    /// The devsieve config this file means, as YAML: `devsieve import`'s
    /// output. Every note is a comment, above the resource it concerns.
    pub fn to_yaml(&self, file: &Path) -> String {
        let mut out = String::new();
        out.push_str(&format!("# devsieve config, imported from {} {}.\n", self.format, file.display()));
        if self.format != Format::Devsieve {
            let domain = self.raw.domain.as_deref().unwrap_or(super::DEFAULT_DOMAIN);
            let names: Vec<String> = self
                .raw
                .resources
                .iter()
                .map(|r| super::names::resource_name(domain, &r.name).unwrap_or_else(|_| r.name.clone()))
                .collect();
            out.push_str(&format!("# Pods keep asking for the same resources: {}.\n", names.join(", ")));
        }
        for note in self.notes.iter().filter(|n| n.resource.is_none()) {
            push_comment(&mut out, "", note);
        }
        if let Some(domain) = &self.raw.domain {
            out.push_str(&yaml(&serde_json::json!({ "domain": domain })));
        }
        if let Some(usbip) = &self.raw.usbip {
            out.push_str(&yaml(&serde_json::json!({ "usbip": usbip })));
        }
        out.push_str("resources:");
        if self.raw.resources.is_empty() {
            out.push_str(" []");
        }
        out.push('\n');
        for (index, resource) in self.raw.resources.iter().enumerate() {
            for note in self.notes.iter().filter(|n| n.resource == Some(index)) {
                push_comment(&mut out, "  ", note);
            }
            for (i, line) in yaml(resource).lines().enumerate() {
                out.push_str(if i == 0 { "  - " } else { "    " });
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// `value` as YAML text. Serializing plain data to YAML cannot fail.
fn yaml(value: &impl serde::Serialize) -> String {
    serde_yaml_ng::to_string(value).expect("config data serializes")
}

/// `note` as `#` comment lines at `indent`, its text wrapped near 100 columns.
fn push_comment(out: &mut String, indent: &str, note: &Note) {
    let mut line = format!("{indent}#");
    for word in note.to_string().split_whitespace() {
        if line.len() + word.len() > 98 && line.len() > indent.len() + 2 {
            out.push_str(&line);
            out.push('\n');
            line = format!("{indent}#  ");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// `text` read as a peer's file, and its `devsieve import` output read
    /// back as devsieve's own config: both give the same config.
    pub(super) fn import_round_trip(text: &str) -> (Config, Imported) {
        let file = Path::new("/etc/peer/file.yaml");
        let imported = read(file, text).unwrap_or_else(|e| panic!("{e}"));
        let direct = Config::parse(file, text).unwrap_or_else(|e| panic!("{e}"));
        let yaml = imported.to_yaml(file);
        let native = Config::parse(file, &yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        assert_eq!(native.format, Format::Devsieve, "{yaml}");
        assert_eq!(
            (&native.domain, &native.usbip, &native.resources),
            (&direct.domain, &direct.usbip, &direct.resources)
        );
        (direct, imported)
    }

    #[test]
    fn notes_become_wrapped_comments() {
        let note = Note::ignored("spec.brokerSpec", Some(0), "word ".repeat(40));
        let mut out = String::new();
        push_comment(&mut out, "  ", &note);
        assert!(out.lines().count() > 1, "{out}");
        assert!(out.lines().all(|l| l.starts_with("  #") && l.len() <= 100), "{out}");
        assert!(out.starts_with("  # spec.brokerSpec: ignored: word"), "{out}");
    }

    #[test]
    fn a_native_config_is_devsieve_s_own() {
        let (config, imported) = import_round_trip("resources:\n- name: a\n  handler: glob\n  config: {groups: []}\n");
        assert_eq!((config.format, imported.format), (Format::Devsieve, Format::Devsieve));
        assert!(imported.notes.is_empty());
    }

    #[test]
    fn a_manifest_of_other_objects_is_refused_by_name() {
        let error = Config::parse(Path::new("/x.yaml"), "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("generic-device-plugin"), "{error}");
    }
}

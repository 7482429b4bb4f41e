//! The agent's config file: which resources to advertise, which handler finds
//! each, and the handler's own config. Everything is checked up front, and an
//! error names the file, the resource and the field.
//!
//! ```yaml
//! domain: devsieve.io            # optional; resource names are DOMAIN/NAME
//! resources:
//!   - name: printer
//!     handler: udev-rule         # see below
//!     allowedRoots: [/dev]       # where device nodes, globs and mounts may point
//!     config:                    # the handler's own config
//!       udevRules: ['ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523"']
//! ```

//! Handler references (`handler:`) are described in [`reference`], USB/IP
//! servers (`usbip:`) and resources that take remote devices (`from:`) in
//! [`usbip`]. The files of the systems devsieve replaces (generic-device-plugin,
//! Akri, usbip-device-plugin) are read as they are, in [`peer`].

mod peer;
mod reference;
mod usbip;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::GrantedNode;
use crate::support::names::{self, NameError};
use crate::support::paths::is_normal_absolute;
pub use peer::{Format, Imported, Note, NoteKind, PeerError, USBIP_PLUGIN_DOMAIN};
pub use reference::{ConfigMapRef, HandlerRef, OciRef, ReferenceError};
pub use usbip::{Server, UsbipSettings, UsbipSettingsError};

/// The resource domain when the config names none. Never changes once released.
pub const DEFAULT_DOMAIN: &str = "devsieve.io";
/// Where a resource's device nodes, globs and mounts may point when it names no `allowedRoots`.
const DEFAULT_ROOT: &str = "/dev";

/// The largest config file read: far beyond any real config (a few KiB),
/// small enough that a runaway file never costs the agent its memory.
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}: larger than {} MiB; a config file is at most that", MAX_CONFIG_BYTES >> 20)]
    TooLarge { file: PathBuf },
    #[error("{file}: {location}{message}")]
    Syntax { file: PathBuf, location: String, message: String },
    #[error("{file}: {field}: {source}")]
    Field { file: PathBuf, field: String, source: Box<FieldError> },
}

/// What is wrong with one field of a well-formed config.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("{0} is configured twice; resource names must be unique")]
    Duplicate(String),
    #[error("only applies to OCI references, and handler {0} is not one")]
    TagsWithoutOci(HandlerRef),
    #[error("{} must be an absolute path without `.` or `..`", .0.display())]
    Root(PathBuf),
    #[error("must be a mapping of the handler's settings")]
    NotAMapping,
    #[error(transparent)]
    Usbip(UsbipSettingsError),
    #[error("takes remote devices, but `usbip.servers` lists no server")]
    NoServers,
    #[error(
        "a CDI name must resolve when the container is created, but a remote device's nodes exist only once \
         it is attached on Allocate: use `cdi: false` for resources that take remote devices"
    )]
    CdiRemote,
    #[error("{} lies outside the resource's allowed roots ({roots}); add a root with `allowedRoots`", .path.display())]
    OutsideRoots { path: PathBuf, roots: String },
    #[error("{0:?} is not a permission set: use any of r, w, m")]
    Permissions(String),
    #[error(transparent)]
    Peer(PeerError),
}

/// Which devices a resource takes: this node's own (udev devices and
/// files), those of the configured USB/IP servers, or both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Locality {
    #[default]
    Local,
    Remote,
    Both,
}

impl Locality {
    pub fn takes_local(self) -> bool {
        self != Locality::Remote
    }

    pub fn takes_remote(self) -> bool {
        self != Locality::Local
    }
}

/// A device node on the host granted with every group of a resource
/// (usbip-device-plugin's `extras`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ExtraNode {
    host_path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    container_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    permissions: Option<String>,
}

/// The config file as written; also what a peer's file is read into (and
/// `devsieve import` prints), so it serializes back to the same text shape.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usbip: Option<usbip::RawUsbip>,
    resources: Vec<RawResource>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawResource {
    name: String,
    handler: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allowed_roots: Option<Vec<PathBuf>>,
    /// Lets an OCI handler reference name a tag without a digest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    allow_tags: bool,
    #[serde(default, skip_serializing_if = "is_local")]
    from: Locality,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    cdi: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    extra_device_nodes: Vec<ExtraNode>,
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    config: serde_json::Value,
}

fn is_local(from: &Locality) -> bool {
    *from == Locality::Local
}

fn is_empty_object(value: &serde_json::Value) -> bool {
    value.as_object().is_some_and(serde_json::Map::is_empty)
}

impl Default for RawResource {
    fn default() -> Self {
        RawResource {
            name: String::new(),
            handler: String::new(),
            allowed_roots: None,
            allow_tags: false,
            config: empty_object(),
            cdi: false,
            from: Locality::Local,
            extra_device_nodes: Vec::new(),
        }
    }
}

/// serde_yaml's message without the path and position it adds itself (the
/// error names both already, more exactly).
fn bare_yaml_message(text: &str) -> &str {
    let text = match text.rfind(" at line ") {
        Some(at) if text[at + " at line ".len()..].split(" column ").all(|n| n.parse::<u64>().is_ok()) => &text[..at],
        _ => text,
    };
    match text.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && !path.contains(' ') => rest,
        _ => text,
    }
}

/// `text` as `T`, an error naming the file, the position and the field.
fn deserialize<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    deserialize_from(file, serde_yaml_ng::Deserializer::from_str(text))
}

/// One YAML document as `T`, an error naming the file, the position and the field.
fn deserialize_from<'de, T: serde::Deserialize<'de>>(
    file: &Path,
    deserializer: serde_yaml_ng::Deserializer<'de>,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let location =
            inner.location().map(|l| format!("line {} column {}: ", l.line(), l.column())).unwrap_or_default();
        let field = if path == "." { String::new() } else { format!("{path}: ") };
        let text = inner.to_string();
        let message = bare_yaml_message(&text);
        ConfigError::Syntax { file: file.to_path_buf(), location, message: format!("{field}{message}") }
    })
}

/// An extra device node, checked: under the resource's roots, with cgroup permissions.
fn extra_node(extra: ExtraNode, roots: &[PathBuf]) -> Result<GrantedNode, FieldError> {
    if !is_normal_absolute(&extra.host_path) {
        return Err(FieldError::Root(extra.host_path));
    }
    if !roots.iter().any(|root| extra.host_path.starts_with(root)) {
        let roots = roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(FieldError::OutsideRoots { path: extra.host_path, roots });
    }
    let permissions = extra.permissions.unwrap_or_else(|| "rwm".into());
    if permissions.is_empty() || !permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(FieldError::Permissions(permissions));
    }
    let host_path = extra.host_path.to_string_lossy().into_owned();
    Ok(GrantedNode {
        container_path: extra.container_path.unwrap_or_else(|| host_path.clone()),
        host_path,
        permissions,
    })
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    /// `domain/name`, valid as a kubelet extended resource name.
    pub name: String,
    pub handler: HandlerRef,
    /// Roots that device-node globs and mounts must lie under.
    pub allowed_roots: Vec<PathBuf>,
    /// The handler's config as JSON text, as the handler receives it.
    pub handler_config: String,
    /// Give containers CDI device names (and keep a CDI spec) instead of device nodes.
    pub cdi: bool,
    /// Local devices, remote (USB/IP) ones, or both.
    pub from: Locality,
    /// Granted with every group, beside what the handler grants.
    pub extra_device_nodes: Vec<GrantedNode>,
}

impl Resource {
    /// A resource that sets nothing but its name, handler and handler
    /// config, with the defaults a config file gives it.
    pub fn plain(name: String, handler: HandlerRef, handler_config: &str) -> Resource {
        Resource {
            name,
            handler,
            allowed_roots: vec![PathBuf::from(DEFAULT_ROOT)],
            handler_config: handler_config.into(),
            cdi: false,
            from: Locality::Local,
            extra_device_nodes: Vec::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub domain: String,
    pub usbip: UsbipSettings,
    pub resources: Vec<Resource>,
    /// The kind of file it was read from: devsieve's own, or a peer's.
    pub format: Format,
    /// What a peer's file said that devsieve reads differently or not at all.
    pub notes: Vec<Note>,
}

impl Config {
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        Imported::load(file)?.check(file)
    }

    /// Parses `text` as the contents of `file` (which names errors and
    /// anchors relative handler paths): devsieve's own config or a peer's
    /// file, by its shape.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        Imported::parse(file, text)?.check(file)
    }

    /// The notes about fields devsieve does not act on: what the agent and
    /// the one-shot commands warn about.
    pub fn ignored_fields(&self) -> impl Iterator<Item = &Note> {
        self.notes.iter().filter(|note| note.kind == NoteKind::Ignored)
    }

    /// Logs each field devsieve does not act on, once per load.
    pub fn log_ignored_fields(&self) {
        for note in self.ignored_fields() {
            tracing::warn!(file = %self.file.display(), format = %self.format, "{note}");
        }
    }

    fn check(file: &Path, raw: RawConfig) -> Result<Config, ConfigError> {
        let field_error = |field: String, source: FieldError| ConfigError::Field {
            file: file.to_path_buf(),
            field,
            source: Box::new(source),
        };

        let domain = raw.domain.unwrap_or_else(|| DEFAULT_DOMAIN.to_string());
        names::check_domain(&domain).map_err(|e| field_error("domain".into(), e.into()))?;

        let usbip = match raw.usbip {
            None => UsbipSettings::default(),
            Some(raw) => usbip::check(raw).map_err(|(field, e)| field_error(field, e.into()))?,
        };

        let base = file.parent().unwrap_or(Path::new("."));
        let mut seen = HashSet::new();
        let mut resources = Vec::with_capacity(raw.resources.len());
        for (index, raw) in raw.resources.into_iter().enumerate() {
            let at = |field: &str| format!("resources[{index}] ({:?}).{field}", raw.name);
            let name = names::resource_name(&domain, &raw.name).map_err(|e| field_error(at("name"), e.into()))?;
            if !seen.insert(name.clone()) {
                return Err(field_error(at("name"), FieldError::Duplicate(name)));
            }
            let handler = HandlerRef::parse(base, &raw.handler, raw.allow_tags)
                .map_err(|e| field_error(at("handler"), e.into()))?;
            if raw.allow_tags && !matches!(handler, HandlerRef::Oci(_)) {
                return Err(field_error(at("allowTags"), FieldError::TagsWithoutOci(handler)));
            }
            let allowed_roots = raw.allowed_roots.unwrap_or_else(|| vec![PathBuf::from(DEFAULT_ROOT)]);
            if let Some((i, root)) = allowed_roots.iter().enumerate().find(|(_, root)| !is_normal_absolute(root)) {
                return Err(field_error(at(&format!("allowedRoots[{i}]")), FieldError::Root(root.clone())));
            }
            if !raw.config.is_object() {
                return Err(field_error(at("config"), FieldError::NotAMapping));
            }
            if raw.from.takes_remote() && usbip.servers.is_empty() {
                return Err(field_error(at("from"), FieldError::NoServers));
            }
            if raw.from.takes_remote() && raw.cdi {
                return Err(field_error(at("cdi"), FieldError::CdiRemote));
            }
            let mut extra_device_nodes = Vec::with_capacity(raw.extra_device_nodes.len());
            for (i, extra) in raw.extra_device_nodes.into_iter().enumerate() {
                let node = extra_node(extra, &allowed_roots)
                    .map_err(|e| field_error(at(&format!("extraDeviceNodes[{i}]")), e))?;
                extra_device_nodes.push(node);
            }
            resources.push(Resource {
                name,
                handler,
                allowed_roots,
                handler_config: raw.config.to_string(),
                cdi: raw.cdi,
                from: raw.from,
                extra_device_nodes,
            });
        }
        Ok(Config { file: file.to_path_buf(), domain, usbip, resources, format: Format::Devsieve, notes: Vec::new() })
    }
}

/// The text of the config file `file`, at most [`MAX_CONFIG_BYTES`].
pub fn read_file(file: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let read_error = |source| ConfigError::Read { file: file.to_path_buf(), source };
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text))
        .map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { file: file.to_path_buf() });
    }
    Ok(text)
}

impl Imported {
    /// Reads `file`, devsieve's own config or a peer's, without checking it.
    pub fn load(file: &Path) -> Result<Imported, ConfigError> {
        Imported::parse(file, &read_file(file)?)
    }

    /// Reads `text` as the contents of `file`, by its shape, without checking it.
    pub fn parse(file: &Path, text: &str) -> Result<Imported, ConfigError> {
        peer::read(file, text)
    }

    /// The config checked as the agent checks it.
    pub fn check(self, file: &Path) -> Result<Config, ConfigError> {
        let config = Config::check(file, self.raw)?;
        Ok(Config { format: self.format, notes: self.notes, ..config })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/devsieve/config.yaml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn syntax_errors_name_the_field_once() {
        let error = parse("resources:\n  - name: keep\n    handler: glob\n    colour: blue\n").unwrap_err();
        assert!(
            error
                .starts_with("/etc/devsieve/config.yaml: line 4 column 5: resources[0].colour: unknown field `colour`"),
            "{error}"
        );
        assert_eq!(error.matches("resources[0]").count(), 1, "{error}");
        assert!(!error.ends_with("column 5"), "{error}");
    }

    #[test]
    fn defaults_and_references() {
        let config = parse(
            "resources:\n- name: printer\n  handler: udev-rule\n  config: {udevRules: ['KERNEL==\"ttyUSB*\"']}\n\
             - name: example.com/zigbee\n  handler: builtin:usb-id\n- name: custom\n  handler: handlers/x.wasm\n",
        )
        .unwrap();
        assert_eq!(config.domain, "devsieve.io");
        assert_eq!(config.resources[0].name, "devsieve.io/printer");
        assert_eq!(config.resources[0].handler, HandlerRef::Builtin("udev-rule".into()));
        assert_eq!(config.resources[0].allowed_roots, vec![PathBuf::from("/dev")]);
        assert_eq!(config.resources[0].handler_config, r#"{"udevRules":["KERNEL==\"ttyUSB*\""]}"#);
        assert_eq!(config.resources[1].name, "example.com/zigbee");
        assert_eq!(config.resources[2].handler, HandlerRef::File("/etc/devsieve/handlers/x.wasm".into()));
    }

    #[test]
    fn errors_name_the_resource_and_field() {
        let err = parse("resources:\n- name: printer\n  handler: udevrule\n").unwrap_err();
        assert!(err.contains("resources[0] (\"printer\").handler") && err.contains("udev-rule"), "{err}");
        let err = parse("resources:\n- name: Bad_Name!\n  handler: glob\n").unwrap_err();
        assert!(err.contains("resources[0] (\"Bad_Name!\").name"), "{err}");
        let err = parse("resources:\n- name: a\n  handler: glob\n- name: a\n  handler: glob\n").unwrap_err();
        assert!(err.contains("resources[1]") && err.contains("twice"), "{err}");
        let err = parse("resources:\n- name: a\n  handlr: glob\n").unwrap_err();
        assert!(err.contains("resources[0]") && err.contains("handlr") && err.contains("line 3"), "{err}");
        let err = parse("resources:\n- name: a\n  handler: glob\n  allowedRoots: [dev]\n").unwrap_err();
        assert!(err.contains("allowedRoots[0]"), "{err}");
        let err = parse("domain: kubernetes.io\nresources: []\n").unwrap_err();
        assert!(err.contains("domain"), "{err}");
        let err = parse("resources:\n- name: a\n  handler: glob\n  config: [1]\n").unwrap_err();
        assert!(err.contains("config"), "{err}");
    }

    #[test]
    fn allow_tags_is_per_resource_and_only_for_oci() {
        let config = parse(
            "resources:\n- name: a\n  handler: registry.example.com/h/zigbee:1.0\n  allowTags: true\n\
             - name: b\n  handler: glob\n",
        )
        .unwrap();
        assert!(matches!(&config.resources[0].handler, HandlerRef::Oci(oci) if oci.allow_tags));
        let err = parse("resources:\n- name: a\n  handler: registry.example.com/h/zigbee:1.0\n").unwrap_err();
        assert!(err.contains("resources[0] (\"a\").handler") && err.contains("allowTags"), "{err}");
        let err = parse("resources:\n- name: a\n  handler: glob\n  allowTags: true\n").unwrap_err();
        assert!(err.contains("resources[0] (\"a\").allowTags"), "{err}");
    }
}

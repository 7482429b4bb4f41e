//! The agent's config file: which resources to advertise, which handler finds
//! each, and the handler's own config. Everything is checked up front, and an
//! error names the file, the resource and the field.
//!
//! ```yaml
//! domain: devsieve.io            # optional; resource names are DOMAIN/NAME
//! resources:
//!   - name: printer
//!     handler: udev-rule         # built-in name, builtin:NAME, or a path to a .wasm
//!     allowedRoots: [/dev]       # where device nodes, globs and mounts may point
//!     config:                    # the handler's own config
//!       udevRules: ['ATTRS{idVendor}=="1a86", ATTRS{idProduct}=="7523"']
//! ```

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::handler::builtin;
use crate::names;

/// The resource domain when the config names none. Never changes once released.
pub const DEFAULT_DOMAIN: &str = "devsieve.io";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}: {location}{message}")]
    Syntax { file: PathBuf, location: String, message: String },
    #[error("{file}: {field}: {message}")]
    Field { file: PathBuf, field: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    domain: Option<String>,
    resources: Vec<RawResource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawResource {
    name: String,
    handler: String,
    #[serde(default)]
    allowed_roots: Option<Vec<PathBuf>>,
    #[serde(default = "empty_object")]
    config: serde_json::Value,
    #[serde(default)]
    cdi: bool,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Where a resource's handler comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HandlerRef {
    Builtin(String),
    File(PathBuf),
}

impl std::fmt::Display for HandlerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerRef::Builtin(name) => write!(f, "builtin:{name}"),
            HandlerRef::File(path) => write!(f, "{}", path.display()),
        }
    }
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
}

#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub domain: String,
    pub resources: Vec<Resource>,
}

impl Config {
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file)
            .map_err(|source| ConfigError::Read { file: file.to_path_buf(), source })?;
        Config::parse(file, &text)
    }

    /// Parses `text` as the contents of `file` (which names errors and
    /// anchors relative handler paths).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let location = inner
                .location()
                .map(|l| format!("line {} column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            let field = if path == "." { String::new() } else { format!("{path}: ") };
            ConfigError::Syntax { file: file.to_path_buf(), location, message: format!("{field}{inner}") }
        })?;
        let field_error = |field: String, message: String| ConfigError::Field { file: file.to_path_buf(), field, message };

        let domain = raw.domain.unwrap_or_else(|| DEFAULT_DOMAIN.to_string());
        names::check_domain(&domain).map_err(|m| field_error("domain".into(), m))?;

        let base = file.parent().unwrap_or(Path::new("."));
        let mut seen = HashSet::new();
        let mut resources = Vec::with_capacity(raw.resources.len());
        for (index, raw) in raw.resources.into_iter().enumerate() {
            let at = |field: &str| format!("resources[{index}] ({:?}).{field}", raw.name);
            let name = names::resource_name(&domain, &raw.name).map_err(|m| field_error(at("name"), m))?;
            if !seen.insert(name.clone()) {
                return Err(field_error(at("name"), format!("{name} is configured twice; resource names must be unique")));
            }
            let handler = parse_handler_ref(base, &raw.handler).map_err(|m| field_error(at("handler"), m))?;
            let allowed_roots = match raw.allowed_roots {
                None => vec![PathBuf::from("/dev")],
                Some(roots) => roots,
            };
            for (i, root) in allowed_roots.iter().enumerate() {
                if !root.is_absolute() || root.components().any(|c| !matches!(c, Component::RootDir | Component::Normal(_))) {
                    return Err(field_error(
                        at(&format!("allowedRoots[{i}]")),
                        format!("{} must be an absolute path without `.` or `..`", root.display()),
                    ));
                }
            }
            if !raw.config.is_object() {
                return Err(field_error(at("config"), "must be a mapping of the handler's settings".into()));
            }
            resources.push(Resource {
                name,
                handler,
                allowed_roots,
                handler_config: raw.config.to_string(),
                cdi: raw.cdi,
            });
        }
        Ok(Config { file: file.to_path_buf(), domain, resources })
    }
}

fn parse_handler_ref(base: &Path, text: &str) -> Result<HandlerRef, String> {
    let builtins = || builtin::names().collect::<Vec<_>>().join(", ");
    if let Some(name) = text.strip_prefix("builtin:") {
        return match builtin::get(name) {
            Some(_) => Ok(HandlerRef::Builtin(name.to_string())),
            None => Err(format!("unknown built-in handler {name:?}; the built-ins are {}", builtins())),
        };
    }
    if builtin::get(text).is_some() {
        return Ok(HandlerRef::Builtin(text.to_string()));
    }
    if text.ends_with(".wasm") {
        let path = Path::new(text);
        return Ok(HandlerRef::File(if path.is_absolute() { path.to_path_buf() } else { base.join(path) }));
    }
    Err(format!(
        "{text:?} is neither a built-in handler ({}) nor a path to a .wasm component",
        builtins()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/devsieve/config.yaml"), text).map_err(|e| e.to_string())
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
}

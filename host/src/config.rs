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
//!
//! A handler reference is one of
//! - a built-in: `udev-rule`, `glob`, `usb-id`, or `builtin:NAME`;
//! - a file: a path ending in `.wasm` (relative to the config file), or any
//!   path starting with `/`, `./` or `../`;
//! - an OCI artifact: `REGISTRY/REPOSITORY[:TAG]@sha256:DIGEST` (the registry
//!   must be named; a reference without a digest needs `allowTags: true`);
//! - a ConfigMap key: `configmap:NAMESPACE/NAME/KEY` (read from `binaryData`).

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
    /// Lets an OCI handler reference name a tag without a digest.
    #[serde(default)]
    allow_tags: bool,
    #[serde(default = "empty_object")]
    config: serde_json::Value,
    #[serde(default)]
    cdi: bool,
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

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Where a resource's handler comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HandlerRef {
    Builtin(String),
    File(PathBuf),
    Oci(OciRef),
    ConfigMap(ConfigMapRef),
}

/// An OCI artifact holding a handler component.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OciRef {
    /// `host[:port]`, always explicit.
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`: the manifest's digest. `None` only with `allow_tags`.
    pub digest: Option<String>,
    /// The resource said `allowTags: true`: a tag alone may be resolved.
    pub allow_tags: bool,
}

impl OciRef {
    /// `registry/repository[:tag][@digest]`.
    pub fn whole(&self) -> String {
        let mut text = format!("{}/{}", self.registry, self.repository);
        if let Some(tag) = &self.tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            text.push('@');
            text.push_str(digest);
        }
        text
    }
}

/// A key of a ConfigMap's `binaryData`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

impl std::fmt::Display for HandlerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerRef::Builtin(name) => write!(f, "builtin:{name}"),
            HandlerRef::File(path) => write!(f, "{}", path.display()),
            HandlerRef::Oci(oci) => f.write_str(&oci.whole()),
            HandlerRef::ConfigMap(cm) => write!(f, "configmap:{}/{}/{}", cm.namespace, cm.name, cm.key),
        }
    }
}

impl HandlerRef {
    /// Parses a reference as the config's `handler:` field (relative paths
    /// are anchored at `base`). `allow_tags` is the resource's `allowTags`.
    pub fn parse(base: &Path, text: &str, allow_tags: bool) -> Result<HandlerRef, String> {
        parse_handler_ref(base, text, allow_tags)
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
        let text =
            std::fs::read_to_string(file).map_err(|source| ConfigError::Read { file: file.to_path_buf(), source })?;
        Config::parse(file, &text)
    }

    /// Parses `text` as the contents of `file` (which names errors and
    /// anchors relative handler paths).
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let deserializer = serde_yaml_ng::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let location =
                inner.location().map(|l| format!("line {} column {}: ", l.line(), l.column())).unwrap_or_default();
            let field = if path == "." { String::new() } else { format!("{path}: ") };
            let text = inner.to_string();
            let message = bare_yaml_message(&text);
            ConfigError::Syntax { file: file.to_path_buf(), location, message: format!("{field}{message}") }
        })?;
        let field_error =
            |field: String, message: String| ConfigError::Field { file: file.to_path_buf(), field, message };

        let domain = raw.domain.unwrap_or_else(|| DEFAULT_DOMAIN.to_string());
        names::check_domain(&domain).map_err(|m| field_error("domain".into(), m))?;

        let base = file.parent().unwrap_or(Path::new("."));
        let mut seen = HashSet::new();
        let mut resources = Vec::with_capacity(raw.resources.len());
        for (index, raw) in raw.resources.into_iter().enumerate() {
            let at = |field: &str| format!("resources[{index}] ({:?}).{field}", raw.name);
            let name = names::resource_name(&domain, &raw.name).map_err(|m| field_error(at("name"), m))?;
            if !seen.insert(name.clone()) {
                return Err(field_error(
                    at("name"),
                    format!("{name} is configured twice; resource names must be unique"),
                ));
            }
            let handler =
                parse_handler_ref(base, &raw.handler, raw.allow_tags).map_err(|m| field_error(at("handler"), m))?;
            if raw.allow_tags && !matches!(handler, HandlerRef::Oci(_)) {
                return Err(field_error(
                    at("allowTags"),
                    format!("only applies to OCI references, and handler {handler} is not one"),
                ));
            }
            let allowed_roots = match raw.allowed_roots {
                None => vec![PathBuf::from("/dev")],
                Some(roots) => roots,
            };
            for (i, root) in allowed_roots.iter().enumerate() {
                if !root.is_absolute()
                    || root.components().any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
                {
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

const REFERENCE_FORMS: &str = "a built-in handler ({builtins}), a path to a .wasm component, an OCI \
     reference REGISTRY/REPOSITORY[:TAG]@sha256:DIGEST, or configmap:NAMESPACE/NAME/KEY";

fn parse_handler_ref(base: &Path, text: &str, allow_tags: bool) -> Result<HandlerRef, String> {
    let builtins = || builtin::names().collect::<Vec<_>>().join(", ");
    let forms = || REFERENCE_FORMS.replace("{builtins}", &builtins());
    if let Some(name) = text.strip_prefix("builtin:") {
        return match builtin::get(name) {
            Some(_) => Ok(HandlerRef::Builtin(name.to_string())),
            None => Err(format!("unknown built-in handler {name:?}; the built-ins are {}", builtins())),
        };
    }
    if builtin::get(text).is_some() {
        return Ok(HandlerRef::Builtin(text.to_string()));
    }
    if let Some(rest) = text.strip_prefix("configmap:") {
        return parse_configmap_ref(rest).map(HandlerRef::ConfigMap);
    }
    let looks_like_path =
        text.ends_with(".wasm") || text.starts_with('/') || text.starts_with("./") || text.starts_with("../");
    if looks_like_path {
        let path = Path::new(text);
        return Ok(HandlerRef::File(if path.is_absolute() { path.to_path_buf() } else { base.join(path) }));
    }
    let first = text.split('/').next().unwrap_or_default();
    let names_registry = text.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if names_registry {
        return parse_oci_ref(text, allow_tags).map(HandlerRef::Oci);
    }
    if text.contains('/') && (text.contains('@') || text.contains(':')) {
        return Err(format!(
            "{text:?} looks like an OCI reference without a registry; name the registry, \
             e.g. ghcr.io/{text} or docker.io/{text}"
        ));
    }
    Err(format!("{text:?} is not a handler reference; write {}", forms()))
}

/// `REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`, as the distribution
/// reference grammar has it (parsed by hand: the OCI crates' reference regex
/// takes tens of milliseconds to build, a tenth of a warm start).
fn parse_oci_ref(text: &str, allow_tags: bool) -> Result<OciRef, String> {
    let invalid = |why: &str| format!("{text:?} is not a valid OCI reference: {why}");
    let (name_and_tag, digest) = match text.split_once('@') {
        Some((rest, digest)) => {
            let Some(hex) = digest.strip_prefix("sha256:") else {
                return Err(format!(
                    "{text:?}: only sha256 digests are supported (the agent verifies every blob with sha256)"
                ));
            };
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(format!("{text:?}: the digest must be sha256: and 64 lowercase hex digits"));
            }
            (rest, Some(digest.to_string()))
        }
        None => (text, None),
    };
    let (registry, path) = name_and_tag.split_once('/').ok_or_else(|| invalid("no repository after the registry"))?;
    let (repository, tag) = match path.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag)),
        _ => (path, None),
    };
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !host_ok || port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(invalid(&format!("registry {registry:?} is not HOST or HOST:PORT")));
    }
    // path-component: [a-z0-9]+ joined by `.`, `_`, `__` or `-`s.
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        !b.is_empty()
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter().all(|&x| alnum(x) || matches!(x, b'.' | b'_' | b'-'))
            && !c.contains("..")
            && !c.contains("___")
            && !c.contains("._")
            && !c.contains("_.")
            && !c.contains(".-")
            && !c.contains("-.")
            && !c.contains("_-")
            && !c.contains("-_")
    };
    if repository.is_empty() || repository.len() > 255 || !repository.split('/').all(component_ok) {
        return Err(invalid(&format!(
            "repository {repository:?}: lowercase letters and digits, separated by `/`, `.`, `_` or `-`"
        )));
    }
    let tag_ok = |t: &str| {
        let b = t.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
    };
    if let Some(tag) = tag.filter(|t| !tag_ok(t)) {
        return Err(invalid(&format!("tag {tag:?}: up to 128 letters, digits, `_`, `.`, `-`")));
    }
    if digest.is_none() && !allow_tags {
        return Err(format!(
            "{text:?} has no digest, so what runs could change under you; pin it as \
             {text}@sha256:<digest> (`devsieve handler inspect {text}` prints the digest) \
             or set `allowTags: true` on this resource"
        ));
    }
    Ok(OciRef {
        registry: registry.to_string(),
        repository: repository.to_string(),
        tag: match tag {
            Some(tag) => Some(tag.to_string()),
            None if digest.is_none() => Some("latest".to_string()),
            None => None,
        },
        digest,
        allow_tags,
    })
}

fn parse_configmap_ref(rest: &str) -> Result<ConfigMapRef, String> {
    let usage = "write configmap:NAMESPACE/NAME/KEY, e.g. configmap:devsieve/handlers/zigbee.wasm";
    let parts: Vec<&str> = rest.split('/').collect();
    let [namespace, name, key] = parts[..] else {
        return Err(format!("configmap:{rest} has {} parts; {usage}", parts.len()));
    };
    check_dns_label(namespace).map_err(|m| format!("configmap:{rest}: namespace {namespace:?}: {m}"))?;
    check_dns_subdomain(name).map_err(|m| format!("configmap:{rest}: name {name:?}: {m}"))?;
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !key_ok {
        return Err(format!(
            "configmap:{rest}: key {key:?} is not a valid ConfigMap key (letters, digits, `-`, `_`, `.`; at most 253)"
        ));
    }
    Ok(ConfigMapRef { namespace: namespace.into(), name: name.into(), key: key.into() })
}

/// RFC 1123 label, as Kubernetes checks namespace names.
fn check_dns_label(label: &str) -> Result<(), String> {
    let b = label.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok { Ok(()) } else { Err("must be a lowercase DNS label (letters, digits, `-`; at most 63)".into()) }
}

/// RFC 1123 subdomain, as Kubernetes checks ConfigMap names.
fn check_dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 || name.split('.').any(|label| check_dns_label(label).is_err()) {
        return Err("must be a lowercase DNS subdomain (labels of letters, digits and `-`, joined by `.`)".into());
    }
    Ok(())
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

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn handler(text: &str, allow_tags: bool) -> Result<HandlerRef, String> {
        HandlerRef::parse(Path::new("/etc/devsieve"), text, allow_tags)
    }

    #[test]
    fn oci_references() {
        let r = handler(&format!("registry.example.com/handlers/zigbee:1.2.0@{DIGEST}"), false).unwrap();
        let HandlerRef::Oci(oci) = &r else { panic!("{r:?}") };
        assert_eq!(oci.registry, "registry.example.com");
        assert_eq!(oci.repository, "handlers/zigbee");
        assert_eq!(oci.tag.as_deref(), Some("1.2.0"));
        assert_eq!(oci.digest.as_deref(), Some(DIGEST));
        assert_eq!(r.to_string(), format!("registry.example.com/handlers/zigbee:1.2.0@{DIGEST}"));
        // A digest alone; a port; localhost.
        let r = handler(&format!("127.0.0.1:5000/zigbee@{DIGEST}"), false).unwrap();
        let HandlerRef::Oci(oci) = &r else { panic!("{r:?}") };
        assert_eq!((oci.registry.as_str(), oci.tag.as_deref()), ("127.0.0.1:5000", None));
        assert!(matches!(handler(&format!("localhost/zigbee@{DIGEST}"), false), Ok(HandlerRef::Oci(_))));
        // Tags need allowTags.
        let err = handler("registry.example.com/handlers/zigbee:1.2.0", false).unwrap_err();
        assert!(err.contains("no digest") && err.contains("allowTags"), "{err}");
        let r = handler("registry.example.com/handlers/zigbee:1.2.0", true).unwrap();
        let HandlerRef::Oci(oci) = &r else { panic!("{r:?}") };
        assert_eq!((oci.tag.as_deref(), oci.digest.as_deref(), oci.allow_tags), (Some("1.2.0"), None, true));
        let r = handler("registry.example.com/handlers/zigbee", true).unwrap();
        let HandlerRef::Oci(oci) = &r else { panic!("{r:?}") };
        assert_eq!(oci.tag.as_deref(), Some("latest"));
        // Bad digests.
        let err = handler("registry.example.com/zigbee@sha256:abc", false).unwrap_err();
        assert!(err.contains("64 lowercase hex"), "{err}");
        let err = handler(
            &format!("registry.example.com/zigbee@{}", DIGEST.to_uppercase().replace("SHA256", "sha256")),
            false,
        )
        .unwrap_err();
        assert!(err.contains("lowercase") || err.contains("not a valid"), "{err}");
        let err = handler(&format!("registry.example.com/zigbee@sha512:{}", "0".repeat(128)), false).unwrap_err();
        assert!(err.contains("sha256"), "{err}");
        // The grammar: bad repositories, tags and registries.
        for (bad, says) in [
            (format!("registry.example.com/Handlers/zigbee@{DIGEST}"), "repository"),
            (format!("registry.example.com/handlers//zigbee@{DIGEST}"), "repository"),
            (format!("registry.example.com/zigbee:-1@{DIGEST}"), "tag"),
            (format!("registry.example.com:port/zigbee@{DIGEST}"), "registry"),
        ] {
            let err = handler(&bad, false).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let r = handler(&format!("ghcr.io/org/team/my_handler-x.y:v1.2_3@{DIGEST}"), false).unwrap();
        assert!(
            matches!(&r, HandlerRef::Oci(oci) if oci.repository == "org/team/my_handler-x.y" && oci.tag.as_deref() == Some("v1.2_3"))
        );
        // No registry: say so.
        let err = handler(&format!("handlers/zigbee@{DIGEST}"), false).unwrap_err();
        assert!(err.contains("without a registry"), "{err}");
    }

    #[test]
    fn configmap_references() {
        let r = handler("configmap:devsieve/handlers/zigbee.wasm", false).unwrap();
        assert_eq!(
            r,
            HandlerRef::ConfigMap(ConfigMapRef {
                namespace: "devsieve".into(),
                name: "handlers".into(),
                key: "zigbee.wasm".into()
            })
        );
        assert_eq!(r.to_string(), "configmap:devsieve/handlers/zigbee.wasm");
        for (bad, says) in [
            ("configmap:devsieve/handlers", "2 parts"),
            ("configmap:a/b/c/d", "4 parts"),
            ("configmap:Devsieve/handlers/k", "namespace"),
            ("configmap:ns/handlers_x/k", "name"),
            ("configmap:ns/handlers/a b", "key"),
            ("configmap:ns/handlers/..", "key"),
        ] {
            let err = handler(bad, false).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn file_references_and_unknown_forms() {
        assert_eq!(handler("x.wasm", false).unwrap(), HandlerRef::File("/etc/devsieve/x.wasm".into()));
        assert_eq!(handler("/opt/h/zigbee", false).unwrap(), HandlerRef::File("/opt/h/zigbee".into()));
        assert_eq!(handler("./h/zigbee", false).unwrap(), HandlerRef::File("/etc/devsieve/./h/zigbee".into()));
        let err = handler("zigbee", false).unwrap_err();
        assert!(err.contains("configmap:NAMESPACE/NAME/KEY") && err.contains("udev-rule"), "{err}");
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

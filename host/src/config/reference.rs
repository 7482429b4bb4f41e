//! Handler references: where a resource's handler comes from, as the
//! config's `handler:` field (and `devsieve handler inspect`) writes it.
//!
//! A reference is one of
//! - a built-in: `udev-rule`, `glob`, `usb-id`, or `builtin:NAME`;
//! - a file: a path ending in `.wasm` (relative to the config file), or any
//!   path starting with `/`, `./` or `../`;
//! - an OCI artifact: `REGISTRY/REPOSITORY[:TAG]@sha256:DIGEST` (the registry
//!   must be named; a reference without a digest needs `allowTags: true`);
//! - a ConfigMap key: `configmap:NAMESPACE/NAME/KEY` (read from `binaryData`).

use std::path::{Path, PathBuf};

use crate::builtin;
use crate::support::digest::sha256_hex;
use crate::support::names::{self, NameError};

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

/// A key of a ConfigMap's `binaryData`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
    pub key: String,
}

/// Why a `handler:` field is not a reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("unknown built-in handler {name:?}; the built-ins are {}", builtin_names())]
    UnknownBuiltin { name: String },
    #[error(
        "configmap:{text} has {parts} parts; write configmap:NAMESPACE/NAME/KEY, \
         e.g. configmap:devsieve/handlers/zigbee.wasm"
    )]
    ConfigMapParts { text: String, parts: usize },
    #[error("configmap:{text}: namespace {namespace:?}: {source}")]
    ConfigMapNamespace { text: String, namespace: String, source: NameError },
    #[error("configmap:{text}: name {name:?}: {source}")]
    ConfigMapName { text: String, name: String, source: NameError },
    #[error("configmap:{text}: key {key:?} is not a valid ConfigMap key (letters, digits, `-`, `_`, `.`; at most 253)")]
    ConfigMapKey { text: String, key: String },
    #[error(
        "{text:?} looks like an OCI reference without a registry; name the registry, \
         e.g. ghcr.io/{text} or docker.io/{text}"
    )]
    NoRegistry { text: String },
    #[error(
        "{text:?} is not a handler reference; write a built-in handler ({}), a path to a .wasm component, \
         an OCI reference REGISTRY/REPOSITORY[:TAG]@sha256:DIGEST, or configmap:NAMESPACE/NAME/KEY",
        builtin_names()
    )]
    Unknown { text: String },
    #[error("{text:?}: only sha256 digests are supported (the agent verifies every blob with sha256)")]
    DigestAlgorithm { text: String },
    #[error("{text:?}: the digest must be sha256: and 64 lowercase hex digits")]
    DigestFormat { text: String },
    #[error("{text:?} is not a valid OCI reference: {syntax}")]
    OciSyntax { text: String, syntax: OciSyntax },
    #[error(
        "{text:?} has no digest, so what runs could change under you; pin it as \
         {text}@sha256:<digest> (`devsieve handler inspect {text}` prints the digest) \
         or set `allowTags: true` on this resource"
    )]
    Unpinned { text: String },
}

/// Which part of an OCI reference breaks the distribution grammar.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OciSyntax {
    #[error("no repository after the registry")]
    NoRepository,
    #[error("registry {0:?} is not HOST or HOST:PORT")]
    Registry(String),
    #[error("repository {0:?}: lowercase letters and digits, separated by `/`, `.`, `_` or `-`")]
    Repository(String),
    #[error("tag {0:?}: up to 128 letters, digits, `_`, `.`, `-`")]
    Tag(String),
}

fn builtin_names() -> String {
    builtin::names().collect::<Vec<_>>().join(", ")
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

impl std::fmt::Display for HandlerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandlerRef::Builtin(name) => write!(f, "builtin:{name}"),
            HandlerRef::File(path) => write!(f, "{}", path.display()),
            HandlerRef::Oci(oci) => f.write_str(&oci.whole()),
            HandlerRef::ConfigMap(cm) => write!(f, "{cm}"),
        }
    }
}

impl std::fmt::Display for ConfigMapRef {
    /// `configmap:NAMESPACE/NAME/KEY`, as a config writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "configmap:{}/{}/{}", self.namespace, self.name, self.key)
    }
}

impl ConfigMapRef {
    /// `NAMESPACE/NAME`: the ConfigMap itself.
    pub fn object(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl HandlerRef {
    /// Parses a reference as the config's `handler:` field (relative paths
    /// are anchored at `base`). `allow_tags` is the resource's `allowTags`.
    pub fn parse(base: &Path, text: &str, allow_tags: bool) -> Result<HandlerRef, ReferenceError> {
        if let Some(name) = text.strip_prefix("builtin:") {
            return match builtin::get(name) {
                Some(_) => Ok(HandlerRef::Builtin(name.to_string())),
                None => Err(ReferenceError::UnknownBuiltin { name: name.into() }),
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
            return Err(ReferenceError::NoRegistry { text: text.into() });
        }
        Err(ReferenceError::Unknown { text: text.into() })
    }
}

/// `REGISTRY/REPOSITORY[:TAG][@sha256:DIGEST]`, as the distribution
/// reference grammar has it (parsed by hand: the OCI crates' reference regex
/// takes tens of milliseconds to build, a tenth of a warm start).
fn parse_oci_ref(text: &str, allow_tags: bool) -> Result<OciRef, ReferenceError> {
    let invalid = |syntax: OciSyntax| ReferenceError::OciSyntax { text: text.into(), syntax };
    let (name_and_tag, digest) = match text.split_once('@') {
        Some((rest, digest)) => {
            if !digest.starts_with("sha256:") {
                return Err(ReferenceError::DigestAlgorithm { text: text.into() });
            }
            if sha256_hex(digest).is_none() {
                return Err(ReferenceError::DigestFormat { text: text.into() });
            }
            (rest, Some(digest.to_string()))
        }
        None => (text, None),
    };
    let (registry, path) = name_and_tag.split_once('/').ok_or_else(|| invalid(OciSyntax::NoRepository))?;
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
        return Err(invalid(OciSyntax::Registry(registry.into())));
    }
    // path-component: [a-z0-9]+ joined by `.`, `_`, `__` or `-`s.
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        !b.is_empty()
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter().all(|&x| alnum(x) || matches!(x, b'.' | b'_' | b'-'))
            && !["..", "___", "._", "_.", ".-", "-.", "_-", "-_"].iter().any(|bad| c.contains(bad))
    };
    if repository.is_empty() || repository.len() > 255 || !repository.split('/').all(component_ok) {
        return Err(invalid(OciSyntax::Repository(repository.into())));
    }
    let tag_ok = |t: &str| {
        let b = t.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
    };
    if let Some(tag) = tag.filter(|t| !tag_ok(t)) {
        return Err(invalid(OciSyntax::Tag(tag.into())));
    }
    if digest.is_none() && !allow_tags {
        return Err(ReferenceError::Unpinned { text: text.into() });
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

fn parse_configmap_ref(text: &str) -> Result<ConfigMapRef, ReferenceError> {
    let parts: Vec<&str> = text.split('/').collect();
    let [namespace, name, key] = parts[..] else {
        return Err(ReferenceError::ConfigMapParts { text: text.into(), parts: parts.len() });
    };
    names::check_dns_label(namespace).map_err(|source| ReferenceError::ConfigMapNamespace {
        text: text.into(),
        namespace: namespace.into(),
        source,
    })?;
    names::check_dns_subdomain(name).map_err(|source| ReferenceError::ConfigMapName {
        text: text.into(),
        name: name.into(),
        source,
    })?;
    let key_ok = !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !key_ok {
        return Err(ReferenceError::ConfigMapKey { text: text.into(), key: key.into() });
    }
    Ok(ConfigMapRef { namespace: namespace.into(), name: name.into(), key: key.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn handler(text: &str, allow_tags: bool) -> Result<HandlerRef, String> {
        HandlerRef::parse(Path::new("/etc/devsieve"), text, allow_tags).map_err(|e| e.to_string())
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
}

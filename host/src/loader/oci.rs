//! Handlers from OCI registries, in the layout the WebAssembly ecosystem's
//! tools push (`wkg oci push`, `oras push`): one OCI image manifest whose
//! config is `application/vnd.wasm.config.v0+json` and whose single layer is
//! the component (`application/wasm`, or the older
//! `application/vnd.wasm.content.layer.v1+wasm`).
//!
//! The registry is not trusted: the manifest is checked against the
//! reference's digest and the layer against the manifest's, by this code,
//! and sizes are capped while bytes arrive.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{Failure, HandlerBytes, Inner, LoadError, with_retries};
use crate::config::OciRef;
use crate::support::digest::{sha256_digest, sha256_hex};
use crate::support::error_chain;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The config `wkg oci push` writes, and the artifact type for `oras push --artifact-type`.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The empty config `oras push --artifact-type …` writes (OCI 1.1 artifacts).
const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Layer types that hold a component: the CNCF type first, then the older one.
pub const WASM_LAYER_MEDIA_TYPES: [&str; 2] = ["application/wasm", "application/vnd.wasm.content.layer.v1+wasm"];
/// A manifest larger than this is not a handler's.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The OCI client and the credentials, made on the first OCI fetch.
pub(super) struct OciClient {
    client: Client,
    credentials: HashMap<String, (String, String)>,
}

impl OciClient {
    pub(super) fn new(options: &super::LoaderOptions) -> Result<OciClient, LoadError> {
        let credentials = match &options.registry_auth_file {
            Some(path) => read_docker_config(path)?,
            None => HashMap::new(),
        };
        let protocol = if options.insecure_registries.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(options.insecure_registries.clone())
        };
        let config = ClientConfig {
            protocol,
            read_timeout: Some(options.timeout),
            connect_timeout: Some(options.timeout),
            max_concurrent_download: 1,
            ..Default::default()
        };
        let client = Client::try_from(config).map_err(|e| LoadError::Registry {
            reference: "(all OCI references)".into(),
            attempts: 0,
            detail: format!("cannot create the OCI client: {}", error_chain(&e)),
        })?;
        Ok(OciClient { client, credentials })
    }

    fn auth_for(&self, registry: &str) -> RegistryAuth {
        match self.credentials.get(&normalize_registry(registry)) {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// The registry part of a Docker config key: `https://index.docker.io/v1/` → `docker.io`.
fn normalize_registry(key: &str) -> String {
    let host = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        other => other.to_string(),
    }
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Why a Docker config gives no credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsProblem {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("must be a JSON object with `auths`")]
    NotAnObject,
    #[error("has no `auths` map")]
    NoAuths,
    #[error("`auths`: {0}")]
    Auths(String),
    #[error("auths[{0:?}].auth: not base64: {1}")]
    NotBase64(String, String),
    #[error("auths[{0:?}].auth: not UTF-8 once decoded")]
    NotUtf8(String),
    #[error("auths[{0:?}].auth: must encode `user:password`")]
    NoPassword(String),
    #[error("auths[{0:?}]: needs `auth` or `username` and `password`")]
    NoSecret(String),
}

/// Credentials from a Docker config (`{"auths": {...}}`, as in
/// `~/.docker/config.json` and a `kubernetes.io/dockerconfigjson` Secret's
/// `.dockerconfigjson`) or the older `.dockercfg` (the `auths` map alone).
pub(super) fn read_docker_config(path: &Path) -> Result<HashMap<String, (String, String)>, LoadError> {
    let fail = |problem| LoadError::Credentials { path: path.to_path_buf(), problem };
    let text = std::fs::read_to_string(path).map_err(|e| fail(CredentialsProblem::Read(e.to_string())))?;
    parse_docker_config(&text).map_err(fail)
}

/// The `(user, password)` per registry of a Docker config's text.
pub fn parse_docker_config(text: &str) -> Result<HashMap<String, (String, String)>, CredentialsProblem> {
    use CredentialsProblem::*;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| NotJson(e.to_string()))?;
    let object = value.as_object().ok_or(NotAnObject)?;
    for helper in ["credsStore", "credHelpers"] {
        if object.contains_key(helper) {
            tracing::warn!(
                "registry credentials: `{helper}` is not supported (the agent runs no helper programs); use `auths`"
            );
        }
    }
    let auths = match object.get("auths") {
        Some(auths) => auths.clone(),
        None if object.values().all(|v| v.get("auth").is_some() || v.get("username").is_some()) => value.clone(),
        None => return Err(NoAuths),
    };
    let auths: HashMap<String, DockerAuth> = serde_json::from_value(auths).map_err(|e| Auths(e.to_string()))?;
    let mut credentials = HashMap::new();
    for (registry, entry) in auths {
        let pair = match (&entry.username, &entry.password, &entry.auth) {
            (Some(user), Some(password), _) if !user.is_empty() => (user.clone(), password.clone()),
            (_, _, Some(auth)) if !auth.is_empty() => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| NotBase64(registry.clone(), e.to_string()))?;
                let decoded = String::from_utf8(decoded).map_err(|_| NotUtf8(registry.clone()))?;
                let (user, password) = decoded.split_once(':').ok_or_else(|| NoPassword(registry.clone()))?;
                (user.to_string(), password.to_string())
            }
            _ if entry.identitytoken.is_some() => {
                tracing::warn!(registry, "registry credentials: identity tokens are not supported; skipping");
                continue;
            }
            _ => return Err(NoSecret(registry)),
        };
        credentials.insert(normalize_registry(&registry), pair);
    }
    Ok(credentials)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
}

/// Why an artifact is not a handler's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactProblem {
    #[error("no such built-in handler")]
    NoSuchBuiltin,
    #[error("its manifest is {0} bytes; a handler's is a few hundred")]
    ManifestSize(usize),
    #[error("the manifest is not valid: {0}")]
    ManifestSyntax(String),
    #[error(
        "it is an image index (several manifests), not a handler artifact; reference the \
         artifact's own manifest digest"
    )]
    Index,
    #[error("manifest media type {0}; expected {MANIFEST_MEDIA_TYPE}")]
    ManifestType(String),
    #[error("the manifest has no config")]
    NoConfig,
    #[error(
        "config media type {config} (artifact type {artifact}); a handler has config {WASM_CONFIG_MEDIA_TYPE}, as \
         `wkg oci push` and `oras push --artifact-type {WASM_CONFIG_MEDIA_TYPE}` write it — this looks \
         like a container image or another kind of artifact"
    )]
    NotWasm { config: String, artifact: String },
    #[error("{} layers ({}); a handler artifact has exactly one, the component", .0.len(), .0.join(", "))]
    LayerCount(Vec<String>),
    #[error("layer media type {0}; expected {expected}", expected = WASM_LAYER_MEDIA_TYPES.join(" or "))]
    LayerType(String),
    #[error("the layer's digest {0} is not a sha256 digest (or its size is negative)")]
    LayerDigest(String),
}

/// The component layer of a handler artifact's manifest, or why it is not one.
pub fn component_layer(manifest: &[u8]) -> Result<Descriptor, ArtifactProblem> {
    let manifest: Manifest =
        serde_json::from_slice(manifest).map_err(|e| ArtifactProblem::ManifestSyntax(e.to_string()))?;
    let media_type = manifest.media_type.as_deref();
    if manifest.manifests.is_some() || matches!(media_type, Some(INDEX_MEDIA_TYPE | DOCKER_LIST_MEDIA_TYPE)) {
        return Err(ArtifactProblem::Index);
    }
    if let Some(other) = media_type.filter(|t| *t != MANIFEST_MEDIA_TYPE) {
        return Err(ArtifactProblem::ManifestType(other.into()));
    }
    let config = manifest.config.ok_or(ArtifactProblem::NoConfig)?;
    let wasm_config = config.media_type == WASM_CONFIG_MEDIA_TYPE
        || (config.media_type == EMPTY_CONFIG_MEDIA_TYPE
            && manifest.artifact_type.as_deref() == Some(WASM_CONFIG_MEDIA_TYPE));
    if !wasm_config {
        return Err(ArtifactProblem::NotWasm {
            config: config.media_type,
            artifact: manifest.artifact_type.unwrap_or_else(|| "none".into()),
        });
    }
    let [layer] = &manifest.layers[..] else {
        return Err(ArtifactProblem::LayerCount(manifest.layers.iter().map(|l| l.media_type.clone()).collect()));
    };
    if !WASM_LAYER_MEDIA_TYPES.contains(&layer.media_type.as_str()) {
        return Err(ArtifactProblem::LayerType(layer.media_type.clone()));
    }
    if sha256_hex(&layer.digest).is_none() || layer.size < 0 {
        return Err(ArtifactProblem::LayerDigest(layer.digest.clone()));
    }
    Ok(layer.clone())
}

pub(super) async fn fetch(inner: &Inner, oci: &OciRef) -> Result<HandlerBytes, LoadError> {
    let whole = oci.whole();
    if let Some(found) = oci.digest.as_deref().and_then(|digest| from_cache(inner, oci, &whole, digest)) {
        tracing::info!(handler = %whole, layer = %found.digest, "using the blob cache; the registry was not contacted");
        return Ok(found);
    }
    let registry = match inner.oci.get_or_init(|| OciClient::new(&inner.options)) {
        Ok(registry) => registry,
        Err(LoadError::Credentials { path, problem }) => {
            return Err(LoadError::Credentials { path: path.clone(), problem: problem.clone() });
        }
        Err(other) => {
            return Err(LoadError::Registry { reference: whole, attempts: 0, detail: other.to_string() });
        }
    };
    match pull(inner, registry, oci, &whole).await {
        Ok(found) => Ok(found),
        Err(error @ (LoadError::Timeout { .. } | LoadError::Registry { .. })) if oci.digest.is_none() => {
            let cached = inner
                .blobs
                .as_ref()
                .and_then(|blobs| blobs.recall(&whole))
                .and_then(|digest| from_cache(inner, oci, &whole, &digest).map(|found| (digest, found)));
            match cached {
                Some((digest, found)) => {
                    tracing::warn!(handler = %whole, %digest, %error,
                        "registry unreachable; using the blob cache's copy of the digest this tag last resolved to");
                    Ok(found)
                }
                None => Err(error),
            }
        }
        Err(error) => Err(error),
    }
}

/// The handler behind manifest `digest`, if the blob cache holds the
/// manifest and its layer (both verified as they are read).
fn from_cache(inner: &Inner, oci: &OciRef, whole: &str, digest: &str) -> Option<HandlerBytes> {
    let blobs = inner.blobs.as_ref()?;
    let manifest = blobs.get(digest, MAX_MANIFEST_BYTES)?;
    let layer = match component_layer(&manifest) {
        Ok(layer) => layer,
        Err(problem) => {
            tracing::warn!(handler = whole, %problem, "ignoring a cached manifest");
            return None;
        }
    };
    let bytes = blobs.get(&layer.digest, inner.options.max_module_bytes)?;
    Some(HandlerBytes {
        bytes: bytes.into(),
        origin: format!("{whole} (manifest {digest}, from the blob cache)"),
        digest: layer.digest,
        pinned: Some(pinned(oci, digest)),
    })
}

async fn pull(inner: &Inner, registry: &OciClient, oci: &OciRef, whole: &str) -> Result<HandlerBytes, LoadError> {
    let options = &inner.options;
    let cap = options.max_module_bytes;
    let reference = match (&oci.digest, &oci.tag) {
        (Some(digest), _) => Reference::with_digest(oci.registry.clone(), oci.repository.clone(), digest.clone()),
        (None, tag) => Reference::with_tag(
            oci.registry.clone(),
            oci.repository.clone(),
            tag.clone().unwrap_or_else(|| "latest".into()),
        ),
    };
    let auth = registry.auth_for(&oci.registry);
    let finish = |failure: Failure| match failure {
        Failure::Permanent(error) => error,
        Failure::Timeout => LoadError::Timeout {
            reference: whole.to_string(),
            registry: oci.registry.clone(),
            timeout: options.timeout,
            attempts: options.attempts.max(1),
        },
        Failure::Transient(detail) => {
            LoadError::Registry { reference: whole.to_string(), attempts: options.attempts.max(1), detail }
        }
    };

    // The manifest, checked against the reference's digest.
    let accept = [MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE];
    let manifest = with_retries(options, whole, || async {
        let (body, _) = registry
            .client
            .pull_manifest_raw(&reference, &auth, &accept)
            .await
            .map_err(|e| classify(whole, "manifest", e))?;
        Ok(body)
    })
    .await
    .map_err(finish)?;
    if manifest.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(LoadError::Artifact {
            reference: whole.into(),
            problem: ArtifactProblem::ManifestSize(manifest.len()),
        });
    }
    let manifest_digest = sha256_digest(&manifest);
    match &oci.digest {
        Some(expected) if *expected != manifest_digest => {
            return Err(LoadError::DigestMismatch {
                reference: whole.into(),
                what: "manifest",
                expected: expected.clone(),
                actual: manifest_digest,
            });
        }
        Some(_) => {}
        None => tracing::warn!(
            handler = whole,
            digest = %manifest_digest,
            "tag resolved (allowTags); pin the reference as …@{manifest_digest} to run exactly this",
        ),
    }
    let layer =
        component_layer(&manifest).map_err(|problem| LoadError::Artifact { reference: whole.into(), problem })?;
    if layer.size as u64 > cap {
        return Err(LoadError::TooLarge {
            origin: format!("{whole} (layer {})", layer.digest),
            size: layer.size as u64,
            cap,
        });
    }

    let blobs = inner.blobs.as_ref();
    let cached_layer = blobs.and_then(|b| b.get(&layer.digest, cap));
    let from_cache = cached_layer.is_some();
    let bytes = match cached_layer {
        Some(bytes) => bytes,
        None => with_retries(options, whole, || pull_layer(registry, &reference, whole, &layer, cap))
            .await
            .map_err(finish)?,
    };
    if let Some(blobs) = blobs {
        blobs.put(&manifest_digest, &manifest);
        if !from_cache {
            blobs.put(&layer.digest, &bytes);
        }
        if oci.digest.is_none() {
            blobs.remember(whole, &manifest_digest);
        }
    }
    tracing::info!(handler = whole, manifest = %manifest_digest, layer = %layer.digest, size = bytes.len(), "pulled from the registry");
    Ok(HandlerBytes {
        bytes: bytes.into(),
        origin: format!("{}/{}@{manifest_digest} (from the registry)", oci.registry, oci.repository),
        digest: layer.digest,
        pinned: Some(pinned(oci, &manifest_digest)),
    })
}

/// `oci` pinned by `digest`, keeping its tag for readers.
fn pinned(oci: &OciRef, digest: &str) -> String {
    OciRef { digest: Some(digest.to_string()), ..oci.clone() }.whole()
}

/// One try at the layer: streamed, capped, hashed here.
async fn pull_layer(
    registry: &OciClient,
    reference: &Reference,
    whole: &str,
    layer: &Descriptor,
    cap: u64,
) -> Result<Vec<u8>, Failure> {
    let descriptor = OciDescriptor {
        media_type: layer.media_type.clone(),
        digest: layer.digest.clone(),
        size: layer.size,
        ..Default::default()
    };
    let mut stream =
        registry.client.pull_blob_stream(reference, &descriptor).await.map_err(|e| classify(whole, "layer", e))?;
    let too_large = |size: u64| {
        Failure::Permanent(LoadError::TooLarge { origin: format!("{whole} (layer {})", layer.digest), size, cap })
    };
    if let Some(length) = stream.content_length.filter(|&l| l > cap) {
        return Err(too_large(length));
    }
    let mut bytes = Vec::with_capacity(layer.size.clamp(0, cap as i64) as usize);
    let mut hasher = Sha256::new();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                if (bytes.len() + chunk.len()) as u64 > cap {
                    return Err(too_large((bytes.len() + chunk.len()) as u64));
                }
                hasher.update(&chunk);
                bytes.extend_from_slice(&chunk);
            }
            // The client's own check fired at the end: ours below says more.
            Err(error) if error.get_ref().is_some_and(|e| e.is::<DigestError>()) => break,
            Err(error) => return Err(Failure::Transient(format!("reading the layer: {}", error_chain(&error)))),
        }
    }
    let actual = format!("sha256:{:x}", hasher.finalize());
    if actual != layer.digest {
        return Err(Failure::Permanent(LoadError::DigestMismatch {
            reference: whole.into(),
            what: "layer",
            expected: layer.digest.clone(),
            actual,
        }));
    }
    Ok(bytes)
}

/// Whether an OCI client error is worth retrying, as a [`Failure`].
fn classify(whole: &str, what: &'static str, error: OciDistributionError) -> Failure {
    let reference = whole.to_string();
    let detail = error_chain(&error);
    match error {
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            Failure::Permanent(LoadError::DigestMismatch { reference, what, expected, actual })
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Failure::Permanent(LoadError::NotFound { reference, detail: envelope.to_string() })
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                Failure::Permanent(LoadError::Denied { reference, detail: envelope.to_string() })
            } else if codes.iter().any(|c| matches!(c, OciErrorCode::Toomanyrequests)) {
                Failure::Transient(detail)
            } else {
                Failure::Permanent(LoadError::Registry { reference, attempts: 1, detail })
            }
        }
        OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
            Failure::Permanent(LoadError::Denied { reference, detail })
        }
        OciDistributionError::ImageManifestNotFoundError(_) => {
            Failure::Permanent(LoadError::NotFound { reference, detail })
        }
        OciDistributionError::ServerError { code, .. } => match code {
            404 => Failure::Permanent(LoadError::NotFound { reference, detail }),
            401 | 403 => Failure::Permanent(LoadError::Denied { reference, detail }),
            429 | 500.. => Failure::Transient(detail),
            _ => Failure::Permanent(LoadError::Registry { reference, attempts: 1, detail }),
        },
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => Failure::Transient(detail),
        _ => Failure::Permanent(LoadError::Registry { reference, attempts: 1, detail }),
    }
}

/// The default Docker config, if there is one: `$DOCKER_CONFIG/config.json`
/// or `~/.docker/config.json`.
pub fn default_docker_config() -> Option<PathBuf> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))?;
    let file = dir.join("config.json");
    file.is_file().then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str, artifact: Option<&str>, layers: &[&str]) -> Vec<u8> {
        let layers: Vec<serde_json::Value> = layers
            .iter()
            .map(|t| serde_json::json!({"mediaType": t, "digest": sha256_digest(t.as_bytes()), "size": 10}))
            .collect();
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": config, "digest": sha256_digest(b"{}"), "size": 2},
            "layers": layers,
        });
        if let Some(artifact) = artifact {
            m["artifactType"] = artifact.into();
        }
        serde_json::to_vec(&m).unwrap()
    }

    #[test]
    fn the_wasm_artifact_layouts_are_accepted() {
        for layer in WASM_LAYER_MEDIA_TYPES {
            let found = component_layer(&manifest(WASM_CONFIG_MEDIA_TYPE, None, &[layer])).unwrap();
            assert_eq!(found.media_type, layer);
        }
        // oras push --artifact-type application/vnd.wasm.config.v0+json
        let oras = manifest(EMPTY_CONFIG_MEDIA_TYPE, Some(WASM_CONFIG_MEDIA_TYPE), &["application/wasm"]);
        let found = component_layer(&oras).unwrap();
        assert_eq!(found.media_type, "application/wasm");
        assert_eq!(found.digest, sha256_digest(b"application/wasm"));
    }

    #[test]
    fn other_layouts_are_refused_with_what_was_found() {
        let image = manifest(
            "application/vnd.oci.image.config.v1+json",
            None,
            &["application/vnd.oci.image.layer.v1.tar+gzip"],
        );
        let err = component_layer(&image).unwrap_err().to_string();
        assert!(err.contains("application/vnd.oci.image.config.v1+json") && err.contains("container image"), "{err}");
        let err = component_layer(&manifest(WASM_CONFIG_MEDIA_TYPE, None, &["application/octet-stream"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("layer media type application/octet-stream"), "{err}");
        let err = component_layer(&manifest(WASM_CONFIG_MEDIA_TYPE, None, &["application/wasm", "application/wasm"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 layers"), "{err}");
        let err = component_layer(&manifest(WASM_CONFIG_MEDIA_TYPE, None, &[])).unwrap_err().to_string();
        assert!(err.contains("0 layers"), "{err}");
        let err =
            component_layer(&manifest(EMPTY_CONFIG_MEDIA_TYPE, None, &["application/wasm"])).unwrap_err().to_string();
        assert!(err.contains("config media type"), "{err}");
        let index = serde_json::to_vec(
            &serde_json::json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}),
        )
        .unwrap();
        assert!(component_layer(&index).unwrap_err().to_string().contains("image index"));
        assert!(component_layer(b"not json").unwrap_err().to_string().contains("not valid"));
    }

    #[test]
    fn docker_configs() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("robot:s3cret");
        let text = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{b64}"}},
                "registry.example.com:5000": {{"username": "u", "password": "p"}}}},
                "credsStore": "desktop"}}"#
        );
        let creds = parse_docker_config(&text).unwrap();
        assert_eq!(creds["docker.io"], ("robot".to_string(), "s3cret".to_string()));
        assert_eq!(creds["registry.example.com:5000"], ("u".to_string(), "p".to_string()));
        // The older .dockercfg form: the map alone.
        let creds = parse_docker_config(&format!(r#"{{"ghcr.io": {{"auth": "{b64}"}}}}"#)).unwrap();
        assert_eq!(creds["ghcr.io"].0, "robot");
        for (bad, says) in [
            ("[]", "object"),
            (r#"{"auths": {"r": {"auth": "!!"}}}"#, "base64"),
            (
                &format!(
                    r#"{{"auths": {{"r": {{"auth": "{}"}}}}}}"#,
                    base64::engine::general_purpose::STANDARD.encode("nocolon")
                ),
                "user:password",
            ),
            (r#"{"auths": {"r": {}}}"#, "needs `auth`"),
            (r#"{"other": 1}"#, "no `auths`"),
        ] {
            let err = parse_docker_config(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn registry_names_normalize() {
        assert_eq!(normalize_registry("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_registry("http://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(normalize_registry("ghcr.io"), "ghcr.io");
    }
}

//! The handler loader: turns a [`HandlerRef`] into the bytes of a component,
//! wherever it lives — built in, a file, an OCI registry, a ConfigMap — and
//! tells the agent when a reference that can change (a ConfigMap) changed.
//!
//! ```ignore
//! let loader = Loader::new(LoaderOptions { blob_cache_dir: Some(dir), ..Default::default() });
//! let bytes = loader.fetch(&resource.handler).await?;          // HandlerBytes
//! // Handler calls (load, needs, select, group) block: run them off the async
//! // threads (spawn_blocking or a plain thread), never inside an async task —
//! // wasmtime-wasi's sync bindings `block_on` and panic there.
//! let handler = runtime.load(&resource.handler.to_string(), &bytes.bytes, &bytes.digest)?;
//! if let Some(mut updates) = loader.watch(&resource.handler) {  // ConfigMaps only
//!     while updates.changed().await.is_ok() {
//!         match &*updates.borrow_and_update() {
//!             Ok(new) if new.digest != bytes.digest => { /* load `new`, swap */ }
//!             Ok(_) => {}                                        // same bytes
//!             Err(message) => { /* keep the last good handler, report */ }
//!         }
//!     }
//! }
//! ```
//!
//! What the loader guarantees:
//! - Every blob it hands out was verified by sha256 here (an OCI manifest
//!   against the reference's digest, a layer against the manifest's), whatever
//!   the registry said, and is no larger than [`LoaderOptions::max_module_bytes`].
//! - Blobs are kept in a content-addressed cache ([`blobs`]), verified again
//!   when read; a reference pinned by digest that is cached is served without
//!   contacting the registry, so the agent starts when the registry is down.
//! - No Kubernetes client is created unless a ConfigMap reference is fetched
//!   or watched; the OCI client is created on the first OCI fetch.
//! - Network calls are bounded: every attempt by [`LoaderOptions::timeout`],
//!   retried [`LoaderOptions::attempts`] times with exponential backoff.

mod blobs;
mod configmap;
mod oci;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::builtin;
use crate::config::{ConfigMapRef, HandlerRef};
use crate::support::backoff::Backoff;
use crate::support::digest::sha256_digest;
use crate::support::error_chain;
use blobs::BlobCache;
pub use configmap::ConfigMapProblem;
pub use oci::{ArtifactProblem, CredentialsProblem, default_docker_config};
/// What the loader takes of an OCI manifest and a Docker config file; public
/// for the fuzz targets (`fuzz/`), which feed them any bytes.
pub use oci::{component_layer, parse_docker_config};

/// A handler component and where it came from.
#[derive(Clone, Debug)]
pub struct HandlerBytes {
    /// A built-in's are borrowed from the binary, not copied.
    pub bytes: Bytes,
    /// `sha256:<hex>` of `bytes` (verified).
    pub digest: String,
    /// Where the bytes came from, for logs and `handler inspect`, e.g.
    /// `registry.example.com/h/zigbee@sha256:… (from the registry)`.
    pub origin: String,
    /// For an OCI reference: the reference pinned by its manifest digest
    /// (`registry/repository:tag@sha256:…`), what a config should say.
    pub pinned: Option<String>,
}

/// One item of [`Loader::watch`]: the handler as it now is, or why it is
/// unusable (deleted, key missing, too large, …). On an error the agent
/// keeps the last good handler.
pub type WatchItem = Result<HandlerBytes, Arc<LoadError>>;

/// Why a Kubernetes client could not be created.
pub type KubeClientError = Box<dyn std::error::Error + Send + Sync>;

/// Creates the Kubernetes client, once, the first time a ConfigMap
/// reference needs it.
pub type KubeClientFactory =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<kube::Client, KubeClientError>> + Send>> + Send + Sync>;

/// The default factory: in-cluster service account, else `$KUBECONFIG` / `~/.kube/config`.
pub fn default_kube_client() -> KubeClientFactory {
    Arc::new(|| Box::pin(async { Ok(kube::Client::try_default().await?) }))
}

/// The default cap on a handler component's size.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 16 << 20;

#[derive(Clone)]
pub struct LoaderOptions {
    /// Where verified blobs are kept across restarts (none: no cache).
    pub blob_cache_dir: Option<PathBuf>,
    /// The largest component accepted, from any source.
    pub max_module_bytes: u64,
    /// The longest one network attempt (connect, request, body) may take.
    pub timeout: Duration,
    /// Tries per fetch (at least 1); waits `backoff`, 2×`backoff`, … between them.
    pub attempts: u32,
    pub backoff: Duration,
    /// Registries (`HOST:PORT` as written in references) spoken to over plain http.
    pub insecure_registries: Vec<String>,
    /// A Docker config file (`~/.docker/config.json`, or a mounted
    /// `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`).
    pub registry_auth_file: Option<PathBuf>,
    /// How to create the Kubernetes client, if a ConfigMap reference needs one.
    pub kube_client: KubeClientFactory,
}

impl std::fmt::Debug for LoaderOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderOptions")
            .field("blob_cache_dir", &self.blob_cache_dir)
            .field("max_module_bytes", &self.max_module_bytes)
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .field("insecure_registries", &self.insecure_registries)
            .field("registry_auth_file", &self.registry_auth_file)
            .finish_non_exhaustive()
    }
}

impl Default for LoaderOptions {
    fn default() -> Self {
        LoaderOptions {
            blob_cache_dir: None,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            timeout: Duration::from_secs(20),
            attempts: 3,
            backoff: Duration::from_millis(500),
            insecure_registries: Vec::new(),
            registry_auth_file: None,
            kube_client: default_kube_client(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read handler file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error(
        "{origin} is {size} bytes, more than the {cap}-byte cap on handler modules \
         (raise --max-handler-mib if this handler is meant to be that large)"
    )]
    TooLarge { origin: String, size: u64, cap: u64 },
    #[error(
        "{reference}: the {what} has digest {actual}, not {expected}: the registry served something else \
         than what the reference pins (tampered, corrupt, or the wrong digest); nothing was loaded"
    )]
    DigestMismatch { reference: String, what: &'static str, expected: String, actual: String },
    #[error("{reference}: not found in the registry: {detail}")]
    NotFound { reference: String, detail: String },
    #[error("{reference}: not a WebAssembly handler artifact: {problem}")]
    Artifact { reference: String, problem: ArtifactProblem },
    #[error("{reference}: the registry refused access: {detail} (check the credentials in --registry-auth-file)")]
    Denied { reference: String, detail: String },
    #[error("{reference}: the registry did not answer within {timeout:?} ({attempts} attempts); is {registry} up?")]
    Timeout { reference: String, registry: String, timeout: Duration, attempts: u32 },
    #[error("{reference}: cannot fetch from the registry ({attempts} attempts): {detail}")]
    Registry { reference: String, attempts: u32, detail: String },
    #[error("registry credentials {}: {problem}", .path.display())]
    Credentials { path: PathBuf, problem: CredentialsProblem },
    #[error("{reference}: cannot create a Kubernetes client: {}", error_chain(.source.as_ref()))]
    KubeClient { reference: String, source: KubeClientError },
    #[error("{reference}: {problem}")]
    ConfigMap { reference: String, problem: ConfigMapProblem },
    #[error("{reference}: not read yet")]
    NotReadYet { reference: String },
    #[error("{reference}: cannot watch: Loader::watch was called outside a tokio runtime")]
    NoRuntime { reference: String },
    #[error("blob cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

/// The agent's handler loader. Cheap to clone; clones share caches and clients.
#[derive(Clone)]
pub struct Loader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").field("options", &self.inner.options).finish_non_exhaustive()
    }
}

struct Inner {
    options: LoaderOptions,
    blobs: Option<BlobCache>,
    oci: OnceLock<Result<oci::OciClient, LoadError>>,
    kube: tokio::sync::OnceCell<kube::Client>,
    watches: Mutex<HashMap<ConfigMapRef, watch::Sender<WatchItem>>>,
}

impl Loader {
    /// Creates no client and touches no network; opens the blob cache (an
    /// unusable cache directory is logged and the loader runs without one).
    pub fn new(options: LoaderOptions) -> Loader {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let blobs = options.blob_cache_dir.as_deref().and_then(|dir| match BlobCache::open(dir) {
            Ok(cache) => Some(cache),
            Err(error) => {
                tracing::warn!(%error, "handler blobs will not be cached");
                None
            }
        });
        Loader {
            inner: Arc::new(Inner {
                options,
                blobs,
                oci: OnceLock::new(),
                kube: tokio::sync::OnceCell::new(),
                watches: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The component `reference` names, verified and within the size cap.
    pub async fn fetch(&self, reference: &HandlerRef) -> Result<HandlerBytes, LoadError> {
        let cap = self.inner.options.max_module_bytes;
        match reference {
            HandlerRef::Builtin(name) => {
                let builtin = builtin::get(name).ok_or_else(|| LoadError::Artifact {
                    reference: reference.to_string(),
                    problem: ArtifactProblem::NoSuchBuiltin,
                })?;
                Ok(HandlerBytes {
                    digest: builtin.digest.to_string(),
                    bytes: Bytes::from_static(builtin.bytes),
                    origin: "built in".into(),
                    pinned: None,
                })
            }
            HandlerRef::File(path) => {
                let file_error = |source| LoadError::File { path: path.clone(), source };
                let size = std::fs::metadata(path).map_err(file_error)?.len();
                check_size(&path.display().to_string(), size, cap)?;
                let bytes = std::fs::read(path).map_err(file_error)?;
                check_size(&path.display().to_string(), bytes.len() as u64, cap)?;
                Ok(HandlerBytes {
                    digest: sha256_digest(&bytes),
                    bytes: bytes.into(),
                    origin: format!("file {}", path.display()),
                    pinned: None,
                })
            }
            HandlerRef::Oci(oci) => oci::fetch(&self.inner, oci).await,
            HandlerRef::ConfigMap(cm) => configmap::fetch(&self.inner, cm).await,
        }
    }

    /// Updates of a reference that can change while the agent runs: a
    /// ConfigMap key (watched through the API). `None` for the others:
    /// built-ins and OCI references pinned by digest cannot change, and file
    /// references are watched by the file watcher.
    ///
    /// The receiver's first value is a placeholder; every later value is the
    /// ConfigMap's state (the first one as soon as it is read, then one per
    /// change of the bytes or of the error). Must be called within a tokio
    /// runtime. One watch per ConfigMap key, shared by every caller; it ends
    /// when every receiver is dropped.
    pub fn watch(&self, reference: &HandlerRef) -> Option<watch::Receiver<WatchItem>> {
        let HandlerRef::ConfigMap(cm) = reference else { return None };
        let mut watches = self.inner.watches.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // The map holds senders only, so a watch ends with its last receiver;
        // one without receivers is (being) stopped and is started again.
        if let Some(sender) = watches.get(cm).filter(|sender| !sender.is_closed()) {
            let mut receiver = sender.subscribe();
            // A later caller sees the state as it is now as its first change
            // (unless there is none yet: then the first read is that change).
            let read = !matches!(&*receiver.borrow(), Err(error) if matches!(**error, LoadError::NotReadYet { .. }));
            if read {
                receiver.mark_changed();
            }
            return Some(receiver);
        }
        let (tx, rx) = watch::channel(Err(Arc::new(LoadError::NotReadYet { reference: reference.to_string() })));
        watches.insert(cm.clone(), tx.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(configmap::watch(self.inner.clone(), cm.clone(), tx));
            }
            Err(_) => {
                let _ = tx.send(Err(Arc::new(LoadError::NoRuntime { reference: reference.to_string() })));
            }
        }
        Some(rx)
    }
}

impl Inner {
    /// The Kubernetes client, created on first use.
    async fn kube_client(&self, reference: &str) -> Result<kube::Client, LoadError> {
        self.kube
            .get_or_try_init(|| async {
                tracing::info!("creating the Kubernetes client (a ConfigMap handler reference needs it)");
                (self.options.kube_client)().await
            })
            .await
            .cloned()
            .map_err(|source| LoadError::KubeClient { reference: reference.to_string(), source })
    }
}

fn check_size(origin: &str, size: u64, cap: u64) -> Result<(), LoadError> {
    if size > cap {
        return Err(LoadError::TooLarge { origin: origin.to_string(), size, cap });
    }
    Ok(())
}

/// Runs `attempt` up to `attempts` times, each under `timeout`, waiting
/// `backoff`, 2×`backoff`, … between tries, while it fails with a transient error.
async fn with_retries<T, F, Fut>(options: &LoaderOptions, what: &str, mut attempt: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let attempts = options.attempts.max(1);
    let mut backoff = Backoff::new(options.backoff, Duration::MAX);
    let mut last = Failure::Timeout;
    for n in 1..=attempts {
        match tokio::time::timeout(options.timeout, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(Failure::Permanent(error))) => return Err(Failure::Permanent(error)),
            Ok(Err(failure)) => last = failure,
            Err(_) => last = Failure::Timeout,
        }
        if n < attempts {
            let wait = backoff.next_delay();
            tracing::warn!(what, attempt = n, of = attempts, error = %last, retry_in = ?wait, "fetch failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }
    Err(last)
}

/// How one network attempt failed.
#[derive(Debug)]
enum Failure {
    /// Worth retrying: connection refused or reset, 5xx, 429.
    Transient(String),
    /// The attempt ran out of time.
    Timeout,
    /// Retrying cannot help (not found, wrong digest, refused, too large).
    Permanent(LoadError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient(message) => f.write_str(message),
            Failure::Timeout => f.write_str("timed out"),
            Failure::Permanent(error) => write!(f, "{error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    }

    #[test]
    fn no_kube_client_without_a_configmap_reference() {
        let created = Arc::new(AtomicUsize::new(0));
        let counter = created.clone();
        let loader = Loader::new(LoaderOptions {
            kube_client: Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Err("no cluster here".into()) })
            }),
            ..Default::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("h.wasm");
        std::fs::write(&file, b"\0asm").unwrap();
        runtime().block_on(async {
            let builtin = loader.fetch(&HandlerRef::Builtin("glob".into())).await.unwrap();
            assert_eq!(builtin.digest, sha256_digest(builtin::get("glob").unwrap().bytes), "build.rs's digest");
            let from_file = loader.fetch(&HandlerRef::File(file.clone())).await.unwrap();
            assert_eq!(&*from_file.bytes, b"\0asm");
            assert!(loader.watch(&HandlerRef::File(file.clone())).is_none());
            assert!(loader.watch(&HandlerRef::Builtin("glob".into())).is_none());
        });
        assert_eq!(created.load(Ordering::SeqCst), 0, "a kube client was created for no ConfigMap");
        // A ConfigMap reference does create it (and reports its failure).
        let cm = HandlerRef::ConfigMap(ConfigMapRef { namespace: "ns".into(), name: "h".into(), key: "k".into() });
        let error = runtime().block_on(loader.fetch(&cm)).unwrap_err().to_string();
        assert!(error.contains("no cluster here") && error.contains("configmap:ns/h/k"), "{error}");
        assert_eq!(created.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn files_over_the_cap_are_refused() {
        let loader = Loader::new(LoaderOptions { max_module_bytes: 8, ..Default::default() });
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.wasm");
        std::fs::write(&file, [0u8; 9]).unwrap();
        let error = runtime().block_on(loader.fetch(&HandlerRef::File(file))).unwrap_err().to_string();
        assert!(error.contains("9 bytes") && error.contains("--max-handler-mib"), "{error}");
    }

    #[test]
    fn retries_back_off_and_stop_on_permanent_errors() {
        let options = LoaderOptions {
            attempts: 3,
            backoff: Duration::from_millis(1),
            timeout: Duration::from_millis(50),
            ..Default::default()
        };
        let calls = AtomicUsize::new(0);
        let result: Result<(), Failure> = runtime().block_on(with_retries(&options, "t", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Failure::Transient("reset".into())) }
        }));
        assert!(matches!(result, Err(Failure::Transient(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let result: Result<(), Failure> = runtime().block_on(with_retries(&options, "t", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Failure::Permanent(LoadError::NotFound { reference: "r".into(), detail: "gone".into() })) }
        }));
        assert!(matches!(result, Err(Failure::Permanent(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // A hanging attempt is cut at the timeout, each time.
        let started = std::time::Instant::now();
        let result: Result<(), Failure> =
            runtime().block_on(with_retries(&options, "t", std::future::pending::<Result<(), Failure>>));
        assert!(matches!(result, Err(Failure::Timeout)));
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());

        // Succeeds on the second try.
        calls.store(0, Ordering::SeqCst);
        let result = runtime().block_on(with_retries(&options, "t", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n == 0 { Err(Failure::Transient("reset".into())) } else { Ok(n) } }
        }));
        assert_eq!(result.unwrap(), 1);
    }
}

//! The on-disk cache of compiled handlers, so a restart pays no compilation,
//! and the one place compiled code is loaded.
//!
//! An artifact is keyed by the component's sha256 and the engine's
//! compatibility hash (wasmtime version, target, settings), so a new agent
//! never loads code compiled for another. Loading compiled code is `unsafe`
//! in wasmtime: it is machine code run as is. The agent therefore only loads
//! artifacts it wrote itself: files owned by its own user in a directory that
//! nobody else may write to, written atomically (temp file, then rename).
#![allow(unsafe_code)]

use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::support::files::{PRIVATE, write_atomically};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "cache directory {path} may be written by other users (mode {mode:o}) or is owned by another user; \
         refusing to load compiled code from it. Use a directory only the agent's user can write to"
    )]
    Unsafe { path: PathBuf, mode: u32 },
}

#[derive(Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    /// Opens (creating with mode 0700 if needed) the cache directory.
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        let io = |source| CacheError::Io { path: dir.to_path_buf(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        let meta = std::fs::metadata(dir).map_err(io)?;
        if !owned_by_us_and_private(&meta) {
            return Err(CacheError::Unsafe { path: dir.to_path_buf(), mode: meta.mode() & 0o7777 });
        }
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ArtifactCache { dir: dir.to_path_buf(), engine_key: format!("{:016x}", hasher.finish()) })
    }

    fn path_for(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// The compiled component for `digest`, if this agent cached it before.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path_for(digest);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || !owned_by_us_and_private(&meta) {
            tracing::warn!(path = %path.display(), "ignoring a cached artifact this agent did not write");
            return None;
        }
        // SAFETY: the file is a regular file owned by this user in a directory
        // only this user can write, named by the component's digest and this
        // engine's compatibility hash: it is an artifact this agent serialized
        // from that component. wasmtime still checks its header and version.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %format!("{error:#}"), "discarding an unusable cached artifact");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores the artifact compiled from `digest` and loads it from there, so
    /// its code is mapped from the file (clean pages the kernel can take back)
    /// rather than copied; `None` (logged) if it could not be written.
    pub fn store(&self, engine: &Engine, digest: &str, artifact: &[u8]) -> Option<Component> {
        let path = self.path_for(digest);
        match write_atomically(&path, artifact, PRIVATE) {
            Ok(()) => self.load(engine, digest),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "could not cache a compiled handler");
                None
            }
        }
    }
}

/// Loads an artifact from memory that this program's own compiler just made.
pub(super) fn load_fresh_artifact(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: the caller hands in what `Compiler::compile` returned: an
    // artifact this executable compiled (in-process or as its child) a moment
    // ago. wasmtime still checks its header, version and settings.
    unsafe { Component::deserialize(engine, artifact) }
}

fn owned_by_us_and_private(meta: &std::fs::Metadata) -> bool {
    meta.uid() == rustix::process::geteuid().as_raw() && meta.mode() & 0o022 == 0
}

//! A content-addressed cache of the blobs handlers came in (OCI manifests and
//! layers, ConfigMap values), so the agent starts, and keeps its devices,
//! when a registry or the API server is down.
//!
//! Layout under the cache directory (mode 0700):
//! - `sha256/<hex>`: the bytes whose sha256 is `<hex>`. Every read hashes the
//!   file again: a corrupt or altered file is discarded, never used.
//! - `refs/<hex of sha256(reference)>`: the digest a mutable reference (an OCI
//!   tag, a ConfigMap key) last resolved to, for when its source is down.
//!
//! Writes go to a temp file that is renamed into place. Failures to write
//! are logged, never fatal: the cache only saves work.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::LoadError;
use crate::support::digest::{sha256_digest, sha256_hex, sha256_hex_of};
use crate::support::files::{PRIVATE, write_atomically};

#[derive(Debug)]
pub struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    /// Opens (creating if needed, mode 0700) the cache at `dir`.
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        for sub in ["sha256", "refs"] {
            let path = dir.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .map_err(|source| LoadError::Cache { path, source })?;
        }
        Ok(BlobCache { dir: dir.to_path_buf() })
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        sha256_hex(digest).map(|hex| self.dir.join("sha256").join(hex))
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        self.dir.join("refs").join(sha256_hex_of(reference.as_bytes()))
    }

    /// The bytes of `digest`, if cached, no larger than `max_bytes`, and
    /// still hashing to `digest`.
    pub fn get(&self, digest: &str, max_bytes: u64) -> Option<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > max_bytes {
            return None;
        }
        let bytes = std::fs::read(&path).ok()?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            tracing::warn!(path = %path.display(), expected = digest, %actual, "discarding a corrupt cached blob");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Some(bytes)
    }

    /// Stores `bytes`, which the caller has verified hash to `digest`.
    pub fn put(&self, digest: &str, bytes: &[u8]) {
        let Some(path) = self.blob_path(digest) else { return };
        if sha256_digest(bytes) != digest {
            tracing::error!(digest, "refusing to cache a blob under a digest it does not have");
            return;
        }
        if let Err(error) = write_atomically(&path, bytes, PRIVATE) {
            tracing::warn!(path = %path.display(), %error, "could not cache a handler blob");
        }
    }

    /// Records that `reference` (a tag, a ConfigMap key) resolved to `digest`.
    pub fn remember(&self, reference: &str, digest: &str) {
        let path = self.ref_path(reference);
        if let Err(error) = write_atomically(&path, format!("{digest}\n{reference}\n").as_bytes(), PRIVATE) {
            tracing::warn!(path = %path.display(), %error, "could not record a resolved reference");
        }
    }

    /// The digest `reference` last resolved to.
    pub fn recall(&self, reference: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.ref_path(reference)).ok()?;
        let mut lines = text.lines();
        let digest = lines.next()?;
        (lines.next() == Some(reference) && sha256_hex(digest).is_some()).then(|| digest.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_on_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let digest = sha256_digest(b"component");
        assert_eq!(cache.get(&digest, 1 << 20), None);
        cache.put(&digest, b"component");
        assert_eq!(cache.get(&digest, 1 << 20).as_deref(), Some(&b"component"[..]));
        // Too large for the cap: not used.
        assert_eq!(cache.get(&digest, 3), None);
        // Altered on disk: discarded.
        let path = dir.path().join("sha256").join(sha256_hex(&digest).unwrap());
        std::fs::write(&path, b"c0mponent").unwrap();
        assert_eq!(cache.get(&digest, 1 << 20), None);
        assert!(!path.exists(), "a corrupt blob is removed");
        // A blob under a digest it does not have is not stored.
        cache.put(&digest, b"other");
        assert!(!path.exists());
        // Malformed digests never touch the file system.
        assert_eq!(cache.get("sha256:../../etc/passwd", 1 << 20), None);
    }

    #[test]
    fn references_remember_their_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let digest = sha256_digest(b"x");
        assert_eq!(cache.recall("registry.example.com/h:1"), None);
        cache.remember("registry.example.com/h:1", &digest);
        assert_eq!(cache.recall("registry.example.com/h:1"), Some(digest));
        assert_eq!(cache.recall("registry.example.com/h:2"), None);
    }

    #[test]
    fn digest_syntax() {
        assert!(sha256_hex(&sha256_digest(b"")).is_some());
        assert!(sha256_hex("sha256:ABCDEF").is_none());
        assert!(sha256_hex(&format!("sha512:{}", "0".repeat(64))).is_none());
        assert!(sha256_hex(&format!("sha256:{}", "G".repeat(64))).is_none());
    }
}

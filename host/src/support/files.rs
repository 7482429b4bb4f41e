//! Writing the agent's files (caches, CDI specs) so that no reader ever
//! sees half of one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Only the agent's user: what the caches hold is the agent's own.
pub const PRIVATE: u32 = 0o600;
/// Readable by every user: what another program (a container runtime) reads.
pub const SHARED: u32 = 0o644;

/// Writes `bytes` to `path` with `mode` through a temporary file beside it,
/// synced, then renamed over `path`.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)
}

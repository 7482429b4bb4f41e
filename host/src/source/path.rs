//! Files and device nodes matched by path patterns (the `glob` handler's
//! candidates), confined to the roots the operator allowed.

use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use super::{DeviceSource, SourceError};
use crate::handler::bindings::{Node, Origin, Requirements};
use crate::snapshot::DeviceTable;

pub struct PathSource;

impl DeviceSource for PathSource {
    fn collect(&self, needs: &Requirements, roots: &[PathBuf], table: &mut DeviceTable) -> Result<(), SourceError> {
        for pattern in &needs.paths {
            check_pattern(pattern, roots)?;
            let matches = glob::glob(pattern)
                .map_err(|error| SourceError::Pattern { pattern: pattern.clone(), reason: error.to_string() })?;
            // Unreadable entries are skipped: a path that cannot be read cannot be granted either.
            for path in matches.flatten() {
                if roots.iter().any(|root| path.starts_with(root)) {
                    table.add(node(&path), None, true);
                }
            }
        }
        Ok(())
    }
}

/// A pattern must be absolute, free of `.`/`..`, and its literal prefix must
/// lie under an allowed root (so no match can escape one).
pub fn check_pattern(pattern: &str, roots: &[PathBuf]) -> Result<(), SourceError> {
    let fail = |reason: String| SourceError::Pattern { pattern: pattern.to_string(), reason };
    let path = Path::new(pattern);
    if !path.is_absolute() || path.components().any(|c| !matches!(c, Component::RootDir | Component::Normal(_))) {
        return Err(fail("must be an absolute path without `.` or `..`".into()));
    }
    let literal = literal_prefix(pattern);
    let under_root =
        roots.iter().any(|root| literal.starts_with(root) || root.starts_with(&literal) && literal != Path::new("/"));
    if !under_root {
        return Err(fail(format!(
            "lies outside the allowed roots ({}); add a root with `allowedRoots`",
            roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}

/// The part of a pattern before its first wildcard component: the directory
/// (or file) every match lies under.
pub fn literal_prefix(pattern: &str) -> PathBuf {
    Path::new(pattern).components().take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '['])).collect()
}

fn node(path: &Path) -> Node {
    let text = path.to_string_lossy().into_owned();
    let mut attributes = Vec::new();
    if let Ok(meta) = std::fs::metadata(path) {
        let file_type = meta.file_type();
        let kind = if file_type.is_char_device() {
            "char"
        } else if file_type.is_block_device() {
            "block"
        } else if file_type.is_dir() {
            "dir"
        } else if file_type.is_file() {
            "file"
        } else {
            "other"
        };
        attributes.push(("type".to_string(), kind.to_string()));
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
        && let Ok(target) = std::fs::canonicalize(path)
    {
        attributes.push(("target".to_string(), target.to_string_lossy().into_owned()));
    }
    attributes.sort();
    Node {
        origin: Origin::Path,
        kernel: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        subsystem: String::new(),
        devtype: None,
        driver: None,
        devnode: Some(text.clone()),
        devlinks: Vec::new(),
        properties: Vec::new(),
        attributes,
        tags: Vec::new(),
        parent: None,
        devpath: text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_confined_to_roots() {
        let roots = [PathBuf::from("/dev")];
        assert!(check_pattern("/dev/ttyUSB*", &roots).is_ok());
        assert!(check_pattern("/dev/serial/by-id/*", &roots).is_ok());
        assert!(check_pattern("/d*/x", &roots).is_err(), "a wildcard above the root could escape it");
        assert!(check_pattern("/etc/*", &roots).is_err());
        assert!(check_pattern("/dev/../etc/shadow", &roots).is_err());
        assert!(check_pattern("dev/tty*", &roots).is_err());
        assert!(check_pattern("/*", &roots).is_err());
    }

    #[test]
    fn collects_matches_with_their_type() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("a0"), b"").unwrap();
        std::fs::create_dir(root.join("a1")).unwrap();
        std::os::unix::fs::symlink(root.join("a0"), root.join("a2")).unwrap();
        std::fs::write(root.join("b0"), b"").unwrap();
        let needs = Requirements {
            subsystems: vec![],
            all_udev: false,
            properties: vec![],
            attributes: vec![],
            paths: vec![format!("{}/a*", root.display())],
            usbip: false,
        };
        let table = crate::source::Sources::new(vec![Box::new(PathSource)])
            .collect(&needs, std::slice::from_ref(&root))
            .unwrap();
        let snapshot = table.snapshot_all();
        let found: Vec<(&str, &str)> = snapshot
            .candidates
            .iter()
            .map(|&c| {
                let n = &snapshot.nodes[c as usize];
                (n.kernel, n.attributes.iter().find(|(k, _)| k == "type").unwrap().1.as_str())
            })
            .collect();
        assert_eq!(found, [("a0", "file"), ("a1", "dir"), ("a2", "file")]);
        let link = &snapshot.nodes[snapshot.candidates[2] as usize];
        assert!(link.attributes.iter().any(|(k, v)| k == "target" && v.ends_with("/a0")));
        let outside = crate::source::Sources::new(vec![Box::new(PathSource)]).collect(&needs, &[PathBuf::from("/dev")]);
        assert!(outside.is_err());
    }
}

//! Files and device nodes matched by path patterns (the `glob` handler's
//! candidates), confined to the roots the operator allowed.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::{DeviceSource, PatternProblem, SourceError};
use crate::contract::{Node, Origin, Requirements};
use crate::model::DeviceTable;
use crate::support::paths::is_normal_absolute;

pub struct PathSource;

impl DeviceSource for PathSource {
    fn collect(&self, needs: &Requirements, roots: &[PathBuf], table: &mut DeviceTable) -> Result<(), SourceError> {
        for pattern in &needs.paths {
            check_pattern(pattern, roots)?;
            let matches = glob::glob(pattern)
                .map_err(|error| SourceError::Pattern { pattern: pattern.clone(), problem: error.into() })?;
            // Unreadable entries are skipped: a path that cannot be read cannot be granted either.
            for path in matches.flatten() {
                if under_a_root(&path, roots) {
                    table.add(node(&path), None, true);
                }
            }
        }
        Ok(())
    }

    fn reread_path(&self, path: &Path, roots: &[PathBuf]) -> Option<DeviceTable> {
        let mut table = DeviceTable::default();
        // `symlink_metadata`: a dangling symlink is there (as `glob` lists it) until it is removed.
        if under_a_root(path, roots) && std::fs::symlink_metadata(path).is_ok() {
            table.add(node(path), None, true);
        }
        Some(table)
    }
}

/// Whether `path` lies under one of `roots`. `glob` lists `.` and `..` for a
/// component such as `.*`, and `starts_with` compares components without
/// resolving them: `/dev/..` would pass for the root `/dev`.
fn under_a_root(path: &Path, roots: &[PathBuf]) -> bool {
    is_normal_absolute(path) && roots.iter().any(|root| path.starts_with(root))
}

/// How a path an inotify event named bears on `pattern`, weakest first
/// (over several patterns, the strongest decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bearing {
    /// Nothing the pattern can match.
    None,
    /// The pattern matches the path: read it alone.
    Match,
    /// The path may be a directory on the way to matches (a symlink to a
    /// directory, say): look at the whole pattern again.
    OnTheWay,
}

/// `glob` expands component by component, so a separator is only ever
/// matched by a separator; a leading dot needs no literal dot.
const MATCHING: glob::MatchOptions =
    glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

pub fn bearing(pattern: &str, path: &Path) -> Bearing {
    let Ok(whole) = glob::Pattern::new(pattern) else { return Bearing::OnTheWay };
    if whole.matches_path_with(path, MATCHING) {
        return Bearing::Match;
    }
    let depth = path.components().count();
    let components: Vec<_> = Path::new(pattern).components().collect();
    if depth >= components.len() {
        return Bearing::None;
    }
    let prefix: PathBuf = components[..depth].iter().collect();
    match glob::Pattern::new(&prefix.to_string_lossy()) {
        Ok(prefix) if !prefix.matches_path_with(path, MATCHING) => Bearing::None,
        _ => Bearing::OnTheWay,
    }
}

/// A pattern must be absolute, free of `.`/`..`, and its literal prefix must
/// lie under an allowed root (so no match can escape one).
pub fn check_pattern(pattern: &str, roots: &[PathBuf]) -> Result<(), SourceError> {
    let fail = |problem| SourceError::Pattern { pattern: pattern.to_string(), problem };
    if !is_normal_absolute(Path::new(pattern)) {
        return Err(fail(PatternProblem::NotNormal));
    }
    let literal = literal_prefix(pattern);
    let under_root =
        roots.iter().any(|root| literal.starts_with(root) || root.starts_with(&literal) && literal != Path::new("/"));
    if !under_root {
        let roots = roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(fail(PatternProblem::OutsideRoots(roots)));
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
    fn tells_how_a_named_path_bears_on_a_pattern() {
        let at = |pattern, path: &str| bearing(pattern, Path::new(path));
        assert_eq!(at("/dev/ttyUSB*", "/dev/ttyUSB3"), Bearing::Match);
        assert_eq!(at("/dev/ttyUSB*", "/dev/ttyACM0"), Bearing::None);
        assert_eq!(at("/dev/ttyUSB*", "/dev/sub/ttyUSB0"), Bearing::None, "`*` does not cross a `/`");
        assert_eq!(at("/dev/serial/by-id/*", "/dev/serial/by-id/usb-1a86"), Bearing::Match);
        assert_eq!(at("/dev/serial/by-id/*", "/dev/serial"), Bearing::OnTheWay);
        assert_eq!(at("/dev/serial/by-id/*", "/dev/serial/by-id"), Bearing::OnTheWay);
        assert_eq!(at("/dev/serial/by-id/*", "/dev/snd"), Bearing::None);
        assert_eq!(at("/dev/snd/by-*/x*", "/dev/snd/by-path"), Bearing::OnTheWay);
        assert_eq!(at("/dev/snd/by-*/x*", "/dev/snd/controlC0"), Bearing::None);
        assert_eq!(at("/dev/x*", "/dev/.x1"), Bearing::None);
        assert_eq!(at("/dev/*", "/dev/.hidden"), Bearing::Match, "as `glob` lists it");
    }

    #[test]
    fn rereads_one_path() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let file = root.join("a0");
        std::fs::write(&file, b"").unwrap();
        let read = PathSource.reread_path(&file, std::slice::from_ref(&root)).unwrap();
        assert!(read.is_candidate(&file.to_string_lossy()));
        assert!(PathSource.reread_path(&root.join("gone"), std::slice::from_ref(&root)).unwrap().is_empty());
        let outside = PathSource.reread_path(&file, &[PathBuf::from("/dev")]).unwrap();
        assert!(outside.is_empty(), "a path outside the roots is never read");
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
        let table = super::super::Sources::new(vec![Box::new(PathSource)])
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
        let outside = super::super::Sources::new(vec![Box::new(PathSource)]).collect(&needs, &[PathBuf::from("/dev")]);
        assert!(outside.is_err());
    }

    #[test]
    fn dot_entries_never_escape_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("dev");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join(".hidden"), b"").unwrap();
        let pattern = format!("{}/.*", root.display());
        assert!(
            glob::glob(&pattern).unwrap().flatten().any(|p| p.ends_with("..")),
            "glob lists `..` for `.*`: what this test guards against"
        );
        let needs = Requirements {
            subsystems: vec![],
            all_udev: false,
            properties: vec![],
            attributes: vec![],
            paths: vec![pattern],
            usbip: false,
        };
        let table = super::super::Sources::new(vec![Box::new(PathSource)])
            .collect(&needs, std::slice::from_ref(&root))
            .unwrap();
        let snapshot = table.snapshot_all();
        let found: Vec<&str> = snapshot.candidates.iter().map(|&c| snapshot.nodes[c as usize].devpath).collect();
        assert!(found.iter().any(|p| p.ends_with("/.hidden")), "{found:?}");
        // `root/.` is the root itself (Path::components reads it so); `root/..` would be its parent.
        assert!(!found.iter().any(|p| p.ends_with("/..")), "the root's parent is not a candidate: {found:?}");
        assert!(PathSource.reread_path(&root.join(".."), std::slice::from_ref(&root)).unwrap().is_empty());
    }
}

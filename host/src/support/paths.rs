//! The one check of an operator's or a handler's path: absolute and
//! normal, so that `starts_with` on it means what it says.

use std::path::{Component, Path};

/// Absolute, with no `.` or `..` component.
pub fn is_normal_absolute(path: &Path) -> bool {
    path.is_absolute() && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_normal_paths_pass() {
        assert!(is_normal_absolute(Path::new("/dev/serial/by-id")));
        assert!(!is_normal_absolute(Path::new("dev")));
        assert!(!is_normal_absolute(Path::new("/dev/../etc")));
        // `Path::components` drops a `.` after the root: `/dev/./tty` is `/dev/tty`.
        assert!(is_normal_absolute(Path::new("/dev/./tty")));
        assert!(!is_normal_absolute(Path::new("./dev")));
    }
}

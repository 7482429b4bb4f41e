//! Filesystem events, without polling.
//!
//! - [`PathWatch`] watches the directories path patterns can match in
//!   (inotify through the `inotify` crate, asking for entries created,
//!   deleted and renamed only: `notify` also subscribes to opens and writes,
//!   and under `/dev` that would wake the agent every time any process on
//!   the node opened `/dev/null`). It reports the entries each event names,
//!   so one new file among 10,000 is read alone; where an event cannot say
//!   (a directory came or went, a watched directory itself moved, the queue
//!   overflowed) it asks for a fresh look instead. Directories that do not
//!   exist yet are watched through their nearest existing ancestor, and the
//!   plan is made again after every such look, so `/dev/serial/by-id` is
//!   followed from the moment it appears.
//! - [`FileWatch`] watches the directories holding the config file and the
//!   handler files (`notify`), which catches in-place writes and the atomic
//!   `..data` symlink swap of a Kubernetes ConfigMap volume alike.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};

use super::path::literal_prefix;
use crate::model::PathChange;
use crate::support::paths::is_normal_absolute;

/// The directories to watch so that every change to what `pattern` matches
/// is seen: each directory a match can lie in (wildcards in directory
/// components expanded), or, where one does not exist yet, its nearest
/// existing ancestor.
pub fn plan(pattern: &str) -> BTreeSet<PathBuf> {
    let mut dirs = BTreeSet::new();
    let literal = literal_prefix(pattern);
    let components: Vec<String> =
        Path::new(pattern).components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let literal_len = literal.components().count();
    // A pattern without wildcards matches one path: watch where it would be.
    if literal_len == components.len() {
        dirs.insert(existing_ancestor(literal.parent().unwrap_or(Path::new("/"))));
        return dirs;
    }
    dirs.insert(existing_ancestor(&literal));
    // Every directory level between the literal prefix and the last component.
    for depth in literal_len + 1..components.len() {
        let prefix: PathBuf = components[..depth].iter().collect();
        let Ok(matches) = glob::glob(&prefix.to_string_lossy()) else { continue };
        // `glob` lists `.` and `..` for `.*`: watching those would watch outside the pattern.
        dirs.extend(matches.flatten().filter(|p| p.is_dir() && is_normal_absolute(p)));
    }
    dirs
}

fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors().find(|p| p.is_dir()).unwrap_or(Path::new("/")).to_path_buf()
}

type Directories = Arc<Mutex<HashMap<WatchDescriptor, PathBuf>>>;

/// inotify watches on a set of directories, read on a thread of its own.
pub struct PathWatch {
    watches: Watches,
    watched: BTreeMap<PathBuf, WatchDescriptor>,
    /// The same watches by descriptor, for the reading thread to name entries.
    directories: Directories,
}

impl PathWatch {
    /// Calls `on_change` (on the watch thread) after every batch of events,
    /// until it returns false.
    pub fn start(mut on_change: impl FnMut(PathChange) -> bool + Send + 'static) -> std::io::Result<PathWatch> {
        let mut inotify = Inotify::init()?;
        let watches = inotify.watches();
        let directories: Directories = Arc::default();
        let named = directories.clone();
        std::thread::Builder::new().name("devsieve-paths".into()).spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                match inotify.read_events_blocking(&mut buffer) {
                    Ok(events) => {
                        let mut change = PathChange::default();
                        let directories = named.lock().expect("watch table");
                        for event in events {
                            // Removing a watch queues an IGNORED event: not a change.
                            if event.mask.contains(EventMask::IGNORED) {
                                continue;
                            }
                            let dir = directories.get(&event.wd);
                            match (dir, event.name) {
                                (Some(dir), Some(name)) if !event.mask.contains(EventMask::ISDIR) => {
                                    change.entries.insert(dir.join(name));
                                }
                                // A directory came or went, a watched one moved, or the queue overflowed.
                                _ => change.rescan = true,
                            }
                        }
                        drop(directories);
                        if !change.is_empty() && !on_change(change) {
                            return;
                        }
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        tracing::error!(%error, "reading inotify events failed; path changes are no longer seen");
                        // What changed from now on is unknown: one last full look.
                        on_change(PathChange::everything());
                        return;
                    }
                }
            }
        })?;
        Ok(PathWatch { watches, watched: BTreeMap::new(), directories })
    }

    /// Watches exactly `dirs` (adding and removing watches as needed).
    pub fn set(&mut self, dirs: &BTreeSet<PathBuf>) {
        let stale: Vec<PathBuf> = self.watched.keys().filter(|d| !dirs.contains(*d)).cloned().collect();
        for dir in stale {
            if let Some(wd) = self.watched.remove(&dir) {
                self.directories.lock().expect("watch table").remove(&wd);
                // Fails when the directory is gone, which removed the watch already.
                let _ = self.watches.remove(wd);
            }
        }
        let mask = WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF
            | WatchMask::ONLYDIR;
        for dir in dirs {
            if self.watched.contains_key(dir) {
                continue;
            }
            match self.watches.add(dir, mask) {
                Ok(wd) => {
                    self.directories.lock().expect("watch table").insert(wd.clone(), dir.clone());
                    self.watched.insert(dir.clone(), wd);
                }
                Err(error) => tracing::warn!(dir = %dir.display(), %error, "cannot watch a directory"),
            }
        }
    }
}

/// `notify` watches on the directories of the config and handler files.
pub struct FileWatch {
    watcher: notify::RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
}

impl FileWatch {
    /// Calls `on_change` (on notify's thread) for every event that may have
    /// changed a file's contents.
    pub fn start(on_change: impl Fn() + Send + 'static) -> notify::Result<FileWatch> {
        use notify::EventKind::{Access, Create, Modify, Remove};
        use notify::event::{AccessKind, AccessMode, ModifyKind};
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match event {
                Ok(event) => matches!(
                    event.kind,
                    Create(_)
                        | Remove(_)
                        | Modify(ModifyKind::Name(_) | ModifyKind::Data(_) | ModifyKind::Any)
                        | Access(AccessKind::Close(AccessMode::Write))
                ),
                Err(_) => true,
            };
            if relevant {
                on_change();
            }
        })?;
        Ok(FileWatch { watcher, watched: BTreeSet::new() })
    }

    /// Watches the directories holding exactly `files`.
    pub fn set<'a>(&mut self, files: impl IntoIterator<Item = &'a Path>) {
        use notify::Watcher;
        let dirs: BTreeSet<PathBuf> = files.into_iter().filter_map(|f| f.parent()).map(existing_ancestor).collect();
        for dir in self.watched.difference(&dirs) {
            let _ = self.watcher.unwatch(dir);
        }
        for dir in dirs.difference(&self.watched) {
            if let Err(error) = self.watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), %error, "cannot watch a directory; its files will not be reloaded");
            }
        }
        self.watched = dirs;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn plans_the_directories_a_pattern_can_match_in() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("snd/by-id")).unwrap();
        std::fs::create_dir_all(r.join("snd/by-path")).unwrap();
        let plan_of = |pattern: &str| plan(&format!("{}/{pattern}", r.display()));
        let set = |dirs: &[&str]| {
            dirs.iter().map(|d| if d.is_empty() { r.to_path_buf() } else { r.join(d) }).collect::<BTreeSet<_>>()
        };
        assert_eq!(plan_of("ttyUSB*"), set(&[""]));
        assert_eq!(plan_of("null"), set(&[""]), "a plain path is watched in its directory");
        assert_eq!(plan_of("snd/by-*/x*"), set(&["snd", "snd/by-id", "snd/by-path"]));
        assert_eq!(plan_of("serial/by-id/*"), set(&[""]), "a directory to come is watched through its ancestor");
        std::fs::create_dir_all(r.join("serial")).unwrap();
        assert_eq!(plan_of("serial/by-id/*"), set(&["serial"]));
    }

    #[test]
    fn reports_entries_created_and_removed_but_not_opened() {
        let root = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut watch = PathWatch::start(move |change| tx.send(change).is_ok()).unwrap();
        watch.set(&[root.path().to_path_buf()].into());
        let file = root.path().join("ttyUSB0");
        let named = |path: &Path| PathChange { entries: [path.to_path_buf()].into(), rescan: false };
        std::fs::write(&file, b"").unwrap();
        let created = rx.recv_timeout(Duration::from_secs(5)).expect("a created file is reported");
        assert_eq!(created, named(&file), "the event names the file");
        while rx.try_recv().is_ok() {}
        // Reading and writing the file is not a change of what the pattern matches.
        std::fs::write(&file, b"x").unwrap();
        let _ = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        let removed = rx.recv_timeout(Duration::from_secs(5)).expect("a removed file is reported");
        assert_eq!(removed, named(&file));
        assert!(
            rx.recv_timeout(Duration::from_millis(50)).is_err(),
            "one event batch per removal, none for open/write"
        );
        // A directory cannot be described by its name alone (patterns may go through it).
        std::fs::create_dir(root.path().join("by-id")).unwrap();
        let dir = rx.recv_timeout(Duration::from_secs(5)).expect("a new directory is reported");
        assert!(dir.rescan, "a new directory asks for a fresh look: {dir:?}");
    }
}

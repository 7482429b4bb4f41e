//! The devices a resource's sources found, kept between evaluations, and the
//! immutable snapshots cut from them for a handler.
//!
//! A [`DeviceTable`] holds every collected device once, keyed by devpath,
//! with a link to its parent and whether it is a candidate (the rest are
//! ancestors, there for parent matching). Sources add to it; events update
//! it in place and say which devpaths changed, so the evaluation re-asks
//! the handler about those candidates only. A [`SnapshotView`] for the handler holds
//! the requested candidates and their ancestors, parents after their
//! children (the contract's rule, which makes cycles impossible).

use std::collections::BTreeSet;

// Keys are devpaths the agent read itself: a fast hash is enough (no DoS concern).
use rustc_hash::FxHashMap as HashMap;

use crate::contract::{Node, NodeView, SnapshotView};

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    /// The node as a handler sees it (its `parent` index is set per snapshot).
    node: Node,
    parent: Option<String>,
    candidate: bool,
}

/// What an update did to a table.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Devpaths added or whose record changed.
    pub changed: Vec<String>,
    /// Devpaths no longer in the table.
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }

    /// Both changes, as one (for events coalesced into one evaluation).
    pub fn extend(&mut self, other: Changes) {
        self.changed.extend(other.changed);
        self.removed.extend(other.removed);
    }
}

#[derive(Clone, Debug, Default)]
pub struct DeviceTable {
    entries: HashMap<String, Entry>,
    /// Candidate devpaths in order: snapshots list candidates in devpath
    /// order, and a device's descendants are a contiguous range.
    candidates: BTreeSet<String>,
}

impl DeviceTable {
    pub fn contains(&self, devpath: &str) -> bool {
        self.entries.contains_key(devpath)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn candidates(&self) -> impl Iterator<Item = &str> {
        self.candidates.iter().map(String::as_str)
    }

    #[cfg(test)]
    pub fn is_candidate(&self, devpath: &str) -> bool {
        self.candidates.contains(devpath)
    }

    /// Adds `node` (its `parent` field is ignored; `parent_devpath` links it)
    /// while collecting. A node added twice keeps its first record; being a
    /// candidate sticks.
    pub fn add(&mut self, node: Node, parent_devpath: Option<String>, candidate: bool) {
        if let Some(entry) = self.entries.get_mut(&node.devpath) {
            if candidate && !entry.candidate {
                entry.candidate = true;
                self.candidates.insert(node.devpath);
            }
            return;
        }
        if candidate {
            self.candidates.insert(node.devpath.clone());
        }
        self.entries.insert(node.devpath.clone(), Entry { node, parent: parent_devpath, candidate });
    }

    /// Adds every record of `other`, as [`add`](Self::add) would.
    pub fn absorb(&mut self, other: &DeviceTable) {
        for entry in other.entries.values() {
            self.add(entry.node.clone(), entry.parent.clone(), entry.candidate);
        }
    }

    /// `devpath`'s record and its ancestors', as a table of their own.
    pub fn chain(&self, devpath: &str) -> Option<DeviceTable> {
        let mut chain = DeviceTable::default();
        let mut at = Some(devpath);
        while let Some(path) = at {
            let Some(entry) = self.entries.get(path) else { break };
            if chain.contains(path) {
                break;
            }
            chain.add(entry.node.clone(), entry.parent.clone(), entry.candidate);
            at = entry.parent.as_deref();
        }
        (!chain.is_empty()).then_some(chain)
    }

    /// Takes every record of `update` (newly read devices), replacing older
    /// records of the same devpaths. A candidate stays a candidate.
    pub fn merge(&mut self, update: DeviceTable) -> Changes {
        let mut changes = Changes::default();
        for (devpath, mut entry) in update.entries {
            match self.entries.get_mut(&devpath) {
                Some(old) => {
                    entry.candidate |= old.candidate;
                    if *old != entry {
                        *old = entry;
                        changes.changed.push(devpath.clone());
                    }
                }
                None => {
                    changes.changed.push(devpath.clone());
                    self.entries.insert(devpath.clone(), entry);
                }
            }
            if self.entries[&devpath].candidate {
                self.candidates.insert(devpath);
            }
        }
        changes.changed.sort();
        changes
    }

    /// Becomes `new` (a full re-collection) and says what differs.
    pub fn replace(&mut self, new: DeviceTable) -> Changes {
        let mut removed: Vec<String> =
            self.entries.keys().filter(|devpath| !new.entries.contains_key(*devpath)).cloned().collect();
        removed.sort();
        let mut changed: Vec<String> = new
            .entries
            .iter()
            .filter(|(devpath, entry)| self.entries.get(*devpath) != Some(entry))
            .map(|(devpath, _)| devpath.clone())
            .collect();
        changed.sort();
        *self = new;
        Changes { changed, removed }
    }

    /// Removes `devpath` and every device below it (udev removes children
    /// first, but a lost event must not leave orphans).
    pub fn remove_subtree(&mut self, devpath: &str) -> Changes {
        let prefix = format!("{devpath}/");
        let mut removed: Vec<String> =
            self.entries.keys().filter(|path| path.as_str() == devpath || path.starts_with(&prefix)).cloned().collect();
        removed.sort();
        for path in &removed {
            self.entries.remove(path);
            self.candidates.remove(path);
        }
        Changes { changed: Vec::new(), removed }
    }

    /// Candidates at or below any of `devpaths` (whose own record or an
    /// ancestor's changed).
    pub fn candidates_under<'a>(&'a self, devpaths: &'a [String]) -> BTreeSet<&'a str> {
        let mut found = BTreeSet::new();
        for devpath in devpaths {
            let prefix = format!("{devpath}/");
            for candidate in self.candidates.range::<String, _>(devpath..) {
                if *candidate != *devpath && !candidate.starts_with(&prefix) {
                    break;
                }
                found.insert(candidate.as_str());
            }
        }
        found
    }

    /// A snapshot of every candidate.
    #[cfg(test)]
    pub fn snapshot_all(&self) -> SnapshotView<'_> {
        self.snapshot(self.candidates.iter().map(String::as_str))
    }

    /// A snapshot of `candidates` (in the order given) and their ancestors.
    pub fn snapshot<'a>(&'a self, candidates: impl IntoIterator<Item = &'a str>) -> SnapshotView<'a> {
        let candidates: Vec<&str> = candidates.into_iter().filter(|c| self.entries.contains_key(*c)).collect();
        // Every node wanted, each placed after its parent (roots first),
        // walking up each chain once; reversed below, so that a parent comes
        // after its children as the contract wants. No sort: a table of
        // 10,000 devices is laid out in one pass.
        let mut placed: HashMap<&str, u32> = HashMap::default();
        placed.reserve(candidates.len() * 2);
        let mut order: Vec<&Entry> = Vec::with_capacity(candidates.len() * 2);
        let mut chain: Vec<(&str, &Entry)> = Vec::new();
        for &candidate in &candidates {
            chain.clear();
            let mut at = Some(candidate);
            while let Some(devpath) = at {
                // A link back into the chain would be a cycle: stop there.
                if placed.contains_key(devpath) || chain.iter().any(|(seen, _)| *seen == devpath) {
                    break;
                }
                let Some(entry) = self.entries.get(devpath) else { break };
                chain.push((devpath, entry));
                at = entry.parent.as_deref();
            }
            for &(devpath, entry) in chain.iter().rev() {
                placed.insert(devpath, order.len() as u32);
                order.push(entry);
            }
        }
        let last = order.len() as u32 - u32::from(!order.is_empty());
        let index = |devpath: &str| placed.get(devpath).map(|&i| last - i);
        let nodes = order
            .iter()
            .rev()
            .map(|entry| NodeView::new(&entry.node, entry.parent.as_deref().and_then(index)))
            .collect();
        let candidates = candidates.iter().filter_map(|c| index(c)).collect();
        SnapshotView { nodes, candidates }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::contract::Origin;

    pub(crate) fn node(devpath: &str) -> Node {
        Node::bare(Origin::Udev, devpath, "")
    }

    fn parent_of(path: &str) -> Option<String> {
        path.rsplit_once('/').map(|(p, _)| p.to_string()).filter(|p| !p.is_empty())
    }

    fn table(paths: &[(&str, bool)]) -> DeviceTable {
        let mut t = DeviceTable::default();
        for (path, candidate) in paths {
            t.add(node(path), parent_of(path), *candidate);
        }
        t
    }

    #[test]
    fn parents_come_after_children_whatever_the_insertion_order() {
        let mut t = DeviceTable::default();
        t.add(node("/devices/usb1/1-1/tty/ttyUSB0"), Some("/devices/usb1/1-1".into()), true);
        t.add(node("/devices/usb1"), None, false);
        t.add(node("/devices/usb1/1-1"), Some("/devices/usb1".into()), true);
        t.add(node("/devices/usb1/1-1"), Some("/devices/usb1".into()), false);
        let s = t.snapshot_all();
        assert_eq!(s.nodes.len(), 3);
        for (i, n) in s.nodes.iter().enumerate() {
            if let Some(p) = n.parent {
                assert!(p as usize > i, "{} before its parent", n.devpath);
            }
        }
        let cands: Vec<&str> = s.candidates.iter().map(|&c| s.nodes[c as usize].devpath).collect();
        assert_eq!(cands, ["/devices/usb1/1-1", "/devices/usb1/1-1/tty/ttyUSB0"]);
        let tty = &s.nodes[s.candidates[1] as usize];
        assert_eq!(s.nodes[tty.parent.unwrap() as usize].devpath, "/devices/usb1/1-1");
    }

    #[test]
    fn a_snapshot_of_some_candidates_holds_their_ancestors_only() {
        let t = table(&[("/r", false), ("/r/a", true), ("/r/b", true), ("/r/b/c", true)]);
        let s = t.snapshot(["/r/b/c", "/r/b"]);
        let paths: Vec<&str> = s.nodes.iter().map(|n| n.devpath).collect();
        assert_eq!(paths, ["/r/b/c", "/r/b", "/r"]);
        assert_eq!(s.candidates, [0, 1]);
        assert_eq!(s.nodes[0].parent, Some(1));
        assert_eq!(s.nodes[1].parent, Some(2));
    }

    #[test]
    fn updates_say_what_changed_and_which_candidates_it_touches() {
        let mut t = table(&[("/r", false), ("/r/1-1", true), ("/r/1-1/tty0", true), ("/r/1-10", true)]);
        let mut update = DeviceTable::default();
        let mut changed = node("/r/1-1");
        changed.driver = Some("ch341".into());
        update.add(changed, Some("/r".into()), false);
        update.add(node("/r"), None, false);
        let changes = t.merge(update);
        assert_eq!(changes.changed, ["/r/1-1"], "an identical record is no change");
        assert!(t.is_candidate("/r/1-1"), "a candidate stays one when re-read as an ancestor");
        let under: Vec<&str> = t.candidates_under(&changes.changed).into_iter().collect();
        assert_eq!(under, ["/r/1-1", "/r/1-1/tty0"], "1-10 is not below 1-1");

        let removed = t.remove_subtree("/r/1-1");
        assert_eq!(removed.removed, ["/r/1-1", "/r/1-1/tty0"]);
        assert_eq!(t.candidates().collect::<Vec<_>>(), ["/r/1-10"]);

        let replaced = t.replace(table(&[("/r", false), ("/r/1-2", true)]));
        assert_eq!(replaced.removed, ["/r/1-10"]);
        assert_eq!(replaced.changed, ["/r/1-2"]);
    }
}

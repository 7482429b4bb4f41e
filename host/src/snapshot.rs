//! Building the immutable snapshots handed to handlers: a table of nodes in
//! which every device appears once, parents come after their children (the
//! contract's rule, which makes cycles impossible), and candidates are named
//! by index.

use std::collections::HashMap;

use crate::handler::bindings::{Node, Snapshot};

/// Collects nodes by devpath; `finish` orders and links them.
#[derive(Default)]
pub struct SnapshotBuilder {
    nodes: Vec<Node>,
    parents: Vec<Option<String>>,
    candidate: Vec<bool>,
    by_devpath: HashMap<String, usize>,
}

impl SnapshotBuilder {
    pub fn contains(&self, devpath: &str) -> bool {
        self.by_devpath.contains_key(devpath)
    }

    /// Adds `node` (its `parent` field is ignored; `parent_devpath` links it).
    /// A node added twice keeps its first record; being a candidate sticks.
    pub fn add(&mut self, node: Node, parent_devpath: Option<String>, candidate: bool) {
        if let Some(&index) = self.by_devpath.get(&node.devpath) {
            self.candidate[index] |= candidate;
            return;
        }
        self.by_devpath.insert(node.devpath.clone(), self.nodes.len());
        self.nodes.push(node);
        self.parents.push(parent_devpath);
        self.candidate.push(candidate);
    }

    pub fn finish(self) -> Snapshot {
        let SnapshotBuilder { nodes, parents, candidate, by_devpath } = self;
        let len = nodes.len();
        let parent_of: Vec<Option<usize>> =
            parents.iter().map(|p| p.as_ref().and_then(|p| by_devpath.get(p).copied())).collect();
        let depth = depths(&parent_of);
        // Deepest first: a parent is always shallower, hence later.
        let mut order: Vec<usize> = (0..len).collect();
        order.sort_by(|&a, &b| depth[b].cmp(&depth[a]).then_with(|| nodes[a].devpath.cmp(&nodes[b].devpath)));
        let mut position = vec![0u32; len];
        for (pos, &old) in order.iter().enumerate() {
            position[old] = pos as u32;
        }
        let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
        let mut sorted = Vec::with_capacity(len);
        for &old in &order {
            let mut node = slots[old].take().expect("each node is moved once");
            node.parent = parent_of[old].map(|p| position[p]);
            sorted.push(node);
        }
        let mut candidates: Vec<u32> = (0..len).filter(|&i| candidate[i]).map(|i| position[i]).collect();
        // Candidates in devpath order: stable output whatever the scan order.
        candidates.sort_by(|&a, &b| sorted[a as usize].devpath.cmp(&sorted[b as usize].devpath));
        Snapshot { nodes: sorted, candidates }
    }
}

/// Depth of every node (0 for a root). Parent links come from devpaths and
/// cannot form a cycle in sysfs, but a bad source must not hang the agent:
/// a walk longer than the table breaks the link.
fn depths(parent_of: &[Option<usize>]) -> Vec<usize> {
    let mut depth = vec![usize::MAX; parent_of.len()];
    for start in 0..parent_of.len() {
        let mut chain = vec![start];
        let mut at = start;
        while depth[at] == usize::MAX {
            match parent_of[at] {
                Some(parent) if chain.len() <= parent_of.len() => {
                    chain.push(parent);
                    at = parent;
                }
                _ => {
                    depth[at] = 0;
                    chain.pop();
                    break;
                }
            }
        }
        let mut d = depth[at];
        for &node in chain.iter().rev() {
            if depth[node] == usize::MAX {
                d += 1;
                depth[node] = d;
            } else {
                d = depth[node];
            }
        }
    }
    depth
}

/// The part of `snapshot` a `group` call needs: the selected candidates and
/// their ancestors, re-indexed (order preserved, so parents stay later).
pub fn selected(snapshot: &Snapshot, verdicts: &[bool]) -> Snapshot {
    let mut keep = vec![false; snapshot.nodes.len()];
    for (&candidate, _) in snapshot.candidates.iter().zip(verdicts).filter(|(_, v)| **v) {
        let mut at = Some(candidate);
        while let Some(index) = at {
            if std::mem::replace(&mut keep[index as usize], true) {
                break;
            }
            at = snapshot.nodes[index as usize].parent;
        }
    }
    let mut position = vec![u32::MAX; snapshot.nodes.len()];
    let mut nodes = Vec::new();
    for (index, node) in snapshot.nodes.iter().enumerate() {
        if keep[index] {
            position[index] = nodes.len() as u32;
            nodes.push(node.clone());
        }
    }
    for node in &mut nodes {
        node.parent = node.parent.map(|p| position[p as usize]);
    }
    let candidates = snapshot
        .candidates
        .iter()
        .zip(verdicts)
        .filter(|(_, v)| **v)
        .map(|(&c, _)| position[c as usize])
        .collect();
    Snapshot { nodes, candidates }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::handler::bindings::Origin;

    pub(crate) fn node(devpath: &str) -> Node {
        Node {
            origin: Origin::Udev,
            devpath: devpath.into(),
            kernel: devpath.rsplit('/').next().unwrap().into(),
            subsystem: String::new(),
            devtype: None,
            driver: None,
            devnode: None,
            devlinks: vec![],
            properties: vec![],
            attributes: vec![],
            tags: vec![],
            parent: None,
        }
    }

    #[test]
    fn parents_come_after_children_whatever_the_insertion_order() {
        let mut b = SnapshotBuilder::default();
        b.add(node("/devices/usb1"), None, false);
        b.add(node("/devices/usb1/1-1"), Some("/devices/usb1".into()), true);
        b.add(node("/devices/usb1/1-1/tty/ttyUSB0"), Some("/devices/usb1/1-1".into()), true);
        b.add(node("/devices/usb1/1-1"), Some("/devices/usb1".into()), false);
        let s = b.finish();
        assert_eq!(s.nodes.len(), 3);
        for (i, n) in s.nodes.iter().enumerate() {
            if let Some(p) = n.parent {
                assert!(p as usize > i, "{} before its parent", n.devpath);
            }
        }
        let cands: Vec<&str> = s.candidates.iter().map(|&c| s.nodes[c as usize].devpath.as_str()).collect();
        assert_eq!(cands, ["/devices/usb1/1-1", "/devices/usb1/1-1/tty/ttyUSB0"]);
        let tty = &s.nodes[s.candidates[1] as usize];
        assert_eq!(s.nodes[tty.parent.unwrap() as usize].devpath, "/devices/usb1/1-1");
    }

    #[test]
    fn selected_keeps_ancestors_and_reindexes() {
        let mut b = SnapshotBuilder::default();
        b.add(node("/r"), None, false);
        b.add(node("/r/a"), Some("/r".into()), true);
        b.add(node("/r/b"), Some("/r".into()), true);
        b.add(node("/r/b/c"), Some("/r/b".into()), true);
        let s = b.finish();
        let verdicts: Vec<bool> = s.candidates.iter().map(|&c| s.nodes[c as usize].devpath != "/r/a").collect();
        let sel = selected(&s, &verdicts);
        let paths: Vec<&str> = sel.nodes.iter().map(|n| n.devpath.as_str()).collect();
        assert_eq!(paths, ["/r/b/c", "/r/b", "/r"]);
        assert_eq!(sel.candidates, [1, 0]);
        assert_eq!(sel.nodes[0].parent, Some(1));
        assert_eq!(sel.nodes[1].parent, Some(2));
    }
}

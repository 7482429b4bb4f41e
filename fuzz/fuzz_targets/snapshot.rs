//! Any snapshot a host could send, as the SDK reads it: checking never
//! panics, and a snapshot it accepts never panics when read, reads every
//! string from its text, and reads back the same once laid out again
//! (the layout the host's `SnapshotView::encode` and `Snapshot::from_parts`
//! make).
#![no_main]

use arbitrary::Arbitrary;
use devsieve_sdk::bindings::devsieve::handler::types as wire;
use devsieve_sdk::{Device, Node, Snapshot};
use libfuzzer_sys::fuzz_target;

/// Words as small numbers (255 stands for the contract's "absent"), in
/// entries of the contract's sizes, so that layouts are often whole and
/// spans often land inside the text.
#[derive(Arbitrary, Debug)]
struct Input {
    text: String,
    nodes: Vec<[u8; 22]>,
    names: Vec<[u8; 2]>,
    pairs: Vec<[u8; 4]>,
    candidates: Vec<u8>,
    /// Cut this many words off the nodes (a layout that is not whole).
    cut: u8,
}

fn words<const N: usize>(entries: &[[u8; N]]) -> Vec<u32> {
    entries.iter().flatten().map(|&w| if w == 255 { u32::MAX } else { w.into() }).collect()
}

fn owned(device: Device<'_>) -> Node {
    Node {
        origin: device.origin(),
        devpath: device.devpath().into(),
        kernel: device.kernel().into(),
        subsystem: device.subsystem().into(),
        devtype: device.devtype().map(Into::into),
        driver: device.driver().map(Into::into),
        devnode: device.devnode().map(Into::into),
        devlinks: device.devlinks().map(Into::into).collect(),
        properties: device.properties().map(|(k, v)| (k.into(), v.into())).collect(),
        attributes: device.attributes().map(|(k, v)| (k.into(), v.into())).collect(),
        tags: device.tags().map(Into::into).collect(),
        parent: device.parent().map(|p| p.index()),
    }
}

fuzz_target!(|input: Input| {
    let mut nodes = words(&input.nodes);
    nodes.truncate(nodes.len().saturating_sub(usize::from(input.cut % 4)));
    let raw = wire::Snapshot {
        text: input.text,
        nodes,
        names: words(&input.names),
        pairs: words(&input.pairs),
        candidates: input.candidates.into_iter().map(u32::from).collect(),
    };
    let text = raw.text.clone();
    let Ok(snapshot) = Snapshot::new(raw) else { return };
    let nodes: Vec<Node> = (0..snapshot.len() as u32).map(|i| owned(snapshot.device(i))).collect();
    for (index, node) in nodes.iter().enumerate() {
        for s in [&node.devpath, &node.kernel, &node.subsystem].into_iter().chain(node.devlinks.iter()) {
            assert!(text.contains(s.as_str()));
        }
        // Ancestors are later nodes: the walk ends within the table.
        let device = snapshot.device(index as u32);
        assert!(device.self_and_ancestors().count() <= snapshot.len() - index);
    }
    let candidates: Vec<u32> = snapshot.candidates().map(|d| d.index()).collect();
    let again = Snapshot::from_parts(nodes.clone(), candidates.clone()).expect("a laid-out snapshot is accepted");
    let reread: Vec<Node> = (0..again.len() as u32).map(|i| owned(again.device(i))).collect();
    assert_eq!(reread, nodes);
    assert_eq!(again.candidates().map(|d| d.index()).collect::<Vec<_>>(), candidates);
});

//! Any snapshot a host could send, as the SDK reads it: checking never
//! panics, and a snapshot it accepts never panics when read, reads every
//! string from its text, and reads back the same once laid out again
//! (the layout the host's `SnapshotView::encode` and `Snapshot::from_parts`
//! make).
#![no_main]

use arbitrary::Arbitrary;
use devsieve_sdk::bindings::devsieve::handler::types::{self as wire, Pair, Range, Span};
use devsieve_sdk::{Device, Node, Origin, Snapshot};
use libfuzzer_sys::fuzz_target;

/// Small numbers, so that spans and ranges land inside their lists often.
#[derive(Arbitrary, Debug)]
struct RawNode {
    origin: u8,
    spans: [(u8, u8); 3],
    optional: [Option<(u8, u8)>; 3],
    lists: [(u8, u8); 4],
    parent: Option<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    text: String,
    nodes: Vec<RawNode>,
    names: Vec<(u8, u8)>,
    pairs: Vec<((u8, u8), (u8, u8))>,
    candidates: Vec<u8>,
}

fn span((start, len): (u8, u8)) -> Span {
    Span { start: start.into(), len: len.into() }
}

fn range((start, len): (u8, u8)) -> Range {
    Range { start: start.into(), len: len.into() }
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
    let origins = [Origin::Udev, Origin::Path, Origin::Usbip];
    let raw = wire::Snapshot {
        text: input.text,
        nodes: input
            .nodes
            .iter()
            .map(|n| wire::Node {
                origin: origins[usize::from(n.origin) % origins.len()],
                devpath: span(n.spans[0]),
                kernel: span(n.spans[1]),
                subsystem: span(n.spans[2]),
                devtype: n.optional[0].map(span),
                driver: n.optional[1].map(span),
                devnode: n.optional[2].map(span),
                devlinks: range(n.lists[0]),
                properties: range(n.lists[1]),
                attributes: range(n.lists[2]),
                tags: range(n.lists[3]),
                parent: n.parent.map(u32::from),
            })
            .collect(),
        names: input.names.into_iter().map(span).collect(),
        pairs: input.pairs.into_iter().map(|(k, v)| Pair { key: span(k), value: span(v) }).collect(),
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

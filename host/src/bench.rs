//! `devsieve bench`: full evaluations of synthetic device tables through each
//! built-in handler, and the agent's memory with every built-in loaded. The
//! figures go to BENCHMARKS.md; tests never assert timings.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::handler::bindings::{Node, Origin, Snapshot};
use crate::handler::{Runtime, builtin};
use crate::snapshot::{self, SnapshotBuilder};

#[derive(Debug, Serialize)]
pub struct Figure {
    pub handler: &'static str,
    pub candidates: usize,
    pub selected: usize,
    pub groups: usize,
    /// select + group over the whole table, median of the runs.
    pub full_evaluation_ms_p50: f64,
    pub full_evaluation_ms_max: f64,
    pub select_ms_p50: f64,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub figures: Vec<Figure>,
    /// Resident memory after loading every built-in, before any evaluation.
    pub rss_loaded_kib: u64,
    /// Resident memory after the evaluations.
    pub rss_after_kib: u64,
    pub load_all_builtins_ms: f64,
}

fn node(devpath: String, subsystem: &str, parent: bool) -> Node {
    Node {
        origin: Origin::Udev,
        kernel: devpath.rsplit('/').next().unwrap_or_default().to_string(),
        subsystem: subsystem.to_string(),
        devtype: None,
        driver: None,
        devnode: None,
        devlinks: Vec::new(),
        properties: Vec::new(),
        attributes: Vec::new(),
        tags: Vec::new(),
        parent: if parent { Some(0) } else { None },
        devpath,
    }
}

/// `count` tty devices, each under its own USB device behind one of 100 hubs;
/// one USB device in 100 is a CH340 (1a86:7523).
fn udev_table(count: usize) -> Snapshot {
    let mut b = SnapshotBuilder::default();
    for hub in 0..100 {
        b.add(node(format!("/devices/pci0000:00/usb{hub}"), "usb", false), None, false);
    }
    for i in 0..count {
        let hub = format!("/devices/pci0000:00/usb{}", i % 100);
        let usb = format!("{hub}/{}-{}", i % 100, i);
        let mut usb_node = node(usb.clone(), "usb", false);
        usb_node.devtype = Some("usb_device".into());
        let (vendor, product) = if i % 100 == 7 { ("1a86", "7523") } else { ("0bda", "58c6") };
        usb_node.attributes = vec![("idProduct".into(), product.into()), ("idVendor".into(), vendor.into())];
        usb_node.devnode = Some(format!("/dev/bus/usb/{:03}/{:03}", i % 100 + 1, i % 127 + 1));
        b.add(usb_node, Some(hub), true);
        let mut tty = node(format!("{usb}/{}-{}:1.0/ttyUSB{i}/tty/ttyUSB{i}", i % 100, i), "tty", false);
        tty.devnode = Some(format!("/dev/ttyUSB{i}"));
        b.add(tty, Some(usb), true);
    }
    let mut snapshot = b.finish();
    // Keep `count` candidates: the tty devices (half of the table's candidates).
    snapshot.candidates.retain(|&c| snapshot.nodes[c as usize].subsystem == "tty");
    snapshot
}

fn path_table(count: usize) -> Snapshot {
    let mut b = SnapshotBuilder::default();
    for i in 0..count {
        let mut n = node(format!("/dev/bench/tty{i:05}"), "", false);
        n.origin = Origin::Path;
        n.devnode = Some(n.devpath.clone());
        n.attributes = vec![("type".into(), "char".into())];
        b.add(n, None, true);
    }
    b.finish()
}

fn usb_table(count: usize) -> Snapshot {
    let mut snapshot = udev_table(count);
    snapshot.candidates = (0..snapshot.nodes.len() as u32)
        .filter(|&i| snapshot.nodes[i as usize].subsystem == "usb" && snapshot.nodes[i as usize].devtype.is_some())
        .collect();
    snapshot
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs every scenario `runs` times over `count` candidates.
pub fn run(runtime: &Runtime, count: usize, runs: usize) -> anyhow::Result<Results> {
    let started = Instant::now();
    let handlers = builtin::BUILTINS
        .iter()
        .map(|(name, bytes)| Ok((*name, runtime.load(name, bytes)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let load_all_builtins_ms = ms(started.elapsed());
    let rss_loaded_kib = rss_kib();

    let scenarios: Vec<(&'static str, String, Snapshot)> = vec![
        (
            "udev-rule",
            r#"{"udevRules":["SUBSYSTEM==\"tty\", ATTRS{idVendor}==\"1a86\", ATTRS{idProduct}==\"7523\""]}"#.into(),
            udev_table(count),
        ),
        ("glob", r#"{"groups":[{"paths":[{"path":"/dev/bench/tty*"}]}]}"#.into(), path_table(count)),
        ("usb-id", r#"{"usb":[{"vendor":"1a86","product":"7523"}],"includeChildren":false}"#.into(), usb_table(count)),
    ];
    let roots = [std::path::PathBuf::from("/dev")];
    let mut figures = Vec::new();
    for (name, config, table) in scenarios {
        let handler = &handlers.iter().find(|(n, _)| *n == name).expect("built-in exists").1;
        handler.needs(runtime, &config)?;
        let mut full = Vec::with_capacity(runs);
        let mut select_only = Vec::with_capacity(runs);
        let (mut selected_count, mut group_count) = (0, 0);
        for _ in 0..runs {
            let start = Instant::now();
            let verdicts = handler.select(runtime, &config, &table)?;
            select_only.push(start.elapsed());
            let selected = snapshot::selected(&table, &verdicts);
            let groups = handler.group(runtime, &config, &selected, &roots)?;
            full.push(start.elapsed());
            selected_count = selected.candidates.len();
            group_count = groups.len();
        }
        full.sort();
        select_only.sort();
        figures.push(Figure {
            handler: name,
            candidates: table.candidates.len(),
            selected: selected_count,
            groups: group_count,
            full_evaluation_ms_p50: ms(full[runs / 2]),
            full_evaluation_ms_max: ms(full[runs - 1]),
            select_ms_p50: ms(select_only[runs / 2]),
        });
    }
    Ok(Results { figures, rss_loaded_kib, rss_after_kib: rss_kib(), load_all_builtins_ms })
}

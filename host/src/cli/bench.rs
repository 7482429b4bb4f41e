//! `devsieve bench`: the evaluation pipeline over synthetic device tables —
//! a full evaluation of N candidates through each built-in handler, and one
//! event among them — and the agent's memory with every built-in loaded.
//! The figures go to BENCHMARKS.md; tests never assert timings.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use super::Cli;
use crate::builtin;
use crate::config::{HandlerRef, Resource};
use crate::contract::{Node, Origin};
use crate::evaluation::{Prepared, ResourceEval};
use crate::handler::{Compiler, Runtime};
use crate::model::{Action, DeviceTable, PathChange, UdevEvent};
use crate::source::{MemorySource, Sources};

/// Measure full evaluations of synthetic devices through every built-in handler.
#[derive(clap::Args)]
pub(super) struct Args {
    /// Candidates per evaluation.
    #[arg(long, default_value_t = 10_000)]
    devices: usize,
    #[arg(long, default_value_t = 21)]
    runs: usize,
}

pub(super) fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = cli.runtime(Compiler::in_process())?;
    let results = measure(&runtime, args.devices, args.runs.max(1)).context("benchmark")?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Serialize)]
struct Figure {
    pub handler: &'static str,
    pub candidates: usize,
    pub groups: usize,
    /// The source's part of a first evaluation: copying the synthetic table
    /// in and diffing it against the (empty) last one. A real source's cost
    /// (libudev, readdir) is measured end to end by the agent suite.
    pub collect_ms_p50: f64,
    /// Snapshot, select, group and check the whole table: median of the runs.
    pub full_evaluation_ms_p50: f64,
    pub full_evaluation_ms_max: f64,
    /// A matching device appears among the others (the table update and
    /// the evaluation it causes): median of the runs.
    pub one_event_ms_p50: f64,
    pub one_event_ms_max: f64,
}

#[derive(Debug, Serialize)]
struct Results {
    pub figures: Vec<Figure>,
    /// Resident memory after loading every built-in, before any evaluation.
    pub rss_loaded_kib: u64,
    /// Resident memory after the evaluations.
    pub rss_after_kib: u64,
    pub load_all_builtins_ms: f64,
}

fn node(devpath: String, subsystem: &str) -> Node {
    Node::bare(Origin::Udev, &devpath, subsystem)
}

/// Device `i`: a USB device behind one of 100 hubs with a tty child; one in
/// 100 is a CH340 (1a86:7523). Returns the usb and tty devpaths.
fn add_usb_serial(table: &mut DeviceTable, i: usize, ch340: bool, candidates: &str) -> (String, String) {
    let hub = format!("/devices/pci0000:00/usb{}", i % 100);
    table.add(node(hub.clone(), "usb"), None, false);
    let usb = format!("{hub}/{}-{}", i % 100, i);
    let mut usb_node = node(usb.clone(), "usb");
    usb_node.devtype = Some("usb_device".into());
    let (vendor, product) = if ch340 { ("1a86", "7523") } else { ("0bda", "58c6") };
    usb_node.attributes = vec![
        ("busnum".into(), format!("{}", i % 100 + 1)),
        ("devnum".into(), format!("{}", i % 127 + 1)),
        ("idProduct".into(), product.into()),
        ("idVendor".into(), vendor.into()),
    ];
    usb_node.devnode = Some(format!("/dev/bus/usb/{:03}/{:03}", i % 100 + 1, i % 127 + 1));
    table.add(usb_node, Some(hub), candidates == "usb");
    let tty = format!("{usb}/{}-{}:1.0/ttyUSB{i}/tty/ttyUSB{i}", i % 100, i);
    let mut tty_node = node(tty.clone(), "tty");
    tty_node.devnode = Some(format!("/dev/ttyUSB{i}"));
    table.add(tty_node, Some(usb.clone()), candidates == "tty");
    (usb, tty)
}

fn udev_table(count: usize, candidates: &str) -> DeviceTable {
    let mut table = DeviceTable::default();
    for i in 0..count {
        add_usb_serial(&mut table, i, i % 100 == 7, candidates);
    }
    table
}

fn bench_path(i: usize) -> String {
    format!("/dev/bench/tty{i:05}")
}

fn add_path(table: &mut DeviceTable, i: usize) {
    let mut n = node(bench_path(i), "");
    n.origin = Origin::Path;
    n.devnode = Some(n.devpath.clone());
    n.attributes = vec![("type".into(), "char".into())];
    table.add(n, None, true);
}

fn path_table(count: usize) -> DeviceTable {
    let mut table = DeviceTable::default();
    for i in 0..count {
        add_path(&mut table, i);
    }
    table
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

/// Median and maximum.
fn spread(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    (ms(samples[samples.len() / 2]), ms(samples[samples.len() - 1]))
}

/// Runs every scenario `runs` times over `count` candidates.
fn measure(runtime: &Runtime, count: usize, runs: usize) -> anyhow::Result<Results> {
    let started = Instant::now();
    let handlers = builtin::BUILTINS
        .iter()
        .map(|builtin| Ok((builtin.name, runtime.load(builtin.name, builtin.bytes, builtin.digest)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let load_all_builtins_ms = ms(started.elapsed());
    let rss_loaded_kib = rss_kib();

    let scenarios: [(&'static str, &str, &str); 3] = [
        (
            "udev-rule",
            r#"{"udevRules":["SUBSYSTEM==\"tty\", ATTRS{idVendor}==\"1a86\", ATTRS{idProduct}==\"7523\""]}"#,
            "tty",
        ),
        ("glob", r#"{"groups":[{"paths":[{"path":"/dev/bench/tty*"}]}]}"#, "path"),
        ("usb-id", r#"{"usb":[{"vendor":"1a86","product":"7523"}],"includeChildren":false}"#, "usb"),
    ];
    let mut figures = Vec::new();
    for (name, config, candidates) in scenarios {
        let handler = handlers.iter().find(|(n, _)| *n == name).expect("built-in exists").1.clone();
        let needs = handler.needs(runtime, config)?;
        let resource = Resource::plain(format!("devsieve.io/bench-{name}"), HandlerRef::Builtin(name.into()), config);
        let prepared = || Prepared { resource: resource.clone(), handler: handler.clone(), needs: needs.clone() };
        let fresh = || if candidates == "path" { path_table(count) } else { udev_table(count, candidates) };
        let source = MemorySource::default();
        let sources = Sources::new(vec![Box::new(source.clone())]);

        let (mut collect, mut full, mut one) = (Vec::new(), Vec::new(), Vec::new());
        let mut groups = 0;
        for run in 0..runs {
            *source.table() = fresh();
            let mut eval = ResourceEval::new(prepared());
            let start = Instant::now();
            let changes = eval.take_rescan(&sources)?;
            collect.push(start.elapsed());
            let start = Instant::now();
            let evaluation = eval.evaluate(runtime, changes, start).expect("a first evaluation asks the handler");
            full.push(start.elapsed());
            groups = evaluation.outcome?.len();

            // One new matching device among the others.
            let i = count + run;
            let start = Instant::now();
            let evaluation = if candidates == "path" {
                add_path(&mut source.table(), i);
                let change = PathChange { entries: [PathBuf::from(bench_path(i))].into(), rescan: false };
                eval.on_paths(runtime, &sources, &change)
            } else {
                let (usb, tty) = add_usb_serial(&mut source.table(), i, true, candidates);
                let (devpath, subsystem) = if candidates == "usb" { (usb, "usb") } else { (tty, "tty") };
                let event = UdevEvent {
                    action: Action::Add,
                    syspath: PathBuf::from(format!("/sys{devpath}")),
                    devpath,
                    subsystem: subsystem.into(),
                };
                eval.on_udev(runtime, &sources, &event)
            };
            one.push(start.elapsed());
            let after = evaluation.expect("a new matching device asks the handler").outcome?.len();
            anyhow::ensure!(
                after == groups + 1,
                "{name}: the new device was not found ({after} groups, {groups} before)"
            );
        }
        let (collect_p50, _) = spread(collect);
        let (full_p50, full_max) = spread(full);
        let (one_p50, one_max) = spread(one);
        figures.push(Figure {
            handler: name,
            candidates: count,
            groups,
            collect_ms_p50: collect_p50,
            full_evaluation_ms_p50: full_p50,
            full_evaluation_ms_max: full_max,
            one_event_ms_p50: one_p50,
            one_event_ms_max: one_max,
        });
    }
    Ok(Results { figures, rss_loaded_kib, rss_after_kib: rss_kib(), load_all_builtins_ms })
}

#!/usr/bin/env python3
"""The results table of tests/bench/run: reads what the run wrote in --dir
(agent.json from the agent suite, scale.json from `devsieve bench`,
handler-start/*.json from hyperfine) and prints one markdown table,
figure | value | target | machine, each figure beside its target from the
design notes and whether it met it, under the full machine line. Standard
library only."""

import argparse
import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

HOTPLUG = ("p50 < 10 ms, p99 < 50 ms", lambda v: v["p50"] < 10 and v["p99"] < 50)
# By the figure's name prefix: the target, and when it is met.
AGENT_TARGETS = [
    ("start → registered", ("< 100 ms (p50)", lambda v: v["p50"] < 100)),
    ("kubelet restart", ("< 100 ms (p50)", lambda v: v["p50"] < 100)),
    ("Allocate", ("p99 < 1 ms", lambda v: v["p99"] < 1)),
    ("hotplug:", HOTPLUG),
    ("removal:", HOTPLUG),
    ("idle memory", ("VmRSS ≤ 17 MiB", lambda v: v["vm_rss"] <= 17 * 1024)),
    ("memory after the restarts", ("VmRSS ≤ 17 MiB", lambda v: v["vm_rss"] <= 17 * 1024)),
    ("idle CPU", ("< 10 ms per minute", lambda v: v["utime_stime_per_min"] < 10 and v["schedstat_per_min"] < 10)),
    # Before "idle wake-ups": the first matching prefix is taken.
    ("idle wake-ups with 1 USB/IP server", ("one listing per refresh (60/min) and little else (≤ 10 wake-ups per listing)",
        lambda v: v["listings_per_min"] <= 61 and v["per_min"] <= 10 * max(v["listings_per_min"], 1))),
    ("idle wake-ups", ("no periodic wake-ups", lambda v: v["total"] == 0)),
    ("USB/IP: exported", ("≤ one refresh + 10 ms (max)", lambda v: v["max"] <= 1010)),
    ("one file among 10,000", ("< 5 ms (p50)", lambda v: v["p50"] < 5)),
]


def machine(load, date):
    """The full machine line, and the short form each row carries."""
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    kib = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
    system = next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME=")), "")
    full = f"{nproc} cores (nproc), {cpu}, {kib / 2**20:.0f} GiB RAM, {system}, Linux {platform.release()}, {date}, load average at start {load}"
    return full, f"{nproc} × {cpu}, {kib / 2**20:.0f} GiB, {date[:10]}, load {load.split()[0]}"


def ms(x):
    return f"{x:.3g}" if x < 10 else f"{x:.0f}" if x >= 100 else f"{x:.1f}"


def value(figure):
    v, unit, n = figure["values"], figure["unit"], figure["n"]
    if unit == "ms" and "p50" in v:
        return f"p50 {ms(v['p50'])} · p99 {ms(v['p99'])} · max {ms(v['max'])} ms (n={n})"
    if unit == "KiB":
        split = f" (anonymous {v['rss_anon'] / 1024:.1f} · file {v['rss_file'] / 1024:.1f})" if "rss_anon" in v else ""
        return f"VmRSS {v['vm_rss'] / 1024:.1f} MiB{split} · VmHWM {v['vm_hwm'] / 1024:.1f} MiB"
    if "utime_stime" in v:
        return (f"{ms(v['utime_stime'])} ms utime+stime ({ms(v['utime_stime_per_min'])} ms/min), "
                f"{ms(v['schedstat'])} ms on CPU by schedstat ({ms(v['schedstat_per_min'])} ms/min), over {v['window_s']:.0f} s")
    if "total" in v:
        threads = ", ".join(f"{name} {count}" for name, count in sorted(figure["per_thread"].items(), key=lambda kv: -kv[1]) if count)
        return (f"{v['total']} context switches in {v['window_s']:.0f} s ({v['per_min']:.3g}/min; "
                f"{threads or 'no thread woke'}; {v['threads']} threads; {v['lists_sent']} lists sent)")
    return json.dumps(v)


def judged(target, met):
    return f"{target}: {'met' if met else '**missed**'}"


def rows(out):
    agent = out / "agent.json"
    if agent.exists():
        for figure in json.loads(agent.read_text())["figures"]:
            target = next((t for prefix, t in AGENT_TARGETS if figure["name"].startswith(prefix)), None)
            yield figure["name"], value(figure), judged(target[0], target[1](figure["values"])) if target else "—"
    else:
        yield "agent suite", "did not run (no agent.json)", "—"
    scale = out / "scale.json"
    if scale.exists():
        results = json.loads(scale.read_text())
        for f in results["figures"]:
            yield (f"full evaluation of {f['candidates']:,} candidates ({f['handler']}, in-process)",
                   f"p50 {ms(f['full_evaluation_ms_p50'])} · max {ms(f['full_evaluation_ms_max'])} ms ({f['groups']} group{'s' if f['groups'] != 1 else ''};"
                   f" the synthetic source's copy and diff before it: {ms(f['collect_ms_p50'])} ms)",
                   judged("< 50 ms (p50)", f["full_evaluation_ms_p50"] < 50))
        for f in results["figures"]:
            yield (f"one event among {f['candidates']:,} ({f['handler']}, in-process)",
                   f"p50 {ms(f['one_event_ms_p50'])} · max {ms(f['one_event_ms_max'])} ms",
                   judged("< 5 ms (p50)", f["one_event_ms_p50"] < 5))
        yield ("RSS with all built-ins loaded (in-process)",
               f"{results['rss_loaded_kib'] / 1024:.1f} MiB loaded, {results['rss_after_kib'] / 1024:.1f} MiB after the evaluations",
               judged("≤ 17 MiB", results["rss_loaded_kib"] <= 17 * 1024))
    else:
        yield "devsieve bench", "did not run (no scale.json)", "—"
    starts = [out / "handler-start" / f"{run}.json" for run in ("cold", "warm", "registry-down")]
    starts = [path for path in starts if path.exists()]
    for path in starts:
        for r in json.loads(path.read_text())["results"]:
            mean, sd = r["mean"] * 1e3, r["stddev"] * 1e3
            text = f"mean {ms(mean)} ± {ms(sd)} · min {ms(r['min'] * 1e3)} · max {ms(r['max'] * 1e3)} ms (n={len(r['times'])})"
            warm = r["command"].startswith("warm")
            yield f"handler start, {r['command']}", text, judged("< 100 ms (mean)", mean < 100) if warm else "—"
    if not starts:
        yield "handler start (tests/bench/handler-start.sh)", "skipped (needs docker-registry and hyperfine)", "—"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the bench output directory")
    parser.add_argument("--load", default=" ".join(f"{x:.2f}" for x in os.getloadavg()), help="load average at start")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parser.add_argument("--date", default=now, help="when the run started")
    args = parser.parse_args()
    full, short = machine(args.load, args.date)
    print(f"Machine: {full}\n")
    print("| figure | value | target | machine |")
    print("| --- | --- | --- | --- |")
    for figure, text, target in rows(args.dir):
        print(f"| {figure} | {text} | {target} | {short} |")


if __name__ == "__main__":
    main()

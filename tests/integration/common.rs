//! Running the real binary and reading what it prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn devsieve() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_devsieve"));
    // One cache for the whole run: each handler is compiled once.
    command.env("DEVSIEVE_CACHE_DIR", cache_dir()).env_remove("DEVSIEVE_LOG");
    command
}

fn cache_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp cache dir")).path()
}

pub use devsieve_test_fixtures::{example_handler, test_handler};

pub fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `devsieve discover --json` on `config`; the parsed reports and stderr.
pub fn discover_json(config: &Path, extra: &[&str]) -> (serde_json::Value, Output) {
    let output =
        devsieve().args(["discover", "--json", "--config"]).arg(config).args(extra).output().expect("running devsieve");
    let (stdout, stderr) = text(&output);
    let reports = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("discover printed no JSON ({e}):\nstdout: {stdout}\nstderr: {stderr}"));
    (reports, output)
}

/// The report of `resource` in `reports`.
pub fn report<'a>(reports: &'a serde_json::Value, resource: &str) -> &'a serde_json::Value {
    reports
        .as_array()
        .expect("reports are a list")
        .iter()
        .find(|r| r["resource"] == resource)
        .unwrap_or_else(|| panic!("no report for {resource} in {reports:#}"))
}

/// A umockdev tree of the workspace's tests/cases.
pub fn case_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases").join(relative)
}

/// `command` (usually [`devsieve`] with arguments) run over the mocked
/// sysfs `tree` by umockdev-run, with the same environment.
pub fn under_umockdev(tree: &Path, command: &Command) -> Output {
    let mut wrapped = Command::new("umockdev-run");
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped.arg("--device").arg(tree).arg("--").arg(command.get_program()).args(command.get_args());
    wrapped.output().expect("running umockdev-run")
}

/// The JSON reports `discover --json` printed, or a panic showing what it printed.
pub fn reports_of(output: &Output) -> serde_json::Value {
    let (stdout, stderr) = text(output);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("discover printed no JSON ({e}):\nstdout: {stdout}\nstderr: {stderr}"))
}

/// The host paths of the device nodes `report` grants, sorted.
pub fn granted_nodes(report: &serde_json::Value) -> Vec<String> {
    let mut nodes: Vec<String> = report["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["device_nodes"].as_array().into_iter().flatten())
        .map(|n| n["host_path"].as_str().unwrap_or_default().to_string())
        .collect();
    nodes.sort();
    nodes
}

/// What is compared: groups in id order; members, device nodes, mounts and env
/// as sets (their order carries no meaning: the env's UDEV_DEVNODE_<i> names
/// already tie each node to its number).
pub fn normalize(reports: &serde_json::Value) -> serde_json::Value {
    let mut reports = reports.clone();
    let sort_by_json = |value: &mut serde_json::Value| {
        if let Some(items) = value.as_array_mut() {
            items.sort_by_key(|item| item.to_string());
        }
    };
    for report in reports.as_array_mut().into_iter().flatten() {
        if let Some(groups) = report.get_mut("groups").and_then(serde_json::Value::as_array_mut) {
            for group in groups.iter_mut() {
                for key in ["members", "device_nodes", "mounts", "env"] {
                    if let Some(value) = group.get_mut(key) {
                        sort_by_json(value);
                    }
                }
            }
            groups.sort_by_key(|group| group["id"].to_string());
        }
    }
    reports
}

/// A line diff (longest common subsequence; the files are small).
pub fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut lines: Vec<(char, &str)> = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            lines.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            lines.push(('+', b[j]));
            j += 1;
        } else {
            lines.push(('-', a[i]));
            i += 1;
        }
    }
    // Changed lines with 4 lines of context; `...` where lines are left out.
    const CONTEXT: usize = 4;
    let changed: Vec<usize> = (0..lines.len()).filter(|&k| lines[k].0 != ' ').collect();
    let near = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= CONTEXT);
    let mut out = String::new();
    let mut skipping = false;
    for (k, (mark, line)) in lines.iter().enumerate() {
        if near(k) {
            out += &format!("{mark}  {line}\n");
            skipping = false;
        } else if !skipping {
            out += "   ...\n";
            skipping = true;
        }
    }
    out
}

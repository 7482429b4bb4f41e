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

/// A component built for the tests (see host/build.rs).
pub fn test_guest(name: &str) -> PathBuf {
    Path::new(env!("DEVSIEVE_TEST_GUESTS_DIR")).join(format!("devsieve_{}.wasm", name.replace('-', "_")))
}

pub fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// `devsieve discover --json` on `config`; the parsed reports and stderr.
pub fn discover_json(config: &Path, extra: &[&str]) -> (serde_json::Value, Output) {
    let output = devsieve()
        .args(["discover", "--json", "--config"])
        .arg(config)
        .args(extra)
        .output()
        .expect("running devsieve");
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

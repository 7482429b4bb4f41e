//! Data-driven migration cases: every folder under `tests/cases/migrate/`
//! holds a peer's file as its users have it (`input.yaml`) and either the
//! devsieve config `devsieve import` prints for it (`expected.yaml`) or the
//! error it must give (`expected-error.txt`). See tests/cases/migrate/README.md.
//!
//! `DEVSIEVE_BLESS=1` rewrites `expected.yaml` and `granted.txt` from the
//! actual output; read the `git diff` before keeping it.

use std::path::{Path, PathBuf};

use crate::common::{devsieve, diff, granted_nodes, normalize, text, under_umockdev};

fn case_dirs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases/migrate");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    assert!(dirs.len() >= 6, "tests/cases/migrate lost its cases: {dirs:?}");
    dirs
}

fn bless() -> bool {
    std::env::var_os("DEVSIEVE_BLESS").is_some()
}

/// Compares `actual` with the file `name` of `case`, or rewrites it when blessing.
fn expect_file(case: &Path, name: &str, actual: &str) -> Result<(), String> {
    let path = case.join(name);
    if bless() {
        std::fs::write(&path, actual).unwrap();
        return Ok(());
    }
    let expected = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!("{name} differs (- expected, + actual):\n{}", diff(&expected, actual)))
    }
}

/// `discover --json` over the case's tree with `config`: the normalized reports.
fn discover(case: &Path, config: &str) -> Result<serde_json::Value, String> {
    let mut command = devsieve();
    command.current_dir(case).args(["discover", "--json", "--config", config]);
    let output = under_umockdev(&case.join("device.umockdev"), &command);
    let (stdout, stderr) = text(&output);
    if !output.status.success() {
        return Err(format!("discover --config {config} failed: {stderr}\n{stdout}"));
    }
    serde_json::from_str(&stdout).map(|r| normalize(&r)).map_err(|e| format!("{config}: no JSON ({e}): {stdout}"))
}

fn run_case(case: &Path) -> Result<(), String> {
    let import = devsieve().current_dir(case).args(["import", "input.yaml"]).output().unwrap();
    let (stdout, stderr) = text(&import);
    let expected_error = case.join("expected-error.txt");
    if expected_error.exists() {
        let wanted = std::fs::read_to_string(&expected_error).unwrap();
        let validate = devsieve().current_dir(case).args(["validate", "--config", "input.yaml"]).output().unwrap();
        for (command, output) in [("import", &import), ("validate", &validate)] {
            let stderr = text(output).1;
            if output.status.success() {
                return Err(format!("{command} accepted a file it must refuse"));
            }
            if let Some(missing) = wanted.lines().filter(|l| !l.trim().is_empty()).find(|l| !stderr.contains(l.trim()))
            {
                return Err(format!("{command}'s error lacks {missing:?}: {stderr}"));
            }
        }
        return Ok(());
    }
    if !import.status.success() {
        return Err(format!("import failed: {stderr}"));
    }
    expect_file(case, "expected.yaml", &stdout)?;
    let validate = devsieve().current_dir(case).args(["validate", "--config", "input.yaml"]).output().unwrap();
    if !validate.status.success() {
        return Err(format!("validate refused the peer's file: {}", text(&validate).1));
    }
    if case.join("device.umockdev").exists() {
        let peer = discover(case, "input.yaml")?;
        let native = discover(case, "expected.yaml")?;
        if peer != native {
            return Err(format!(
                "the peer's file and the imported config advertise different groups:\n{}",
                diff(&format!("{native:#}"), &format!("{peer:#}"))
            ));
        }
        let mut granted: Vec<String> = peer.as_array().into_iter().flatten().flat_map(granted_nodes).collect();
        granted.sort();
        granted.dedup();
        expect_file(case, "granted.txt", &(granted.join("\n") + "\n"))?;
    }
    Ok(())
}

#[test]
fn migrate_cases() {
    let failures: Vec<String> = case_dirs()
        .iter()
        .filter_map(|case| {
            run_case(case).err().map(|e| format!("{}: {e}", case.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(failures.is_empty(), "{} case(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

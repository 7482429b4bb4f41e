//! Data-driven udev cases: every folder under `tests/cases/udev/` holds a
//! umockdev tree, a devsieve config and the expected `discover --json` output
//! (or the error a bad config must produce). See tests/cases/udev/README.md.
//!
//! `udev_cases` runs every case and reports all failing cases at once.
//! `udev_cases_agree_with_udevadm` checks the `udev-rule` handler's selection
//! against systemd's own `udevadm test` over the same trees.
//!
//! `DEVSIEVE_BLESS=1` rewrites expected.json from the actual output. That is a
//! maintainer's tool for deliberate changes: expected outputs are written by
//! reasoning about udev, and a blessed diff must be read before it is kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{devsieve, diff, normalize, text, under_umockdev};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/cases/udev")
}

fn case_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/cases/udev exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no cases under {}", cases_dir().display());
    dirs
}

fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "`{tool}` is not installed (Debian package {package}); these tests need it");
}

fn discover(case: &Path, config: &Path) -> Result<(Value, Output), String> {
    let mut command = devsieve();
    command.args(["discover", "--json", "--config"]).arg(config);
    let output = under_umockdev(&case.join("device.umockdev"), &command);
    let (stdout, stderr) = text(&output);
    serde_json::from_str(&stdout).map(|json| (json, output.clone())).map_err(|e| {
        format!("discover printed no JSON ({e}); exit {:?}\nstdout: {stdout}\nstderr: {stderr}", output.status.code())
    })
}

fn run_case(case: &Path) -> Result<(), String> {
    let config = case.join("config.yaml");
    let expected_json = case.join("expected.json");
    let expected_error = case.join("expected-error.txt");
    if expected_error.exists() {
        let wanted: Vec<String> = std::fs::read_to_string(&expected_error)
            .unwrap()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        let mut problems = Vec::new();
        let (reports, output) = discover(case, &config)?;
        if output.status.success() {
            problems.push("discover exited 0 for a bad config".to_string());
        }
        let errors: Vec<&str> = reports.as_array().into_iter().flatten().filter_map(|r| r["error"].as_str()).collect();
        if !errors.iter().any(|e| wanted.iter().all(|w| e.contains(w.as_str()))) {
            problems.push(format!("no report's error contains all of {wanted:?}; errors: {errors:#?}"));
        }
        let output = devsieve().args(["validate", "--config"]).arg(&config).output().expect("running devsieve");
        let (_, stderr) = text(&output);
        if output.status.success() {
            problems.push("validate exited 0 for a bad config".to_string());
        }
        let missing: Vec<&String> = wanted.iter().filter(|w| !stderr.contains(w.as_str())).collect();
        if !missing.is_empty() {
            problems.push(format!("validate's stderr lacks {missing:?}; stderr: {stderr}"));
        }
        return if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) };
    }

    let (actual, output) = discover(case, &config)?;
    if std::env::var_os("DEVSIEVE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&expected_json, serde_json::to_string_pretty(&normalize(&actual)).unwrap() + "\n").unwrap();
        return Ok(());
    }
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(&expected_json).map_err(|e| {
            format!("{}: {e} (a case needs expected.json or expected-error.txt)", expected_json.display())
        })?)
        .map_err(|e| format!("{}: not JSON: {e}", expected_json.display()))?;
    let (expected, actual) = (normalize(&expected), normalize(&actual));
    let mut problems = Vec::new();
    if expected != actual {
        let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap();
        problems
            .push(format!("output differs (- expected, + actual):\n{}", diff(&pretty(&expected), &pretty(&actual))));
    }
    let errored = actual.as_array().into_iter().flatten().any(|r| r.get("error").is_some());
    if output.status.success() == errored {
        let (_, stderr) = text(&output);
        problems.push(format!(
            "exit status {:?} does not fit the reports (error present: {errored}); stderr: {stderr}",
            output.status.code()
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("\n")) }
}

#[test]
fn udev_cases() {
    require_tool("umockdev-run", "umockdev");
    let started = std::time::Instant::now();
    let dirs = case_dirs();
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|case| {
            let name = case.file_name().unwrap().to_string_lossy().into_owned();
            run_case(case).err().map(|problem| format!("=== case {name}\n{problem}"))
        })
        .collect();
    eprintln!("udev cases: {} run in {:.1?}", dirs.len(), started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} udev cases failed:\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------
// The udevadm oracle.

/// A device of a umockdev tree: devpath, whether it has a node, its tags.
struct TreeDevice {
    devpath: String,
    has_node: bool,
    tags: Vec<String>,
}

fn tree_devices(tree: &Path) -> Vec<TreeDevice> {
    let text = std::fs::read_to_string(tree).unwrap();
    let mut devices: Vec<TreeDevice> = Vec::new();
    for line in text.lines() {
        if let Some(devpath) = line.strip_prefix("P: ") {
            devices.push(TreeDevice { devpath: devpath.to_string(), has_node: false, tags: Vec::new() });
        } else if let Some(device) = devices.last_mut() {
            if line.starts_with("N: ") {
                device.has_node = true;
            } else if let Some(tags) = line.strip_prefix("E: TAGS=") {
                device.tags = tags.split(':').filter(|t| !t.is_empty()).map(String::from).collect();
            }
        }
    }
    devices
}

/// One udev rule of a case, numbered for the oracle.
struct OracleRule {
    label: String,
    rule: String,
}

/// Runs `udevadm test` on `devpath` over `tree` in a private mount namespace
/// with `rules_dir` as /etc/udev/rules.d and fresh /run and /dev; returns the
/// marks (`DEVSIEVE_MATCH_<k>`) udev set.
fn udevadm_marks(tree: &Path, rules_dir: &Path, scratch: &Path, devpath: &str) -> Result<BTreeSet<usize>, String> {
    const SCRIPT: &str = r#"set -e
tree=$1 rules=$2 olddev=$3 syspath=$4
mount --rbind /dev "$olddev"
mount --bind "$rules" /etc/udev/rules.d
mount -t tmpfs devsieve-run /run
mkdir /run/udev
mount -t tmpfs devsieve-dev /dev
for n in null zero full random urandom tty; do touch /dev/$n; mount --bind "$olddev/$n" /dev/$n; done
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
exec umockdev-run --device "$tree" -- udevadm test --action=add "$syspath"
"#;
    let olddev = scratch.join("olddev");
    std::fs::create_dir_all(&olddev).unwrap();
    let output = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", SCRIPT, "oracle"])
        .arg(tree)
        .arg(rules_dir)
        .arg(&olddev)
        .arg(format!("/sys{devpath}"))
        .output()
        .map_err(|e| format!("running unshare: {e}"))?;
    let (stdout, stderr) = text(&output);
    if !output.status.success() {
        return Err(format!("udevadm test {devpath} failed ({:?}):\n{stderr}", output.status.code()));
    }
    Ok(stdout
        .lines()
        .filter_map(|line| line.strip_prefix("DEVSIEVE_MATCH_")?.strip_suffix("=1")?.parse().ok())
        .collect())
}

fn oracle_case(case: &Path) -> Result<Vec<String>, String> {
    let tree = case.join("device.umockdev");
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(case.join("config.yaml")).unwrap()).unwrap();
    let mut rules = Vec::new();
    let mut skipped = Vec::new();
    for resource in config["resources"].as_sequence().into_iter().flatten() {
        let handler = resource["handler"].as_str().unwrap_or_default();
        if handler != "udev-rule" && handler != "builtin:udev-rule" {
            continue;
        }
        let name = resource["name"].as_str().unwrap_or_default();
        for (i, rule) in resource["config"]["udevRules"].as_sequence().into_iter().flatten().enumerate() {
            let rule = rule.as_str().unwrap().to_string();
            // Under umockdev a parent has no udev database, so udev sees no
            // parent tags at all: TAGS cannot be checked against udevadm here.
            if rule.contains("TAGS") {
                skipped.push(format!(
                    "{name} udevRules[{i}] ({rule}): parent tags are invisible to udevadm under umockdev"
                ));
                continue;
            }
            rules.push(OracleRule { label: format!("{name} udevRules[{i}]"), rule });
        }
    }
    if rules.is_empty() {
        return Ok(skipped);
    }
    let devices = tree_devices(&tree);
    let scratch = tempfile::tempdir().unwrap();

    // devsieve: each rule alone, without grouping, so that every selected
    // device with a node is one group whose only member is that device.
    let mut yaml = String::from("resources:\n");
    for (k, rule) in rules.iter().enumerate() {
        yaml += &format!(
            "  - name: oracle-{k}\n    handler: udev-rule\n    config:\n      udevRules: [{}]\n",
            serde_json::to_string(&rule.rule).unwrap()
        );
    }
    let config = scratch.path().join("oracle.yaml");
    std::fs::write(&config, yaml).unwrap();
    let (reports, _) = discover(case, &config)?;
    let mut by_devsieve: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (k, rule) in rules.iter().enumerate() {
        let report = reports
            .as_array()
            .and_then(|r| r.iter().find(|r| r["resource"] == format!("devsieve.io/oracle-{k}")))
            .ok_or_else(|| format!("no report for oracle-{k}: {reports:#}"))?;
        if let Some(error) = report.get("error") {
            return Err(format!("{}: devsieve refused the rule: {error}", rule.label));
        }
        let selected = by_devsieve.entry(k).or_default();
        for group in report["groups"].as_array().into_iter().flatten() {
            for member in group["members"].as_array().into_iter().flatten() {
                selected.insert(member.as_str().unwrap().to_string());
            }
        }
    }

    // udev: the same rules, marking instead of grouping, run last; before
    // them, a file that gives each device the tags its record says some
    // earlier rule gave it (umockdev keeps TAGS as a plain property).
    let rules_dir = scratch.path().join("rules.d");
    std::fs::create_dir(&rules_dir).unwrap();
    let mut tags = String::new();
    for device in &devices {
        for tag in &device.tags {
            tags += &format!("DEVPATH==\"{}\", TAG+=\"{tag}\"\n", device.devpath);
        }
    }
    std::fs::write(rules_dir.join("98-devsieve-tags.rules"), tags).unwrap();
    let marks: String =
        rules.iter().enumerate().map(|(k, r)| format!("{}, ENV{{DEVSIEVE_MATCH_{k}}}=\"1\"\n", r.rule)).collect();
    std::fs::write(rules_dir.join("99-zz-devsieve-oracle.rules"), marks).unwrap();

    let mut by_udev: BTreeMap<usize, BTreeSet<String>> = (0..rules.len()).map(|k| (k, BTreeSet::new())).collect();
    // Only devices with a node can be advertised, so only they are compared.
    for device in devices.iter().filter(|d| d.has_node) {
        for k in udevadm_marks(&tree, &rules_dir, scratch.path(), &device.devpath)? {
            by_udev.entry(k).or_default().insert(device.devpath.clone());
        }
    }

    let mut problems = Vec::new();
    for (k, rule) in rules.iter().enumerate() {
        let (udev, ours) = (&by_udev[&k], &by_devsieve[&k]);
        if udev != ours {
            problems.push(format!(
                "{} `{}`:\n  udev only:     {:?}\n  devsieve only: {:?}",
                rule.label,
                rule.rule,
                udev.difference(ours).collect::<Vec<_>>(),
                ours.difference(udev).collect::<Vec<_>>()
            ));
        }
    }
    if problems.is_empty() { Ok(skipped) } else { Err(problems.join("\n")) }
}

#[test]
fn udev_cases_agree_with_udevadm() {
    require_tool("umockdev-run", "umockdev");
    require_tool("udevadm", "udev");
    require_tool("unshare", "util-linux");
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for case in case_dirs().iter().filter(|c| c.join("expected.json").exists()) {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        match oracle_case(case) {
            Ok(skips) => skipped.extend(skips.into_iter().map(|s| format!("{name}: {s}"))),
            Err(problem) => failures.push(format!("=== case {name}\n{problem}")),
        }
    }
    eprintln!("udevadm oracle: {:.1?}; not checked against udevadm:\n  {}", started.elapsed(), skipped.join("\n  "));
    assert!(failures.is_empty(), "devsieve and udevadm disagree:\n\n{}", failures.join("\n\n"));
}

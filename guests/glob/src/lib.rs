//! The `glob` discovery handler: squat/generic-device-plugin's path groups,
//! with the same field names and the same meaning.
//!
//! ```yaml
//! groups:
//!   - paths:                         # one group = one schedulable device per match
//!       - path: /dev/ttyUSB*
//!   - paths:                         # several paths = granted together
//!       - path: /dev/snd/controlC0
//!       - path: /dev/snd/pcmC0D0c
//!   - count: 10                      # ten pods may hold /dev/fuse at once
//!     paths:
//!       - path: /dev/fuse
//! ```
//!
//! The host expands the globs `needs` returns (written in its own syntax,
//! see [`pattern`]); `select` keeps the paths that match a configured glob;
//! `group` combines the matches of each group the way generic-device-plugin
//! does (see [`combine`]).

pub mod pattern;

use std::collections::BTreeSet;

use devsieve_sdk::prelude::*;
use pattern::Pattern;

/// The handler's config: generic-device-plugin's `groups`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub groups: Vec<Group>,
    /// The groups checked and their globs parsed, on first use: `select`
    /// runs once per candidate and must not parse them again each time.
    #[serde(skip)]
    checked: std::cell::OnceCell<Result<Vec<CheckedGroup>, HandlerError>>,
}

impl Config {
    fn checked(&self) -> Result<&[CheckedGroup], HandlerError> {
        self.checked.get_or_init(|| check(self)).as_deref().map_err(Clone::clone)
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Group {
    #[serde(default)]
    pub paths: Vec<PathSpec>,
    /// generic-device-plugin's USB groups; refused with a pointer to `usb-id`.
    #[serde(default)]
    pub usb: Option<serde::de::IgnoredAny>,
    /// How many containers may hold one device of this group at once (default 1).
    #[serde(default)]
    pub count: Option<u32>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PathSpec {
    /// Absolute path on the node; may be a glob.
    pub path: String,
    /// Path in the container (default: the matched path). Ending in `/`: a
    /// directory the matched file is placed in under its own name.
    #[serde(default)]
    pub mount_path: Option<String>,
    /// `Device` (default) or `Mount`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// For `Device`: any of `r`, `w`, `m` (default `mrw`).
    #[serde(default)]
    pub permissions: Option<String>,
    /// For `Mount`: bind-mount read-only.
    #[serde(default)]
    pub read_only: bool,
    /// How many devices of the group may reuse one match of this path
    /// (default 1).
    #[serde(default)]
    pub limit: Option<u32>,
    /// A group is still formed when this path matches nothing.
    #[serde(default)]
    pub optional: bool,
}

/// How a matched path is granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathType {
    Device,
    Mount,
}

/// A group after validation and defaulting: its share count and paths.
#[derive(Clone, Debug)]
struct CheckedGroup {
    count: u32,
    paths: Vec<Checked>,
}

/// A path spec after validation and defaulting.
#[derive(Clone, Debug)]
struct Checked {
    pattern: Pattern,
    mount_path: Option<String>,
    read_only: bool,
    optional: bool,
    kind: PathType,
    permissions: String,
    limit: usize,
}

const DEFAULT_PERMISSIONS: &str = "mrw";

fn field(group: usize, path: usize, name: &str) -> String {
    format!("groups[{group}].paths[{path}].{name}")
}

/// Validates the config and applies generic-device-plugin's defaults.
fn check(config: &Config) -> Result<Vec<CheckedGroup>, HandlerError> {
    if config.groups.is_empty() {
        return Err(HandlerError::field(
            "groups",
            "at least one group is needed, e.g. groups: [{paths: [{path: /dev/ttyUSB*}]}]",
        ));
    }
    let mut checked = Vec::with_capacity(config.groups.len());
    for (g, group) in config.groups.iter().enumerate() {
        if group.usb.is_some() {
            return Err(HandlerError::field(
                format!("groups[{g}].usb"),
                "USB vendor/product groups are matched by the `usb-id` handler: give this resource `handler: usb-id` \
                 with `usb: [{vendor: \"1a86\", product: \"7523\"}]`; the `glob` handler takes `paths` only",
            ));
        }
        if group.paths.is_empty() {
            return Err(HandlerError::field(format!("groups[{g}].paths"), "a group needs at least one path"));
        }
        let count = match group.count {
            None => 1,
            Some(0) => {
                return Err(HandlerError::field(
                    format!("groups[{g}].count"),
                    "count must be at least 1 (it is how many containers may share one device; omit it for 1)",
                ));
            }
            Some(n) => n,
        };
        let mut paths = Vec::with_capacity(group.paths.len());
        for (p, spec) in group.paths.iter().enumerate() {
            paths.push(check_path(g, p, spec)?);
        }
        checked.push(CheckedGroup { count, paths });
    }
    Ok(checked)
}

fn check_path(g: usize, p: usize, spec: &PathSpec) -> Result<Checked, HandlerError> {
    if spec.path.is_empty() {
        return Err(HandlerError::field(field(g, p, "path"), "path must not be empty"));
    }
    if !spec.path.starts_with('/') {
        return Err(HandlerError::field(
            field(g, p, "path"),
            format!("path must be absolute (start with `/`), got `{}`", spec.path),
        ));
    }
    let pattern = Pattern::parse(&spec.path)
        .map_err(|e| HandlerError::field(field(g, p, "path"), format!("`{}` is not a valid glob: {e}", spec.path)))?;
    if let Some(mount) = &spec.mount_path
        && !mount.starts_with('/')
    {
        return Err(HandlerError::field(
            field(g, p, "mountPath"),
            format!("mountPath must be an absolute path in the container, got `{mount}`"),
        ));
    }
    let kind = match spec.kind.as_deref() {
        None | Some("") | Some("Device") => PathType::Device,
        Some("Mount") => PathType::Mount,
        Some(other) => {
            return Err(HandlerError::field(
                field(g, p, "type"),
                format!("type must be `Device` (a device node) or `Mount` (a bind mount), got `{other}`"),
            ));
        }
    };
    let permissions =
        devsieve_sdk::permissions(&field(g, p, "permissions"), spec.permissions.as_deref(), DEFAULT_PERMISSIONS)?;
    let limit = match spec.limit {
        None => 1,
        Some(0) => {
            return Err(HandlerError::field(field(g, p, "limit"), "limit must be at least 1 (omit it for 1)"));
        }
        Some(n) => n as usize,
    };
    Ok(Checked {
        pattern,
        mount_path: spec.mount_path.clone(),
        read_only: spec.read_only,
        optional: spec.optional,
        kind,
        permissions,
        limit,
    })
}

/// One device of a group before it becomes a `DeviceGroup`: for each path
/// spec of the group, the match it contributes (none for a missing optional
/// path).
pub type Combination<'a, T> = Vec<Option<&'a T>>;

/// generic-device-plugin's rule for turning the matches of a group's paths
/// into devices. `matches[k]` are the sorted matches of path `k`, `limits[k]`
/// its limit, `optional[k]` whether it may be missing.
///
/// - Path `k` can serve `len(matches[k]) * limits[k]` devices: its matches in
///   order, then again from the start, `limit` times over.
/// - The group has as many devices as the path with the most matches has
///   matches, but no more than any required path can serve.
/// - Device `i` gets entry `i` of each path's list; an optional path whose
///   list is shorter than that contributes nothing to device `i`.
///
/// So `/dev/snd/controlC*` + `/dev/snd/pcmC*D0c` pair up card by card, a path
/// that matches nothing (and is not optional) means no devices at all, and a
/// shared path (e.g. one `/dev/dri/renderD128`) is reused by up to `limit`
/// devices.
pub fn combine<'a, T>(matches: &'a [Vec<T>], limits: &[usize], optional: &[bool]) -> Vec<Combination<'a, T>> {
    let natural = matches.iter().map(Vec::len).max().unwrap_or(0);
    let servable = |k: usize| matches[k].len().saturating_mul(limits[k]);
    let cap = (0..matches.len()).filter(|&k| !optional[k]).map(servable).min().unwrap_or(natural);
    let length = natural.min(cap);
    (0..length)
        .map(|i| {
            (0..matches.len())
                .map(|k| if i < servable(k) { Some(&matches[k][i % matches[k].len()]) } else { None })
                .collect()
        })
        .collect()
}

/// A path device as `group` sees it.
#[derive(Debug)]
struct Match<'a> {
    path: &'a str,
    index: u32,
}

fn container_path(mount: Option<&str>, host: &str) -> Option<String> {
    match mount {
        None | Some("") => None,
        Some(dir) if dir.ends_with('/') => {
            let name = host.rsplit('/').next().unwrap_or(host);
            Some(format!("{dir}{name}"))
        }
        Some(path) => Some(path.to_string()),
    }
}

pub struct Glob;

impl Handler for Glob {
    const NAME: &'static str = "glob";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Config = Config;

    /// The globs in the host's syntax ([`Pattern::host_glob`]), each once.
    fn needs(config: &Config) -> Result<Requirements, HandlerError> {
        let mut seen = BTreeSet::new();
        let globs: Vec<String> = config
            .checked()?
            .iter()
            .flat_map(|g| &g.paths)
            .map(|p| p.pattern.host_glob())
            .filter(|glob| seen.insert(glob.clone()))
            .collect();
        Ok(Requirements::none().paths(globs))
    }

    fn select(config: &Config, device: Device<'_>) -> bool {
        device.origin() == Origin::Path
            && config
                .checked()
                .is_ok_and(|groups| groups.iter().flat_map(|g| &g.paths).any(|p| p.pattern.matches(device.devpath())))
    }

    /// A group of one path makes one device per match, whatever the other
    /// matches: those devices stand alone. A group of several paths pairs
    /// its matches up (see [`combine`]), so a device any such group matches
    /// is grouped with all the others.
    fn partition(config: &Config, device: Device<'_>) -> Partition {
        let pairs_up = config.checked().is_ok_and(|groups| {
            groups
                .iter()
                .filter(|g| g.paths.len() > 1)
                .flat_map(|g| &g.paths)
                .any(|p| p.pattern.matches(device.devpath()))
        });
        if pairs_up { Partition::All } else { Partition::Alone }
    }

    fn group(config: &Config, selected: &[Device<'_>]) -> Result<Vec<DeviceGroup>, HandlerError> {
        let checked = config.checked()?;
        let mut out: Vec<DeviceGroup> = Vec::new();
        let mut ids = BTreeSet::new();
        for (g, CheckedGroup { count, paths }) in checked.iter().enumerate() {
            let matches: Vec<Vec<Match<'_>>> = paths
                .iter()
                .map(|p| {
                    let mut found: Vec<Match<'_>> = selected
                        .iter()
                        .filter(|d| d.origin() == Origin::Path && p.pattern.matches(d.devpath()))
                        .map(|d| Match { path: d.devpath(), index: d.index() })
                        .collect();
                    found.sort_by(|a, b| a.path.cmp(b.path));
                    found.dedup_by(|a, b| a.path == b.path);
                    found
                })
                .collect();
            let limits: Vec<usize> = paths.iter().map(|p| p.limit).collect();
            let optional: Vec<bool> = paths.iter().map(|p| p.optional).collect();
            for combination in combine(&matches, &limits, &optional) {
                let mut group = DeviceGroup {
                    id: String::new(),
                    members: Vec::new(),
                    device_nodes: Vec::new(),
                    mounts: Vec::new(),
                    env: Vec::new(),
                    share: *count,
                };
                let mut id_parts = Vec::new();
                for (spec, found) in paths.iter().zip(&combination) {
                    let Some(found) = found else { continue };
                    id_parts.push(found.path);
                    if !group.members.contains(&found.index) {
                        group.members.push(found.index);
                    }
                    let target = container_path(spec.mount_path.as_deref(), found.path);
                    match spec.kind {
                        PathType::Device => {
                            let node = DeviceNode {
                                host_path: found.path.to_string(),
                                container_path: target,
                                permissions: spec.permissions.clone(),
                            };
                            if !group
                                .device_nodes
                                .iter()
                                .any(|n| n.host_path == node.host_path && n.container_path == node.container_path)
                            {
                                group.device_nodes.push(node);
                            }
                        }
                        PathType::Mount => group.mounts.push(Mount {
                            container_path: target.unwrap_or_else(|| found.path.to_string()),
                            host_path: found.path.to_string(),
                            read_only: spec.read_only,
                        }),
                    }
                }
                // The matched paths name the device; two groups of the config
                // that form the same combination are told apart by index.
                let mut id = id_parts.join("+");
                if !ids.insert(id.clone()) {
                    id = format!("{id}#{g}");
                    ids.insert(id.clone());
                }
                group.id = id;
                out.push(group);
            }
        }
        Ok(out)
    }
}

export_handler!(Glob);

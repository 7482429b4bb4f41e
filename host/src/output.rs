//! How `devsieve discover` shows its result: a table for people, JSON for tools.

use std::fmt::Write;

use crate::discover::Report;

pub fn json(reports: &[Report]) -> String {
    serde_json::to_string_pretty(reports).expect("reports serialize")
}

/// Per resource, a header and one block per advertised group:
///
/// ```text
/// devsieve.io/printer  handler builtin:udev-rule  1 device
///   ID               SHARE  DEVICE NODES                  ENV
///   3-3.4.1-0c1f...  1      /dev/bus/usb/003/009 (rwm)    UDEV_DEVPATH=/devices/...
///                           /dev/ttyUSB0 (rwm)            UDEV_DEVNODE_0=/dev/bus/usb/003/009
/// ```
pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    for report in reports {
        let count = report.groups.len();
        let devices = if count == 1 { "1 device".to_string() } else { format!("{count} devices") };
        let _ = writeln!(out, "{}  handler {}  {}", report.resource, report.handler, devices);
        if let Some(error) = &report.error {
            let _ = writeln!(out, "  error: {error}");
        }
        if count > 0 {
            let rows: Vec<[Vec<String>; 4]> = report
                .groups
                .iter()
                .map(|g| {
                    let mut nodes: Vec<String> = g
                        .device_nodes
                        .iter()
                        .map(|n| {
                            let target = if n.container_path == n.host_path {
                                String::new()
                            } else {
                                format!(" -> {}", n.container_path)
                            };
                            format!("{}{} ({})", n.host_path, target, n.permissions)
                        })
                        .collect();
                    nodes.extend(g.mounts.iter().map(|m| {
                        format!(
                            "mount {} -> {}{}",
                            m.host_path,
                            m.container_path,
                            if m.read_only { " (ro)" } else { "" }
                        )
                    }));
                    let env = g.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    [vec![g.id.clone()], vec![g.share.to_string()], nodes, env]
                })
                .collect();
            let headers = ["ID", "SHARE", "DEVICE NODES", "ENV"];
            let width = |col: usize| {
                rows.iter()
                    .flat_map(|r| r[col].iter().map(|s| s.chars().count()))
                    .chain([headers[col].len()])
                    .max()
                    .unwrap_or(0)
            };
            let widths = [width(0), width(1), width(2)];
            let line = |out: &mut String, cells: [&str; 4]| {
                let _ = writeln!(
                    out,
                    "  {:w0$}  {:w1$}  {:w2$}  {}",
                    cells[0],
                    cells[1],
                    cells[2],
                    cells[3],
                    w0 = widths[0],
                    w1 = widths[1],
                    w2 = widths[2]
                );
            };
            line(&mut out, headers);
            for row in &rows {
                let height = row.iter().map(Vec::len).max().unwrap_or(1).max(1);
                for i in 0..height {
                    let cell = |col: usize| row[col].get(i).map(String::as_str).unwrap_or("");
                    line(&mut out, [cell(0), cell(1), cell(2), cell(3)]);
                }
            }
        }
        out.push('\n');
    }
    // Trailing spaces from empty last columns help nobody.
    out.lines().map(str::trim_end).collect::<Vec<_>>().join("\n") + "\n"
}

//! Every table the command line prints for people (the JSON forms are
//! serde's): `discover`, `status` and `handler inspect`.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::discover::Report;
use super::handler::Inspection;
use crate::ops::StatusReport;

/// `discover --json`.
pub(super) fn json(reports: &[Report]) -> String {
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
pub(super) fn discover_table(reports: &[Report]) -> String {
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

/// `devsieve status`: the running agent's `/status`, as a table.
pub(super) fn status_table(report: &StatusReport, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config {}  generation {}", report.config_file, report.config_generation);
    if let Some(error) = &report.config_error {
        let _ = writeln!(out, "  last change refused (the previous config is serving): {error}");
    }
    let _ = writeln!(
        out,
        "kubelet {}  ready {}",
        if report.kubelet_present { "present" } else { "absent" },
        if report.ready { "yes" } else { "no" }
    );
    let header = ["RESOURCE", "HANDLER", "HEALTHY", "UNHEALTHY", "REGISTERED", "LAST EVALUATION"];
    let rows: Vec<[String; 6]> = report
        .resources
        .iter()
        .map(|r| {
            let last = match (r.last_evaluation_at, r.last_evaluation_ms) {
                (Some(at), Some(ms)) => {
                    let now = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
                    format!("{} ago, took {ms:.2} ms", human(Duration::from_secs_f64((now - at).max(0.0))))
                }
                _ => "never".to_string(),
            };
            [
                r.name.clone(),
                r.handler.clone(),
                r.healthy.to_string(),
                r.unhealthy.to_string(),
                if r.registered { "yes" } else { "no" }.to_string(),
                last,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i == 5 {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        text.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header));
    for (row, resource) in rows.iter().zip(&report.resources) {
        let _ = writeln!(out, "{}", line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]));
        if let Some(error) = &resource.last_error {
            let _ = writeln!(out, "  error: {error}");
        }
        if let Some(error) = &resource.cdi_error {
            let _ = writeln!(out, "  CDI: {error}; its new devices are not advertised");
        }
    }
    for server in &report.usbip_servers {
        match &server.error {
            None => _ = writeln!(out, "USB/IP server {}: {} devices listed", server.server, server.devices),
            Some(error) => _ = writeln!(out, "USB/IP server {}: not listed: {error}", server.server),
        }
    }
    for attachment in &report.usbip_attachments {
        let _ = writeln!(
            out,
            "attached {} for {} ({}) on vhci port {} as {}",
            attachment.device,
            attachment.resource,
            attachment.device_ids.join(", "),
            attachment.vhci_port,
            attachment.local_busid
        );
    }
    out
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, s % 3600 / 60),
    }
}

/// `devsieve handler inspect`: one field a line.
pub(super) fn inspection_table(inspection: &Inspection) -> String {
    let mut table = format!(
        "reference  {}\norigin     {}\nname       {}\nversion    {}\ncontract   {}\nsize       {} bytes\ndigest     {}\n",
        inspection.reference,
        inspection.origin,
        inspection.name,
        inspection.version,
        inspection.contract,
        inspection.size,
        inspection.digest
    );
    if let Some(pinned) = &inspection.pinned {
        let _ = writeln!(table, "pin as     {pinned}");
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{AttachmentReport, ResourceReport, ServerReport};

    #[test]
    fn the_status_table_shows_health_errors_and_refusals() {
        let report = StatusReport {
            config_file: "/etc/devsieve/config.yaml".into(),
            config_generation: 3,
            config_error: Some("resources[0].name: bad".into()),
            kubelet_present: true,
            ready: false,
            resources: vec![ResourceReport {
                name: "devsieve.io/printer".into(),
                handler: "builtin:udev-rule".into(),
                healthy: 1,
                unhealthy: 2,
                groups: 3,
                registered: true,
                socket: None,
                last_evaluation_at: Some(100.0),
                last_evaluation_ms: Some(0.5),
                last_error: Some("handler trapped".into()),
                cdi_error: Some("cannot write the CDI spec /var/run/cdi/x.json: read-only".into()),
            }],
            usbip_servers: vec![
                ServerReport { server: "10.0.0.5:3240".into(), devices: 2, error: None },
                ServerReport { server: "10.0.0.6:3240".into(), devices: 0, error: Some("cannot connect".into()) },
            ],
            usbip_attachments: vec![AttachmentReport {
                device: "usbip://10.0.0.5:3240/1-1".into(),
                resource: "devsieve.io/stick".into(),
                device_ids: vec!["1-1-0123456789abcdef".into()],
                vhci_port: 0,
                local_busid: "3-1".into(),
            }],
        };
        let text = status_table(&report, SystemTime::UNIX_EPOCH + Duration::from_secs(165));
        assert!(text.contains("generation 3"), "{text}");
        assert!(text.contains("  CDI: cannot write the CDI spec /var/run/cdi/x.json: read-only; its new"), "{text}");
        assert!(
            text.contains("last change refused (the previous config is serving): resources[0].name: bad"),
            "{text}"
        );
        assert!(
            text.contains(
                "devsieve.io/printer  builtin:udev-rule  1        2          yes         1m5s ago, took 0.50 ms"
            ),
            "{text}"
        );
        assert!(text.contains("  error: handler trapped"), "{text}");
        assert!(text.contains("USB/IP server 10.0.0.5:3240: 2 devices listed"), "{text}");
        assert!(text.contains("USB/IP server 10.0.0.6:3240: not listed: cannot connect"), "{text}");
        assert!(
            text.contains(
                "attached usbip://10.0.0.5:3240/1-1 for devsieve.io/stick (1-1-0123456789abcdef) on vhci port 0 as 3-1"
            ),
            "{text}"
        );
    }
}

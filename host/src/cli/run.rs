//! `devsieve run`: the node agent (see [`crate::agent`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{Cli, DEFAULT_LISTEN};
use crate::agent::{self, AgentOptions};
use crate::evaluation::Coalescing;
use crate::handler::Compiler;
use crate::support::duration::parse_duration;

/// Run the node agent: serve every resource to the kubelet until SIGTERM.
#[derive(clap::Args)]
pub(super) struct Args {
    #[arg(long, short, env = "DEVSIEVE_CONFIG")]
    config: PathBuf,
    /// The kubelet's device-plugin directory.
    #[arg(long, env = "DEVSIEVE_PLUGIN_DIR", default_value = "/var/lib/kubelet/device-plugins")]
    plugin_dir: PathBuf,
    /// Where CDI specs are written for resources with `cdi: true`.
    #[arg(long, env = "DEVSIEVE_CDI_DIR", default_value = "/var/run/cdi")]
    cdi_dir: PathBuf,
    /// Address of /healthz, /readyz, /metrics and /status.
    #[arg(long, env = "DEVSIEVE_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// How long a device that went away stays listed, unhealthy (`30s`, `500ms`, `2m`).
    #[arg(long, env = "DEVSIEVE_GRACE_PERIOD", default_value = "30s", value_parser = parse_duration)]
    grace_period: Duration,
    /// udev and file events less than this apart are evaluated together.
    #[arg(long, default_value = "3ms", value_parser = parse_duration)]
    event_settle: Duration,
    /// How long one Register call may take.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    register_timeout: Duration,
    /// Where sysfs is mounted (USB/IP attach writes to its vhci_hcd files).
    #[arg(long, env = "DEVSIEVE_SYSFS", default_value = "/sys")]
    sysfs: PathBuf,
    /// Where the agent keeps what must survive its restart (USB/IP attachments).
    #[arg(long, env = "DEVSIEVE_STATE_DIR", default_value = "/var/lib/devsieve")]
    state_dir: PathBuf,
    /// How long each step of a USB/IP attach may take: the import, the
    /// attach, and the device's nodes appearing.
    #[arg(long, env = "DEVSIEVE_USBIP_ATTACH_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    usbip_attach_timeout: Duration,
    /// The kubelet's pod-resources API, asked (only while a USB/IP device is
    /// attached) which containers hold attached devices.
    #[arg(long, env = "DEVSIEVE_POD_RESOURCES_SOCKET", default_value = "/var/lib/kubelet/pod-resources/kubelet.sock")]
    pod_resources_socket: PathBuf,
    /// How long an attached USB/IP device that no container holds stays attached.
    #[arg(long, env = "DEVSIEVE_USBIP_RELEASE_GRACE", default_value = "30s", value_parser = parse_duration)]
    usbip_release_grace: Duration,
}

pub(super) fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let options = AgentOptions {
        config_file: args.config.clone(),
        plugin_dir: args.plugin_dir.clone(),
        cdi_dir: args.cdi_dir.clone(),
        listen: args.listen,
        grace: args.grace_period,
        coalescing: Coalescing { settle: args.event_settle, ..Coalescing::default() },
        register_timeout: args.register_timeout,
        sysfs_root: args.sysfs.clone(),
        state_dir: args.state_dir.clone(),
        attach_timeout: args.usbip_attach_timeout,
        pod_resources_socket: args.pod_resources_socket.clone(),
        release_grace: args.usbip_release_grace,
    };
    agent::run(options, cli.runtime(Compiler::this_executable())?, cli.loader())?;
    Ok(ExitCode::SUCCESS)
}

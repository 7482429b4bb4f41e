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
    };
    agent::run(options, cli.runtime(Compiler::this_executable())?, cli.loader())?;
    Ok(ExitCode::SUCCESS)
}

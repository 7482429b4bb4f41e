//! `devsieve discover`: which of this machine's devices each configured
//! resource would advertise, without serving anything.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use super::{Cli, block_on, exit_code, render, warn_ignored_fields};
use crate::config::Config;
use crate::evaluation;
use crate::handler::Compiler;
use crate::model::Advertised;
use crate::source::Sources;
use crate::source::usbip;

/// Show which of this machine's devices each configured resource would advertise.
#[derive(clap::Args)]
pub(super) struct Args {
    #[arg(long, short)]
    config: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// What `discover` reports for one resource.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub resource: String,
    pub handler: String,
    pub groups: Vec<Advertised>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub(super) fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    warn_ignored_fields(&config);
    let runtime = cli.runtime(Compiler::in_process())?;
    let fetched = block_on(evaluation::fetch(&cli.loader(), &config))?;
    let remote = block_on(usbip::list_once(&config.usbip))?;
    for (server, listing) in remote.listings() {
        if let Some(error) = listing.error {
            eprintln!("warning: {error}; its devices are not shown");
        } else {
            tracing::debug!(%server, devices = listing.devices.len(), "USB/IP server listed");
        }
    }
    let outcomes = evaluation::evaluate_once(&runtime, &fetched, &Sources::node(remote), &config);
    let reports: Vec<Report> = outcomes
        .into_iter()
        .zip(&config.resources)
        .map(|(outcome, resource)| {
            let (groups, error) = match outcome {
                Ok(groups) => (groups.into_iter().map(Arc::unwrap_or_clone).collect(), None),
                Err(error) => (Vec::new(), Some(crate::support::error_chain(&error))),
            };
            Report { resource: resource.name.clone(), handler: resource.handler.to_string(), groups, error }
        })
        .collect();
    print!("{}", if args.json { render::json(&reports) + "\n" } else { render::discover_table(&reports) });
    Ok(exit_code(reports.iter().any(|r| r.error.is_some())))
}

//! `devsieve validate`: a config checked as the agent would check it, every
//! handler loaded and its config accepted, without touching devices.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Cli, block_on, exit_code, warn_ignored_fields};
use crate::config::Config;
use crate::evaluation;
use crate::handler::Compiler;

/// Check a config file (and each resource's handler config) without touching devices.
#[derive(clap::Args)]
pub(super) struct Args {
    #[arg(long, short)]
    config: PathBuf,
}

pub(super) fn run(cli: &Cli, args: &Args) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    warn_ignored_fields(&config);
    let runtime = cli.runtime(Compiler::in_process())?;
    let fetched = block_on(evaluation::fetch(&cli.loader(), &config))?;
    let mut failed = false;
    for error in evaluation::prepare(&runtime, &fetched, &config).into_iter().filter_map(Result::err) {
        eprintln!("{}: {}", config.file.display(), crate::support::error_chain(&error));
        failed = true;
    }
    if !failed {
        println!("{}: ok ({} resources)", config.file.display(), config.resources.len());
    }
    Ok(exit_code(failed))
}

//! The `devsieve` command: parse flags, start logging, run a subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use devsieve::config::Config;
use devsieve::handler::{Limits, Runtime};
use devsieve::{bench, discover, output, source::Sources};

#[derive(Parser)]
#[command(name = "devsieve", version, about = "Give Kubernetes pods the devices of the node they run on")]
struct Cli {
    /// Log filter (tracing syntax: `info`, `devsieve=debug`, ...).
    #[arg(long, env = "DEVSIEVE_LOG", default_value = "warn", global = true)]
    log: String,
    /// Where compiled handlers are cached across restarts.
    #[arg(long, env = "DEVSIEVE_CACHE_DIR", global = true)]
    cache_dir: Option<PathBuf>,
    /// Do not cache compiled handlers.
    #[arg(long, global = true)]
    no_cache: bool,
    /// Time one handler call may take, in milliseconds.
    #[arg(long, env = "DEVSIEVE_HANDLER_TIME_BUDGET_MS", default_value_t = 2000, global = true)]
    handler_time_budget_ms: u64,
    /// Memory one handler call may use, in MiB.
    #[arg(long, env = "DEVSIEVE_HANDLER_MEMORY_MIB", default_value_t = 64, global = true)]
    handler_memory_mib: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show which of this machine's devices each configured resource would advertise.
    Discover {
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check a config file (and each resource's handler config) without touching devices.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Measure full evaluations of synthetic devices through every built-in handler.
    Bench {
        /// Candidates per evaluation.
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        #[arg(long, default_value_t = 21)]
        runs: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("devsieve: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(cli: &Cli) -> anyhow::Result<Runtime> {
    let cache_dir = if cli.no_cache { None } else { cli.cache_dir.clone().or_else(default_cache_dir) };
    let limits = Limits {
        memory_bytes: cli.handler_memory_mib << 20,
        time_budget: std::time::Duration::from_millis(cli.handler_time_budget_ms),
    };
    Ok(Runtime::new(cache_dir.as_deref(), limits)?)
}

/// `$XDG_CACHE_HOME/devsieve` or `~/.cache/devsieve`.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|base| base.join("devsieve"))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Discover { config, json } => {
            let config = Config::load(config)?;
            let runtime = runtime(&cli)?;
            let reports = discover::discover(&runtime, &Sources::local(), &config);
            print!("{}", if *json { output::json(&reports) + "\n" } else { output::table(&reports) });
            let failed = reports.iter().any(|r| r.error.is_some());
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Validate { config } => {
            let config = Config::load(config)?;
            let runtime = runtime(&cli)?;
            let mut failed = false;
            for prepared in discover::prepare(&runtime, &config) {
                if let Err(error) = prepared {
                    eprintln!("{}: {error}", config.file.display());
                    failed = true;
                }
            }
            if !failed {
                println!("{}: ok ({} resources)", config.file.display(), config.resources.len());
            }
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Bench { devices, runs } => {
            let runtime = runtime(&cli)?;
            let results = bench::run(&runtime, *devices, (*runs).max(1)).context("benchmark")?;
            println!("{}", serde_json::to_string_pretty(&results)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

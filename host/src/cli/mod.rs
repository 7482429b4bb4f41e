//! The `devsieve` command line: the flags every command shares, and one
//! module per command. Everything a person reads as a table is drawn in
//! [`render`].

mod bench;
mod compile;
mod discover;
mod handler;
mod import;
mod render;
mod run;
mod status;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::handler::{Compiler, Limits, Runtime};
use crate::loader::{Loader, LoaderOptions};

#[derive(Parser)]
#[command(name = "devsieve", version, about = "Give Kubernetes pods the devices of the node they run on")]
struct Cli {
    /// Log filter (tracing syntax: `info`, `devsieve=debug`, ...); default
    /// `info` for `run`, `warn` otherwise.
    #[arg(long, env = "DEVSIEVE_LOG", global = true)]
    log: Option<String>,
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
    /// Where handler components pulled from registries and ConfigMaps are
    /// kept, by digest (default: `blobs` in the cache directory).
    #[arg(long, env = "DEVSIEVE_BLOB_CACHE_DIR", global = true)]
    blob_cache_dir: Option<PathBuf>,
    /// The largest handler component accepted, in MiB.
    #[arg(long, env = "DEVSIEVE_MAX_HANDLER_MIB", default_value_t = 16, global = true)]
    max_handler_mib: u64,
    /// Time one registry or API request may take, in milliseconds.
    #[arg(long, env = "DEVSIEVE_REGISTRY_TIMEOUT_MS", default_value_t = 20_000, global = true)]
    registry_timeout_ms: u64,
    /// Tries per registry fetch, with exponential backoff between them.
    #[arg(long, env = "DEVSIEVE_REGISTRY_ATTEMPTS", default_value_t = 3, global = true)]
    registry_attempts: u32,
    /// A registry (HOST:PORT, as in references) to speak plain http to. Repeatable.
    #[arg(long = "insecure-registry", env = "DEVSIEVE_INSECURE_REGISTRIES", value_delimiter = ',', global = true)]
    insecure_registries: Vec<String>,
    /// Registry credentials: a Docker config file (`auths`), such as a mounted
    /// kubernetes.io/dockerconfigjson Secret's `.dockerconfigjson`
    /// (default: ~/.docker/config.json if it exists).
    #[arg(long, env = "DEVSIEVE_REGISTRY_AUTH_FILE", global = true)]
    registry_auth_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Discover(discover::Args),
    Validate(validate::Args),
    Import(import::Args),
    Run(Box<run::Args>),
    Status(status::Args),
    /// Work with handler components.
    Handler {
        #[command(subcommand)]
        command: handler::Command,
    },
    Bench(bench::Args),
    /// Compile the handler component on stdin; its artifact goes to stdout.
    /// The agent runs this as its child, so it never holds a compiler itself.
    #[command(hide = true)]
    CompileHandler,
}

/// The address `run --listen` and `status --listen` default to.
const DEFAULT_LISTEN: &str = "127.0.0.1:9470";

/// Parses the command line, starts logging and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = if matches!(cli.command, Command::Run(_)) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new(cli.log.as_deref().unwrap_or(default_log)))
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Discover(args) => discover::run(&cli, args),
        Command::Validate(args) => validate::run(&cli, args),
        Command::Import(args) => import::run(args),
        Command::Run(args) => run::run(&cli, args),
        Command::Status(args) => status::run(args),
        Command::Handler { command } => handler::run(&cli, command),
        Command::Bench(args) => bench::run(&cli, args),
        Command::CompileHandler => return compile::run(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("devsieve: {}", crate::support::error_chain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

impl Cli {
    /// The handler runtime; the agent compiles in a child process, one-shot
    /// commands in-process.
    fn runtime(&self, compiler: Compiler) -> anyhow::Result<Runtime> {
        let cache_dir = if self.no_cache { None } else { self.cache_dir.clone().or_else(default_cache_dir) };
        let limits = Limits {
            memory_bytes: self.handler_memory_mib << 20,
            time_budget: Duration::from_millis(self.handler_time_budget_ms),
        };
        Ok(Runtime::new(cache_dir.as_deref(), limits, compiler)?)
    }

    fn loader(&self) -> Loader {
        let blob_cache_dir = self
            .blob_cache_dir
            .clone()
            .or_else(|| self.cache_dir.clone().or_else(default_cache_dir).map(|dir| dir.join("blobs")));
        Loader::new(LoaderOptions {
            blob_cache_dir,
            max_module_bytes: self.max_handler_mib << 20,
            timeout: Duration::from_millis(self.registry_timeout_ms),
            attempts: self.registry_attempts,
            insecure_registries: self.insecure_registries.clone(),
            registry_auth_file: self.registry_auth_file.clone().or_else(crate::loader::default_docker_config),
            ..Default::default()
        })
    }
}

/// `discover`, `validate` and `inspect` are one-shot: a current-thread runtime serves their fetches.
fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(runtime.block_on(future))
}

/// `$XDG_CACHE_HOME/devsieve` or `~/.cache/devsieve`.
fn default_cache_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .map(|base| base.join("devsieve"))
}

/// Tells the person running a one-shot command which fields of a peer's
/// file devsieve does not act on.
fn warn_ignored_fields(config: &crate::config::Config) {
    for note in config.ignored_fields() {
        eprintln!("warning: {}: {note}", config.file.display());
    }
}

/// The exit code of a command that reports per resource.
fn exit_code(failed: bool) -> ExitCode {
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

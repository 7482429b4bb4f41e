//! The `devsieve` command: parse flags, start logging, run a subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use devsieve::agent::{self, AgentOptions};
use devsieve::config::Config;
use devsieve::evaluator::Coalescing;
use devsieve::handler::{Compiler, Limits, Runtime};
use devsieve::inspect;
use devsieve::loader::{Loader, LoaderOptions};
use devsieve::{bench, discover, output, source::Sources, status};
use std::time::Duration;

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
    /// Run the node agent: serve every resource to the kubelet until SIGTERM.
    Run {
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
        listen: std::net::SocketAddr,
        /// How long a device that went away stays listed, unhealthy (`30s`, `500ms`, `2m`).
        #[arg(long, env = "DEVSIEVE_GRACE_PERIOD", default_value = "30s", value_parser = parse_duration)]
        grace_period: Duration,
        /// udev and file events less than this apart are evaluated together.
        #[arg(long, default_value = "3ms", value_parser = parse_duration)]
        event_settle: Duration,
        /// How long one Register call may take.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        register_timeout: Duration,
    },
    /// Show the running agent's resources, device health and last evaluations.
    Status {
        /// The agent's --listen address.
        #[arg(long, env = "DEVSIEVE_LISTEN", default_value = DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Print the JSON the agent serves on /status.
        #[arg(long)]
        json: bool,
    },
    /// Work with handler components.
    Handler {
        #[command(subcommand)]
        command: HandlerCommand,
    },
    /// Measure full evaluations of synthetic devices through every built-in handler.
    Bench {
        /// Candidates per evaluation.
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        #[arg(long, default_value_t = 21)]
        runs: usize,
    },
    /// Compile the handler component on stdin; its artifact goes to stdout.
    /// The agent runs this as its child, so it never holds a compiler itself.
    #[command(hide = true)]
    CompileHandler,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:9470";

/// `30s`, `500ms`, `2m`, `1h`; a bare number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 30s or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Subcommand)]
enum HandlerCommand {
    /// Fetch and compile a handler (a .wasm file, an OCI reference, builtin:NAME,
    /// configmap:NS/NAME/KEY) and print its name, version, contract, size and digest.
    Inspect {
        reference: String,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = if matches!(cli.command, Command::Run { .. }) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::new(cli.log.as_deref().unwrap_or(default_log)))
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

/// The agent compiles handlers in a child process; one-shot commands in-process.
fn runtime(cli: &Cli, compiler: Compiler) -> anyhow::Result<Runtime> {
    let cache_dir = if cli.no_cache { None } else { cli.cache_dir.clone().or_else(default_cache_dir) };
    let limits = Limits {
        memory_bytes: cli.handler_memory_mib << 20,
        time_budget: std::time::Duration::from_millis(cli.handler_time_budget_ms),
    };
    Ok(Runtime::new(cache_dir.as_deref(), limits, compiler)?)
}

fn loader(cli: &Cli) -> Loader {
    let blob_cache_dir = cli
        .blob_cache_dir
        .clone()
        .or_else(|| cli.cache_dir.clone().or_else(default_cache_dir).map(|dir| dir.join("blobs")));
    Loader::new(LoaderOptions {
        blob_cache_dir,
        max_module_bytes: cli.max_handler_mib << 20,
        timeout: std::time::Duration::from_millis(cli.registry_timeout_ms),
        attempts: cli.registry_attempts,
        insecure_registries: cli.insecure_registries.clone(),
        registry_auth_file: cli.registry_auth_file.clone().or_else(devsieve::loader::default_docker_config),
        ..Default::default()
    })
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Discover { config, json } => {
            let config = Config::load(config)?;
            let runtime = runtime(&cli, Compiler::in_process())?;
            let fetched = block_on(discover::fetch(&loader(&cli), &config))?;
            let reports = discover::discover(&runtime, &fetched, &Sources::local(), &config);
            print!("{}", if *json { output::json(&reports) + "\n" } else { output::table(&reports) });
            let failed = reports.iter().any(|r| r.error.is_some());
            Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Validate { config } => {
            let config = Config::load(config)?;
            let runtime = runtime(&cli, Compiler::in_process())?;
            let mut failed = false;
            let fetched = block_on(discover::fetch(&loader(&cli), &config))?;
            for prepared in discover::prepare(&runtime, &fetched, &config) {
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
        Command::Run { config, plugin_dir, cdi_dir, listen, grace_period, event_settle, register_timeout } => {
            let options = AgentOptions {
                config_file: config.clone(),
                plugin_dir: plugin_dir.clone(),
                cdi_dir: cdi_dir.clone(),
                listen: *listen,
                grace: *grace_period,
                coalescing: Coalescing { settle: *event_settle, ..Coalescing::default() },
                register_timeout: *register_timeout,
            };
            agent::run(options, runtime(&cli, Compiler::this_executable())?, loader(&cli))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { listen, json } => {
            let report = status::fetch(*listen)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", devsieve::ops::format_report(&report, std::time::SystemTime::now()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Handler { command: HandlerCommand::Inspect { reference, json } } => {
            let runtime = runtime(&cli, Compiler::in_process())?;
            let fetched = block_on(inspect::fetch(&loader(&cli), reference))??;
            let inspection = inspect::inspect(&runtime, fetched)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&inspection)?);
            } else {
                print!("{}", inspection.table());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { devices, runs } => {
            let runtime = runtime(&cli, Compiler::in_process())?;
            let results = bench::run(&runtime, *devices, (*runs).max(1)).context("benchmark")?;
            println!("{}", serde_json::to_string_pretty(&results)?);
            Ok(ExitCode::SUCCESS)
        }
        // Only the reason on stderr, unprefixed: the agent reports it as the handler's load error.
        Command::CompileHandler => Ok(match devsieve::handler::compile_stdin_to_stdout() {
            Ok(()) => ExitCode::SUCCESS,
            Err(reason) => {
                eprintln!("{reason}");
                ExitCode::FAILURE
            }
        }),
    }
}

//! `devsieve handler inspect FILE|REF`: fetch a handler as the agent would,
//! compile it, ask its metadata, and say what it is.

use std::process::ExitCode;

use serde::Serialize;

use super::{Cli, block_on, render};
use crate::config::{HandlerRef, ReferenceError};
use crate::handler::{self, Compiler, Runtime};
use crate::loader::{HandlerBytes, LoadError, Loader};

#[derive(clap::Subcommand)]
pub(super) enum Command {
    /// Fetch and compile a handler (a .wasm file, an OCI reference, builtin:NAME,
    /// configmap:NS/NAME/KEY) and print its name, version, contract, size and digest.
    Inspect {
        reference: String,
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(cli: &Cli, command: &Command) -> anyhow::Result<ExitCode> {
    let Command::Inspect { reference, json } = command;
    let runtime = cli.runtime(Compiler::in_process())?;
    let fetched = block_on(fetch(&cli.loader(), reference))??;
    let inspection = inspect(&runtime, fetched)?;
    if *json {
        println!("{}", serde_json::to_string_pretty(&inspection)?);
    } else {
        print!("{}", render::inspection_table(&inspection));
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, thiserror::Error)]
enum InspectError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Handler(#[from] handler::Error),
}

/// What `handler inspect` prints.
#[derive(Debug, Serialize)]
pub(super) struct Inspection {
    pub reference: String,
    pub origin: String,
    /// The handler's own name and version (its `metadata()`).
    pub name: String,
    pub version: String,
    /// The WIT contract it was built for: `devsieve:handler@X.Y.Z`.
    pub contract: String,
    pub size: usize,
    /// `sha256:` of the component bytes (an OCI layer's digest).
    pub digest: String,
    /// For an OCI reference: the reference to put in a config, pinned by
    /// the manifest's digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
}

/// Fetches the handler `text` names. `text` is parsed like the config's
/// `handler:` field (relative paths from the working directory); tags are
/// allowed here, since this is how one learns the digest to pin.
async fn fetch(loader: &Loader, text: &str) -> Result<(HandlerRef, HandlerBytes), InspectError> {
    let reference = HandlerRef::parse(std::path::Path::new("."), text, true)?;
    let bytes = loader.fetch(&reference).await?;
    Ok((reference, bytes))
}

/// Compiles the fetched handler and asks its metadata (outside any tokio runtime).
fn inspect(runtime: &Runtime, (reference, bytes): (HandlerRef, HandlerBytes)) -> Result<Inspection, InspectError> {
    let handler = runtime.load(&reference.to_string(), &bytes.bytes, &bytes.digest)?;
    let info = handler.info();
    Ok(Inspection {
        reference: reference.to_string(),
        origin: bytes.origin.clone(),
        name: info.name.clone(),
        version: info.version.clone(),
        contract: format!("devsieve:handler@{}", info.contract),
        size: handler.size(),
        digest: handler.digest().to_string(),
        pinned: bytes.pinned.clone(),
    })
}

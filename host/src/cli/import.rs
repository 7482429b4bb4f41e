//! `devsieve import`: the devsieve config a generic-device-plugin, Akri or
//! usbip-device-plugin file means, printed for the operator to keep, with a
//! comment for every field whose meaning changed or that is ignored.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Imported, NoteKind};

/// Print the devsieve config equivalent to another device plugin's file: a
/// generic-device-plugin config or DaemonSet manifest, Akri Configurations or
/// Helm values, or a usbip-device-plugin config.yaml.
#[derive(clap::Args)]
pub(super) struct Args {
    /// The file, as its users have it (its kind is told by its shape).
    file: PathBuf,
}

pub(super) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let imported = Imported::load(&args.file)?;
    let yaml = imported.to_yaml(&args.file);
    // Printed only once it is a config the agent accepts.
    let config = imported.check(&args.file)?;
    for note in config.notes.iter().filter(|n| n.kind == NoteKind::Ignored) {
        eprintln!("warning: {}: {note}", args.file.display());
    }
    print!("{yaml}");
    eprintln!(
        "{}: read as {}; {} resource(s). Check the handlers' configs with `devsieve validate --config FILE`.",
        args.file.display(),
        config.format,
        config.resources.len()
    );
    Ok(ExitCode::SUCCESS)
}

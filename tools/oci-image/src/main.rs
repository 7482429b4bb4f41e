//! `devsieve-oci-image`: writes devsieve's container image (an OCI image
//! layout and an OCI archive) from a built `devsieve` binary, without a
//! container engine or a base image. See the library for what is in it.
//!
//! ```sh
//! cargo build --release
//! cargo run -p devsieve-oci-image --release -- --binary target/release/devsieve --out target/image
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use devsieve_oci_image::{CA_BUNDLE_PATH, DEFAULT_REFERENCE, Options, build};

/// Builds devsieve's container image from the binary and the files it needs
/// at run time, taken from this machine (build on Debian 12 for the
/// libraries the Containerfile's image has).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// The devsieve binary.
    #[arg(long, default_value = "target/release/devsieve")]
    binary: PathBuf,
    /// Output directory: the layout goes to OUT/oci, the archive to
    /// OUT/devsieve-oci.tar.
    #[arg(long, default_value = "target/image")]
    out: PathBuf,
    /// The image's name in the index (`org.opencontainers.image.ref.name`).
    #[arg(long, default_value = DEFAULT_REFERENCE)]
    reference: String,
    /// The CA bundle copied to /etc/ssl/certs/ca-certificates.crt.
    #[arg(long, default_value = CA_BUNDLE_PATH)]
    ca_bundle: PathBuf,
    /// Seconds since the epoch for every mtime and the config's `created`
    /// (unset: mtimes 0, no `created`).
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<u64>,
    /// gzip level of the layer, 0-9.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(0..=9))]
    compression: u32,
    /// List the files in the layer.
    #[arg(long)]
    list: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let options = Options {
        binary: cli.binary,
        out: cli.out,
        reference: cli.reference,
        ca_bundle: cli.ca_bundle,
        source_date_epoch: cli.source_date_epoch,
        compression: cli.compression,
    };
    let image = build(&options).with_context(|| format!("building the image of {}", options.binary.display()))?;
    if cli.list {
        for entry in &image.entries {
            println!("/{:<50} {:<10} {}", entry.path, entry.size, entry.kind);
        }
    }
    println!("{}  {}", image.reference, image.platform);
    println!("  layout     {}", image.layout.display());
    println!("  archive    {}", image.archive.display());
    println!("  manifest   {}", image.manifest_digest);
    println!("  config     {}", image.config_digest);
    println!("  layers     {} ({})", image.layers, image.layer_digest);
    println!("  size       {} compressed, {} uncompressed", mib(image.compressed_size), mib(image.uncompressed_size));
    println!("  import     ctr -n k8s.io images import {}", image.archive.display());
    println!("             podman load -i {}", image.archive.display());
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB ({bytes} bytes)", bytes as f64 / (1024.0 * 1024.0))
}

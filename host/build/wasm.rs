//! Building WebAssembly components with a nested cargo (as wasmtime builds
//! its test programs), for two build scripts: the agent's (the built-in
//! handlers it embeds) and the test fixtures' (handlers only tests run).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "wasm32-wasip2";
/// The workspace's profile for handlers: small and fast (see the root Cargo.toml).
pub const GUEST_PROFILE: &str = "guest";

/// One target directory for every nested build (`DEVSIEVE_GUESTS_TARGET_DIR`,
/// default `target/guests` of the workspace), so each component is built once.
pub fn target_dir(root: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=DEVSIEVE_GUESTS_TARGET_DIR");
    env::var_os("DEVSIEVE_GUESTS_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target").join("guests"))
}

/// `cargo build --locked --target wasm32-wasip2 ARGS --target-dir TARGET_DIR`
/// in `dir`; panics naming `what` if it fails.
pub fn cargo_build(dir: &Path, args: &[&str], target_dir: &Path, what: &str) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .args(["build", "--locked", "--target", TARGET])
        .args(args)
        .arg("--target-dir")
        .arg(target_dir);
    // Flags meant for the host build must not leak into the wasm build.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(var);
    }
    let status = command.status().unwrap_or_else(|error| panic!("could not run cargo to build {what}: {error}"));
    if !status.success() {
        panic!("building {what} for {TARGET} failed (see above). If the target is missing: rustup target add {TARGET}");
    }
}

/// The file a guest crate's cdylib is built as: `devsieve_<name>.wasm`.
pub fn component_file(crate_name: &str) -> String {
    format!("{}.wasm", crate_name.replace('-', "_"))
}

//! Builds the built-in handlers (`guests/`) for `wasm32-wasip2` and puts the
//! components in OUT_DIR, where `handler::builtin` embeds them. One
//! `cargo build` of the agent therefore yields one self-contained binary.
//!
//! The guests are built by a nested cargo with its own target directory (as
//! wasmtime builds its test programs), once per change to `guests/` or `wit/`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: &[&str] = &["udev-rule", "glob", "usb-id"];
/// Components only the tests use (`tests/`); built in the same cargo run.
const TEST_GUESTS: &[&str] = &["hostile-handler", "old-contract-handler"];
/// The handler a user copies (examples/custom-handler): a standalone crate
/// with its own workspace and lock file, built as its README says (release,
/// for wasm32-wasip2) into the same target directory, so the tests run it.
const EXAMPLE: &str = "examples/custom-handler";
const EXAMPLE_FILE: &str = "zigbee_coordinator.wasm";
const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "guest";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ lives in the workspace root");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));

    println!("cargo:rerun-if-changed={}", root.join("guests").display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    for guest in TEST_GUESTS {
        println!("cargo:rerun-if-changed={}", root.join("tests").join(guest).display());
    }
    for file in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(EXAMPLE).join(file).display());
    }
    println!("cargo:rerun-if-env-changed=DEVSIEVE_GUESTS_TARGET_DIR");
    println!("cargo:rerun-if-env-changed=DEVSIEVE_PREBUILT_GUESTS");
    pack_relative_relocations();
    order_startup_functions(&manifest_dir.join("startup.order"));

    // Packagers (and work on the host alone) may hand in components built
    // elsewhere: a directory holding devsieve_<name>.wasm for every guest.
    if let Some(dir) = env::var_os("DEVSIEVE_PREBUILT_GUESTS") {
        let dir = PathBuf::from(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        for guest in GUESTS {
            let file = format!("devsieve_{}.wasm", guest.replace('-', "_"));
            copy(&dir.join(&file), &out_dir.join(&file));
            emit_digest(guest, &out_dir.join(&file));
        }
        println!("cargo:rustc-env=DEVSIEVE_TEST_GUESTS_DIR={}", dir.display());
        println!("cargo:rustc-env=DEVSIEVE_EXAMPLE_HANDLER={}", dir.join(EXAMPLE_FILE).display());
        return;
    }

    let target_dir = env::var_os("DEVSIEVE_GUESTS_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target").join("guests"));

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(root)
        .args(["build", "--locked", "--target", TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(&target_dir);
    for guest in GUESTS.iter().chain(TEST_GUESTS) {
        command.args(["-p", &format!("devsieve-{guest}")]);
    }
    // Flags meant for the host build must not leak into the wasm build.
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER"] {
        command.env_remove(var);
    }
    let status = command.status().expect("could not run cargo to build the guest handlers");
    if !status.success() {
        panic!(
            "building the built-in handlers for {TARGET} failed (see above). \
             If the target is missing: rustup target add {TARGET}"
        );
    }

    for guest in GUESTS.iter().chain(TEST_GUESTS) {
        let file = format!("devsieve_{}.wasm", guest.replace('-', "_"));
        let built = target_dir.join(TARGET).join(PROFILE).join(&file);
        copy(&built, &out_dir.join(&file));
        if GUESTS.contains(guest) {
            emit_digest(guest, &out_dir.join(&file));
        }
    }
    println!("cargo:rustc-env=DEVSIEVE_TEST_GUESTS_DIR={}", out_dir.display());

    let mut example = Command::new(&cargo);
    example
        .current_dir(root.join(EXAMPLE))
        .args(["build", "--locked", "--release", "--target", TARGET])
        .arg("--manifest-path")
        .arg(root.join(EXAMPLE).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    for var in ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER"] {
        example.env_remove(var);
    }
    let status = example.status().expect("could not run cargo to build examples/custom-handler");
    if !status.success() {
        panic!("building {EXAMPLE} for {TARGET} failed (see above)");
    }
    let built = target_dir.join(TARGET).join("release").join(EXAMPLE_FILE);
    copy(&built, &out_dir.join(EXAMPLE_FILE));
    println!("cargo:rustc-env=DEVSIEVE_EXAMPLE_HANDLER={}", out_dir.join(EXAMPLE_FILE).display());
}

/// Links the agent with DT_RELR (`-z pack-relative-relocs`): its relative
/// relocations take 20 KB instead of 1.3 MB, pages the dynamic loader reads
/// at every start and that stayed resident. Needs glibc 2.36 at run time (the
/// binary then says so: it requires `GLIBC_ABI_DT_RELR`), so it is used when
/// building natively for Linux/glibc on a glibc that new.
fn pack_relative_relocations() {
    let native = env::var("HOST").ok() == env::var("TARGET").ok();
    let gnu = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    let glibc = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok().and_then(|out| {
        let text = String::from_utf8(out.stdout).ok()?;
        let (major, minor) = text.trim().strip_prefix("glibc ")?.split_once('.')?;
        Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?))
    });
    if native && gnu && glibc.is_some_and(|version| version >= (2, 36)) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Lays out the functions that run from start to idle (`startup.order`,
/// written by tests/bench/startup-order) next to each other. The kernel maps
/// code 64 KiB at a time around every page touched, so start-up code spread
/// over the 24 MB of code kept 9 MiB of it resident; together it is 2.5 MB.
/// Release builds for x86_64 Linux only, where rustc links with its own lld
/// (GNU ld has no `--symbol-ordering-file`); `DEVSIEVE_NO_STARTUP_ORDER` turns
/// it off. A symbol the file names that no longer exists is skipped.
fn order_startup_functions(order: &Path) {
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=DEVSIEVE_NO_STARTUP_ORDER");
    let release = env::var("PROFILE").as_deref() == Ok("release");
    let lld_target = env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu");
    if release && lld_target && order.is_file() && env::var_os("DEVSIEVE_NO_STARTUP_ORDER").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// `DEVSIEVE_DIGEST_<GUEST>`: the component's `sha256:<hex>`, so the agent
/// finds a built-in's compiled code without reading the component.
fn emit_digest(guest: &str, file: &Path) {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(file).unwrap_or_else(|error| panic!("reading {}: {error}", file.display()));
    let name = guest.replace('-', "_").to_uppercase();
    println!("cargo:rustc-env=DEVSIEVE_DIGEST_{name}=sha256:{:x}", Sha256::digest(&bytes));
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|error| panic!("copying {} to {}: {error}", from.display(), to.display()));
}

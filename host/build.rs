//! Builds the built-in handlers (`guests/`) for `wasm32-wasip2` and puts the
//! components in OUT_DIR, where `builtin` embeds them. One `cargo build` of
//! the agent therefore yields one self-contained binary, and builds nothing
//! else: handlers only tests run are built by `tests/fixtures`.
//!
//! The guests are built by a nested cargo with its own target directory (see
//! `build/wasm.rs`), once per change to `guests/` or `wit/`.

#[path = "build/wasm.rs"]
mod wasm;

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: &[&str] = &["udev-rule", "glob", "usb-id"];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ lives in the workspace root");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));

    println!("cargo:rerun-if-changed={}", root.join("guests").display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-changed=build/wasm.rs");
    emit_contract_version(&root.join("wit/handler.wit"));
    println!("cargo:rerun-if-env-changed=DEVSIEVE_PREBUILT_GUESTS");
    pack_relative_relocations();
    order_startup_functions(&manifest_dir.join("startup.order"));

    // Packagers (and work on the host alone) may hand in components built
    // elsewhere: a directory holding devsieve_<name>.wasm for every guest.
    let built_dir = match env::var_os("DEVSIEVE_PREBUILT_GUESTS") {
        Some(dir) => {
            println!("cargo:rerun-if-changed={}", Path::new(&dir).display());
            PathBuf::from(dir)
        }
        None => {
            let target_dir = wasm::target_dir(root);
            let mut args = vec!["--profile", wasm::GUEST_PROFILE];
            let packages: Vec<String> = GUESTS.iter().map(|guest| format!("devsieve-{guest}")).collect();
            for package in &packages {
                args.extend(["-p", package.as_str()]);
            }
            wasm::cargo_build(root, &args, &target_dir, "the built-in handlers");
            target_dir.join(wasm::TARGET).join(wasm::GUEST_PROFILE)
        }
    };
    for guest in GUESTS {
        let file = wasm::component_file(&format!("devsieve-{guest}"));
        copy(&built_dir.join(&file), &out_dir.join(&file));
        emit_digest(guest, &out_dir.join(&file));
    }
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

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|error| panic!("copying {} to {}: {error}", from.display(), to.display()));
}

/// `DEVSIEVE_CONTRACT_VERSION`: the version of the WIT package every
/// handler implements, so the agent's contract is written in one place.
fn emit_contract_version(wit: &Path) {
    let text = std::fs::read_to_string(wit).unwrap_or_else(|error| panic!("reading {}: {error}", wit.display()));
    let version = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("package devsieve:handler@")?.strip_suffix(';'))
        .unwrap_or_else(|| panic!("{} has no `package devsieve:handler@VERSION;` line", wit.display()));
    println!("cargo:rustc-env=DEVSIEVE_CONTRACT_VERSION={version}");
}

/// `DEVSIEVE_DIGEST_<GUEST>`: the component's `sha256:<hex>`, so the agent
/// finds a built-in's compiled code without reading the component.
fn emit_digest(guest: &str, file: &Path) {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(file).unwrap_or_else(|error| panic!("reading {}: {error}", file.display()));
    let name = guest.replace('-', "_").to_uppercase();
    println!("cargo:rustc-env=DEVSIEVE_DIGEST_{name}=sha256:{:x}", Sha256::digest(&bytes));
}

//! The contract version is the WIT package version: read it from
//! `wit/handler.wit` so that it is written down once.

fn main() {
    let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit/handler.wit");
    println!("cargo:rerun-if-changed={}", wit.display());
    let text = std::fs::read_to_string(&wit).unwrap_or_else(|e| panic!("reading {}: {e}", wit.display()));
    let version = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("package devsieve:handler@")?.strip_suffix(';'))
        .unwrap_or_else(|| panic!("{} has no `package devsieve:handler@X.Y.Z;` line", wit.display()));
    println!("cargo:rustc-env=DEVSIEVE_CONTRACT_VERSION={version}");
}

//! Links libumockdev (and the GLib it needs) through pkg-config, and records
//! its library directory, where the preload library lives.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    const PACKAGE: &str = "umockdev-1.0";
    if let Err(error) = pkg_config::Config::new().atleast_version("0.13").probe(PACKAGE) {
        panic!("{PACKAGE} not found through pkg-config (Debian: apt-get install libumockdev-dev): {error}");
    }
    let libdir = pkg_config::get_variable(PACKAGE, "libdir").unwrap_or_default();
    println!("cargo::rustc-env=DEVSIEVE_UMOCKDEV_LIBDIR={libdir}");
}

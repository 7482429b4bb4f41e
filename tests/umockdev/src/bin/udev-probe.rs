//! `udev-probe [SUBSYSTEM...]`: prints what libudev
//! enumerates and what its monitor receives; see `devsieve_umockdev::probe`.

fn main() -> std::process::ExitCode {
    devsieve_umockdev::probe::main(std::env::args().skip(1))
}

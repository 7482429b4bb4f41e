//! The `devsieve` binary: everything is in the library, see [`devsieve::cli`].

fn main() -> std::process::ExitCode {
    devsieve::cli::main()
}

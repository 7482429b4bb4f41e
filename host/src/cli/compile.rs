//! `devsieve compile-handler` (hidden): the agent's compiler, run as its
//! child so that the agent never holds Cranelift (see [`crate::handler`]).

use std::process::ExitCode;

pub(super) fn run() -> ExitCode {
    match crate::handler::compile_stdin_to_stdout() {
        Ok(()) => ExitCode::SUCCESS,
        // Only the reason on stderr, unprefixed: the agent reports it as the handler's load error.
        Err(reason) => {
            eprintln!("{reason}");
            ExitCode::FAILURE
        }
    }
}

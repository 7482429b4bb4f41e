//! Compiling handlers, kept apart from running them.
//!
//! The runtime's engine has no compiler: it only loads artifacts. A
//! [`Compiler`] turns a component into one. The agent compiles in a child
//! process (`devsieve compile-handler`, the same executable), so it never
//! builds Cranelift, maps its code or keeps the heap a compilation leaves
//! behind, and a compilation that runs away takes only the child with it.
//! One-shot commands and tests compile in-process. Both build their engine
//! from [`engine_config`], which is what makes the artifacts load.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;

use wasmtime::Engine;

/// Why a component could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Cranelift refused it (not valid WebAssembly, unsupported features…).
    #[error("{0:#}")]
    Refused(wasmtime::Error),
    /// The compiling engine could not be built (reported by every compilation).
    #[error("{0}")]
    Engine(String),
    #[error("could not run the compiler ({} compile-handler): {source}", .program.display())]
    Spawn { program: PathBuf, source: std::io::Error },
    /// The child's own reason, as it wrote it on stderr.
    #[error("{0}")]
    Child(String),
    #[error("the compiler process ({status}) did not take the component: {source}")]
    Input { status: ExitStatus, source: std::io::Error },
    #[error("the compiler process failed ({0})")]
    Failed(ExitStatus),
    #[error("reading the component from stdin: {0}")]
    Stdin(std::io::Error),
    #[error("writing the artifact to stdout: {0}")]
    Stdout(std::io::Error),
}

/// The settings every engine of this program is built with; the compiler's
/// engine differs only in having a compiler. wasmtime checks an artifact's
/// settings against the loading engine, so a mismatch is refused, not run.
pub fn engine_config(compiler: bool) -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    config.enable_compiler(compiler);
    config
}

/// Where components are compiled.
#[derive(Debug)]
pub enum Compiler {
    /// An engine with Cranelift in this process, built at the first compilation.
    InProcess(OnceLock<Result<Engine, String>>),
    /// `PROGRAM compile-handler`: the component on its stdin, the artifact on its stdout.
    Subprocess(PathBuf),
}

impl Compiler {
    pub fn in_process() -> Self {
        Compiler::InProcess(OnceLock::new())
    }

    /// This very executable, even if its file was replaced since it started
    /// (an upgrade in place): the child is the same build as the agent, so
    /// its artifacts match the agent's engine.
    pub fn this_executable() -> Self {
        Compiler::Subprocess(PathBuf::from("/proc/self/exe"))
    }

    /// The compiled artifact of `component`, or why it cannot be compiled.
    pub(super) fn compile(&self, component: &[u8]) -> Result<Vec<u8>, CompileError> {
        match self {
            Compiler::InProcess(engine) => {
                let engine = engine.get_or_init(|| Engine::new(&engine_config(true)).map_err(|e| format!("{e:#}")));
                precompile(engine.as_ref().map_err(|e| CompileError::Engine(e.clone()))?, component)
            }
            Compiler::Subprocess(program) => compile_in_child(program, component),
        }
    }
}

fn precompile(engine: &Engine, component: &[u8]) -> Result<Vec<u8>, CompileError> {
    engine.precompile_component(component).map_err(CompileError::Refused)
}

fn compile_in_child(program: &Path, component: &[u8]) -> Result<Vec<u8>, CompileError> {
    let spawn_error = |source| CompileError::Spawn { program: program.to_path_buf(), source };
    let mut child = Command::new(program)
        .arg("compile-handler")
        .env_remove("DEVSIEVE_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    // The child reads all of its input before it writes anything, so writing
    // it all first cannot deadlock on a full pipe.
    let written = child.stdin.take().expect("stdin is piped").write_all(component);
    let output = child.wait_with_output().map_err(spawn_error)?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    Err(match (stderr.is_empty(), written) {
        (false, _) => CompileError::Child(stderr.to_string()),
        (true, Err(source)) => CompileError::Input { status: output.status, source },
        (true, Ok(())) => CompileError::Failed(output.status),
    })
}

/// `devsieve compile-handler`: a component on stdin, its artifact on stdout;
/// on failure only the reason on stderr, which the agent reports as is.
pub fn compile_stdin_to_stdout() -> Result<(), CompileError> {
    let mut component = Vec::new();
    std::io::stdin().read_to_end(&mut component).map_err(CompileError::Stdin)?;
    let engine = Engine::new(&engine_config(true)).map_err(|e| CompileError::Engine(format!("{e:#}")))?;
    let artifact = precompile(&engine, &component)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&artifact).and_then(|()| stdout.flush()).map_err(CompileError::Stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compiler_that_cannot_run_or_fails_is_named_in_the_error() {
        let missing = Compiler::Subprocess("/nonexistent/devsieve".into()).compile(b"\0asm").unwrap_err().to_string();
        assert!(missing.starts_with("could not run the compiler (/nonexistent/devsieve compile-handler)"), "{missing}");
        // `false` reads nothing, says nothing and fails.
        let silent = Compiler::Subprocess("false".into()).compile(b"\0asm").unwrap_err().to_string();
        assert!(silent.contains("exit status: 1"), "{silent}");
    }

    #[test]
    fn the_compilers_reason_is_passed_on() {
        let reason = Compiler::in_process().compile(b"\0asm\x0d\0\x01\0 not a component").unwrap_err();
        assert!(matches!(reason, CompileError::Refused(_)), "{reason:?}");
        let reason = reason.to_string();
        assert!(!reason.is_empty() && !reason.contains("compiler process"), "{reason}");
    }
}

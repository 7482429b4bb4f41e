//! The handler runtime: one wasmtime engine, every handler compiled once and
//! pre-instantiated, and a fresh capability-less sandbox for every call.
//!
//! A call runs under a memory cap (a [`ResourceLimiter`] of its own, so a
//! refusal is known by type) and a time budget (epoch deadline armed by the
//! [`watchdog`]). A handler that traps, runs out of its budget or returns
//! something invalid yields an [`Error`] for its resource; nothing else is
//! affected.

mod cache;
pub mod check;
mod compile;
mod watchdog;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{
    Component, ComponentExportIndex, Instance, Linker, ResourceTable, TypedFunc, types::ComponentItem,
};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::contract::{
    self, CONTRACT_VERSION, DISCOVERY_EXPORT_PREFIX, DeviceGroup, GuestError, HandlerInfo, HandlerPre, Requirements,
    SnapshotView, Verdict, WireSnapshot,
};
use crate::support::digest::{sha256_digest, sha256_hex};
use cache::ArtifactCache;
pub use check::Invalid;
pub use compile::{CompileError, Compiler, compile_stdin_to_stdout};

/// What a call may use.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Linear memory a handler may grow to, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time one call may take.
    pub time_budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_bytes: 64 << 20, time_budget: Duration::from_secs(2) }
    }
}

/// How much of a handler's stderr is kept to explain a trap (a panic message).
const STDERR_CAPTURE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the handler runtime: {0:#}")]
    Runtime(wasmtime::Error),
    #[error("handler {handler}: cannot load: {source}")]
    Load { handler: String, source: LoadFailure },
    #[error(
        "handler {handler}: built for contract devsieve:handler@{found}, but this agent speaks \
         devsieve:handler@{CONTRACT_VERSION}; rebuild the handler with a devsieve-sdk for contract {CONTRACT_VERSION}"
    )]
    Contract { handler: String, found: String },
    #[error("handler {handler}: exceeded its time budget of {budget:?} in `{call}`")]
    Timeout { handler: String, call: &'static str, budget: Duration },
    #[error("handler {handler}: exceeded its memory cap of {cap_mib} MiB in `{call}`")]
    Memory { handler: String, call: &'static str, cap_mib: usize },
    #[error("handler {handler}: trapped in `{call}`: {trap:#}{stderr}")]
    Trap { handler: String, call: &'static str, trap: wasmtime::Error, stderr: String },
    #[error("handler {handler}: {}", guest_message(.error))]
    Rejected { handler: String, error: GuestError },
    #[error("handler {handler}: returned an invalid result from `{call}`: {source}")]
    Invalid { handler: String, call: &'static str, source: Box<Invalid> },
}

/// Why a component could not be made a handler.
#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    #[error("{0:?} is not a sha256 digest")]
    Digest(String),
    #[error(
        "not a WebAssembly component (build it for wasm32-wasip2, e.g. \
         `cargo build --target wasm32-wasip2 --release`)"
    )]
    NotAComponent,
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// Loading the compiled code or linking it failed.
    #[error("{0:#}")]
    Link(wasmtime::Error),
    #[error("exports no `{0}`")]
    MissingExport(&'static str),
    #[error(
        "exports no `{DISCOVERY_EXPORT_PREFIX}{CONTRACT_VERSION}`: it is not a devsieve handler \
         (build it with devsieve-sdk and `export_handler!`)"
    )]
    NotAHandler,
}

/// A guest's error as a person reads it: `field: message`.
fn guest_message(error: &GuestError) -> String {
    match &error.field {
        Some(field) => format!("{field}: {}", error.message),
        None => error.message.clone(),
    }
}

impl Error {
    /// A short stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Runtime(_) | Error::Load { .. } => "load",
            Error::Contract { .. } => "contract",
            Error::Timeout { .. } => "timeout",
            Error::Memory { .. } => "memory",
            Error::Trap { .. } => "trap",
            Error::Rejected { .. } => "rejected",
            Error::Invalid { .. } => "invalid",
        }
    }
}

/// The state of one sandbox: WASI with nothing granted, limits, a deadline.
struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: SandboxLimits,
    deadline: Instant,
}

/// What one sandbox may allocate. Every growth that fails traps (the guest
/// would abort on the failed allocation anyway; this stops it at once), and
/// a memory that could not grow is remembered, so the trap that follows is
/// known to be memory's by this flag, not by the trap's message.
struct SandboxLimits {
    memory_bytes: usize,
    refused_memory: bool,
}

/// The error a refused growth traps with.
#[derive(Debug, thiserror::Error)]
enum GrowthRefused {
    #[error("the handler's memory cap of {0} bytes was reached")]
    MemoryCap(usize),
    #[error("growing a memory to {desired} bytes, past its declared maximum of {maximum}")]
    MemoryMaximum { desired: usize, maximum: usize },
    #[error("growing a table to {desired} elements, past its declared maximum of {maximum}")]
    TableMaximum { desired: usize, maximum: usize },
}

impl ResourceLimiter for SandboxLimits {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let refused = match maximum {
            _ if desired > self.memory_bytes => GrowthRefused::MemoryCap(self.memory_bytes),
            Some(maximum) if desired > maximum => GrowthRefused::MemoryMaximum { desired, maximum },
            _ => return Ok(true),
        };
        self.refused_memory = true;
        Err(refused.into())
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused_memory = true;
        Err(error)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        match maximum {
            Some(maximum) if desired > maximum => Err(GrowthRefused::TableMaximum { desired, maximum }.into()),
            _ => Ok(true),
        }
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error)
    }

    fn instances(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A wall clock stuck at the epoch and a monotonic clock stuck at zero: the
/// contract has no use for time, and a handler must not depend on it.
struct FrozenClock;
impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}
impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// The engine, the linker and the compiled-artifact cache, shared by all
/// handlers. The engine only loads compiled code; `compiler` makes it.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Sandbox>,
    cache: Option<ArtifactCache>,
    compiler: Compiler,
    watchdog: watchdog::Watchdog,
    limits: Limits,
}

impl Runtime {
    /// `cache_dir`: where compiled handlers are kept across restarts (none:
    /// compile on every start).
    pub fn new(cache_dir: Option<&Path>, limits: Limits, compiler: Compiler) -> Result<Self, Error> {
        let engine = Engine::new(&compile::engine_config(false)).map_err(Error::Runtime)?;
        let mut linker = Linker::new(&engine);
        // Guests built for wasm32-wasip2 import WASI's interfaces even when
        // unused; link them, then grant nothing in `WasiCtx`.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(Error::Runtime)?;
        let cache = match cache_dir {
            Some(dir) => match ArtifactCache::open(dir, &engine) {
                Ok(cache) => Some(cache),
                Err(error) => {
                    tracing::warn!(%error, "compiled handlers will not be cached");
                    None
                }
            },
            None => None,
        };
        let watchdog = watchdog::Watchdog::start(engine.clone());
        Ok(Runtime { engine, linker, cache, compiler, watchdog, limits })
    }

    /// Compiles (or loads from the cache) and pre-instantiates a handler.
    /// `digest` is the `sha256:<hex>` of `bytes` that the loader verified (or
    /// build.rs computed): with a warm cache `bytes` are not read at all.
    pub fn load(&self, name: &str, bytes: &[u8], digest: &str) -> Result<Arc<LoadedHandler>, Error> {
        let fail = |source: LoadFailure| Error::Load { handler: name.to_string(), source };
        debug_assert_eq!(digest, sha256_digest(bytes), "the digest of {name}'s bytes");
        // It names a file in the cache: nothing but 64 hex digits.
        let digest_hex = sha256_hex(digest).ok_or_else(|| fail(LoadFailure::Digest(digest.into())))?;
        let cached = self.cache.as_ref().and_then(|cache| cache.load(&self.engine, digest_hex));
        let component = match cached {
            Some(component) => {
                tracing::debug!(handler = name, %digest, "loaded the compiled handler from the cache");
                component
            }
            None => {
                let started = Instant::now();
                if !wasmparser_is_component(bytes) {
                    return Err(fail(LoadFailure::NotAComponent));
                }
                let artifact = self.compiler.compile(bytes).map_err(|e| fail(e.into()))?;
                tracing::debug!(handler = name, %digest, elapsed = ?started.elapsed(), "compiled the handler");
                self.load_artifact(digest_hex, &artifact).map_err(|e| fail(LoadFailure::Link(e)))?
            }
        };
        self.check_contract(name, &component)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| fail(LoadFailure::Link(e)))?;
        let pre = HandlerPre::new(instance_pre).map_err(|e| fail(LoadFailure::Link(e)))?;
        let interface =
            component.get_export_index(None, format!("{DISCOVERY_EXPORT_PREFIX}{CONTRACT_VERSION}").as_str());
        let export = |function: &'static str| {
            component
                .get_export_index(interface.as_ref(), function)
                .ok_or_else(|| fail(LoadFailure::MissingExport(function)))
        };
        let mut handler = LoadedHandler {
            name: name.to_string(),
            digest: digest.to_string(),
            size: bytes.len(),
            info: HandlerInfo { name: String::new(), version: String::new(), contract: String::new() },
            select: export("select")?,
            group: export("group")?,
            pre,
        };
        handler.info = handler.call(self, "metadata", |handler, store| {
            let instance = handler.instance(store)?;
            let bindings = contract::Handler::new(&mut *store, &instance)?;
            // The typed `select` and `group` are checked against the export now, not at the first event.
            handler.select_func(store, &instance)?;
            handler.group_func(store, &instance)?;
            bindings.devsieve_handler_discovery().call_metadata(store).map(Ok)
        })?;
        if handler.info.contract != CONTRACT_VERSION {
            return Err(Error::Contract { handler: name.into(), found: handler.info.contract.clone() });
        }
        Ok(Arc::new(handler))
    }

    /// Loads what the compiler made: through the cache if there is one, so
    /// the code is mapped from its file; otherwise copied from memory.
    fn load_artifact(&self, digest_hex: &str, artifact: &[u8]) -> wasmtime::Result<Component> {
        if let Some(component) = self.cache.as_ref().and_then(|cache| cache.store(&self.engine, digest_hex, artifact)) {
            return Ok(component);
        }
        cache::load_fresh_artifact(&self.engine, artifact)
    }

    /// Refuses a component that exports another version of the contract, with
    /// a message naming both versions (instantiation would only say "missing export").
    fn check_contract(&self, name: &str, component: &Component) -> Result<(), Error> {
        let ty = component.component_type();
        let mut found = None;
        for (export, item) in ty.exports(&self.engine) {
            if let (Some(version), ComponentItem::ComponentInstance(_)) =
                (export.strip_prefix(DISCOVERY_EXPORT_PREFIX), item.ty)
            {
                if version == CONTRACT_VERSION {
                    return Ok(());
                }
                found = Some(version.to_string());
            }
        }
        match found {
            Some(found) => Err(Error::Contract { handler: name.into(), found }),
            None => Err(Error::Load { handler: name.into(), source: LoadFailure::NotAHandler }),
        }
    }

    fn new_store(&self) -> (Store<Sandbox>, MemoryOutputPipe) {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone()).wall_clock(FrozenClock).monotonic_clock(FrozenClock).insecure_random_seed(0);
        let sandbox = Sandbox {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: SandboxLimits { memory_bytes: self.limits.memory_bytes, refused_memory: false },
            deadline: Instant::now() + self.limits.time_budget,
        };
        let mut store = Store::new(&self.engine, sandbox);
        store.limiter(|sandbox| &mut sandbox.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|store| {
            if Instant::now() >= store.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Continue(1))
            }
        });
        (store, stderr)
    }
}

/// Cheap check of the binary header: a component has layer 1 (a core module 0).
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [0x01, 0x00]
}

/// A handler ready to run: compiled, linked, and introduced by its metadata.
pub struct LoadedHandler {
    name: String,
    digest: String,
    size: usize,
    info: HandlerInfo,
    pre: HandlerPre<Sandbox>,
    /// `select` and `group`, called as typed functions (the generated
    /// bindings would look the export up on every call).
    select: ComponentExportIndex,
    group: ComponentExportIndex,
}

type SelectFunc<'a> = TypedFunc<(&'a str, &'a WireSnapshot), (Result<Vec<Verdict>, GuestError>,)>;
type GroupFunc<'a> = TypedFunc<(&'a str, &'a WireSnapshot), (Result<Vec<DeviceGroup>, GuestError>,)>;

impl std::fmt::Debug for LoadedHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedHandler").field("name", &self.name).field("digest", &self.digest).finish()
    }
}

impl LoadedHandler {
    /// `sha256:<hex>` of the component bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }
    pub fn size(&self) -> usize {
        self.size
    }
    pub fn info(&self) -> &HandlerInfo {
        &self.info
    }

    /// Checks `config` and returns what to collect for it.
    pub fn needs(&self, runtime: &Runtime, config: &str) -> Result<Requirements, Error> {
        self.call(runtime, "needs", |handler, store| {
            handler.pre.instantiate(&mut *store)?.devsieve_handler_discovery().call_needs(store, config)
        })
    }

    /// One verdict per candidate of `snapshot`; the groups of `alone`
    /// verdicts are checked against it as `group`'s are, and each must name
    /// its device among its members.
    pub fn select(
        &self,
        runtime: &Runtime,
        config: &str,
        snapshot: &SnapshotView<'_>,
        allowed_roots: &[std::path::PathBuf],
    ) -> Result<Vec<Verdict>, Error> {
        let wire = snapshot.encode();
        let verdicts = self.call(runtime, "select", |handler, store| {
            let instance = handler.instance(store)?;
            Ok(handler.select_func(store, &instance)?.call(&mut *store, (config, &wire))?.0)
        })?;
        if verdicts.len() != snapshot.candidates.len() {
            return Err(self.invalid(
                "select",
                Invalid::VerdictCount { verdicts: verdicts.len(), candidates: snapshot.candidates.len() },
            ));
        }
        let checker = check::Checker::new(snapshot, allowed_roots);
        for (verdict, &candidate) in verdicts.iter().zip(&snapshot.candidates) {
            let Verdict::Alone(groups) = verdict else { continue };
            let devpath = snapshot.nodes[candidate as usize].devpath;
            let at = |problem: Invalid| {
                self.invalid("select", Invalid::Verdict { devpath: devpath.into(), problem: Box::new(problem) })
            };
            checker.groups(groups).map_err(at)?;
            if let Some(group) = groups.iter().find(|g| !g.members.contains(&candidate)) {
                return Err(at(Invalid::NotItsDevice(group.id.clone())));
            }
        }
        Ok(verdicts)
    }

    /// Groups of the selected devices in `snapshot`, checked against it.
    pub fn group(
        &self,
        runtime: &Runtime,
        config: &str,
        snapshot: &SnapshotView<'_>,
        allowed_roots: &[std::path::PathBuf],
    ) -> Result<Vec<DeviceGroup>, Error> {
        let wire = snapshot.encode();
        let groups = self.call(runtime, "group", |handler, store| {
            let instance = handler.instance(store)?;
            Ok(handler.group_func(store, &instance)?.call(&mut *store, (config, &wire))?.0)
        })?;
        check::groups(snapshot, &groups, allowed_roots).map_err(|reason| self.invalid("group", reason))?;
        Ok(groups)
    }

    /// `problem` with what this handler returned from `call`.
    pub fn invalid(&self, call: &'static str, problem: Invalid) -> Error {
        Error::Invalid { handler: self.name.clone(), call, source: Box::new(problem) }
    }

    /// A new instance in `store`, for the typed `select` and `group` calls
    /// (no generated bindings: their export lookups would run on every call).
    fn instance(&self, store: &mut Store<Sandbox>) -> wasmtime::Result<Instance> {
        self.pre.instance_pre().instantiate(&mut *store)
    }

    fn select_func<'a>(&self, store: &mut Store<Sandbox>, instance: &Instance) -> wasmtime::Result<SelectFunc<'a>> {
        instance.get_typed_func(store, self.select)
    }

    fn group_func<'a>(&self, store: &mut Store<Sandbox>, instance: &Instance) -> wasmtime::Result<GroupFunc<'a>> {
        instance.get_typed_func(store, self.group)
    }

    /// Runs `f` in a fresh sandbox (`f` instantiates the handler there, so
    /// instantiation counts against the budget too) and turns every way it
    /// can fail into an [`Error`].
    fn call<R>(
        &self,
        runtime: &Runtime,
        call: &'static str,
        f: impl FnOnce(&Self, &mut Store<Sandbox>) -> wasmtime::Result<Result<R, GuestError>>,
    ) -> Result<R, Error> {
        let (mut store, stderr) = runtime.new_store();
        let _armed = runtime.watchdog.arm(store.data().deadline);
        match f(self, &mut store) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(Error::Rejected { handler: self.name.clone(), error }),
            Err(error) => Err(self.classify(runtime, call, error, store.data().limits.refused_memory, &stderr)),
        }
    }

    /// What a failed call was: its own limiter refused memory, the watchdog
    /// interrupted it, or it trapped.
    fn classify(
        &self,
        runtime: &Runtime,
        call: &'static str,
        error: wasmtime::Error,
        refused_memory: bool,
        stderr: &MemoryOutputPipe,
    ) -> Error {
        let handler = self.name.clone();
        if refused_memory {
            return Error::Memory { handler, call, cap_mib: runtime.limits.memory_bytes >> 20 };
        }
        if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
            return Error::Timeout { handler, call, budget: runtime.limits.time_budget };
        }
        let captured = String::from_utf8_lossy(&stderr.contents()).trim().to_string();
        let stderr = if captured.is_empty() { String::new() } else { format!("; handler stderr: {captured}") };
        Error::Trap { handler, call, trap: error, stderr }
    }
}

//! Loading a component policy and evaluating it, one fresh instance per call.

use std::path::Path;
use std::sync::Arc;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Module, Store, Trap};

use crate::bindings::raw::RawPolicyPre;
use crate::bindings::{self, PolicyPre};
use crate::cache::{module_digest, CompileCache, CompileOrigin, Compiled, SharedCode};
use crate::capabilities::PolicyContext;
use crate::capabilities::{Capability, Grants};
use crate::capabilities::{KubernetesAccess, OciAccess};
use crate::component_host::HostState;
use crate::core_module::{AbiViolation, CoreRuntime, EvalEnv};
use crate::engine::PolicyEngine;
use crate::error::{EvalError, LoadError, SettingsError};
use crate::guest_output::StderrTail;
use crate::limits::{MemoryCapExceeded, PolicyLimits};
use crate::metadata::{read_metadata, ContextAwareResource, ExecutionMode, PolicyMetadata};
use crate::raw_request::RawRequest;
use crate::request::PolicyRequest;
use crate::verdict::Verdict;

/// How an operator configured one policy.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// The policy id (`clusterwide-pod-privileged`), used in logs and errors.
    pub id: String,
    /// Host capabilities granted (`hostCapabilities`).
    pub grants: Grants,
    /// Deadline and memory cap.
    pub limits: PolicyLimits,
    /// The cluster the `kubernetes` capability reads (none: "not available").
    pub kubernetes: Option<Arc<KubernetesAccess>>,
    /// The resource types it may read (`contextAwareResources`).
    pub context_aware: Vec<ContextAwareResource>,
    /// The registries the `oci` look-ups ask (none: "not available").
    pub oci: Option<Arc<OciAccess>>,
}

impl PolicyConfig {
    /// A policy with no capabilities and default limits.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            grants: Grants::none(),
            limits: PolicyLimits::default(),
            kubernetes: None,
            context_aware: Vec::new(),
            oci: None,
        }
    }
}

/// What kind of module a binary holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// A WebAssembly component (the `palisade:policy` world).
    Component,
    /// A core module (waPC or WASI policies).
    CoreModule,
}

impl ModuleKind {
    /// Detects the kind from the header, or `None` for non-wasm bytes.
    pub fn detect(wasm: &[u8]) -> Option<Self> {
        if wasmtime::wasmparser::Parser::is_component(wasm) {
            Some(Self::Component)
        } else if wasmtime::wasmparser::Parser::is_core_wasm(wasm) {
            Some(Self::CoreModule)
        } else {
            None
        }
    }
}

/// What kind of policy a loaded module is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    /// A component of the `palisade:policy` world.
    Component,
    /// A Kubewarden waPC core module.
    Wapc,
    /// A Kubewarden `wasi` execution-mode program.
    Wasi,
}

impl PolicyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Component => "component",
            Self::Wapc => "waPC",
            Self::Wasi => "wasi",
        }
    }
}

enum Runtime {
    Component(PolicyPre<HostState>),
    RawComponent(RawPolicyPre<HostState>),
    Core(CoreRuntime),
}

/// A loaded, ready-to-evaluate policy. Cheap to share across threads.
pub struct LoadedPolicy {
    engine: PolicyEngine,
    runtime: Runtime,
    context: Arc<PolicyContext>,
    limits: PolicyLimits,
    digest: String,
    metadata: Option<PolicyMetadata>,
    compiled: CompileOrigin,
}

impl std::fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("id", &self.context.policy_id)
            .field("digest", &self.digest)
            .field("compiled", &self.compiled)
            .finish_non_exhaustive()
    }
}

/// Loads policies on one engine, with an optional precompiled cache.
#[derive(Debug, Clone)]
pub struct PolicyLoader {
    engine: PolicyEngine,
    cache: Option<CompileCache>,
    shared: Option<Arc<SharedCode>>,
}

impl PolicyLoader {
    /// A loader that compiles every time.
    pub fn new(engine: PolicyEngine) -> Self {
        Self {
            engine,
            cache: None,
            shared: None,
        }
    }

    /// A loader that keeps precompiled artifacts in `cache`.
    pub fn with_cache(engine: PolicyEngine, cache: CompileCache) -> Self {
        Self {
            engine,
            cache: Some(cache),
            shared: None,
        }
    }

    /// This loader, for one set of policies: the policies it loads that use
    /// the same module share one copy of its compiled code (a hundred
    /// policies on twenty modules hold twenty). Drop it once the set is
    /// loaded, so that code no policy uses any more is freed with the last
    /// policy that used it.
    pub fn sharing_code(&self) -> Self {
        Self {
            shared: Some(Arc::default()),
            ..self.clone()
        }
    }

    /// The engine policies are loaded on.
    pub fn engine(&self) -> &PolicyEngine {
        &self.engine
    }

    /// Reads and loads a policy file.
    pub fn load_file(&self, path: &Path, config: PolicyConfig) -> Result<LoadedPolicy, LoadError> {
        let wasm = std::fs::read(path).map_err(|error| LoadError::Read {
            path: path.to_owned(),
            error,
        })?;
        self.load(&wasm, &path.display().to_string(), config)
    }

    /// Loads a policy from its bytes; `source_name` (a path, a reference)
    /// names them in errors.
    pub fn load(
        &self,
        wasm: &[u8],
        source_name: &str,
        config: PolicyConfig,
    ) -> Result<LoadedPolicy, LoadError> {
        let invalid = |reason: String| LoadError::InvalidModule {
            source_name: source_name.to_owned(),
            reason,
        };
        let config = PolicyConfig {
            grants: config
                .grants
                .clone()
                .with_context_aware_reads(&config.context_aware),
            ..config
        };
        let kind = ModuleKind::detect(wasm).ok_or_else(|| LoadError::NotWasm {
            source_name: source_name.to_owned(),
        })?;
        let metadata = read_metadata(wasm).map_err(|e| match e {
            crate::metadata::MetadataError::Wasm(reason) => invalid(reason),
            json => LoadError::InvalidMetadata {
                source_name: source_name.to_owned(),
                reason: json.to_string(),
            },
        })?;
        let digest = module_digest(wasm);
        let engine = self.engine.engine();
        let (runtime, compile_origin) = match kind {
            ModuleKind::Component => {
                let (component, compile_origin) = self
                    .compile::<Component>(wasm, &digest)
                    .map_err(|e| invalid(format!("{e:#}")))?;
                (
                    component_runtime(engine, &component, &config)?,
                    compile_origin,
                )
            }
            ModuleKind::CoreModule => {
                let kind = core_kind(wasm, metadata.as_ref(), source_name)?;
                let (module, compile_origin) = self
                    .compile::<Module>(wasm, &digest)
                    .map_err(|e| invalid(format!("{e:#}")))?;
                (
                    Runtime::Core(CoreRuntime::new(engine, &module, kind, &config.id)?),
                    compile_origin,
                )
            }
        };
        tracing::debug!(policy = %config.id, %digest, origin = ?compile_origin, "policy loaded");
        Ok(LoadedPolicy {
            engine: self.engine.clone(),
            runtime,
            context: Arc::new(PolicyContext {
                policy_id: config.id,
                grants: config.grants,
                kubernetes: config.kubernetes,
                context_aware: config.context_aware,
                oci: config.oci,
            }),
            limits: config.limits,
            digest,
            metadata,
            compiled: compile_origin,
        })
    }
}

impl PolicyLoader {
    fn compile<T: Compiled>(
        &self,
        wasm: &[u8],
        digest: &str,
    ) -> Result<(T, CompileOrigin), wasmtime::Error> {
        let Some(shared) = self.shared.as_deref() else {
            return self.compile_or_cached(wasm, digest);
        };
        let slot = SharedCode::slot(T::shared(shared), digest);
        let mut slot = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(code) = &*slot {
            return Ok((code.clone(), CompileOrigin::Shared));
        }
        let (code, origin) = self.compile_or_cached::<T>(wasm, digest)?;
        *slot = Some(code.clone());
        Ok((code, origin))
    }

    fn compile_or_cached<T: Compiled>(
        &self,
        wasm: &[u8],
        digest: &str,
    ) -> Result<(T, CompileOrigin), wasmtime::Error> {
        match &self.cache {
            Some(cache) => cache.load(self.engine.engine(), wasm, digest),
            None => Ok((
                T::compile(self.engine.engine(), wasm)?,
                CompileOrigin::Compiled,
            )),
        }
    }
}

/// A component's runtime, for the world its exports say it implements.
fn component_runtime(
    engine: &wasmtime::Engine,
    component: &Component,
    config: &PolicyConfig,
) -> Result<Runtime, LoadError> {
    check_imports(component, engine, config)?;
    let linker =
        linker_for(engine, &config.grants).map_err(|e| LoadError::Engine(e.to_string()))?;
    let instance_pre = linker
        .instantiate_pre(component)
        .map_err(|e| LoadError::UnknownImport {
            policy: config.id.clone(),
            import: format!("{e:#}"),
        })?;
    let wrong_world = |e: wasmtime::Error| LoadError::WrongWorld {
        policy: config.id.clone(),
        reason: format!("{e:#}"),
    };
    let raw = component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name == bindings::RAW_EXPORT);
    Ok(if raw {
        Runtime::RawComponent(RawPolicyPre::new(instance_pre).map_err(wrong_world)?)
    } else {
        Runtime::Component(PolicyPre::new(instance_pre).map_err(wrong_world)?)
    })
}

/// What a core module is: waPC when it exports `__guest_call` (or says
/// so), WASI when its metadata says `executionMode: wasi`.
pub(crate) fn core_kind(
    wasm: &[u8],
    metadata: Option<&PolicyMetadata>,
    source_name: &str,
) -> Result<PolicyKind, LoadError> {
    match metadata.and_then(|m| m.execution_mode) {
        Some(ExecutionMode::Wasi) => return Ok(PolicyKind::Wasi),
        Some(ExecutionMode::KubewardenWapc) => return Ok(PolicyKind::Wapc),
        Some(mode @ (ExecutionMode::Opa | ExecutionMode::Gatekeeper)) => {
            return Err(LoadError::UnsupportedExecutionMode {
                source_name: source_name.to_owned(),
                mode: format!("{mode:?}").to_lowercase(),
            })
        }
        None => {}
    }
    if exports_guest_call(wasm) {
        Ok(PolicyKind::Wapc)
    } else {
        Err(LoadError::NotAPolicy {
            source_name: source_name.to_owned(),
        })
    }
}

/// Whether a core module exports waPC's `__guest_call`.
pub(crate) fn exports_guest_call(wasm: &[u8]) -> bool {
    wasmtime::wasmparser::Parser::new(0)
        .parse_all(wasm)
        .any(|payload| {
            matches!(payload, Ok(wasmtime::wasmparser::Payload::ExportSection(exports))
            if exports.clone().into_iter().any(|e| e.is_ok_and(|e| e.name == "__guest_call")))
        })
}

/// Refuses a component that imports a capability its configuration does
/// not grant, naming the interface, before the linker reports a generic
/// "missing import".
fn check_imports(
    component: &Component,
    engine: &wasmtime::Engine,
    config: &PolicyConfig,
) -> Result<(), LoadError> {
    for (name, item) in component.component_type().imports(engine) {
        if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
            continue;
        }
        let Some(interface) = palisade_interface(name) else {
            continue;
        };
        if interface == "log" || interface == "types" {
            continue;
        }
        match Capability::from_interface(interface) {
            Some(cap) if config.grants.allows_interface(cap) => {}
            Some(cap) => {
                return Err(LoadError::CapabilityNotGranted {
                    policy: config.id.clone(),
                    interface: name.to_owned(),
                    grant: format!("{cap}/*"),
                })
            }
            None => {
                return Err(LoadError::UnknownImport {
                    policy: config.id.clone(),
                    import: name.to_owned(),
                })
            }
        }
    }
    Ok(())
}

/// `palisade:policy/net@0.1.0` → `net`.
pub(crate) fn palisade_interface(import: &str) -> Option<&str> {
    let rest = import.strip_prefix(bindings::PACKAGE)?.strip_prefix('/')?;
    Some(rest.split('@').next().unwrap_or(rest))
}

/// WASI (needed by std, with nothing reachable), the WIT types, `log`, and
/// the granted capabilities.
fn linker_for(engine: &wasmtime::Engine, grants: &Grants) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    bindings::palisade::policy::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    crate::capabilities::add_to_linker(&mut linker, grants)?;
    Ok(linker)
}

impl LoadedPolicy {
    /// The policy id.
    pub fn id(&self) -> &str {
        &self.context.policy_id
    }

    /// SHA-256 of the module.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Metadata embedded in the module, if any.
    pub fn metadata(&self) -> Option<&PolicyMetadata> {
        self.metadata.as_ref()
    }

    /// Whether the code was compiled now or loaded from the cache.
    pub fn compile_origin(&self) -> CompileOrigin {
        self.compiled
    }

    /// The limits every evaluation runs under.
    pub fn limits(&self) -> PolicyLimits {
        self.limits
    }

    /// The kind of policy.
    pub fn kind(&self) -> PolicyKind {
        match &self.runtime {
            Runtime::Component(_) | Runtime::RawComponent(_) => PolicyKind::Component,
            Runtime::Core(core) => core.kind(),
        }
    }

    /// Evaluates one admission request in a fresh instance.
    pub fn validate(&self, request: &PolicyRequest, settings: &str) -> Result<Verdict, EvalError> {
        match &self.runtime {
            Runtime::Component(pre) => {
                let (mut store, instance) = self.instantiate(|store| pre.instantiate(store))?;
                let response = instance
                    .call_validate(&mut store, &request.wit, settings)
                    .map_err(|e| classify(e, self.limits, store.data().stderr()))?;
                Verdict::from_wit(response).map_err(EvalError::InvalidResponse)
            }
            Runtime::RawComponent(_) => Err(EvalError::WrongInput(
                "it is a raw policy (a component of the `raw-policy` world): it evaluates JSON documents on /validate_raw, not admission requests".into(),
            )),
            Runtime::Core(core) => {
                core.validate(&self.env(), &request.kubewarden_json()?, settings)
            }
        }
    }

    /// Evaluates one raw JSON document in a fresh instance. Kubewarden's
    /// core modules receive it as they receive an admission request
    /// (`{"request": <document>, "settings": ...}`).
    pub fn validate_raw(&self, request: &RawRequest, settings: &str) -> Result<Verdict, EvalError> {
        match &self.runtime {
            Runtime::RawComponent(pre) => {
                let (mut store, instance) = self.instantiate(|store| pre.instantiate(store))?;
                let response = instance
                    .call_validate_raw(&mut store, request.json(), settings)
                    .map_err(|e| classify(e, self.limits, store.data().stderr()))?;
                Verdict::from_wit(response).map_err(EvalError::InvalidResponse)
            }
            Runtime::Component(_) => Err(EvalError::WrongInput(
                "it is a Kubernetes policy (a component of the `policy` world): it evaluates admission requests on /validate, not raw documents".into(),
            )),
            Runtime::Core(core) => core.validate(&self.env(), request.json(), settings),
        }
    }

    /// Runs `validate-settings`. Settings that are not JSON are refused
    /// before the policy runs.
    pub fn validate_settings(&self, settings: &str) -> Result<(), SettingsError> {
        serde_json::from_str::<serde::de::IgnoredAny>(settings)
            .map_err(|e| SettingsError::NotJson(e.to_string()))?;
        match &self.runtime {
            Runtime::Component(pre) => {
                let (mut store, instance) = self.instantiate(|store| pre.instantiate(store))?;
                instance
                    .call_validate_settings(&mut store, settings)
                    .map_err(|e| classify(e, self.limits, store.data().stderr()))?
                    .map_err(SettingsError::Rejected)
            }
            Runtime::RawComponent(pre) => {
                let (mut store, instance) = self.instantiate(|store| pre.instantiate(store))?;
                instance
                    .call_validate_settings(&mut store, settings)
                    .map_err(|e| classify(e, self.limits, store.data().stderr()))?
                    .map_err(SettingsError::Rejected)
            }
            Runtime::Core(core) => core.validate_settings(&self.env(), settings),
        }
    }

    /// The waPC protocol version, for waPC policies.
    pub fn protocol_version(&self) -> Option<Result<String, EvalError>> {
        match &self.runtime {
            Runtime::Core(core) if core.kind() == PolicyKind::Wapc => {
                Some(core.protocol_version(&self.env()))
            }
            _ => None,
        }
    }

    fn env(&self) -> EvalEnv<'_> {
        EvalEnv {
            engine: &self.engine,
            limits: self.limits,
            context: &self.context,
        }
    }

    /// A fresh store under the policy's limits, and the instance
    /// `instantiate` makes in it (of either world).
    fn instantiate<I>(
        &self,
        instantiate: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<I>,
    ) -> Result<(Store<HostState>, I), EvalError> {
        let state = HostState::new(self.context.clone(), self.limits.effective_memory_bytes());
        let mut store = self.engine.store(state, self.limits.timeout);
        let instance =
            instantiate(&mut store).map_err(|e| classify(e, self.limits, store.data().stderr()))?;
        Ok((store, instance))
    }
}

/// Turns a wasmtime error into an [`EvalError`] by its type, never by its
/// text. A trap is explained by what the guest last wrote to stderr (a
/// panic message) or by its code, on one line: the wasm backtrace goes to
/// the debug log, not to the API server's user.
pub(crate) fn classify(
    error: wasmtime::Error,
    limits: PolicyLimits,
    stderr: &StderrTail,
) -> EvalError {
    if let Some(cap) = error.downcast_ref::<MemoryCapExceeded>() {
        return EvalError::MemoryExhausted {
            limit_bytes: cap.cap,
        };
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        return match trap {
            Trap::Interrupt => EvalError::Timeout {
                deadline: limits.timeout,
            },
            code => {
                tracing::debug!(error = format!("{error:#}"), "policy trapped");
                EvalError::Trap {
                    code: Some(*code),
                    message: stderr.explanation().unwrap_or_else(|| code.to_string()),
                }
            }
        };
    }
    if let Some(violation) = error.downcast_ref::<AbiViolation>() {
        tracing::debug!(error = format!("{error:#}"), "policy broke the waPC ABI");
        return EvalError::Trap {
            code: None,
            message: violation.to_string(),
        };
    }
    if error
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return EvalError::Busy(format!("{error:#}"));
    }
    EvalError::Runtime(format!("{error:#}"))
}

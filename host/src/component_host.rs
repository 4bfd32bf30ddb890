//! The data of one component evaluation's `Store`: WASI (which std needs,
//! with nothing reachable), the memory limiter, and the policy's context
//! through which the capability imports in [`crate::capabilities`] answer.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::HostError;
use crate::capabilities::{not_available, CapabilityCall, PolicyContext};
use crate::guest_output::StderrTail;
use crate::limits::MemoryLimiter;

/// Per-evaluation state: created with the store, dropped with it, so nothing
/// a policy does survives its evaluation.
pub(crate) struct HostState {
    wasi: WasiCtx,
    /// What the guest wrote to stderr: explains its traps.
    stderr: StderrTail,
    table: ResourceTable,
    limiter: MemoryLimiter,
    context: Arc<PolicyContext>,
}

impl HostState {
    pub(crate) fn new(context: Arc<PolicyContext>, memory_cap: usize) -> Self {
        // No arguments, no environment, no preopened directories, no sockets,
        // stdin and stdout empty, the end of stderr kept to explain traps:
        // WASI is there only because std needs it.
        let stderr = StderrTail::default();
        let wasi = WasiCtxBuilder::new().stderr(stderr.clone()).build();
        Self {
            wasi,
            stderr,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_cap),
            context,
        }
    }

    /// What the guest wrote to stderr.
    pub(crate) fn stderr(&self) -> &StderrTail {
        &self.stderr
    }

    /// The policy being evaluated.
    pub(crate) fn context(&self) -> &PolicyContext {
        &self.context
    }

    /// `Err(not-granted)` unless the policy was granted `call`.
    pub(crate) fn check(&self, call: CapabilityCall) -> Result<(), HostError> {
        self.context.grants.check(call)
    }

    /// The answer of a call whose backend this host lacks: not granted, or
    /// not available.
    pub(crate) fn unavailable<T>(&self, call: CapabilityCall) -> Result<T, HostError> {
        self.check(call)?;
        Err(not_available(call))
    }
}

impl crate::limits::Limited for HostState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::bindings::palisade::policy::types::Host for HostState {}

//! Per-policy resource limits and the store limiter that enforces them.

use std::time::Duration;

use wasmtime::ResourceLimiter;

use crate::engine::MAX_POLICY_MEMORY;

/// Default wall-clock budget of one evaluation (Kubewarden's default policy timeout).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Default cap on a policy's linear memory: room for an 800 KB object, its old
/// copy and their parsed forms several times over.
pub const DEFAULT_MEMORY_BYTES: usize = 128 << 20;

/// Largest table a policy may grow (function references, not data).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// What one evaluation of a policy may consume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Wall-clock deadline of one evaluation, instantiation included.
    pub timeout: Duration,
    /// Cap on the policy's linear memory, in bytes.
    pub memory_bytes: usize,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

impl PolicyLimits {
    /// The memory cap, bounded by what the engine's pool can hold.
    pub(crate) fn effective_memory_bytes(&self) -> usize {
        self.memory_bytes.min(MAX_POLICY_MEMORY)
    }
}

/// Returned by the limiter when a memory would grow past its cap. It travels
/// through wasmtime as the error of the call, so the host recognises it by
/// type rather than by message.
#[derive(Debug, thiserror::Error)]
#[error("memory growth to {desired} bytes exceeds the cap of {cap} bytes")]
pub(crate) struct MemoryCapExceeded {
    pub cap: usize,
    pub desired: usize,
}

/// Store data that carries a [`MemoryLimiter`]; [`crate::PolicyEngine::store`]
/// attaches it, so no store is created without its limits.
pub(crate) trait Limited: Send + 'static {
    fn limiter(&mut self) -> &mut MemoryLimiter;
}

/// A [`ResourceLimiter`] attached to every store.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    cap: usize,
}

impl MemoryLimiter {
    pub(crate) fn new(cap: usize) -> Self {
        Self { cap }
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap {
            // An error (rather than `Ok(false)`) traps at once: a guest that
            // cannot allocate would abort anyway, and the typed error tells
            // the operator why.
            return Err(wasmtime::Error::new(MemoryCapExceeded {
                cap: self.cap,
                desired,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

//! The one `wasmtime::Engine` of a process, configured in one place.
//!
//! Every policy, every evaluation and every binary (policy-server, CLI,
//! controller, audit scanner) goes through [`PolicyEngine`], so the sandbox
//! guarantees are decided here and nowhere else.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
};

use crate::limits::Limited;

use crate::error::LoadError;

/// How often the epoch advances. Deadlines are counted in ticks, so this is
/// the granularity of every timeout (Kubewarden's is one second).
pub const DEFAULT_EPOCH_TICK: Duration = Duration::from_millis(1);

/// Upper bound for any policy's linear memory. Per-policy caps
/// ([`crate::PolicyLimits::memory_bytes`]) are enforced below it by the
/// store's resource limiter; this bound sizes the pooling allocator's slots.
pub const MAX_POLICY_MEMORY: usize = 1 << 30;

/// Tunables of the engine. The defaults suit a policy-server on a small node.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Granularity of deadlines.
    pub epoch_tick: Duration,
    /// How many policy instances may be alive at once across the process.
    /// Evaluations beyond it fail fast with [`crate::EvalError::Busy`]
    /// instead of queueing inside the engine.
    pub max_concurrent_instances: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            epoch_tick: DEFAULT_EPOCH_TICK,
            max_concurrent_instances: 256,
        }
    }
}

/// A configured engine plus the thread that advances its epoch.
///
/// Cloning is cheap and shares the engine. The ticker thread holds only a
/// weak reference and exits once the last clone is dropped.
#[derive(Clone)]
pub struct PolicyEngine {
    engine: Engine,
    config: Arc<EngineConfig>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(config: EngineConfig) -> Result<Self, LoadError> {
        let engine = match Engine::new(&wasmtime_config(&config, MemoryReset::PagemapScan)) {
            Ok(engine) => engine,
            Err(e) => {
                tracing::info!(reason = %e, "PAGEMAP_SCAN unavailable; resetting policy memory with madvise");
                Engine::new(&wasmtime_config(&config, MemoryReset::Madvise))
                    .map_err(|e| LoadError::Engine(e.to_string()))?
            }
        };
        spawn_epoch_ticker(&engine, config.epoch_tick)?;
        Ok(Self {
            engine,
            config: Arc::new(config),
        })
    }

    /// The underlying wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The tick that deadlines are counted in.
    pub fn epoch_tick(&self) -> Duration {
        self.config.epoch_tick
    }

    /// Number of epoch ticks that covers `deadline`, rounded up, plus one: the
    /// first tick can come at any moment after the deadline is set, so one
    /// extra tick guarantees the policy gets at least its full time.
    pub(crate) fn deadline_ticks(&self, deadline: Duration) -> u64 {
        let tick = self.config.epoch_tick.as_nanos().max(1);
        let ticks = deadline.as_nanos().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
    }
}

/// How linear memory is reset when an instance slot is reused.
#[derive(Clone, Copy)]
enum MemoryReset {
    /// Find the dirtied pages with the PAGEMAP_SCAN ioctl and rewrite them.
    PagemapScan,
    /// Rewrite the lowest pages and give the rest back to the kernel.
    Madvise,
}

impl PolicyEngine {
    /// A store for one evaluation: the memory limiter attached and the
    /// deadline armed. The deadline covers instantiation too (data segment
    /// initialisation, start functions), so the store is made before it.
    pub(crate) fn store<T: Limited>(&self, data: T, timeout: Duration) -> Store<T> {
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| s.limiter());
        store.set_epoch_deadline(self.deadline_ticks(timeout));
        store.epoch_deadline_trap();
        store
    }
}

/// The wasmtime configuration: every sandbox-relevant choice is here.
fn wasmtime_config(config: &EngineConfig, reset: MemoryReset) -> Config {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true);
    // Deadlines: compiled code checks the epoch at function entries and loop
    // back-edges, which costs a load and a compare, far cheaper than fuel.
    wasm.epoch_interruption(true);
    // Policies are short-lived and evaluated on blocking threads; a deep
    // recursion must end in a trap, not in a host stack overflow.
    wasm.max_wasm_stack(1 << 20);
    // A fresh instance per evaluation is affordable only if instantiation is
    // a slot reuse plus copy-on-write of the data segments: the pooling
    // allocator keeps memories and tables mapped between instances and only
    // resets the pages that were touched.
    let mut pool = PoolingAllocationConfig::new();
    let instances = config.max_concurrent_instances.max(1);
    pool.total_component_instances(instances);
    // A component built by cargo-component holds the policy module, the WASI
    // adapter and a few small shim modules.
    pool.max_core_instances_per_component(16);
    pool.total_core_instances(instances.saturating_mul(8));
    pool.max_memories_per_component(2);
    pool.total_memories(instances.saturating_mul(2));
    pool.max_tables_per_component(8);
    pool.total_tables(instances.saturating_mul(8));
    pool.max_memory_size(MAX_POLICY_MEMORY);
    // Component instance state grows with the number of imported functions
    // (WASI is large); the default 1 MiB slot is too small for some guests.
    pool.max_component_instance_size(4 << 20);
    pool.max_core_instance_size(4 << 20);
    // Reset memory between instances without giving pages back to the
    // kernel: with PAGEMAP_SCAN (Linux 6.7+) only the pages an evaluation
    // dirtied are found and rewritten, up to a budget, so the next instance
    // neither page-faults nor pays an madvise; this halves the cost of a
    // fresh instance. Without it, the budget is memset whole on every reuse,
    // so it stays small and the rest is madvised away.
    match reset {
        MemoryReset::PagemapScan => {
            pool.pagemap_scan(Enabled::Yes);
            pool.linear_memory_keep_resident(2 << 20);
        }
        MemoryReset::Madvise => {
            pool.pagemap_scan(Enabled::No);
            pool.linear_memory_keep_resident(64 << 10);
        }
    }
    pool.table_keep_resident(16 << 10);
    wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    wasm.memory_init_cow(true);
    wasm.parallel_compilation(true);
    wasm
}

fn spawn_epoch_ticker(engine: &Engine, tick: Duration) -> Result<(), LoadError> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("palisade-epoch".into())
        .spawn(move || {
            // Sleep towards absolute instants so that oversleeping does not
            // accumulate: 1000 ticks take one second, not 1.08.
            let mut next = Instant::now();
            loop {
                next += tick;
                let now = Instant::now();
                match next.checked_duration_since(now) {
                    Some(wait) => thread::sleep(wait),
                    None => next = now,
                }
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker thread: {e}")))
}

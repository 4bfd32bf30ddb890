//! The waPC host imports, driven by a guest (fuzz/guest/wapc_replay.wat)
//! that replays the fuzzed script into every import with the pointers and
//! lengths it says: each call is answered or traps the guest; the host never
//! panics, and the next evaluation is unaffected.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use palisade_host::{EngineConfig, LoadedPolicy, PolicyConfig, PolicyEngine, PolicyLoader};

fn policy() -> &'static LoadedPolicy {
    static POLICY: OnceLock<LoadedPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let wasm =
            wat::parse_str(include_str!("../guest/wapc_replay.wat")).expect("the guest assembles");
        let loader = PolicyLoader::new(PolicyEngine::new(EngineConfig::default()).expect("engine"));
        // No grants: capability calls are decoded and refused, nothing leaves the process.
        loader
            .load(&wasm, "wapc_replay.wat", PolicyConfig::new("wapc-replay"))
            .expect("the guest loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let script: String = data.iter().map(|b| format!("{b:02x}")).collect();
    let settings = serde_json::to_string(&script).expect("a string");
    let _ = policy().validate_settings(&settings);
});

//! Shared helpers for the host's integration tests: where the built sample
//! policies and the fixtures are, and a loader with a per-run cache.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::OnceLock;

pub mod registry;
pub mod server;

use palisade_host::{
    CompileCache, EngineConfig, LoadedPolicy, PolicyConfig, PolicyEngine, PolicyLoader,
    PolicyRequest,
};

/// A sample policy built by `make policies` (`scripts/build-policies.sh`).
pub fn policy_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("PALISADE_POLICY_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("policies")))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/policies"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the sample policies first with `make policies`",
        path.display()
    );
    path
}

/// A fixture AdmissionReview from the shared fixtures.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/admission")
        .join(name)
}

pub fn fixture(name: &str) -> PolicyRequest {
    let body = std::fs::read(fixture_path(name)).unwrap();
    PolicyRequest::from_review_json(&body).unwrap()
}

/// One loader per test binary, compiling into a temporary cache.
pub fn loader() -> &'static PolicyLoader {
    static LOADER: OnceLock<(PolicyLoader, tempfile::TempDir)> = OnceLock::new();
    &LOADER
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let engine = PolicyEngine::new(EngineConfig::default()).unwrap();
            (
                PolicyLoader::with_cache(engine, CompileCache::new(dir.path()).unwrap()),
                dir,
            )
        })
        .0
}

pub fn load(name: &str, config: PolicyConfig) -> LoadedPolicy {
    loader().load_file(&policy_path(name), config).unwrap()
}

pub fn load_default(name: &str) -> LoadedPolicy {
    load(name, PolicyConfig::new(name))
}

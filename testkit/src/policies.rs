//! Loading the built sample policies with one compile cache per test binary.

use std::sync::OnceLock;

use crate::paths::{fixture_path, policy_path};

use palisade_host::{
    CompileCache, EngineConfig, LoadedPolicy, PolicyConfig, PolicyEngine, PolicyLoader,
    PolicyRequest,
};

/// A fixture, parsed as the policy-server parses a request.
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

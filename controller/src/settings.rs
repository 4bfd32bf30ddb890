//! Settings validation through the host crate: the same fetch, load and
//! `validate-settings` the policy-server runs, before any webhook exists.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_host::fetch::{Fetcher, FetcherOptions, Sources};
use palisade_host::{CompileCache, EngineConfig, Grants, PolicyConfig, PolicyEngine, PolicyLoader};

/// Why a policy cannot be activated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// The module could not be fetched or loaded.
    #[error("{0}")]
    Module(String),
    /// The policy refused its settings (the policy's own message).
    #[error("{0}")]
    Settings(String),
    /// `validate-settings` did not run to a verdict (deadline, trap, bad
    /// JSON): a fault of the policy or of the moment, not a refusal.
    #[error("{0}")]
    Failed(String),
}

impl CheckError {
    /// The same error, its message prefixed (a group member's name).
    pub fn prefixed(self, prefix: &str) -> Self {
        match self {
            Self::Module(m) => Self::Module(format!("{prefix}{m}")),
            Self::Settings(m) => Self::Settings(format!("{prefix}{m}")),
            Self::Failed(m) => Self::Failed(format!("{prefix}{m}")),
        }
    }

    /// Whether the policy itself gave a verdict on its settings. Only a
    /// verdict ends the enforcement of an active policy; a registry outage or
    /// a check that did not finish leaves it registered.
    pub fn is_verdict(&self) -> bool {
        matches!(self, Self::Settings(_))
    }

    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Module(_) => "ModuleUnavailable",
            Self::Settings(_) => "InvalidSettings",
            Self::Failed(_) => "SettingsCheckFailed",
        }
    }
}

/// The caches here are maps changed by single calls: a panic elsewhere
/// cannot leave one half-written, so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Fetches and loads modules to check settings.
#[derive(Debug, Clone)]
pub struct SettingsChecker {
    options: FetcherOptions,
    fetcher: Fetcher,
    /// One fetcher per distinct `sources.yml` (PolicyServers may differ), all
    /// sharing the module store.
    by_sources: Arc<Mutex<HashMap<String, Fetcher>>>,
    /// Checks that passed recently: a reconciler runs often (every
    /// Deployment status change wakes the bound policies) and must not hit
    /// the registry and the module each time.
    passed: Arc<Mutex<HashMap<String, Instant>>>,
    passed_ttl: Duration,
    loader: PolicyLoader,
}

/// How long a passed check is trusted by [`SettingsChecker::check_with`]: a
/// tag moved to a module that refuses the settings is noticed within this.
const PASSED_TTL: Duration = Duration::from_secs(300);

impl SettingsChecker {
    /// Keeps fetched modules in `store_dir` and their compiled code next to it.
    pub fn new(fetch: FetcherOptions) -> Result<Self, CheckError> {
        let compiled: PathBuf = fetch.store_dir.join("compiled");
        let fetcher = Fetcher::new(fetch.clone()).map_err(|e| CheckError::Module(e.to_string()))?;
        let engine = PolicyEngine::new(EngineConfig::default())
            .map_err(|e| CheckError::Module(e.to_string()))?;
        let cache = CompileCache::new(compiled).map_err(|e| CheckError::Module(e.to_string()))?;
        Ok(Self {
            options: fetch,
            fetcher,
            by_sources: Arc::default(),
            passed: Arc::default(),
            passed_ttl: PASSED_TTL,
            loader: PolicyLoader::with_cache(engine, cache),
        })
    }

    /// Trusts a passed check for `ttl` instead of five minutes (zero: check
    /// every time).
    pub fn with_passed_ttl(mut self, ttl: Duration) -> Self {
        self.passed_ttl = ttl;
        self
    }

    /// Checks one policy's module and settings, fetching with the
    /// checker's own sources.
    pub async fn check(
        &self,
        id: &str,
        module: &str,
        settings: &serde_json::Value,
    ) -> Result<(), CheckError> {
        self.check_on(&self.fetcher, id, module, settings).await
    }

    /// Checks one policy's module and settings, fetching with the sources
    /// of the PolicyServer that will run it.
    pub async fn check_with(
        &self,
        id: &str,
        module: &str,
        settings: &serde_json::Value,
        sources: &Sources,
    ) -> Result<(), CheckError> {
        let key = format!("{sources:?}");
        let check_key = format!("{key}\n{module}\n{settings}");
        let now = Instant::now();
        if lock(&self.passed)
            .get(&check_key)
            .is_some_and(|at| now.duration_since(*at) < self.passed_ttl)
        {
            return Ok(());
        }
        let fetcher = {
            let mut fetchers = lock(&self.by_sources);
            match fetchers.get(&key) {
                Some(fetcher) => fetcher.clone(),
                None => {
                    let fetcher = Fetcher::new(FetcherOptions {
                        sources: sources.clone(),
                        ..self.options.clone()
                    })
                    .map_err(|e| CheckError::Module(e.to_string()))?;
                    fetchers.insert(key, fetcher.clone());
                    fetcher
                }
            }
        };
        self.check_on(&fetcher, id, module, settings).await?;
        let mut passed = lock(&self.passed);
        let ttl = self.passed_ttl;
        passed.retain(|_, at| now.duration_since(*at) < ttl);
        passed.insert(check_key, now);
        Ok(())
    }

    async fn check_on(
        &self,
        fetcher: &Fetcher,
        id: &str,
        module: &str,
        settings: &serde_json::Value,
    ) -> Result<(), CheckError> {
        let fetched = fetcher
            .fetch(module)
            .await
            .map_err(|e| CheckError::Module(e.to_string()))?;
        let loader = self.loader.clone();
        let id = id.to_owned();
        let settings = settings.to_string();
        tokio::task::spawn_blocking(move || {
            // Settings validation runs no capability; granting them all here
            // keeps a policy that imports one from failing the check.
            let mut config = PolicyConfig::new(id);
            config.grants = Grants::all();
            let policy = loader
                .load_file(&fetched.path, config)
                .map_err(|e| CheckError::Module(e.to_string()))?;
            policy.validate_settings(&settings).map_err(|e| match e {
                palisade_host::SettingsError::Rejected(message) => CheckError::Settings(message),
                other => CheckError::Failed(other.to_string()),
            })
        })
        .await
        .map_err(|e| CheckError::Module(format!("settings check task failed: {e}")))?
    }
}

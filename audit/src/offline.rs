//! Auditing manifests before they reach a cluster (CI pipelines): every
//! object of a directory of YAML or JSON manifests, evaluated by every
//! policy of a `policies.yml`, with the same evaluation as the cluster
//! scan. No cluster is involved: context-aware calls answer "not
//! available", which is an `error` result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube::ResourceExt;
use palisade_host::fetch::{Fetcher, FetcherOptions, Sources};
use palisade_host::server::config::{Entry, PoliciesConfig, PolicyMode};
use palisade_host::server::LoadOptions;
use palisade_host::{EngineConfig, PolicyEngine, PolicyLoader};
use serde::Deserialize;

use crate::policies::{AuditedPolicy, Target};
use crate::reports::ReportBody;
use crate::scanner::{evaluate, review_json, Sets};

/// What to audit, and with what.
#[derive(Debug, Clone)]
pub struct OfflineOptions {
    pub policies_file: PathBuf,
    pub manifests: PathBuf,
    pub sources: Option<PathBuf>,
    pub store_dir: PathBuf,
    pub policy_timeout: Duration,
}

/// Why the manifests could not be audited.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{0}")]
    Config(#[from] palisade_host::server::ConfigError),
    #[error("{0}")]
    Fetch(#[from] palisade_host::fetch::FetchError),
    #[error("policy engine: {0}")]
    Engine(String),
    #[error("cannot read {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

/// The policy-server name the offline policies are loaded under.
const OFFLINE: &str = "offline";

/// One report per object of the manifests, in file and document order.
pub async fn audit_manifests(options: &OfflineOptions) -> Result<Vec<ReportBody>, OfflineError> {
    let config = PoliciesConfig::from_file(&options.policies_file)?;
    let sources = match &options.sources {
        Some(path) => Sources::from_file(path)?,
        None => Sources::default(),
    };
    let fetcher = Fetcher::new(FetcherOptions {
        store_dir: options.store_dir.clone(),
        sources,
        ..FetcherOptions::default()
    })?;
    let engine = PolicyEngine::new(EngineConfig::default())
        .map_err(|e| OfflineError::Engine(e.to_string()))?;
    let load = LoadOptions {
        default_timeout: options.policy_timeout,
        memory_bytes: palisade_host::DEFAULT_MEMORY_BYTES,
        continue_on_errors: true,
        kubernetes: None,
        oci: None,
    };
    let set =
        palisade_host::server::load_policies(&config, &fetcher, &PolicyLoader::new(engine), &load)
            .await
            .map_err(|e| OfflineError::Engine(e.to_string()))?;
    let sets: Sets = [(OFFLINE.to_owned(), Ok(Arc::new(set)))].into();
    let policies: Vec<Arc<AuditedPolicy>> = config
        .entries
        .iter()
        .map(|(id, entry)| Arc::new(policy(id, entry)))
        .collect();
    let mut reports = Vec::new();
    for object in read_manifests(&options.manifests)? {
        let Some(types) = object.types.clone() else {
            continue;
        };
        let (group, version) = types
            .api_version
            .split_once('/')
            .unwrap_or(("", types.api_version.as_str()));
        // No discovery without a cluster: the plural is Kubernetes' usual one.
        let target = Target {
            resource: ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &types.kind)),
            namespaced: object.namespace().is_some(),
        };
        let review = review_json(&object, &target);
        let results = evaluate(&review, &policies, &sets);
        let scope = ObjectReference {
            api_version: Some(types.api_version.clone()),
            kind: Some(types.kind.clone()),
            name: Some(object.name_any()),
            namespace: object.namespace(),
            uid: object.uid(),
            ..ObjectReference::default()
        };
        reports.push(ReportBody::new(scope, results));
    }
    Ok(reports)
}

/// An entry of `policies.yml` as the evaluation sees it (no webhook rules
/// offline: every policy sees every object).
fn policy(id: &str, entry: &Entry) -> AuditedPolicy {
    let (monitor, mutating, context_aware) = match entry {
        Entry::Policy(p) => (
            p.policy_mode == PolicyMode::Monitor,
            p.allowed_to_mutate,
            !p.module.context_aware_resources.is_empty(),
        ),
        Entry::Group(g) => (
            g.policy_mode == PolicyMode::Monitor,
            false,
            g.policies
                .values()
                .any(|m| !m.context_aware_resources.is_empty()),
        ),
    };
    AuditedPolicy {
        id: id.to_owned(),
        name: id.to_owned(),
        namespace: None,
        uid: String::new(),
        resource_version: String::new(),
        policy_server: OFFLINE.to_owned(),
        monitor,
        mutating,
        context_aware,
        severity: None,
        category: None,
        namespace_selector: None,
        object_selector: None,
        match_conditions: Vec::new(),
        targets: Vec::new(),
    }
}

/// Every object of the `.yaml`, `.yml` and `.json` files of `dir` (or of
/// the file `dir`), multi-document YAML included, in name order.
fn read_manifests(dir: &Path) -> Result<Vec<DynamicObject>, OfflineError> {
    let error = |path: &Path, reason: String| OfflineError::Manifest {
        path: path.to_owned(),
        reason,
    };
    let files: Vec<PathBuf> = if dir.is_file() {
        vec![dir.to_owned()]
    } else {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| error(dir, e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
            })
            .collect();
        files.sort();
        files
    };
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| error(&file, e.to_string()))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(document)
                .map_err(|e| error(&file, e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let object: DynamicObject = serde_yaml::from_value(value)
                .map_err(|e| error(&file, format!("not a Kubernetes object: {e}")))?;
            objects.push(object);
        }
    }
    Ok(objects)
}

/// The results of all reports, by outcome (for the exit status).
pub fn failures(reports: &[ReportBody]) -> BTreeMap<&'static str, u32> {
    let mut counts = BTreeMap::new();
    for report in reports {
        *counts.entry("fail").or_insert(0) += report.summary.fail;
        *counts.entry("error").or_insert(0) += report.summary.error;
    }
    counts
}

//! One scan: list what the audited policies see, evaluate it in process,
//! write one report per resource (only when it changed), and remove the
//! reports nothing backs any more.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ObjectReference};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::DynamicObject;
use kube::discovery::Discovery;
use kube::ResourceExt;
use palisade_host::fetch::{Fetcher, FetcherOptions, Sources};
use palisade_host::server::config::PoliciesConfig;
use palisade_host::server::policies::{Endpoint, ServedPolicy};
use palisade_host::server::{LoadOptions, PolicySet};
use palisade_host::{
    CompileCache, EngineConfig, KubernetesAccess, PolicyEngine, PolicyLoader, PolicyRequest,
};

use crate::conditions::{self, Applies};
use crate::policies::{self, AuditedPolicy, NotAudited, Target};
use crate::reports::{
    report_metadata, Outcome, PolicyResult, ReportBody, ReportKind, Timestamp, MANAGED_BY,
    MANAGED_BY_LABEL,
};

/// How a scan runs (the scanner's flags).
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only cluster-scoped resources.
    pub cluster_only: bool,
    /// The engine's namespace: PolicyServer ConfigMaps live there, and it is never scanned.
    pub engine_namespace: String,
    pub ignore_namespaces: Vec<String>,
    /// Objects per LIST page: memory stays bounded whatever the cluster size.
    pub page_size: u32,
    pub report_kind: ReportKind,
    /// Print every report as JSON on standard output.
    pub output_scan: bool,
    /// Never write or delete a report.
    pub disable_store: bool,
    /// Objects evaluated and written at once, across the whole scan.
    pub parallelism: usize,
    /// Deadline of one evaluation when the policy sets none.
    pub policy_timeout: Duration,
    /// Where modules are fetched to and compiled.
    pub store_dir: std::path::PathBuf,
}

/// What a scan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub objects: u64,
    pub policies: usize,
    pub pass: u64,
    pub fail: u64,
    pub error: u64,
    pub skip: u64,
    pub written: u64,
    pub unchanged: u64,
    pub deleted: u64,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.objects += other.objects;
        self.pass += other.pass;
        self.fail += other.fail;
        self.error += other.error;
        self.skip += other.skip;
        self.written += other.written;
        self.unchanged += other.unchanged;
        self.deleted += other.deleted;
    }
}

/// Why a scan could not run at all (a single object or policy never stops it).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("policy engine: {0}")]
    Engine(String),
}

/// The policies of one PolicyServer, loaded as its pods load them.
pub(crate) type Sets = HashMap<String, Result<Arc<PolicySet>, String>>;

/// Runs one scan.
pub async fn scan(client: kube::Client, options: &ScanOptions) -> Result<Stats, ScanError> {
    let started = Instant::now();
    let run = run_id();
    let discovery = Discovery::new(client.clone()).run().await?;
    let (audited, not_audited) = policies::audited(&client, &discovery).await?;
    for NotAudited { id, reason, error } in &not_audited {
        if *error {
            tracing::warn!(policy = %id, %reason, "policy not audited");
        } else {
            tracing::info!(policy = %id, %reason, "policy skipped");
        }
    }
    let sets = Arc::new(load_sets(&client, &audited, options).await?);
    // Shared by reference: an object's evaluation takes the policies that
    // see it without copying them.
    let audited: Vec<Arc<AuditedPolicy>> = audited.into_iter().map(Arc::new).collect();
    let scanner = Scanner {
        evaluators: Arc::new(tokio::sync::Semaphore::new(evaluators())),
        client: client.clone(),
        options: options.clone(),
        run,
        audited,
        sets,
    };
    let mut stats = Stats {
        policies: scanner.audited.len(),
        ..Stats::default()
    };
    if options.namespace.is_none() {
        stats.add(&scanner.scan_scope(None, &BTreeMap::new()).await);
    }
    if !options.cluster_only {
        let namespaces = scanner.namespaces().await?;
        for namespace in &namespaces {
            let labels = namespace.labels().clone();
            stats.add(
                &scanner
                    .scan_scope(Some(&namespace.name_any()), &labels)
                    .await,
            );
        }
        if options.namespace.is_none() {
            let scanned: BTreeSet<String> = namespaces.iter().map(|n| n.name_any()).collect();
            stats.deleted += scanner.remove_reports_outside(&scanned).await;
        }
    }
    tracing::info!(
        objects = stats.objects,
        policies = stats.policies,
        pass = stats.pass,
        fail = stats.fail,
        error = stats.error,
        skip = stats.skip,
        written = stats.written,
        unchanged = stats.unchanged,
        deleted = stats.deleted,
        seconds = started.elapsed().as_secs_f64(),
        "scan complete"
    );
    Ok(stats)
}

/// A label value unique to this run (time and process).
fn run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

/// Loads the policies of every PolicyServer an audited policy names, from
/// its ConfigMap (`policies.yml` and `sources.yml`), once.
async fn load_sets(
    client: &kube::Client,
    audited: &[AuditedPolicy],
    options: &ScanOptions,
) -> Result<Sets, ScanError> {
    // Evaluations are bounded by the cores (`Scanner::evaluators`), so the
    // instance pool needs no more slots than that, not a server's 256.
    let engine = PolicyEngine::new(EngineConfig {
        max_concurrent_instances: u32::try_from(evaluators() * 2).unwrap_or(u32::MAX),
        ..EngineConfig::default()
    })
    .map_err(|e| ScanError::Engine(e.to_string()))?;
    // Compiled modules are kept next to the fetched ones: the next scan
    // (the next CronJob run, with a persistent store) starts without compiling.
    let cache = CompileCache::new(options.store_dir.join("compiled"))
        .map_err(|e| ScanError::Engine(e.to_string()))?;
    let loader = PolicyLoader::with_cache(engine, cache);
    let kubernetes = Arc::new(KubernetesAccess::new(
        client.clone(),
        tokio::runtime::Handle::current(),
    ));
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &options.engine_namespace);
    let mut sets = Sets::new();
    let servers: BTreeSet<&str> = audited.iter().map(|p| p.policy_server.as_str()).collect();
    for server in servers {
        let loaded = async {
            let name = format!("policy-server-{server}");
            let config_map = config_maps
                .get_opt(&name)
                .await
                .map_err(|e| format!("cannot read ConfigMap {name}: {e}"))?
                .ok_or_else(|| format!("ConfigMap {name} does not exist"))?;
            let data = config_map.data.unwrap_or_default();
            let config =
                PoliciesConfig::parse(data.get("policies.yml").map_or("", String::as_str), &name)
                    .map_err(|e| e.to_string())?;
            let sources: Sources = match data.get("sources.yml") {
                Some(text) => {
                    serde_yaml::from_str(text).map_err(|e| format!("{name} sources.yml: {e}"))?
                }
                None => Sources::default(),
            };
            let fetcher = Fetcher::new(FetcherOptions {
                store_dir: options.store_dir.clone(),
                sources,
                ..FetcherOptions::default()
            })
            .map_err(|e| e.to_string())?;
            let load = LoadOptions {
                default_timeout: options.policy_timeout,
                memory_bytes: palisade_host::DEFAULT_MEMORY_BYTES,
                continue_on_errors: true,
                kubernetes: Some(kubernetes.clone()),
                // Image look-ups as the policy-server makes them.
                oci: Some(Arc::new(palisade_host::OciAccess::new(
                    fetcher.clone(),
                    tokio::runtime::Handle::current(),
                ))),
            };
            palisade_host::server::load_policies(&config, &fetcher, &loader, &load)
                .await
                .map(Arc::new)
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(reason) = &loaded {
            tracing::warn!(policy_server = server, %reason, "the policies of this PolicyServer cannot be loaded; their results are errors");
        }
        sets.insert(server.to_owned(), loaded);
    }
    Ok(sets)
}

/// How many evaluations run at once: one per core (they are CPU-bound;
/// `--parallelism` is for the I/O around them).
fn evaluators() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

struct Scanner {
    evaluators: Arc<tokio::sync::Semaphore>,
    client: kube::Client,
    options: ScanOptions,
    run: String,
    audited: Vec<Arc<AuditedPolicy>>,
    sets: Arc<Sets>,
}

impl Scanner {
    /// The namespaces to scan: the one asked for, or all but the skipped.
    async fn namespaces(&self) -> Result<Vec<Namespace>, ScanError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        if let Some(name) = &self.options.namespace {
            return Ok(api.get_opt(name).await?.into_iter().collect());
        }
        Ok(api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|n| !self.skipped(&n.name_any()))
            .collect())
    }

    fn skipped(&self, namespace: &str) -> bool {
        namespace == self.options.engine_namespace
            || self
                .options
                .ignore_namespaces
                .iter()
                .any(|n| n == namespace)
    }

    /// Scans the cluster-scoped resources (`namespace` none) or one namespace.
    async fn scan_scope(
        &self,
        namespace: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Stats {
        let started = Instant::now();
        let policies: Vec<&Arc<AuditedPolicy>> = self
            .audited
            .iter()
            .filter(|p| p.sees_namespace(namespace, labels))
            .collect();
        let mut targets: Vec<Target> = Vec::new();
        for policy in &policies {
            for target in &policy.targets {
                if target.namespaced == namespace.is_some() && !targets.contains(target) {
                    targets.push(target.clone());
                }
            }
        }
        let mut stats = Stats::default();
        let mut kept = BTreeSet::new();
        let existing = self.existing_reports(namespace).await;
        for target in &targets {
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(self.client.clone(), ns, &target.resource),
                None => Api::all_with(self.client.clone(), &target.resource),
            };
            let applicable: Vec<&Arc<AuditedPolicy>> = policies
                .iter()
                .copied()
                .filter(|p| p.targets(&target.resource))
                .collect();
            let mut page = ListParams::default().limit(self.options.page_size);
            loop {
                let list = match api.list(&page).await {
                    Ok(list) => list,
                    Err(e) => {
                        // One type that cannot be listed (RBAC) does not stop the scan.
                        let ids: Vec<&str> = applicable.iter().map(|p| p.id.as_str()).collect();
                        tracing::warn!(resource = %target.resource.plural, namespace = namespace.unwrap_or(""), policies = ?ids, error = %e, "cannot list; these policies have an error for this resource type");
                        stats.error += applicable.len() as u64;
                        break;
                    }
                };
                let continue_token = list.metadata.continue_.clone().filter(|t| !t.is_empty());
                let outcomes: Vec<(String, Stats)> = futures::stream::iter(list.items)
                    .map(|object| self.audit_object(object, target, &applicable, &existing))
                    .buffer_unordered(self.options.parallelism.max(1))
                    .collect()
                    .await;
                for (name, one) in outcomes {
                    kept.insert(name);
                    stats.add(&one);
                }
                match continue_token {
                    Some(token) => page = page.continue_token(&token),
                    None => break,
                }
            }
        }
        stats.deleted += self.remove_stale(&existing, &kept).await;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            namespace = namespace.unwrap_or("(cluster)"),
            objects = stats.objects,
            rate = format!("{:.0}/s", stats.objects as f64 / seconds.max(1e-3)),
            "scope scanned"
        );
        stats
    }

    /// Evaluates one object with the policies that see it and stores its
    /// report; returns the report's name and what happened.
    async fn audit_object(
        &self,
        object: DynamicObject,
        target: &Target,
        applicable: &[&Arc<AuditedPolicy>],
        existing: &Existing,
    ) -> (String, Stats) {
        let mut stats = Stats {
            objects: 1,
            ..Stats::default()
        };
        let uid = object.uid().unwrap_or_default();
        let policies: Vec<Arc<AuditedPolicy>> = applicable
            .iter()
            .filter(|p| p.sees_object(object.labels()))
            .map(|p| Arc::clone(p))
            .collect();
        let scope = ObjectReference {
            api_version: Some(target.resource.api_version.clone()),
            kind: Some(target.resource.kind.clone()),
            name: Some(object.name_any()),
            namespace: object.namespace(),
            uid: Some(uid.clone()),
            resource_version: object.resource_version(),
            field_path: None,
        };
        let review = review_json(&object, target);
        let sets = self.sets.clone();
        let permit = self.evaluators.clone().acquire_owned().await;
        let results = match tokio::task::spawn_blocking(move || {
            let results = evaluate(&review, &policies, &sets);
            drop(permit);
            results
        })
        .await
        {
            Ok(results) => results,
            Err(e) => {
                tracing::error!(object = %object.name_any(), error = %e, "evaluation task failed");
                stats.error += 1;
                Vec::new()
            }
        };
        let body = ReportBody::new(scope, results);
        stats.pass += u64::from(body.summary.pass);
        stats.fail += u64::from(body.summary.fail);
        stats.error += u64::from(body.summary.error);
        stats.skip += u64::from(body.summary.skip);
        if self.options.output_scan {
            println!(
                "{}",
                serde_json::json!({"scope": body.scope, "summary": body.summary, "results": body.results})
            );
        }
        if !self.options.disable_store {
            match self.store(&body, existing).await {
                Ok(true) => stats.written += 1,
                Ok(false) => stats.unchanged += 1,
                Err(e) => {
                    tracing::warn!(object = %body.scope.name.clone().unwrap_or_default(), error = %e, "cannot write the report");
                }
            }
        }
        (uid, stats)
    }
}

/// The reports already stored in one scope, by name (the resource's UID),
/// as the scope and results they say.
type Existing = HashMap<String, (Option<ObjectReference>, Vec<PolicyResult>, Option<String>)>;

impl Scanner {
    /// The API of the reports of one scope, in the chosen format.
    fn report_api(&self, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = self.options.report_kind.resource(namespace.is_some());
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Every report the scanner wrote in one scope (paginated).
    async fn existing_reports(&self, namespace: Option<&str>) -> Existing {
        let mut existing = Existing::new();
        if self.options.disable_store {
            return existing;
        }
        let api = self.report_api(namespace);
        let mut page = ListParams::default()
            .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
            .limit(self.options.page_size);
        loop {
            let list = match api.list(&page).await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(namespace = namespace.unwrap_or("(cluster)"), error = %e, "cannot list the existing reports; every report is written");
                    return existing;
                }
            };
            for report in list.items {
                let scope = report
                    .data
                    .get("scope")
                    .and_then(|s| serde_json::from_value(s.clone()).ok());
                let results = report
                    .data
                    .get("results")
                    .and_then(|r| serde_json::from_value(r.clone()).ok())
                    .unwrap_or_default();
                existing.insert(
                    report.name_any(),
                    (scope, results, report.resource_version()),
                );
            }
            match list.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => page = page.continue_token(&token),
                None => return existing,
            }
        }
    }

    /// Writes the report unless the stored one says the same; `Ok(true)`
    /// when it was written.
    async fn store(&self, body: &ReportBody, existing: &Existing) -> Result<bool, kube::Error> {
        let name = body.scope.uid.clone().unwrap_or_default();
        let stored = existing.get(&name);
        if stored.is_some_and(|(scope, results, _)| body.same_as(scope.as_ref(), results)) {
            return Ok(false);
        }
        let namespace = body.scope.namespace.as_deref();
        let metadata = report_metadata(&body.scope, &self.run);
        let value = body
            .to_json(self.options.report_kind, metadata)
            .map_err(kube::Error::SerdeError)?;
        let mut report: DynamicObject =
            serde_json::from_value(value).map_err(kube::Error::SerdeError)?;
        let api = self.report_api(namespace);
        match stored {
            Some((_, _, version)) => {
                report.metadata.resource_version = version.clone();
                api.replace(&name, &PostParams::default(), &report).await?;
            }
            None => {
                api.create(&PostParams::default(), &report).await?;
            }
        }
        Ok(true)
    }

    /// Deletes, one by one, the reports of this scope that no listed
    /// resource backs any more (its policies were deleted or stopped
    /// seeing it). Never a collection delete: nothing written in this run
    /// can be caught by a stale view.
    async fn remove_stale(&self, existing: &Existing, kept: &BTreeSet<String>) -> u64 {
        if self.options.disable_store {
            return 0;
        }
        let mut deleted = 0;
        for (name, (scope, _, _)) in existing.iter().filter(|(name, _)| !kept.contains(*name)) {
            let namespace = scope.as_ref().and_then(|s| s.namespace.as_deref());
            deleted += u64::from(self.delete_report(namespace, name).await);
        }
        deleted
    }

    /// Deletes the reports of namespaces that are no longer scanned (newly
    /// skipped, or deleted).
    async fn remove_reports_outside(&self, scanned: &BTreeSet<String>) -> u64 {
        if self.options.disable_store {
            return 0;
        }
        let all: Api<DynamicObject> = Api::all_with(
            self.client.clone(),
            &self.options.report_kind.resource(true),
        );
        // Names only, a page at a time: this walks every report of the
        // cluster, and whole reports would cost memory per object scanned.
        let mut page = ListParams::default()
            .labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))
            .limit(self.options.page_size);
        let mut outside = Vec::new();
        loop {
            let list = match all.list_metadata(&page).await {
                Ok(list) => list,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the reports of skipped namespaces");
                    break;
                }
            };
            outside.extend(list.items.into_iter().filter_map(|report| {
                let namespace = report.namespace()?;
                (!scanned.contains(&namespace)).then(|| (namespace, report.name_any()))
            }));
            match list.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => page = page.continue_token(&token),
                None => break,
            }
        }
        let mut deleted = 0;
        for (namespace, name) in outside {
            deleted += u64::from(self.delete_report(Some(&namespace), &name).await);
        }
        deleted
    }

    /// Deletes one report; whether it was there. A failure is logged (the
    /// next scan tries again).
    async fn delete_report(&self, namespace: Option<&str>, name: &str) -> bool {
        match self
            .report_api(namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 404 => false,
            Err(e) => {
                tracing::warn!(report = %name, error = %e, "cannot delete a report");
                false
            }
        }
    }
}

/// The CREATE AdmissionReview the policy-server's `/audit` endpoint would
/// receive for `object`: no userInfo, no oldObject.
pub(crate) fn review_json(object: &DynamicObject, target: &Target) -> Vec<u8> {
    let resource = &target.resource;
    let gvk = serde_json::json!({"group": resource.group, "version": resource.version, "kind": resource.kind});
    let gvr = serde_json::json!({"group": resource.group, "version": resource.version, "resource": resource.plural});
    let mut object_json = serde_json::to_value(object).unwrap_or_default();
    if let Some(map) = object_json.as_object_mut() {
        map.insert("apiVersion".into(), resource.api_version.clone().into());
        map.insert("kind".into(), resource.kind.clone().into());
    }
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": object.uid().unwrap_or_default(),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": object.name_any(),
            "namespace": object.namespace(),
            "operation": "CREATE",
            "userInfo": {},
            "object": object_json,
            "dryRun": false,
        }
    }))
    .unwrap_or_default()
}

/// Evaluates one review with each policy: the raw verdict, as `/audit` gives it.
pub(crate) fn evaluate(
    review: &[u8],
    policies: &[Arc<AuditedPolicy>],
    sets: &Sets,
) -> Vec<PolicyResult> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let request = PolicyRequest::from_review_json(review);
    // The review is parsed again only for policies with matchConditions.
    let parsed: serde_json::Value = if policies.iter().any(|p| !p.match_conditions.is_empty()) {
        serde_json::from_slice(review).unwrap_or_default()
    } else {
        serde_json::Value::Null
    };
    let null = serde_json::Value::Null;
    let admission = parsed.get("request").unwrap_or(&null);
    let object = admission.get("object").unwrap_or(&null);
    policies
        .iter()
        .filter_map(|policy| {
            let applies = conditions::applies(&policy.match_conditions, object, admission);
            let (outcome, message) = match (&request, applies) {
                // The API server would not have called the policy.
                (_, Applies::No) => return None,
                (_, Applies::Unknown(why)) => (Outcome::Skip, Some(why)),
                (Err(e), Applies::Yes) => (
                    Outcome::Error,
                    Some(format!("cannot build the request: {e}")),
                ),
                (Ok(request), Applies::Yes) => verdict(policy, request, sets),
            };
            Some(result(policy, outcome, message, now))
        })
        .collect()
}

fn verdict(
    policy: &AuditedPolicy,
    request: &PolicyRequest,
    sets: &Sets,
) -> (Outcome, Option<String>) {
    let served: Result<Arc<ServedPolicy>, String> = match sets.get(&policy.policy_server) {
        Some(Ok(set)) => set.get(&policy.id).ok_or_else(|| {
            format!(
                "PolicyServer `{}` does not serve {} (its configuration is not up to date)",
                policy.policy_server, policy.id
            )
        }),
        Some(Err(reason)) => Err(reason.clone()),
        None => Err(format!(
            "PolicyServer `{}` was not loaded",
            policy.policy_server
        )),
    };
    let served = match served {
        Ok(served) => served,
        Err(reason) => return (Outcome::Error, Some(reason)),
    };
    let outcome = served.evaluate(&policy.id, request, Endpoint::Audit);
    let status = outcome.response.status.as_ref();
    let message = status.map(|s| s.message.clone()).filter(|m| !m.is_empty());
    if outcome.error.is_some() || status.is_some_and(|s| s.code == 500) {
        (Outcome::Error, message)
    } else if outcome.response.allowed {
        (Outcome::Pass, None)
    } else {
        (Outcome::Fail, message)
    }
}

fn result(
    policy: &AuditedPolicy,
    outcome: Outcome,
    message: Option<String>,
    now: i64,
) -> PolicyResult {
    let mut properties = BTreeMap::from([
        (
            if policy.mutating {
                "mutating"
            } else {
                "validating"
            }
            .to_owned(),
            "true".to_owned(),
        ),
        ("policy-name".to_owned(), policy.name.clone()),
        ("policy-uid".to_owned(), policy.uid.clone()),
        (
            "policy-resource-version".to_owned(),
            policy.resource_version.clone(),
        ),
    ]);
    if policy.context_aware {
        properties.insert("context-aware".to_owned(), "true".to_owned());
    }
    if let Some(namespace) = &policy.namespace {
        properties.insert("policy-namespace".to_owned(), namespace.clone());
    }
    PolicyResult {
        source: Some(MANAGED_BY.to_owned()),
        policy: policy.id.clone(),
        rule: None,
        category: policy.category.clone(),
        // Monitor mode never rejects: whatever the policy says, it informs.
        severity: if policy.monitor {
            Some("info".to_owned())
        } else {
            policy.severity.clone()
        },
        result: outcome,
        message,
        timestamp: Some(Timestamp {
            seconds: now,
            nanos: 0,
        }),
        scored: true,
        resource_selector: Some(Default::default()),
        properties,
    }
}

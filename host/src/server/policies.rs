//! The set of policies a policy-server serves, and how a request is
//! evaluated against one of them (post-processing included).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kube_core::response::{StatusCause, StatusDetails};

use super::config::{ConfigError, Entry, ModuleSpec, PoliciesConfig, PolicyMode};
use super::expression::Expr;
use crate::{
    AdmissionResponse, EvalError, Grants, LoadedPolicy, PolicyConfig, PolicyLimits, PolicyLoader,
    PolicyRequest, RawRequest, Verdict,
};
use crate::{KubernetesAccess, OciAccess};

/// Where each module reference of a configuration was fetched to, or why it
/// could not be.
pub type FetchedModules = HashMap<String, Result<std::path::PathBuf, String>>;

/// How policies are loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Deadline of an evaluation when a policy sets no `timeoutEvalSeconds`.
    pub default_timeout: Duration,
    /// Memory cap of every policy.
    pub memory_bytes: usize,
    /// Serve a policy that failed to load (it rejects with code 500)
    /// instead of refusing the whole configuration.
    pub continue_on_errors: bool,
    /// The cluster context-aware policies read (none: their `kubernetes`
    /// calls answer "not available").
    pub kubernetes: Option<Arc<KubernetesAccess>>,
    /// The registries the `oci` look-ups ask (none: "not available").
    pub oci: Option<Arc<OciAccess>>,
}

/// Which endpoint a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/validate`: the policy's mode, mutation ban and message apply.
    Validate,
    /// `/audit`: the raw verdict.
    Audit,
    /// `/validate_raw`: a raw document; mode, mutation ban and message apply.
    ValidateRaw,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Audit => "audit",
            Self::ValidateRaw => "validate_raw",
        }
    }
}

/// What a request asks a policy to evaluate.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// An admission request (`/validate`, `/audit`).
    Admission(&'a PolicyRequest),
    /// A raw JSON document (`/validate_raw`).
    Raw(&'a RawRequest),
}

impl<'a> From<&'a PolicyRequest> for Input<'a> {
    fn from(request: &'a PolicyRequest) -> Self {
        Self::Admission(request)
    }
}

impl<'a> From<&'a RawRequest> for Input<'a> {
    fn from(request: &'a RawRequest) -> Self {
        Self::Raw(request)
    }
}

impl Input<'_> {
    /// The uid the response carries.
    pub fn uid(&self) -> &str {
        match self {
            Self::Admission(request) => request.uid(),
            Self::Raw(request) => request.uid(),
        }
    }

    /// The response for `verdict`, its patch diffed against what was
    /// evaluated (the object, or the whole raw document).
    fn respond(&self, verdict: Verdict) -> AdmissionResponse {
        match self {
            Self::Admission(request) => verdict.into_response(request),
            Self::Raw(request) => verdict.into_raw_response(request),
        }
    }
}

/// One module with its settings: loaded, or why it could not be (a single
/// policy has one, a group one per member).
#[derive(Debug)]
struct ConfiguredModule {
    settings: String,
    loaded: Result<LoadedPolicy, String>,
}

impl ConfiguredModule {
    /// Evaluates, turning every failure into a 500 rejection (a broken policy
    /// answers; it does not take the server down).
    fn evaluate(&self, input: Input<'_>) -> (AdmissionResponse, Option<&'static str>) {
        let loaded = match &self.loaded {
            Ok(loaded) => loaded,
            Err(reason) => {
                return (
                    AdmissionResponse::rejected(input.uid(), reason, 500),
                    Some("not_loaded"),
                )
            }
        };
        let verdict = match input {
            Input::Admission(request) => loaded.validate(request, &self.settings),
            Input::Raw(request) => loaded.validate_raw(request, &self.settings),
        };
        match verdict {
            Ok(verdict) => (input.respond(verdict), None),
            Err(e) => failed(input, &e),
        }
    }
}

/// A 500 rejection explaining why a policy could not decide.
fn failed(input: Input<'_>, e: &EvalError) -> (AdmissionResponse, Option<&'static str>) {
    (
        AdmissionResponse::rejected(input.uid(), &e.to_string(), 500),
        Some(e.label()),
    )
}

/// A policy compiled into the server instead of loaded from WebAssembly
/// (benchmarks use it as the native baseline behind the same HTTP stack).
pub trait NativePolicy: Send + Sync + std::fmt::Debug {
    fn validate(&self, request: &PolicyRequest) -> crate::Verdict;
}

/// What a served policy evaluates.
#[derive(Debug)]
enum Served {
    Native(Box<dyn NativePolicy>),
    Policy {
        module: Box<ConfiguredModule>,
        allowed_to_mutate: bool,
    },
    Group {
        expression: Expr,
        members: BTreeMap<String, ConfiguredModule>,
    },
}

/// A policy or group as served.
#[derive(Debug)]
pub struct ServedPolicy {
    mode: PolicyMode,
    message: Option<String>,
    served: Served,
}

/// The result of one evaluation.
#[derive(Debug)]
pub struct Outcome {
    pub response: AdmissionResponse,
    pub mode: PolicyMode,
    /// What the policy itself decided, before monitor mode.
    pub accepted: bool,
    pub mutated: bool,
    /// Set when the policy failed rather than decided (`timeout`, `trap`...).
    pub error: Option<&'static str>,
}

/// Every policy of one configuration, by id. Replaced as a whole on reload.
#[derive(Debug, Default)]
pub struct PolicySet {
    policies: HashMap<String, Arc<ServedPolicy>>,
}

impl PolicySet {
    /// Loads every policy of `config`, validating settings once, on as many
    /// threads as there are CPUs (a slow module delays only its own thread).
    /// A policy that fails fails the whole set unless `continue_on_errors`;
    /// the error reported is that of the first failing entry by id.
    pub fn load(
        config: &PoliciesConfig,
        modules: &FetchedModules,
        loader: &PolicyLoader,
        options: &LoadOptions,
    ) -> Result<Self, ConfigError> {
        // One copy of each distinct module's code for the whole set.
        let loader = &loader.sharing_code();
        let loading = Loading {
            loader,
            modules,
            options,
        };
        let entries: Vec<_> = config.entries.iter().collect();
        let total = entries.len();
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(total);
        let load_some = || {
            let mut loaded = Vec::new();
            while let Some((id, entry)) = entries.get(next.fetch_add(1, Ordering::Relaxed)) {
                let served = loading.entry(id, entry);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(policy = %id, progress = format!("{n}/{total}"), ok = served.is_ok(), "policy loaded");
                loaded.push((id.as_str(), served));
            }
            loaded
        };
        let mut results: HashMap<&str, Result<ServedPolicy, ConfigError>> =
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads).map(|_| scope.spawn(load_some)).collect();
                workers
                    .into_iter()
                    .flat_map(|worker| {
                        worker
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .collect()
            });
        let mut policies = HashMap::new();
        for (id, _) in entries {
            match results.remove(id.as_str()) {
                Some(Ok(served)) => {
                    policies.insert(id.clone(), Arc::new(served));
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        Ok(Self { policies })
    }

    /// Number of policies and groups.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Adds a native policy in protect mode.
    pub fn insert_native(&mut self, id: impl Into<String>, policy: Box<dyn NativePolicy>) {
        let served = ServedPolicy {
            mode: PolicyMode::Protect,
            message: None,
            served: Served::Native(policy),
        };
        self.policies.insert(id.into(), Arc::new(served));
    }

    /// The policy with this id.
    pub fn get(&self, id: &str) -> Option<Arc<ServedPolicy>> {
        self.policies.get(id).cloned()
    }
}

/// What loading a module needs from its surroundings.
struct Loading<'a> {
    loader: &'a PolicyLoader,
    modules: &'a FetchedModules,
    options: &'a LoadOptions,
}

impl Loading<'_> {
    /// Loads one entry of the file: a policy, or a group and its members.
    fn entry(&self, id: &str, entry: &Entry) -> Result<ServedPolicy, ConfigError> {
        Ok(match entry {
            Entry::Policy(spec) => ServedPolicy {
                mode: spec.policy_mode,
                message: spec.message.clone(),
                served: Served::Policy {
                    module: Box::new(self.module(id, &spec.module)?),
                    allowed_to_mutate: spec.allowed_to_mutate,
                },
            },
            Entry::Group(spec) => {
                let expression = Expr::parse(&spec.expression).map_err(|e| ConfigError::Entry {
                    path: "policies".into(),
                    id: id.to_owned(),
                    reason: format!("expression `{}`: {e}", spec.expression),
                })?;
                if let Some(unknown) = expression
                    .members()
                    .into_iter()
                    .find(|m| !spec.policies.contains_key(*m))
                {
                    return Err(ConfigError::Entry {
                        path: "policies".into(),
                        id: id.to_owned(),
                        reason: format!(
                            "expression calls `{unknown}()`, which is not a member of the group"
                        ),
                    });
                }
                let mut members = BTreeMap::new();
                for (name, member) in &spec.policies {
                    members.insert(name.clone(), self.module(&format!("{id}/{name}"), member)?);
                }
                ServedPolicy {
                    mode: spec.policy_mode,
                    message: Some(spec.message.clone()),
                    served: Served::Group {
                        expression,
                        members,
                    },
                }
            }
        })
    }

    /// Loads one module and validates its settings; a failure is the whole
    /// configuration's unless `continue_on_errors`, where the member answers
    /// every request with a 500 instead.
    fn module(&self, id: &str, spec: &ModuleSpec) -> Result<ConfiguredModule, ConfigError> {
        let Self {
            loader,
            modules,
            options,
        } = self;
        let settings = spec.settings.to_string();
        let attempt = || -> Result<LoadedPolicy, String> {
            let path = match modules.get(&spec.module) {
                Some(Ok(path)) => path,
                Some(Err(reason)) => return Err(reason.clone()),
                None => return Err(format!("module {} was not fetched", spec.module)),
            };
            let config = PolicyConfig {
                id: id.to_owned(),
                grants: Grants::new(spec.host_capabilities.iter().cloned()),
                limits: PolicyLimits {
                    timeout: spec
                        .timeout_eval_seconds
                        .map_or(options.default_timeout, Duration::from_secs),
                    memory_bytes: options.memory_bytes,
                },
                kubernetes: options.kubernetes.clone(),
                oci: options.oci.clone(),
                context_aware: spec.context_aware_resources.clone(),
            };
            let loaded = loader.load_file(path, config).map_err(|e| e.to_string())?;
            loaded
                .validate_settings(&settings)
                .map_err(|e| format!("policy {id}: {e}"))?;
            Ok(loaded)
        };
        match attempt() {
            Ok(loaded) => Ok(ConfiguredModule {
                settings,
                loaded: Ok(loaded),
            }),
            Err(reason) if options.continue_on_errors => {
                tracing::error!(policy = %id, %reason, "policy failed to initialise; it will reject every request");
                Ok(ConfiguredModule {
                    settings,
                    loaded: Err(format!("policy {id} failed to initialise: {reason}")),
                })
            }
            Err(reason) => Err(ConfigError::Module {
                id: id.to_owned(),
                module: spec.module.clone(),
                reason,
            }),
        }
    }
}

impl ServedPolicy {
    /// Evaluates one request. CPU-bound: call it off the async runtime.
    pub fn evaluate<'a>(
        &self,
        id: &str,
        input: impl Into<Input<'a>>,
        endpoint: Endpoint,
    ) -> Outcome {
        let input = input.into();
        let (mut response, error, allowed_to_mutate) = match &self.served {
            Served::Native(policy) => {
                let (response, error) = match input {
                    Input::Admission(request) => {
                        (policy.validate(request).into_response(request), None)
                    }
                    Input::Raw(_) => failed(
                        input,
                        &EvalError::WrongInput(
                            "native policies evaluate admission requests only".into(),
                        ),
                    ),
                };
                (response, error, false)
            }
            Served::Policy {
                module,
                allowed_to_mutate,
            } => {
                let (response, error) = module.evaluate(input);
                (response, error, *allowed_to_mutate)
            }
            Served::Group {
                expression,
                members,
            } => {
                let (response, error) =
                    evaluate_group(expression, members, input, self.message.as_deref());
                (response, error, false)
            }
        };
        let accepted = response.allowed;
        let mutated = response.patch.is_some();
        if endpoint != Endpoint::Audit {
            self.post_process(id, &mut response, allowed_to_mutate);
        }
        Outcome {
            response,
            mode: self.mode,
            accepted,
            mutated,
            error,
        }
    }

    /// Monitor mode, then the mutation ban, then the custom message.
    fn post_process(&self, id: &str, response: &mut AdmissionResponse, allowed_to_mutate: bool) {
        if self.mode == PolicyMode::Monitor {
            response.allowed = true;
            response.status = None;
            response.patch = None;
            response.patch_type = None;
            return;
        }
        if response.patch.is_some() && !allowed_to_mutate {
            *response = AdmissionResponse::rejected(
                &response.uid,
                &format!(
                    "Request rejected by policy {id}. The policy attempted to mutate the request, but it is currently configured to not allow mutations."
                ),
                400,
            );
        }
        if let (false, Some(message), Served::Policy { .. }) =
            (response.allowed, &self.message, &self.served)
        {
            if let Some(status) = response.status.as_mut() {
                let original = std::mem::replace(&mut status.message, message.clone());
                status
                    .details
                    .get_or_insert_with(details)
                    .causes
                    .push(cause(String::new(), original));
            }
        }
    }
}

/// Lazy, short-circuit evaluation of a group; rejections of the members that
/// were evaluated become the causes.
fn evaluate_group(
    expression: &Expr,
    members: &BTreeMap<String, ConfiguredModule>,
    input: Input<'_>,
    message: Option<&str>,
) -> (AdmissionResponse, Option<&'static str>) {
    let mut causes = Vec::new();
    let mut warnings = Vec::new();
    let mut error = None;
    let result = expression.evaluate::<std::convert::Infallible>(&mut |name| {
        let Some(member) = members.get(name) else {
            return Ok(false);
        };
        let (response, member_error) = member.evaluate(input);
        error = error.or(member_error);
        warnings.extend(response.warnings);
        if !response.allowed {
            causes.push(cause(
                format!("spec.policies.{name}"),
                response.status.map(|s| s.message).unwrap_or_default(),
            ));
        }
        Ok(response.allowed)
    });
    let allowed = matches!(result, Ok(true));
    let mut response = if allowed {
        AdmissionResponse::accepted(input.uid())
    } else {
        let mut r = AdmissionResponse::rejected(
            input.uid(),
            message.unwrap_or("rejected by policy group"),
            400,
        );
        if let Some(status) = r.status.as_mut() {
            let mut d = details();
            d.causes = causes;
            status.details = Some(d);
        }
        r
    };
    response.warnings = warnings;
    (response, error)
}

fn details() -> StatusDetails {
    StatusDetails {
        name: String::new(),
        group: String::new(),
        kind: String::new(),
        uid: String::new(),
        causes: Vec::new(),
        retry_after_seconds: 0,
    }
}

fn cause(field: String, message: String) -> StatusCause {
    StatusCause {
        reason: String::new(),
        message,
        field,
    }
}

//! Policy reconciliation, the same for all four kinds: check the settings
//! through the host crate, put the policy into its policy-server's
//! `policies.yml`, wait for the rollout that serves it, register its
//! webhook, and keep the status true.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{counted, delete_if_present, drain, Context, Error, FINALIZER, MANAGER, RETRY};
use crate::crd::{PolicyServer, PolicyStatusPhase};
use crate::kinds::PolicyResource;
use crate::policy::{
    webhook_configuration, WebhookConfiguration, POLICY_LABEL, POLICY_SERVER_LABEL,
};
use crate::policy_server::{config_hash, object_name, POLICIES_KEY, ROOT_CA_SECRET};
use crate::rollout::{rollout, Rollout};
use crate::settings::CheckError;

/// How often an active policy's webhook is re-applied, which reverts drift.
const RESYNC: Duration = Duration::from_secs(300);

/// The policies bound to a policy-server, from the controller's cache.
fn bound_to<K: PolicyResource>(store: &Store<K>, server: &str) -> Vec<ObjectRef<K>> {
    store
        .state()
        .iter()
        .filter(|policy| policy.webhook().policy_server == server)
        .map(|policy| ObjectRef::from_obj(policy.as_ref()))
        .collect()
}

/// The policy a webhook configuration belongs to, from its label.
fn with_id<K: PolicyResource>(store: &Store<K>, config: &impl Resource) -> Option<ObjectRef<K>> {
    let id = config.meta().labels.as_ref()?.get(POLICY_LABEL)?;
    store
        .find(|policy| &policy.id() == id)
        .map(|policy| ObjectRef::from_obj(policy.as_ref()))
}

/// Runs the reconciler of one policy kind until `shutdown`.
pub async fn run<K: PolicyResource>(
    context: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let controller = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default());
    let store = controller.store();
    let by_server = store.clone();
    let by_deployment = store.clone();
    let everything = store.clone();
    let by_validating = store.clone();
    let by_mutating = store;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &context.namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &context.namespace);
    let stream = controller
        // A PolicyServer appearing or going changes its policies' phase.
        .watches(
            Api::<PolicyServer>::all(client),
            watcher::Config::default(),
            move |server: PolicyServer| bound_to(&by_server, &server.name_any()),
        )
        // A rollout finishing activates the policies waiting for it.
        .watches(
            deployments,
            watcher::Config::default().labels(POLICY_SERVER_LABEL),
            move |deployment: Deployment| {
                let server = deployment
                    .labels()
                    .get(POLICY_SERVER_LABEL)
                    .cloned()
                    .unwrap_or_default();
                bound_to(&by_deployment, &server)
            },
        )
        // A renewed CA goes into every webhook's caBundle at once.
        .watches(
            secrets,
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_SECRET}")),
            move |_: Secret| {
                everything
                    .state()
                    .iter()
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        // Drift on a webhook configuration, or its deletion, is reverted at once.
        .watches(
            Api::<ValidatingWebhookConfiguration>::all(context.client.clone()),
            watcher::Config::default().labels(POLICY_LABEL),
            move |config: ValidatingWebhookConfiguration| with_id(&by_validating, &config),
        )
        .watches(
            Api::<MutatingWebhookConfiguration>::all(context.client.clone()),
            watcher::Config::default().labels(POLICY_LABEL),
            move |config: MutatingWebhookConfiguration| with_id(&by_mutating, &config),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile::<K>, error_policy::<K>, context);
    drain(kind::<K>(), stream).await;
}

fn kind<K: PolicyResource>() -> &'static str {
    match K::kind(&()).as_ref() {
        "ClusterAdmissionPolicy" => "ClusterAdmissionPolicy",
        "AdmissionPolicy" => "AdmissionPolicy",
        "ClusterAdmissionPolicyGroup" => "ClusterAdmissionPolicyGroup",
        "AdmissionPolicyGroup" => "AdmissionPolicyGroup",
        _ => "policy",
    }
}

fn error_policy<K: PolicyResource>(policy: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(kind = kind::<K>(), policy = %policy.name_any(), error = %error, "reconcile failed, retrying");
    Action::requeue(RETRY)
}

/// Reconciles one policy.
#[tracing::instrument(skip_all, fields(kind = kind::<K>(), id = %policy.id()))]
pub async fn reconcile<K: PolicyResource>(
    policy: Arc<K>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let api = policy.object_api(context.client.clone());
    let result = finalizer(&api, FINALIZER, policy, |event| async {
        match event {
            Event::Apply(policy) => apply(policy.as_ref(), &context).await,
            Event::Cleanup(policy) => cleanup(policy.as_ref(), &context).await,
        }
    })
    .await
    .map_err(Error::from_finalizer);
    counted(&context, kind::<K>(), started, result)
}

/// A condition on the policy, without its transition time.
struct Fact {
    type_: &'static str,
    ok: bool,
    reason: String,
    message: String,
}

impl Fact {
    fn new(type_: &'static str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

async fn apply<K: PolicyResource>(policy: &K, context: &Context) -> Result<Action, Error> {
    let id = policy.id();
    let server_name = policy.webhook().policy_server.clone();
    if server_name.is_empty() {
        let fact = Fact::new(
            "PolicyActive",
            false,
            "NoPolicyServer",
            "no policy server is named",
        );
        set_status(policy, context, PolicyStatusPhase::Unscheduled, vec![fact]).await?;
        return Ok(Action::await_change());
    }
    let server = Api::<PolicyServer>::all(context.client.clone())
        .get_opt(&server_name)
        .await?
        .filter(|s| s.meta().deletion_timestamp.is_none());
    let Some(server) = server else {
        remove_webhooks(context, &id).await?;
        let fact = Fact::new(
            "PolicyActive",
            false,
            "PolicyServerMissing",
            format!("policy server `{server_name}` does not exist"),
        );
        set_status(policy, context, PolicyStatusPhase::Scheduled, vec![fact]).await?;
        return Ok(Action::await_change());
    };

    if let Err(problem) = check_modules(policy, &server, context).await {
        // A module that cannot be fetched right now (registry outage) must
        // not silently end the enforcement of an active policy: its pods
        // already run it. Invalid settings do end it.
        if matches!(problem, CheckError::Module(_)) && webhook_registered(context, &id).await? {
            tracing::warn!(%id, %problem, "module check failed; the active policy stays registered");
            // Still the reference for its webhook: drift is reverted as usual.
            if let Some(ca) = context.authority().await? {
                register_webhook(policy, context, ca.bundle_pem.as_bytes()).await?;
            }
            let facts = vec![
                Fact::new(
                    "PolicyActive",
                    true,
                    "WebhookRegistered",
                    "the webhook is registered",
                ),
                Fact::new("ModuleCheck", false, problem.reason(), problem.to_string()),
            ];
            set_status(policy, context, PolicyStatusPhase::Active, facts).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        tracing::info!(%id, reason = problem.reason(), %problem, "policy not activated");
        remove_webhooks(context, &id).await?;
        set_entry(context, &server_name, &id, None).await?;
        let fact = Fact::new("PolicyActive", false, problem.reason(), problem.to_string());
        set_status(policy, context, PolicyStatusPhase::Pending, vec![fact]).await?;
        // A registry outage heals by itself; settings only change with the resource.
        return Ok(Action::requeue(Duration::from_secs(60)));
    }

    let capabilities = server.spec.namespaced_policies_capabilities.clone();
    let Some(config) = set_entry(
        context,
        &server_name,
        &id,
        Some(policy.entry(&capabilities)),
    )
    .await?
    else {
        let fact = Fact::new(
            "PolicyActive",
            false,
            "PolicyServerNotReady",
            "waiting for the policy server's configuration to be created",
        );
        set_status(policy, context, PolicyStatusPhase::Pending, vec![fact]).await?;
        return Ok(Action::requeue(RETRY));
    };

    let deployment = Api::<Deployment>::namespaced(context.client.clone(), &context.namespace)
        .get_opt(&object_name(&server_name))
        .await?;
    let state = rollout(deployment.as_ref(), &config_hash(&config));
    let facts = rollout_facts(&state);
    // A registered webhook stays through later rollouts; only a policy
    // waiting for its first one needs to know.
    if !state.up_to_date && !webhook_registered(context, &id).await? {
        let mut facts = facts;
        facts.push(Fact::new(
            "PolicyActive",
            false,
            "RolloutInProgress",
            format!("waiting for {}", state.waiting_for),
        ));
        set_status(policy, context, PolicyStatusPhase::Pending, facts).await?;
        // Deployment changes wake this up; the requeue is a safety net.
        return Ok(Action::requeue(Duration::from_secs(30)));
    }

    let Some(ca) = context.authority().await? else {
        return Ok(Action::requeue(RETRY));
    };
    register_webhook(policy, context, ca.bundle_pem.as_bytes()).await?;
    let mut facts = facts;
    facts.push(Fact::new(
        "PolicyActive",
        true,
        "WebhookRegistered",
        "the webhook is registered",
    ));
    set_status(policy, context, PolicyStatusPhase::Active, facts).await?;
    Ok(Action::requeue(if state.up_to_date {
        RESYNC
    } else {
        Duration::from_secs(30)
    }))
}

fn rollout_facts(state: &Rollout) -> Vec<Fact> {
    vec![
        if state.up_to_date {
            Fact::new(
                "PolicyServerConfigurationUpToDate",
                true,
                "RolloutComplete",
                "every policy-server pod runs the current configuration",
            )
        } else {
            Fact::new(
                "PolicyServerConfigurationUpToDate",
                false,
                "RolloutInProgress",
                format!("waiting for {}", state.waiting_for),
            )
        },
        if state.uniquely_reachable {
            Fact::new(
                "PolicyUniquelyReachable",
                true,
                "NoOlderPods",
                "no pod of an older configuration serves requests",
            )
        } else {
            Fact::new(
                "PolicyUniquelyReachable",
                false,
                "OlderPodsServing",
                "pods of an older configuration still serve requests",
            )
        },
    ]
}

async fn check_modules<K: PolicyResource>(
    policy: &K,
    server: &PolicyServer,
    context: &Context,
) -> Result<(), CheckError> {
    let sources = crate::policy_server::sources(server);
    for module in policy.modules() {
        let label = module
            .member
            .map(|m| format!("policy `{m}`: "))
            .unwrap_or_default();
        context
            .checker
            .check_with(&policy.id(), module.module, module.settings, &sources)
            .await
            .map_err(|e| e.prefixed(&label))?;
    }
    Ok(())
}

async fn cleanup<K: PolicyResource>(policy: &K, context: &Context) -> Result<Action, Error> {
    let id = policy.id();
    remove_webhooks(context, &id).await?;
    set_entry(context, &policy.webhook().policy_server, &id, None).await?;
    Ok(Action::await_change())
}

async fn webhook_registered(context: &Context, id: &str) -> Result<bool, Error> {
    let validating = Api::<ValidatingWebhookConfiguration>::all(context.client.clone())
        .get_opt(id)
        .await?;
    if validating.is_some() {
        return Ok(true);
    }
    Ok(
        Api::<MutatingWebhookConfiguration>::all(context.client.clone())
            .get_opt(id)
            .await?
            .is_some(),
    )
}

/// Applies the policy's webhook configuration (reverting any drift) and
/// removes one of the other type left from before `mutating` changed.
async fn register_webhook<K: PolicyResource>(
    policy: &K,
    context: &Context,
    ca_bundle: &[u8],
) -> Result<(), Error> {
    let id = policy.id();
    let params = PatchParams::apply(MANAGER).force();
    let validating = Api::<ValidatingWebhookConfiguration>::all(context.client.clone());
    let mutating = Api::<MutatingWebhookConfiguration>::all(context.client.clone());
    match webhook_configuration(policy, &context.endpoint, &context.namespace, ca_bundle) {
        WebhookConfiguration::Validating(config) => {
            validating
                .patch(&id, &params, &Patch::Apply(&config))
                .await?;
            delete_if_present(mutating, &id).await
        }
        WebhookConfiguration::Mutating(config) => {
            mutating.patch(&id, &params, &Patch::Apply(&config)).await?;
            delete_if_present(validating, &id).await
        }
    }
}

async fn remove_webhooks(context: &Context, id: &str) -> Result<(), Error> {
    delete_if_present(
        Api::<ValidatingWebhookConfiguration>::all(context.client.clone()),
        id,
    )
    .await?;
    delete_if_present(
        Api::<MutatingWebhookConfiguration>::all(context.client.clone()),
        id,
    )
    .await
}

/// Sets (or removes, with `None`) one policy's entry in its policy-server's
/// ConfigMap and returns the ConfigMap as stored, or `None` when the
/// PolicyServer reconciler has not created it yet. A concurrent change makes
/// the replace fail with a conflict; the retry reads again.
async fn set_entry(
    context: &Context,
    server: &str,
    id: &str,
    entry: Option<serde_json::Value>,
) -> Result<Option<ConfigMap>, Error> {
    let api: Api<ConfigMap> = Api::namespaced(context.client.clone(), &context.namespace);
    let name = object_name(server);
    let Some(mut config_map) = api.get_opt(&name).await? else {
        return Ok(None);
    };
    let mut policies: BTreeMap<String, serde_json::Value> = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(POLICIES_KEY))
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    let changed = match entry {
        Some(entry) => policies.insert(id.to_owned(), entry.clone()) != Some(entry),
        None => policies.remove(id).is_some(),
    };
    let missing_key = config_map
        .data
        .as_ref()
        .is_none_or(|d| !d.contains_key(POLICIES_KEY));
    if !changed && !missing_key {
        return Ok(Some(config_map));
    }
    config_map.data.get_or_insert_with(BTreeMap::new).insert(
        POLICIES_KEY.to_owned(),
        serde_json::to_string_pretty(&policies)?,
    );
    let stored = api
        .replace(&name, &PostParams::default(), &config_map)
        .await?;
    tracing::info!(%id, policy_server = server, "policy-server configuration updated");
    Ok(Some(stored))
}

fn phase_name(phase: PolicyStatusPhase) -> &'static str {
    match phase {
        PolicyStatusPhase::Unscheduled => "unscheduled",
        PolicyStatusPhase::Scheduled => "scheduled",
        PolicyStatusPhase::Pending => "pending",
        PolicyStatusPhase::Active => "active",
    }
}

/// Writes the status when it changed, keeping each condition's transition
/// time while its truth does not change.
async fn set_status<K: PolicyResource>(
    policy: &K,
    context: &Context,
    phase: PolicyStatusPhase,
    facts: Vec<Fact>,
) -> Result<(), Error> {
    let previous = policy.status();
    let now = k8s_openapi::jiff::Timestamp::now();
    let conditions: Vec<Condition> = facts
        .into_iter()
        .map(|fact| {
            let status = if fact.ok { "True" } else { "False" };
            let since = previous
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == fact.type_))
                .filter(|c| c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
            Condition {
                type_: fact.type_.to_owned(),
                status: status.to_owned(),
                reason: fact.reason,
                message: fact.message,
                last_transition_time: since,
                observed_generation: policy.meta().generation,
            }
        })
        .collect();
    let unchanged = previous.is_some_and(|s| {
        s.policy_status == Some(phase)
            && s.mode == Some(policy.webhook().mode)
            && s.conditions == conditions
    });
    if unchanged {
        return Ok(());
    }
    if previous.and_then(|s| s.policy_status) != Some(phase) {
        tracing::info!(id = %policy.id(), phase = phase_name(phase), "policy status");
        context.metrics.transition(kind::<K>(), phase_name(phase));
    }
    let active = |conditions: &[Condition]| {
        conditions
            .iter()
            .find(|c| c.type_ == "PolicyActive")
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let now_active = active(&conditions);
    if previous.and_then(|s| active(&s.conditions)) != now_active {
        if let Some((_, reason, message)) = now_active {
            // `kubectl describe` shows why a policy is (not) active.
            let event = KubeEvent {
                type_: if phase == PolicyStatusPhase::Active {
                    EventType::Normal
                } else {
                    EventType::Warning
                },
                reason,
                note: Some(message),
                action: "Reconcile".to_owned(),
                secondary: None,
            };
            if let Err(e) = context
                .recorder
                .publish(&event, &policy.object_ref(&()))
                .await
            {
                tracing::warn!(error = %e, "could not record an event");
            }
        }
    }
    let status = json!({
        "status": {
            "policyStatus": phase,
            "mode": policy.webhook().mode,
            "conditions": conditions,
        }
    });
    policy
        .object_api(context.client.clone())
        .patch_status(
            &policy.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(())
}

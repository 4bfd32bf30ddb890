//! Policy reconciliation, the same for all four kinds: check the settings
//! through the host crate, keep the policy-server's configuration in step,
//! wait for the rollout that serves the policy, register its webhook, and
//! keep the status true. What to do is decided by
//! [`crate::activation::decide`]; this module gathers its inputs and
//! carries its decision out.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::webhooks::Webhooks;
use super::{configuration, counted, drain, Context, Error, FINALIZER};
use crate::activation::{decide, Facts, Outcome, Server, Webhook};
use crate::certs::Authority;
use crate::conditions::{conditions, ConditionSpec};
use crate::crd::{PolicyServer, PolicyStatusPhase};
use crate::kinds::PolicyResource;
use crate::objects::{config_hash, object_name, sources, ROOT_CA_SECRET};
use crate::rollout::rollout;
use crate::settings::CheckError;
use crate::webhook::{webhook_configuration, POLICY_LABEL, POLICY_SERVER_LABEL};

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
    let controller = Controller::new(Api::<K>::all(client.clone()), watcher::Config::default())
        .trigger_backoff(super::watch_error_backoff());
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
    drain(K::KIND, stream).await;
}

/// The condition that says a webhook configuration could not be written.
pub const WEBHOOK_CONFIGURED: &str = "WebhookConfigured";

fn error_policy<K: PolicyResource>(policy: Arc<K>, error: &Error, context: Arc<Context>) -> Action {
    let delay = context
        .backoff
        .failed(&ObjectRef::from_obj(policy.as_ref()).to_string());
    tracing::warn!(kind = K::KIND, policy = %policy.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles one policy.
#[tracing::instrument(skip_all, fields(kind = K::KIND, id = %policy.id()))]
pub async fn reconcile<K: PolicyResource>(
    policy: Arc<K>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let key = ObjectRef::from_obj(policy.as_ref()).to_string();
    let api = policy.object_api(context.client.clone());
    let result = finalizer(&api, FINALIZER, policy, |event| async {
        match event {
            Event::Apply(policy) => apply(policy.as_ref(), &context).await,
            Event::Cleanup(policy) => cleanup(policy.as_ref(), &context).await,
        }
    })
    .await
    .map_err(Error::from_finalizer);
    if result.is_ok() {
        context.backoff.succeeded(&key);
    }
    counted(&context, K::KIND, started, result)
}

/// Gathers the facts, decides, and carries the decision out.
async fn apply<K: PolicyResource>(policy: &K, context: &Context) -> Result<Action, Error> {
    let id = policy.id();
    let webhooks = Webhooks::new(&context.client);
    let (server, authority) = gather_server(policy, context).await?;
    let registered = Facts::needs_registration(&server) && webhooks.registered(&id).await?;
    let mut outcome = decide(&Facts { server, registered });
    let written = match (outcome.webhook, authority) {
        // `decide` registers only with a CA (`Server::Present::authority`).
        (Webhook::Register, Some(ca)) => {
            let configuration = webhook_configuration(
                policy,
                &context.endpoint,
                &context.namespace,
                ca.bundle_pem.as_bytes(),
            );
            webhooks.apply(&id, &configuration).await
        }
        (Webhook::Remove, _) => webhooks.remove(&id).await,
        (Webhook::Register | Webhook::Keep, _) => Ok(()),
    };
    if let Err(error) = &written {
        // Said on the policy, not only in the controller's log: a missing
        // permission (RBAC) or a rejected configuration is the operator's
        // to fix.
        outcome.conditions.push(ConditionSpec::new(
            WEBHOOK_CONFIGURED,
            false,
            "WebhookWriteFailed",
            format!("the webhook configuration could not be written: {error}"),
        ));
        if !registered && outcome.phase == PolicyStatusPhase::Active {
            outcome.phase = PolicyStatusPhase::Pending;
        }
    }
    if let Some((reason, message)) = inactive_reason(&outcome) {
        tracing::info!(%id, reason, %message, "policy not active");
    }
    set_status(policy, context, &outcome).await?;
    written?;
    Ok(outcome
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

/// The PolicyServer side of the facts: whether it exists, the settings
/// check with its sources, and the rollout of the configuration that holds
/// the policy (written here first when the policy's entry changed); and the
/// CA the webhook is registered with, read once.
async fn gather_server<K: PolicyResource>(
    policy: &K,
    context: &Context,
) -> Result<(Server, Option<Authority>), Error> {
    let name = policy.webhook().policy_server.clone();
    if name.is_empty() {
        return Ok((Server::NotNamed, None));
    }
    let server = Api::<PolicyServer>::all(context.client.clone())
        .get_opt(&name)
        .await?
        .filter(|s| s.meta().deletion_timestamp.is_none());
    let Some(server) = server else {
        return Ok((Server::Missing { name }, None));
    };
    let check = check_modules(policy, &server, context).await;
    let entry = policy.entry(&server.spec.namespaced_policies_capabilities);
    let config = configuration::sync_entry(context, &server, &policy.id(), Some(&entry)).await?;
    let deployment = Api::<Deployment>::namespaced(context.client.clone(), &context.namespace)
        .get_opt(&object_name(&name))
        .await?;
    let authority = context.authority().await?;
    let server = Server::Present {
        check,
        rollout: rollout(deployment.as_ref(), &config_hash(&config)),
        authority: authority.is_some(),
    };
    Ok((server, authority))
}

/// The PolicyActive condition's reason and message, when it is false.
fn inactive_reason(outcome: &Outcome) -> Option<(&'static str, &str)> {
    outcome
        .conditions
        .iter()
        .find(|c| c.type_ == "PolicyActive" && !c.ok)
        .map(|c| (c.reason, c.message.as_str()))
}

async fn check_modules<K: PolicyResource>(
    policy: &K,
    server: &PolicyServer,
    context: &Context,
) -> Result<(), CheckError> {
    let sources = sources(server);
    for module in policy.modules() {
        context
            .checker
            .check_with(&policy.id(), module.module, module.settings, &sources)
            .await
            .map_err(|e| e.prefixed(&module.label()))?;
    }
    Ok(())
}

/// The webhook goes first, then the entry: no webhook ever points at a
/// configuration without the policy.
async fn cleanup<K: PolicyResource>(policy: &K, context: &Context) -> Result<Action, Error> {
    let id = policy.id();
    Webhooks::new(&context.client).remove(&id).await?;
    let server = Api::<PolicyServer>::all(context.client.clone())
        .get_opt(&policy.webhook().policy_server)
        .await?
        .filter(|s| s.meta().deletion_timestamp.is_none());
    if let Some(server) = server {
        configuration::sync_entry(context, &server, &id, None).await?;
    }
    Ok(Action::await_change())
}

fn phase_name(phase: PolicyStatusPhase) -> &'static str {
    match phase {
        PolicyStatusPhase::Unscheduled => "unscheduled",
        PolicyStatusPhase::Scheduled => "scheduled",
        PolicyStatusPhase::Pending => "pending",
        PolicyStatusPhase::Active => "active",
    }
}

/// Writes the status when it changed, and records an Event when the
/// PolicyActive condition changes (`kubectl describe` then says why).
async fn set_status<K: PolicyResource>(
    policy: &K,
    context: &Context,
    outcome: &Outcome,
) -> Result<(), Error> {
    let previous = policy.status();
    let phase = outcome.phase;
    let conditions = conditions(
        previous.map_or(&[][..], |s| &s.conditions),
        &outcome.conditions,
        policy.meta().generation,
        k8s_openapi::jiff::Timestamp::now(),
    );
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
        context.metrics.transition(K::KIND, phase_name(phase));
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
            publish_event(policy, context, phase, reason, message).await;
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

async fn publish_event<K: PolicyResource>(
    policy: &K,
    context: &Context,
    phase: PolicyStatusPhase,
    reason: String,
    message: String,
) {
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

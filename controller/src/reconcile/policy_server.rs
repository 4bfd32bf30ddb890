//! PolicyServer reconciliation: the CA and serving certificate, the
//! ConfigMap (sources and every bound policy), Deployment, Service and PodDisruptionBudget; on deletion, the
//! webhooks of the bound policies go first (the garbage collector removes
//! the owned objects after).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use time::OffsetDateTime;

use super::pki::{self, ServingSecret};
use super::webhooks::Webhooks;
use super::{configuration, counted, delete_if_present, drain, Context, Error, FINALIZER, MANAGER};
use crate::certs;
use crate::conditions::conditions;
use crate::crd::PolicyServer;
use crate::objects::{
    config_hash, deployment, disruption_budget, object_name, owner_reference, selector_labels,
    service, ROOT_CA_SECRET,
};
use crate::rollout::{rollout, Rollout};
use crate::webhook::POLICY_SERVER_LABEL;

const KIND: &str = "PolicyServer";
/// The longest a PolicyServer goes without a check of its certificates.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(3600);

/// Runs the PolicyServer reconciler until `shutdown`.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let namespace = context.namespace.clone();
    let owned = || watcher::Config::default().labels(POLICY_SERVER_LABEL);
    let controller = Controller::new(
        Api::<PolicyServer>::all(client.clone()),
        watcher::Config::default(),
    )
    .trigger_backoff(super::watch_error_backoff());
    let store = controller.store();
    let stream = controller
        // A deleted or edited CA is repaired at once, and every serving
        // certificate reissued by the new one.
        .watches(
            Api::<Secret>::namespaced(client.clone(), &namespace),
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CA_SECRET}")),
            move |_: Secret| {
                store
                    .state()
                    .iter()
                    .map(|server| ObjectRef::from_obj(server.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .owns(
            Api::<ConfigMap>::namespaced(client.clone(), &namespace),
            owned(),
        )
        .owns(
            Api::<Deployment>::namespaced(client.clone(), &namespace),
            owned(),
        )
        .owns(
            Api::<Service>::namespaced(client.clone(), &namespace),
            owned(),
        )
        .owns(Api::<Secret>::namespaced(client, &namespace), owned())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context);
    drain(KIND, stream).await;
}

fn error_policy(server: Arc<PolicyServer>, error: &Error, context: Arc<Context>) -> Action {
    let delay = context
        .backoff
        .failed(&ObjectRef::from_obj(server.as_ref()).to_string());
    tracing::warn!(policy_server = %server.name_any(), error = %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Reconciles one PolicyServer.
#[tracing::instrument(skip_all, fields(policy_server = %server.name_any()))]
pub async fn reconcile(server: Arc<PolicyServer>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = ObjectRef::from_obj(server.as_ref()).to_string();
    let api: Api<PolicyServer> = Api::all(context.client.clone());
    let result = finalizer(&api, FINALIZER, server, |event| async {
        match event {
            Event::Apply(server) => apply(&server, &context).await,
            Event::Cleanup(server) => cleanup(&server, &context).await,
        }
    })
    .await
    .map_err(Error::from_finalizer);
    if result.is_ok() {
        context.backoff.succeeded(&key);
    }
    counted(&context, KIND, started, result)
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

async fn apply(server: &PolicyServer, context: &Context) -> Result<Action, Error> {
    let name = server.name_any();
    let namespace = &context.namespace;
    let client = &context.client;
    let now = OffsetDateTime::now_utc();
    let ca = pki::ensure_authority(context, now).await?;
    let object = object_name(&name);
    let host = context.endpoint.url_host(&name);
    pki::ensure_serving(
        context,
        &ca,
        &ServingSecret {
            name: object.clone(),
            names: certs::serving_names(&object, &context.namespace, host.as_deref()),
            labels: selector_labels(&name),
            owner: Some(owner_reference(server)),
        },
        now,
    )
    .await?;

    let stored = configuration::sync(context, server).await?;
    let hash = config_hash(&stored);

    let applied = Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch(
            &object,
            &apply_params(),
            &Patch::Apply(&deployment(server, namespace, &hash)),
        )
        .await?;
    Api::<Service>::namespaced(client.clone(), namespace)
        .patch(
            &object,
            &apply_params(),
            &Patch::Apply(&service(server, namespace)),
        )
        .await?;
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    match disruption_budget(server, namespace) {
        Some(budget) => {
            budgets
                .patch(&object, &apply_params(), &Patch::Apply(&budget))
                .await?;
        }
        None => delete_if_present(budgets, &object).await?,
    }
    tracing::debug!(config_hash = %hash, "policy server applied");
    set_ready_condition(server, context, &rollout(Some(&applied), &hash)).await?;
    Ok(Action::requeue(CERTIFICATE_CHECK))
}

/// `Ready`: every pod runs the current configuration (what `kubectl get
/// policyservers` shows). The Deployment's status changes wake this up.
async fn set_ready_condition(
    server: &PolicyServer,
    context: &Context,
    state: &Rollout,
) -> Result<(), Error> {
    let wanted = state.condition("Ready", "every pod runs the current configuration");
    let previous = server
        .status
        .as_ref()
        .map_or(&[][..], |s| s.conditions.as_slice());
    let ready = conditions(
        previous,
        &[wanted],
        server.metadata.generation,
        k8s_openapi::jiff::Timestamp::now(),
    );
    let unchanged = ready.iter().all(|c| {
        previous
            .iter()
            .any(|p| p.type_ == c.type_ && p.status == c.status && p.message == c.message)
    });
    if unchanged {
        return Ok(());
    }
    Api::<PolicyServer>::all(context.client.clone())
        .patch_status(
            &server.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"conditions": ready}})),
        )
        .await?;
    Ok(())
}

/// Creates the CA, or renews it when it is due, keeping the old one in the bundle.
/// Removes the webhooks of every policy bound to the server, so that no
/// webhook points at a Service that is about to disappear (with
/// `failurePolicy: Fail` it would block every matching request).
async fn cleanup(server: &PolicyServer, context: &Context) -> Result<Action, Error> {
    let removed = Webhooks::new(&context.client)
        .remove_for_server(&server.name_any())
        .await?;
    tracing::info!(
        webhooks = removed,
        "policy server deleted; webhooks of its policies removed"
    );
    Ok(Action::await_change())
}

//! The reconcilers: one for PolicyServers, one (generic) for the four
//! policy kinds. [`run`] starts them all and returns when they stop.

mod backoff;
mod configuration;
pub mod pki;
mod policies;
mod policy_server;
mod webhooks;

pub use policies::WEBHOOK_CONFIGURED;

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use crate::certs::{Authority, Lifetimes};
use crate::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
};
use crate::metrics::Metrics;
use crate::objects::ROOT_CA_SECRET;
use crate::settings::SettingsChecker;
use crate::webhook::WebhookEndpoint;
use backoff::Backoff;

pub use policies::reconcile as reconcile_policy;
pub use policy_server::reconcile as reconcile_policy_server;

/// The finalizer on policies and PolicyServers.
pub const FINALIZER: &str = "kubewarden.io/cleanup";
/// The field manager of everything the controller applies.
pub const MANAGER: &str = "palisade-controller";

/// What every reconciliation needs.
pub struct Context {
    pub client: Client,
    /// The engine's namespace: policy-server objects live here and
    /// cluster-wide webhooks never see it.
    pub namespace: String,
    pub endpoint: WebhookEndpoint,
    pub checker: SettingsChecker,
    pub lifetimes: Lifetimes,
    pub metrics: Metrics,
    /// Kubernetes Events on the policies.
    pub recorder: Recorder,
    /// Retry delays of objects whose reconcile keeps failing.
    backoff: Backoff,
}

impl Context {
    pub fn new(
        client: Client,
        namespace: String,
        endpoint: WebhookEndpoint,
        checker: SettingsChecker,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace,
            endpoint,
            checker,
            lifetimes: Lifetimes::default(),
            metrics: Metrics::default(),
            backoff: Backoff::default(),
        }
    }

    /// The CA, as the PolicyServer reconciler last stored it.
    async fn authority(&self) -> Result<Option<Authority>, Error> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(secrets
            .get_opt(ROOT_CA_SECRET)
            .await?
            .and_then(|secret| Authority::from_secret(&secret)))
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("namespace", &self.namespace)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A reconciliation failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("certificates: {0}")]
    Certificate(#[from] crate::certs::CertError),
    #[error("the policy-server configuration kept changing while it was written")]
    Conflict,
}

impl Error {
    /// The reconciler's own error out of the finalizer's wrapper.
    fn from_finalizer(error: kube::runtime::finalizer::Error<Error>) -> Self {
        match error {
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
            other => Self::Finalizer(other.to_string()),
        }
    }

    /// A low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Finalizer(_) => "finalizer",
            Self::Json(_) => "json",
            Self::Certificate(_) => "certificate",
            Self::Conflict => "conflict",
        }
    }
}

/// The pause after a watch error, shared by all the watches of one
/// controller: 250 ms, doubling up to 2 s, back to 250 ms after 10 s without
/// an error.
///
/// kube-runtime's default (0.8 s doubling to 30 s, with jitter up to twice
/// that, reset after 2 minutes) is client-go's per-watch backoff, but one
/// controller's watches share a single one. After an API server restart each
/// watch fails once more (its resource version is gone, 410) before it lists
/// again, and every failure pauses all of them: with six watches the
/// controller was blind to changes for minutes. A short cap keeps the
/// requests against a down API server at a few per second per controller.
pub(crate) fn watch_error_backoff() -> impl kube::runtime::utils::Backoff {
    use kube::runtime::utils::ResetTimerBackoff;
    use kube::runtime::watcher::ExponentialBackoff;
    let builder = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(250))
        .with_max_delay(std::time::Duration::from_secs(2))
        .with_factor(2.0)
        .without_max_times();
    ResetTimerBackoff::new(
        ExponentialBackoff::from(builder),
        std::time::Duration::from_secs(10),
    )
}

/// Counts a reconciliation in the metrics and passes its result on.
fn counted(
    context: &Context,
    kind: &'static str,
    started: std::time::Instant,
    result: Result<Action, Error>,
) -> Result<Action, Error> {
    let outcome = result.as_ref().map_or_else(Error::kind, |_| "ok");
    context.metrics.reconciled(kind, outcome, started.elapsed());
    result
}

/// Deletes `name`; one that is already gone is no error.
pub(crate) async fn delete_if_present<K>(api: Api<K>, name: &str) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Logs the outcome of every reconciliation and drains the controller stream.
async fn drain<K, S, E>(kind: &'static str, stream: S)
where
    S: futures::Stream<Item = Result<(kube::runtime::reflector::ObjectRef<K>, Action), E>>,
    K: kube::Resource,
    E: std::fmt::Display,
{
    stream
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(kind, object = %object.name, "reconciled"),
                Err(e) => tracing::debug!(kind, error = %e, "reconcile failed"),
            }
        })
        .await;
}

/// Runs every reconciler until `shutdown` resolves; reconciliations in
/// flight then finish before this returns.
pub async fn run(
    context: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stop = || {
        let mut rx = rx.clone();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    };
    let all = futures::future::join5(
        policy_server::run(context.clone(), stop()),
        policies::run::<ClusterAdmissionPolicy>(context.clone(), stop()),
        policies::run::<AdmissionPolicy>(context.clone(), stop()),
        policies::run::<ClusterAdmissionPolicyGroup>(context.clone(), stop()),
        policies::run::<AdmissionPolicyGroup>(context, stop()),
    );
    tokio::pin!(all);
    tokio::select! {
        _ = &mut all => return,
        () = shutdown => tracing::info!("stopping the reconcilers"),
    }
    let _ = tx.send(true);
    all.await;
}

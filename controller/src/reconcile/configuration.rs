//! A policy-server's ConfigMap, kept equal to what its PolicyServer and the
//! policies bound to it say. Both reconcilers call [`sync`]: the ConfigMap is
//! computed whole every time (never edited in place), so a hand edit or a
//! corrupted `policies.yml` is simply overwritten and no policy can be lost.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::ResourceExt;
use palisade_host::server::config::Entry;
use palisade_host::server::PoliciesConfig;

use super::{Context, Error};
use crate::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    PolicyServer,
};
use crate::kinds::PolicyResource;
use crate::objects::{config_map, object_name, POLICIES_KEY};

/// Writers that lose a race read and compute again, this many times.
const ATTEMPTS: usize = 5;

/// Makes the ConfigMap of `server` what its policies say, and returns it as
/// stored.
///
/// Race-free without locks: the ConfigMap is read before the policies are
/// listed, and written with the resourceVersion that was read. A writer
/// whose list missed a newer policy therefore finds the ConfigMap changed by
/// that policy's own reconcile, and starts again.
pub async fn sync(context: &Context, server: &PolicyServer) -> Result<ConfigMap, Error> {
    let api: Api<ConfigMap> = Api::namespaced(context.client.clone(), &context.namespace);
    let name = object_name(&server.name_any());
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let current = api.get_opt(&name).await?;
        let policies = bound_policies(context, server).await?;
        let mut wanted = config_map(server, &context.namespace, &policies);
        let written = match current {
            Some(current) if same(&current, &wanted) => return Ok(current),
            Some(current) => {
                wanted.metadata.resource_version = current.metadata.resource_version;
                api.replace(&name, &PostParams::default(), &wanted).await
            }
            None => api.create(&PostParams::default(), &wanted).await,
        };
        match written {
            Ok(stored) => {
                tracing::info!(
                    policy_server = %server.name_any(),
                    policies = policies.entries.len(),
                    "policy-server configuration written"
                );
                return Ok(stored);
            }
            // Someone else wrote in between: read everything again.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                last_error = Some(kube::Error::Api(status));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_error.map_or(Error::Conflict, Error::Kube))
}

/// [`sync`], skipped when the stored `policies.yml` already holds `entry`
/// for `id` (`None`: no entry). A policy's reconcile runs on every rollout
/// step; it lists every policy only when its own entry changes, while the
/// PolicyServer's reconcile (woken by any edit of the ConfigMap) repairs the
/// rest.
pub async fn sync_entry(
    context: &Context,
    server: &PolicyServer,
    id: &str,
    entry: Option<&Entry>,
) -> Result<ConfigMap, Error> {
    let api: Api<ConfigMap> = Api::namespaced(context.client.clone(), &context.namespace);
    if let Some(current) = api.get_opt(&object_name(&server.name_any())).await? {
        let stored = current
            .data
            .as_ref()
            .and_then(|data| data.get(POLICIES_KEY))
            .and_then(|text| PoliciesConfig::parse(text, POLICIES_KEY).ok());
        if stored.is_some_and(|config| config.entries.get(id) == entry) {
            return Ok(current);
        }
    }
    sync(context, server).await
}

/// The ConfigMaps are equal where the controller decides them.
fn same(current: &ConfigMap, wanted: &ConfigMap) -> bool {
    current.data == wanted.data
        && current.metadata.labels == wanted.metadata.labels
        && current.metadata.owner_references == wanted.metadata.owner_references
}

/// Every policy of the four kinds bound to `server` and not being deleted,
/// as `policies.yml` entries. Consistent reads: a list from a cache could
/// miss a policy created a moment ago.
async fn bound_policies(context: &Context, server: &PolicyServer) -> Result<PoliciesConfig, Error> {
    let mut entries = BTreeMap::new();
    collect::<ClusterAdmissionPolicy>(context, server, &mut entries).await?;
    collect::<AdmissionPolicy>(context, server, &mut entries).await?;
    collect::<ClusterAdmissionPolicyGroup>(context, server, &mut entries).await?;
    collect::<AdmissionPolicyGroup>(context, server, &mut entries).await?;
    Ok(PoliciesConfig { entries })
}

async fn collect<K: PolicyResource>(
    context: &Context,
    server: &PolicyServer,
    entries: &mut BTreeMap<String, Entry>,
) -> Result<(), Error> {
    let name = server.name_any();
    let capabilities = &server.spec.namespaced_policies_capabilities;
    let list = Api::<K>::all(context.client.clone())
        .list(&ListParams::default())
        .await?;
    for policy in list.items.iter().filter(|policy| {
        policy.webhook().policy_server == name && policy.meta().deletion_timestamp.is_none()
    }) {
        entries.insert(policy.id(), policy.entry(capabilities));
    }
    Ok(())
}

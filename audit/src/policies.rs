//! Which policies the scanner audits, and on which resource types.
//!
//! As Kubewarden: `backgroundAudit: false` and policies that are not
//! active are skipped, and only rules that see CREATE count. Better than
//! Kubewarden: `operations: ["*"]` counts as CREATE, and wildcard groups,
//! versions and resources are expanded through discovery instead of making
//! the policy unauditable.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::RuleWithOperations;
use kube::api::{Api, ListParams};
use kube::core::{Selector, SelectorExt};
use kube::discovery::{verbs, ApiResource, Discovery, Scope};
use kube::ResourceExt;
use palisade_controller::crd::{
    AdmissionPolicy, AdmissionPolicyGroup, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup,
    PolicyMode, PolicyStatusPhase,
};
use palisade_controller::kinds::PolicyResource;

/// The annotations Kubewarden reads a result's severity and category from.
pub const SEVERITY_ANNOTATION: &str = "io.kubewarden.policy.severity";
pub const CATEGORY_ANNOTATION: &str = "io.kubewarden.policy.category";

/// A resource type a policy sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// One policy the scanner evaluates.
#[derive(Debug, Clone)]
pub struct AuditedPolicy {
    pub id: String,
    pub name: String,
    /// The namespace of a namespaced policy (it sees only that one).
    pub namespace: Option<String>,
    pub uid: String,
    pub resource_version: String,
    pub policy_server: String,
    pub monitor: bool,
    pub mutating: bool,
    pub context_aware: bool,
    pub severity: Option<String>,
    pub category: Option<String>,
    /// The namespaces a cluster-wide policy sees (none: all).
    pub namespace_selector: Option<Selector>,
    pub object_selector: Option<Selector>,
    /// Evaluated per object before the policy ([`crate::conditions`]).
    pub match_conditions: Vec<k8s_openapi::api::admissionregistration::v1::MatchCondition>,
    pub targets: Vec<Target>,
}

impl AuditedPolicy {
    /// Whether the policy sees objects in `namespace` (with `labels`);
    /// `None` for cluster-scoped objects.
    pub fn sees_namespace(
        &self,
        namespace: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        match (namespace, &self.namespace) {
            (Some(ns), Some(own)) => ns == own,
            (None, Some(_)) => false,
            (_, None) => self
                .namespace_selector
                .as_ref()
                .is_none_or(|selector| namespace.is_none() || selector.matches(labels)),
        }
    }

    /// Whether the policy sees an object with these labels.
    pub fn sees_object(&self, labels: &BTreeMap<String, String>) -> bool {
        self.object_selector
            .as_ref()
            .is_none_or(|selector| selector.matches(labels))
    }

    pub fn targets(&self, resource: &ApiResource) -> bool {
        self.targets.iter().any(|t| &t.resource == resource)
    }
}

/// A policy that is not audited, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct NotAudited {
    pub id: String,
    pub reason: String,
    /// An error (the policy should have been audited) rather than a skip.
    pub error: bool,
}

/// Every policy of the four kinds, split into the audited ones and the rest.
pub async fn audited(
    client: &kube::Client,
    discovery: &Discovery,
) -> Result<(Vec<AuditedPolicy>, Vec<NotAudited>), kube::Error> {
    let mut audited = Vec::new();
    let mut not = Vec::new();
    collect::<ClusterAdmissionPolicy>(client, discovery, &mut audited, &mut not).await?;
    collect::<AdmissionPolicy>(client, discovery, &mut audited, &mut not).await?;
    collect::<ClusterAdmissionPolicyGroup>(client, discovery, &mut audited, &mut not).await?;
    collect::<AdmissionPolicyGroup>(client, discovery, &mut audited, &mut not).await?;
    Ok((audited, not))
}

async fn collect<K: PolicyResource>(
    client: &kube::Client,
    discovery: &Discovery,
    audited: &mut Vec<AuditedPolicy>,
    not: &mut Vec<NotAudited>,
) -> Result<(), kube::Error> {
    for policy in Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        match audited_policy(&policy, discovery) {
            Ok(one) => audited.push(one),
            Err(reason) => not.push(reason),
        }
    }
    Ok(())
}

fn audited_policy<K: PolicyResource>(
    policy: &K,
    discovery: &Discovery,
) -> Result<AuditedPolicy, NotAudited> {
    let id = policy.id();
    let skip = |reason: &str| NotAudited {
        id: id.clone(),
        reason: reason.to_owned(),
        error: false,
    };
    let webhook = policy.webhook();
    if !webhook.background_audit {
        return Err(skip("backgroundAudit is false"));
    }
    let phase = policy.status().and_then(|s| s.policy_status);
    if phase != Some(PolicyStatusPhase::Active) {
        return Err(skip("the policy is not active"));
    }
    let targets = targets(&webhook.rules, discovery);
    if targets.is_empty() {
        return Err(skip(
            "no rule sees CREATE of a resource type the cluster serves",
        ));
    }
    let selector = |s: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
        s.cloned()
            .map(Selector::try_from)
            .transpose()
            .map_err(|e| NotAudited {
                id: id.clone(),
                reason: format!("invalid selector: {e}"),
                error: true,
            })
    };
    let annotation = |key: &str| policy.annotations().get(key).cloned();
    let context_aware = match policy.runs() {
        palisade_controller::kinds::Runs::Single { context_aware, .. } => !context_aware.is_empty(),
        palisade_controller::kinds::Runs::Group(group) => group
            .policies
            .values()
            .any(|m| !m.context_aware_resources.is_empty()),
    };
    Ok(AuditedPolicy {
        id: id.clone(),
        name: policy.name_any(),
        namespace: if K::NAMESPACED {
            policy.namespace()
        } else {
            None
        },
        uid: policy.uid().unwrap_or_default(),
        resource_version: policy.resource_version().unwrap_or_default(),
        policy_server: webhook.policy_server.clone(),
        monitor: webhook.mode == PolicyMode::Monitor,
        mutating: policy.mutating(),
        context_aware,
        severity: annotation(SEVERITY_ANNOTATION),
        category: annotation(CATEGORY_ANNOTATION),
        namespace_selector: selector(policy.user_namespace_selector())?,
        object_selector: selector(webhook.object_selector.as_ref())?,
        match_conditions: webhook.match_conditions.clone(),
        targets,
    })
}

/// The resource types the rules see on CREATE, wildcards expanded through
/// discovery; subresources and types that cannot be listed are left out.
pub fn targets(rules: &[RuleWithOperations], discovery: &Discovery) -> Vec<Target> {
    let mut found: Vec<Target> = Vec::new();
    for rule in rules {
        let operations = rule.operations.as_deref().unwrap_or_default();
        if !operations.iter().any(|o| o == "CREATE" || o == "*") {
            continue;
        }
        let wanted = |list: &Option<Vec<String>>, value: &str| {
            list.as_deref()
                .unwrap_or_default()
                .iter()
                .any(|w| w == "*" || w == value)
        };
        for group in discovery.groups() {
            if !wanted(&rule.api_groups, group.name()) {
                continue;
            }
            for version in group.versions() {
                if !wanted(&rule.api_versions, version) {
                    continue;
                }
                for (resource, capabilities) in group.versioned_resources(version) {
                    let listable = capabilities.supports_operation(verbs::LIST);
                    if !listable
                        || resource.plural.contains('/')
                        || !wanted(&rule.resources, &resource.plural)
                    {
                        continue;
                    }
                    let target = Target {
                        resource,
                        namespaced: capabilities.scope == Scope::Namespaced,
                    };
                    if !found.contains(&target) {
                        found.push(target);
                    }
                }
            }
        }
    }
    found
}

//! Manifests generated from a policy's metadata, as `kwctl scaffold
//! manifest` writes them: what the policy declares (rules, mutating,
//! context-aware resources, annotations) becomes the resource's spec, so an
//! author does not copy it by hand and get it wrong.

use serde_json::{json, Map, Value};

use crate::metadata::PolicyMetadata;

/// The policy resources a manifest can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ManifestKind {
    #[value(name = "ClusterAdmissionPolicy")]
    ClusterAdmissionPolicy,
    #[value(name = "AdmissionPolicy")]
    AdmissionPolicy,
}

/// What a manifest is made of besides the metadata.
#[derive(Debug, Clone)]
pub struct ManifestInput<'a> {
    pub kind: ManifestKind,
    /// The resource's name (made a valid Kubernetes name).
    pub name: &'a str,
    /// Only for an AdmissionPolicy.
    pub namespace: Option<&'a str>,
    /// The module reference the policy-server fetches.
    pub module: &'a str,
    pub settings: Value,
    pub policy_server: &'a str,
}

/// Annotations of the metadata copied onto the resource (kwctl copies the
/// same ones: the audit scanner reads severity and category there).
const COPIED_ANNOTATIONS: &[&str] = &[
    "io.kubewarden.policy.title",
    "io.kubewarden.policy.description",
    "io.kubewarden.policy.severity",
    "io.kubewarden.policy.category",
];

/// The resource for `input`, with the rules and the rest from `metadata`.
pub fn manifest(input: &ManifestInput<'_>, metadata: &PolicyMetadata) -> Value {
    let annotations: Map<String, Value> = COPIED_ANNOTATIONS
        .iter()
        .filter_map(|key| {
            let value = metadata.annotations.get(*key)?;
            Some(((*key).to_owned(), Value::String(value.clone())))
        })
        .collect();
    let mut meta = Map::new();
    meta.insert("name".into(), json!(kubernetes_name(input.name)));
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    let mut spec = Map::new();
    spec.insert("policyServer".into(), json!(input.policy_server));
    spec.insert("module".into(), json!(input.module));
    spec.insert("settings".into(), input.settings.clone());
    spec.insert("rules".into(), json!(metadata.rules));
    spec.insert("mutating".into(), json!(metadata.mutating));
    spec.insert("backgroundAudit".into(), json!(metadata.background_audit));
    let kind = match input.kind {
        ManifestKind::ClusterAdmissionPolicy => {
            if !metadata.context_aware_resources.is_empty() {
                spec.insert(
                    "contextAwareResources".into(),
                    json!(metadata.context_aware_resources),
                );
            }
            "ClusterAdmissionPolicy"
        }
        ManifestKind::AdmissionPolicy => {
            meta.insert(
                "namespace".into(),
                json!(input.namespace.unwrap_or("default")),
            );
            "AdmissionPolicy"
        }
    };
    json!({
        "apiVersion": "policies.kubewarden.io/v1",
        "kind": kind,
        "metadata": meta,
        "spec": spec,
    })
}

/// A DNS-1123 subdomain made of `name`: lowercase, `_` and other characters
/// become `-`, at most 253 characters, alphanumeric at both ends.
fn kubernetes_name(name: &str) -> String {
    let mapped: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(253)
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "policy".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_kubernetes_names() {
        assert_eq!(kubernetes_name("My_Policy"), "my-policy");
        assert_eq!(kubernetes_name("-x-"), "x");
        assert_eq!(kubernetes_name("__"), "policy");
    }

    #[test]
    fn the_spec_comes_from_the_metadata() {
        let metadata = PolicyMetadata::from_author_text(
            "rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [CREATE]\nmutating: true\nbackgroundAudit: false\ncontextAwareResources:\n  - apiVersion: v1\n    kind: Namespace\nannotations:\n  io.kubewarden.policy.severity: high\n  io.kubewarden.policy.usage: long text\n",
        )
        .unwrap();
        let input = ManifestInput {
            kind: ManifestKind::ClusterAdmissionPolicy,
            name: "pod_policy",
            namespace: None,
            module: "registry://example.test/p:v1",
            settings: json!({"a": 1}),
            policy_server: "default",
        };
        let cap = manifest(&input, &metadata);
        assert_eq!(cap["metadata"]["name"], "pod-policy");
        assert_eq!(
            cap["metadata"]["annotations"],
            json!({"io.kubewarden.policy.severity": "high"})
        );
        assert_eq!(cap["spec"]["rules"][0]["resources"], json!(["pods"]));
        assert_eq!(cap["spec"]["mutating"], true);
        assert_eq!(cap["spec"]["backgroundAudit"], false);
        assert_eq!(cap["spec"]["settings"], json!({"a": 1}));
        assert_eq!(cap["spec"]["contextAwareResources"][0]["kind"], "Namespace");
        let ap = manifest(
            &ManifestInput {
                kind: ManifestKind::AdmissionPolicy,
                namespace: Some("team"),
                ..input
            },
            &metadata,
        );
        assert_eq!(ap["kind"], "AdmissionPolicy");
        assert_eq!(ap["metadata"]["namespace"], "team");
        assert!(ap["spec"].get("contextAwareResources").is_none());
    }
}

//! A context-aware policy: admits a namespaced object only when its
//! Namespace carries every label listed in the settings. It reads the
//! Namespace through the `kubernetes` host capability, so it needs that
//! capability and `v1 Namespace` in its `contextAwareResources`.
//!
//! Settings: `labels: [team, cost-center]`.

use palisade_sdk::host::kubernetes;
use palisade_sdk::{accept, export_policy, reject, Policy, Request, Response};
use serde::Deserialize;

/// The policy.
#[derive(Debug)]
pub struct NamespaceLabels;

/// The policy's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Labels the object's Namespace must carry.
    #[serde(default)]
    pub labels: Vec<String>,
}

impl Policy for NamespaceLabels {
    type Settings = Settings;

    fn validate(request: &Request, settings: &Settings) -> palisade_sdk::Result<Response> {
        let Some(namespace) = request.namespace.as_deref() else {
            return Ok(accept());
        };
        let text = match kubernetes::get_resource("v1", "Namespace", namespace, None) {
            Ok(text) => text,
            // Without the cluster's answer the policy cannot decide; saying
            // so (code 500) lets failurePolicy apply.
            Err(e) => {
                return Ok(reject(
                    format!("cannot read namespace `{namespace}`: {e}"),
                    500,
                ))
            }
        };
        let found: serde_json::Value = serde_json::from_str(&text)?;
        let labels = found.pointer("/metadata/labels");
        let missing: Vec<&str> = settings
            .labels
            .iter()
            .filter(|label| labels.and_then(|l| l.get(label.as_str())).is_none())
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            Ok(accept())
        } else {
            Ok(reject(
                format!(
                    "namespace `{namespace}` lacks the labels: {}",
                    missing.join(", ")
                ),
                403,
            ))
        }
    }

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        if settings.labels.is_empty() {
            return Err("`labels` must list at least one label".into());
        }
        Ok(())
    }
}

export_policy!(NamespaceLabels);

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_sdk::testing::{validate, validate_settings, RequestBuilder};
    use serde_json::json;

    #[test]
    fn cluster_scoped_objects_are_accepted_without_a_lookup() {
        let request = RequestBuilder::new("", "v1", "Namespace")
            .object(json!({"metadata": {"name": "n"}}))
            .build();
        assert!(validate::<NamespaceLabels>(&request, json!({"labels": ["team"]})).is_accepted());
    }

    #[test]
    fn no_answer_from_the_cluster_is_an_error_not_a_verdict() {
        // Natively there is no host: the call fails as an unreachable API server would.
        let request = RequestBuilder::new("", "v1", "Pod")
            .namespace("team")
            .object(json!({"metadata": {"name": "p"}}))
            .build();
        let response = validate::<NamespaceLabels>(&request, json!({"labels": ["team"]}));
        assert!(!response.is_accepted());
        assert_eq!(response.code(), Some(500));
    }

    #[test]
    fn settings_need_at_least_one_label() {
        assert!(validate_settings::<NamespaceLabels>(json!({"labels": []})).is_err());
        assert!(validate_settings::<NamespaceLabels>(json!({"labels": ["team"]})).is_ok());
        assert!(validate_settings::<NamespaceLabels>(json!({"other": 1})).is_err());
    }
}

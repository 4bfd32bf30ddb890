//! Rejects pods with a privileged container, init container or ephemeral
//! container, on CREATE and UPDATE. Anything else is accepted.

use palisade_sdk::{
    accept, export_policy, reject, NoSettings, Operation, Policy, Request, Response,
};
use serde::Deserialize;

/// The policy.
#[derive(Debug)]
pub struct PodPrivileged;

impl Policy for PodPrivileged {
    type Settings = NoSettings;

    fn validate(request: &Request, _settings: &NoSettings) -> palisade_sdk::Result<Response> {
        if request.kind.kind != "Pod"
            || !matches!(request.operation, Operation::Create | Operation::Update)
        {
            return Ok(accept());
        }
        let Some(pod) = request.object::<Pod>()? else {
            return Ok(accept());
        };
        let privileged: Vec<&str> = pod.spec.privileged_containers().collect();
        if privileged.is_empty() {
            Ok(accept())
        } else {
            Ok(reject(
                format!(
                    "privileged containers are not allowed: {}",
                    privileged.join(", ")
                ),
                None,
            ))
        }
    }
}

export_policy!(PodPrivileged);

// Only the fields the check reads: serde skips the rest of the pod, which
// keeps parsing cheap.
#[derive(Deserialize)]
struct Pod {
    #[serde(default)]
    spec: PodSpec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    init_containers: Vec<Container>,
    #[serde(default)]
    ephemeral_containers: Vec<Container>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    #[serde(default)]
    name: String,
    security_context: Option<SecurityContext>,
}

#[derive(Deserialize)]
struct SecurityContext {
    privileged: Option<bool>,
}

impl PodSpec {
    fn privileged_containers(&self) -> impl Iterator<Item = &str> {
        self.containers
            .iter()
            .chain(&self.init_containers)
            .chain(&self.ephemeral_containers)
            .filter(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true))
            .map(|c| c.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_sdk::testing::{request_from_file, validate, RequestBuilder};
    use serde_json::json;

    fn fixture(name: &str) -> Request {
        request_from_file(palisade_testkit::fixture_path(name)).unwrap()
    }

    fn pod(spec: serde_json::Value) -> Request {
        RequestBuilder::new("", "v1", "Pod")
            .object(json!({"spec": spec}))
            .build()
    }

    #[test]
    fn privileged_container_is_rejected_with_its_name() {
        let r = validate::<PodPrivileged>(&fixture("pod-create-privileged.json"), json!({}));
        assert!(!r.is_accepted());
        assert!(r.message().unwrap().contains("tools"), "{:?}", r.message());
    }

    #[test]
    fn privileged_init_container_is_rejected() {
        let r = validate::<PodPrivileged>(
            &fixture("pod-create-privileged-init-container.json"),
            json!({}),
        );
        assert!(!r.is_accepted());
    }

    #[test]
    fn privileged_ephemeral_container_is_rejected() {
        let r = validate::<PodPrivileged>(
            &pod(
                json!({"containers": [{"name": "a"}], "ephemeralContainers": [{"name": "dbg", "securityContext": {"privileged": true}}]}),
            ),
            json!({}),
        );
        assert_eq!(
            r.message(),
            Some("privileged containers are not allowed: dbg")
        );
    }

    #[test]
    fn unprivileged_and_explicitly_false_are_accepted() {
        assert!(
            validate::<PodPrivileged>(&fixture("pod-create-unprivileged.json"), json!({}))
                .is_accepted()
        );
        let r = validate::<PodPrivileged>(
            &pod(json!({"containers": [{"name": "a", "securityContext": {"privileged": false}}]})),
            json!({}),
        );
        assert!(r.is_accepted());
    }

    #[test]
    fn update_adding_privileged_is_rejected_and_delete_is_accepted() {
        assert!(
            !validate::<PodPrivileged>(&fixture("pod-update-add-privileged.json"), json!({}))
                .is_accepted()
        );
        assert!(validate::<PodPrivileged>(&fixture("pod-delete.json"), json!({})).is_accepted());
    }

    #[test]
    fn other_kinds_are_accepted() {
        assert!(
            validate::<PodPrivileged>(&fixture("deployment-create.json"), json!({})).is_accepted()
        );
    }
}

//! A mutating policy: gives pods safe security defaults where they set none.
//!
//! - `spec.securityContext.runAsNonRoot: true` when unset;
//! - `allowPrivilegeEscalation: false` on every container and init container
//!   whose security context leaves it unset, except privileged containers
//!   and those adding `CAP_SYS_ADMIN`: they escalate by definition, and the
//!   API server refuses the combination.
//!
//! Values the pod sets, even unsafe ones, are left alone (rejecting them is
//! the job of validating policies), so a compliant pod is returned unchanged
//! and gets no patch.

use palisade_sdk::{
    accept, export_policy, mutate, NoSettings, Operation, Policy, Request, Response,
};
use serde_json::{Map, Value};

/// The policy.
#[derive(Debug)]
pub struct DefaultSecurityContext;

impl Policy for DefaultSecurityContext {
    type Settings = NoSettings;

    fn validate(request: &Request, _settings: &NoSettings) -> palisade_sdk::Result<Response> {
        if request.kind.kind != "Pod" || !matches!(request.operation, Operation::Create) {
            return Ok(accept());
        }
        let Some(mut pod) = request.object::<Value>()? else {
            return Ok(accept());
        };
        if !apply_defaults(&mut pod) {
            return Ok(accept());
        }
        Ok(mutate(&pod)?)
    }
}

export_policy!(DefaultSecurityContext);

/// Sets the defaults in place; returns whether anything changed.
fn apply_defaults(pod: &mut Value) -> bool {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return false;
    };
    let mut changed = set_if_unset(object_field(spec, "securityContext"), "runAsNonRoot");
    for list in ["containers", "initContainers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            if escalates_by_definition(container) {
                continue;
            }
            let context = object_field(container, "securityContext");
            changed |= set_bool_if_unset(context, "allowPrivilegeEscalation", false);
        }
    }
    changed
}

/// Privileged, or adding `SYS_ADMIN`: `allowPrivilegeEscalation: false`
/// would make the pod invalid.
fn escalates_by_definition(container: &Map<String, Value>) -> bool {
    let Some(context) = container.get("securityContext") else {
        return false;
    };
    let privileged = context.get("privileged") == Some(&Value::Bool(true));
    let sys_admin = context
        .pointer("/capabilities/add")
        .and_then(Value::as_array)
        .is_some_and(|added| {
            added
                .iter()
                .any(|c| matches!(c.as_str(), Some("SYS_ADMIN" | "CAP_SYS_ADMIN")))
        });
    privileged || sys_admin
}

fn set_if_unset(object: Option<&mut Map<String, Value>>, key: &str) -> bool {
    set_bool_if_unset(object, key, true)
}

fn set_bool_if_unset(object: Option<&mut Map<String, Value>>, key: &str, value: bool) -> bool {
    match object {
        Some(object) if !object.contains_key(key) => {
            object.insert(key.to_owned(), Value::Bool(value));
            true
        }
        _ => false,
    }
}

/// The object at `key`, created empty when absent or null; `None` when the
/// field holds something else (left for validation to complain about).
fn object_field<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = parent.entry(key).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_sdk::testing::{request_from_file, validate, RequestBuilder};
    use serde_json::json;

    fn fixture(name: &str) -> Request {
        request_from_file(palisade_testkit::fixture_path(name)).unwrap()
    }

    #[test]
    fn sets_both_defaults() {
        let r =
            validate::<DefaultSecurityContext>(&fixture("pod-create-unprivileged.json"), json!({}));
        assert!(r.is_accepted());
        let pod: Value = r.mutated_object().unwrap().unwrap();
        assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"],
            false
        );
    }

    #[test]
    fn compliant_pod_is_accepted_without_mutation() {
        let pod = json!({"spec": {"securityContext": {"runAsNonRoot": false},
            "containers": [{"name": "a", "securityContext": {"allowPrivilegeEscalation": true}}]}});
        let r = validate::<DefaultSecurityContext>(
            &RequestBuilder::new("", "v1", "Pod").object(pod).build(),
            json!({}),
        );
        assert!(r.is_accepted());
        assert!(
            !r.is_mutation(),
            "explicit values are kept, so nothing changes"
        );
    }

    #[test]
    fn init_containers_get_the_default_too_and_others_are_untouched() {
        let pod =
            json!({"spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "i"}]}});
        let r = validate::<DefaultSecurityContext>(
            &RequestBuilder::new("", "v1", "Pod").object(pod).build(),
            json!({}),
        );
        let pod: Value = r.mutated_object().unwrap().unwrap();
        assert_eq!(
            pod["spec"]["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"],
            false
        );
        assert!(
            validate::<DefaultSecurityContext>(&fixture("deployment-create.json"), json!({}))
                .is_accepted()
        );
        assert!(
            !validate::<DefaultSecurityContext>(&fixture("pod-delete.json"), json!({}))
                .is_mutation()
        );
    }

    #[test]
    fn privileged_containers_are_not_given_a_combination_the_api_server_refuses() {
        let r = validate::<DefaultSecurityContext>(
            &fixture("pod-create-privileged-init-container.json"),
            json!({}),
        );
        let pod: Value = r.mutated_object().unwrap().unwrap();
        let init = &pod["spec"]["initContainers"][0]["securityContext"];
        assert_eq!(init["privileged"], true);
        assert!(init.get("allowPrivilegeEscalation").is_none(), "{init}");
        let sys_admin = json!({"spec": {"securityContext": {"runAsNonRoot": true}, "containers": [
            {"name": "a", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}});
        let r = validate::<DefaultSecurityContext>(
            &RequestBuilder::new("", "v1", "Pod")
                .object(sys_admin)
                .build(),
            json!({}),
        );
        assert!(r.is_accepted() && !r.is_mutation());
    }
}

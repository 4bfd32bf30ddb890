//! pod-privileged as an existing Kubewarden user writes it: the upstream
//! `kubewarden-policy-sdk`, waPC, built for `wasm32-wasip1` or
//! `wasm32-unknown-unknown`. Palisade runs the result unchanged.
//!
//! Settings (all optional):
//! - `add_label: {key, value}` — mutate accepted pods on CREATE by adding the label;
//! - `resolve: "<host>"` — resolve the host through the `net` capability and
//!   report the addresses as a warning (exercises host callbacks).

use guest::prelude::*;
use kubewarden_policy_sdk::host_capabilities::net;
use kubewarden_policy_sdk::request::ValidationRequest;
use kubewarden_policy_sdk::response::ValidationResponse;
use kubewarden_policy_sdk::settings::Validatable;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, mutate_request, protocol_version_guest, reject_request, validate_settings,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub add_label: Option<Label>,
    pub resolve: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Label {
    pub key: String,
    pub value: String,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        match &self.add_label {
            Some(label) if label.key.is_empty() => Err("add_label.key must not be empty".into()),
            _ => Ok(()),
        }
    }
}

#[no_mangle]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn validate(payload: &[u8]) -> CallResult {
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    if let Some(host) = &request.settings.resolve {
        let warning = match net::lookup_host(host) {
            Ok(answer) => format!("{host} resolves to {}", answer.ips.join(",")),
            Err(e) => format!("cannot resolve {host}: {e}"),
        };
        return Ok(serde_json::to_vec(&ValidationResponse {
            accepted: true,
            message: None,
            code: None,
            mutated_object: None,
            audit_annotations: None,
            warnings: Some(vec![warning]),
        })?);
    }
    let operation = request.request.operation.as_str();
    if request.request.kind.kind != "Pod" || !(operation == "CREATE" || operation == "UPDATE") {
        return accept_request();
    }
    let privileged = privileged_containers(&request.request.object);
    if !privileged.is_empty() {
        return reject_request(
            Some(format!(
                "privileged containers are not allowed: {}",
                privileged.join(", ")
            )),
            None,
            None,
            None,
        );
    }
    match (&request.settings.add_label, operation) {
        (Some(label), "CREATE") => {
            let mut pod = request.request.object.clone();
            let labels = pod
                .pointer_mut("/metadata")
                .and_then(Value::as_object_mut)
                .map(|m| {
                    m.entry("labels")
                        .or_insert_with(|| Value::Object(Default::default()))
                });
            match labels.and_then(Value::as_object_mut) {
                Some(labels) if !labels.contains_key(&label.key) => {
                    labels.insert(label.key.clone(), Value::String(label.value.clone()));
                    mutate_request(pod)
                }
                _ => accept_request(),
            }
        }
        _ => accept_request(),
    }
}

fn privileged_containers(pod: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        let containers = pod
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array);
        for container in containers.into_iter().flatten() {
            if container.pointer("/securityContext/privileged") == Some(&Value::Bool(true)) {
                let name = container.get("name").and_then(Value::as_str).unwrap_or("?");
                names.push(name.to_owned());
            }
        }
    }
    names
}

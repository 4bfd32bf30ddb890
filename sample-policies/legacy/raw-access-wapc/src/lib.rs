//! The raw-access sample as an existing Kubewarden user writes a raw
//! policy: the upstream `kubewarden-policy-sdk`, waPC, with its own payload
//! type (`{"request": <document>, "settings": ...}`), since the SDK's
//! `ValidationRequest` is for Kubernetes requests only. Same settings and
//! decisions as `sample-policies/raw-access`.

use guest::prelude::*;
use kubewarden_policy_sdk::settings::Validatable;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{
    accept_request, mutate_request, protocol_version_guest, reject_request, validate_settings,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    pub allowed_users: Vec<String>,
    pub allowed_actions: Vec<String>,
    #[serde(default)]
    pub default_action: Option<String>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.allowed_users.is_empty() || self.allowed_actions.is_empty() {
            return Err("allowedUsers and allowedActions must not be empty".into());
        }
        match &self.default_action {
            Some(default) if !self.allowed_actions.contains(default) => Err(format!(
                "defaultAction {default} is not among allowedActions"
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Payload {
    request: Value,
    settings: Settings,
}

#[no_mangle]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn validate(payload: &[u8]) -> CallResult {
    let Payload { request, settings } = serde_json::from_slice(payload)?;
    let field = |name: &str| request.get(name).and_then(Value::as_str);
    let (Some(user), Some(resource)) = (field("user"), field("resource")) else {
        return reject_request(
            Some("the document is not an access request: `user` and `resource` are required".into()),
            Some(400),
            None,
            None,
        );
    };
    if !settings.allowed_users.iter().any(|u| u == user) {
        return reject_request(
            Some(format!("user {user} may not access {resource}")),
            Some(403),
            None,
            None,
        );
    }
    let Some(action) = field("action") else {
        return match &settings.default_action {
            Some(default) => {
                let mut mutated = request.clone();
                mutated["action"] = Value::String(default.clone());
                mutate_request(mutated)
            }
            None => reject_request(
                Some("the request names no action".into()),
                Some(400),
                None,
                None,
            ),
        };
    };
    if settings.allowed_actions.iter().any(|a| a == action) {
        accept_request()
    } else {
        reject_request(
            Some(format!(
                "action {action} is not allowed (allowed: {})",
                settings.allowed_actions.join(", ")
            )),
            Some(403),
            None,
            None,
        )
    }
}

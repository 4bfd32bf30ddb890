//! A raw policy: decides on access requests that are not Kubernetes objects,
//! POSTed to `/validate_raw/<id>` as `{"request": {"user": ..., "action":
//! ..., "resource": ...}}`.
//!
//! Settings:
//! - `allowedUsers: [name]` — the users who may ask (required, not empty);
//! - `allowedActions: [action]` — the actions they may take (required, not empty);
//! - `defaultAction: action` — when a request names no action, it is
//!   mutated to this one (must be among `allowedActions`); without it, a
//!   request without an action is rejected.

use palisade_sdk::{accept, export_raw_policy, mutate, reject, RawPolicy, Response};
use serde::{Deserialize, Serialize};

/// The access request. Fields the policy does not know are kept as they
/// are, so that a mutation changes only what it means to.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccessRequest {
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub resource: String,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    pub allowed_users: Vec<String>,
    pub allowed_actions: Vec<String>,
    #[serde(default)]
    pub default_action: Option<String>,
}

#[derive(Debug)]
pub struct RawAccess;

impl RawPolicy for RawAccess {
    type Request = AccessRequest;
    type Settings = Settings;

    fn validate(request: &AccessRequest, settings: &Settings) -> palisade_sdk::Result<Response> {
        if !settings.allowed_users.contains(&request.user) {
            return Ok(reject(
                format!("user {} may not access {}", request.user, request.resource),
                403,
            ));
        }
        let Some(action) = &request.action else {
            return Ok(match &settings.default_action {
                Some(default) => mutate(&AccessRequest {
                    action: Some(default.clone()),
                    user: request.user.clone(),
                    resource: request.resource.clone(),
                    rest: request.rest.clone(),
                })?,
                None => reject("the request names no action", 400),
            });
        };
        Ok(if settings.allowed_actions.contains(action) {
            accept()
        } else {
            reject(
                format!(
                    "action {action} is not allowed (allowed: {})",
                    settings.allowed_actions.join(", ")
                ),
                403,
            )
        })
    }

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        if settings.allowed_users.is_empty() || settings.allowed_actions.is_empty() {
            return Err("allowedUsers and allowedActions must not be empty".into());
        }
        match &settings.default_action {
            Some(default) if !settings.allowed_actions.contains(default) => Err(format!(
                "defaultAction {default} is not among allowedActions"
            )),
            _ => Ok(()),
        }
    }
}

export_raw_policy!(RawAccess);

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_sdk::testing::{validate_raw, validate_raw_settings};
    use serde_json::json;

    fn settings() -> serde_json::Value {
        json!({"allowedUsers": ["alice"], "allowedActions": ["read", "write"], "defaultAction": "read"})
    }

    #[test]
    fn allowed_users_and_actions_are_accepted() {
        let r = validate_raw::<RawAccess>(
            json!({"user": "alice", "action": "write", "resource": "orders"}),
            settings(),
        );
        assert!(r.is_accepted() && !r.is_mutation());
    }

    #[test]
    fn other_users_and_actions_are_rejected() {
        let user = validate_raw::<RawAccess>(
            json!({"user": "mallory", "action": "read", "resource": "orders"}),
            settings(),
        );
        assert_eq!(user.code(), Some(403));
        assert_eq!(user.message(), Some("user mallory may not access orders"));
        let action = validate_raw::<RawAccess>(
            json!({"user": "alice", "action": "delete", "resource": "orders"}),
            settings(),
        );
        assert_eq!(
            action.message(),
            Some("action delete is not allowed (allowed: read, write)")
        );
    }

    #[test]
    fn a_missing_action_becomes_the_default_and_other_fields_stay() {
        let r = validate_raw::<RawAccess>(
            json!({"uid": "r-1", "user": "alice", "resource": "orders", "note": {"why": "audit"}}),
            settings(),
        );
        assert!(r.is_accepted());
        assert_eq!(
            r.mutated_object::<serde_json::Value>().unwrap(),
            Some(
                json!({"uid": "r-1", "user": "alice", "action": "read", "resource": "orders", "note": {"why": "audit"}})
            )
        );
        let no_default = validate_raw::<RawAccess>(
            json!({"user": "alice", "resource": "orders"}),
            json!({"allowedUsers": ["alice"], "allowedActions": ["read"]}),
        );
        assert_eq!(no_default.code(), Some(400));
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(validate_raw_settings::<RawAccess>(settings()), Ok(()));
        let err = validate_raw_settings::<RawAccess>(
            json!({"allowedUsers": ["alice"], "allowedActions": ["read"], "defaultAction": "write"}),
        )
        .unwrap_err();
        assert_eq!(err, "defaultAction write is not among allowedActions");
        assert!(validate_raw_settings::<RawAccess>(
            json!({"allowedUsers": [], "allowedActions": ["read"]})
        )
        .is_err());
    }
}

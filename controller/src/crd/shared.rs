//! Fields shared by several resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `protect` rejects; `monitor` only logs and counts. Switching a policy
/// from protect to monitor is forbidden (it would silently stop enforcing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Protect,
    Monitor,
}

/// A resource type a context-aware policy may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContextAwareResource {
    pub api_version: String,
    pub kind: String,
}

/// Where a policy is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyStatusPhase {
    /// No policy server is named.
    Unscheduled,
    /// The named policy server does not exist.
    Scheduled,
    /// The policy server is rolling out the policy.
    Pending,
    /// The webhook is registered.
    Active,
}

/// Status of every policy kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_status: Option<PolicyStatusPhase>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<PolicyMode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Settings are free-form JSON: an object whose fields the policy defines.
pub(crate) fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

pub(crate) fn default_policy_server() -> String {
    "default".to_owned()
}

pub(crate) fn default_timeout_seconds() -> i32 {
    10
}

pub(crate) fn default_true() -> bool {
    true
}

pub(crate) fn empty_settings() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

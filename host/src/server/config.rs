//! `policies.yml`: the policy-server's configuration, in Kubewarden's format.
//!
//! A map from policy id to either a policy (`module`, `settings`...) or a
//! policy group (`policies`, `expression`, `message`). Unknown fields are
//! tolerated, as the controller adds its own (`namespacedName`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Protect rejects; monitor only logs and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    #[default]
    Protect,
    Monitor,
}

impl PolicyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Protect => "protect",
            Self::Monitor => "monitor",
        }
    }
}

pub use crate::metadata::ContextAwareResource;

/// One policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Where the module is (`file:///...`; other schemes later).
    pub module: String,
    #[serde(default)]
    pub policy_mode: PolicyMode,
    #[serde(default)]
    pub allowed_to_mutate: bool,
    #[serde(default = "empty_object")]
    pub settings: serde_json::Value,
    #[serde(default)]
    pub context_aware_resources: Vec<ContextAwareResource>,
    /// Replaces the policy's rejection message; the original goes to the causes.
    pub message: Option<String>,
    pub timeout_eval_seconds: Option<u64>,
    #[serde(default)]
    pub host_capabilities: Vec<String>,
}

/// A member of a policy group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupMemberSpec {
    pub module: String,
    #[serde(default = "empty_object")]
    pub settings: serde_json::Value,
    #[serde(default)]
    pub context_aware_resources: Vec<ContextAwareResource>,
    pub timeout_eval_seconds: Option<u64>,
    #[serde(default)]
    pub host_capabilities: Vec<String>,
}

/// A policy group: members combined by a boolean expression.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSpec {
    #[serde(default)]
    pub policy_mode: PolicyMode,
    pub policies: BTreeMap<String, GroupMemberSpec>,
    pub expression: String,
    pub message: String,
}

/// One entry of `policies.yml`.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Policy(PolicySpec),
    Group(GroupSpec),
}

/// The parsed `policies.yml`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoliciesConfig {
    pub entries: BTreeMap<String, Entry>,
}

/// The configuration could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {reason}")]
    Yaml { path: String, reason: String },
    #[error("{path}: `{id}`: {reason}")]
    Entry {
        path: String,
        id: String,
        reason: String,
    },
    #[error("`{id}`: module `{module}`: {reason}")]
    Module {
        id: String,
        module: String,
        reason: String,
    },
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl PoliciesConfig {
    /// Reads and parses a `policies.yml` file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses `policies.yml` text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: BTreeMap<String, serde_yaml::Value> = serde_yaml::from_str::<Option<_>>(text)
            .map_err(|e| ConfigError::Yaml {
                path: origin.to_owned(),
                reason: e.to_string(),
            })?
            .unwrap_or_default();
        let mut entries = BTreeMap::new();
        for (id, value) in raw {
            let entry_error = |reason: String| ConfigError::Entry {
                path: origin.to_owned(),
                id: id.clone(),
                reason,
            };
            let is_group = value.get("policies").is_some();
            let entry = if is_group {
                Entry::Group(
                    serde_yaml::from_value(value)
                        .map_err(|e| entry_error(format!("invalid policy group: {e}")))?,
                )
            } else {
                Entry::Policy(
                    serde_yaml::from_value(value)
                        .map_err(|e| entry_error(format!("invalid policy: {e}")))?,
                )
            };
            if let Entry::Group(group) = &entry {
                if group.policies.is_empty() {
                    return Err(entry_error(
                        "a policy group needs at least one member in `policies`".into(),
                    ));
                }
            }
            entries.insert(id, entry);
        }
        Ok(Self { entries })
    }
}

impl PoliciesConfig {
    /// Every module reference, policies and group members alike.
    pub fn modules(&self) -> Vec<String> {
        let mut modules = Vec::new();
        for entry in self.entries.values() {
            match entry {
                Entry::Policy(p) => modules.push(p.module.clone()),
                Entry::Group(g) => modules.extend(g.policies.values().map(|m| m.module.clone())),
            }
        }
        modules
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_policies_and_groups_in_kubewarden_shape() {
        let yaml = r#"
clusterwide-privileged:
  namespacedName: {name: privileged}
  module: file:///policies/pod-privileged.wasm
  policyMode: monitor
  allowedToMutate: false
  settings: {}
  timeoutEvalSeconds: 3
  hostCapabilities: ["net/*"]
clusterwide-group-strict:
  policyMode: protect
  expression: "a() && !b()"
  message: "strict group rejected"
  policies:
    a: {module: "file:///a.wasm", settings: {x: 1}}
    b: {module: "file:///b.wasm"}
"#;
        let config = PoliciesConfig::parse(yaml, "policies.yml").unwrap();
        let Entry::Policy(p) = &config.entries["clusterwide-privileged"] else {
            panic!()
        };
        assert_eq!(p.policy_mode, PolicyMode::Monitor);
        assert_eq!(p.timeout_eval_seconds, Some(3));
        assert_eq!(p.host_capabilities, ["net/*"]);
        let Entry::Group(g) = &config.entries["clusterwide-group-strict"] else {
            panic!()
        };
        assert_eq!(g.policies["a"].settings, serde_json::json!({"x": 1}));
        assert_eq!(g.policies["b"].settings, serde_json::json!({}));
    }

    #[test]
    fn errors_name_the_entry() {
        let err = PoliciesConfig::parse("p:\n  policyMode: protect\n", "x.yml").unwrap_err();
        assert!(
            err.to_string().contains("`p`") && err.to_string().contains("module"),
            "{err}"
        );
        let err =
            PoliciesConfig::parse("p:\n  module: file:///a\n  policyMode: enforce\n", "x.yml")
                .unwrap_err();
        assert!(err.to_string().contains("enforce"), "{err}");
        assert!(PoliciesConfig::parse("{", "x.yml").is_err());
        assert!(PoliciesConfig::parse("", "x.yml")
            .unwrap()
            .entries
            .is_empty());
    }
}

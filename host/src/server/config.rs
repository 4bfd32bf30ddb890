//! `policies.yml`: the policy-server's configuration, in Kubewarden's format.
//!
//! A map from policy id to either a policy (`module`, `settings`...) or a
//! policy group (`policies`, `expression`, `message`). These types are the
//! one model of the file: the controller serialises them into a
//! PolicyServer's ConfigMap, the policy-server and the audit scanner read
//! them back. Unknown fields are tolerated when reading, so files written
//! by Kubewarden's controller load unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Protect rejects; monitor only logs and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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

/// The Kubernetes object an entry was made from (informational: the
/// policy-server logs it; Kubewarden's controller writes it too).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NamespacedName {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

/// What a policy and a group member have in common: the module, how it is
/// configured and what it may reach. Flattened into both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSpec {
    /// Where the module is (`registry://`, `https://`, `file://`...).
    pub module: String,
    #[serde(default = "empty_object")]
    pub settings: serde_json::Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_aware_resources: Vec<ContextAwareResource>,
    /// Deadline of one evaluation; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_eval_seconds: Option<u64>,
    /// Grant patterns of the host capabilities the module may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_capabilities: Vec<String>,
}

impl ModuleSpec {
    /// A module with empty settings and no capabilities.
    pub fn new(module: impl Into<String>) -> Self {
        Self {
            module: module.into(),
            settings: empty_object(),
            context_aware_resources: Vec::new(),
            timeout_eval_seconds: None,
            host_capabilities: Vec::new(),
        }
    }
}

/// One policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    #[serde(flatten)]
    pub module: ModuleSpec,
    #[serde(default)]
    pub policy_mode: PolicyMode,
    #[serde(default)]
    pub allowed_to_mutate: bool,
    /// Replaces the policy's rejection message; the original goes to the causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaced_name: Option<NamespacedName>,
}

/// A policy group: members combined by a boolean expression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSpec {
    #[serde(default)]
    pub policy_mode: PolicyMode,
    /// Members by name; the expression calls them as `name()`.
    pub policies: BTreeMap<String, ModuleSpec>,
    pub expression: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaced_name: Option<NamespacedName>,
}

/// One entry of `policies.yml`: a group when it has `policies`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Entry {
    Policy(PolicySpec),
    Group(GroupSpec),
}

/// The parsed `policies.yml`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct PoliciesConfig {
    pub entries: BTreeMap<String, Entry>,
}

/// The configuration could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        /// Displayed in the message, not chained as a source: `{:#}`
        /// would print it twice.
        error: std::io::Error,
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
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses `policies.yml` text; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let raw = match Self::parse_json(text) {
            Some(raw) => raw,
            None => serde_yaml::from_str::<Option<_>>(text)
                .map_err(|e| ConfigError::Yaml {
                    path: source_name.to_owned(),
                    reason: e.to_string(),
                })?
                .unwrap_or_default(),
        };
        let mut entries = BTreeMap::new();
        for (id, value) in raw {
            let entry_error = |reason: String| ConfigError::Entry {
                path: source_name.to_owned(),
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
    /// The text as JSON, which is what [`Self::to_text`] writes: YAML
    /// parsers refuse a key over 1024 characters, which JSON allows (found
    /// by the `policies_config` fuzz target). `None` when it is not JSON.
    fn parse_json(text: &str) -> Option<BTreeMap<String, serde_yaml::Value>> {
        if !text.trim_start().starts_with('{') {
            return None;
        }
        let json: BTreeMap<String, serde_json::Value> = serde_json::from_str(text).ok()?;
        json.into_iter()
            .map(|(id, value)| Some((id, serde_yaml::to_value(value).ok()?)))
            .collect()
    }

    /// Every module reference, policies and group members alike.
    pub fn modules(&self) -> Vec<String> {
        self.entries
            .values()
            .flat_map(Entry::modules)
            .map(|m| m.module.clone())
            .collect()
    }

    /// The file's text as the controller writes it (JSON, which YAML readers
    /// accept too, ids up to 1024 characters); entries in id order, so equal
    /// configurations are equal text and hash alike.
    pub fn to_text(&self) -> String {
        // A map of strings to plain data cannot fail to serialise.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl Entry {
    /// The modules this entry runs: one for a policy, each member's for a group.
    pub fn modules(&self) -> Vec<&ModuleSpec> {
        match self {
            Self::Policy(p) => vec![&p.module],
            Self::Group(g) => g.policies.values().collect(),
        }
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
        assert_eq!(p.module.timeout_eval_seconds, Some(3));
        assert_eq!(p.module.host_capabilities, ["net/*"]);
        assert_eq!(
            p.namespaced_name,
            Some(NamespacedName {
                namespace: None,
                name: "privileged".into()
            })
        );
        let Entry::Group(g) = &config.entries["clusterwide-group-strict"] else {
            panic!()
        };
        assert_eq!(g.policies["a"].settings, serde_json::json!({"x": 1}));
        assert_eq!(g.policies["b"].settings, serde_json::json!({}));
    }

    #[test]
    fn a_long_id_reads_back_the_same() {
        // Found by the policies_config fuzz target: an id whose JSON form
        // (backslashes escaped) is over 1024 characters, the longest key a
        // YAML reader takes in a flow mapping.
        let found = include_str!("../../../fuzz/seeds/policies_config/regression-long-id");
        let config = PoliciesConfig::parse(found, "found").unwrap();
        assert!(config
            .entries
            .keys()
            .any(|id| serde_json::to_string(id).unwrap_or_default().len() > 1024));
        let again = PoliciesConfig::parse(&config.to_text(), "written").unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn a_settings_float_reads_back_to_the_same_bits() {
        // Found by the policies_config fuzz target: a number the YAML reader
        // rounds correctly, written as JSON, read back one bit off by
        // serde_json's default (fast, not correctly rounded) float parser.
        let found = include_str!("../../../fuzz/seeds/policies_config/regression-float");
        let config = PoliciesConfig::parse(found, "found").unwrap();
        assert_eq!(
            PoliciesConfig::parse(&config.to_text(), "written").unwrap(),
            config
        );
        let digits = format!("666666666666{}", "1".repeat(108));
        let yaml = format!("p:\n  module: m.wasm\n  settings: {{n: {digits}}}\n");
        let config = PoliciesConfig::parse(&yaml, "yaml").unwrap();
        let again = PoliciesConfig::parse(&config.to_text(), "written").unwrap();
        assert_eq!(again, config, "{}", config.to_text());
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let mut member = ModuleSpec::new("file:///a.wasm");
        member.settings = serde_json::json!({"labels": ["team"]});
        member.timeout_eval_seconds = Some(2);
        let mut single = ModuleSpec::new("registry://r/p:v1");
        single.host_capabilities = vec!["*".into()];
        single.context_aware_resources = vec![ContextAwareResource {
            api_version: "v1".into(),
            kind: "Namespace".into(),
        }];
        let config = PoliciesConfig {
            entries: BTreeMap::from([
                (
                    "clusterwide-p".to_owned(),
                    Entry::Policy(PolicySpec {
                        module: single,
                        policy_mode: PolicyMode::Monitor,
                        allowed_to_mutate: true,
                        message: Some("no".into()),
                        namespaced_name: Some(NamespacedName {
                            namespace: Some("team".into()),
                            name: "p".into(),
                        }),
                    }),
                ),
                (
                    "clusterwide-group-g".to_owned(),
                    Entry::Group(GroupSpec {
                        policy_mode: PolicyMode::Protect,
                        policies: BTreeMap::from([("a".to_owned(), member)]),
                        expression: "a()".into(),
                        message: "rejected".into(),
                        namespaced_name: None,
                    }),
                ),
            ]),
        };
        let text = config.to_text();
        assert_eq!(PoliciesConfig::parse(&text, "written").unwrap(), config);
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["clusterwide-p"]["policyMode"], "monitor");
        assert_eq!(json["clusterwide-p"]["module"], "registry://r/p:v1");
        assert_eq!(
            json["clusterwide-group-g"]["policies"]["a"]["timeoutEvalSeconds"],
            2
        );
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

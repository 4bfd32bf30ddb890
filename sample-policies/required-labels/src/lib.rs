//! Rejects objects that lack required labels, or whose label values do not
//! match a configured pattern.
//!
//! Settings:
//!
//! ```yaml
//! labels:
//!   - app                              # must be present, any value
//!   - key: owner
//!     valueRegex: "team-[a-z]+"        # whole value must match
//! ```

use std::collections::BTreeMap;

use palisade_sdk::{accept, export_policy, reject, Operation, Policy, Request, Response};
use regex::Regex;
use serde::Deserialize;

/// The policy.
#[derive(Debug)]
pub struct RequiredLabels;

/// The policy's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The labels every object must carry.
    #[serde(default)]
    pub labels: Vec<LabelRule>,
}

/// One required label: a bare key, or a key with a value pattern.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum LabelRule {
    Key(String),
    #[serde(rename_all = "camelCase")]
    WithValue {
        key: String,
        value_regex: Option<String>,
    },
}

impl LabelRule {
    fn key(&self) -> &str {
        match self {
            Self::Key(key) | Self::WithValue { key, .. } => key,
        }
    }

    /// The pattern, anchored so that it must match the whole value.
    fn regex(&self) -> Result<Option<Regex>, String> {
        match self {
            Self::WithValue {
                key,
                value_regex: Some(pattern),
            } => Regex::new(&format!("^(?:{pattern})$"))
                .map(Some)
                .map_err(|e| format!("label `{key}`: invalid valueRegex `{pattern}`: {e}")),
            _ => Ok(None),
        }
    }
}

impl Policy for RequiredLabels {
    type Settings = Settings;

    fn validate(request: &Request, settings: &Settings) -> palisade_sdk::Result<Response> {
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return Ok(accept());
        }
        let Some(object) = request.object::<Object>()? else {
            return Ok(accept());
        };
        let labels = object.metadata.labels.unwrap_or_default();
        let mut problems = Vec::new();
        for rule in &settings.labels {
            match (labels.get(rule.key()), rule.regex()?) {
                (None, _) => problems.push(format!("missing label `{}`", rule.key())),
                (Some(value), Some(re)) if !re.is_match(value) => problems.push(format!(
                    "label `{}` has value `{value}`, which does not match the required pattern",
                    rule.key()
                )),
                _ => {}
            }
        }
        if problems.is_empty() {
            Ok(accept())
        } else {
            Ok(reject(problems.join("; "), None))
        }
    }

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        if settings.labels.is_empty() {
            return Err("`labels` must list at least one required label".into());
        }
        for rule in &settings.labels {
            if rule.key().is_empty() {
                return Err("a required label has an empty key".into());
            }
            rule.regex()?;
        }
        Ok(())
    }
}

export_policy!(RequiredLabels);

#[derive(Deserialize)]
struct Object {
    #[serde(default)]
    metadata: Metadata,
}

#[derive(Deserialize, Default)]
struct Metadata {
    labels: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_sdk::testing::{request_from_file, validate, validate_settings};
    use serde_json::json;

    fn fixture(name: &str) -> Request {
        request_from_file(palisade_testkit::fixture_path(name)).unwrap()
    }

    fn settings() -> serde_json::Value {
        json!({"labels": ["run", {"key": "run", "valueRegex": "[a-z]+"}]})
    }

    #[test]
    fn object_with_labels_is_accepted() {
        assert!(
            validate::<RequiredLabels>(&fixture("pod-create-unprivileged.json"), settings())
                .is_accepted()
        );
    }

    #[test]
    fn missing_labels_are_named() {
        let r = validate::<RequiredLabels>(&fixture("pod-create-missing-labels.json"), settings());
        assert!(!r.is_accepted());
        assert!(
            r.message().unwrap().contains("missing label `run`"),
            "{:?}",
            r.message()
        );
    }

    #[test]
    fn value_must_match_the_whole_pattern() {
        let s = json!({"labels": [{"key": "run", "valueRegex": "ngin"}]});
        let r = validate::<RequiredLabels>(&fixture("pod-create-unprivileged.json"), s);
        assert!(!r.is_accepted(), "`ngin` must not match `nginx` partially");
        let s = json!({"labels": [{"key": "owner", "valueRegex": "team-[a-z]+"}]});
        assert!(validate::<RequiredLabels>(&fixture("namespace-create.json"), s).is_accepted());
    }

    #[test]
    fn delete_is_accepted() {
        assert!(validate::<RequiredLabels>(&fixture("pod-delete.json"), settings()).is_accepted());
    }

    #[test]
    fn settings_validation() {
        assert_eq!(validate_settings::<RequiredLabels>(settings()), Ok(()));
        let empty = validate_settings::<RequiredLabels>(json!({"labels": []})).unwrap_err();
        assert!(empty.contains("at least one"), "{empty}");
        let none = validate_settings::<RequiredLabels>(json!({})).unwrap_err();
        assert!(none.contains("at least one"), "{none}");
        let bad = validate_settings::<RequiredLabels>(
            json!({"labels": [{"key": "a", "valueRegex": "("}]}),
        )
        .unwrap_err();
        assert!(bad.contains("invalid valueRegex"), "{bad}");
        let typo = validate_settings::<RequiredLabels>(json!({"label": ["a"]})).unwrap_err();
        assert!(typo.contains("invalid settings"), "{typo}");
    }
}

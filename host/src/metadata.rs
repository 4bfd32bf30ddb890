//! Policy metadata, carried in the module itself.
//!
//! The format is Kubewarden's: camelCase JSON in the custom section
//! `io.kubewarden.metadata`, for component and waPC policies alike, so that
//! one reader and one writer serve both and existing tooling can read ours.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use wasmtime::wasmparser::{Parser, Payload};

/// Name of the custom section holding the metadata.
pub const METADATA_SECTION: &str = "io.kubewarden.metadata";

/// Everything a tool needs to know about a policy without running it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMetadata {
    /// Protocol spoken by waPC policies (`v1`); absent for components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// The requests the policy is meant to see.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Free-form annotations (`io.kubewarden.policy.title`...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Whether the policy may return a mutated object.
    #[serde(default)]
    pub mutating: bool,
    /// Whether the audit scanner should evaluate existing resources.
    #[serde(default = "default_true")]
    pub background_audit: bool,
    /// Cluster resources the policy reads through the `kubernetes` capability.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_aware_resources: Vec<ContextAwareResource>,
    /// How the module is run (waPC, WASI, Rego); absent for components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_mode: Option<ExecutionMode>,
    /// `kubernetes` (AdmissionRequest) or `raw` (any JSON).
    #[serde(default)]
    pub policy_type: PolicyType,
    /// Host capabilities the policy needs, as grant patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_capabilities: Vec<String>,
    /// Oldest engine version the policy works with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_kubewarden_version: Option<String>,
}

fn default_true() -> bool {
    true
}

/// A webhook rule, as in a ValidatingWebhookConfiguration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub api_versions: Vec<String>,
    pub resources: Vec<String>,
    pub operations: Vec<String>,
}

/// A resource type a context-aware policy may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextAwareResource {
    pub api_version: String,
    pub kind: String,
}

/// Kubewarden's execution modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutionMode {
    KubewardenWapc,
    Wasi,
    Opa,
    Gatekeeper,
}

/// What the policy evaluates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyType {
    #[default]
    Kubernetes,
    Raw,
}

/// The fields of a metadata file, as Kubewarden defines them.
const METADATA_FIELDS: &[&str] = &[
    "protocolVersion",
    "rules",
    "annotations",
    "mutating",
    "backgroundAudit",
    "contextAwareResources",
    "executionMode",
    "policyType",
    "hostCapabilities",
    "minimumKubewardenVersion",
];
const RULE_FIELDS: &[&str] = &["apiGroups", "apiVersions", "resources", "operations"];
const OPERATIONS: &[&str] = &["CREATE", "UPDATE", "DELETE", "CONNECT", "*"];

impl PolicyMetadata {
    /// Parses a metadata file written by a policy's author (YAML or JSON),
    /// as strictly as Kubewarden does: unknown fields are refused (a typo
    /// such as `rule:` would otherwise silently give a policy no rules),
    /// `rules` and `mutating` are required, a Kubernetes policy has at least
    /// one rule, every list of a rule is non-empty and operations are
    /// `CREATE`, `UPDATE`, `DELETE`, `CONNECT` or `*`.
    ///
    /// Metadata read from a module is not checked this way: modules built
    /// by other tools may carry fields this version does not know.
    pub fn from_author_text(text: &str) -> Result<Self, String> {
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        let Some(fields) = value.as_mapping() else {
            return Err(
                "the metadata must be a mapping (rules:, mutating:, annotations:...)".into(),
            );
        };
        check_fields(fields, METADATA_FIELDS, "")?;
        for required in ["rules", "mutating"] {
            if !fields.contains_key(required) {
                return Err(format!("missing field `{required}`"));
            }
        }
        if let Some(rules) = fields.get("rules").and_then(|r| r.as_sequence()) {
            for (i, rule) in rules.iter().enumerate() {
                if let Some(rule) = rule.as_mapping() {
                    check_fields(rule, RULE_FIELDS, &format!("rules[{i}]."))?;
                }
            }
        }
        let metadata: Self = serde_yaml::from_value(value).map_err(|e| e.to_string())?;
        if metadata.policy_type == PolicyType::Kubernetes && metadata.rules.is_empty() {
            return Err("`rules` is empty: a Kubernetes policy needs at least one rule".into());
        }
        for (i, rule) in metadata.rules.iter().enumerate() {
            for (name, list) in [
                ("apiGroups", &rule.api_groups),
                ("apiVersions", &rule.api_versions),
                ("resources", &rule.resources),
                ("operations", &rule.operations),
            ] {
                if list.is_empty() {
                    return Err(format!("rules[{i}].{name} is empty"));
                }
            }
            if let Some(bad) = rule
                .operations
                .iter()
                .find(|o| !OPERATIONS.contains(&o.as_str()))
            {
                return Err(format!(
                    "rules[{i}].operations: `{bad}` is not an operation (use {})",
                    OPERATIONS.join(", ")
                ));
            }
        }
        Ok(metadata)
    }
}

fn check_fields(fields: &serde_yaml::Mapping, known: &[&str], prefix: &str) -> Result<(), String> {
    for key in fields.keys() {
        let key = key.as_str().unwrap_or_default();
        if !known.contains(&key) {
            let hint = known
                .iter()
                .find(|k| k.starts_with(key) || key.starts_with(*k))
                .map(|k| format!("; did you mean `{prefix}{k}`?"))
                .unwrap_or_else(|| format!(" (known: {})", known.join(", ")));
            return Err(format!("unknown field `{prefix}{key}`{hint}"));
        }
    }
    Ok(())
}

/// Reading or writing the metadata failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("cannot parse the wasm binary: {0}")]
    Wasm(String),
    #[error("the `{METADATA_SECTION}` section is not valid metadata: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads the metadata section of a module or component, if it has one.
///
/// Only top-level sections are considered: a component's nested core modules
/// carry their own producers' sections, not the policy's metadata.
pub fn read_metadata(wasm: &[u8]) -> Result<Option<PolicyMetadata>, MetadataError> {
    match top_level_metadata_sections(wasm)?.first() {
        Some(section) => Ok(Some(serde_json::from_slice(section.data)?)),
        None => Ok(None),
    }
}

/// Returns `wasm` with its metadata section replaced by `metadata`.
///
/// Every other section is copied byte for byte; the new section goes last,
/// which is valid for modules and components alike.
pub fn write_metadata(wasm: &[u8], metadata: &PolicyMetadata) -> Result<Vec<u8>, MetadataError> {
    let mut out = Vec::with_capacity(wasm.len() + 1024);
    let mut kept_from = 0;
    for section in top_level_metadata_sections(wasm)? {
        out.extend_from_slice(slice(wasm, kept_from..section.range.start)?);
        kept_from = section.range.end;
    }
    out.extend_from_slice(slice(wasm, kept_from..wasm.len())?);
    let data = serde_json::to_vec(metadata)?;
    let section = wasm_encoder::CustomSection {
        name: METADATA_SECTION.into(),
        data: data.into(),
    };
    <wasm_encoder::CustomSection as wasm_encoder::Section>::append_to(&section, &mut out);
    Ok(out)
}

fn slice(wasm: &[u8], range: Range<usize>) -> Result<&[u8], MetadataError> {
    wasm.get(range)
        .ok_or_else(|| MetadataError::Wasm("section range outside the binary".into()))
}

/// A metadata section at the top level of a binary.
struct MetadataSection<'a> {
    /// The whole section: id, size, name and data.
    range: Range<usize>,
    data: &'a [u8],
}

fn top_level_metadata_sections(wasm: &[u8]) -> Result<Vec<MetadataSection<'_>>, MetadataError> {
    // wasmparser's own message for this dumps both headers as byte arrays.
    if !wasm.starts_with(b"\0asm") {
        return Err(MetadataError::Wasm(
            "not a WebAssembly module (it does not start with the `\\0asm` magic bytes)".into(),
        ));
    }
    let mut found = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| MetadataError::Wasm(e.to_string()))?;
        match &payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CustomSection(section) if depth == 0 && section.name() == METADATA_SECTION => {
                let Some((_, content)) = payload.as_section() else {
                    continue;
                };
                found.push(MetadataSection {
                    range: section_start(wasm, &content)?..content.end,
                    data: section.data(),
                });
            }
            _ => {}
        }
    }
    Ok(found)
}

/// Finds where a custom section's header (id 0 and LEB128 size) starts, given
/// its content range. Encoders may pad the size to five bytes, so both the
/// minimal and the padded forms are tried and checked.
fn section_start(wasm: &[u8], content: &Range<usize>) -> Result<usize, MetadataError> {
    let len = content.end - content.start;
    for leb_len in 1..=5 {
        let Some(start) = content.start.checked_sub(1 + leb_len) else {
            break;
        };
        if wasm.get(start) != Some(&0) {
            continue;
        }
        let leb = slice(wasm, start + 1..content.start)?;
        if decode_leb_u32(leb) == Some(len) {
            return Ok(start);
        }
    }
    Err(MetadataError::Wasm(
        "cannot locate the metadata section header".into(),
    ))
}

fn decode_leb_u32(bytes: &[u8]) -> Option<usize> {
    let mut value = 0usize;
    for (i, byte) in bytes.iter().enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * i);
        let last = i + 1 == bytes.len();
        if (byte & 0x80 == 0) != last {
            return None;
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {

    #[test]
    fn author_metadata_is_checked_like_kubewarden_checks_it() {
        let good = "rules:\n  - apiGroups: [apps]\n    apiVersions: [v1]\n    resources: [deployments]\n    operations: [CREATE, UPDATE]\nmutating: false\n";
        let parsed = PolicyMetadata::from_author_text(good).unwrap();
        assert_eq!(parsed.rules.len(), 1);
        assert!(parsed.background_audit);

        let error = |text: &str| PolicyMetadata::from_author_text(text).unwrap_err();
        let typo = good.replace("rules:", "rule:");
        assert_eq!(error(&typo), "unknown field `rule`; did you mean `rules`?");
        let crate_op = good.replace("CREATE,", "CRATE,");
        assert!(
            error(&crate_op).contains("`CRATE` is not an operation"),
            "{}",
            error(&crate_op)
        );
        let rule_typo = good.replace("resources:", "resource:");
        assert!(
            error(&rule_typo).contains("`rules[0].resource`"),
            "{}",
            error(&rule_typo)
        );
        let no_mutating = good.replace("mutating: false\n", "");
        assert_eq!(error(&no_mutating), "missing field `mutating`");
        assert!(error("rules: []\nmutating: false\n").contains("at least one rule"));
        let empty_list = good.replace("[deployments]", "[]");
        assert_eq!(error(&empty_list), "rules[0].resources is empty");
        assert!(
            PolicyMetadata::from_author_text("rules: []\nmutating: false\npolicyType: raw\n")
                .is_ok()
        );
    }
    use super::*;

    fn sample() -> PolicyMetadata {
        serde_json::from_value(serde_json::json!({
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE", "UPDATE"]}],
            "mutating": false,
            "annotations": {"io.kubewarden.policy.title": "pod-privileged"}
        }))
        .unwrap()
    }

    #[test]
    fn defaults_match_kubewarden() {
        let m = sample();
        assert!(m.background_audit);
        assert_eq!(m.policy_type, PolicyType::Kubernetes);
        assert_eq!(m.execution_mode, None);
    }

    #[test]
    fn writes_and_reads_back_on_a_core_module_and_replaces_an_existing_section() {
        let module = wat::parse_str("(module (func (export \"f\")) (memory 1))").unwrap();
        assert_eq!(read_metadata(&module).unwrap(), None);
        let once = write_metadata(&module, &sample()).unwrap();
        assert_eq!(read_metadata(&once).unwrap(), Some(sample()));
        let mut changed = sample();
        changed.mutating = true;
        let twice = write_metadata(&once, &changed).unwrap();
        assert_eq!(read_metadata(&twice).unwrap(), Some(changed));
        let count = top_level_metadata_sections(&twice).unwrap().len();
        assert_eq!(count, 1, "the old section is replaced, not kept");
        wasmtime::wasmparser::Validator::new()
            .validate_all(&twice)
            .unwrap();
    }

    #[test]
    fn works_on_a_component_with_a_nested_module() {
        let component = wat::parse_str(
            "(component (core module (@custom \"io.kubewarden.metadata\" \"{}\") (func)) )",
        )
        .unwrap();
        // The nested module's section is not the component's metadata.
        assert_eq!(read_metadata(&component).unwrap(), None);
        let out = write_metadata(&component, &sample()).unwrap();
        assert_eq!(read_metadata(&out).unwrap(), Some(sample()));
        let mut v = wasmtime::wasmparser::Validator::new_with_features(
            wasmtime::wasmparser::WasmFeatures::all(),
        );
        v.validate_all(&out).unwrap();
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(read_metadata(b"\0asm\x01\0\0\0\x00\xff").is_err());
        let err = read_metadata(b"not wasm at all").unwrap_err().to_string();
        assert!(err.contains("not a WebAssembly module"), "{err}");
        assert!(!err.contains("0x"), "no byte dump: {err}");
    }
}

//! Makes the capability calls its settings list, in order, with the
//! arguments they give, and reports how each ended as one warning: drives
//! every capability import except `net` (a lookup would leave the machine)
//! with any arguments a test or a fuzzer chooses.

use palisade_sdk::host::{crypto, kubernetes, oci, HostError};
use palisade_sdk::log::{self, Level};
use palisade_sdk::{accept, export_policy, Policy, Request, Response};
use serde::Deserialize;

/// One capability call and its arguments.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    Log {
        level: u8,
        message: String,
        fields: Vec<(String, String)>,
    },
    GetResource {
        api_version: String,
        kind: String,
        name: String,
        namespace: Option<String>,
    },
    ListResources {
        api_version: String,
        kind: String,
        namespace: Option<String>,
        label_selector: Option<String>,
        field_selector: Option<String>,
    },
    CanI(String),
    ManifestDigest(String),
    Manifest(String),
    ManifestConfig(String),
    Verify(String),
    IsCertificateTrusted(String),
}

/// The calls to make.
#[derive(Debug, Deserialize)]
pub struct Settings {
    pub calls: Vec<Call>,
}

/// `ok <length>` or the error's kind.
fn outcome(result: Result<String, HostError>) -> String {
    match result {
        Ok(answer) => format!("ok {}", answer.len()),
        Err(HostError::NotGranted(_)) => "not-granted".to_owned(),
        Err(HostError::NotAvailable(_)) => "not-available".to_owned(),
        Err(HostError::Failed(_)) => "failed".to_owned(),
    }
}

/// `ok <field>=<bool>` when the answer is a JSON object with that boolean,
/// else as [`outcome`].
fn decision(result: Result<String, HostError>, field: &str) -> String {
    let value = result.as_ref().ok().and_then(|answer| {
        serde_json::from_str::<serde_json::Value>(answer)
            .ok()?
            .get(field)?
            .as_bool()
    });
    match value {
        Some(value) => format!("ok {field}={value}"),
        None => outcome(result),
    }
}

/// `ok items=<namespace/name>|...` when the answer is a List, else as
/// [`outcome`].
fn items(result: Result<String, HostError>) -> String {
    let names = result.as_ref().ok().and_then(|answer| {
        let list: serde_json::Value = serde_json::from_str(answer).ok()?;
        let names: Vec<String> = list
            .get("items")?
            .as_array()?
            .iter()
            .map(|item| {
                let meta = &item["metadata"];
                match (meta["namespace"].as_str(), meta["name"].as_str()) {
                    (Some(ns), Some(name)) => format!("{ns}/{name}"),
                    (None, Some(name)) => name.to_owned(),
                    _ => "?".to_owned(),
                }
            })
            .collect();
        Some(names.join("|"))
    });
    match names {
        Some(names) => format!("ok items={names}"),
        None => outcome(result),
    }
}

fn call(call: &Call) -> String {
    match call {
        Call::Log {
            level,
            message,
            fields,
        } => {
            let level = match level % 5 {
                0 => Level::Trace,
                1 => Level::Debug,
                2 => Level::Info,
                3 => Level::Warn,
                _ => Level::Error,
            };
            let fields: Vec<(&str, &str)> = fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            log::write_with_fields(level, message, &fields);
            "logged".to_owned()
        }
        Call::GetResource {
            api_version,
            kind,
            name,
            namespace,
        } => outcome(kubernetes::get_resource(
            api_version,
            kind,
            name,
            namespace.as_deref(),
        )),
        Call::ListResources {
            api_version,
            kind,
            namespace,
            label_selector,
            field_selector,
        } => items(kubernetes::list_resources(
            api_version,
            kind,
            namespace.as_deref(),
            label_selector.as_deref(),
            field_selector.as_deref(),
        )),
        // The decisions themselves, for tests of the host's answers.
        Call::CanI(review) => decision(kubernetes::can_i(review), "allowed"),
        Call::ManifestDigest(image) => match oci::manifest_digest(image) {
            Ok(digest) => format!("ok {digest}"),
            failure => outcome(failure),
        },
        Call::Manifest(image) => outcome(oci::manifest(image)),
        // The digest the answer carries.
        Call::ManifestConfig(image) => match oci::manifest_config(image) {
            Ok(answer) => match serde_json::from_str::<serde_json::Value>(&answer) {
                Ok(answer) => format!(
                    "ok {}",
                    answer
                        .get("digest")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("-")
                ),
                Err(_) => format!("ok {}", answer.len()),
            },
            failure => outcome(failure),
        },
        Call::Verify(request) => outcome(oci::verify(request)),
        Call::IsCertificateTrusted(request) => {
            decision(crypto::is_certificate_trusted(request), "trusted")
        }
    }
}

/// The policy.
#[derive(Debug)]
pub struct HostCalls;

impl Policy for HostCalls {
    type Settings = Settings;

    fn validate(_request: &Request, settings: &Settings) -> palisade_sdk::Result<Response> {
        let outcomes: Vec<String> = settings.calls.iter().map(call).collect();
        Ok(accept().with_warning(outcomes.join(", ")))
    }
}

export_policy!(HostCalls);

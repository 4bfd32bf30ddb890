//! A policy written against the upstream `kubewarden-policy-sdk` that calls
//! the host capabilities its settings list, through the SDK's own functions
//! (so with the SDK's payloads and answer types), and reports each answer
//! as one warning: `<call>: <answer as JSON>` or `<call> error: <message>`.
//! It accepts every request. Palisade's tests compare the answers with the
//! shapes Kubewarden documents.

use guest::prelude::*;
use kubewarden_policy_sdk::host_capabilities::crypto::{self, Certificate, CertificateEncoding};
use kubewarden_policy_sdk::host_capabilities::kubernetes::{self, CanIRequest};
use kubewarden_policy_sdk::host_capabilities::oci;
use kubewarden_policy_sdk::response::ValidationResponse;
use kubewarden_policy_sdk::settings::Validatable;
use kubewarden_policy_sdk::wapc_guest as guest;
use kubewarden_policy_sdk::{protocol_version_guest, validate_settings};
use serde::{Deserialize, Serialize};

/// One capability call.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// `oci::get_manifest_digest(image)`.
    ManifestDigest(String),
    /// `crypto::verify_cert` with PEM certificates.
    VerifyCert {
        cert: String,
        chain: Option<Vec<String>>,
        not_after: Option<String>,
    },
    /// `kubernetes::can_i`.
    CanI(CanIRequest),
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub calls: Vec<Call>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

#[derive(Deserialize)]
struct Payload {
    settings: Settings,
}

#[no_mangle]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn pem(text: &str) -> Certificate {
    Certificate {
        encoding: CertificateEncoding::Pem,
        data: text.as_bytes().to_vec(),
    }
}

fn report<T: Serialize, E: std::fmt::Display>(name: &str, answer: Result<T, E>) -> String {
    match answer.map(|a| serde_json::to_string(&a)) {
        Ok(Ok(json)) => format!("{name}: {json}"),
        Ok(Err(e)) => format!("{name} error: {e}"),
        Err(e) => format!("{name} error: {e}"),
    }
}

fn call(call: Call) -> String {
    match call {
        Call::ManifestDigest(image) => report("manifest_digest", oci::get_manifest_digest(&image)),
        Call::VerifyCert {
            cert,
            chain,
            not_after,
        } => report(
            "verify_cert",
            crypto::verify_cert(
                pem(&cert),
                chain.map(|c| c.iter().map(|p| pem(p)).collect()),
                not_after,
            ),
        ),
        Call::CanI(request) => report("can_i", kubernetes::can_i(request)),
    }
}

fn validate(payload: &[u8]) -> CallResult {
    let payload: Payload = serde_json::from_slice(payload)?;
    let warnings = payload.settings.calls.into_iter().map(call).collect();
    Ok(serde_json::to_vec(&ValidationResponse {
        accepted: true,
        message: None,
        code: None,
        mutated_object: None,
        audit_annotations: None,
        warnings: Some(warnings),
    })?)
}

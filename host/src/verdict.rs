//! A policy's decision and the AdmissionResponse built from it.
//!
//! Both ABIs (components and waPC) produce a [`Verdict`]; everything
//! downstream (patches, monitor mode, metrics) works on it alone.

use std::collections::BTreeMap;

use base64::Engine as _;
use kube_core::response::{Status, StatusSummary};
use serde::Serialize;

use crate::bindings::ValidationResponse;

/// Code used for a rejection when the policy sets none.
pub const DEFAULT_REJECTION_CODE: u16 = 400;

/// What a policy decided about one request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    pub accepted: bool,
    pub message: Option<String>,
    pub code: Option<u16>,
    /// The whole object after mutation, as the policy returned it.
    pub mutated_object: Option<serde_json::Value>,
    pub warnings: Vec<String>,
    pub audit_annotations: BTreeMap<String, String>,
}

impl Verdict {
    /// An acceptance without anything else.
    pub fn accept() -> Self {
        Self {
            accepted: true,
            ..Self::default()
        }
    }

    /// A rejection with a message and code.
    pub fn reject(message: impl Into<String>, code: u16) -> Self {
        Self {
            accepted: false,
            message: Some(message.into()),
            code: Some(code),
            ..Self::default()
        }
    }

    pub(crate) fn from_wit(response: ValidationResponse) -> Result<Self, String> {
        let mutated_object = response
            .mutated_object
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| format!("the mutated object is not JSON: {e}"))?;
        Ok(Self {
            accepted: response.accepted,
            message: response.message,
            code: response.code,
            mutated_object,
            warnings: response.warnings,
            audit_annotations: response.audit_annotations.into_iter().collect(),
        })
    }

    /// Builds the AdmissionResponse for this verdict on `request`; the JSON
    /// Patch is the diff between the request's object and the mutated one.
    pub fn into_response(self, request: &crate::PolicyRequest) -> AdmissionResponse {
        self.respond(request.uid(), || request.object())
    }

    /// Builds the response to a raw request; the JSON Patch is the diff
    /// between the whole document and the mutated one.
    pub fn into_raw_response(self, request: &crate::RawRequest) -> AdmissionResponse {
        self.respond(request.uid(), || Some(request.value()))
    }

    /// The response to the request with `uid` whose object `original` gives;
    /// it is only called (the object parsed) when there is a mutation.
    fn respond<'a>(
        self,
        uid: &str,
        original: impl FnOnce() -> Option<&'a serde_json::Value>,
    ) -> AdmissionResponse {
        let mut response = AdmissionResponse {
            allowed: self.accepted,
            audit_annotations: self.audit_annotations,
            warnings: self.warnings,
            ..AdmissionResponse::accepted(uid)
        };
        if !self.accepted {
            response.status = Some(rejection_status(
                self.message.as_deref().unwrap_or("rejected by policy"),
                self.code.unwrap_or(DEFAULT_REJECTION_CODE),
            ));
            return response;
        }
        if let Some(mutated) = self.mutated_object {
            let Some(original) = original() else {
                response.allowed = false;
                response.status = Some(rejection_status(
                    "the policy returned a mutated object for a request that has no object",
                    500,
                ));
                return response;
            };
            let patch = json_patch::diff(original, &mutated);
            if !patch.0.is_empty() {
                match serde_json::to_vec(&patch) {
                    Ok(bytes) => {
                        response.patch_type = Some("JSONPatch");
                        response.patch =
                            Some(base64::engine::general_purpose::STANDARD.encode(bytes));
                    }
                    Err(e) => {
                        response.allowed = false;
                        response.status = Some(rejection_status(
                            &format!("cannot encode the patch: {e}"),
                            500,
                        ));
                    }
                }
            }
        }
        response
    }
}

fn rejection_status(message: &str, code: u16) -> Status {
    Status {
        status: Some(StatusSummary::Failure),
        code,
        message: message.to_owned(),
        ..Status::default()
    }
}

/// An `admission.k8s.io/v1` AdmissionReview answering with `response`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: &'a AdmissionResponse,
}

impl<'a> Review<'a> {
    fn of(response: &'a AdmissionResponse) -> Self {
        Self {
            api_version: "admission.k8s.io/v1",
            kind: "AdmissionReview",
            response,
        }
    }
}

/// The `response` of an AdmissionReview, in the shape the API server and
/// Kubewarden's tooling expect (the patch is base64 text, which kube's own
/// response type does not produce).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Base64 of the JSON Patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The `response` of a raw review (see [`AdmissionResponse::raw_review_json`]).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RawResponse<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<&'a str>,
    audit_annotations: Option<&'a BTreeMap<String, String>>,
    warnings: Option<&'a Vec<String>>,
}

impl AdmissionResponse {
    /// A plain acceptance.
    pub fn accepted(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: true,
            status: None,
            patch_type: None,
            patch: None,
            audit_annotations: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// A rejection with a message and code.
    pub fn rejected(uid: &str, message: &str, code: u16) -> Self {
        Self {
            allowed: false,
            status: Some(rejection_status(message, code)),
            ..Self::accepted(uid)
        }
    }

    /// Wraps the response into an `admission.k8s.io/v1` AdmissionReview.
    pub fn into_review(self) -> serde_json::Value {
        // Strings, numbers and maps with string keys cannot fail to serialize.
        serde_json::to_value(Review::of(&self)).unwrap_or_default()
    }

    /// The AdmissionReview wrapping this response, as the JSON bytes sent
    /// to the API server (serialized directly, without a `Value` in between).
    pub fn review_json(&self) -> Vec<u8> {
        serde_json::to_vec(&Review::of(self)).unwrap_or_default()
    }

    /// The answer to a `/validate_raw` request, as Kubewarden's clients read
    /// it: `{"response": ...}` with `auditAnnotations` and `warnings` always
    /// present (`null` when empty).
    pub fn raw_review_json(&self) -> Vec<u8> {
        let response = RawResponse {
            uid: &self.uid,
            allowed: self.allowed,
            status: self.status.as_ref(),
            patch_type: self.patch_type,
            patch: self.patch.as_deref(),
            audit_annotations: Some(&self.audit_annotations).filter(|a| !a.is_empty()),
            warnings: Some(&self.warnings).filter(|w| !w.is_empty()),
        };
        serde_json::to_vec(&serde_json::json!({ "response": response })).unwrap_or_default()
    }

    /// The decoded JSON Patch, if any.
    pub fn decoded_patch(&self) -> Option<json_patch::Patch> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.patch.as_deref()?)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rejection_has_status_with_default_code() {
        let v = Verdict {
            accepted: false,
            message: Some("no".into()),
            ..Verdict::default()
        };
        let r = serde_json::to_value(v.respond("u", || None)).unwrap();
        assert_eq!(r["allowed"], false);
        assert_eq!(r["status"]["message"], "no");
        assert_eq!(r["status"]["code"], 400);
        assert_eq!(r["uid"], "u");
    }

    #[test]
    fn mutation_becomes_a_base64_json_patch() {
        let original = json!({"spec": {"a": 1}});
        let v = Verdict {
            accepted: true,
            mutated_object: Some(json!({"spec": {"a": 1, "b": true}})),
            ..Verdict::default()
        };
        let r = v.respond("u", || Some(&original));
        assert_eq!(r.patch_type, Some("JSONPatch"));
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &r.decoded_patch().unwrap()).unwrap();
        assert_eq!(patched, json!({"spec": {"a": 1, "b": true}}));
    }

    #[test]
    fn unchanged_mutated_object_gives_no_patch() {
        let original = json!({"spec": {"a": 1}});
        let v = Verdict {
            accepted: true,
            mutated_object: Some(original.clone()),
            ..Verdict::default()
        };
        let r = v.respond("u", || Some(&original));
        assert!(r.patch.is_none() && r.patch_type.is_none());
    }

    #[test]
    fn review_json_is_the_review_value() {
        let mut response = AdmissionResponse::rejected("u", "no", 403);
        response.warnings.push("careful".into());
        let bytes = response.review_json();
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed, response.into_review());
    }

    #[test]
    fn raw_answers_have_kubewardens_shape() {
        let accepted: serde_json::Value =
            serde_json::from_slice(&AdmissionResponse::accepted("").raw_review_json()).unwrap();
        assert_eq!(
            accepted,
            json!({"response": {"uid": "", "allowed": true, "auditAnnotations": null, "warnings": null}})
        );
        let mut rejected = AdmissionResponse::rejected("u", "no", 403);
        rejected.warnings.push("careful".into());
        let rejected: serde_json::Value =
            serde_json::from_slice(&rejected.raw_review_json()).unwrap();
        assert_eq!(rejected["response"]["status"]["message"], "no");
        assert_eq!(rejected["response"]["status"]["code"], 403);
        assert_eq!(rejected["response"]["warnings"], json!(["careful"]));
    }

    #[test]
    fn raw_mutations_are_diffed_against_the_whole_document() {
        let request =
            crate::RawRequest::from_document(r#"{"uid": "r1", "user": "alice"}"#).unwrap();
        let verdict = Verdict {
            accepted: true,
            mutated_object: Some(json!({"uid": "r1", "user": "alice", "action": "read"})),
            ..Verdict::default()
        };
        let response = verdict.into_raw_response(&request);
        assert_eq!(response.uid, "r1");
        assert_eq!(
            serde_json::to_value(response.decoded_patch().unwrap()).unwrap(),
            json!([{"op": "add", "path": "/action", "value": "read"}])
        );
    }

    #[test]
    fn mutation_without_object_is_a_rejection() {
        let v = Verdict {
            accepted: true,
            mutated_object: Some(json!({})),
            ..Verdict::default()
        };
        let r = v.respond("u", || None);
        assert!(!r.allowed);
        assert_eq!(r.status.unwrap().code, 500);
    }
}

//! Every sample policy, built with `cargo component build`, against every
//! fixture it applies to, through the same path the policy-server takes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use common::{fixture, load_default};
use palisade_host::AdmissionResponse;
use serde_json::json;

fn evaluate(policy: &str, settings: serde_json::Value, fixture_name: &str) -> AdmissionResponse {
    let loaded = load_default(policy);
    let settings = settings.to_string();
    loaded.validate_settings(&settings).unwrap();
    let request = fixture(fixture_name);
    let verdict = loaded.validate(&request, &settings).unwrap();
    verdict.into_response(&request)
}

fn assert_verdicts(policy: &str, settings: serde_json::Value, cases: &[(&str, bool)]) {
    for (fixture_name, allowed) in cases {
        let response = evaluate(policy, settings.clone(), fixture_name);
        assert_eq!(
            response.allowed, *allowed,
            "{policy} on {fixture_name}: {:?}",
            response.status
        );
        assert!(!response.uid.is_empty(), "uid is echoed");
    }
}

#[test]
fn pod_privileged() {
    assert_verdicts(
        "pod-privileged",
        json!({}),
        &[
            ("pod-create-privileged.json", false),
            ("pod-create-privileged-init-container.json", false),
            ("pod-update-add-privileged.json", false),
            ("pod-create-unprivileged.json", true),
            ("pod-create-missing-labels.json", true),
            ("pod-create-large.json", true),
            ("pod-delete.json", true),
            ("deployment-create.json", true),
            ("namespace-create.json", true),
        ],
    );
    let r = evaluate(
        "pod-privileged",
        json!({}),
        "pod-create-privileged-init-container.json",
    );
    let status = r.status.unwrap();
    assert_eq!(status.code, 400);
    assert!(status.message.contains("privileged"), "{}", status.message);
}

#[test]
fn required_labels() {
    assert_verdicts(
        "required-labels",
        json!({"labels": ["run"]}),
        &[
            ("pod-create-unprivileged.json", true),
            ("pod-create-missing-labels.json", false),
            ("pod-create-large.json", true),
            ("pod-delete.json", true),
            ("ingress-create.json", false),
        ],
    );
    assert_verdicts(
        "required-labels",
        json!({"labels": [{"key": "owner", "valueRegex": "team-[a-z]+"}]}),
        &[
            ("namespace-create.json", true),
            ("deployment-create.json", false),
        ],
    );
}

#[test]
fn required_labels_settings_validation_runs_in_the_component() {
    let policy = load_default("required-labels");
    let empty = policy.validate_settings(r#"{"labels": []}"#).unwrap_err();
    assert!(
        empty.to_string().contains("at least one required label"),
        "{empty}"
    );
    let regex = policy
        .validate_settings(r#"{"labels": [{"key": "a", "valueRegex": "(unclosed"}]}"#)
        .unwrap_err();
    assert!(regex.to_string().contains("invalid valueRegex"), "{regex}");
    assert!(matches!(
        policy.validate_settings("labels: [a]").unwrap_err(),
        palisade_host::SettingsError::NotJson(_)
    ));
}

#[test]
fn allowed_registries() {
    assert_verdicts(
        "allowed-registries",
        json!({"registries": ["registry.example.com", "ghcr.io/example"]}),
        &[
            ("deployment-create.json", true),
            ("deployment-create-untrusted-registry.json", false),
            ("pod-create-privileged.json", true),
            ("pod-create-unprivileged.json", false),
            ("pod-create-privileged-init-container.json", false),
            ("pod-delete.json", true),
            ("ingress-create.json", true),
        ],
    );
}

#[test]
fn default_security_context_returns_exactly_the_expected_patch() {
    let response = evaluate(
        "default-security-context",
        json!({}),
        "pod-create-unprivileged.json",
    );
    assert!(response.allowed);
    assert_eq!(response.patch_type, Some("JSONPatch"));
    let patch = serde_json::to_value(response.decoded_patch().unwrap()).unwrap();
    assert_eq!(
        patch,
        json!([
            {"op": "add", "path": "/spec/containers/0/securityContext", "value": {"allowPrivilegeEscalation": false}},
            {"op": "add", "path": "/spec/securityContext/runAsNonRoot", "value": true},
        ])
    );
    // Applying the patch gives the policy's object.
    let request = fixture("pod-create-unprivileged.json");
    let mut object = request.object().unwrap().clone();
    json_patch::patch(&mut object, &response.decoded_patch().unwrap()).unwrap();
    assert_eq!(object["spec"]["securityContext"]["runAsNonRoot"], true);
}

#[test]
fn default_security_context_leaves_deletes_and_other_kinds_alone() {
    for name in [
        "pod-delete.json",
        "deployment-create.json",
        "namespace-create.json",
    ] {
        let response = evaluate("default-security-context", json!({}), name);
        assert!(response.allowed, "{name}");
        assert!(response.patch.is_none(), "{name} must not be patched");
    }
}

#[test]
fn response_serialises_in_the_admission_review_shape() {
    let review = evaluate("pod-privileged", json!({}), "pod-create-privileged.json").into_review();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(review["response"]["status"]["code"], 400);
    let patched = evaluate(
        "default-security-context",
        json!({}),
        "pod-create-unprivileged.json",
    )
    .into_review();
    assert_eq!(patched["response"]["patchType"], "JSONPatch");
    assert!(
        patched["response"]["patch"].is_string(),
        "patch is base64 text"
    );
}

#[test]
fn metadata_is_read_from_the_annotated_component() {
    let policy = load_default("default-security-context");
    let metadata = policy.metadata().expect("annotated by the build");
    assert!(metadata.mutating);
    assert_eq!(metadata.rules[0].resources, ["pods"]);
    let pod_privileged = load_default("pod-privileged");
    assert!(!pod_privileged.metadata().unwrap().mutating);
}

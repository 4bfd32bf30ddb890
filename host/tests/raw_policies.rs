//! Raw policies on `/validate_raw`, over HTTPS: the component sample (the
//! `raw-policy` world, written with the SDK) and the same policy written
//! with the upstream Kubewarden SDK (waPC) answer alike, in Kubewarden's
//! wire format.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use base64::Engine as _;
use common::server::{client, get_text, https_server, post, post_fixture};
use serde_json::{json, Value};

const POLICIES: &str = r#"
raw-component:
  module: file://{POLICIES}/raw-access.wasm
  allowedToMutate: true
  settings: {allowedUsers: [alice, bob], allowedActions: [read, write], defaultAction: read}
raw-wapc:
  module: file://{POLICIES}/raw-access-wapc.wasm
  allowedToMutate: true
  settings: {allowedUsers: [alice, bob], allowedActions: [read, write], defaultAction: read}
raw-no-mutation:
  module: file://{POLICIES}/raw-access.wasm
  settings: {allowedUsers: [alice], allowedActions: [read], defaultAction: read}
raw-monitor:
  module: file://{POLICIES}/raw-access.wasm
  policyMode: monitor
  settings: {allowedUsers: [alice], allowedActions: [read]}
raw-message:
  module: file://{POLICIES}/raw-access.wasm
  message: "ask an administrator"
  settings: {allowedUsers: [alice], allowedActions: [read]}
kubernetes:
  module: file://{POLICIES}/pod-privileged.wasm
"#;

async fn ask(c: &reqwest::Client, base: &str, policy: &str, document: Value) -> Value {
    let body = serde_json::to_vec(&json!({ "request": document })).unwrap();
    let (status, answer) = post(c, &format!("{base}/validate_raw/{policy}"), body).await;
    assert_eq!(status, 200, "{policy}: {answer}");
    answer
}

fn patched(document: &Value, response: &Value) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut document = document.clone();
    json_patch::patch(&mut document, &patch).unwrap();
    document
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_policies_accept_reject_and_mutate_documents() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    for policy in ["raw-component", "raw-wapc"] {
        let accepted = ask(
            &c,
            &t.base,
            policy,
            json!({"uid": "r-1", "user": "alice", "action": "write", "resource": "orders"}),
        )
        .await;
        assert_eq!(
            accepted,
            json!({"response": {"uid": "r-1", "allowed": true, "auditAnnotations": null, "warnings": null}}),
            "{policy}"
        );

        let rejected = ask(
            &c,
            &t.base,
            policy,
            json!({"user": "mallory", "action": "read", "resource": "orders"}),
        )
        .await;
        let response = &rejected["response"];
        assert_eq!(response["uid"], "", "{policy}: no uid in the document");
        assert_eq!(response["allowed"], false, "{policy}");
        assert_eq!(response["status"]["code"], 403, "{policy}");
        assert_eq!(
            response["status"]["message"], "user mallory may not access orders",
            "{policy}"
        );

        let document =
            json!({"uid": "r-2", "user": "bob", "resource": "orders", "note": {"ticket": 7}});
        let mutated = ask(&c, &t.base, policy, document.clone()).await;
        let response = &mutated["response"];
        assert_eq!(response["allowed"], true, "{policy}");
        assert_eq!(response["patchType"], "JSONPatch", "{policy}");
        assert_eq!(
            patched(&document, response),
            json!({"uid": "r-2", "user": "bob", "action": "read", "resource": "orders", "note": {"ticket": 7}}),
            "{policy}: the patch applies to the whole document"
        );
    }
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_component_and_the_upstream_sdk_policy_answer_alike() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    let users = ["alice", "bob", "mallory"];
    let actions = [Some("read"), Some("write"), Some("delete"), None];
    let mut compared = 0;
    for (i, user) in users.iter().enumerate() {
        for (j, action) in actions.iter().enumerate() {
            let mut document =
                json!({"uid": format!("u-{i}-{j}"), "user": user, "resource": format!("r{j}")});
            if let Some(action) = action {
                document["action"] = json!(action);
            }
            let component = ask(&c, &t.base, "raw-component", document.clone()).await;
            let wapc = ask(&c, &t.base, "raw-wapc", document.clone()).await;
            assert_eq!(component, wapc, "{document}");
            compared += 1;
        }
    }
    assert_eq!(compared, 12);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_settings_apply_to_raw_requests() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    let without_action = json!({"user": "alice", "resource": "orders"});
    let banned = ask(&c, &t.base, "raw-no-mutation", without_action).await;
    assert_eq!(banned["response"]["allowed"], false);
    assert!(banned["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("configured to not allow mutations"));
    assert!(banned["response"].get("patch").is_none());

    let stranger = json!({"user": "mallory", "action": "read", "resource": "orders"});
    let monitored = ask(&c, &t.base, "raw-monitor", stranger.clone()).await;
    assert_eq!(monitored["response"]["allowed"], true);

    let custom = ask(&c, &t.base, "raw-message", stranger).await;
    let status = &custom["response"]["status"];
    assert_eq!(status["message"], "ask an administrator");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "user mallory may not access orders"
    );

    let metrics = get_text(format!("{}/metrics", t.probe)).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("palisade_policy_evaluations_total{")
                && l.contains(r#"policy_name="raw-monitor""#)
                && l.contains(r#"request_origin="validate_raw""#)),
        "{metrics}"
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_the_wrong_kind_are_refused_with_the_reason() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    let document = json!({"user": "alice", "action": "read", "resource": "orders"});

    // A Kubernetes component cannot read a raw document...
    let answer = ask(&c, &t.base, "kubernetes", document).await;
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(answer["response"]["status"]["code"], 500);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("Kubernetes policy") && message.contains("/validate"),
        "{message}"
    );

    // ...nor a raw component an admission request.
    let (status, review) = post_fixture(
        &c,
        &format!("{}/validate/raw-component", t.base),
        "pod-create-unprivileged.json",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["allowed"], false);
    let message = review["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("raw policy") && message.contains("/validate_raw"),
        "{message}"
    );

    // A body that is not `{"request": ...}` is the client's error.
    for body in [&b"{"[..], br#"{"req": {}}"#, b"[1]"] {
        let (status, error) = post(
            &c,
            &format!("{}/validate_raw/raw-component", t.base),
            body.to_vec(),
        )
        .await;
        assert_eq!(status, 400, "{error}");
        assert!(
            error["error"]
                .as_str()
                .unwrap()
                .contains(r#"{"request": <JSON>}"#),
            "{error}"
        );
    }
    t.server.shutdown().await;
}

//! The policy-server over real HTTPS with a real client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::time::Duration;

use base64::Engine as _;
use common::fixture;
use common::server::{client, https_server, post, post_fixture, write_policies};
use serde_json::{json, Value};

const POLICIES: &str = r#"
privileged:
  module: file://{POLICIES}/pod-privileged.wasm
privileged-monitor:
  module: file://{POLICIES}/pod-privileged.wasm
  policyMode: monitor
labels:
  module: file://{POLICIES}/required-labels.wasm
  settings: {labels: [run]}
labels-monitor:
  module: file://{POLICIES}/required-labels.wasm
  policyMode: monitor
  settings: {labels: [run]}
registries:
  module: file://{POLICIES}/allowed-registries.wasm
  settings: {registries: [registry.example.com, ghcr.io/example]}
registries-monitor:
  module: file://{POLICIES}/allowed-registries.wasm
  policyMode: monitor
  settings: {registries: [registry.example.com, ghcr.io/example]}
mutate:
  module: file://{POLICIES}/default-security-context.wasm
  allowedToMutate: true
mutate-monitor:
  module: file://{POLICIES}/default-security-context.wasm
  allowedToMutate: true
  policyMode: monitor
mutate-banned:
  module: file://{POLICIES}/default-security-context.wasm
custom-message:
  module: file://{POLICIES}/pod-privileged.wasm
  message: "Privileged pods are not welcome here"
loop:
  module: file://{POLICIES}/endless-loop.wasm
  timeoutEvalSeconds: 1
alloc:
  module: file://{POLICIES}/unbounded-alloc.wasm
panics:
  module: file://{POLICIES}/panics.wasm
group-and-not:
  expression: "labels() && !privileged()"
  message: "labelled and unprivileged pods only"
  policies:
    labels: {module: "file://{POLICIES}/required-labels.wasm", settings: {labels: [run]}}
    privileged: {module: "file://{POLICIES}/required-labels.wasm", settings: {labels: [never-set]}}
group-or:
  expression: "privileged() || registries()"
  message: "neither unprivileged nor from a trusted registry"
  policies:
    privileged: {module: "file://{POLICIES}/pod-privileged.wasm"}
    registries: {module: "file://{POLICIES}/allowed-registries.wasm", settings: {registries: [registry.example.com]}}
"#;

const FIXTURES: &[&str] = &[
    "deployment-create-untrusted-registry.json",
    "deployment-create.json",
    "ingress-create.json",
    "namespace-create.json",
    "pod-create-large.json",
    "pod-create-missing-labels.json",
    "pod-create-privileged-init-container.json",
    "pod-create-privileged.json",
    "pod-create-unprivileged.json",
    "pod-delete.json",
    "pod-update-add-privileged.json",
];

/// Expected `allowed` of each fixture, in the order of `FIXTURES`.
fn expected(policy: &str) -> [bool; 11] {
    match policy {
        "privileged" => [
            true, true, true, true, true, true, false, false, true, true, false,
        ],
        "labels" => [
            false, false, false, false, true, false, true, true, true, true, true,
        ],
        "registries" => [
            false, true, true, true, true, false, false, true, false, true, true,
        ],
        _ => unreachable!(),
    }
}

fn uid_of(fixture_name: &str) -> String {
    fixture(fixture_name).uid().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_gets_the_right_response_in_protect_and_monitor_mode() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    for policy in ["privileged", "labels", "registries"] {
        for (fixture_name, allowed) in FIXTURES.iter().zip(expected(policy)) {
            let (status, body) =
                post_fixture(&c, &format!("{}/validate/{policy}", t.base), fixture_name).await;
            assert_eq!(status, 200);
            assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(body["kind"], "AdmissionReview");
            let response = &body["response"];
            assert_eq!(response["uid"], uid_of(fixture_name), "uid echoed");
            assert_eq!(
                response["allowed"], allowed,
                "{policy} on {fixture_name}: {response}"
            );
            if !allowed {
                assert_eq!(response["status"]["code"], 400);
                // Each policy says what it found: privileged containers,
                // missing labels, images from registries not allowed.
                let message = response["status"]["message"].as_str().unwrap();
                let says = match policy {
                    "privileged" => "privileged",
                    "labels" => "label",
                    _ => "registr",
                };
                assert!(
                    message.contains(says),
                    "{policy} on {fixture_name}: {message}"
                );
            }
            // Monitor mode admits everything and carries no status.
            let (_, monitored) = post_fixture(
                &c,
                &format!("{}/validate/{policy}-monitor", t.base),
                fixture_name,
            )
            .await;
            assert_eq!(
                monitored["response"]["allowed"], true,
                "{policy}-monitor on {fixture_name}"
            );
            assert!(monitored["response"].get("status").is_none());
            // The audit endpoint gives the raw verdict, even in monitor mode.
            let (_, audited) = post_fixture(
                &c,
                &format!("{}/audit/{policy}-monitor", t.base),
                fixture_name,
            )
            .await;
            assert_eq!(
                audited["response"]["allowed"], allowed,
                "audit {policy}-monitor on {fixture_name}"
            );
        }
    }
    // Monitor-mode rejections are counted with the real verdict.
    let metrics = common::server::get_text(format!("{}/metrics", t.probe)).await;
    assert!(
        metrics.contains(r#"policy_name="privileged-monitor",policy_mode="monitor",request_operation="CREATE",resource_kind="Pod",accepted="false""#),
        "{metrics}"
    );
    assert!(metrics.contains("palisade_policy_evaluation_latency_seconds_bucket"));
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_are_patches_and_obey_mode_and_permission() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    for fixture_name in [
        "pod-create-unprivileged.json",
        "pod-create-privileged-init-container.json",
    ] {
        let (_, body) =
            post_fixture(&c, &format!("{}/validate/mutate", t.base), fixture_name).await;
        let response = &body["response"];
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let patch_bytes = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&patch_bytes).unwrap();
        let mut object = fixture(fixture_name).object().unwrap().clone();
        json_patch::patch(&mut object, &patch).unwrap();
        assert_eq!(object["spec"]["securityContext"]["runAsNonRoot"], true);
        for container in object["spec"]["containers"].as_array().unwrap() {
            assert_eq!(
                container["securityContext"]["allowPrivilegeEscalation"],
                false
            );
        }

        let (_, monitored) = post_fixture(
            &c,
            &format!("{}/validate/mutate-monitor", t.base),
            fixture_name,
        )
        .await;
        assert_eq!(monitored["response"]["allowed"], true);
        assert!(
            monitored["response"].get("patch").is_none(),
            "monitor drops the patch"
        );

        let (_, banned) = post_fixture(
            &c,
            &format!("{}/validate/mutate-banned", t.base),
            fixture_name,
        )
        .await;
        assert_eq!(banned["response"]["allowed"], false);
        assert!(banned["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("configured to not allow mutations"));
    }
    // Nothing to change: no patch even where mutation is banned.
    let (_, delete) = post_fixture(
        &c,
        &format!("{}/validate/mutate-banned", t.base),
        "pod-delete.json",
    )
    .await;
    assert_eq!(delete["response"]["allowed"], true);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_message_replaces_the_policy_message_which_becomes_a_cause() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    let (_, body) = post_fixture(
        &c,
        &format!("{}/validate/custom-message", t.base),
        "pod-create-privileged.json",
    )
    .await;
    let status = &body["response"]["status"];
    assert_eq!(status["message"], "Privileged pods are not welcome here");
    assert_eq!(
        status["details"]["causes"][0]["message"],
        "privileged containers are not allowed: tools"
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_groups_give_the_right_verdict_and_causes() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    let url = |id: &str| format!("{}/validate/{id}", t.base);

    // labels() && !privileged(): `privileged` here is a required-labels member that always rejects.
    let (_, ok) = post_fixture(&c, &url("group-and-not"), "pod-create-unprivileged.json").await;
    assert_eq!(ok["response"]["allowed"], true, "{ok}");
    let (_, no) = post_fixture(&c, &url("group-and-not"), "pod-create-missing-labels.json").await;
    let status = &no["response"]["status"];
    assert_eq!(no["response"]["allowed"], false);
    assert_eq!(status["message"], "labelled and unprivileged pods only");
    let causes = status["details"]["causes"].as_array().unwrap();
    assert_eq!(
        causes.len(),
        1,
        "short-circuit: only `labels` ran: {causes:?}"
    );
    assert_eq!(causes[0]["field"], "spec.policies.labels");
    assert!(causes[0]["message"]
        .as_str()
        .unwrap()
        .contains("missing label `run`"));

    // privileged() || registries()
    let (_, privileged_trusted) =
        post_fixture(&c, &url("group-or"), "pod-create-privileged.json").await;
    assert_eq!(
        privileged_trusted["response"]["allowed"], false,
        "ghcr.io is not in this group's list"
    );
    let causes: Vec<&str> = privileged_trusted["response"]["status"]["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        causes,
        ["spec.policies.privileged", "spec.policies.registries"]
    );
    let (_, unprivileged) =
        post_fixture(&c, &url("group-or"), "pod-create-unprivileged.json").await;
    assert_eq!(unprivileged["response"]["allowed"], true);
    let (_, deployment) = post_fixture(&c, &url("group-or"), "deployment-create.json").await;
    assert_eq!(deployment["response"]["allowed"], true);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_http_errors() {
    let t = https_server(POLICIES, |o, _| o.max_body_bytes = 2 << 20).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    let url = format!("{}/validate/privileged", t.base);
    let (status, body) = post(&c, &url, b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not an AdmissionReview"),
        "{body}"
    );
    let (status, body) = post(
        &c,
        &url,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("no `request`"),
        "{body}"
    );
    let (status, _) = post(&c, &url, vec![b' '; 3 << 20]).await;
    assert_eq!(status, 413);
    let (status, body) =
        post_fixture(&c, &format!("{}/validate/nope", t.base), "pod-delete.json").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nope"));
    // The 800 KB pod with its old copy fits the default limit.
    let (status, _) = post_fixture(&c, &url, "pod-create-large.json").await;
    assert_eq!(status, 200);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_and_allocating_policies_are_rejected_cleanly_while_others_are_served() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    let slow = {
        let c = c.clone();
        let url = format!("{}/validate/loop", t.base);
        tokio::spawn(async move { post_fixture(&c, &url, "pod-create-unprivileged.json").await })
    };
    let alloc = {
        let c = c.clone();
        let url = format!("{}/validate/alloc", t.base);
        tokio::spawn(async move { post_fixture(&c, &url, "pod-create-unprivileged.json").await })
    };
    // Meanwhile, other requests are answered.
    for _ in 0..20 {
        let (status, body) = post_fixture(
            &c,
            &format!("{}/validate/privileged", t.base),
            "pod-create-privileged.json",
        )
        .await;
        assert_eq!(
            (status, body["response"]["allowed"].clone()),
            (200, Value::Bool(false))
        );
    }
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 500);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("exceeded its time limit"),
        "{body}"
    );
    let (status, body) = alloc.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["response"]["status"]["code"], 500);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("memory limit"),
        "{body}"
    );
    // A guest that panics writes to stderr through WASI first.
    let (status, body) = post_fixture(
        &c,
        &format!("{}/validate/panics", t.base),
        "pod-create-unprivileged.json",
    )
    .await;
    assert_eq!(
        (status, body["response"]["status"]["code"].clone()),
        (200, 500.into())
    );
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("index out of bounds"),
        "{body}"
    );
    let metrics = common::server::get_text(format!("{}/metrics", t.probe)).await;
    assert!(
        metrics.contains(r#"policy_name="loop""#) && metrics.contains(r#"error="timeout""#),
        "{metrics}"
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_are_both_served() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let pem = t.ca.as_ref().unwrap().pem();
    let url = format!("{}/validate/privileged", t.base);
    let body = std::fs::read(common::fixture_path("pod-create-privileged.json")).unwrap();
    let h2 = common::server::client_builder(&pem).build().unwrap();
    let response = h2.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let h1 = common::server::client_builder(&pem)
        .http1_only()
        .build()
        .unwrap();
    let response = h1.post(&url).body(body).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_clients_without_a_certificate() {
    let client_ca = common::pki::TestCa::new("client CA");
    let t = https_server(POLICIES, |o, dir| {
        std::fs::write(dir.join("client-ca.crt"), client_ca.pem()).unwrap();
        o.tls.as_mut().unwrap().client_ca = Some(dir.join("client-ca.crt"));
    })
    .await;
    let pem = t.ca.as_ref().unwrap().pem();
    let url = format!("{}/validate/privileged", t.base);
    let anonymous = client(&pem);
    assert!(
        anonymous.post(&url).body("{}").send().await.is_err(),
        "no client certificate, no answer"
    );

    let (cert, key) = client_ca.leaf("kube-apiserver");
    let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap();
    let authenticated = common::server::client_builder(&pem)
        .identity(identity)
        .build()
        .unwrap();
    let (status, _) = post_fixture(&authenticated, &url, "pod-delete.json").await;
    assert_eq!(status, 200);

    let stranger_ca = common::pki::TestCa::new("someone else");
    let (cert, key) = stranger_ca.leaf("intruder");
    let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap();
    let stranger = common::server::client_builder(&pem)
        .identity(identity)
        .build()
        .unwrap();
    assert!(stranger.post(&url).body("{}").send().await.is_err());
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_are_picked_up_without_restart() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let url = format!("{}/validate/privileged", t.base);
    let old_client = client(&t.ca.as_ref().unwrap().pem());
    let (status, _) = post_fixture(&old_client, &url, "pod-delete.json").await;
    assert_eq!(status, 200);

    let new_ca = common::pki::TestCa::new("rotated CA");
    let (cert, key) = new_ca.leaf("policy-server");
    std::fs::write(t.dir.path().join("tls.key.new"), key).unwrap();
    std::fs::write(t.dir.path().join("tls.crt.new"), cert).unwrap();
    std::fs::rename(
        t.dir.path().join("tls.key.new"),
        t.dir.path().join("tls.key"),
    )
    .unwrap();
    std::fs::rename(
        t.dir.path().join("tls.crt.new"),
        t.dir.path().join("tls.crt"),
    )
    .unwrap();

    let new_client = client(&new_ca.pem());
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if new_client.post(&url).body("{}").send().await.is_ok() {
            served = true;
            break;
        }
    }
    assert!(served, "the new certificate was never served");
    // New connections from clients trusting only the old CA now fail.
    assert!(client(&t.ca.as_ref().unwrap().pem())
        .post(&url)
        .body("{}")
        .send()
        .await
        .is_err());
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_policies_file_swaps_policies_without_failing_requests() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    let url = format!("{}/validate/privileged", t.base);
    let hammer = {
        let c = c.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let mut verdicts = Vec::new();
            for _ in 0..200 {
                let (status, body) = post_fixture(&c, &url, "pod-create-privileged.json").await;
                assert_eq!(status, 200, "{body}");
                verdicts.push(body["response"]["allowed"].as_bool().unwrap());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            verdicts
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The same id now points at a monitor-mode policy.
    write_policies(
        t.dir.path(),
        "privileged:\n  module: file://{POLICIES}/pod-privileged.wasm\n  policyMode: monitor\n",
    );
    let verdicts = hammer.await.unwrap();
    assert_eq!(verdicts.first(), Some(&false), "old set at first");
    assert_eq!(verdicts.last(), Some(&true), "new set in the end");
    let (status, _) = post_fixture(
        &c,
        &format!("{}/validate/labels", t.base),
        "pod-delete.json",
    )
    .await;
    assert_eq!(status, 404, "policies absent from the new file are gone");

    // A broken file is refused and the current set keeps serving.
    write_policies(
        t.dir.path(),
        "privileged:\n  module: file:///nonexistent.wasm\n",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = post_fixture(&c, &url, "pod-create-privileged.json").await;
    assert_eq!(
        (status, body["response"]["allowed"].clone()),
        (200, json!(true))
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_accepted_namespace_skips_evaluation() {
    let t = https_server(POLICIES, |o, _| {
        o.always_accept_namespace = Some("default".into())
    })
    .await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    let (_, body) = post_fixture(
        &c,
        &format!("{}/validate/privileged", t.base),
        "pod-create-privileged.json",
    )
    .await;
    assert_eq!(body["response"]["allowed"], true);
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_fail_startup_or_reject_per_continue_on_errors() {
    let yaml = "bad:\n  module: file://{POLICIES}/required-labels.wasm\n  settings: {labels: []}\n";
    let dir = tempfile::tempdir().unwrap();
    let policies = write_policies(dir.path(), yaml);
    let options = common::server::options(dir.path(), policies);
    let err = palisade_host::server::start(options.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("at least one required label"),
        "{err}"
    );

    let t = https_server(yaml, |o, _| o.load.continue_on_errors = true).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    let (status, body) =
        post_fixture(&c, &format!("{}/validate/bad", t.base), "pod-delete.json").await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], false);
    assert_eq!(body["response"]["status"]["code"], 500);
    assert!(body["response"]["status"]["message"]
        .as_str()
        .unwrap()
        .contains("failed to initialise"));
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfetchable_modules_and_bad_expressions_are_startup_errors() {
    for (yaml, expected) in [
        ("p:\n  module: ftp://127.0.0.1/y.wasm\n", "not a supported module scheme"),
        ("p:\n  module: registry://127.0.0.1:1/x/y:1\n", "cannot connect"),
        ("p:\n  module: file:///nonexistent/y.wasm\n", "file not found"),
        (
            "g:\n  expression: \"a() and b()\"\n  message: m\n  policies:\n    a: {module: \"file://{POLICIES}/pod-privileged.wasm\"}\n",
            "invalid expression",
        ),
        (
            "g:\n  expression: \"a() || c()\"\n  message: m\n  policies:\n    a: {module: \"file://{POLICIES}/pod-privileged.wasm\"}\n",
            "`c()`",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let policies = write_policies(dir.path(), yaml);
        let err = palisade_host::server::start(common::server::options(dir.path(), policies))
            .await
            .unwrap_err();
        assert!(err.to_string().contains(expected), "{yaml}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_endpoint() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let ready = common::server::get(format!("{}/readiness", t.probe))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    t.server.shutdown().await;
}

const LEGACY: &str = r#"
wapc-wasip1:
  module: file://{POLICIES}/pod-privileged-wapc-wasip1.wasm
wapc-unknown:
  module: file://{POLICIES}/pod-privileged-wapc-unknown.wasm
wasi:
  module: file://{POLICIES}/pod-privileged-wasi.wasm
wapc-mutate:
  module: file://{POLICIES}/pod-privileged-wapc-wasip1.wasm
  allowedToMutate: true
  settings: {add_label: {key: owner, value: team-a}}
wapc-resolve:
  module: file://{POLICIES}/pod-privileged-wapc-unknown.wasm
  settings: {resolve: localhost}
  hostCapabilities: ["net/*"]
mixed-group:
  expression: "component() && wapc()"
  message: "both must accept"
  policies:
    component: {module: "file://{POLICIES}/pod-privileged.wasm"}
    wapc: {module: "file://{POLICIES}/pod-privileged-wapc-wasip1.wasm"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_kubewarden_policies_are_served_unchanged() {
    let t = https_server(LEGACY, |_, _| {}).await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    for id in ["wapc-wasip1", "wapc-unknown", "wasi", "mixed-group"] {
        for (fixture_name, allowed) in FIXTURES.iter().zip(expected("privileged")) {
            let (status, body) =
                post_fixture(&c, &format!("{}/validate/{id}", t.base), fixture_name).await;
            assert_eq!(status, 200);
            assert_eq!(
                body["response"]["allowed"], allowed,
                "{id} on {fixture_name}: {body}"
            );
            assert_eq!(body["response"]["uid"], uid_of(fixture_name));
        }
    }
    let (_, body) = post_fixture(
        &c,
        &format!("{}/validate/wapc-mutate", t.base),
        "pod-create-unprivileged.json",
    )
    .await;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(body["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut object = fixture("pod-create-unprivileged.json")
        .object()
        .unwrap()
        .clone();
    json_patch::patch(&mut object, &patch).unwrap();
    assert_eq!(object["metadata"]["labels"]["owner"], "team-a");
    let (_, body) = post_fixture(
        &c,
        &format!("{}/validate/wapc-resolve", t.base),
        "pod-delete.json",
    )
    .await;
    assert!(
        body["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{body}"
    );
    t.server.shutdown().await;

    let bad = "bad:\n  module: file://{POLICIES}/pod-privileged-wapc-wasip1.wasm\n  settings: {add_label: {key: '', value: x}}\n";
    let dir = tempfile::tempdir().unwrap();
    let policies = write_policies(dir.path(), bad);
    let err = palisade_host::server::start(common::server::options(dir.path(), policies))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("add_label.key must not be empty"),
        "{err}"
    );
}

/// After SIGTERM the server keeps answering for the drain delay, reports
/// not ready, and closes each HTTP/1.1 connection after its response (so
/// the API server's next request dials a replica that stays); then it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_still_answers_but_sends_clients_elsewhere() {
    let t = https_server(POLICIES, |_, _| {}).await;
    let http1 = common::server::client_builder(&t.ca.as_ref().unwrap().pem())
        .http1_only()
        .build()
        .unwrap();
    let url = format!("{}/validate/privileged", t.base);
    let before = http1
        .post(&url)
        .body(std::fs::read(common::fixture_path("pod-create-privileged.json")).unwrap())
        .send()
        .await
        .unwrap();
    assert!(before.headers().get("connection").is_none());
    assert_eq!(
        common::server::get(format!("{}/readiness", t.probe))
            .await
            .unwrap()
            .status(),
        200
    );

    let (base, probe) = (t.base.clone(), t.probe.clone());
    let stopping = tokio::spawn(t.server.drain_and_shutdown(Duration::from_secs(2)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = http1
        .post(&url)
        .body(std::fs::read(common::fixture_path("pod-create-privileged.json")).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(during.headers().get("connection").unwrap(), "close");
    let body: serde_json::Value = during.json().await.unwrap();
    assert_eq!(
        body["response"]["allowed"], false,
        "still evaluated: {body}"
    );
    assert_eq!(
        common::server::get(format!("{probe}/readiness"))
            .await
            .unwrap()
            .status(),
        503
    );
    stopping.await.unwrap();
    assert!(
        http1
            .post(format!("{base}/validate/privileged"))
            .send()
            .await
            .is_err(),
        "the server still accepts after the drain"
    );
}

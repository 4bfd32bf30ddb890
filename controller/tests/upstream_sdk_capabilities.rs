//! A waPC policy built with the upstream `kubewarden-policy-sdk`
//! (`sample-policies/legacy/host-capabilities-wapc`) calls
//! `get_manifest_digest`, `verify_cert` and `can_i` through the SDK's own
//! functions, served by the policy-server over HTTPS against a loopback
//! registry and a real API server: it gets the answers Kubewarden documents,
//! in the SDK's own types.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::sync::Arc;

use common::pki::TestCa;
use common::registry::{Registry, RegistryOptions};
use common::server::{client, https_server, post_fixture};
use palisade_host::fetch::{Fetcher, FetcherOptions};
use palisade_host::{KubernetesAccess, OciAccess};
use serde_json::{json, Value};

fn can_i(verb: &str) -> Value {
    json!({
        "subject_access_review": {
            "groups": null,
            "user": "system:serviceaccount:default:alice",
            "resource_attributes": {"group": null, "name": null, "namespace": "team",
                "resource": "pods", "subresource": null, "verb": verb, "version": null},
        },
        "disable_cache": false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sdk_capability_calls_get_kubewardens_answers() {
    let cluster = common::ApiServer::start().await;
    let kube_client = cluster.client();
    cluster
        .client_as_service_account(
            "default",
            "alice",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]),
        )
        .await;

    let registry = Registry::start(RegistryOptions::default());
    let store = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(FetcherOptions {
        store_dir: store.path().to_owned(),
        sources: serde_yaml::from_str(&registry.sources_yaml()).unwrap(),
        credentials: Default::default(),
        max_module_bytes: None,
    })
    .unwrap();
    let image = format!("{}/images/app:v1", registry.host);
    let module = std::fs::read(common::policy_path("pod-privileged")).unwrap();
    let pinned = fetcher.push(&module, &image).await.unwrap();
    let (_, digest) = pinned.split_once('@').unwrap();

    let ca = TestCa::new("certificates CA");
    let (leaf, _) = ca.leaf("workload");
    let stranger = TestCa::new("another CA");
    let calls = json!({"calls": [
        {"manifest_digest": image},
        {"manifest_digest": format!("{}/images/missing:v1", registry.host)},
        {"verify_cert": {"cert": leaf, "chain": [ca.pem()], "not_after": null}},
        {"verify_cert": {"cert": leaf, "chain": [stranger.pem()], "not_after": null}},
        {"verify_cert": {"cert": leaf, "chain": [ca.pem()], "not_after": "1970-01-01T00:00:00Z"}},
        {"can_i": can_i("create")},
        {"can_i": can_i("delete")},
    ]});
    let policies = format!(
        "upstream:\n  module: file://{{POLICIES}}/host-capabilities-wapc.wasm\n  settings: {calls}\n  hostCapabilities: [oci/v1/manifest_digest, crypto/v1/is_certificate_trusted, kubernetes/can_i]\n"
    );
    let runtime = tokio::runtime::Handle::current();
    let t = https_server(&policies, |options, _| {
        options.load.kubernetes = Some(Arc::new(KubernetesAccess::new(
            kube_client.clone(),
            runtime.clone(),
        )));
        options.load.oci = Some(Arc::new(OciAccess::new(fetcher.clone(), runtime.clone())));
    })
    .await;
    let c = client(&t.ca.as_ref().unwrap().pem());
    let (status, review) = post_fixture(
        &c,
        &format!("{}/validate/upstream", t.base),
        "pod-create-unprivileged.json",
    )
    .await;
    assert_eq!(status, 200, "{review}");
    assert_eq!(review["response"]["allowed"], true, "{review}");
    let warnings: Vec<&str> = review["response"]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 7, "{warnings:?}");

    // oci/v1/manifest_digest: `{"digest": ...}`, the digest the registry gave the push.
    assert_eq!(
        warnings[0],
        format!(r#"manifest_digest: {{"digest":"{digest}"}}"#)
    );
    assert!(
        warnings[1].starts_with("manifest_digest error: "),
        "{}",
        warnings[1]
    );
    // crypto/v1/is_certificate_trusted, through the SDK's BoolWithReason.
    assert_eq!(warnings[2], r#"verify_cert: "True""#);
    assert_eq!(
        warnings[3],
        r#"verify_cert: {"False":"Certificate not trusted: Certificate is not trusted by the provided cert chain"}"#
    );
    assert_eq!(
        warnings[4],
        r#"verify_cert: {"False":"Certificate not trusted: Certificate is being used before its validity date"}"#
    );
    // kubernetes/can_i: the SubjectAccessReviewStatus of the API server's RBAC.
    let status = |warning: &str| -> Value {
        serde_json::from_str(warning.strip_prefix("can_i: ").unwrap()).unwrap()
    };
    assert_eq!(status(warnings[5])["allowed"], true, "{}", warnings[5]);
    assert_eq!(status(warnings[6])["allowed"], false, "{}", warnings[6]);
    t.server.shutdown().await;
}

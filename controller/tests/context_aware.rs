//! Context-aware policies against a real API server: the policy-server's
//! `kubernetes` capability reads the Namespace of the object under
//! admission, only for the resource types the policy declared in
//! `contextAwareResources`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::sync::Arc;

use palisade_host::KubernetesAccess;
use serde_json::json;

fn review(namespace: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("uid-{namespace}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "p", "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace},
                       "spec": {"containers": [{"name": "app", "image": "nginx"}]}},
        }
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_read_the_cluster_only_for_the_resources_they_declared() {
    let server = common::ApiServer::start().await;
    let client = server.client();
    for (name, labels) in [("labelled", json!({"team": "a"})), ("bare", json!({}))] {
        common::create_namespace(&client, name, labels).await;
    }

    let module = common::policy_path("namespace-labels");
    let dir = tempfile::tempdir().unwrap();
    let policies = common::server::write_policies(
        dir.path(),
        &format!(
            "declared:\n  module: file://{0}\n  settings: {{labels: [team]}}\n  hostCapabilities: [kubernetes/get_resource]\n  contextAwareResources:\n  - {{apiVersion: v1, kind: Namespace}}\nundeclared:\n  module: file://{0}\n  settings: {{labels: [team]}}\n  hostCapabilities: [kubernetes/get_resource]\nkubewarden-style:\n  module: file://{0}\n  settings: {{labels: [team]}}\n  contextAwareResources:\n  - {{apiVersion: v1, kind: Namespace}}\n",
            module.display()
        ),
    );
    let mut options = common::server::options(dir.path(), policies);
    options.load.kubernetes = Some(Arc::new(KubernetesAccess::new(
        client.clone(),
        tokio::runtime::Handle::current(),
    )));
    let policy_server = palisade_host::server::start(options).await.unwrap();
    let base = format!("http://127.0.0.1:{}", policy_server.addr.port());
    let http = common::server::plain_client();
    let ask = |policy: &str, namespace: &str| {
        let request = http
            .post(format!("{base}/validate/{policy}"))
            .body(review(namespace));
        async move {
            let body: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
            body["response"].clone()
        }
    };

    // Declared with hostCapabilities, and as Kubewarden configures it:
    // contextAwareResources and no hostCapabilities (declaring the types is
    // the grant to read them). Both read the Namespace.
    for policy in ["declared", "kubewarden-style"] {
        let admitted = ask(policy, "labelled").await;
        assert_eq!(admitted["allowed"], true, "{policy}: {admitted}");
        let refused = ask(policy, "bare").await;
        assert_eq!(refused["allowed"], false, "{policy}: {refused}");
        assert!(
            refused["status"]["message"]
                .as_str()
                .unwrap()
                .contains("namespace `bare` lacks the labels: team"),
            "{policy}: {refused}"
        );
    }
    let missing = ask("declared", "ghost").await;
    assert_eq!(missing["status"]["code"], 500);
    assert!(
        missing["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{missing}"
    );
    // Same module, no contextAwareResources: the host refuses the read.
    let undeclared = ask("undeclared", "labelled").await;
    assert_eq!(undeclared["allowed"], false);
    assert!(
        undeclared["status"]["message"]
            .as_str()
            .unwrap()
            .contains("v1 Namespace is not in the policy's contextAwareResources"),
        "{undeclared}"
    );
    policy_server.shutdown().await;
}

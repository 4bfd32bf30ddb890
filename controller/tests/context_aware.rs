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

fn review_json(namespace: &str) -> Vec<u8> {
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

/// The AdmissionResponse `policy` gives a pod created in `namespace`.
async fn admission_response(
    http: &reqwest::Client,
    base: &str,
    policy: &str,
    namespace: &str,
) -> serde_json::Value {
    let body: serde_json::Value = http
        .post(format!("{base}/validate/{policy}"))
        .body(review_json(namespace))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["response"].clone()
}

/// An in-process policy-server for `policies` (YAML, `{0}` the path of
/// `module`) whose context-aware calls reach `client`'s cluster; its base URL.
async fn serve_with_cluster(
    client: &kube::Client,
    module: &str,
    policies: &str,
) -> (
    palisade_host::server::RunningServer,
    String,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let module = common::policy_path(module);
    let policies = common::server::write_policies(
        dir.path(),
        &policies.replace("{0}", &module.display().to_string()),
    );
    let mut options = common::server::options(dir.path(), policies);
    options.load.kubernetes = Some(Arc::new(KubernetesAccess::new(
        client.clone(),
        tokio::runtime::Handle::current(),
    )));
    let policy_server = palisade_host::server::start(options).await.unwrap();
    let base = format!("http://127.0.0.1:{}", policy_server.addr.port());
    (policy_server, base, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_read_the_cluster_only_for_the_resources_they_declared() {
    let server = common::ApiServer::start().await;
    let client = server.client();
    for (name, labels) in [("labelled", json!({"team": "a"})), ("bare", json!({}))] {
        common::create_namespace(&client, name, labels).await;
    }

    let (policy_server, base, _dir) = serve_with_cluster(
        &client,
        "namespace-labels",
        "declared:\n  module: file://{0}\n  settings: {labels: [team]}\n  hostCapabilities: [kubernetes/get_resource]\n  contextAwareResources:\n  - {apiVersion: v1, kind: Namespace}\nundeclared:\n  module: file://{0}\n  settings: {labels: [team]}\n  hostCapabilities: [kubernetes/get_resource]\nkubewarden-style:\n  module: file://{0}\n  settings: {labels: [team]}\n  contextAwareResources:\n  - {apiVersion: v1, kind: Namespace}\n",
    )
    .await;
    let http = common::server::plain_client();
    let ask = |policy: &'static str, namespace: &'static str| {
        admission_response(&http, &base, policy, namespace)
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

/// Requests for `resource` with `verb` the API server has answered, from
/// its own metrics.
async fn api_requests(client: &kube::Client, resource: &str, verb: &str) -> u64 {
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let metrics = client.request_text(request).await.unwrap();
    let resource = format!(r#"resource="{resource}""#);
    let verb = format!(r#"verb="{verb}""#);
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("apiserver_request_total{")
                && line.contains(&resource)
                && line.contains(&verb)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// SubjectAccessReviews the API server has answered.
async fn subject_access_reviews(client: &kube::Client) -> u64 {
    api_requests(client, "subjectaccessreviews", "POST").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_come_from_a_watch_and_gets_from_a_short_cache() {
    let server = common::ApiServer::start().await;
    let client = server.client();
    common::create_namespace(&client, "team-a", json!({"team": "x"})).await;
    common::create_namespace(&client, "other", json!({})).await;
    let calls = json!({"calls": [
        {"list_resources": {"api_version": "v1", "kind": "Namespace", "label_selector": "team=x"}},
        {"get_resource": {"api_version": "v1", "kind": "Namespace", "name": "team-a"}},
    ]});
    // host-calls imports oci and crypto too: each needs a grant to link.
    let (policy_server, base, _dir) = serve_with_cluster(
        &client,
        "host-calls",
        &format!("reads:\n  module: file://{{0}}\n  settings: {calls}\n  hostCapabilities: [oci/v1/manifest_digest, crypto/*]\n  contextAwareResources:\n  - {{apiVersion: v1, kind: Namespace}}\n"),
    )
    .await;
    let http = common::server::plain_client();
    // The list's items; the get's outcome must be a success.
    let warning = || async {
        let response = admission_response(&http, &base, "reads", "team-a").await;
        let warning = response["warnings"][0].as_str().unwrap().to_owned();
        let (list, get) = warning.split_once(", ").unwrap();
        assert!(get.starts_with("ok "), "{warning}");
        list.to_owned()
    };
    let (lists, gets) = (
        api_requests(&client, "namespaces", "LIST").await,
        api_requests(&client, "namespaces", "GET").await,
    );
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        assert_eq!(warning().await, "ok items=team-a");
    }
    let elapsed = started.elapsed();
    let lists = api_requests(&client, "namespaces", "LIST").await - lists;
    let gets = api_requests(&client, "namespaces", "GET").await - gets;
    println!("1000 evaluations in {elapsed:?}: {lists} LIST and {gets} GET of namespaces");
    // One list starts the watch; a get at most every 5 s.
    assert!(lists <= 1, "{lists} lists for 1000 evaluations");
    assert!(
        gets <= 1 + elapsed.as_secs() / 5,
        "{gets} gets for 1000 evaluations in {elapsed:?}"
    );

    // The watch sees a new namespace with the label, and one losing it.
    common::create_namespace(&client, "team-b", json!({"team": "x"})).await;
    common::wait::eventually(5, "the new namespace is listed", || async {
        (warning().await == "ok items=team-a|team-b").then_some(())
    })
    .await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    let unlabel = json!({"metadata": {"labels": {"team": null}}});
    namespaces
        .patch(
            "team-a",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&unlabel),
        )
        .await
        .unwrap();
    common::wait::eventually(5, "the unlabelled namespace leaves the list", || async {
        (warning().await == "ok items=team-b").then_some(())
    })
    .await;
    policy_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn can_i_answers_with_the_api_servers_rbac_decision_and_reuses_it() {
    let server = common::ApiServer::start().await;
    let client = server.client();
    server
        .client_as_service_account(
            "default",
            "alice",
            json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}]),
        )
        .await;
    let review = |verb: &str| {
        json!({
            "user": "system:serviceaccount:default:alice",
            "resourceAttributes": {"namespace": "team", "resource": "pods", "verb": verb},
        })
        .to_string()
    };
    let calls = json!({"calls": [
        {"can_i": review("create")},
        {"can_i": review("delete")},
        {"can_i": review("create")},
    ]});
    // host-calls imports oci and crypto too: each needs a grant to link.
    let (policy_server, base, _dir) = serve_with_cluster(
        &client,
        "host-calls",
        &format!("granted:\n  module: file://{{0}}\n  settings: {calls}\n  hostCapabilities: [kubernetes/can_i, oci/v1/manifest_digest, crypto/*]\nungranted:\n  module: file://{{0}}\n  settings: {calls}\n  hostCapabilities: [kubernetes/get_resource, oci/v1/manifest_digest, crypto/*]\n"),
    )
    .await;
    let http = common::server::plain_client();
    let warning = |policy: &'static str| {
        let response = admission_response(&http, &base, policy, "team");
        async move { response.await["warnings"][0].as_str().unwrap().to_owned() }
    };

    let before = subject_access_reviews(&client).await;
    assert_eq!(
        warning("granted").await,
        "ok allowed=true, ok allowed=false, ok allowed=true"
    );
    // The repeated question was answered from the 5 s cache.
    assert_eq!(subject_access_reviews(&client).await - before, 2);
    assert_eq!(
        warning("ungranted").await,
        "not-granted, not-granted, not-granted"
    );
    policy_server.shutdown().await;
}

//! The scanner against a real API server: policies of every kind, objects
//! in several namespaces, reports checked result by result; the same
//! reviews sent to a policy-server's `/audit` endpoint give the same
//! verdicts; a second scan writes nothing; changes, deleted policies and
//! newly skipped namespaces are followed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use palisade_audit::reports::{Outcome, PolicyResult, Report};
use palisade_audit::{scan, ReportKind, ScanOptions, Stats};
use palisade_controller::crd::{
    AdmissionPolicy, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup, PolicyServer,
};
use palisade_controller::kinds::PolicyResource;
use palisade_host::server::PoliciesConfig;
use palisade_testkit as common;
use serde_json::json;

fn module(name: &str) -> String {
    format!("file://{}", common::policy_path(name).display())
}

const PODS: &str = "  rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [CREATE]\n";

fn pod(name: &str, privileged: bool, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "securityContext": {"privileged": privileged}}]}
    }))
    .unwrap()
}

async fn mark_active<K: PolicyResource>(api: &Api<K>, name: &str) {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"policyStatus": "active"}})),
    )
    .await
    .unwrap();
}

/// Writes the PolicyServer's ConfigMap as the controller does: every
/// policy bound to it, through the same model.
async fn write_configuration(client: &kube::Client) {
    let server = Api::<PolicyServer>::all(client.clone())
        .get("default")
        .await
        .unwrap();
    let mut entries = BTreeMap::new();
    for p in Api::<ClusterAdmissionPolicy>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        entries.insert(p.id(), p.entry(&[]));
    }
    for p in Api::<ClusterAdmissionPolicyGroup>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        entries.insert(p.id(), p.entry(&[]));
    }
    for p in Api::<AdmissionPolicy>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        entries.insert(p.id(), p.entry(&[]));
    }
    let config = palisade_controller::objects::config_map(
        &server,
        "kubewarden",
        &PoliciesConfig { entries },
    );
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "kubewarden");
    let name = config.metadata.name.clone().unwrap();
    match api.get_opt(&name).await.unwrap() {
        Some(current) => {
            let mut config = config;
            config.metadata.resource_version = current.metadata.resource_version;
            api.replace(&name, &PostParams::default(), &config)
                .await
                .unwrap();
        }
        None => {
            api.create(&PostParams::default(), &config).await.unwrap();
        }
    }
}

fn options(work: &std::path::Path, ignore: &[&str]) -> ScanOptions {
    ScanOptions {
        namespace: None,
        cluster_only: false,
        engine_namespace: "kubewarden".into(),
        ignore_namespaces: ignore.iter().map(|s| (*s).to_owned()).collect(),
        page_size: 1,
        report_kind: ReportKind::Openreports,
        output_scan: false,
        disable_store: false,
        parallelism: 4,
        policy_timeout: Duration::from_secs(5),
        store_dir: work.join("store"),
    }
}

/// The report of pod `name` in `namespace`, by policy id.
async fn report_of(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> BTreeMap<String, PolicyResult> {
    let uid = Api::<Pod>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap()
        .uid()
        .unwrap();
    let report = Api::<Report>::namespaced(client.clone(), namespace)
        .get(&uid)
        .await
        .unwrap();
    assert_eq!(
        report.spec.scope.as_ref().unwrap().name.as_deref(),
        Some(name)
    );
    assert_eq!(report.owner_references()[0].uid, uid);
    report
        .spec
        .results
        .into_iter()
        .map(|r| (r.policy.clone(), r))
        .collect()
}

fn outcomes(report: &BTreeMap<String, PolicyResult>) -> BTreeMap<&str, Outcome> {
    report
        .iter()
        .map(|(id, r)| (id.as_str(), r.result))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_say_what_the_policies_say_and_follow_changes() {
    let server = common::ApiServer::start().await;
    let client = server.client();
    common::install_crds(&client, palisade_controller::crd::crds()).await;
    common::install_crds(&client, palisade_audit::reports::crds()).await;
    common::create_namespaces(&client, &["kubewarden", "team-a", "team-b", "elsewhere"]).await;
    let create = |yaml: String| {
        let client = client.clone();
        async move { common::create_yaml(&client, &yaml).await.unwrap() }
    };
    create("apiVersion: policies.kubewarden.io/v1\nkind: PolicyServer\nmetadata: {name: default}\nspec:\n  image: policy-server\n  replicas: 1\n".into()).await;
    // A component policy with a severity and category; the upstream-SDK
    // waPC policy in monitor mode, seeing every operation; a group; a
    // namespaced policy; one that opts out of the audit.
    create(format!("apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata:\n  name: privileged\n  annotations: {{io.kubewarden.policy.severity: high, io.kubewarden.policy.category: PSP}}\nspec:\n  module: {}\n{PODS}", module("pod-privileged"))).await;
    create(format!("apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: privileged-wapc}}\nspec:\n  module: {}\n  mode: monitor\n  rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [\"*\"]\n", module("pod-privileged-wapc-wasip1"))).await;
    create(format!("apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicyGroup\nmetadata: {{name: team-pods}}\nspec:\n  expression: \"unprivileged() && labelled()\"\n  message: pods must be unprivileged and have a team\n  policies:\n    unprivileged: {{module: \"{}\"}}\n    labelled: {{module: \"{}\", settings: {{labels: [team]}}}}\n{PODS}", module("pod-privileged"), module("required-labels"))).await;
    create(format!("apiVersion: policies.kubewarden.io/v1\nkind: AdmissionPolicy\nmetadata: {{name: app-label, namespace: team-a}}\nspec:\n  module: {}\n  settings: {{labels: [app]}}\n{PODS}", module("required-labels"))).await;
    // A context-aware policy: it reads the object's Namespace through the
    // scanner's client.
    create(format!("apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: namespace-team}}\nspec:\n  module: {}\n  settings: {{labels: [team]}}\n  contextAwareResources:\n  - {{apiVersion: v1, kind: Namespace}}\n{PODS}", module("namespace-labels"))).await;
    Api::<Namespace>::all(client.clone())
        .patch(
            "team-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    create(format!("apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: not-audited}}\nspec:\n  module: {}\n  backgroundAudit: false\n{PODS}", module("pod-privileged"))).await;
    // matchConditions, evaluated per object: true, false, and one the
    // scanner cannot evaluate (the authorizer).
    for (name, expression) in [
        ("conditional", "has(object.metadata.labels.team)"),
        ("never", "object.metadata.name == 'nobody'"),
        (
            "needs-authorizer",
            "authorizer.group('').resource('pods').check('create').allowed()",
        ),
    ] {
        create(format!("apiVersion: policies.kubewarden.io/v1\nkind: AdmissionPolicy\nmetadata: {{name: {name}, namespace: team-b}}\nspec:\n  module: {}\n  matchConditions:\n  - {{name: c, expression: \"{expression}\"}}\n{PODS}", module("pod-privileged"))).await;
        mark_active(
            &Api::<AdmissionPolicy>::namespaced(client.clone(), "team-b"),
            name,
        )
        .await;
    }
    let caps: Api<ClusterAdmissionPolicy> = Api::all(client.clone());
    for name in [
        "privileged",
        "privileged-wapc",
        "namespace-team",
        "not-audited",
    ] {
        mark_active(&caps, name).await;
    }
    mark_active(
        &Api::<ClusterAdmissionPolicyGroup>::all(client.clone()),
        "team-pods",
    )
    .await;
    let aps: Api<AdmissionPolicy> = Api::namespaced(client.clone(), "team-a");
    mark_active(&aps, "app-label").await;
    write_configuration(&client).await;

    let pods_a: Api<Pod> = Api::namespaced(client.clone(), "team-a");
    pods_a
        .create(
            &PostParams::default(),
            &pod("root", true, json!({"app": "x", "team": "a"})),
        )
        .await
        .unwrap();
    pods_a
        .create(
            &PostParams::default(),
            &pod("plain", false, json!({"app": "y"})),
        )
        .await
        .unwrap();
    Api::<Pod>::namespaced(client.clone(), "team-b")
        .create(
            &PostParams::default(),
            &pod("labelled", false, json!({"team": "b"})),
        )
        .await
        .unwrap();
    Api::<Pod>::namespaced(client.clone(), "elsewhere")
        .create(&PostParams::default(), &pod("ignored", true, json!({})))
        .await
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let first = scan(client.clone(), &options(work.path(), &["elsewhere"]))
        .await
        .unwrap();
    assert_eq!(first.objects, 3, "{first:?}");
    assert_eq!(first.written, 3, "{first:?}");
    assert_eq!(first.policies, 8, "not-audited is skipped: {first:?}");

    use Outcome::{Fail, Pass};
    let root = report_of(&client, "team-a", "root").await;
    assert_eq!(
        outcomes(&root),
        BTreeMap::from([
            ("clusterwide-group-team-pods", Fail),
            ("clusterwide-namespace-team", Pass),
            ("clusterwide-privileged", Fail),
            ("clusterwide-privileged-wapc", Fail),
            ("namespaced-team-a-app-label", Pass),
        ])
    );
    let privileged = &root["clusterwide-privileged"];
    assert_eq!(privileged.severity.as_deref(), Some("high"));
    assert_eq!(privileged.category.as_deref(), Some("PSP"));
    assert_eq!(privileged.source.as_deref(), Some("kubewarden"));
    assert!(
        privileged
            .message
            .as_deref()
            .unwrap()
            .contains("privileged containers are not allowed"),
        "{privileged:?}"
    );
    // Monitor mode: the raw verdict, at severity info.
    assert_eq!(
        root["clusterwide-privileged-wapc"].severity.as_deref(),
        Some("info")
    );
    assert_eq!(
        root["namespaced-team-a-app-label"].properties["policy-namespace"],
        "team-a"
    );
    let plain = report_of(&client, "team-a", "plain").await;
    assert_eq!(
        outcomes(&plain),
        BTreeMap::from([
            ("clusterwide-group-team-pods", Fail),
            ("clusterwide-namespace-team", Pass),
            ("clusterwide-privileged", Pass),
            ("clusterwide-privileged-wapc", Pass),
            ("namespaced-team-a-app-label", Pass),
        ])
    );
    let labelled = report_of(&client, "team-b", "labelled").await;
    assert_eq!(
        outcomes(&labelled),
        BTreeMap::from([
            ("clusterwide-group-team-pods", Pass),
            ("clusterwide-namespace-team", Fail),
            ("clusterwide-privileged", Pass),
            ("clusterwide-privileged-wapc", Pass),
            ("namespaced-team-b-conditional", Pass),
            ("namespaced-team-b-needs-authorizer", Outcome::Skip),
        ])
    );
    let skipped = &labelled["namespaced-team-b-needs-authorizer"];
    assert!(
        skipped
            .message
            .as_deref()
            .unwrap()
            .contains("matchCondition `c`"),
        "{skipped:?}"
    );
    let context_aware = &labelled["clusterwide-namespace-team"];
    assert_eq!(context_aware.properties["context-aware"], "true");
    assert!(
        context_aware
            .message
            .as_deref()
            .unwrap()
            .contains("lacks the labels: team"),
        "{context_aware:?}"
    );
    let elsewhere = Api::<Report>::namespaced(client.clone(), "elsewhere")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        elsewhere.items.is_empty(),
        "a skipped namespace has no report"
    );

    // The policy-server's /audit endpoint, from the same configuration,
    // gives the same verdicts.
    differential(
        &client,
        work.path(),
        &[("team-a", "root", &root), ("team-a", "plain", &plain)],
    )
    .await;

    // Nothing changed: nothing is written.
    let second = scan(client.clone(), &options(work.path(), &["elsewhere"]))
        .await
        .unwrap();
    assert_eq!(
        (second.written, second.unchanged, second.deleted),
        (0, 3, 0),
        "{second:?}"
    );

    // One object changes: only its report is written.
    pods_a
        .patch(
            "plain",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "a"}}})),
        )
        .await
        .unwrap();
    let third = scan(client.clone(), &options(work.path(), &["elsewhere"]))
        .await
        .unwrap();
    assert_eq!((third.written, third.unchanged), (1, 2), "{third:?}");
    assert_eq!(
        report_of(&client, "team-a", "plain").await["clusterwide-group-team-pods"].result,
        Pass
    );

    // A deleted policy's results go with it.
    aps.delete("app-label", &DeleteParams::default())
        .await
        .unwrap();
    write_configuration(&client).await;
    let fourth = scan(client.clone(), &options(work.path(), &["elsewhere"]))
        .await
        .unwrap();
    assert_eq!(fourth.written, 2, "{fourth:?}");
    assert!(!report_of(&client, "team-a", "root")
        .await
        .contains_key("namespaced-team-a-app-label"));

    // --disable-store never writes nor deletes.
    let mut dry = options(work.path(), &["elsewhere", "team-b"]);
    dry.disable_store = true;
    let stats = scan(client.clone(), &dry).await.unwrap();
    assert_eq!((stats.written, stats.deleted), (0, 0), "{stats:?}");
    assert_eq!(
        Api::<Report>::namespaced(client.clone(), "team-b")
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // A namespace added to the skip list loses its reports.
    let skipped: Stats = scan(
        client.clone(),
        &options(work.path(), &["elsewhere", "team-b"]),
    )
    .await
    .unwrap();
    assert_eq!(skipped.deleted, 1, "{skipped:?}");
    assert!(Api::<Report>::namespaced(client.clone(), "team-b")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());

    // A deleted resource takes its report with it (owner reference, the
    // garbage collector), with no scan.
    let uid = pods_a.get("root").await.unwrap().uid().unwrap();
    pods_a
        .delete("root", &DeleteParams::default())
        .await
        .unwrap();
    let reports: Api<Report> = Api::namespaced(client.clone(), "team-a");
    common::eventually(
        120,
        "the garbage collector to delete the report",
        || async { reports.get_opt(&uid).await.ok()?.is_none().then_some(()) },
    )
    .await;
}

/// Sends the review of each pod to a policy-server started from the
/// PolicyServer's ConfigMap, on `/audit/<id>`, and compares its verdict
/// with the report's.
async fn differential(
    client: &kube::Client,
    work: &std::path::Path,
    reports: &[(&str, &str, &BTreeMap<String, PolicyResult>)],
) {
    let config =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "kubewarden")
            .get("policy-server-default")
            .await
            .unwrap();
    let dir = work.join("policy-server");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policies.yml");
    std::fs::write(&file, &config.data.as_ref().unwrap()["policies.yml"]).unwrap();
    let mut server_options = common::server::options(&dir, file);
    server_options.load.continue_on_errors = true;
    server_options.load.kubernetes = Some(std::sync::Arc::new(
        palisade_host::KubernetesAccess::new(client.clone(), tokio::runtime::Handle::current()),
    ));
    let policy_server = palisade_host::server::start(server_options).await.unwrap();
    let base = format!("http://{}", policy_server.addr);
    let http = common::server::plain_client();
    for (namespace, pod_name, report) in reports {
        let pod = Api::<Pod>::namespaced(client.clone(), namespace)
            .get(pod_name)
            .await
            .unwrap();
        for (id, result) in report.iter() {
            let review = json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": pod.uid(),
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "name": pod.name_any(),
                    "namespace": namespace,
                    "operation": "CREATE",
                    "userInfo": {},
                    "object": pod,
                }
            });
            let (status, answer) = common::server::post(
                &http,
                &format!("{base}/audit/{id}"),
                serde_json::to_vec(&review).unwrap(),
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            let allowed = answer["response"]["allowed"].as_bool().unwrap();
            let expected = result.result == Outcome::Pass;
            assert_eq!(allowed, expected, "{id} on {pod_name}: {answer}");
        }
    }
    policy_server.shutdown().await;
}

/// Cluster-scoped resources get ClusterReports; a resource type the
/// scanner's ServiceAccount may not list is logged as errors for the
/// policies that wanted it, and the rest of the scan completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_scoped_resources_and_a_type_the_scanner_may_not_list() {
    use palisade_audit::reports::ClusterReport;
    let server = common::ApiServer::start().await;
    let client = server.client();
    common::install_crds(&client, palisade_controller::crd::crds()).await;
    common::install_crds(&client, palisade_audit::reports::crds()).await;
    common::create_namespaces(&client, &["kubewarden"]).await;
    common::create_namespace(&client, "labelled", json!({"owner": "me"})).await;
    let create = |yaml: String| {
        let client = client.clone();
        async move { common::create_yaml(&client, &yaml).await.unwrap() }
    };
    create("apiVersion: policies.kubewarden.io/v1\nkind: PolicyServer\nmetadata: {name: default}\nspec:\n  image: policy-server\n  replicas: 1\n".into()).await;
    let rule = |resource: &str| {
        format!("  rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [{resource}]\n    operations: [CREATE]\n")
    };
    create(format!("apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: namespace-owner}}\nspec:\n  module: {}\n  settings: {{labels: [owner]}}\n{}", module("required-labels"), rule("namespaces"))).await;
    create(format!("apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: configmap-owner}}\nspec:\n  module: {}\n  settings: {{labels: [owner]}}\n{}", module("required-labels"), rule("configmaps"))).await;
    // Wildcard groups and versions, expanded through discovery (Kubewarden
    // skips such rules): only core v1 serves `namespaces`.
    create(format!("apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: wildcard-owner}}\nspec:\n  module: {}\n  settings: {{labels: [owner]}}\n  rules:\n  - apiGroups: [\"*\"]\n    apiVersions: [\"*\"]\n    resources: [namespaces]\n    operations: [\"*\"]\n", module("required-labels"))).await;
    let caps: Api<ClusterAdmissionPolicy> = Api::all(client.clone());
    for name in ["namespace-owner", "configmap-owner", "wildcard-owner"] {
        mark_active(&caps, name).await;
    }
    write_configuration(&client).await;

    // Everything a scanner needs, except listing ConfigMaps outside the
    // engine's own (it reads PolicyServer configuration there).
    let scanner = server
        .client_as_service_account(
            "kubewarden",
            "audit-scanner",
            json!([
                {"apiGroups": ["policies.kubewarden.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["namespaces", "pods"], "verbs": ["get", "list"]},
                {"apiGroups": ["openreports.io"], "resources": ["reports", "clusterreports"], "verbs": ["get", "list", "create", "update", "delete"]},
            ]),
        )
        .await;
    // The PolicyServer's ConfigMap, readable in the engine namespace only.
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
        "metadata": {"name": "read-config", "namespace": "kubewarden"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), "kubewarden")
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "read-config", "namespace": "kubewarden"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-config"},
        "subjects": [{"kind": "ServiceAccount", "name": "audit-scanner", "namespace": "kubewarden"}],
    }))
    .unwrap();
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), "kubewarden")
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let work = tempfile::tempdir().unwrap();
    let stats = scan(scanner, &options(work.path(), &[])).await.unwrap();
    // Cluster-scoped: every namespace but the engine's... namespaces are
    // cluster-scoped objects, so all of them are audited.
    let reports = Api::<ClusterReport>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let by_name: BTreeMap<String, Outcome> = reports
        .iter()
        .map(|r| {
            let scope = r.spec.scope.as_ref().unwrap();
            assert_eq!(scope.kind.as_deref(), Some("Namespace"));
            let policies: Vec<&str> = r.spec.results.iter().map(|r| r.policy.as_str()).collect();
            assert_eq!(
                policies,
                ["clusterwide-namespace-owner", "clusterwide-wildcard-owner"]
            );
            assert_eq!(r.spec.results[0].result, r.spec.results[1].result);
            (scope.name.clone().unwrap(), r.spec.results[0].result)
        })
        .collect();
    assert_eq!(by_name.get("labelled"), Some(&Outcome::Pass), "{by_name:?}");
    assert_eq!(by_name.get("default"), Some(&Outcome::Fail), "{by_name:?}");
    // ConfigMaps could not be listed in either scanned namespace: errors,
    // and the scan still completed.
    assert!(stats.error >= 2, "{stats:?}");
    assert_eq!(stats.objects as usize, reports.len(), "{stats:?}");
}

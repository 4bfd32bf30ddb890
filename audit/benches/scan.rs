//! The scanner at scale, on the test API server: OBJECTS pods in
//! NAMESPACES namespaces × 5 policies (component, waPC, settings-driven
//! component, registry check, group). Prints the first scan, an unchanged
//! second scan (it must write nothing), the scanner's peak RSS, and the
//! same evaluations sent to a policy-server's `/audit` endpoint over HTTPS
//! (one request per object and policy, as Kubewarden's scanner does).
//!
//! `make bench-audit` (OBJECTS=10000 NAMESPACES=50 by default).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use palisade_controller::crd::{ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup, PolicyServer};
use palisade_controller::kinds::PolicyResource;
use palisade_host::server::PoliciesConfig;
use palisade_testkit as common;
use serde_json::json;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn module(name: &str) -> String {
    format!("file://{}", common::policy_path(name).display())
}

const PODS: &str = "  rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [CREATE]\n";

#[tokio::main]
async fn main() {
    let objects = env_number("OBJECTS", 10_000);
    let namespaces = env_number("NAMESPACES", 50).max(1);
    let server = common::ApiServer::start().await;
    let client = server.client();
    common::install_crds(&client, palisade_controller::crd::crds()).await;
    common::install_crds(&client, palisade_audit::reports::crds()).await;
    let names: Vec<String> = (0..namespaces).map(|i| format!("bench-{i}")).collect();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.push("kubewarden");
    common::create_namespaces(&client, &all).await;

    let create = |yaml: String| {
        let client = client.clone();
        async move { common::create_yaml(&client, &yaml).await.unwrap() }
    };
    create("apiVersion: policies.kubewarden.io/v1\nkind: PolicyServer\nmetadata: {name: default}\nspec:\n  image: policy-server\n  replicas: 1\n".into()).await;
    let cap = |name: &str, module: String, settings: &str| {
        format!("apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: {name}}}\nspec:\n  module: {module}\n  settings: {settings}\n{PODS}")
    };
    create(cap("privileged", module("pod-privileged"), "{}")).await;
    create(cap(
        "privileged-wapc",
        module("pod-privileged-wapc-wasip1"),
        "{}",
    ))
    .await;
    create(cap(
        "team-label",
        module("required-labels"),
        "{labels: [team]}",
    ))
    .await;
    create(cap(
        "registries",
        module("allowed-registries"),
        "{registries: [docker.io]}",
    ))
    .await;
    create(format!("apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicyGroup\nmetadata: {{name: group}}\nspec:\n  expression: \"a() && b()\"\n  message: no\n  policies:\n    a: {{module: \"{}\"}}\n    b: {{module: \"{}\", settings: {{labels: [app]}}}}\n{PODS}", module("pod-privileged"), module("required-labels"))).await;
    let caps: Api<ClusterAdmissionPolicy> = Api::all(client.clone());
    let groups: Api<ClusterAdmissionPolicyGroup> = Api::all(client.clone());
    let active = Patch::Merge(json!({"status": {"policyStatus": "active"}}));
    let mut entries = BTreeMap::new();
    for policy in caps.list(&ListParams::default()).await.unwrap() {
        caps.patch_status(&policy.name_any(), &PatchParams::default(), &active)
            .await
            .unwrap();
        entries.insert(policy.id(), policy.entry(&[]));
    }
    for group in groups.list(&ListParams::default()).await.unwrap() {
        groups
            .patch_status(&group.name_any(), &PatchParams::default(), &active)
            .await
            .unwrap();
        entries.insert(group.id(), group.entry(&[]));
    }
    let policy_server = Api::<PolicyServer>::all(client.clone())
        .get("default")
        .await
        .unwrap();
    let config = palisade_controller::objects::config_map(
        &policy_server,
        "kubewarden",
        &PoliciesConfig { entries },
    );
    Api::<ConfigMap>::namespaced(client.clone(), "kubewarden")
        .create(&PostParams::default(), &config)
        .await
        .unwrap();

    let started = Instant::now();
    futures::stream::iter(0..objects)
        .map(|i| {
            let client = client.clone();
            let namespace = names[i % namespaces].clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench", "team": if i % 3 == 0 { "" } else { "t" }}},
                    "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "securityContext": {"privileged": i % 7 == 0}}]}
                }))
                .unwrap();
                Api::<Pod>::namespaced(client, &namespace)
                    .create(&PostParams::default(), &pod)
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<()>()
        .await;
    println!(
        "created {objects} pods in {namespaces} namespaces in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let work = tempfile::tempdir().unwrap();
    for run in ["first", "second (unchanged)"] {
        let (seconds, rss, summary) = run_scanner(&server, work.path());
        println!(
            "{run} scan: {seconds:.1} s, {:.0} objects/s, {:.0} evaluations/s, peak RSS {} MiB — {summary}",
            objects as f64 / seconds,
            (objects * 5) as f64 / seconds,
            rss / 1024
        );
    }
    through_the_audit_endpoint(&client, objects).await;
}

/// Runs the `audit-scanner` binary against the test API server; its wall
/// time, peak RSS (KiB) and the summary line it logged.
fn run_scanner(server: &common::ApiServer, work: &std::path::Path) -> (f64, u64, String) {
    let started = Instant::now();
    let scanner = env!("CARGO_BIN_EXE_audit-scanner");
    // `SCANNER_WRAPPER=heaptrack` runs the scanner under a profiler.
    let mut command = match std::env::var("SCANNER_WRAPPER") {
        Ok(wrapper) => {
            let mut command = std::process::Command::new(wrapper);
            command.arg(scanner);
            command
        }
        Err(_) => std::process::Command::new(scanner),
    };
    let mut child = command
        .env("KUBECONFIG", server.kubeconfig())
        .args(["--store-dir", &work.join("store").display().to_string()])
        .args(["--page-size", "500", "--log-format", "json"])
        // `SCANNER_ARGS="--parallelism 4"`: more flags for the scanner.
        .args(
            std::env::var("SCANNER_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(status) = std::fs::read_to_string(&status_path) {
            for line in status.lines() {
                if let Some(value) = line.strip_prefix("VmHWM:") {
                    let kib = value
                        .trim()
                        .trim_end_matches(" kB")
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    peak = peak.max(kib);
                }
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = started.elapsed().as_secs_f64();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let log = String::from_utf8_lossy(&output.stderr);
    let summary = log
        .lines()
        .find(|l| l.contains("scan complete"))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            format!(
                "written {}, unchanged {}, pass {}, fail {}, error {}",
                v["written"], v["unchanged"], v["pass"], v["fail"], v["error"]
            )
        })
        .unwrap_or_default();
    (seconds, peak, summary)
}

/// The same evaluations as POSTs to `/audit/<id>` of an HTTPS policy-server
/// loaded from the same ConfigMap.
async fn through_the_audit_endpoint(client: &kube::Client, objects: usize) {
    let config = Api::<ConfigMap>::namespaced(client.clone(), "kubewarden")
        .get("policy-server-default")
        .await
        .unwrap();
    let policies = config.data.unwrap()["policies.yml"].clone();
    let ids: Vec<String> = PoliciesConfig::parse(&policies, "policies.yml")
        .unwrap()
        .entries
        .into_keys()
        .collect();
    let server = common::server::https_server(&policies, |o, _| {
        o.load.continue_on_errors = true;
        o.workers = 2;
    })
    .await;
    let http = common::server::client(&server.ca.as_ref().unwrap().pem());
    let pods: Vec<Pod> = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let started = Instant::now();
    let requests = futures::stream::iter(
        pods.iter()
            .flat_map(|pod| ids.iter().map(move |id| (pod, id))),
    )
    .map(|(pod, id)| {
        let http = http.clone();
        let url = format!("{}/audit/{id}", server.base);
        let review = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": pod.uid(), "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "name": pod.name_any(), "namespace": pod.namespace(),
                "operation": "CREATE", "userInfo": {}, "object": pod,
            }
        });
        async move {
            http.post(url)
                .json(&review)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    })
    .buffer_unordered(16)
    .collect::<Vec<u16>>()
    .await;
    let seconds = started.elapsed().as_secs_f64();
    assert!(requests.iter().all(|s| *s == 200));
    println!(
        "through /audit over HTTPS: {} requests in {seconds:.1} s, {:.0} objects/s, {:.0} evaluations/s (policy-server in process, 2 workers)",
        requests.len(),
        objects as f64 / seconds,
        requests.len() as f64 / seconds
    );
    server.server.shutdown().await;
}

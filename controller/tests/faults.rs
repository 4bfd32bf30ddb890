//! Faults on the control path, with the `controller` binary against a real
//! API server: the API server crashes in the middle of a reconcile and comes
//! back, and a leader is killed (SIGKILL) in the middle of one. Each time the
//! cluster converges without anyone stepping in: every PolicyServer gets its
//! objects, every policy its configuration entry and its webhook, and a
//! change made afterwards is reconciled too.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

mod replica;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::Api;
use palisade_controller::crd::{ClusterAdmissionPolicy, PolicyStatusPhase};
use replica::{scale_and_wait, Supervised};

/// PolicyServers (each with one policy) created at once: enough work that a
/// fault lands in the middle of it.
const SERVERS: usize = 4;

async fn prepare(server: &common::ApiServer) -> kube::Client {
    let client = server.client();
    common::install_crds(&client, palisade_controller::crd::crds()).await;
    common::create_namespaces(&client, &["kubewarden"]).await;
    client
}

/// `SERVERS` PolicyServers and a ClusterAdmissionPolicy on each, created
/// back to back as one `kubectl apply -f` of a directory would.
async fn create_servers_and_policies(client: &kube::Client) {
    let module = format!("file://{}", common::policy_path("pod-privileged").display());
    for i in 0..SERVERS {
        common::create_yaml(
            client,
            &format!(
                "apiVersion: policies.kubewarden.io/v1\nkind: PolicyServer\nmetadata: {{name: server-{i}}}\nspec:\n  image: palisade/policy-server:test\n  replicas: 1\n"
            ),
        )
        .await
        .unwrap();
        common::create_yaml(
            client,
            &format!(
                "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: privileged-{i}}}\nspec:\n  module: {module}\n  policyServer: server-{i}\n  rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [CREATE]\n"
            ),
        )
        .await
        .unwrap();
    }
}

/// Waits until the controller has started on the work (the first
/// Deployment exists) and returns how many of the PolicyServers have one at
/// that moment.
async fn wait_for_reconcile_to_start(client: &kube::Client) -> usize {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kubewarden");
    common::eventually(60, "the first Deployment", || async {
        let count = deployments
            .list(&Default::default())
            .await
            .ok()?
            .items
            .len();
        (count > 0).then_some(count)
    })
    .await
}

/// What is still missing for PolicyServer `i` and its policy (empty when
/// converged).
async fn missing(client: &kube::Client, i: usize) -> Vec<String> {
    let name = format!("policy-server-server-{i}");
    let ns = "kubewarden";
    let mut missing = Vec::new();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let policies: Api<ClusterAdmissionPolicy> = Api::all(client.clone());
    if !matches!(deployments.get_opt(&name).await, Ok(Some(_))) {
        missing.push(format!("Deployment {name}"));
    }
    if !matches!(services.get_opt(&name).await, Ok(Some(_))) {
        missing.push(format!("Service {name}"));
    }
    if !matches!(secrets.get_opt(&name).await, Ok(Some(_))) {
        missing.push(format!("Secret {name}"));
    }
    let entry = format!("clusterwide-privileged-{i}");
    let configured = config_maps
        .get_opt(&name)
        .await
        .ok()
        .flatten()
        .and_then(|c| c.data?.get("policies.yml").cloned())
        .is_some_and(|policies| policies.contains(&entry));
    if !configured {
        missing.push(format!("{entry} in ConfigMap {name}"));
    }
    let phase = policies
        .get_opt(&format!("privileged-{i}"))
        .await
        .ok()
        .flatten()
        .and_then(|p| p.status?.policy_status);
    if phase != Some(PolicyStatusPhase::Active) {
        missing.push(format!("privileged-{i} active (is {phase:?})"));
    }
    if !matches!(webhooks.get_opt(&entry).await, Ok(Some(_))) {
        missing.push(format!("webhook {entry}"));
    }
    missing
}

/// Waits until every PolicyServer and policy has converged; on timeout the
/// message lists what is missing.
async fn wait_converged(client: &kube::Client, seconds: u64) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    loop {
        let mut all = Vec::new();
        for i in 0..SERVERS {
            all.extend(missing(client, i).await);
        }
        if all.is_empty() {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "not converged after {seconds} s; missing: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_converges_after_the_api_server_crashes_mid_reconcile() {
    let mut server = common::ApiServer::start().await;
    let client = prepare(&server).await;
    let store = tempfile::tempdir().unwrap();
    let controller = Supervised::start(&server, "controller-a", store.path());
    let ready = common::mark_pods_ready(client.clone(), "kubewarden", "");

    create_servers_and_policies(&client).await;
    let done = wait_for_reconcile_to_start(&client).await;
    server.crash();
    eprintln!("API server killed with {done} of {SERVERS} Deployments created");
    // Long enough for the controller's requests, watches and lease renewal
    // to fail; shorter than the lease, as a control-plane restart is.
    tokio::time::sleep(Duration::from_secs(8)).await;
    server.restart().await;

    let took = wait_converged(&client, 120).await;
    eprintln!(
        "converged {:.1} s after the API server came back; controller restarts: {}",
        took.as_secs_f64(),
        controller.restarts.load(Ordering::SeqCst)
    );
    // A change made after the fault is reconciled: the watches came back,
    // not only the first pass.
    scale_and_wait(&client, "server-0", 2).await;
    ready.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_reconcile_is_replaced_and_the_next_one_converges() {
    let server = common::ApiServer::start().await;
    let client = prepare(&server).await;
    let store = tempfile::tempdir().unwrap();
    let (mut replicas, leader, follower) = replica::start_pair(&server, store.path()).await;
    let ready = common::mark_pods_ready(client.clone(), "kubewarden", "");

    create_servers_and_policies(&client).await;
    let done = wait_for_reconcile_to_start(&client).await;
    replicas[leader].kill();
    eprintln!("leader killed with {done} of {SERVERS} Deployments created");

    // The lease is not released: the follower takes it when it expires.
    let took = wait_converged(&client, 120).await;
    let next = common::lease_holder(&client, "kubewarden", "palisade-controller", 5).await;
    assert_eq!(next, replicas[follower].spec.identity);
    eprintln!("converged {:.1} s after the kill", took.as_secs_f64());
    // A change made after the fault is reconciled: the watches came back,
    // not only the first pass.
    scale_and_wait(&client, "server-0", 2).await;
    assert!(
        replicas[follower].child.try_wait().unwrap().is_none(),
        "the new leader must still run"
    );
    ready.abort();
}

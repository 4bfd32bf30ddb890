//! The `controller` binary as operators run it: two replicas against a real
//! API server elect one leader on a Lease, only the leader reconciles, a
//! SIGTERM makes it stop cleanly (exit 0, lease released) and the other
//! replica takes over.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

mod replica;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use palisade_controller::crd::PolicyServer;
use replica::{reconciled_policy_servers, scale_and_wait};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_reconciles_and_a_terminated_leader_hands_over() {
    let server = common::ApiServer::start().await;
    let client = server.client();
    common::install_crds(&client, palisade_controller::crd::crds()).await;
    common::create_namespaces(&client, &["kubewarden"]).await;
    let store = tempfile::tempdir().unwrap();
    let (mut replicas, leader, follower) = replica::start_pair(&server, store.path()).await;

    let servers: Api<PolicyServer> = Api::all(client.clone());
    servers
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "policies.kubewarden.io/v1", "kind": "PolicyServer",
                "metadata": {"name": "default"}, "spec": {"image": "policy-server:1", "replicas": 1}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kubewarden");
    common::eventually(60, "the leader to create the Deployment", || async {
        deployments.get_opt("policy-server-default").await.ok()?
    })
    .await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), "kubewarden");
    assert!(
        reconciled_policy_servers(&replicas[leader].spec)
            .await
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        reconciled_policy_servers(&replicas[follower].spec).await,
        Some(0.0),
        "a follower must not reconcile"
    );

    // SIGTERM: the leader stops reconciling, releases the lease and exits 0.
    let status = replicas[leader].terminate();
    assert!(status.success(), "leader exited with {status}");
    let next = replicas[follower].spec.identity;
    common::eventually(60, "the follower to take the lease", || async {
        let lease = leases.get_opt("palisade-controller").await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some(next)).then_some(())
    })
    .await;

    // The new leader reconciles a change.
    scale_and_wait(&client, "default", 2).await;
    let status = replicas[follower].terminate();
    assert!(status.success(), "second leader exited with {status}");
}

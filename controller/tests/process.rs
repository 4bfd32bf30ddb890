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

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams, PostParams};
use palisade_controller::crd::PolicyServer;
use serde_json::json;

struct Replica {
    identity: &'static str,
    child: Child,
    metrics: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_replica(
    server: &common::ApiServer,
    identity: &'static str,
    store: &std::path::Path,
) -> Replica {
    let port = common::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_controller"))
        .env("KUBECONFIG", server.kubeconfig())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args([
            "--namespace=kubewarden",
            "--webhook-url=https://127.0.0.1:9/{policy-server}",
            &format!("--metrics-addr=127.0.0.1:{port}"),
            &format!("--store-dir={}", store.join(identity).display()),
            &format!("--identity={identity}"),
            "--log-level=info",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Replica {
        identity,
        child,
        metrics: format!("http://127.0.0.1:{port}/metrics"),
    }
}

async fn reconciled_policy_servers(replica: &Replica) -> Option<f64> {
    let text = common::server::get(&replica.metrics)
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| {
                l.starts_with("palisade_controller_reconciliations_total{kind=\"PolicyServer\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

fn terminate(replica: &mut Replica) -> std::process::ExitStatus {
    let pid = replica.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = replica.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not stop on SIGTERM",
            replica.identity
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_reconciles_and_a_terminated_leader_hands_over() {
    let server = common::ApiServer::start().await;
    let client = server.client();
    common::install_crds(&client, palisade_controller::crd::crds()).await;
    common::create_namespaces(&client, &["kubewarden"]).await;
    let store = tempfile::tempdir().unwrap();
    let mut replicas = [
        start_replica(&server, "replica-a", store.path()),
        start_replica(&server, "replica-b", store.path()),
    ];

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
    let holder = common::lease_holder(&client, "kubewarden", "palisade-controller", 30).await;
    let leader = replicas.iter().position(|r| r.identity == holder).unwrap();
    let follower = 1 - leader;
    assert!(reconciled_policy_servers(&replicas[leader]).await.unwrap() >= 1.0);
    assert_eq!(
        reconciled_policy_servers(&replicas[follower]).await,
        Some(0.0),
        "a follower must not reconcile"
    );

    // SIGTERM: the leader stops reconciling, releases the lease and exits 0.
    let status = terminate(&mut replicas[leader]);
    assert!(status.success(), "leader exited with {status}");
    let next = replicas[follower].identity;
    common::eventually(60, "the follower to take the lease", || async {
        let lease = leases.get_opt("palisade-controller").await.ok()??;
        (lease.spec?.holder_identity.as_deref() == Some(next)).then_some(())
    })
    .await;

    // The new leader reconciles a change.
    servers
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    common::eventually(60, "the new leader to scale the Deployment", || async {
        let deployment = deployments.get_opt("policy-server-default").await.ok()??;
        (deployment.spec.replicas == Some(2)).then_some(())
    })
    .await;
    let status = terminate(&mut replicas[follower]);
    assert!(status.success(), "second leader exited with {status}");
}

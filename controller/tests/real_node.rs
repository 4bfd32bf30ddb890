//! Palisade installed on a real node (`scripts/node.sh`): the project's
//! images imported into containerd, the controller running as a pod with
//! the ServiceAccount and RBAC of `controller/deploy/install.yaml`, policy
//! servers started by the kubelet from the Deployment the controller
//! writes, and the API server calling them through their Service. Nothing
//! here is marked Ready by the test: the probes decide.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::node::Node;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use palisade_controller::crd::{ClusterAdmissionPolicy, PolicyServer, PolicyStatusPhase};
use palisade_controller::reconcile::WEBHOOK_CONFIGURED;
use palisade_controller::webhook::{POLICY_LABEL, POLICY_SERVER_LABEL};
use palisade_host::fetch::{Fetcher, FetcherOptions};
use serde_json::json;

const NAMESPACE: &str = "kubewarden";
const INSTALL: &str = include_str!("../deploy/install.yaml");

struct World {
    node: Node,
    client: kube::Client,
    policy_server_image: String,
    privileged_module: String,
}

fn pod(name: &str, privileged: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "app",
            "image": "localhost/palisade/pause:3.10",
            "securityContext": {"privileged": privileged}
        }]}
    }))
    .unwrap()
}

fn pods_rule() -> serde_json::Value {
    json!([{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "operations": ["CREATE", "UPDATE"]}])
}

impl World {
    async fn new() -> Self {
        let node = Node::up();
        let client = node.client().await;
        Self {
            node,
            client,
            policy_server_image: String::new(),
            privileged_module: String::new(),
        }
    }

    /// Pushes a sample policy to the node's registry (through the relay on
    /// loopback); the reference pods use (the registry's address inside).
    async fn push(&self, policy: &str) -> String {
        let from_host = self.node.get("NODE_REGISTRY_FROM_HOST");
        let store = tempfile::tempdir().unwrap();
        let pusher = Fetcher::new(FetcherOptions {
            store_dir: store.path().to_path_buf(),
            sources: serde_yaml::from_str(&format!("insecure_sources: [\"{from_host}\"]")).unwrap(),
            ..FetcherOptions::default()
        })
        .unwrap();
        pusher
            .push(
                &std::fs::read(common::policy_path(policy)).unwrap(),
                &format!("registry://{from_host}/policies/{policy}:v1"),
            )
            .await
            .unwrap();
        format!(
            "registry://{}/policies/{policy}:v1",
            self.node.get("NODE_REGISTRY")
        )
    }

    async fn deployment_ready(&self, name: &str, replicas: i32) {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
        common::eventually(
            180,
            &format!("{name} to have {replicas} ready pods"),
            || async {
                let status = deployments.get_opt(name).await.ok()??.status?;
                (status.ready_replicas == Some(replicas)
                    && status.updated_replicas == Some(replicas)
                    && status.replicas == Some(replicas))
                .then_some(())
            },
        )
        .await;
    }

    async fn images_import_and_the_controller_runs_as_a_pod(&mut self) {
        let images = self.node.import_images(&["policy-server", "controller"]);
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            images,
            [
                format!("localhost/palisade/policy-server:{version}"),
                format!("localhost/palisade/controller:{version}")
            ]
        );
        assert!(
            INSTALL.contains(&images[1]),
            "install.yaml must name the image of this version ({})",
            images[1]
        );
        self.policy_server_image = images[0].clone();
        common::install_crds(&self.client, palisade_controller::crd::crds()).await;
        for document in INSTALL.split("\n---\n") {
            common::create_yaml(&self.client, document).await.unwrap();
        }
        self.deployment_ready("palisade-controller", 1).await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let controller = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=palisade-controller"))
            .await
            .unwrap()
            .items;
        assert_eq!(controller.len(), 1);
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NAMESPACE);
        let holder = common::eventually(60, "the controller pod to hold the lease", || async {
            leases
                .get_opt("palisade-controller")
                .await
                .ok()??
                .spec?
                .holder_identity
        })
        .await;
        assert_eq!(holder, controller[0].name_any());
    }

    /// The policy is created with its PolicyServer, before any pod exists:
    /// it may become active only once the Deployment's pods passed their
    /// readiness probe.
    async fn a_policy_becomes_active_only_after_the_policy_server_is_ready(&mut self) {
        let module = self.push("pod-privileged").await;
        self.privileged_module = module.clone();
        let servers: Api<PolicyServer> = Api::all(self.client.clone());
        servers
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "policies.kubewarden.io/v1", "kind": "PolicyServer",
                    "metadata": {"name": "default"},
                    "spec": {
                        "image": self.policy_server_image, "replicas": 1,
                        "serviceAccountName": "policy-server",
                        "insecureSources": [self.node.get("NODE_REGISTRY")]
                    }
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let policies: Api<ClusterAdmissionPolicy> = Api::all(self.client.clone());
        policies
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
                    "metadata": {"name": "privileged-pods"},
                    "spec": {"policyServer": "default", "module": module, "mode": "protect",
                             "rules": pods_rule(), "mutating": false}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let status = policies.get("privileged-pods").await.unwrap().status;
            if status.as_ref().and_then(|s| s.policy_status.as_ref())
                == Some(&PolicyStatusPhase::Active)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "privileged-pods not active in 180 s: {status:?}; kubelet log:\n{}",
                self.node.log("kubelet")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Read right after the phase turned: the pods were already Ready.
        let ready = deployments
            .get("policy-server-default")
            .await
            .unwrap()
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        assert!(ready >= 1, "the policy is active with {ready} ready pods");

        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let server_pods = pods
            .list(&ListParams::default().labels(&format!("{POLICY_SERVER_LABEL}=default")))
            .await
            .unwrap()
            .items;
        assert!(!server_pods.is_empty());
        for pod in &server_pods {
            let spec = pod.spec.as_ref().unwrap();
            let security = spec.containers[0].security_context.as_ref().unwrap();
            assert_eq!(security.read_only_root_filesystem, Some(true));
            assert_eq!(security.run_as_non_root, Some(true));
            assert_eq!(
                security.capabilities.as_ref().unwrap().drop,
                Some(vec!["ALL".to_owned()])
            );
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            assert!(ready, "{} is not Ready", pod.name_any());
        }
    }

    async fn the_api_server_rejects_a_privileged_pod_through_the_service(&self) {
        let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let config = webhooks.get("clusterwide-privileged-pods").await.unwrap();
        let client_config = &config.webhooks.unwrap()[0].client_config;
        let service = client_config
            .service
            .as_ref()
            .expect("called through the Service");
        assert_eq!(service.namespace, NAMESPACE);
        assert!(client_config.url.is_none());

        common::create_namespaces(&self.client, &["team"]).await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "team");
        let denied = pods
            .create(&PostParams::default(), &pod("privileged", true))
            .await
            .expect_err("a privileged pod was admitted");
        assert!(
            denied.to_string().contains("privileged"),
            "denied for another reason: {denied}"
        );
        pods.create(&PostParams::default(), &pod("plain", false))
            .await
            .unwrap();
        common::eventually(60, "the admitted pod to run", || async {
            let phase = pods.get("plain").await.ok()?.status?.phase?;
            (phase == "Running").then_some(())
        })
        .await;
    }

    async fn a_mutation_lands_on_the_stored_object(&self) {
        let module = self.push("default-security-context").await;
        let policies: Api<ClusterAdmissionPolicy> = Api::all(self.client.clone());
        policies
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
                    "metadata": {"name": "default-security-context"},
                    "spec": {"policyServer": "default", "module": module, "mode": "protect",
                             "rules": pods_rule(), "mutating": true}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        common::eventually(180, "the mutating webhook to be registered", || async {
            mutating
                .get_opt("clusterwide-default-security-context")
                .await
                .ok()?
        })
        .await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), "team");
        let stored = pods
            .create(&PostParams::default(), &pod("mutated", false))
            .await
            .unwrap();
        let security = stored.spec.unwrap().security_context.unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
    }

    /// The namespace-labels policy reads the request's Namespace from the
    /// API server, as the policy-server's ServiceAccount (`install.yaml`
    /// grants it read access): the answer depends on what it read.
    async fn a_context_aware_policy_reads_the_cluster_as_the_policy_server(&self) {
        let module = self.push("namespace-labels").await;
        let policies: Api<ClusterAdmissionPolicy> = Api::all(self.client.clone());
        policies
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
                    "metadata": {"name": "namespace-labels"},
                    "spec": {"policyServer": "default", "module": module,
                             "settings": {"labels": ["cost-center"]},
                             "contextAwareResources": [{"apiVersion": "v1", "kind": "Namespace"}],
                             "namespaceSelector": {"matchLabels": {"context-check": "yes"}},
                             "rules": pods_rule()}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        for (name, labels) in [
            (
                "labelled",
                json!({"context-check": "yes", "cost-center": "42"}),
            ),
            ("unlabelled", json!({"context-check": "yes"})),
        ] {
            Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone())
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}}))
                        .unwrap(),
                )
                .await
                .unwrap();
        }
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        common::eventually(180, "the context-aware policy's webhook", || async {
            validating
                .get_opt("clusterwide-namespace-labels")
                .await
                .ok()?
        })
        .await;
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        Api::<Pod>::namespaced(self.client.clone(), "labelled")
            .create(&dry_run, &pod("reads", false))
            .await
            .unwrap();
        let denied = Api::<Pod>::namespaced(self.client.clone(), "unlabelled")
            .create(&dry_run, &pod("reads", false))
            .await
            .expect_err("a pod in a namespace without the label was admitted");
        assert!(
            denied
                .to_string()
                .contains("namespace `unlabelled` lacks the labels: cost-center"),
            "denied for another reason: {denied}"
        );
    }

    /// A client sends admission requests (server-side dry runs: admitted or
    /// not, nothing is stored) all along while the PolicyServer scales to
    /// two replicas and a policy change rolls its pods: not one may fail.
    async fn scaling_and_a_policy_change_fail_no_request(&self) {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let sender = {
            let (stop, sent) = (stop.clone(), sent.clone());
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), "team");
            tokio::spawn(async move {
                let mut failures = Vec::new();
                let dry_run = PostParams {
                    dry_run: true,
                    ..PostParams::default()
                };
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    if let Err(e) = pods
                        .create(&dry_run, &pod(&format!("load-{i}"), false))
                        .await
                    {
                        failures.push(e.to_string());
                    }
                    match pods
                        .create(&dry_run, &pod(&format!("load-p-{i}"), true))
                        .await
                    {
                        Err(kube::Error::Api(status)) if status.message.contains("privileged") => {}
                        other => failures.push(format!("privileged pod: {other:?}")),
                    }
                    sent.fetch_add(2, Ordering::Relaxed);
                }
                failures
            })
        };
        let servers: Api<PolicyServer> = Api::all(self.client.clone());
        servers
            .patch(
                "default",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 2}})),
            )
            .await
            .unwrap();
        self.deployment_ready("policy-server-default", 2).await;
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), NAMESPACE);
        let generation = deployments
            .get("policy-server-default")
            .await
            .unwrap()
            .metadata
            .generation;
        let policies: Api<ClusterAdmissionPolicy> = Api::all(self.client.clone());
        policies
            .patch(
                "privileged-pods",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"timeoutEvalSeconds": 5}})),
            )
            .await
            .unwrap();
        common::eventually(60, "the policy change to roll the pods", || async {
            let now = deployments.get("policy-server-default").await.ok()?;
            (now.metadata.generation > generation).then_some(())
        })
        .await;
        self.deployment_ready("policy-server-default", 2).await;
        // Old pods terminating, then a few more seconds of requests.
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.store(true, Ordering::Relaxed);
        let failures = sender.await.unwrap();
        let sent = sent.load(Ordering::Relaxed);
        assert!(sent > 50, "only {sent} requests were sent");
        assert!(
            failures.is_empty(),
            "{} of {sent} admission requests failed, first: {:?}",
            failures.len(),
            failures.first()
        );
    }

    /// The controller's ClusterRole without `create` on webhook
    /// configurations: a new policy says so in its status (not only in the
    /// controller's log), and becomes active once the verb is back.
    async fn a_missing_permission_is_said_on_the_policy(&self) {
        let roles: Api<ClusterRole> = Api::all(self.client.clone());
        let original = roles.get("palisade-controller").await.unwrap();
        let mut reduced = original.clone();
        for rule in reduced.rules.iter_mut().flatten() {
            if rule
                .resources
                .iter()
                .flatten()
                .any(|r| r == "validatingwebhookconfigurations")
            {
                rule.verbs.retain(|verb| verb != "create");
            }
        }
        roles
            .replace("palisade-controller", &PostParams::default(), &reduced)
            .await
            .unwrap();
        let policies: Api<ClusterAdmissionPolicy> = Api::all(self.client.clone());
        policies
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
                    "metadata": {"name": "needs-create"},
                    "spec": {"policyServer": "default", "module": self.privileged_module,
                             "rules": pods_rule()}
                }))
                .unwrap(),
            )
            .await
            .unwrap();
        let condition =
            common::eventually(120, "the policy to say it lacks a permission", || async {
                let status = policies.get("needs-create").await.ok()?.status?;
                let condition = status
                    .conditions
                    .into_iter()
                    .find(|c| c.type_ == WEBHOOK_CONFIGURED && c.status == "False")?;
                assert_ne!(status.policy_status, Some(PolicyStatusPhase::Active));
                Some(condition)
            })
            .await;
        assert!(
            condition.message.contains("forbidden") && condition.message.contains("create"),
            "the condition does not name the missing permission: {}",
            condition.message
        );
        let mut restored = roles.get("palisade-controller").await.unwrap();
        restored.rules = original.rules;
        roles
            .replace("palisade-controller", &PostParams::default(), &restored)
            .await
            .unwrap();
        common::eventually(
            120,
            "the policy to become active with the verb back",
            || async {
                let status = policies.get("needs-create").await.ok()?.status?;
                (status.policy_status == Some(PolicyStatusPhase::Active)
                    && !status
                        .conditions
                        .iter()
                        .any(|c| c.type_ == WEBHOOK_CONFIGURED))
                .then_some(())
            },
        )
        .await;
    }

    async fn deleting_the_policy_server_removes_its_pods_and_webhooks(&self) {
        let servers: Api<PolicyServer> = Api::all(self.client.clone());
        servers
            .delete("default", &DeleteParams::default())
            .await
            .unwrap();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        common::eventually(180, "the policy-server pods and webhooks to go", || async {
            let left = pods
                .list(&ListParams::default().labels(&format!("{POLICY_SERVER_LABEL}=default")))
                .await
                .ok()?
                .items
                .len()
                + validating
                    .list(&ListParams::default().labels(POLICY_LABEL))
                    .await
                    .ok()?
                    .items
                    .len()
                + mutating
                    .list(&ListParams::default().labels(POLICY_LABEL))
                    .await
                    .ok()?
                    .items
                    .len();
            (left == 0).then_some(())
        })
        .await;
        // Without webhooks, the cluster admits again.
        let team: Api<Pod> = Api::namespaced(self.client.clone(), "team");
        team.create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod("after", true),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn palisade_runs_on_a_real_node() {
    let mut world = World::new().await;
    world.images_import_and_the_controller_runs_as_a_pod().await;
    world
        .a_policy_becomes_active_only_after_the_policy_server_is_ready()
        .await;
    world
        .the_api_server_rejects_a_privileged_pod_through_the_service()
        .await;
    world.a_mutation_lands_on_the_stored_object().await;
    world
        .a_context_aware_policy_reads_the_cluster_as_the_policy_server()
        .await;
    world.scaling_and_a_policy_change_fail_no_request().await;
    world.a_missing_permission_is_said_on_the_policy().await;
    world
        .deleting_the_policy_server_removes_its_pods_and_webhooks()
        .await;
}

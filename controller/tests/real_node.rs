//! Palisade installed with its Helm chart on a real node
//! (`scripts/node.sh`): the project's images imported into containerd, the
//! controller running as a pod with the chart's ServiceAccount and RBAC,
//! policy servers started by the kubelet from the Deployment the controller
//! writes, the API server calling them through their Service, the audit
//! scanner's CronJob, then `helm upgrade`, `helm uninstall` and a second
//! install. Nothing here is marked Ready by the test: the probes decide.

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
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/palisade");
const RELEASE: &str = "palisade";

struct World {
    node: Node,
    client: kube::Client,
    privileged_module: String,
    /// When `helm install` was started, for the install-to-enforcing time.
    install_started: Instant,
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
            privileged_module: String::new(),
            install_started: Instant::now(),
        }
    }

    /// Runs the project's Helm against the node; its output.
    fn helm(&self, args: &[&str]) -> String {
        common::node::run(
            std::process::Command::new(common::tool_bin("helm"))
                .args(args)
                .env("KUBECONFIG", self.node.get("KUBECONFIG")),
            &format!("helm {args:?}"),
        )
    }

    /// `helm install` of the chart, pods pulling policies from the node's
    /// registry, the audit schedule far away (the test starts its job). The
    /// first install pulls the images from the node's registry
    /// (`image.repository`), the second runs the imported ones.
    fn helm_install(&mut self, from_registry: bool) {
        let insecure = format!(
            "policyServer.insecureSources={{{}}}",
            self.node.get("NODE_REGISTRY")
        );
        let repository = format!(
            "image.repository={}/palisade",
            self.node.get("NODE_REGISTRY")
        );
        let mut args = vec![
            "install",
            RELEASE,
            CHART,
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--wait",
            "--timeout",
            "3m",
            "--set",
            &insecure,
            "--set",
            "auditScanner.schedule=0 0 1 1 *",
        ];
        if from_registry {
            args.extend(["--set", &repository, "--set", "image.pullPolicy=Always"]);
        }
        self.install_started = Instant::now();
        self.helm(&args);
        println!(
            "helm install --wait: {:.1} s",
            self.install_started.elapsed().as_secs_f64()
        );
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

    /// Creates the ClusterAdmissionPolicy `name` with `spec` (on the default
    /// PolicyServer and the pods rule, unless `spec` says otherwise).
    async fn create_policy(
        &self,
        name: &str,
        mut spec: serde_json::Value,
    ) -> Result<ClusterAdmissionPolicy, kube::Error> {
        let fields = spec.as_object_mut().unwrap();
        fields.entry("policyServer").or_insert(json!("default"));
        fields.entry("rules").or_insert_with(pods_rule);
        Api::<ClusterAdmissionPolicy>::all(self.client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "policies.kubewarden.io/v1", "kind": "ClusterAdmissionPolicy",
                    "metadata": {"name": name}, "spec": spec
                }))
                .unwrap(),
            )
            .await
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

    async fn images_import_and_helm_installs_the_controller(&mut self) {
        let images =
            self.node
                .import_and_push_images(&["policy-server", "controller", "audit-scanner"]);
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            images,
            ["policy-server", "controller", "audit-scanner"]
                .map(|name| format!("localhost/palisade/{name}:{version}"))
        );
        self.helm(&["lint", CHART]);
        self.helm_install(true);
        let controller = Api::<Deployment>::namespaced(self.client.clone(), NAMESPACE)
            .get("palisade-controller")
            .await
            .unwrap();
        let image = controller.spec.template.spec.unwrap().containers[0]
            .image
            .clone()
            .unwrap();
        assert!(
            image.starts_with(self.node.get("NODE_REGISTRY")),
            "the controller runs {image}, not the pushed image"
        );
        self.deployment_ready("palisade-controller", 1).await;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        let controller = pods
            .list(&ListParams::default().labels("app.kubernetes.io/name=palisade-controller"))
            .await
            .unwrap()
            .items;
        assert_eq!(controller.len(), 1);
        let holder = common::lease_holder(&self.client, NAMESPACE, "palisade-controller", 60).await;
        assert_eq!(holder, controller[0].name_any());
    }

    /// The policy is created as soon as Helm returns (the chart's
    /// PolicyServer is then only starting its pods): it may become active
    /// only once the Deployment's pods passed their readiness probe.
    async fn a_policy_becomes_active_only_after_the_policy_server_is_ready(&mut self) {
        let module = self.push("pod-privileged").await;
        self.privileged_module = module.clone();
        let policies: Api<ClusterAdmissionPolicy> = Api::all(self.client.clone());
        self.create_policy(
            "privileged-pods",
            json!({"module": module, "mode": "protect", "mutating": false}),
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
        println!(
            "install to enforcing (helm install to the first rejected privileged pod, images pulled from the node's registry): {:.1} s",
            self.install_started.elapsed().as_secs_f64()
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
        self.create_policy(
            "default-security-context",
            json!({"module": module, "mode": "protect", "mutating": true}),
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
    /// API server, as the policy-server's ServiceAccount (the chart grants
    /// it read access): the answer depends on what it read.
    async fn a_context_aware_policy_reads_the_cluster_as_the_policy_server(&self) {
        let module = self.push("namespace-labels").await;
        self.create_policy(
            "namespace-labels",
            json!({"module": module,
                             "settings": {"labels": ["cost-center"]},
                             "contextAwareResources": [{"apiVersion": "v1", "kind": "Namespace"}],
                             "namespaceSelector": {"matchLabels": {"context-check": "yes"}}}),
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
            common::create_namespace(&self.client, name, labels).await;
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
    /// not, nothing is stored) all along while `helm upgrade` scales the
    /// PolicyServer to two replicas and a policy change rolls its pods: not
    /// one may fail.
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
        self.helm(&[
            "upgrade",
            RELEASE,
            CHART,
            "--namespace",
            NAMESPACE,
            "--reuse-values",
            "--set",
            "policyServer.replicas=2",
            "--wait",
            "--timeout",
            "3m",
        ]);
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
        self.create_policy("needs-create", json!({"module": self.privileged_module}))
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

    /// The controller's own webhook, with the certificate it issued itself
    /// (trusted through the engine's CA bundle), refuses a policy whose
    /// settings the policy rejects, with the policy's message.
    async fn invalid_settings_are_refused_at_apply_time(&self) {
        let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let config = webhooks.get("palisade-controller").await.unwrap();
        let webhook = &config.webhooks.unwrap()[0];
        assert_eq!(webhook.failure_policy.as_deref(), Some("Fail"));
        let secret =
            Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), NAMESPACE)
                .get("policy-server-root-ca")
                .await
                .unwrap();
        assert_eq!(
            webhook.client_config.ca_bundle.as_ref().map(|b| &b.0),
            secret.data.unwrap().get("ca-bundle.crt").map(|b| &b.0),
            "the webhook is not registered with the engine's CA bundle"
        );
        let module = self.push("namespace-labels").await;
        let refused = self
            .create_policy(
                "bad-settings",
                json!({"module": module, "settings": {"lables": ["team"]}}),
            )
            .await
            .expect_err("a policy with settings it rejects was stored");
        assert!(
            refused.to_string().contains("unknown field `lables`"),
            "refused for another reason: {refused}"
        );
    }

    /// Every object the chart renders, with the default values and with a
    /// matrix of others, is accepted by the API server (server-side dry run).
    fn rendered_charts_are_accepted_by_the_api_server(&self) {
        let matrix: [&[&str]; 4] = [
            &[],
            &[
                "--set",
                "policyServer.replicas=3",
                "--set",
                "policyServer.minAvailable=1",
                "--set",
                "policyServer.insecureSources={registry.test:5000}",
                "--set",
                "policyServer.resources.limits.memory=512Mi",
                "--set",
                "controller.replicas=2",
                "--set",
                "controller.logFormat=text",
                "--set",
                "imagePullSecrets[0].name=pull",
            ],
            &[
                "--set",
                "auditScanner.reportKind=policyreport",
                "--set",
                "auditScanner.ignoreNamespaces={kube-system,team}",
                "--set",
                "recommendedPolicies.enabled=true",
                "--set",
                "recommendedPolicies.registry=registry.test:5000",
                "--set",
                "recommendedPolicies.mode=protect",
            ],
            &[
                "--set",
                "auditScanner.enabled=false",
                "--set",
                "policyServer.enabled=false",
            ],
        ];
        for values in matrix {
            let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
            args.extend_from_slice(values);
            let rendered = self.helm(&args);
            let mut apply = std::process::Command::new(common::tool_bin("kubectl"))
                .args(["apply", "--dry-run=server", "-f", "-"])
                .env("KUBECONFIG", self.node.get("KUBECONFIG"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write as _;
            apply
                .stdin
                .take()
                .unwrap()
                .write_all(rendered.as_bytes())
                .unwrap();
            let output = apply.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "the API server refused the chart rendered with {values:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// The audit scanner's CronJob, started now: its job completes and
    /// writes a report for the pod that runs.
    async fn the_audit_scanner_job_writes_reports(&self) {
        use k8s_openapi::api::batch::v1::{CronJob, Job};
        let cronjob = Api::<CronJob>::namespaced(self.client.clone(), NAMESPACE)
            .get("palisade-audit-scanner")
            .await
            .unwrap();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), NAMESPACE);
        let template = cronjob.spec.job_template;
        jobs.create(
            &PostParams::default(),
            &Job {
                metadata: kube::api::ObjectMeta {
                    name: Some("audit-now".to_owned()),
                    ..Default::default()
                },
                spec: template.spec,
                status: None,
            },
        )
        .await
        .unwrap();
        common::eventually(180, "the audit job to complete", || async {
            let status = jobs.get("audit-now").await.ok()?.status?;
            assert!(
                status.failed.unwrap_or(0) == 0,
                "the audit job failed: {status:?}"
            );
            (status.succeeded.unwrap_or(0) >= 1).then_some(())
        })
        .await;
        let reports: Api<kube::core::DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            "team",
            &kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                "openreports.io",
                "v1alpha1",
                "Report",
            )),
        );
        let all = reports.list(&ListParams::default()).await.unwrap().items;
        let plain = all
            .iter()
            .find(|r| r.data["scope"]["name"] == "plain")
            .unwrap_or_else(|| panic!("no report for pod team/plain among {} reports", all.len()));
        assert!(
            plain.data["summary"]["pass"].as_u64().unwrap_or(0) >= 1,
            "{:?}",
            plain.data
        );
    }

    /// `helm uninstall`: its pre-delete hook removes the webhooks first, so
    /// the cluster admits again; the policy-servers go; CRDs (and report
    /// CRDs) and the users' policies stay. Then a second install enforces
    /// the same policies again.
    async fn helm_uninstall_leaves_no_webhook_and_a_reinstall_enforces_again(&mut self) {
        self.helm(&[
            "uninstall",
            RELEASE,
            "--namespace",
            NAMESPACE,
            "--wait",
            "--timeout",
            "3m",
        ]);
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(self.client.clone());
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let webhooks = validating
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len()
            + mutating
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .len();
        assert_eq!(
            webhooks, 0,
            "webhook configurations left after helm uninstall"
        );
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NAMESPACE);
        common::eventually(
            120,
            "the policy-server and controller pods to go",
            || async {
                let left = pods.list(&ListParams::default()).await.ok()?.items;
                left.iter()
                    .all(|p| p.labels().get("job-name").is_some())
                    .then_some(())
            },
        )
        .await;
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(self.client.clone());
        for crd in [
            "policyservers.policies.kubewarden.io",
            "clusteradmissionpolicies.policies.kubewarden.io",
            "reports.openreports.io",
        ] {
            assert!(
                crds.get_opt(crd).await.unwrap().is_some(),
                "{crd} was removed"
            );
        }
        let policies: Api<ClusterAdmissionPolicy> = Api::all(self.client.clone());
        assert!(policies.get_opt("privileged-pods").await.unwrap().is_some());
        let team: Api<Pod> = Api::namespaced(self.client.clone(), "team");
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        team.create(&dry_run, &pod("between-installs", true))
            .await
            .unwrap();

        self.helm_install(false);
        common::eventually(180, "privileged-pods to be active again", || async {
            let status = policies.get("privileged-pods").await.ok()?.status?;
            (status.policy_status == Some(PolicyStatusPhase::Active)).then_some(())
        })
        .await;
        let denied = team
            .create(&dry_run, &pod("after-reinstall", true))
            .await
            .expect_err("a privileged pod was admitted after the reinstall");
        assert!(denied.to_string().contains("privileged"), "{denied}");
        println!(
            "reinstall to enforcing: {:.1} s",
            self.install_started.elapsed().as_secs_f64()
        );
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
    world.images_import_and_helm_installs_the_controller().await;
    world
        .a_policy_becomes_active_only_after_the_policy_server_is_ready()
        .await;
    world
        .the_api_server_rejects_a_privileged_pod_through_the_service()
        .await;
    world.rendered_charts_are_accepted_by_the_api_server();
    world.invalid_settings_are_refused_at_apply_time().await;
    world.a_mutation_lands_on_the_stored_object().await;
    world
        .a_context_aware_policy_reads_the_cluster_as_the_policy_server()
        .await;
    world.scaling_and_a_policy_change_fail_no_request().await;
    world.a_missing_permission_is_said_on_the_policy().await;
    world.the_audit_scanner_job_writes_reports().await;
    world
        .helm_uninstall_leaves_no_webhook_and_a_reinstall_enforces_again()
        .await;
    world
        .deleting_the_policy_server_removes_its_pods_and_webhooks()
        .await;
}

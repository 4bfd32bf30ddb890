//! End to end through a real API server: the controller turns a
//! PolicyServer into certificates, a ConfigMap, a Deployment, a Service and
//! a PodDisruptionBudget, and policies of every kind into configuration and
//! webhooks (out-of-cluster mode, URL on loopback) once the rollout is
//! ready; a policy-server runs on loopback from that ConfigMap and
//! certificate, and the API server itself calls it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::DynamicObject;
use palisade_controller::crd::{
    AdmissionPolicy, ClusterAdmissionPolicy, ClusterAdmissionPolicyGroup, PolicyServer,
    PolicyStatus, PolicyStatusPhase,
};
use palisade_controller::kinds::PolicyResource;
use palisade_controller::reconcile::Context;
use palisade_controller::settings::SettingsChecker;
use palisade_controller::webhook::WebhookEndpoint;
use palisade_host::fetch::FetcherOptions;
use palisade_host::server::{PoliciesConfig, TlsFiles};
use serde_json::json;

fn pod(name: &str, privileged: bool) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "securityContext": {"privileged": privileged}}]}
    }))
    .unwrap()
}

fn resource(kind: &str) -> kube::discovery::ApiResource {
    kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "policies.kubewarden.io",
        "v1",
        kind,
    ))
}

/// Applies a manifest as `kubectl apply` would send it (no Rust types involved).
async fn apply_yaml(client: &kube::Client, yaml: &str) {
    common::create_yaml(client, yaml).await.unwrap();
}

/// Pushes a sample policy to the loopback registry (plain HTTP).
async fn push(registry: &common::registry::Registry, policy: &str, reference: &str) {
    let store = tempfile::tempdir().unwrap();
    let pusher = palisade_host::fetch::Fetcher::new(FetcherOptions {
        store_dir: store.path().to_path_buf(),
        sources: serde_yaml::from_str(&registry.sources_yaml()).unwrap(),
        ..FetcherOptions::default()
    })
    .unwrap();
    pusher
        .push(
            &std::fs::read(common::policy_path(policy)).unwrap(),
            reference,
        )
        .await
        .unwrap();
}

fn file_module(name: &str) -> String {
    format!("file://{}", common::policy_path(name).display())
}

fn pods_rule() -> &'static str {
    "  rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [CREATE, UPDATE]\n"
}

async fn phase_of<K: PolicyResource>(
    api: &Api<K>,
    name: &str,
) -> Option<(PolicyStatusPhase, PolicyStatus)> {
    let status = api.get(name).await.ok()?.status()?.clone();
    Some((status.policy_status?, status))
}

async fn wait_for_phase<K: PolicyResource>(
    api: &Api<K>,
    name: &str,
    phase: PolicyStatusPhase,
) -> PolicyStatus {
    common::eventually(90, &format!("{name} to be {phase:?}"), || async {
        let (now, status) = phase_of(api, name).await?;
        (now == phase).then_some(status)
    })
    .await
}

fn condition<'a>(status: &'a PolicyStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status:?}"))
}

fn secret_text(secret: &Secret, key: &str) -> String {
    palisade_controller::pki_secrets::secret_text(secret, key).unwrap()
}

/// Waits until the loopback policy-server serves `id` (it answers 404 for
/// an unknown id; the probe body is not a full review).
async fn wait_served(http: &reqwest::Client, base: &str, id: &str) {
    common::eventually(60, &format!("the policy-server to load {id}"), || async {
        let response = http
            .post(format!("{base}/validate/{id}"))
            .json(&json!({}))
            .send()
            .await;
        (response.ok()?.status() != 404).then_some(())
    })
    .await;
}

/// Everything the steps of the end-to-end story share.
struct World {
    client: kube::Client,
    work: tempfile::TempDir,
    /// The loopback registry with the upstream-SDK waPC policy; gone after
    /// the outage step.
    registry: Option<common::registry::Registry>,
    wapc_reference: String,
    /// The loopback policy-server's port and URL (the webhooks' base URL).
    port: u16,
    base: String,
    context: Arc<Context>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    deployments: Api<Deployment>,
    caps: Api<ClusterAdmissionPolicy>,
    webhooks: Api<ValidatingWebhookConfiguration>,
    mutating: Api<MutatingWebhookConfiguration>,
    pods: Api<Pod>,
    /// The CA Secret as first created.
    root: Option<Secret>,
    ca_bundle: String,
    /// An HTTPS client trusting the CA bundle.
    http: Option<reqwest::Client>,
    policy_server: Option<palisade_host::server::RunningServer>,
    metrics_url: String,
}

/// The policies active once every kind has been applied.
const ACTIVE_IDS: [&str; 5] = [
    "clusterwide-privileged-pods",
    "clusterwide-security-context",
    "clusterwide-team-label",
    "namespaced-team-privileged",
    "clusterwide-group-deployments",
];

impl World {
    /// Namespaces, the registry with the waPC module, and the controller in
    /// out-of-cluster mode (webhooks point at a loopback URL).
    async fn start(server: &common::ApiServer) -> Self {
        let client = server.client();
        common::install_crds(&client, palisade_controller::crd::crds()).await;
        common::create_namespaces(&client, &["kubewarden", "team"]).await;
        let registry = common::registry::Registry::start(Default::default());
        let work = tempfile::tempdir().unwrap();
        let wapc_reference = format!(
            "{}/kubewarden/policies/pod-privileged:v0.2.5",
            registry.host
        );
        push(&registry, "pod-privileged-wapc-wasip1", &wapc_reference).await;

        let port = common::free_port();
        let base = format!("https://127.0.0.1:{port}");
        let context = Arc::new(Context::new(
            client.clone(),
            "kubewarden".into(),
            WebhookEndpoint::Url { base: base.clone() },
            // Every reconcile checks the modules again (the outage below must be seen).
            SettingsChecker::new(FetcherOptions {
                store_dir: work.path().join("controller-store"),
                ..FetcherOptions::default()
            })
            .unwrap()
            .with_passed_ttl(Duration::ZERO),
        ));
        let controller = tokio::spawn(palisade_controller::reconcile::run(
            context.clone(),
            std::future::pending(),
        ));
        Self {
            secrets: Api::namespaced(client.clone(), "kubewarden"),
            config_maps: Api::namespaced(client.clone(), "kubewarden"),
            deployments: Api::namespaced(client.clone(), "kubewarden"),
            caps: Api::all(client.clone()),
            webhooks: Api::all(client.clone()),
            mutating: Api::all(client.clone()),
            pods: Api::namespaced(client.clone(), "default"),
            client,
            work,
            registry: Some(registry),
            wapc_reference,
            port,
            base,
            context,
            tasks: vec![controller],
            root: None,
            ca_bundle: String::new(),
            http: None,
            policy_server: None,
            metrics_url: String::new(),
        }
    }

    fn registry_host(&self) -> String {
        self.registry.as_ref().unwrap().host.clone()
    }

    fn http(&self) -> &reqwest::Client {
        self.http.as_ref().unwrap()
    }

    async fn served(&self, id: &str) {
        wait_served(self.http(), &self.base, id).await;
    }

    /// A PolicyServer becomes its CA and serving Secrets, Deployment,
    /// Service, PodDisruptionBudget and ConfigMap.
    async fn a_policy_server_becomes_its_objects(&mut self) -> Secret {
        apply_yaml(
            &self.client,
            &format!(
                "apiVersion: policies.kubewarden.io/v1\nkind: PolicyServer\nmetadata: {{name: default}}\nspec:\n  image: palisade/policy-server:test\n  replicas: 1\n  minAvailable: 1\n  insecureSources: [\"{}\"]\n",
                self.registry_host()
            ),
        )
        .await;
        let secrets = &self.secrets;
        let serving = common::eventually(30, "the serving certificate", || async {
            secrets.get_opt("policy-server-default").await.ok()?
        })
        .await;
        let root = secrets.get("policy-server-root-ca").await.unwrap();
        self.ca_bundle = secret_text(&root, "ca-bundle.crt");
        assert!(self.ca_bundle.contains(&secret_text(&root, "ca.crt")));
        self.root = Some(root);
        assert_eq!(serving.type_.as_deref(), Some("kubernetes.io/tls"));
        let deployments = &self.deployments;
        let deployment = common::eventually(30, "the Deployment", || async {
            deployments.get_opt("policy-server-default").await.ok()?
        })
        .await;
        let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("PolicyServer", "default")
        );
        let container = &deployment.spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("palisade/policy-server:test")
        );
        assert_eq!(
            container
                .security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
        assert!(container.readiness_probe.is_some());
        // The reconciler applies the Service and the budget after the
        // Deployment: wait for them too.
        let services: Api<Service> = Api::namespaced(self.client.clone(), "kubewarden");
        let service = common::eventually(30, "the Service", || async {
            services.get_opt("policy-server-default").await.ok()?
        })
        .await;
        let ports = service.spec.unwrap().ports.unwrap();
        assert_eq!(
            (ports[0].port, ports[0].target_port.clone()),
            (443, Some(IntOrString::Int(8443)))
        );
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), "kubewarden");
        let budget = common::eventually(30, "the PodDisruptionBudget", || async {
            budgets.get_opt("policy-server-default").await.ok()?
        })
        .await;
        assert_eq!(
            budget.spec.unwrap().min_available,
            Some(IntOrString::Int(1))
        );
        serving
    }

    /// What a pod of that Deployment would run: the policy-server with the
    /// controller's certificate, ConfigMap and sources, on loopback; and the
    /// kubelet's part: the ConfigMap projected into its file.
    async fn a_loopback_policy_server_runs_the_configuration(&mut self, serving: &Secret) {
        let config = self.config_maps.get("policy-server-default").await.unwrap();
        let sources_yml = config.data.as_ref().unwrap()["sources.yml"].clone();
        assert!(sources_yml.contains(&self.registry_host()), "{sources_yml}");
        let work = self.work.path();
        let pki = work.join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        std::fs::write(pki.join("tls.crt"), secret_text(serving, "tls.crt")).unwrap();
        std::fs::write(pki.join("tls.key"), secret_text(serving, "tls.key")).unwrap();
        let policies_file = work.join("policies.yml");
        std::fs::write(&policies_file, "{}").unwrap();
        let mut options = common::server::options(work, policies_file.clone());
        options.addr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        options.tls = Some(TlsFiles {
            cert: pki.join("tls.crt"),
            key: pki.join("tls.key"),
            client_ca: None,
        });
        options.fetch.sources = serde_yaml::from_str(&sources_yml).unwrap();
        options.always_accept_namespace = Some("kubewarden".into());
        // As the controller's Deployment runs it: every bound policy is in the
        // configuration, and one that fails to load answers 500 on its own.
        options.load.continue_on_errors = true;
        let policy_server = palisade_host::server::start(options).await.unwrap();
        self.metrics_url = format!("http://{}/metrics", policy_server.readiness_addr);
        self.policy_server = Some(policy_server);
        let config_maps = self.config_maps.clone();
        self.tasks.push(tokio::spawn(async move {
            loop {
                if let Ok(Some(cm)) = config_maps.get_opt("policy-server-default").await {
                    if let Some(text) = cm.data.and_then(|d| d.get("policies.yml").cloned()) {
                        if std::fs::read_to_string(&policies_file).ok().as_deref()
                            != Some(text.as_str())
                        {
                            let tmp = policies_file.with_extension("tmp");
                            // The directory goes when the test ends.
                            let _ = std::fs::write(&tmp, &text)
                                .and_then(|()| std::fs::rename(&tmp, &policies_file));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    /// An existing Kubewarden manifest for a waPC policy, unchanged: while
    /// no pod is ready, the policy waits for the rollout, without a webhook.
    async fn a_kubewarden_manifest_waits_for_the_rollout(&self) {
        apply_yaml(
            &self.client,
            &common::kubewarden_privileged_pods_manifest(&format!(
                "registry://{}",
                self.wapc_reference
            )),
        )
        .await;
        let pending =
            wait_for_phase(&self.caps, "privileged-pods", PolicyStatusPhase::Pending).await;
        let waiting = condition(&pending, "PolicyServerConfigurationUpToDate");
        assert_eq!(waiting.status, "False");
        let not_ready = Api::<PolicyServer>::all(self.client.clone())
            .get("default")
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        assert!(
            not_ready
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False"),
            "{not_ready:?}"
        );
        assert!(self
            .webhooks
            .get_opt("clusterwide-privileged-pods")
            .await
            .unwrap()
            .is_none());
    }

    /// Pods reported Ready: the policy becomes active, with a webhook of the
    /// right shape that trusts the CA bundle.
    async fn ready_pods_activate_the_policy(&mut self) {
        self.tasks.push(common::mark_pods_ready(
            self.client.clone(),
            "kubewarden",
            "kubewarden.io/policy-server=default",
        ));
        let active = wait_for_phase(&self.caps, "privileged-pods", PolicyStatusPhase::Active).await;
        assert_eq!(condition(&active, "PolicyActive").status, "True");
        assert_eq!(
            condition(&active, "PolicyServerConfigurationUpToDate").status,
            "True"
        );
        assert_eq!(condition(&active, "PolicyUniquelyReachable").status, "True");
        let ready = self.deployments.get("policy-server-default").await.unwrap();
        assert_eq!(ready.status.unwrap().ready_replicas, Some(1));
        let policy_servers: Api<PolicyServer> = Api::all(self.client.clone());
        common::eventually(30, "the PolicyServer to report Ready", || async {
            let status = policy_servers.get("default").await.ok()?.status?;
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
                .then_some(())
        })
        .await;

        let webhook = self
            .webhooks
            .get("clusterwide-privileged-pods")
            .await
            .unwrap();
        let hook = &webhook.webhooks.unwrap()[0];
        assert_eq!(
            hook.name,
            "clusterwide-privileged-pods.kubewarden.admission"
        );
        assert_eq!(
            hook.client_config.url.as_deref(),
            Some(format!("{}/validate/clusterwide-privileged-pods", self.base).as_str())
        );
        assert_eq!(
            hook.client_config.ca_bundle.as_ref().unwrap().0,
            self.ca_bundle.as_bytes()
        );
        assert_eq!(hook.admission_review_versions, ["v1"]);
        let excluded = &hook
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0];
        assert_eq!(
            (excluded.operator.as_str(), excluded.values.as_deref()),
            ("NotIn", Some(&["kubewarden".to_owned()][..]))
        );
        // The certificate the controller issued is trusted through the CA bundle.
        self.http = Some(common::server::client(&self.ca_bundle));
        self.served("clusterwide-privileged-pods").await;
    }

    /// The API server itself calls the webhook.
    async fn the_api_server_rejects_a_privileged_pod(&self, name: &str) {
        match self
            .pods
            .create(&PostParams::default(), &pod(name, true))
            .await
        {
            Err(kube::Error::Api(status)) => assert!(
                status
                    .message
                    .contains("privileged containers are not allowed: app"),
                "{}",
                status.message
            ),
            other => panic!("the privileged pod must be rejected by the API server: {other:?}"),
        }
    }

    /// A mutating policy, a monitor-mode policy, a namespaced policy and a
    /// group all become active, with webhooks of their kind and scope.
    async fn every_kind_becomes_active(&self) {
        let client = &self.client;
        apply_yaml(
            client,
            &format!(
                "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: security-context}}\nspec:\n  module: {}\n  mutating: true\n{}",
                file_module("default-security-context"),
                pods_rule()
            ),
        )
        .await;
        apply_yaml(
            client,
            &format!(
                "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: team-label}}\nspec:\n  module: {}\n  mode: monitor\n  settings: {{labels: [team]}}\n{}",
                file_module("required-labels"),
                pods_rule()
            ),
        )
        .await;
        apply_yaml(
            client,
            &format!(
                "apiVersion: policies.kubewarden.io/v1\nkind: AdmissionPolicy\nmetadata: {{name: privileged, namespace: team}}\nspec:\n  module: {}\n{}",
                file_module("pod-privileged"),
                pods_rule()
            ),
        )
        .await;
        apply_yaml(
            client,
            &format!(
                "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicyGroup\nmetadata: {{name: deployments}}\nspec:\n  expression: \"privileged() && labelled()\"\n  message: deployments must be unprivileged and labelled\n  rules:\n  - apiGroups: [apps]\n    apiVersions: [v1]\n    resources: [deployments]\n    operations: [CREATE]\n  policies:\n    privileged: {{module: \"{}\"}}\n    labelled: {{module: \"{}\", settings: {{labels: [app]}}}}\n",
                file_module("pod-privileged"),
                file_module("required-labels"),
            ),
        )
        .await;
        wait_for_phase(&self.caps, "security-context", PolicyStatusPhase::Active).await;
        wait_for_phase(&self.caps, "team-label", PolicyStatusPhase::Active).await;
        let aps: Api<AdmissionPolicy> = Api::namespaced(client.clone(), "team");
        wait_for_phase(&aps, "privileged", PolicyStatusPhase::Active).await;
        let groups: Api<ClusterAdmissionPolicyGroup> = Api::all(client.clone());
        wait_for_phase(&groups, "deployments", PolicyStatusPhase::Active).await;
        for id in ACTIVE_IDS {
            self.served(id).await;
        }
        assert!(self
            .mutating
            .get_opt("clusterwide-security-context")
            .await
            .unwrap()
            .is_some());
        let team_hook = self
            .webhooks
            .get("namespaced-team-privileged")
            .await
            .unwrap();
        let selector = team_hook.webhooks.unwrap()[0]
            .namespace_selector
            .clone()
            .unwrap();
        let only_team = &selector.match_expressions.unwrap()[0];
        assert_eq!(
            (only_team.operator.as_str(), only_team.values.as_deref()),
            ("In", Some(&["team".to_owned()][..]))
        );
        assert!(self
            .webhooks
            .get_opt("clusterwide-group-deployments")
            .await
            .unwrap()
            .is_some());
    }

    /// A manifest written by `palisade scaffold manifest` from a policy's
    /// metadata applies as it is and becomes active; then it is removed.
    async fn a_scaffolded_manifest_becomes_active(&self) {
        use palisade_host::scaffold::{manifest, ManifestInput, ManifestKind};
        let wasm = std::fs::read(common::policy_path("pod-privileged")).unwrap();
        let metadata = palisade_host::metadata::read_metadata(&wasm)
            .unwrap()
            .unwrap();
        let module = file_module("pod-privileged");
        let resource = manifest(
            &ManifestInput {
                kind: ManifestKind::ClusterAdmissionPolicy,
                name: "Scaffolded_Policy",
                namespace: None,
                module: &module,
                settings: json!({}),
                policy_server: "default",
            },
            &metadata,
        );
        apply_yaml(&self.client, &serde_yaml::to_string(&resource).unwrap()).await;
        let status =
            wait_for_phase(&self.caps, "scaffolded-policy", PolicyStatusPhase::Active).await;
        assert_eq!(condition(&status, "PolicyActive").status, "True");
        self.served("clusterwide-scaffolded-policy").await;
        let stored = self.caps.get("scaffolded-policy").await.unwrap();
        assert_eq!(
            stored.metadata.annotations.unwrap()["io.kubewarden.policy.severity"],
            "high"
        );
        self.caps
            .delete("scaffolded-policy", &DeleteParams::default())
            .await
            .unwrap();
    }

    /// The mutation is on the stored object; the monitor policy admitted
    /// the unlabelled pod and counted it.
    async fn mutations_are_stored_and_monitor_mode_counts(&self) {
        let stored = self
            .pods
            .create(&PostParams::default(), &pod("mutated", false))
            .await
            .unwrap();
        let stored = self.pods.get(&stored.metadata.name.unwrap()).await.unwrap();
        let spec = stored.spec.unwrap();
        assert_eq!(
            spec.security_context.and_then(|s| s.run_as_non_root),
            Some(true)
        );
        assert_eq!(
            spec.containers[0]
                .security_context
                .as_ref()
                .and_then(|s| s.allow_privilege_escalation),
            Some(false)
        );
        let metrics = common::server::get_text(&self.metrics_url).await;
        let monitored = metrics
            .lines()
            .filter(|l| l.starts_with("palisade_policy_evaluations_total"))
            .filter(|l| {
                l.contains("policy_name=\"clusterwide-team-label\"")
                    && l.contains("policy_mode=\"monitor\"")
                    && l.contains("accepted=\"false\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        assert!(
            monitored >= 1.0,
            "monitor-mode rejections not counted:\n{metrics}"
        );
    }

    /// The ConfigMap is derived state: edited into garbage, it is written
    /// again from the policies, and every active policy stays served,
    /// registered and enforced.
    async fn a_garbled_configuration_is_written_again(&self) {
        let config_maps = &self.config_maps;
        let mut garbled = config_maps.get("policy-server-default").await.unwrap();
        garbled
            .data
            .get_or_insert_with(Default::default)
            .insert("policies.yml".into(), "{not: [yaml".into());
        config_maps
            .replace("policy-server-default", &PostParams::default(), &garbled)
            .await
            .unwrap();
        common::eventually(30, "the configuration to be written again", || async {
            let text = config_maps
                .get("policy-server-default")
                .await
                .ok()?
                .data?
                .remove("policies.yml")?;
            let config = PoliciesConfig::parse(&text, "policies.yml").ok()?;
            ACTIVE_IDS
                .iter()
                .all(|id| config.entries.contains_key(*id))
                .then_some(())
        })
        .await;
        for id in ACTIVE_IDS {
            self.served(id).await;
            let registered = self.webhooks.get_opt(id).await.unwrap().is_some()
                || self.mutating.get_opt(id).await.unwrap().is_some();
            assert!(registered, "{id} lost its webhook");
        }
        self.the_api_server_rejects_a_privileged_pod("privileged-again")
            .await;
    }

    /// Invalid settings: pending with the policy's own message, a Warning
    /// Event saying so, and no webhook.
    async fn invalid_settings_stay_pending(&self) {
        apply_yaml(
            &self.client,
            &format!(
                "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: bad-labels}}\nspec:\n  module: {}\n  settings: {{labels: []}}\n{}",
                file_module("required-labels"),
                pods_rule()
            ),
        )
        .await;
        let pending = wait_for_phase(&self.caps, "bad-labels", PolicyStatusPhase::Pending).await;
        let why = condition(&pending, "PolicyActive");
        assert_eq!(why.reason, "InvalidSettings");
        assert!(
            why.message.contains("at least one required label"),
            "{}",
            why.message
        );
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(self.client.clone());
        let recorded =
            common::eventually(30, "an event saying why bad-labels is pending", || async {
                let list = events
                    .list(&kube::api::ListParams::default().fields("regarding.name=bad-labels"))
                    .await
                    .ok()?;
                list.items
                    .into_iter()
                    .find(|e| e.reason.as_deref() == Some("InvalidSettings"))
            })
            .await;
        assert_eq!(recorded.type_.as_deref(), Some("Warning"));
        assert!(recorded
            .note
            .unwrap_or_default()
            .contains("at least one required label"));
        assert!(self
            .webhooks
            .get_opt("clusterwide-bad-labels")
            .await
            .unwrap()
            .is_none());
    }

    /// A module that cannot be fetched: pending, saying why.
    async fn an_unfetchable_module_stays_pending(&self) {
        apply_yaml(
            &self.client,
            &format!(
                "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: missing-module}}\nspec:\n  module: registry://{}/kubewarden/policies/missing:v1\n  rules: []\n",
                self.registry_host()
            ),
        )
        .await;
        let pending =
            wait_for_phase(&self.caps, "missing-module", PolicyStatusPhase::Pending).await;
        let why = condition(&pending, "PolicyActive");
        assert_eq!(why.reason, "ModuleUnavailable");
        assert!(why.message.contains("missing"), "{}", why.message);
    }

    /// A registry outage does not end the enforcement of an active policy.
    async fn a_registry_outage_keeps_an_active_policy(&mut self) {
        self.registry = None;
        self.caps
            .patch(
                "privileged-pods",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"recheck": "1"}}})),
            )
            .await
            .unwrap();
        let caps = &self.caps;
        let outage = common::eventually(60, "the module check to fail", || async {
            let (phase, status) = phase_of(caps, "privileged-pods").await?;
            let check = status
                .conditions
                .iter()
                .find(|c| c.type_ == "ModuleCheck")?
                .clone();
            Some((phase, check))
        })
        .await;
        assert_eq!(outage.0, PolicyStatusPhase::Active);
        assert_eq!(outage.1.reason, "ModuleUnavailable");
        assert!(self
            .webhooks
            .get_opt("clusterwide-privileged-pods")
            .await
            .unwrap()
            .is_some());
    }

    /// Drift on a webhook configuration is reverted.
    async fn webhook_drift_is_reverted(&self) {
        let webhooks = &self.webhooks;
        webhooks
            .patch(
                "clusterwide-privileged-pods",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::<()>::Json(
                    serde_json::from_value(
                        json!([{"op": "replace", "path": "/webhooks/0/timeoutSeconds", "value": 29}]),
                    )
                    .unwrap(),
                ),
            )
            .await
            .unwrap();
        common::eventually(60, "the drift to be reverted", || async {
            let hook = webhooks.get("clusterwide-privileged-pods").await.ok()?;
            (hook.webhooks?[0].timeout_seconds == Some(10)).then_some(())
        })
        .await;
    }

    /// Deleting a policy removes its webhook; the privileged pod is then admitted.
    async fn deleting_a_policy_removes_its_webhook(&self) {
        self.caps
            .delete("privileged-pods", &DeleteParams::default())
            .await
            .unwrap();
        let webhooks = &self.webhooks;
        common::eventually(60, "the webhook to be removed", || async {
            webhooks
                .get_opt("clusterwide-privileged-pods")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
        self.pods
            .create(&PostParams::default(), &pod("privileged-later", true))
            .await
            .unwrap();
    }

    /// A lost CA is replaced at once: new serving certificate, new caBundle everywhere.
    async fn a_lost_ca_is_replaced(&self) {
        let secrets = &self.secrets;
        secrets
            .delete("policy-server-root-ca", &DeleteParams::default())
            .await
            .unwrap();
        let old_ca = secret_text(self.root.as_ref().unwrap(), "ca.crt");
        let new_root = common::eventually(30, "a new CA", || async {
            let root = secrets.get_opt("policy-server-root-ca").await.ok()??;
            (secret_text(&root, "ca.crt") != old_ca).then_some(root)
        })
        .await;
        let new_ca = secret_text(&new_root, "ca.crt");
        common::eventually(30, "the serving certificate to be reissued", || async {
            let serving = secrets.get_opt("policy-server-default").await.ok()??;
            (secret_text(&serving, "ca.crt") == new_ca).then_some(())
        })
        .await;
        let mutating = &self.mutating;
        common::eventually(30, "the webhooks to trust the new CA", || async {
            let config = mutating.get("clusterwide-security-context").await.ok()?;
            let bundle = config.webhooks?[0].client_config.ca_bundle.clone()?;
            (bundle.0 == secret_text(&new_root, "ca-bundle.crt").into_bytes()).then_some(())
        })
        .await;
    }

    /// Deleting the PolicyServer leaves no webhook behind; its policies are
    /// `scheduled` again and its objects are garbage collected.
    async fn deleting_the_policy_server_leaves_no_webhook(&self) {
        Api::<PolicyServer>::all(self.client.clone())
            .delete("default", &DeleteParams::default())
            .await
            .unwrap();
        let labelled =
            kube::api::ListParams::default().labels("kubewarden.io/policy-server=default");
        let (webhooks, mutating) = (&self.webhooks, &self.mutating);
        common::eventually(
            60,
            "every webhook of the policy server to be removed",
            || async {
                let validating = webhooks.list(&labelled).await.ok()?.items.len();
                let mutating = mutating.list(&labelled).await.ok()?.items.len();
                (validating + mutating == 0).then_some(())
            },
        )
        .await;
        wait_for_phase(&self.caps, "security-context", PolicyStatusPhase::Scheduled).await;
        let deployments = &self.deployments;
        common::eventually(60, "the Deployment to be garbage collected", || async {
            deployments
                .get_opt("policy-server-default")
                .await
                .ok()?
                .is_none()
                .then_some(())
        })
        .await;
        let reconciled = self.context.metrics.encode();
        assert!(
            reconciled.contains(
                "palisade_controller_reconciliations_total{kind=\"PolicyServer\",result=\"ok\"}"
            ),
            "{reconciled}"
        );
    }

    async fn stop(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(server) = self.policy_server.take() {
            server.shutdown().await;
        }
    }
}

/// One story, because the API server is costly to start: each step is named
/// and leaves the cluster as the next one expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_servers_and_policies_are_reconciled_and_enforced_by_the_api_server() {
    let server = common::ApiServer::start().await;
    let mut world = World::start(&server).await;
    let serving = world.a_policy_server_becomes_its_objects().await;
    world
        .a_loopback_policy_server_runs_the_configuration(&serving)
        .await;
    world.a_kubewarden_manifest_waits_for_the_rollout().await;
    world.ready_pods_activate_the_policy().await;
    world
        .the_api_server_rejects_a_privileged_pod("privileged")
        .await;
    world
        .pods
        .create(&PostParams::default(), &pod("unprivileged", false))
        .await
        .unwrap();
    world.every_kind_becomes_active().await;
    world.a_scaffolded_manifest_becomes_active().await;
    world.mutations_are_stored_and_monitor_mode_counts().await;
    world.a_garbled_configuration_is_written_again().await;
    world.invalid_settings_stay_pending().await;
    world.an_unfetchable_module_stays_pending().await;
    world.a_registry_outage_keeps_an_active_policy().await;
    world.webhook_drift_is_reverted().await;
    world.deleting_a_policy_removes_its_webhook().await;
    world.a_lost_ca_is_replaced().await;
    world.deleting_the_policy_server_leaves_no_webhook().await;
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_are_refused_at_apply_time_with_the_policys_message() {
    use palisade_controller::admission::{handle, register, Reviewer};
    use palisade_host::server::tls::{server_config, ReloadingCertificate};

    let server = common::ApiServer::start().await;
    let client = server.client();
    common::install_crds(&client, palisade_controller::crd::crds()).await;

    // The controller's webhook, on loopback.
    let work = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(work.path().join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(
        work.path().join("tls.key"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let certificate =
        ReloadingCertificate::new(&work.path().join("tls.crt"), &work.path().join("tls.key"))
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_config(Arc::new(certificate), None).unwrap(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let reviewer = Arc::new(Reviewer {
        checker: SettingsChecker::new(FetcherOptions {
            store_dir: work.path().join("store"),
            ..FetcherOptions::default()
        })
        .unwrap(),
        client: client.clone(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let webhook = tokio::spawn(palisade_host::server::serve(
        listener,
        Some(acceptor),
        move |request| handle(reviewer.clone(), request),
        stopped,
        Duration::from_secs(5),
        palisade_host::server::ConnectionLimits::default(),
    ));
    register(
        &client,
        &WebhookEndpoint::Url {
            base: format!("https://127.0.0.1:{port}"),
        },
        cert.cert.pem().as_bytes(),
    )
    .await
    .unwrap();

    let caps: Api<DynamicObject> =
        Api::all_with(client.clone(), &resource("ClusterAdmissionPolicy"));
    let labels = common::policy_path("required-labels");
    let cap = |name: &str, settings: &str| {
        format!(
            "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: {name}}}\nspec:\n  module: file://{}\n  settings: {settings}\n",
            labels.display()
        )
    };
    let try_create = |api: Api<DynamicObject>, yaml: String| async move {
        let object: DynamicObject = serde_yaml::from_str(&yaml).unwrap();
        api.create(&PostParams::default(), &object).await
    };

    // The webhook may take a moment to be called; retry until it answers.
    let refusal = common::eventually(30, "the webhook to refuse invalid settings", || {
        let attempt = try_create(caps.clone(), cap("empty-labels", "{labels: []}"));
        async move {
            match attempt.await {
                Err(kube::Error::Api(status)) if status.message.contains("invalid settings") => {
                    Some(status.message)
                }
                _ => None,
            }
        }
    })
    .await;
    assert!(
        refusal.contains("`labels` must list at least one required label"),
        "{refusal}"
    );
    let bad_regex = try_create(
        caps.clone(),
        cap("bad-regex", "{labels: [{key: a, valueRegex: '('}]}"),
    )
    .await;
    assert!(
        matches!(bad_regex, Err(kube::Error::Api(ref s)) if s.message.contains("invalid valueRegex")),
        "{bad_regex:?}"
    );
    try_create(caps.clone(), cap("good", "{labels: [app]}"))
        .await
        .unwrap();

    let groups: Api<DynamicObject> =
        Api::all_with(client.clone(), &resource("ClusterAdmissionPolicyGroup"));
    let group = format!(
        "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicyGroup\nmetadata: {{name: g}}\nspec:\n  expression: \"a() && b()\"\n  message: no\n  policies:\n    a: {{module: \"file://{0}\", settings: {{labels: [app]}}}}\n    b: {{module: \"file://{0}\", settings: {{labels: []}}}}\n",
        labels.display()
    );
    let refused = try_create(groups, group).await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.message.contains("policy `b`: invalid settings")),
        "{refused:?}"
    );

    // A module in a plain-HTTP registry is checked with the sources of the
    // PolicyServer the policy names: the refusal proves the module was fetched.
    let registry = common::registry::Registry::start(Default::default());
    let reference = format!("{}/policies/required-labels:v1", registry.host);
    push(&registry, "required-labels", &reference).await;
    apply_yaml(
        &client,
        &format!(
            "apiVersion: policies.kubewarden.io/v1\nkind: PolicyServer\nmetadata: {{name: registry-users}}\nspec:\n  image: policy-server\n  replicas: 1\n  insecureSources: [\"{}\"]\n",
            registry.host
        ),
    )
    .await;
    let from_registry = try_create(
        caps.clone(),
        format!(
            "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: from-registry}}\nspec:\n  policyServer: registry-users\n  module: registry://{reference}\n  settings: {{labels: []}}\n"
        ),
    )
    .await;
    assert!(
        matches!(from_registry, Err(kube::Error::Api(ref s)) if s.message.contains("at least one required label")),
        "{from_registry:?}"
    );

    // What is not an AdmissionReview still gets one back, saying why (the
    // API server shows the message), never a bare HTTP error.
    let http = common::server::client(&cert.cert.pem());
    let url = format!("https://127.0.0.1:{port}/validate-policies");
    for (body, why) in [
        ("not json".to_owned(), "not an AdmissionReview"),
        (
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_owned(),
            "no request",
        ),
    ] {
        let response = http.post(&url).body(body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let review: serde_json::Value = response.json().await.unwrap();
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["allowed"], false, "{review}");
        let message = review["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(why), "{message}");
    }

    // A module that cannot be loaded does not block the apply (the status will say why).
    try_create(
        caps.clone(),
        "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {name: unfetchable}\nspec:\n  module: file:///nonexistent.wasm\n".to_owned(),
    )
    .await
    .unwrap();

    let _ = stop.send(true);
    webhook.await.unwrap();
}

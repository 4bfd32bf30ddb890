//! A real Kubernetes API server (etcd + kube-apiserver +
//! kube-controller-manager) on loopback, built by `scripts/ensure-kube.sh`
//! (`make test` runs it). The API server only ever dials 127.0.0.1: etcd
//! there, and webhooks by URL. There is no kubelet: tests mark pods Ready by
//! patching their status.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::paths::tool_bin;
use crate::wait::free_port;

pub struct ApiServer {
    etcd: Child,
    apiserver: Child,
    /// How it was started, to start it again after [`ApiServer::crash`].
    apiserver_args: Vec<String>,
    controller_manager: Option<Child>,
    pub url: String,
    pub token: String,
    pub ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.controller_manager {
            let _ = child.kill();
            let _ = child.wait();
        }
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl ApiServer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd = Command::new(tool_bin("etcd"))
            .args([
                "--name=test",
                &format!("--data-dir={}", d.join("etcd").display()),
                &format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
                &format!("--advertise-client-urls=http://127.0.0.1:{client_port}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-cluster=test=http://127.0.0.1:{peer_port}"),
                "--log-level=error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();

        let serving = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .unwrap();
        std::fs::write(d.join("tls.crt"), serving.cert.pem()).unwrap();
        std::fs::write(d.join("tls.key"), serving.signing_key.serialize_pem()).unwrap();
        let sa = rcgen::KeyPair::generate().unwrap();
        std::fs::write(d.join("sa.key"), sa.serialize_pem()).unwrap();
        std::fs::write(d.join("sa.pub"), sa.public_key_pem()).unwrap();
        let token = "palisade-test-admin-token".to_owned();
        std::fs::write(
            d.join("tokens.csv"),
            format!("{token},admin,admin-uid,\"system:masters\"\n"),
        )
        .unwrap();
        let apiserver_args: Vec<String> = [
            &format!("--etcd-servers=http://127.0.0.1:{client_port}"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            &format!("--secure-port={api_port}"),
            &format!("--tls-cert-file={}", d.join("tls.crt").display()),
            &format!("--tls-private-key-file={}", d.join("tls.key").display()),
            &format!("--token-auth-file={}", d.join("tokens.csv").display()),
            "--authorization-mode=RBAC",
            &format!("--service-account-issuer=https://127.0.0.1:{api_port}"),
            &format!("--service-account-key-file={}", d.join("sa.pub").display()),
            &format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ),
            "--service-cluster-ip-range=192.0.2.0/24",
            "--endpoint-reconciler-type=none",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
        ]
        .into_iter()
        .map(|arg| arg.to_owned())
        .collect();
        let apiserver = spawn_apiserver(&apiserver_args, &d);
        let mut server = Self {
            etcd,
            apiserver,
            apiserver_args,
            controller_manager: None,
            url: format!("https://127.0.0.1:{api_port}"),
            token,
            ca_pem: serving.cert.pem(),
            _dir: dir,
        };
        server.wait_ready().await;
        let kubeconfig = d.join("kubeconfig");
        std::fs::write(d.join("ca.crt"), &server.ca_pem).unwrap();
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: '{}', certificate-authority: '{}'}}\nusers:\n- name: admin\n  user: {{token: {}}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: admin}}\ncurrent-context: test\n",
                server.url,
                d.join("ca.crt").display(),
                server.token
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("controller-manager.log")).unwrap();
        // Deployments become ReplicaSets and Pods; deleted owners take their
        // dependents with them. No other controller runs.
        server.controller_manager = Some(
            Command::new(tool_bin("kube-controller-manager"))
                .args([
                    &format!("--kubeconfig={}", kubeconfig.display()),
                    "--controllers=deployment-controller,replicaset-controller,garbage-collector-controller",
                    "--leader-elect=false",
                    "--secure-port=0",
                    "--concurrent-deployment-syncs=2",
                    "--concurrent-replicaset-syncs=2",
                ])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        server
    }

    /// A kubeconfig for the admin token, as a user of the cluster would have.
    pub fn kubeconfig(&self) -> PathBuf {
        self._dir.path().join("kubeconfig")
    }

    /// The controller-manager's log, for failure messages.
    pub fn controller_manager_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("controller-manager.log")).unwrap_or_default()
    }

    /// Kills kube-apiserver (SIGKILL, as a crash or a lost node would) and
    /// waits until it is gone; etcd keeps the cluster's state.
    pub fn crash(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
    }

    /// Starts kube-apiserver again after [`ApiServer::crash`], on the same
    /// address, certificates and etcd, and waits until it is ready.
    pub async fn restart(&mut self) {
        self.apiserver = spawn_apiserver(&self.apiserver_args, self._dir.path());
        self.wait_ready().await;
    }

    async fn wait_ready(&self) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
            if client
                .request_text(request)
                .await
                .is_ok_and(|t| t.trim() == "ok")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready in 120 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A client with the admin token.
    pub fn client(&self) -> kube::Client {
        self.client_with_token(&self.token)
    }

    /// A client authenticated by `token` (a ServiceAccount's, to test RBAC).
    pub fn client_with_token(&self, token: &str) -> kube::Client {
        let mut config = kube::Config::new(self.url.parse().unwrap());
        let der = rustls_pemfile_der(&self.ca_pem);
        config.root_cert = Some(vec![der]);
        config.auth_info.token = Some(token.to_owned().into());
        kube::Client::try_from(config).unwrap()
    }

    /// A client acting as ServiceAccount `namespace/name` (created here)
    /// with exactly the rules of `role` (a ClusterRole as JSON, bound to it).
    pub async fn client_as_service_account(
        &self,
        namespace: &str,
        name: &str,
        rules: serde_json::Value,
    ) -> kube::Client {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::ServiceAccount;
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        use kube::api::{Api, PostParams};
        let admin = self.client();
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
        let account: ServiceAccount = from_json(serde_json::json!({"metadata": {"name": name}}));
        accounts
            .create(&PostParams::default(), &account)
            .await
            .unwrap();
        let role: ClusterRole =
            from_json(serde_json::json!({"metadata": {"name": name}, "rules": rules}));
        Api::<ClusterRole>::all(admin.clone())
            .create(&PostParams::default(), &role)
            .await
            .unwrap();
        let binding: ClusterRoleBinding = from_json(serde_json::json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }));
        Api::<ClusterRoleBinding>::all(admin)
            .create(&PostParams::default(), &binding)
            .await
            .unwrap();
        let request: TokenRequest = from_json(serde_json::json!({"spec": {"audiences": []}}));
        let token = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap()
            .status
            .unwrap()
            .token
            .unwrap();
        self.client_with_token(&token)
    }
}

/// kube-apiserver with `args`, its log appended to `dir/apiserver.log`.
fn spawn_apiserver(args: &[String], dir: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("apiserver.log"))
        .unwrap();
    Command::new(tool_bin("kube-apiserver"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn rustls_pemfile_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// Installs `crds` and waits until they are served.
pub async fn install_crds(client: &kube::Client, crds: Vec<CustomResourceDefinition>) {
    use kube::api::{Api, PostParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in &crds {
        api.create(&PostParams::default(), crd).await.unwrap();
    }
    for crd in crds {
        let name = crd.metadata.name.unwrap();
        let mut established = false;
        for _ in 0..100 {
            let current = api.get(&name).await.unwrap();
            established = current
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(established, "{name} never became established");
    }
}

/// What the kubelet would do for pods that match `selector` in `namespace`:
/// report them Running and Ready. Runs until aborted.
pub fn mark_pods_ready(
    client: kube::Client,
    namespace: &str,
    selector: &str,
) -> tokio::task::JoinHandle<()> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams, Patch, PatchParams};
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let list = ListParams::default().labels(selector);
    tokio::spawn(async move {
        loop {
            for pod in pods.list(&list).await.map(|l| l.items).unwrap_or_default() {
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let status = serde_json::json!({"status": {
                    "phase": "Running",
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    ],
                }});
                let name = pod.metadata.name.clone().unwrap_or_default();
                let _ = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Creates the object a YAML manifest describes, as `kubectl create` sends
/// it (no Rust types involved: what the API server stores is what a user's
/// manifest gives).
pub async fn create_yaml(
    client: &kube::Client,
    yaml: &str,
) -> Result<kube::core::DynamicObject, kube::Error> {
    use kube::api::{Api, PostParams};
    use kube::core::{DynamicObject, GroupVersionKind};
    let object: DynamicObject = serde_yaml::from_str(yaml).unwrap();
    let types = object.types.clone().unwrap();
    let (group, version) = types
        .api_version
        .split_once('/')
        .unwrap_or(("", types.api_version.as_str()));
    let resource =
        kube::discovery::ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &types.kind));
    let api: Api<DynamicObject> = match &object.metadata.namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    api.create(&PostParams::default(), &object).await
}

/// A ClusterAdmissionPolicy for `module`, exactly as Kubewarden's
/// documentation writes it (privileged pods, CREATE and UPDATE).
pub fn kubewarden_privileged_pods_manifest(module: &str) -> String {
    format!(
        r#"apiVersion: policies.kubewarden.io/v1
kind: ClusterAdmissionPolicy
metadata:
  name: privileged-pods
spec:
  module: {module}
  rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
    operations:
    - CREATE
    - UPDATE
  mutating: false
"#
    )
}

/// Creates the namespaces `names`.
pub async fn create_namespaces(client: &kube::Client, names: &[&str]) {
    for name in names {
        create_namespace(client, name, serde_json::json!({})).await;
    }
}

/// Creates the namespace `name` with `labels` (a JSON object).
pub async fn create_namespace(client: &kube::Client, name: &str, labels: serde_json::Value) {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};
    let namespace: Namespace =
        from_json(serde_json::json!({"metadata": {"name": name, "labels": labels}}));
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// Who holds the Lease `namespace/name`, once somebody does (waits up to
/// `seconds`).
pub async fn lease_holder(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    seconds: u64,
) -> String {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases: kube::api::Api<Lease> = kube::api::Api::namespaced(client.clone(), namespace);
    crate::eventually(
        seconds,
        &format!("a holder of the lease {name}"),
        || async { leases.get_opt(name).await.ok()??.spec?.holder_identity },
    )
    .await
}

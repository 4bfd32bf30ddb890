//! End to end through a real API server: the controller turns a
//! ClusterAdmissionPolicy into policy-server configuration and a webhook
//! (out-of-cluster mode, URL on loopback), a policy-server runs from that
//! ConfigMap, and the API server itself rejects a privileged Pod.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::DynamicObject;
use palisade_controller::crd::{ClusterAdmissionPolicy, PolicyStatusPhase};
use palisade_controller::policy::WebhookEndpoint;
use palisade_controller::reconcile::{config_map_name, Context, POLICIES_KEY};
use palisade_controller::settings::SettingsChecker;
use palisade_host::fetch::FetcherOptions;
use palisade_host::server::{LoadOptions, ServerOptions, TlsFiles};

fn policy_dir() -> PathBuf {
    std::env::var_os("PALISADE_POLICY_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("policies")))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/policies"))
}

fn pod(name: &str, privileged: bool) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "securityContext": {"privileged": privileged}}]}
    }))
    .unwrap()
}

async fn create(api: &Api<DynamicObject>, yaml: &str) {
    let object: DynamicObject = serde_yaml::from_str(yaml).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_admission_policies_are_enforced_by_the_api_server() {
    let server = common::ApiServer::start().await;
    let client = server.client();
    common::install_crds(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "kubewarden"}}))
                .unwrap(),
        )
        .await
        .unwrap();

    // The policy-server, on loopback, with a certificate for 127.0.0.1.
    let work = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(work.path().join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(
        work.path().join("tls.key"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let policies_file = work.path().join("policies.yml");
    std::fs::write(&policies_file, "{}").unwrap();
    let policy_server = palisade_host::server::start(ServerOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        readiness_addr: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        tls: Some(TlsFiles {
            cert: work.path().join("tls.crt"),
            key: work.path().join("tls.key"),
            client_ca: None,
        }),
        policies_file: policies_file.clone(),
        cache_dir: Some(work.path().join("compiled")),
        fetch: FetcherOptions {
            store_dir: work.path().join("modules"),
            ..FetcherOptions::default()
        },
        load: LoadOptions {
            default_timeout: Duration::from_secs(2),
            memory_bytes: 64 << 20,
            continue_on_errors: false,
        },
        always_accept_namespace: Some("kubewarden".into()),
        max_body_bytes: 3 << 20,
        watch_interval: Duration::from_millis(100),
        shutdown_grace: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let port = policy_server.addr.port();

    // What the kubelet does for a real policy-server pod: project the ConfigMap into its file.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "kubewarden");
    let projector = {
        let config_maps = config_maps.clone();
        let file = policies_file.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(Some(cm)) = config_maps.get_opt(&config_map_name("default")).await {
                    if let Some(text) = cm.data.and_then(|d| d.get(POLICIES_KEY).cloned()) {
                        if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
                            let tmp = file.with_extension("tmp");
                            std::fs::write(&tmp, &text).unwrap();
                            std::fs::rename(&tmp, &file).unwrap();
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let context = Arc::new(Context {
        client: client.clone(),
        namespace: "kubewarden".into(),
        endpoint: WebhookEndpoint::Url {
            base: format!("https://127.0.0.1:{port}"),
        },
        ca_bundle: cert.cert.pem().into_bytes(),
        checker: SettingsChecker::new(FetcherOptions {
            store_dir: work.path().join("controller-store"),
            ..FetcherOptions::default()
        })
        .unwrap(),
    });
    let controller = tokio::spawn(palisade_controller::reconcile::run(context));

    let resource = |kind: &str| {
        kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "policies.kubewarden.io",
            "v1",
            kind,
        ))
    };
    create(
        &Api::all_with(client.clone(), &resource("PolicyServer")),
        "apiVersion: policies.kubewarden.io/v1\nkind: PolicyServer\nmetadata: {name: default}\nspec: {image: policy-server, replicas: 1}\n",
    )
    .await;
    let caps_dynamic: Api<DynamicObject> =
        Api::all_with(client.clone(), &resource("ClusterAdmissionPolicy"));
    let module = policy_dir().join("pod-privileged.wasm");
    create(
        &caps_dynamic,
        &format!(
            "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: privileged-pods}}\nspec:\n  module: file://{}\n  rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [CREATE, UPDATE]\n",
            module.display()
        ),
    )
    .await;

    let caps: Api<ClusterAdmissionPolicy> = Api::all(client.clone());
    common::eventually(60, "privileged-pods to become active", || async {
        let policy = caps.get("privileged-pods").await.ok()?;
        (policy.status?.policy_status? == PolicyStatusPhase::Active).then_some(())
    })
    .await;
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let webhook = webhooks.get("clusterwide-privileged-pods").await.unwrap();
    let hook = &webhook.webhooks.unwrap()[0];
    assert_eq!(
        hook.name,
        "clusterwide-privileged-pods.kubewarden.admission"
    );
    assert_eq!(
        hook.client_config.url.as_deref(),
        Some(format!("https://127.0.0.1:{port}/validate/clusterwide-privileged-pods").as_str())
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
        excluded.values.as_deref(),
        Some(&["kubewarden".to_owned()][..])
    );

    // Wait until the policy-server serves the policy from the projected ConfigMap.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    common::eventually(30, "the policy-server to load the policy", || async {
        let body = serde_json::json!({});
        let response = http
            .post(format!(
                "https://127.0.0.1:{port}/validate/clusterwide-privileged-pods"
            ))
            .json(&body)
            .send()
            .await;
        // 404 until the policy is loaded; the probe body itself is not a full review.
        (response.ok()?.status() != 404).then_some(())
    })
    .await;

    // The API server calls the webhook.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    match pods
        .create(&PostParams::default(), &pod("privileged", true))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert!(
                status
                    .message
                    .contains("privileged containers are not allowed: app"),
                "{}",
                status.message
            )
        }
        other => panic!("the privileged pod must be rejected by the API server: {other:?}"),
    }
    pods.create(&PostParams::default(), &pod("unprivileged", false))
        .await
        .unwrap();

    // Invalid settings: the policy stays pending with the policy's own message, and no webhook.
    let labels = policy_dir().join("required-labels.wasm");
    create(
        &caps_dynamic,
        &format!(
            "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {{name: bad-labels}}\nspec:\n  module: file://{}\n  settings: {{labels: []}}\n  rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [CREATE]\n",
            labels.display()
        ),
    )
    .await;
    let condition = common::eventually(60, "bad-labels to be pending", || async {
        let status = caps.get("bad-labels").await.ok()?.status?;
        (status.policy_status? == PolicyStatusPhase::Pending).then(|| status.conditions[0].clone())
    })
    .await;
    assert_eq!(condition.reason, "InvalidSettings");
    assert!(
        condition.message.contains("at least one required label"),
        "{}",
        condition.message
    );
    assert!(webhooks
        .get_opt("clusterwide-bad-labels")
        .await
        .unwrap()
        .is_none());

    // A module that cannot be fetched: pending, saying why.
    create(
        &caps_dynamic,
        "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {name: missing-module}\nspec:\n  module: file:///nonexistent/policy.wasm\n  rules: []\n",
    )
    .await;
    let condition = common::eventually(60, "missing-module to be pending", || async {
        let status = caps.get("missing-module").await.ok()?.status?;
        (status.policy_status? == PolicyStatusPhase::Pending).then(|| status.conditions[0].clone())
    })
    .await;
    assert_eq!(condition.reason, "ModuleUnavailable");
    assert!(
        condition.message.contains("file not found"),
        "{}",
        condition.message
    );

    // Deleting the policy removes its webhook; the privileged pod is then admitted.
    caps.delete("privileged-pods", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually(60, "the webhook to be removed", || async {
        webhooks
            .get_opt("clusterwide-privileged-pods")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    pods.create(&PostParams::default(), &pod("privileged-later", true))
        .await
        .unwrap();

    controller.abort();
    projector.abort();
    policy_server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_are_refused_at_apply_time_with_the_policys_message() {
    use palisade_controller::admission::{handle, register, AdmissionEndpoint};
    use palisade_host::server::tls::{server_config, ReloadingCertificate};

    let server = common::ApiServer::start().await;
    let client = server.client();
    common::install_crds(&client).await;

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
    let checker = Arc::new(
        SettingsChecker::new(FetcherOptions {
            store_dir: work.path().join("store"),
            ..FetcherOptions::default()
        })
        .unwrap(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let webhook = tokio::spawn(palisade_host::server::serve(
        listener,
        Some(acceptor),
        move |request| handle(checker.clone(), request),
        stopped,
        Duration::from_secs(5),
    ));
    register(
        &client,
        &AdmissionEndpoint::Url(format!("https://127.0.0.1:{port}")),
        cert.cert.pem().as_bytes(),
    )
    .await
    .unwrap();

    let resource = |kind: &str| {
        kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "policies.kubewarden.io",
            "v1",
            kind,
        ))
    };
    let caps: Api<DynamicObject> =
        Api::all_with(client.clone(), &resource("ClusterAdmissionPolicy"));
    let labels = policy_dir().join("required-labels.wasm");
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

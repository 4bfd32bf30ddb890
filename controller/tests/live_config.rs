//! The policy-server follows its policies ConfigMap through a real API
//! server: a change is served within a second or two, without a restart,
//! and the readiness answer and a metric name the configuration served.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use palisade_host::server::{config_hash, ConfigMapRef};
use palisade_host::KubernetesAccess;
use serde_json::json;

fn policies(ids: &[&str]) -> String {
    let module = common::policy_path("pod-privileged");
    ids.iter()
        .map(|id| format!("{id}:\n  module: file://{}\n", module.display()))
        .collect()
}

/// The hash the readiness answer reports.
async fn served_hash(probe: &str) -> String {
    let answer = common::server::get(format!("{probe}/readiness"))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer.headers()["palisade-config-hash"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_server_follows_its_config_map() {
    let cluster = common::ApiServer::start().await;
    let client = cluster.client();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first = policies(&["one"]);
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "policy-server-default"},
        "data": {"policies.yml": first},
    }))
    .unwrap();
    config_maps
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();

    // The mounted file as the kubelet wrote it at start; it never changes here.
    let dir = tempfile::tempdir().unwrap();
    let file = common::server::write_policies(dir.path(), &first);
    let mut options = common::server::options(dir.path(), file);
    options.policies_config_map = Some(ConfigMapRef {
        namespace: "default".into(),
        name: "policy-server-default".into(),
    });
    // Long enough that only the ConfigMap watch can explain a quick reload.
    options.watch_interval = Duration::from_secs(3600);
    options.load.kubernetes = Some(Arc::new(KubernetesAccess::new(
        client.clone(),
        tokio::runtime::Handle::current(),
    )));
    let server = palisade_host::server::start(options).await.unwrap();
    let base = format!("http://127.0.0.1:{}", server.addr.port());
    let probe = format!("http://127.0.0.1:{}", server.readiness_addr.port());
    assert_eq!(served_hash(&probe).await, config_hash(&first));

    let http = common::server::plain_client();
    let status = |id: &'static str| {
        let request = http
            .post(format!("{base}/validate/{id}"))
            .body(std::fs::read(common::fixture_path("pod-create-privileged.json")).unwrap());
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("one").await, 200);
    assert_eq!(status("two").await, 404);

    let change = |text: String| {
        let config_maps = config_maps.clone();
        async move {
            let patch = json!({"data": {"policies.yml": text}});
            config_maps
                .patch(
                    "policy-server-default",
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .unwrap();
        }
    };
    let second = policies(&["one", "two"]);
    let changed = Instant::now();
    change(second.clone()).await;
    common::eventually(10, "the new policy is served", || async {
        (status("two").await == 200).then_some(())
    })
    .await;
    println!("a ConfigMap change served after {:?}", changed.elapsed());
    assert_eq!(served_hash(&probe).await, config_hash(&second));
    let metrics = common::server::get_text(format!("{probe}/metrics")).await;
    assert!(
        metrics.contains(&format!(
            "palisade_policies_config_info{{hash=\"{}\"}} 1",
            config_hash(&second)
        )),
        "{metrics}"
    );
    assert!(!metrics.contains(&config_hash(&first)), "{metrics}");

    // A broken change is refused; the served set and its hash stay.
    change("one: [not a policy".into()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(status("two").await, 200);
    assert_eq!(served_hash(&probe).await, config_hash(&second));
    server.shutdown().await;
}

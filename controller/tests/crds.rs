//! The generated CRDs: committed copy up to date, and installed into a real
//! API server where existing Kubewarden manifests apply unchanged and the
//! schema's defaults and rules hold.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use palisade_controller::crd::{crds_yaml, ClusterAdmissionPolicy, PolicyMode};

const COMMITTED: &str = include_str!("../crds/policies.kubewarden.io.yaml");
const IN_THE_CHART: &str = include_str!("../../charts/palisade/crds/policies.kubewarden.io.yaml");

#[test]
fn committed_crds_are_up_to_date() {
    let generated = crds_yaml().unwrap();
    assert!(
        generated == COMMITTED,
        "controller/crds/policies.kubewarden.io.yaml is stale: run `make crds`"
    );
    assert!(
        generated == IN_THE_CHART,
        "charts/palisade/crds/policies.kubewarden.io.yaml is stale: run `make crds`"
    );
}

fn api(client: &kube::Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let resource =
        ApiResource::from_gvk(&GroupVersionKind::gvk("policies.kubewarden.io", "v1", kind));
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

async fn apply_yaml(api: &Api<DynamicObject>, yaml: &str) -> Result<DynamicObject, kube::Error> {
    let object: DynamicObject = serde_yaml::from_str(yaml).unwrap();
    api.create(&PostParams::default(), &object).await
}

fn refused(result: Result<DynamicObject, kube::Error>, needle: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert!(status.message.contains(needle), "{}", status.message)
        }
        other => panic!("expected a refusal containing {needle:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubewarden_manifests_apply_unchanged_with_defaults_and_validation() {
    let server = common::ApiServer::start().await;
    let client = server.client();
    common::install_crds(&client, palisade_controller::crd::crds()).await;

    // As Kubewarden's documentation writes them.
    let caps = api(&client, "ClusterAdmissionPolicy", None);
    apply_yaml(
        &caps,
        &common::kubewarden_privileged_pods_manifest(
            "registry://ghcr.io/kubewarden/policies/pod-privileged:v0.2.2",
        ),
    )
    .await
    .unwrap();
    let typed: Api<ClusterAdmissionPolicy> = Api::all(client.clone());
    let stored = typed.get("privileged-pods").await.unwrap();
    assert_eq!(stored.spec.webhook.policy_server, "default");
    assert_eq!(stored.spec.webhook.mode, PolicyMode::Protect);
    assert_eq!(stored.spec.webhook.timeout_seconds, 10);
    assert!(stored.spec.webhook.background_audit);
    assert_eq!(stored.spec.policy.settings, serde_json::json!({}));

    apply_yaml(
        &api(&client, "PolicyServer", None),
        r#"
apiVersion: policies.kubewarden.io/v1
kind: PolicyServer
metadata:
  name: reserved-instance-for-tenant-a
spec:
  image: ghcr.io/kubewarden/policy-server:v1.3.0
  replicas: 2
  serviceAccountName: policy-server
  env:
  - name: KUBEWARDEN_LOG_LEVEL
    value: debug
"#,
    )
    .await
    .unwrap();

    apply_yaml(
        &api(&client, "AdmissionPolicy", Some("default")),
        r#"
apiVersion: policies.kubewarden.io/v1
kind: AdmissionPolicy
metadata:
  name: labels
  namespace: default
spec:
  module: registry://ghcr.io/kubewarden/policies/safe-labels:v0.1.7
  settings:
    mandatory_labels: [owner]
  rules:
  - apiGroups: ["apps"]
    apiVersions: ["v1"]
    resources: ["deployments"]
    operations: ["CREATE", "UPDATE"]
  mode: monitor
"#,
    )
    .await
    .unwrap();

    apply_yaml(
        &api(&client, "ClusterAdmissionPolicyGroup", None),
        r#"
apiVersion: policies.kubewarden.io/v1
kind: ClusterAdmissionPolicyGroup
metadata:
  name: signed-or-trusted
spec:
  rules:
  - apiGroups: [""]
    apiVersions: ["v1"]
    resources: ["pods"]
    operations: ["CREATE"]
  policies:
    signed:
      module: registry://ghcr.io/kubewarden/policies/verify-image-signatures:v0.3.0
      settings: {}
    trusted:
      module: registry://ghcr.io/kubewarden/policies/trusted-repos:v0.2.0
      settings: {}
  expression: "signed() || trusted()"
  message: "the image is neither signed nor from a trusted registry"
"#,
    )
    .await
    .unwrap();

    // Schema rules.
    refused(
        apply_yaml(&caps, "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {name: slow}\nspec:\n  module: file:///p.wasm\n  timeoutSeconds: 40\n").await,
        "timeoutSeconds",
    );
    refused(
        apply_yaml(&caps, "apiVersion: policies.kubewarden.io/v1\nkind: ClusterAdmissionPolicy\nmetadata: {name: bad-mode}\nspec:\n  module: file:///p.wasm\n  mode: enforce\n").await,
        "mode",
    );
    refused(
        apply_yaml(
            &api(&client, "PolicyServer", None),
            "apiVersion: policies.kubewarden.io/v1\nkind: PolicyServer\nmetadata: {name: both}\nspec:\n  image: x\n  replicas: 1\n  minAvailable: 1\n  maxUnavailable: 1\n",
        )
        .await,
        "minAvailable and maxUnavailable cannot both be set",
    );
    let params = PatchParams::default();
    for (body, message) in [
        (
            serde_json::json!({"spec": {"policyServer": "other"}}),
            "policyServer is immutable",
        ),
        (
            serde_json::json!({"spec": {"mode": "monitor"}}),
            "mode cannot change from protect to monitor",
        ),
    ] {
        refused(
            caps.patch("privileged-pods", &params, &Patch::Merge(body))
                .await,
            message,
        );
    }
    // monitor → protect is allowed.
    let ap = api(&client, "AdmissionPolicy", Some("default"));
    ap.patch(
        "labels",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"mode": "protect"}})),
    )
    .await
    .unwrap();
}

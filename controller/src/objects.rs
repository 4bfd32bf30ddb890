//! The Kubernetes objects a PolicyServer becomes: its ConfigMap,
//! Deployment, Service and PodDisruptionBudget. Pure functions of the
//! resource, so the shapes are unit-tested without an API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, HTTPGetAction, LocalObjectReference, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use palisade_host::fetch::{SourceAuthority, Sources};
use palisade_host::server::PoliciesConfig;

use crate::crd::PolicyServer;
use crate::webhook::POLICY_SERVER_LABEL;

/// The ConfigMap key with the policies.
pub const POLICIES_KEY: &str = "policies.yml";
/// The ConfigMap key with `sources.yml`.
pub const SOURCES_KEY: &str = "sources.yml";
/// The pod-template annotation holding the configuration's hash: a new
/// configuration is a new template, hence a rollout the controller can wait for.
pub const CONFIG_HASH_ANNOTATION: &str = "policies.kubewarden.io/config-hash";
/// The Secret with the CA every policy-server certificate is signed by.
pub const ROOT_CA_SECRET: &str = "policy-server-root-ca";
/// The webhook port inside the pod and on the Service.
pub const WEBHOOK_PORT: i32 = 8443;
pub const SERVICE_PORT: i32 = 443;
/// Readiness and metrics.
pub const READINESS_PORT: i32 = 8081;

const CONFIG_DIR: &str = "/config";
const CERT_DIR: &str = "/pki";
const PULL_SECRET_DIR: &str = "/pull-secret";

/// `policy-server-<name>`: the Deployment, Service, ConfigMap and serving Secret.
pub fn object_name(policy_server: &str) -> String {
    format!("policy-server-{policy_server}")
}

/// Labels that select the pods of one policy-server.
pub fn selector_labels(policy_server: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(POLICY_SERVER_LABEL.to_owned(), policy_server.to_owned())])
}

fn labels(policy_server: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(policy_server);
    labels.insert("app.kubernetes.io/component".into(), "policy-server".into());
    labels.insert(
        "app.kubernetes.io/instance".into(),
        object_name(policy_server),
    );
    labels.insert("app.kubernetes.io/managed-by".into(), "palisade".into());
    labels
}

/// The PolicyServer owns everything derived from it: deleting it lets the
/// garbage collector remove them.
pub fn owner_reference(server: &PolicyServer) -> OwnerReference {
    OwnerReference {
        api_version: PolicyServer::api_version(&()).into_owned(),
        kind: PolicyServer::kind(&()).into_owned(),
        name: server.name_any(),
        uid: server.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn metadata(server: &PolicyServer, namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(&server.name_any())),
        namespace: Some(namespace.to_owned()),
        labels: Some(labels(&server.name_any())),
        owner_references: Some(vec![owner_reference(server)]),
        ..ObjectMeta::default()
    }
}

/// The module sources a PolicyServer allows (`sources.yml`), as its pods
/// and the settings check read them.
pub fn sources(server: &PolicyServer) -> Sources {
    Sources {
        insecure_sources: server.spec.insecure_sources.clone(),
        source_authorities: server
            .spec
            .source_authorities
            .iter()
            .map(|(host, pems)| {
                let authorities = pems
                    .iter()
                    .map(|pem| SourceAuthority::Data { data: pem.clone() })
                    .collect();
                (host.clone(), authorities)
            })
            .collect(),
    }
}

/// The ConfigMap a policy-server reads: `sources.yml` from the PolicyServer
/// and `policies.yml` from the policies bound to it. Derived state: it is
/// rewritten whole from these, so nothing put into it by hand survives and
/// nothing the policies say can be lost.
pub fn config_map(server: &PolicyServer, namespace: &str, policies: &PoliciesConfig) -> ConfigMap {
    // Plain data cannot fail to serialise.
    let sources = serde_json::to_string(&sources(server)).unwrap_or_default();
    ConfigMap {
        metadata: metadata(server, namespace),
        data: Some(BTreeMap::from([
            (SOURCES_KEY.to_owned(), sources),
            (POLICIES_KEY.to_owned(), policies.to_text()),
        ])),
        ..ConfigMap::default()
    }
}

/// The hash of what the policy-server reads from its ConfigMap.
pub fn config_hash(config_map: &ConfigMap) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in config_map.data.iter().flatten() {
        hasher.update(key.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

/// Hardened defaults; a PolicyServer's own security contexts replace them.
fn container_security(server: &PolicyServer) -> SecurityContext {
    server
        .spec
        .security_contexts
        .container
        .clone()
        .unwrap_or_else(|| SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..SecurityContext::default()
        })
}

fn pod_security(server: &PolicyServer) -> PodSecurityContext {
    server
        .spec
        .security_contexts
        .pod
        .clone()
        .unwrap_or_else(|| PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        })
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The Deployment running the policy-server.
pub fn deployment(server: &PolicyServer, namespace: &str, config_hash: &str) -> Deployment {
    let name = server.name_any();
    let spec = &server.spec;
    let mut env_vars = vec![
        env("KUBEWARDEN_PORT", WEBHOOK_PORT.to_string()),
        env(
            "KUBEWARDEN_READINESS_PROBE_PORT",
            READINESS_PORT.to_string(),
        ),
        env("KUBEWARDEN_CERT_FILE", format!("{CERT_DIR}/tls.crt")),
        env("KUBEWARDEN_KEY_FILE", format!("{CERT_DIR}/tls.key")),
        env(
            "KUBEWARDEN_POLICIES",
            format!("{CONFIG_DIR}/{POLICIES_KEY}"),
        ),
        env(
            "KUBEWARDEN_SOURCES_PATH",
            format!("{CONFIG_DIR}/{SOURCES_KEY}"),
        ),
        env("KUBEWARDEN_POLICIES_DOWNLOAD_DIR", "/modules"),
        env(
            "KUBEWARDEN_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE",
            namespace,
        ),
        // Every bound policy is in the configuration, including one whose
        // module or settings failed the controller's check (its webhook is
        // not registered): it must answer 500 on its own path, never keep
        // the pod from serving the others.
        env("KUBEWARDEN_CONTINUE_ON_ERRORS", "true"),
    ];
    let mut mounts = vec![
        mount("config", CONFIG_DIR),
        mount("certs", CERT_DIR),
        VolumeMount {
            read_only: Some(false),
            ..mount("modules", "/modules")
        },
        VolumeMount {
            read_only: Some(false),
            ..mount("tmp", "/tmp")
        },
    ];
    let mut volumes = vec![
        Volume {
            name: "config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: object_name(&name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        secret_volume("certs", &object_name(&name)),
        empty_dir("modules"),
        empty_dir("tmp"),
    ];
    if let Some(pull_secret) = &spec.image_pull_secret {
        env_vars.push(env(
            "KUBEWARDEN_DOCKER_CONFIG_JSON_PATH",
            format!("{PULL_SECRET_DIR}/.dockerconfigjson"),
        ));
        mounts.push(mount("pull-secret", PULL_SECRET_DIR));
        volumes.push(secret_volume("pull-secret", pull_secret));
    }
    // The user's variables come last, so they override the defaults.
    env_vars.extend(spec.env.iter().cloned());
    let probe = Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/readiness".to_owned()),
            port: IntOrString::Int(READINESS_PORT),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    };
    let mut pod_labels = labels(&name);
    pod_labels.extend(spec.labels.clone());
    let mut annotations = spec.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), config_hash.to_owned());
    let resources =
        (!spec.limits.is_empty() || !spec.requests.is_empty()).then(|| ResourceRequirements {
            limits: Some(spec.limits.clone()).filter(|l| !l.is_empty()),
            requests: Some(spec.requests.clone()).filter(|r| !r.is_empty()),
            ..ResourceRequirements::default()
        });
    let container = Container {
        name: "policy-server".to_owned(),
        image: Some(spec.image.clone()),
        env: Some(env_vars),
        ports: Some(vec![
            ContainerPort {
                name: Some("https".to_owned()),
                container_port: WEBHOOK_PORT,
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".to_owned()),
                container_port: READINESS_PORT,
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(probe.clone()),
        liveness_probe: Some(Probe {
            failure_threshold: Some(6),
            ..probe
        }),
        security_context: Some(container_security(server)),
        volume_mounts: Some(mounts),
        resources,
        ..Container::default()
    };
    Deployment {
        metadata: metadata(server, namespace),
        spec: DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security(server)),
                    service_account_name: spec.service_account_name.clone(),
                    image_pull_secrets: spec.image_pull_secret.as_ref().map(|secret| {
                        vec![LocalObjectReference {
                            name: secret.clone(),
                        }]
                    }),
                    affinity: spec.affinity.clone(),
                    tolerations: Some(spec.tolerations.clone()).filter(|t| !t.is_empty()),
                    priority_class_name: spec.priority_class_name.clone(),
                    volumes: Some(volumes),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        status: None,
    }
}

/// The Service the webhooks point at (port 443), plus the metrics port.
pub fn service(server: &PolicyServer, namespace: &str) -> Service {
    Service {
        metadata: metadata(server, namespace),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&server.name_any())),
            ports: Some(vec![
                ServicePort {
                    name: Some("https".to_owned()),
                    port: SERVICE_PORT,
                    target_port: Some(IntOrString::Int(WEBHOOK_PORT)),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("metrics".to_owned()),
                    port: READINESS_PORT,
                    target_port: Some(IntOrString::Int(READINESS_PORT)),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// A PodDisruptionBudget when the PolicyServer asks for one.
pub fn disruption_budget(server: &PolicyServer, namespace: &str) -> Option<PodDisruptionBudget> {
    let spec = &server.spec;
    if spec.min_available.is_none() && spec.max_unavailable.is_none() {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: metadata(server, namespace),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: spec.min_available.clone(),
            max_unavailable: spec.max_unavailable.clone(),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&server.name_any())),
                match_expressions: None,
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn server(extra: serde_json::Value) -> PolicyServer {
        let mut spec = json!({"image": "policy-server:1", "replicas": 2});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let mut server: PolicyServer = serde_json::from_value(json!({
            "apiVersion": "policies.kubewarden.io/v1", "kind": "PolicyServer",
            "metadata": {"name": "default", "uid": "u-1"}, "spec": spec,
        }))
        .unwrap();
        server.metadata.uid = Some("u-1".into());
        server
    }

    #[test]
    fn the_deployment_is_hardened_probed_and_carries_the_config_hash() {
        let deployment = deployment(&server(json!({})), "kubewarden", "abc");
        assert_eq!(
            deployment.metadata.name.as_deref(),
            Some("policy-server-default")
        );
        let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("PolicyServer", "u-1")
        );
        let spec = deployment.spec;
        assert_eq!(spec.replicas, Some(2));
        let template = spec.template;
        assert_eq!(
            template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION],
            "abc"
        );
        let pod = template.spec.unwrap();
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        let probe = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (probe.path.as_deref(), &probe.port),
            (Some("/readiness"), &IntOrString::Int(READINESS_PORT))
        );
        let env: BTreeMap<_, _> = container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["KUBEWARDEN_POLICIES"], "/config/policies.yml");
        assert_eq!(env["KUBEWARDEN_CERT_FILE"], "/pki/tls.crt");
    }

    #[test]
    fn user_settings_reach_the_pods() {
        let server = server(json!({
            "env": [{"name": "KUBEWARDEN_LOG_LEVEL", "value": "debug"}],
            "imagePullSecret": "pull", "labels": {"team": "a"},
            "securityContexts": {"container": {"runAsUser": 1000}},
            "insecureSources": ["registry.local:5000"],
            "minAvailable": 1,
        }));
        let pod = deployment(&server, "kubewarden", "h").spec.template;
        assert_eq!(pod.metadata.unwrap().labels.unwrap()["team"], "a");
        let pod = pod.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(
            container.env.as_ref().unwrap().last().unwrap().name,
            "KUBEWARDEN_LOG_LEVEL"
        );
        assert_eq!(
            container.security_context.as_ref().unwrap().run_as_user,
            Some(1000)
        );
        assert_eq!(pod.image_pull_secrets.unwrap()[0].name, "pull");
        let text = &config_map(&server, "kubewarden", &PoliciesConfig::default())
            .data
            .unwrap()[SOURCES_KEY];
        let read: Sources = serde_yaml::from_str(text).unwrap();
        assert_eq!(read.insecure_sources, ["registry.local:5000"]);
        assert_eq!(read, sources(&server));
        let budget = disruption_budget(&server, "kubewarden").unwrap();
        assert_eq!(
            budget.spec.unwrap().min_available,
            Some(IntOrString::Int(1))
        );
        assert!(disruption_budget(&self::server(json!({})), "kubewarden").is_none());
    }

    #[test]
    fn the_config_hash_changes_with_the_content() {
        let mut config = config_map(&server(json!({})), "kubewarden", &PoliciesConfig::default());
        let before = config_hash(&config);
        config.data.get_or_insert_with(BTreeMap::new).insert(
            POLICIES_KEY.to_owned(),
            r#"{"p": {"module": "m"}}"#.to_owned(),
        );
        assert_ne!(config_hash(&config), before);
    }
}

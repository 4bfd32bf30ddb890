//! Rejects workloads whose container images come from registries that are
//! not allowed. Looks at Pods and at the pod templates of Deployments,
//! ReplicaSets, StatefulSets, DaemonSets, Jobs and CronJobs; containers, init
//! containers and ephemeral containers alike.
//!
//! Settings:
//!
//! ```yaml
//! registries:
//!   - registry.example.com        # any image from this registry
//!   - ghcr.io/example             # only images under this path
//! ```
//!
//! Images without a registry (`nginx:1.27`) come from `docker.io`, as the
//! container runtime resolves them.

use palisade_sdk::{accept, export_policy, reject, Operation, Policy, Request, Response};
use serde::Deserialize;

/// The policy.
#[derive(Debug)]
pub struct AllowedRegistries;

/// The policy's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Registries (`registry.example.com`) or repository prefixes
    /// (`ghcr.io/example`) images may come from.
    #[serde(default)]
    pub registries: Vec<String>,
}

impl Policy for AllowedRegistries {
    type Settings = Settings;

    fn validate(request: &Request, settings: &Settings) -> palisade_sdk::Result<Response> {
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return Ok(accept());
        }
        let Some(spec) = pod_spec(request)? else {
            return Ok(accept());
        };
        let denied: Vec<&str> = spec
            .images()
            .filter(|image| {
                !settings
                    .registries
                    .iter()
                    .any(|allowed| is_allowed(image, allowed))
            })
            .collect();
        if denied.is_empty() {
            Ok(accept())
        } else {
            Ok(reject(
                format!(
                    "images from registries that are not allowed: {} (allowed: {})",
                    denied.join(", "),
                    settings.registries.join(", ")
                ),
                None,
            ))
        }
    }

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        if settings.registries.is_empty() {
            return Err("`registries` must list at least one allowed registry".into());
        }
        if let Some(bad) = settings
            .registries
            .iter()
            .find(|r| r.is_empty() || r.contains("://"))
        {
            return Err(format!(
                "`{bad}` is not a registry host or repository prefix (no scheme, not empty)"
            ));
        }
        Ok(())
    }
}

export_policy!(AllowedRegistries);

/// The pod spec of a Pod or of a workload's pod template.
fn pod_spec(request: &Request) -> palisade_sdk::Result<Option<PodSpec>> {
    let spec = match (request.kind.group.as_str(), request.kind.kind.as_str()) {
        ("", "Pod") => request.object::<WithSpec<PodSpec>>()?.map(|p| p.spec),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") | ("batch", "Job") => {
            request
                .object::<WithSpec<WithTemplate>>()?
                .map(|w| w.spec.template.spec)
        }
        ("batch", "CronJob") => request
            .object::<WithSpec<CronJobSpec>>()?
            .map(|c| c.spec.job_template.spec.template.spec),
        _ => None,
    };
    Ok(spec)
}

/// Whether `image` comes from `allowed` (a registry host or a repository prefix).
fn is_allowed(image: &str, allowed: &str) -> bool {
    let normalized = normalize(image);
    let allowed = allowed.trim_end_matches('/');
    normalized
        .strip_prefix(allowed)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// `nginx:1.27` → `docker.io/library/nginx:1.27`; `ghcr.io/a/b` unchanged.
fn normalize(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            image.to_owned()
        }
        Some(_) => format!("docker.io/{image}"),
        None => format!("docker.io/library/{image}"),
    }
}

#[derive(Deserialize)]
struct WithSpec<T> {
    spec: T,
}

#[derive(Deserialize)]
struct WithTemplate {
    template: WithSpec<PodSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CronJobSpec {
    job_template: WithSpec<WithTemplate>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    init_containers: Vec<Container>,
    #[serde(default)]
    ephemeral_containers: Vec<Container>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    image: String,
}

impl PodSpec {
    fn images(&self) -> impl Iterator<Item = &str> {
        self.containers
            .iter()
            .chain(&self.init_containers)
            .chain(&self.ephemeral_containers)
            .map(|c| c.image.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_sdk::testing::{request_from_file, validate, validate_settings, RequestBuilder};
    use serde_json::json;

    fn fixture(name: &str) -> Request {
        request_from_file(palisade_testkit::fixture_path(name)).unwrap()
    }

    fn settings() -> serde_json::Value {
        json!({"registries": ["registry.example.com", "ghcr.io/example"]})
    }

    #[test]
    fn normalizes_like_the_container_runtime() {
        assert_eq!(normalize("nginx:1.27"), "docker.io/library/nginx:1.27");
        assert_eq!(normalize("someone/miner"), "docker.io/someone/miner");
        assert_eq!(normalize("localhost:5000/x"), "localhost:5000/x");
        assert!(is_allowed("ghcr.io/example/tools:0.4", "ghcr.io/example"));
        assert!(!is_allowed("ghcr.io/example-evil/tools", "ghcr.io/example"));
        assert!(!is_allowed(
            "registry.example.com.evil.io/x",
            "registry.example.com"
        ));
    }

    #[test]
    fn deployment_templates_are_checked() {
        assert!(
            validate::<AllowedRegistries>(&fixture("deployment-create.json"), settings())
                .is_accepted()
        );
        let r = validate::<AllowedRegistries>(
            &fixture("deployment-create-untrusted-registry.json"),
            settings(),
        );
        assert!(!r.is_accepted());
        assert!(
            r.message()
                .unwrap()
                .contains("docker.io/someone/miner:latest"),
            "{:?}",
            r.message()
        );
    }

    #[test]
    fn pods_including_init_containers_are_checked() {
        assert!(
            validate::<AllowedRegistries>(&fixture("pod-create-privileged.json"), settings())
                .is_accepted()
        );
        let r = validate::<AllowedRegistries>(&fixture("pod-create-unprivileged.json"), settings());
        assert!(!r.is_accepted(), "nginx comes from docker.io");
        let s = json!({"registries": ["docker.io/library"]});
        let r =
            validate::<AllowedRegistries>(&fixture("pod-create-privileged-init-container.json"), s);
        assert!(r.is_accepted(), "{:?}", r.message());
    }

    #[test]
    fn cronjob_template_is_checked() {
        let cron = RequestBuilder::new("batch", "v1", "CronJob")
            .object(json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "a", "image": "quay.io/x/y:1"}]}}}}}}))
            .build();
        assert!(!validate::<AllowedRegistries>(&cron, settings()).is_accepted());
    }

    #[test]
    fn other_kinds_and_deletes_are_accepted() {
        assert!(
            validate::<AllowedRegistries>(&fixture("ingress-create.json"), settings())
                .is_accepted()
        );
        assert!(
            validate::<AllowedRegistries>(&fixture("pod-delete.json"), settings()).is_accepted()
        );
    }

    #[test]
    fn settings_validation() {
        assert_eq!(validate_settings::<AllowedRegistries>(settings()), Ok(()));
        assert!(
            validate_settings::<AllowedRegistries>(json!({"registries": []}))
                .unwrap_err()
                .contains("at least one")
        );
        assert!(
            validate_settings::<AllowedRegistries>(json!({"registries": ["https://x"]})).is_err()
        );
    }
}

//! Live configuration: in a cluster the policy-server watches the ConfigMap
//! its `policies.yml` comes from, through the API, and reloads within a
//! second of a change (the mounted file follows only at the kubelet's next
//! sync, up to a minute or more later).

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use tokio::sync::watch;

use futures::StreamExt;

/// The key of the ConfigMap that holds the policies (Kubewarden's).
pub const POLICIES_KEY: &str = "policies.yml";

/// A ConfigMap, `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapRef {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for ConfigMapRef {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("`{text}` is not `namespace/name`")),
        }
    }
}

impl std::fmt::Display for ConfigMapRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Watches `config_map` and sends its `policies.yml` each time it changes
/// (a ConfigMap without the key sends nothing: the served set stays).
/// Runs until the receiver is dropped (the server shuts down); watch
/// failures are retried with backoff and logged.
pub(super) async fn watch_policies(
    client: kube::Client,
    config_map: ConfigMapRef,
    texts: watch::Sender<Option<String>>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &config_map.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", config_map.name));
    let mut objects = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    loop {
        let event = tokio::select! {
            event = objects.next() => event,
            // The server stopped following (shut down).
            () = texts.closed() => return,
        };
        let Some(event) = event else { return };
        match event {
            Ok(object) => {
                let text = object
                    .data
                    .as_ref()
                    .and_then(|data| data.get(POLICIES_KEY))
                    .cloned();
                let Some(text) = text else {
                    tracing::warn!(config_map = %config_map, key = POLICIES_KEY, "the ConfigMap has no policies; the current ones keep serving");
                    continue;
                };
                texts.send_if_modified(|current| {
                    let changed = current.as_deref() != Some(text.as_str());
                    if changed {
                        *current = Some(text);
                    }
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(config_map = %config_map, error = %e, "watching the policies ConfigMap failed; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_namespace_and_name() {
        let parsed: ConfigMapRef = "kubewarden/policy-server-default".parse().unwrap();
        assert_eq!(parsed.namespace, "kubewarden");
        assert_eq!(parsed.name, "policy-server-default");
        assert_eq!(parsed.to_string(), "kubewarden/policy-server-default");
        for bad in ["", "name", "/name", "ns/", "a/b/c"] {
            assert!(bad.parse::<ConfigMapRef>().is_err(), "{bad}");
        }
    }
}

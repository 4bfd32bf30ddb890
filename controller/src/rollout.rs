//! Whether a policy-server Deployment serves a given configuration: the
//! readiness gate in front of every webhook registration. A webhook pointing
//! at pods that have not loaded the policy would answer "unknown policy" for
//! every request, so registration waits for the whole rollout.

use k8s_openapi::api::apps::v1::Deployment;

use crate::conditions::ConditionSpec;
use crate::objects::CONFIG_HASH_ANNOTATION;

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    /// Every pod runs the expected configuration and is ready.
    pub up_to_date: bool,
    /// No pod of an older configuration is left: every request reaches the
    /// expected configuration.
    pub uniquely_reachable: bool,
    /// What is being waited for, when `up_to_date` is false.
    pub waiting_for: String,
}

impl Rollout {
    /// A condition of type `type_`: true (`RolloutComplete`, `complete`)
    /// once every pod runs the configuration, false (`RolloutInProgress`)
    /// with what is awaited before that.
    pub fn condition(&self, type_: &'static str, complete: &str) -> ConditionSpec {
        if self.up_to_date {
            ConditionSpec::new(type_, true, "RolloutComplete", complete)
        } else {
            ConditionSpec::new(
                type_,
                false,
                "RolloutInProgress",
                format!("waiting for {}", self.waiting_for),
            )
        }
    }
}

/// The rollout of `deployment` towards the configuration hashed as `expected`.
pub fn rollout(deployment: Option<&Deployment>, expected: &str) -> Rollout {
    let waiting = |why: String, uniquely_reachable| Rollout {
        up_to_date: false,
        uniquely_reachable,
        waiting_for: why,
    };
    let Some(deployment) = deployment else {
        return waiting("the policy-server Deployment to be created".into(), false);
    };
    let template_hash = deployment
        .spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION));
    if template_hash.map(String::as_str) != Some(expected) {
        return waiting(
            "the policy-server Deployment to be updated with the new configuration".into(),
            false,
        );
    }
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let generation = deployment.metadata.generation.unwrap_or(0);
    let Some(status) = &deployment.status else {
        return waiting("the Deployment's first status".into(), false);
    };
    if status.observed_generation.unwrap_or(0) < generation {
        return waiting(
            "the Deployment controller to observe the new configuration".into(),
            false,
        );
    }
    let updated = status.updated_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let uniquely_reachable = total == updated;
    if wanted == 0 {
        return waiting(
            "the policy server has 0 replicas; no pod can serve the policy".into(),
            uniquely_reachable,
        );
    }
    if updated < wanted || ready < wanted || total > wanted {
        return waiting(
            format!("the rollout: {updated}/{wanted} pods updated, {ready} ready, {total} in all"),
            uniquely_reachable,
        );
    }
    Rollout {
        up_to_date: true,
        uniquely_reachable,
        waiting_for: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(hash: &str, generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "policy-server-default", "generation": generation},
            "spec": {"replicas": 2, "selector": {},
                     "template": {"metadata": {"annotations": {CONFIG_HASH_ANNOTATION: hash}}}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_complete_rollout_of_the_expected_configuration_is_up_to_date() {
        let done = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2});
        let state = rollout(Some(&deployment("h1", 3, done)), "h1");
        assert!(state.up_to_date && state.uniquely_reachable, "{state:?}");
    }

    #[test]
    fn anything_less_waits() {
        let done = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2});
        assert!(!rollout(None, "h1").up_to_date);
        // Another configuration.
        assert!(!rollout(Some(&deployment("h0", 3, done.clone())), "h1").up_to_date);
        // Not yet observed by the Deployment controller.
        assert!(!rollout(Some(&deployment("h1", 4, done)), "h1").up_to_date);
        // Pods not ready.
        let unready = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 1});
        let state = rollout(Some(&deployment("h1", 3, unready)), "h1");
        assert!(!state.up_to_date);
        assert!(
            state.waiting_for.contains("1 ready"),
            "{}",
            state.waiting_for
        );
        // Old pods still serving next to the new ones.
        let surge = json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "readyReplicas": 3});
        let state = rollout(Some(&deployment("h1", 3, surge)), "h1");
        assert!(!state.up_to_date && !state.uniquely_reachable);
    }
}

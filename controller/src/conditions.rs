//! Status conditions, the same way for every resource the controller
//! reports on: the reconcilers say what is true now, and the transition time
//! of a condition moves only when its truth changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as a reconciler decides it, before it gets its transition time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionSpec {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
}

impl ConditionSpec {
    pub fn new(
        type_: &'static str,
        ok: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            ok,
            reason,
            message: message.into(),
        }
    }

    fn status(&self) -> &'static str {
        if self.ok {
            "True"
        } else {
            "False"
        }
    }
}

/// The conditions to store: `wanted`, each keeping the transition time of
/// the `previous` condition of its type while its status is the same, and
/// `now` otherwise.
pub fn conditions(
    previous: &[Condition],
    wanted: &[ConditionSpec],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    wanted
        .iter()
        .map(|spec| {
            let status = spec.status();
            let since = previous
                .iter()
                .find(|c| c.type_ == spec.type_ && c.status == status)
                .map_or(Time(now), |c| c.last_transition_time.clone());
            Condition {
                type_: spec.type_.to_owned(),
                status: status.to_owned(),
                reason: spec.reason.to_owned(),
                message: spec.message.clone(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let earlier: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let now: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let first = conditions(
            &[],
            &[ConditionSpec::new(
                "Ready",
                false,
                "RolloutInProgress",
                "waiting",
            )],
            Some(1),
            earlier,
        );
        assert_eq!(first[0].last_transition_time, Time(earlier));

        // Same status, new message: the time stays.
        let same = conditions(
            &first,
            &[ConditionSpec::new(
                "Ready",
                false,
                "RolloutInProgress",
                "still waiting",
            )],
            Some(2),
            now,
        );
        assert_eq!(same[0].last_transition_time, Time(earlier));
        assert_eq!(same[0].message, "still waiting");
        assert_eq!(same[0].observed_generation, Some(2));

        // New status: the time moves.
        let flipped = conditions(
            &same,
            &[ConditionSpec::new("Ready", true, "RolloutComplete", "done")],
            Some(2),
            now,
        );
        assert_eq!(flipped[0].last_transition_time, Time(now));
        assert_eq!(flipped[0].status, "True");
    }
}

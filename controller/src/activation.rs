//! Whether a policy is active, and what the reconciler must do about it: a
//! pure function of what the reconciler found, so that every branch is
//! tested without an API server. The reconciler gathers the [`Facts`], calls
//! [`decide`] and carries out the [`Outcome`].

use std::time::Duration;

use crate::conditions::ConditionSpec;
use crate::crd::PolicyStatusPhase;
use crate::rollout::Rollout;
use crate::settings::CheckError;

/// How often an active policy's webhook is re-applied, which reverts drift.
pub const RESYNC: Duration = Duration::from_secs(300);
/// While a rollout or a module is awaited (their changes also wake the
/// reconciler; this is the safety net).
pub const WAIT: Duration = Duration::from_secs(30);
/// A failed check is tried again after this: a registry outage heals by
/// itself, and settings change only with the resource, which wakes it anyway.
pub const RECHECK: Duration = Duration::from_secs(60);
/// While the certificate authority is being created.
pub const SOON: Duration = Duration::from_secs(2);

/// The PolicyServer a policy names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// The policy names none.
    NotNamed,
    /// It does not exist, or is being deleted.
    Missing { name: String },
    /// It exists; the policy is in its configuration.
    Present {
        /// The settings check of every module, with that server's sources.
        check: Result<(), CheckError>,
        /// The rollout of the configuration that holds the policy.
        rollout: Rollout,
        /// Whether the certificate authority (the webhooks' caBundle) exists.
        authority: bool,
    },
}

/// What the reconciler found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub server: Server,
    /// Whether the policy's webhook is registered. Only consulted where it
    /// changes the decision: the check failed without a verdict, or the
    /// rollout is not complete ([`Facts::needs_registration`]).
    pub registered: bool,
}

impl Facts {
    /// Whether [`decide`] reads `registered` for these facts: the reconciler
    /// looks the webhook up only then (two API reads it can spare otherwise).
    pub fn needs_registration(server: &Server) -> bool {
        match server {
            Server::Present { check, rollout, .. } => match check {
                Err(problem) => !problem.is_verdict(),
                Ok(()) => !rollout.up_to_date,
            },
            _ => false,
        }
    }
}

/// What happens to the webhook configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Webhook {
    /// Apply it (creating it or reverting drift).
    Register,
    /// Delete it, if there is one.
    Remove,
    /// Leave it as it is.
    Keep,
}

/// What the reconciler does and reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub phase: PolicyStatusPhase,
    pub conditions: Vec<ConditionSpec>,
    pub webhook: Webhook,
    /// When to look again; `None` waits for a change.
    pub requeue: Option<Duration>,
}

const ACTIVE: &str = "PolicyActive";

/// The decision for one policy.
pub fn decide(facts: &Facts) -> Outcome {
    let (check, rollout, authority) = match &facts.server {
        Server::NotNamed => {
            return unregistered(
                PolicyStatusPhase::Unscheduled,
                ConditionSpec::new(ACTIVE, false, "NoPolicyServer", "no policy server is named"),
                None,
            )
        }
        Server::Missing { name } => {
            return unregistered(
                PolicyStatusPhase::Scheduled,
                ConditionSpec::new(
                    ACTIVE,
                    false,
                    "PolicyServerMissing",
                    format!("policy server `{name}` does not exist"),
                ),
                None,
            )
        }
        Server::Present {
            check,
            rollout,
            authority,
        } => (check, rollout, *authority),
    };

    if let Err(problem) = check {
        // The policy's pods already run it: a registry outage or an
        // unfinished check must not silently end its enforcement.
        if !problem.is_verdict() && facts.registered {
            return Outcome {
                phase: PolicyStatusPhase::Active,
                conditions: vec![
                    registered(),
                    ConditionSpec::new("ModuleCheck", false, problem.reason(), problem.to_string()),
                ],
                webhook: if authority {
                    Webhook::Register
                } else {
                    Webhook::Keep
                },
                requeue: Some(RECHECK),
            };
        }
        return unregistered(
            PolicyStatusPhase::Pending,
            ConditionSpec::new(ACTIVE, false, problem.reason(), problem.to_string()),
            Some(RECHECK),
        );
    }

    let mut conditions = rollout_conditions(rollout);
    // A registered webhook stays through later rollouts; only a policy
    // waiting for its first one is held back.
    if !rollout.up_to_date && !facts.registered {
        conditions.push(ConditionSpec::new(
            ACTIVE,
            false,
            "RolloutInProgress",
            format!("waiting for {}", rollout.waiting_for),
        ));
        return Outcome {
            phase: PolicyStatusPhase::Pending,
            conditions,
            webhook: Webhook::Keep,
            requeue: Some(WAIT),
        };
    }
    if !authority {
        conditions.push(ConditionSpec::new(
            ACTIVE,
            false,
            "CertificateAuthorityMissing",
            "waiting for the policy servers' certificate authority",
        ));
        return Outcome {
            phase: PolicyStatusPhase::Pending,
            conditions,
            webhook: Webhook::Keep,
            requeue: Some(SOON),
        };
    }
    conditions.push(registered());
    Outcome {
        phase: PolicyStatusPhase::Active,
        conditions,
        webhook: Webhook::Register,
        requeue: Some(if rollout.up_to_date { RESYNC } else { WAIT }),
    }
}

/// Not active, for the one reason `why`: no webhook.
fn unregistered(
    phase: PolicyStatusPhase,
    why: ConditionSpec,
    requeue: Option<Duration>,
) -> Outcome {
    Outcome {
        phase,
        conditions: vec![why],
        webhook: Webhook::Remove,
        requeue,
    }
}

fn registered() -> ConditionSpec {
    ConditionSpec::new(
        ACTIVE,
        true,
        "WebhookRegistered",
        "the webhook is registered",
    )
}

fn rollout_conditions(rollout: &Rollout) -> Vec<ConditionSpec> {
    vec![
        rollout.condition(
            "PolicyServerConfigurationUpToDate",
            "every policy-server pod runs the current configuration",
        ),
        if rollout.uniquely_reachable {
            ConditionSpec::new(
                "PolicyUniquelyReachable",
                true,
                "NoOlderPods",
                "no pod of an older configuration serves requests",
            )
        } else {
            ConditionSpec::new(
                "PolicyUniquelyReachable",
                false,
                "OlderPodsServing",
                "pods of an older configuration still serve requests",
            )
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> Rollout {
        Rollout {
            up_to_date: true,
            uniquely_reachable: true,
            waiting_for: String::new(),
        }
    }

    fn in_progress() -> Rollout {
        Rollout {
            up_to_date: false,
            uniquely_reachable: false,
            waiting_for: "1 of 2 pods".into(),
        }
    }

    fn present(check: Result<(), CheckError>, rollout: Rollout, authority: bool) -> Server {
        Server::Present {
            check,
            rollout,
            authority,
        }
    }

    fn active_reason(outcome: &Outcome) -> (bool, &'static str) {
        let c = outcome
            .conditions
            .iter()
            .find(|c| c.type_ == ACTIVE)
            .unwrap();
        (c.ok, c.reason)
    }

    #[test]
    fn every_branch_of_the_decision() {
        use PolicyStatusPhase::*;
        let settings = || Err(CheckError::Settings("at least one label".into()));
        let module = || Err(CheckError::Module("registry unreachable".into()));
        let failed = || Err(CheckError::Failed("deadline exceeded".into()));
        type Row = (
            &'static str,
            Server,
            bool,
            PolicyStatusPhase,
            (bool, &'static str),
            Webhook,
            Option<Duration>,
        );
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("no server named", Server::NotNamed, false, Unscheduled, (false, "NoPolicyServer"), Webhook::Remove, None),
            ("server missing", Server::Missing { name: "default".into() }, true, Scheduled, (false, "PolicyServerMissing"), Webhook::Remove, None),
            ("invalid settings", present(settings(), complete(), true), false, Pending, (false, "InvalidSettings"), Webhook::Remove, Some(RECHECK)),
            ("invalid settings end an active policy", present(settings(), complete(), true), true, Pending, (false, "InvalidSettings"), Webhook::Remove, Some(RECHECK)),
            ("module unavailable, never active", present(module(), complete(), true), false, Pending, (false, "ModuleUnavailable"), Webhook::Remove, Some(RECHECK)),
            ("registry outage keeps an active policy", present(module(), complete(), true), true, Active, (true, "WebhookRegistered"), Webhook::Register, Some(RECHECK)),
            ("unfinished check keeps an active policy", present(failed(), complete(), true), true, Active, (true, "WebhookRegistered"), Webhook::Register, Some(RECHECK)),
            ("outage without a CA keeps the webhook as is", present(module(), complete(), false), true, Active, (true, "WebhookRegistered"), Webhook::Keep, Some(RECHECK)),
            ("first rollout awaited", present(Ok(()), in_progress(), true), false, Pending, (false, "RolloutInProgress"), Webhook::Keep, Some(WAIT)),
            ("later rollout keeps the webhook", present(Ok(()), in_progress(), true), true, Active, (true, "WebhookRegistered"), Webhook::Register, Some(WAIT)),
            ("no CA yet", present(Ok(()), complete(), false), false, Pending, (false, "CertificateAuthorityMissing"), Webhook::Keep, Some(SOON)),
            ("served everywhere", present(Ok(()), complete(), true), false, Active, (true, "WebhookRegistered"), Webhook::Register, Some(RESYNC)),
        ];
        for (name, server, registered, phase, active, webhook, requeue) in table {
            let outcome = decide(&Facts { server, registered });
            assert_eq!(outcome.phase, phase, "{name}");
            assert_eq!(active_reason(&outcome), active, "{name}");
            assert_eq!(outcome.webhook, webhook, "{name}");
            assert_eq!(outcome.requeue, requeue, "{name}");
        }
    }

    #[test]
    fn registration_is_looked_up_only_where_it_matters() {
        let needs = |check, rollout| Facts::needs_registration(&present(check, rollout, true));
        assert!(!needs(Ok(()), complete()));
        assert!(needs(Ok(()), in_progress()));
        assert!(needs(Err(CheckError::Module("x".into())), complete()));
        assert!(!needs(Err(CheckError::Settings("x".into())), complete()));
        assert!(!Facts::needs_registration(&Server::NotNamed));
    }

    #[test]
    fn an_outage_on_an_active_policy_says_why_beside_the_active_condition() {
        let outcome = decide(&Facts {
            server: present(
                Err(CheckError::Module("connection refused".into())),
                complete(),
                true,
            ),
            registered: true,
        });
        let module = outcome
            .conditions
            .iter()
            .find(|c| c.type_ == "ModuleCheck")
            .unwrap();
        assert_eq!((module.ok, module.reason), (false, "ModuleUnavailable"));
        assert_eq!(module.message, "connection refused");
    }
}

//! A policy's `matchConditions`, evaluated as the API server would before
//! calling its webhook: CEL expressions over `object`, `oldObject` and
//! `request`. The scanner evaluates what the standard CEL language
//! expresses; an expression it cannot evaluate (Kubernetes' extension
//! libraries, `authorizer`) makes the result `skip`, with the reason,
//! rather than a guess either way.

use k8s_openapi::api::admissionregistration::v1::MatchCondition;

/// Whether the API server would send the object to the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applies {
    /// Every condition is true (or there are none).
    Yes,
    /// A condition is false: the webhook would not be called.
    No,
    /// A condition could not be evaluated here, and why.
    Unknown(String),
}

/// Evaluates `conditions` for a CREATE of `object` described by `request`
/// (the AdmissionRequest as JSON).
pub fn applies(
    conditions: &[MatchCondition],
    object: &serde_json::Value,
    request: &serde_json::Value,
) -> Applies {
    if conditions.is_empty() {
        return Applies::Yes;
    }
    let mut context = cel::Context::default();
    for (name, value) in [
        ("object", object),
        ("oldObject", &serde_json::Value::Null),
        ("request", request),
    ] {
        match cel::to_value(value) {
            Ok(value) => context.add_variable_from_value(name, value),
            Err(e) => return Applies::Unknown(format!("`{name}` is not a CEL value: {e}")),
        }
    }
    for condition in conditions {
        let unknown = |why: String| {
            Applies::Unknown(format!(
                "matchCondition `{}` cannot be evaluated by the scanner: {why}",
                condition.name
            ))
        };
        let program = match cel::Program::compile(&condition.expression) {
            Ok(program) => program,
            Err(e) => return unknown(e.to_string()),
        };
        match program.execute(&context) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Applies::No,
            Ok(other) => return unknown(format!("it gave {other:?}, not a boolean")),
            Err(e) => return unknown(e.to_string()),
        }
    }
    Applies::Yes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn condition(name: &str, expression: &str) -> MatchCondition {
        MatchCondition {
            name: name.into(),
            expression: expression.into(),
        }
    }

    #[test]
    fn conditions_decide_like_the_api_server_or_say_why_not() {
        let object =
            json!({"metadata": {"name": "p", "namespace": "team", "labels": {"app": "x"}}});
        let request = json!({"operation": "CREATE", "namespace": "team"});
        let check = |expressions: &[&str]| {
            let conditions: Vec<MatchCondition> = expressions
                .iter()
                .enumerate()
                .map(|(i, e)| condition(&format!("c{i}"), e))
                .collect();
            applies(&conditions, &object, &request)
        };
        assert_eq!(check(&[]), Applies::Yes);
        assert_eq!(
            check(&[
                "object.metadata.namespace != 'kube-system'",
                "request.operation == 'CREATE'"
            ]),
            Applies::Yes
        );
        assert_eq!(check(&["has(object.metadata.labels.app)"]), Applies::Yes);
        assert_eq!(
            check(&["'team' in object.metadata.labels", "true"]),
            Applies::No
        );
        assert_eq!(check(&["oldObject == null"]), Applies::Yes);
        let Applies::Unknown(why) =
            check(&["authorizer.group('').resource('pods').check('create').allowed()"])
        else {
            panic!("the authorizer is not available to the scanner");
        };
        assert!(why.contains("matchCondition `c0`"), "{why}");
        assert!(matches!(
            check(&["object.metadata.name"]),
            Applies::Unknown(_)
        ));
        assert!(matches!(check(&["this is not CEL ("]), Applies::Unknown(_)));
    }
}

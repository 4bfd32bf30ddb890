//! The glue between the exported functions and a [`Policy`]. The native test
//! harness calls the same functions, so tests exercise the code path the
//! component runs.

use crate::{reject, settings, Policy, RawPolicy, Request, Response};

/// Code of the rejection returned when a policy fails to decide.
pub const POLICY_ERROR_CODE: u16 = 500;

/// Parses the settings and runs [`Policy::validate`]; errors become rejections.
pub fn validate<P: Policy>(request: &Request, settings: &str) -> Response {
    let settings = match settings::parse::<P::Settings>(settings) {
        Ok(s) => s,
        Err(e) => return reject(e, POLICY_ERROR_CODE),
    };
    match P::validate(request, &settings) {
        Ok(response) => response,
        Err(e) => reject(format!("policy error: {e}"), POLICY_ERROR_CODE),
    }
}

/// Parses the settings and runs [`Policy::validate_settings`].
pub fn validate_settings<P: Policy>(settings: &str) -> Result<(), String> {
    let parsed = settings::parse::<P::Settings>(settings)?;
    P::validate_settings(&parsed)
}

/// Parses the settings and the document, then runs [`RawPolicy::validate`];
/// a document of the wrong shape is the client's error (400), a failing
/// policy the policy's (500).
pub fn validate_raw<P: RawPolicy>(document: &str, settings: &str) -> Response {
    let settings = match settings::parse::<P::Settings>(settings) {
        Ok(s) => s,
        Err(e) => return reject(e, POLICY_ERROR_CODE),
    };
    let document = match serde_json::from_str::<P::Request>(document) {
        Ok(d) => d,
        Err(e) => {
            return reject(
                format!("the document is not what the policy expects: {e}"),
                crate::MALFORMED_DOCUMENT_CODE,
            )
        }
    };
    match P::validate(&document, &settings) {
        Ok(response) => response,
        Err(e) => reject(format!("policy error: {e}"), POLICY_ERROR_CODE),
    }
}

/// Parses the settings and runs [`RawPolicy::validate_settings`].
pub fn validate_raw_settings<P: RawPolicy>(settings: &str) -> Result<(), String> {
    let parsed = settings::parse::<P::Settings>(settings)?;
    P::validate_settings(&parsed)
}

#[cfg(all(target_arch = "wasm32", not(feature = "raw")))]
pub fn validate_wit<P: Policy>(
    request: crate::__wit::AdmissionRequest,
    settings: &str,
) -> crate::__wit::ValidationResponse {
    to_wit(validate::<P>(&from_wit(request), settings))
}

/// The WIT record of a response.
#[cfg(target_arch = "wasm32")]
pub fn to_wit(response: Response) -> crate::__wit::ValidationResponse {
    crate::__wit::ValidationResponse {
        accepted: response.accepted,
        message: response.message,
        code: response.code,
        mutated_object: response.mutated_object,
        warnings: response.warnings,
        audit_annotations: response.audit_annotations,
    }
}

#[cfg(all(target_arch = "wasm32", not(feature = "raw")))]
fn from_wit(r: crate::__wit::AdmissionRequest) -> Request {
    use crate::__wit::palisade::policy::types as wit;
    use crate::{GroupVersionKind, GroupVersionResource, Operation, UserInfo};
    let gvk = |k: wit::GroupVersionKind| GroupVersionKind {
        group: k.group,
        version: k.version,
        kind: k.kind,
    };
    let gvr = |r: wit::GroupVersionResource| GroupVersionResource {
        group: r.group,
        version: r.version,
        resource: r.resource,
    };
    Request {
        uid: r.uid,
        kind: gvk(r.kind),
        resource: gvr(r.resource),
        sub_resource: r.sub_resource,
        request_kind: r.request_kind.map(gvk),
        request_resource: r.request_resource.map(gvr),
        request_sub_resource: r.request_sub_resource,
        name: r.name,
        namespace: r.namespace,
        operation: match r.operation {
            wit::Operation::Create => Operation::Create,
            wit::Operation::Update => Operation::Update,
            wit::Operation::Delete => Operation::Delete,
            wit::Operation::Connect => Operation::Connect,
        },
        user_info: UserInfo {
            username: r.user_info.username,
            uid: r.user_info.uid,
            groups: r.user_info.groups,
            extra: r.user_info.extra,
        },
        dry_run: r.dry_run,
        object: r.object,
        old_object: r.old_object,
        options: r.options,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{accept, Operation};
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        max: u32,
    }

    struct MaxReplicas;

    impl Policy for MaxReplicas {
        type Settings = Limits;

        fn validate(request: &Request, settings: &Limits) -> crate::Result<Response> {
            #[derive(Deserialize)]
            struct Obj {
                spec: Spec,
            }
            #[derive(Deserialize)]
            struct Spec {
                replicas: u32,
            }
            let Some(obj) = request.object::<Obj>()? else {
                return Ok(accept());
            };
            Ok(if obj.spec.replicas > settings.max {
                reject(
                    format!("{} replicas is over {}", obj.spec.replicas, settings.max),
                    403,
                )
            } else {
                accept()
            })
        }

        fn validate_settings(settings: &Limits) -> Result<(), String> {
            if settings.max == 0 {
                return Err("max must be positive".into());
            }
            Ok(())
        }
    }

    #[derive(Deserialize)]
    struct Order {
        quantity: u32,
        #[serde(default)]
        priority: Option<String>,
    }

    #[derive(Deserialize)]
    struct OrderLimits {
        max: u32,
    }

    struct Orders;

    impl RawPolicy for Orders {
        type Request = Order;
        type Settings = OrderLimits;

        fn validate(order: &Order, limits: &OrderLimits) -> crate::Result<Response> {
            if order.quantity > limits.max {
                return Ok(reject(
                    format!("{} is over {}", order.quantity, limits.max),
                    403,
                ));
            }
            match &order.priority {
                Some(_) => Ok(accept()),
                None => Ok(crate::mutate(
                    &serde_json::json!({"quantity": order.quantity, "priority": "normal"}),
                )?),
            }
        }

        fn validate_settings(limits: &OrderLimits) -> Result<(), String> {
            (limits.max > 0)
                .then_some(())
                .ok_or_else(|| "max must be positive".into())
        }
    }

    #[test]
    fn raw_documents_are_parsed_then_decided() {
        let settings = r#"{"max": 5}"#;
        let over = validate_raw::<Orders>(r#"{"quantity": 9, "priority": "high"}"#, settings);
        assert_eq!(over.code(), Some(403));
        assert_eq!(over.message(), Some("9 is over 5"));
        assert!(
            validate_raw::<Orders>(r#"{"quantity": 2, "priority": "high"}"#, settings)
                .is_accepted()
        );
        let mutated = validate_raw::<Orders>(r#"{"quantity": 2}"#, settings);
        assert!(mutated.is_accepted() && mutated.is_mutation());
        // A document of the wrong shape is the client's error, not the policy's.
        let malformed = validate_raw::<Orders>(r#"{"qty": 2}"#, settings);
        assert_eq!(malformed.code(), Some(crate::MALFORMED_DOCUMENT_CODE));
        assert!(malformed
            .message()
            .unwrap()
            .contains("missing field `quantity`"));
        let bad_settings = validate_raw::<Orders>(r#"{"quantity": 2}"#, "[]");
        assert_eq!(bad_settings.code(), Some(POLICY_ERROR_CODE));
        assert_eq!(
            validate_raw_settings::<Orders>(r#"{"max": 0}"#),
            Err("max must be positive".into())
        );
        assert_eq!(validate_raw_settings::<Orders>(settings), Ok(()));
    }

    fn request(object: Option<&str>) -> Request {
        Request {
            operation: Operation::Create,
            object: object.map(str::to_owned),
            ..Request::default()
        }
    }

    #[test]
    fn settings_are_parsed_then_validated() {
        assert_eq!(validate_settings::<MaxReplicas>(r#"{"max": 3}"#), Ok(()));
        assert_eq!(
            validate_settings::<MaxReplicas>(r#"{"max": 0}"#),
            Err("max must be positive".into())
        );
        let err = validate_settings::<MaxReplicas>(r#"{"maxx": 3}"#).unwrap_err();
        assert!(
            err.starts_with("invalid settings: unknown field `maxx`"),
            "{err}"
        );
        let err = validate_settings::<MaxReplicas>("").unwrap_err();
        assert!(
            err.contains("missing field `max`"),
            "empty settings mean `{{}}`: {err}"
        );
    }

    #[test]
    fn verdicts_and_errors() {
        let over =
            validate::<MaxReplicas>(&request(Some(r#"{"spec":{"replicas":5}}"#)), r#"{"max":3}"#);
        assert_eq!((over.is_accepted(), over.code()), (false, Some(403)));
        assert_eq!(over.message(), Some("5 replicas is over 3"));
        let under =
            validate::<MaxReplicas>(&request(Some(r#"{"spec":{"replicas":2}}"#)), r#"{"max":3}"#);
        assert!(under.is_accepted());
        assert!(validate::<MaxReplicas>(&request(None), r#"{"max":3}"#).is_accepted());
        // A policy error (unparsable object) becomes a 500 rejection, not a panic.
        let broken = validate::<MaxReplicas>(&request(Some(r#"{"spec":{}}"#)), r#"{"max":3}"#);
        assert_eq!(broken.code(), Some(POLICY_ERROR_CODE));
        assert!(broken
            .message()
            .unwrap()
            .starts_with("policy error: missing field `replicas`"));
        // Bad settings at evaluation time also reject cleanly.
        let bad = validate::<MaxReplicas>(&request(None), "[]");
        assert_eq!(bad.code(), Some(POLICY_ERROR_CODE));
    }
}

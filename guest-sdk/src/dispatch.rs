//! The glue between the exported functions and a [`Policy`]. The native test
//! harness calls the same functions, so tests exercise the code path the
//! component runs.

use crate::{reject, settings, Policy, Request, Response};

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

#[cfg(target_arch = "wasm32")]
pub fn validate_wit<P: Policy>(
    request: crate::__wit::AdmissionRequest,
    settings: &str,
) -> crate::__wit::ValidationResponse {
    let response = validate::<P>(&from_wit(request), settings);
    crate::__wit::ValidationResponse {
        accepted: response.accepted,
        message: response.message,
        code: response.code,
        mutated_object: response.mutated_object,
        warnings: response.warnings,
        audit_annotations: response.audit_annotations,
    }
}

#[cfg(target_arch = "wasm32")]
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

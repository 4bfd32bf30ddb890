//! Admission requests, from the API server's JSON to the WIT record.

use std::sync::OnceLock;

use kube_core::admission::Operation;
use serde_json::value::RawValue;

use crate::bindings;
use crate::error::EvalError;

/// One admission request, prepared once and evaluated by any number of
/// policies. The objects stay the JSON text the API server sent: policies
/// parse them themselves, and the host only needs a parsed copy to diff a
/// mutation, made on first use.
#[derive(Debug, Clone)]
pub struct PolicyRequest {
    pub(crate) wit: bindings::AdmissionRequest,
    object: OnceLock<Option<serde_json::Value>>,
}

/// The parts of an AdmissionReview the host reads, with the objects kept
/// as raw text (validated JSON, never rebuilt).
#[derive(serde::Deserialize)]
struct RawReview {
    request: Option<RawRequest>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    uid: String,
    kind: kube_core::GroupVersionKind,
    resource: kube_core::GroupVersionResource,
    sub_resource: Option<String>,
    request_kind: Option<kube_core::GroupVersionKind>,
    request_resource: Option<kube_core::GroupVersionResource>,
    request_sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    namespace: Option<String>,
    operation: Operation,
    user_info: k8s_openapi::api::authentication::v1::UserInfo,
    object: Option<Box<RawValue>>,
    old_object: Option<Box<RawValue>>,
    #[serde(default)]
    dry_run: bool,
    options: Option<Box<RawValue>>,
}

impl PolicyRequest {
    /// Parses an `AdmissionReview` (as POSTed by the API server).
    pub fn from_review_json(body: &[u8]) -> Result<Self, EvalError> {
        let review: RawReview = serde_json::from_slice(body)
            .map_err(|e| EvalError::InvalidRequest(format!("not an AdmissionReview: {e}")))?;
        let request = review.request.ok_or_else(|| {
            EvalError::InvalidRequest("the AdmissionReview has no `request`".into())
        })?;
        let text = |raw: Option<Box<RawValue>>| raw.map(|r| String::from(Box::<str>::from(r)));
        let wit = bindings::AdmissionRequest {
            uid: request.uid,
            kind: gvk(&request.kind),
            resource: gvr(&request.resource),
            sub_resource: request.sub_resource,
            request_kind: request.request_kind.as_ref().map(gvk),
            request_resource: request.request_resource.as_ref().map(gvr),
            request_sub_resource: request.request_sub_resource,
            name: Some(request.name).filter(|n| !n.is_empty()),
            namespace: request.namespace,
            operation: operation(&request.operation),
            user_info: user_info(request.user_info),
            dry_run: request.dry_run,
            object: text(request.object),
            old_object: text(request.old_object),
            options: text(request.options),
        };
        Ok(Self {
            wit,
            object: OnceLock::new(),
        })
    }

    /// The request's uid, echoed in the response.
    pub fn uid(&self) -> &str {
        &self.wit.uid
    }

    /// The request's namespace, if the object is namespaced.
    pub fn namespace(&self) -> Option<&str> {
        self.wit.namespace.as_deref()
    }

    /// The object under admission, as JSON (none on DELETE), parsed on
    /// first use.
    pub fn object(&self) -> Option<&serde_json::Value> {
        self.object
            .get_or_init(|| {
                // The text was validated as JSON when the review was parsed.
                self.wit
                    .object
                    .as_deref()
                    .and_then(|text| serde_json::from_str(text).ok())
            })
            .as_ref()
    }

    /// The object under admission as the JSON text policies receive.
    pub fn raw_object(&self) -> Option<&str> {
        self.wit.object.as_deref()
    }

    /// The kind of the object (`Pod`).
    pub fn kind(&self) -> &str {
        &self.wit.kind.kind
    }

    /// The operation, upper-case as Kubernetes writes it (`CREATE`).
    pub fn operation(&self) -> &'static str {
        match self.wit.operation {
            bindings::Operation::Create => "CREATE",
            bindings::Operation::Update => "UPDATE",
            bindings::Operation::Delete => "DELETE",
            bindings::Operation::Connect => "CONNECT",
        }
    }
}

impl PolicyRequest {
    /// The request as Kubewarden's waPC and WASI policies receive it: the
    /// AdmissionRequest in camelCase, objects embedded as they arrived.
    pub(crate) fn kubewarden_json(&self) -> Result<String, EvalError> {
        use serde_json::value::RawValue;
        let raw = |text: &Option<String>| -> Result<Option<Box<RawValue>>, EvalError> {
            text.clone()
                .map(RawValue::from_string)
                .transpose()
                .map_err(|e| EvalError::InvalidRequest(e.to_string()))
        };
        let r = &self.wit;
        let gvk = |k: &bindings::GroupVersionKind| serde_json::json!({"group": k.group, "version": k.version, "kind": k.kind});
        let gvr = |k: &bindings::GroupVersionResource| serde_json::json!({"group": k.group, "version": k.version, "resource": k.resource});
        let extra: std::collections::BTreeMap<&str, &Vec<String>> = r
            .user_info
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let request = KubewardenRequest {
            uid: &r.uid,
            kind: gvk(&r.kind),
            resource: gvr(&r.resource),
            sub_resource: r.sub_resource.as_deref(),
            request_kind: r.request_kind.as_ref().map(gvk),
            request_resource: r.request_resource.as_ref().map(gvr),
            request_sub_resource: r.request_sub_resource.as_deref(),
            name: r.name.as_deref().unwrap_or_default(),
            namespace: r.namespace.as_deref(),
            operation: self.operation(),
            user_info: serde_json::json!({
                "username": r.user_info.username,
                "uid": r.user_info.uid,
                "groups": r.user_info.groups,
                "extra": extra,
            }),
            object: raw(&r.object)?,
            old_object: raw(&r.old_object)?,
            dry_run: r.dry_run,
            options: raw(&r.options)?,
        };
        serde_json::to_string(&request).map_err(|e| EvalError::InvalidRequest(e.to_string()))
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct KubewardenRequest<'a> {
    uid: &'a str,
    kind: serde_json::Value,
    resource: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub_resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_kind: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_resource: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_sub_resource: Option<&'a str>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
    operation: &'a str,
    user_info: serde_json::Value,
    object: Option<Box<serde_json::value::RawValue>>,
    old_object: Option<Box<serde_json::value::RawValue>>,
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<Box<serde_json::value::RawValue>>,
}

fn operation(operation: &Operation) -> bindings::Operation {
    match operation {
        Operation::Create => bindings::Operation::Create,
        Operation::Update => bindings::Operation::Update,
        Operation::Delete => bindings::Operation::Delete,
        Operation::Connect => bindings::Operation::Connect,
    }
}

fn user_info(user: k8s_openapi::api::authentication::v1::UserInfo) -> bindings::UserInfo {
    bindings::UserInfo {
        username: user.username.unwrap_or_default(),
        uid: user.uid.unwrap_or_default(),
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default().into_iter().collect(),
    }
}

fn gvk(k: &kube_core::GroupVersionKind) -> bindings::GroupVersionKind {
    bindings::GroupVersionKind {
        group: k.group.clone(),
        version: k.version.clone(),
        kind: k.kind.clone(),
    }
}

fn gvr(r: &kube_core::GroupVersionResource) -> bindings::GroupVersionResource {
    bindings::GroupVersionResource {
        group: r.group.clone(),
        version: r.version.clone(),
        resource: r.resource.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_delete_with_old_object_and_no_object() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
            "uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},
            "resource":{"group":"","version":"v1","resource":"pods"},
            "name":"p","namespace":"default","operation":"DELETE",
            "userInfo":{"username":"alice","groups":["g"]},
            "oldObject":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}},"object":null}}"#;
        let r = PolicyRequest::from_review_json(body).unwrap();
        assert_eq!(r.uid(), "u1");
        assert_eq!(r.operation(), "DELETE");
        assert!(r.object().is_none());
        assert!(r
            .wit
            .old_object
            .as_deref()
            .unwrap()
            .contains("\"name\":\"p\""));
        assert_eq!(r.wit.user_info.username, "alice");
    }

    #[test]
    fn objects_reach_policies_as_sent_and_are_parsed_only_when_asked() {
        let body = br#"{"request":{"uid":"u2","kind":{"group":"","version":"v1","kind":"Pod"},
            "resource":{"group":"","version":"v1","resource":"pods"},"operation":"CREATE",
            "userInfo":{},"object":{"metadata": {"name":"p", "b":1, "a":2}},"options":null}}"#;
        let r = PolicyRequest::from_review_json(body).unwrap();
        // Key order and spacing are the API server's: nothing was rebuilt.
        assert_eq!(
            r.raw_object(),
            Some(r#"{"metadata": {"name":"p", "b":1, "a":2}}"#)
        );
        assert!(r.wit.options.is_none() && r.wit.old_object.is_none());
        assert!(r.object.get().is_none(), "not parsed before it is needed");
        assert_eq!(r.object().unwrap()["metadata"]["a"], 2);
        assert!(r
            .kubewarden_json()
            .unwrap()
            .contains(r#""object":{"metadata": {"name":"p", "b":1, "a":2}}"#));
    }

    #[test]
    fn malformed_reviews_are_errors() {
        for body in [
            &b"{"[..],
            b"[]",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        ] {
            let e = PolicyRequest::from_review_json(body).unwrap_err();
            assert!(matches!(e, EvalError::InvalidRequest(_)), "{e}");
        }
    }
}

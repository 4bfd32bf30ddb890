//! Native test harness: run a policy's logic with plain `cargo test`.
//!
//! Enable it only for tests, so none of it reaches the policy binary:
//!
//! ```toml
//! [dev-dependencies]
//! palisade-sdk = { version = "0.1", features = ["testing"] }
//! ```
//!
//! ```
//! use palisade_sdk::testing::{validate, RequestBuilder};
//! use palisade_sdk::{accept, reject, NoSettings, Policy, Request, Response};
//!
//! struct OnlyPods;
//! impl Policy for OnlyPods {
//!     type Settings = NoSettings;
//!     fn validate(r: &Request, _: &NoSettings) -> palisade_sdk::Result<Response> {
//!         Ok(if r.kind.kind == "Pod" { accept() } else { reject("pods only", None) })
//!     }
//! }
//!
//! let pod = RequestBuilder::new("", "v1", "Pod").build();
//! assert!(validate::<OnlyPods>(&pod, serde_json::json!({})).is_accepted());
//! let svc = RequestBuilder::new("", "v1", "Service").build();
//! assert_eq!(validate::<OnlyPods>(&svc, serde_json::json!({})).message(), Some("pods only"));
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::log::Level;
use crate::{
    dispatch, GroupVersionKind, GroupVersionResource, Operation, Policy, RawPolicy, Request,
    Response, UserInfo,
};

/// Evaluates `request` with `settings` exactly as the exported component does.
pub fn validate<P: Policy>(request: &Request, settings: serde_json::Value) -> Response {
    dispatch::validate::<P>(request, &settings.to_string())
}

/// Runs the settings validation exactly as the exported component does.
pub fn validate_settings<P: Policy>(settings: serde_json::Value) -> Result<(), String> {
    dispatch::validate_settings::<P>(&settings.to_string())
}

/// Evaluates a raw `document` with `settings` exactly as the exported raw
/// component does.
pub fn validate_raw<P: RawPolicy>(
    document: serde_json::Value,
    settings: serde_json::Value,
) -> Response {
    dispatch::validate_raw::<P>(&document.to_string(), &settings.to_string())
}

/// Runs a raw policy's settings validation exactly as the exported raw
/// component does.
pub fn validate_raw_settings<P: RawPolicy>(settings: serde_json::Value) -> Result<(), String> {
    dispatch::validate_raw_settings::<P>(&settings.to_string())
}

/// Reads an `AdmissionReview` JSON file (such as the API server sends).
pub fn request_from_file(path: impl AsRef<Path>) -> Result<Request, String> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    request_from_review(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses an `AdmissionReview` JSON document.
pub fn request_from_review(json: &str) -> Result<Request, String> {
    let review: Review = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let r = review
        .request
        .ok_or("the AdmissionReview has no `request`")?;
    let text = |v: Option<serde_json::Value>| v.filter(|v| !v.is_null()).map(|v| v.to_string());
    Ok(Request {
        uid: r.uid,
        kind: r.kind.into(),
        resource: r.resource.into(),
        sub_resource: r.sub_resource,
        request_kind: r.request_kind.map(Into::into),
        request_resource: r.request_resource.map(Into::into),
        request_sub_resource: r.request_sub_resource,
        name: r.name.filter(|n| !n.is_empty()),
        namespace: r.namespace,
        operation: match r.operation.as_str() {
            "CREATE" => Operation::Create,
            "UPDATE" => Operation::Update,
            "DELETE" => Operation::Delete,
            "CONNECT" => Operation::Connect,
            other => return Err(format!("unknown operation {other:?}")),
        },
        user_info: UserInfo {
            username: r.user_info.username,
            uid: r.user_info.uid,
            groups: r.user_info.groups,
            extra: r.user_info.extra.into_iter().collect(),
        },
        dry_run: r.dry_run,
        object: text(r.object),
        old_object: text(r.old_object),
        options: text(r.options),
    })
}

/// Builds a request in code.
#[derive(Debug, Clone)]
pub struct RequestBuilder(Request);

impl RequestBuilder {
    /// A CREATE of the given group, version and kind.
    pub fn new(group: &str, version: &str, kind: &str) -> Self {
        Self(Request {
            uid: "test-uid".into(),
            kind: GroupVersionKind {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
            },
            ..Request::default()
        })
    }

    pub fn operation(mut self, operation: Operation) -> Self {
        self.0.operation = operation;
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.0.namespace = Some(namespace.into());
        self
    }

    pub fn name(mut self, name: &str) -> Self {
        self.0.name = Some(name.into());
        self
    }

    pub fn username(mut self, username: &str) -> Self {
        self.0.user_info.username = username.into();
        self
    }

    pub fn object(mut self, object: serde_json::Value) -> Self {
        self.0.object = Some(object.to_string());
        self
    }

    /// The object as JSON text, used as is.
    pub fn raw_object(mut self, object: impl Into<String>) -> Self {
        self.0.object = Some(object.into());
        self
    }

    pub fn old_object(mut self, object: serde_json::Value) -> Self {
        self.0.old_object = Some(object.to_string());
        self
    }

    pub fn build(self) -> Request {
        self.0
    }
}

thread_local! {
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn record_log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let mut line = message.to_owned();
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v}"));
    }
    LOGS.with(|l| l.borrow_mut().push((level, line)));
}

/// Returns and clears the records the policy logged on this thread.
pub fn take_logs() -> Vec<(Level, String)> {
    LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

#[derive(Deserialize)]
struct Review {
    request: Option<ReviewRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewRequest {
    #[serde(default)]
    uid: String,
    kind: Gvk,
    resource: Gvr,
    sub_resource: Option<String>,
    request_kind: Option<Gvk>,
    request_resource: Option<Gvr>,
    request_sub_resource: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    operation: String,
    #[serde(default)]
    user_info: ReviewUser,
    #[serde(default)]
    dry_run: bool,
    object: Option<serde_json::Value>,
    old_object: Option<serde_json::Value>,
    options: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct ReviewUser {
    #[serde(default)]
    username: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    extra: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct Gvk {
    group: String,
    version: String,
    kind: String,
}

impl From<Gvk> for GroupVersionKind {
    fn from(k: Gvk) -> Self {
        Self {
            group: k.group,
            version: k.version,
            kind: k.kind,
        }
    }
}

#[derive(Deserialize)]
struct Gvr {
    group: String,
    version: String,
    resource: String,
}

impl From<Gvr> for GroupVersionResource {
    fn from(r: Gvr) -> Self {
        Self {
            group: r.group,
            version: r.version,
            resource: r.resource,
        }
    }
}

//! What a policy answers.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A policy's decision on one request.
///
/// ```
/// use palisade_sdk::{accept, reject};
///
/// let ok = accept().with_warning("image uses the latest tag");
/// assert!(ok.is_accepted());
///
/// let no = reject("privileged containers are not allowed", 403);
/// assert_eq!(no.code(), Some(403));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
#[must_use]
pub struct Response {
    pub(crate) accepted: bool,
    pub(crate) message: Option<String>,
    pub(crate) code: Option<u16>,
    pub(crate) mutated_object: Option<String>,
    pub(crate) warnings: Vec<String>,
    pub(crate) audit_annotations: Vec<(String, String)>,
}

/// Admits the request unchanged.
pub fn accept() -> Response {
    Response {
        accepted: true,
        ..Response::default()
    }
}

/// Refuses the request. `code` is an HTTP-style status (the host uses 400
/// when it is `None`).
pub fn reject(message: impl Into<String>, code: impl Into<Option<u16>>) -> Response {
    Response {
        accepted: false,
        message: Some(message.into()),
        code: code.into(),
        ..Response::default()
    }
}

/// Admits the request with `object` as its new content. The host turns it
/// into a JSON Patch against the request's object; returning the object
/// unchanged yields no patch.
pub fn mutate<T: Serialize>(object: &T) -> Result<Response, serde_json::Error> {
    Ok(Response {
        accepted: true,
        mutated_object: Some(serde_json::to_string(object)?),
        ..Response::default()
    })
}

impl Response {
    /// Adds a warning shown to the client, whatever the decision.
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// Adds an annotation recorded in the API server's audit log.
    pub fn with_audit_annotation(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.audit_annotations.push((key.into(), value.into()));
        self
    }

    /// Whether the request is admitted.
    pub fn is_accepted(&self) -> bool {
        self.accepted
    }

    /// The rejection message.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The rejection code.
    pub fn code(&self) -> Option<u16> {
        self.code
    }

    /// Warnings added so far.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Audit annotations added so far.
    pub fn audit_annotations(&self) -> &[(String, String)] {
        &self.audit_annotations
    }

    /// Whether the policy returned a mutated object.
    pub fn is_mutation(&self) -> bool {
        self.mutated_object.is_some()
    }

    /// The mutated object, parsed as `T`.
    pub fn mutated_object<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.mutated_object
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
    }
}

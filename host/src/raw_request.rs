//! Raw requests: any JSON document, POSTed to `/validate_raw/<id>` as
//! `{"request": <document>}` (Kubewarden's raw-policy wire format).

use serde_json::value::RawValue;

use crate::error::EvalError;

/// One raw request. The document is kept as the text the client sent (what
/// a policy receives) and parsed once (to diff a mutation against it and to
/// read its `uid`).
#[derive(Debug, Clone)]
pub struct RawRequest {
    text: String,
    value: serde_json::Value,
}

impl RawRequest {
    /// Parses the body of a `/validate_raw` request: `{"request": <JSON>}`.
    pub fn from_body(body: &[u8]) -> Result<Self, EvalError> {
        // A map, not a struct: serde would take `[x]` for `{"request": x}`.
        let mut body: std::collections::HashMap<String, Box<RawValue>> =
            serde_json::from_slice(body).map_err(|e| {
                EvalError::InvalidRequest(format!("a raw request is {{\"request\": <JSON>}}: {e}"))
            })?;
        let document = body.remove("request").ok_or_else(|| {
            EvalError::InvalidRequest(
                "a raw request is {\"request\": <JSON>}: `request` is missing".into(),
            )
        })?;
        Self::from_document(document.get())
    }

    /// A raw request for `document` (the JSON text of the `request` field).
    pub fn from_document(document: &str) -> Result<Self, EvalError> {
        let value = serde_json::from_str(document)
            .map_err(|e| EvalError::InvalidRequest(format!("the raw request is not JSON: {e}")))?;
        Ok(Self {
            text: document.to_owned(),
            value,
        })
    }

    /// `request.uid` when the document has a string `uid`, else empty (as
    /// Kubewarden answers).
    pub fn uid(&self) -> &str {
        self.value
            .get("uid")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    }

    /// The document as JSON text, as the client sent it.
    pub fn json(&self) -> &str {
        &self.text
    }

    /// The parsed document.
    pub fn value(&self) -> &serde_json::Value {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_kept_as_sent_and_its_uid_read() {
        let r = RawRequest::from_body(br#"{"request": {"uid": "u-1", "user": "alice" }}"#).unwrap();
        assert_eq!(r.json(), r#"{"uid": "u-1", "user": "alice" }"#);
        assert_eq!(r.uid(), "u-1");
        assert_eq!(r.value()["user"], "alice");
    }

    #[test]
    fn documents_without_a_string_uid_have_an_empty_one() {
        for document in [r#"{"uid": 7}"#, r#"["a"]"#, r#""text""#, "null", "{}"] {
            let r = RawRequest::from_document(document).unwrap();
            assert_eq!(r.uid(), "", "{document}");
        }
    }

    #[test]
    fn bodies_that_are_not_raw_requests_are_errors() {
        for body in [&b"{"[..], b"[]", b"[1]", b"{}", br#"{"requests": 1}"#] {
            let e = RawRequest::from_body(body).unwrap_err();
            assert!(matches!(e, EvalError::InvalidRequest(_)), "{e}");
            assert!(e.to_string().contains(r#"{"request": <JSON>}"#), "{e}");
        }
    }
}

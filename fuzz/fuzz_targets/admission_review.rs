//! AdmissionReview and raw-request parsing, and the request as policies see
//! it: never a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_host::{PolicyRequest, RawRequest, Verdict};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = PolicyRequest::from_review_json(data) {
        let _ = request.uid();
        let _ = request.namespace();
        let _ = request.object();
        let _ = request.operation();
        let _ = request.kind();
    }
    if let Ok(raw) = RawRequest::from_body(data) {
        // A mutation of any document is diffed against it and answered.
        let verdict = Verdict {
            accepted: true,
            mutated_object: Some(serde_json::json!({"uid": "u", "changed": [1, 2]})),
            ..Verdict::default()
        };
        let _ = verdict.into_raw_response(&raw).raw_review_json();
    }
});

//! AdmissionReview parsing and the request as policies see it: never a
//! panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_host::PolicyRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = PolicyRequest::from_review_json(data) {
        let _ = request.uid();
        let _ = request.namespace();
        let _ = request.object();
        let _ = request.operation();
        let _ = request.kind();
    }
});

//! Indexes past the end of the request's containers: proves that a guest
//! panic reaches the user as its message, not as a wasm backtrace.

use palisade_sdk::{accept, export_policy, NoSettings, Policy, Request, Response};

/// The policy.
#[derive(Debug)]
pub struct Panics;

impl Policy for Panics {
    type Settings = NoSettings;

    #[allow(clippy::indexing_slicing)] // the panic is the point
    fn validate(request: &Request, _settings: &NoSettings) -> palisade_sdk::Result<Response> {
        let containers: Vec<serde_json::Value> = Vec::new();
        let index = std::hint::black_box(request.uid.len());
        let _first = &containers[index];
        Ok(accept())
    }
}

export_policy!(Panics);

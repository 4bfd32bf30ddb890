//! Allocates until memory runs out in `validate`: proves the memory cap.

use palisade_sdk::{accept, export_policy, NoSettings, Policy, Request, Response};

/// The policy.
#[derive(Debug)]
pub struct UnboundedAlloc;

impl Policy for UnboundedAlloc {
    type Settings = NoSettings;

    fn validate(_request: &Request, _settings: &NoSettings) -> palisade_sdk::Result<Response> {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        loop {
            // Filled, so every page is really touched.
            let chunk = std::hint::black_box(vec![0xA5u8; 1 << 20]);
            chunks.push(chunk);
            if chunks.len() == usize::MAX {
                return Ok(accept());
            }
        }
    }
}

export_policy!(UnboundedAlloc);

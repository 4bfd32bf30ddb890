//! Never returns from `validate`: proves the evaluation deadline.

use palisade_sdk::{accept, export_policy, NoSettings, Policy, Request, Response};

/// The policy.
#[derive(Debug)]
pub struct EndlessLoop;

impl Policy for EndlessLoop {
    type Settings = NoSettings;

    fn validate(_request: &Request, _settings: &NoSettings) -> palisade_sdk::Result<Response> {
        let mut counter: u64 = 0;
        loop {
            counter = std::hint::black_box(counter.wrapping_add(1));
            if counter == u64::MAX {
                return Ok(accept());
            }
        }
    }
}

export_policy!(EndlessLoop);

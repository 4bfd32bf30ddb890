//! Resolves `localhost` through the `net` capability and reports the answer
//! as a warning: proves that capability imports are granted or refused.

use palisade_sdk::host::net;
use palisade_sdk::{accept, export_policy, reject, NoSettings, Policy, Request, Response};

/// The policy.
#[derive(Debug)]
pub struct DnsLookup;

impl Policy for DnsLookup {
    type Settings = NoSettings;

    fn validate(_request: &Request, _settings: &NoSettings) -> palisade_sdk::Result<Response> {
        Ok(match net::dns_lookup_host("localhost") {
            Ok(ips) => accept().with_warning(format!("localhost resolves to {}", ips.join(","))),
            Err(e) => reject(format!("lookup failed: {e}"), 500),
        })
    }
}

export_policy!(DnsLookup);

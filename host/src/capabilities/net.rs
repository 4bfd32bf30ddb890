//! The `net` capability: host name resolution with the system resolver
//! (`net/v1/dns_lookup_host`).

use std::net::ToSocketAddrs;

use wasmtime::component::{HasSelf, Linker};

use super::{message, CapabilityCall};
use crate::bindings::{net, HostError};
use crate::component_host::HostState;

/// Resolves a host name; the addresses sorted, without duplicates.
fn dns_lookup_host(host: &str) -> Result<Vec<String>, HostError> {
    let addrs = (host, 0)
        .to_socket_addrs()
        .map_err(|e| HostError::Failed(format!("cannot resolve {host}: {e}")))?;
    let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

impl net::Host for HostState {
    fn dns_lookup_host(&mut self, host: String) -> Result<Vec<String>, HostError> {
        self.check(CapabilityCall::NetDnsLookupHost)?;
        dns_lookup_host(&host)
    }
}

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    net::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

/// Kubewarden's payload: the host as a JSON string; the answer `{"ips": [...]}`.
pub(super) fn wapc(call: CapabilityCall, payload: &[u8]) -> Result<Vec<u8>, String> {
    let host: String = serde_json::from_slice(payload)
        .map_err(|e| format!("{}: the payload must be a JSON string: {e}", call.path()))?;
    let ips = dns_lookup_host(&host).map_err(message)?;
    serde_json::to_vec(&serde_json::json!({ "ips": ips })).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::tests::context;
    use crate::capabilities::{answer_wapc, Grants};

    #[test]
    fn localhost_resolves_to_loopback() {
        let ips = dns_lookup_host("localhost").expect("localhost resolves");
        assert!(
            ips.iter().any(|ip| ip == "127.0.0.1" || ip == "::1"),
            "{ips:?}"
        );
    }

    #[test]
    fn wapc_payload_is_a_json_string() {
        let all = context(Grants::all());
        let ok = answer_wapc(
            &all,
            "kubewarden",
            "net",
            "v1/dns_lookup_host",
            b"\"localhost\"",
        )
        .unwrap();
        assert!(String::from_utf8(ok).unwrap().contains("127.0.0.1"));
        let err =
            answer_wapc(&all, "kubewarden", "net", "v1/dns_lookup_host", b"not json").unwrap_err();
        assert!(err.contains("must be a JSON string"), "{err}");
    }
}

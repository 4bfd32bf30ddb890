//! The `crypto` capability: certificate trust checks
//! (`crypto/v1/is_certificate_trusted`). Not wired into this host yet: the
//! call is linked and answers "not available".

use wasmtime::component::{HasSelf, Linker};

use super::{message, not_available, CapabilityCall};
use crate::bindings::{crypto, HostError};
use crate::component_host::HostState;

impl crypto::Host for HostState {
    fn is_certificate_trusted(&mut self, _request: String) -> Result<String, HostError> {
        self.unavailable(CapabilityCall::CryptoIsCertificateTrusted)
    }
}

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    crypto::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

pub(super) fn wapc(call: CapabilityCall) -> Result<Vec<u8>, String> {
    Err(message(not_available(call)))
}

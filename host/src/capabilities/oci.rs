//! The `oci` capability: image manifests, digests and signature checks.
//! Not wired into this host yet: every call is linked (so policies that
//! import it load) and answers "not available".

use wasmtime::component::{HasSelf, Linker};

use super::{message, not_available, CapabilityCall};
use crate::bindings::{oci, HostError};
use crate::component_host::HostState;

impl oci::Host for HostState {
    fn manifest_digest(&mut self, _image: String) -> Result<String, HostError> {
        self.unavailable(CapabilityCall::OciManifestDigest)
    }

    fn manifest(&mut self, _image: String) -> Result<String, HostError> {
        self.unavailable(CapabilityCall::OciManifest)
    }

    fn verify(&mut self, _request: String) -> Result<String, HostError> {
        self.unavailable(CapabilityCall::OciVerify)
    }
}

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    oci::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

pub(super) fn wapc(call: CapabilityCall) -> Result<Vec<u8>, String> {
    Err(message(not_available(call)))
}

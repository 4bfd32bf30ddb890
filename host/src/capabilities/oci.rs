//! The `oci` capability: image manifests and digests, looked up with the
//! policy-server's own registry client (its sources, CAs and credentials),
//! answers reused for 60 s as in Kubewarden. Signature checks (`v1/verify`,
//! `v2/verify`) answer "not available" in this version.

use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};

use super::answers::Answers;
use super::{message, not_available, payload_error, CapabilityCall, PolicyContext};
use crate::bindings::{oci, HostError};
use crate::component_host::HostState;
use crate::fetch::Fetcher;

/// How long a registry answer is reused.
const ANSWER_TTL: Duration = Duration::from_secs(60);

/// Longest a registry look-up may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Registry look-ups shared by every policy of a server.
pub struct OciAccess {
    fetcher: Fetcher,
    runtime: tokio::runtime::Handle,
    answers: Answers,
}

impl std::fmt::Debug for OciAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciAccess").finish_non_exhaustive()
    }
}

impl OciAccess {
    /// Look-ups through `fetcher`'s registry client, run on `runtime`.
    pub fn new(fetcher: Fetcher, runtime: tokio::runtime::Handle) -> Self {
        Self {
            fetcher,
            runtime,
            answers: Answers::new(ANSWER_TTL),
        }
    }

    /// Answers one look-up (`OciManifestDigest`, `OciManifest` or
    /// `OciManifestConfig`) about `image` as Kubewarden's JSON.
    fn look_up(&self, call: CapabilityCall, image: &str) -> Result<String, HostError> {
        let question = format!("{}\n{image}", call.path());
        self.answers.get_or_ask(question, || {
            let fetcher = self.fetcher.clone();
            let image = image.to_owned();
            let remote = format!("registry ({image})");
            super::wait_for(&self.runtime, CALL_TIMEOUT, &remote, async move {
                match call {
                    CapabilityCall::OciManifestDigest => fetcher
                        .manifest_digest(&image)
                        .await
                        .map(|digest| serde_json::json!({ "digest": digest }).to_string()),
                    CapabilityCall::OciManifestConfig => fetcher
                        .manifest_and_config(&image)
                        .await
                        .map(|answer| answer.to_string()),
                    _ => fetcher.manifest(&image).await,
                }
            })
        })
    }
}

impl PolicyContext {
    /// The registry, or the "not available" error for `call`.
    fn oci(&self, call: CapabilityCall) -> Result<&OciAccess, HostError> {
        self.oci.as_deref().ok_or_else(|| not_available(call))
    }

    /// A manifest look-up, for either ABI: grant, registry, then the call.
    fn oci_look_up(&self, call: CapabilityCall, image: &str) -> Result<String, HostError> {
        self.grants.check(call)?;
        self.oci(call)?.look_up(call, image)
    }
}

impl oci::Host for HostState {
    /// The digest alone (`sha256:...`).
    fn manifest_digest(&mut self, image: String) -> Result<String, HostError> {
        let answer = self
            .context()
            .oci_look_up(CapabilityCall::OciManifestDigest, &image)?;
        serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|answer| answer.get("digest")?.as_str().map(str::to_owned))
            .ok_or_else(|| HostError::Failed(format!("registry ({image}): no digest")))
    }

    fn manifest(&mut self, image: String) -> Result<String, HostError> {
        self.context()
            .oci_look_up(CapabilityCall::OciManifest, &image)
    }

    fn manifest_config(&mut self, image: String) -> Result<String, HostError> {
        self.context()
            .oci_look_up(CapabilityCall::OciManifestConfig, &image)
    }

    fn verify(&mut self, _request: String) -> Result<String, HostError> {
        self.unavailable(CapabilityCall::OciVerify)
    }
}

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    oci::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

/// Answers a waPC call: the payload of the look-ups is the image as a JSON
/// string.
pub(super) fn wapc(
    call: CapabilityCall,
    context: &PolicyContext,
    payload: &[u8],
) -> Result<Vec<u8>, String> {
    match call {
        CapabilityCall::OciManifestDigest
        | CapabilityCall::OciManifest
        | CapabilityCall::OciManifestConfig => {
            let image: String =
                serde_json::from_slice(payload).map_err(|e| payload_error(call, &e))?;
            context
                .oci_look_up(call, &image)
                .map(String::into_bytes)
                .map_err(message)
        }
        other => Err(message(not_available(other))),
    }
}

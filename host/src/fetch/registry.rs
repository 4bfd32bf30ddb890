//! OCI registries, through oci-client, with Kubewarden's wasm media types.

use std::collections::BTreeMap;

use oci_client::client::{
    Certificate, CertificateEncoding, ClientConfig, ClientProtocol, Config, ImageLayer,
};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::{
    request_error, FetchError, FetchedModule, Inner, Sources, WASM_CONFIG_MEDIA_TYPE,
    WASM_LAYER_MEDIA_TYPE,
};
use crate::metadata::PolicyMetadata;

pub(super) fn client(sources: &Sources, cas: &[Vec<u8>]) -> Client {
    Client::new(ClientConfig {
        protocol: if sources.insecure_sources.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(sources.insecure_sources.clone())
        },
        extra_root_certificates: cas
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        ..ClientConfig::default()
    })
}

fn parse(name: &str) -> Result<Reference, FetchError> {
    name.parse()
        .map_err(|e: oci_client::ParseError| FetchError::Reference {
            reference: name.to_owned(),
            reason: match name.split_once('/') {
                Some((_, path))
                    if path.split([':', '@']).next().is_some_and(|repository| {
                        repository.chars().any(|c| c.is_ascii_uppercase())
                    }) =>
                {
                    format!("{e}: repository names are lowercase")
                }
                _ => e.to_string(),
            },
        })
}

fn auth(inner: &Inner, reference: &Reference) -> RegistryAuth {
    match inner.credentials.for_registry(reference.resolve_registry()) {
        Some((user, pass)) => RegistryAuth::Basic(user.clone(), pass.clone()),
        None => RegistryAuth::Anonymous,
    }
}

fn oci_error(reference: &str, error: OciDistributionError) -> FetchError {
    match error {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            FetchError::Unauthorized(reference.to_owned())
        }
        OciDistributionError::ImageManifestNotFoundError(_) => {
            FetchError::NotFound(reference.to_owned())
        }
        OciDistributionError::ServerError { code: 401, .. } => {
            FetchError::Unauthorized(reference.to_owned())
        }
        OciDistributionError::ServerError { code: 403, .. } => {
            FetchError::Forbidden(reference.to_owned())
        }
        OciDistributionError::ServerError { code: 404, .. } => {
            FetchError::NotFound(reference.to_owned())
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}", e.code))
                .collect();
            if codes.iter().any(|c| c == "Unauthorized") {
                FetchError::Unauthorized(reference.to_owned())
            } else if codes.iter().any(|c| c == "Denied") {
                FetchError::Forbidden(reference.to_owned())
            } else if codes.iter().any(|c| c.contains("Unknown")) {
                FetchError::NotFound(reference.to_owned())
            } else {
                FetchError::Other {
                    url: reference.to_owned(),
                    reason: format!("registry errors: {}", codes.join(", ")),
                }
            }
        }
        OciDistributionError::RequestError(e) => request_error(reference, &e),
        other => FetchError::Other {
            url: reference.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// The digest of an image's manifest (`sha256:...`), as the registry says.
pub(super) async fn manifest_digest(inner: &Inner, image: &str) -> Result<String, FetchError> {
    let reference = parse(image)?;
    let auth = auth(inner, &reference);
    inner
        .oci
        .fetch_manifest_digest(&reference, &auth)
        .await
        .map_err(|e| oci_error(image, e))
}

/// An image's manifest or image index, as the JSON text the registry served.
pub(super) async fn manifest(inner: &Inner, image: &str) -> Result<String, FetchError> {
    let reference = parse(image)?;
    let auth = auth(inner, &reference);
    let (bytes, _digest) = inner
        .oci
        .pull_manifest_raw(
            &reference,
            &auth,
            &[
                oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
                oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
                oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
                oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
            ],
        )
        .await
        .map_err(|e| oci_error(image, e))?;
    String::from_utf8(bytes.to_vec()).map_err(|e| FetchError::Other {
        url: image.to_owned(),
        reason: format!("the manifest is not UTF-8: {e}"),
    })
}

/// An image's manifest (an index resolved for this platform), its digest
/// and its configuration, as Kubewarden's `oci_manifest_config` answers.
pub(super) async fn manifest_and_config(
    inner: &Inner,
    image: &str,
) -> Result<serde_json::Value, FetchError> {
    let reference = parse(image)?;
    let auth = auth(inner, &reference);
    let (manifest, digest, config) = inner
        .oci
        .pull_manifest_and_config(&reference, &auth)
        .await
        .map_err(|e| oci_error(image, e))?;
    let config: serde_json::Value =
        serde_json::from_str(&config).map_err(|e| FetchError::Other {
            url: image.to_owned(),
            reason: format!("the image configuration is not JSON: {e}"),
        })?;
    Ok(serde_json::json!({"manifest": manifest, "digest": digest, "config": config}))
}

/// Pulls a policy. A digest-pinned reference whose module is stored is
/// answered from the store; a tag is resolved to a digest every time.
pub(super) async fn pull(inner: &Inner, name: &str) -> Result<FetchedModule, FetchError> {
    let reference = parse(name)?;
    if let Some(manifest_digest) = reference.digest() {
        if let Some(module) = inner.store.manifest_layer(manifest_digest) {
            if let Some(path) = inner.store.get(&module) {
                tracing::debug!(reference = name, "served from the module store");
                return Ok(FetchedModule {
                    path,
                    digest: Some(module),
                });
            }
        }
    }
    let auth = auth(inner, &reference);
    let (manifest, manifest_digest) = inner
        .oci
        .pull_image_manifest(&reference, &auth)
        .await
        .map_err(|e| oci_error(name, e))?;
    let layer = manifest
        .layers
        .iter()
        .find(|l| l.media_type == WASM_LAYER_MEDIA_TYPE)
        .ok_or_else(|| FetchError::NotWasm {
            reference: name.to_owned(),
            reason: format!(
                "no layer of media type {WASM_LAYER_MEDIA_TYPE} (layers: {})",
                manifest
                    .layers
                    .iter()
                    .map(|l| l.media_type.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > inner.max_bytes {
        return Err(FetchError::TooLarge {
            reference: name.to_owned(),
            size,
            limit: inner.max_bytes,
        });
    }
    let module_digest = layer
        .digest
        .strip_prefix("sha256:")
        .unwrap_or(&layer.digest)
        .to_owned();
    let path = match inner.store.get(&module_digest) {
        Some(path) => path,
        None => {
            let declared = usize::try_from(size).unwrap_or(usize::MAX);
            let mut blob = BoundedBlob::new(declared);
            let pulled = inner.oci.pull_blob(&reference, layer, &mut blob).await;
            if blob.overflowed {
                return Err(FetchError::Other {
                    url: name.to_owned(),
                    reason: format!(
                        "the registry sent more than the {size} bytes the manifest declares for the module"
                    ),
                });
            }
            pulled.map_err(|e| oci_error(name, e))?;
            let stored = inner.store_module(name, &blob.bytes)?;
            if stored.digest.as_deref() != Some(module_digest.as_str()) {
                return Err(FetchError::DigestMismatch {
                    reference: name.to_owned(),
                    expected: module_digest,
                    actual: stored.digest.unwrap_or_default(),
                });
            }
            stored.path
        }
    };
    inner
        .store
        .remember_manifest(&manifest_digest, &module_digest)?;
    Ok(FetchedModule {
        path,
        digest: Some(module_digest),
    })
}

/// A blob download that refuses to grow past the size the manifest
/// declared (which is already checked against the module size limit):
/// oci-client writes whatever the registry sends, so a registry that sends
/// more would otherwise decide how much memory a fetch takes.
struct BoundedBlob {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl BoundedBlob {
    fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(limit.min(DEFAULT_CAPACITY)),
            limit,
            overflowed: false,
        }
    }
}

/// What a download reserves before the first byte: most policies are a
/// few MiB, and the declared size is the registry's word.
const DEFAULT_CAPACITY: usize = 8 << 20;

impl tokio::io::AsyncWrite for BoundedBlob {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.bytes.len().saturating_add(buf.len()) > this.limit {
            this.overflowed = true;
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "more bytes than the manifest declares",
            )));
        }
        this.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Pushes a policy with Kubewarden's media types; the metadata annotations
/// go into the manifest. Returns the manifest URL.
pub(super) async fn push(
    inner: &Inner,
    wasm: &[u8],
    name: &str,
    metadata: Option<&PolicyMetadata>,
) -> Result<String, FetchError> {
    let reference = parse(name)?;
    let auth = auth(inner, &reference);
    let annotations: BTreeMap<String, String> = metadata
        .map(|m| m.annotations.clone().into_iter().collect())
        .unwrap_or_default();
    let config = Config {
        data: serde_json::to_vec(&metadata)
            .map_err(|e| FetchError::Other {
                url: name.to_owned(),
                reason: e.to_string(),
            })?
            .into(),
        media_type: WASM_CONFIG_MEDIA_TYPE.to_owned(),
        annotations: None,
    };
    let layers = [ImageLayer {
        data: wasm.to_vec().into(),
        media_type: WASM_LAYER_MEDIA_TYPE.to_owned(),
        annotations: None,
    }];
    let mut manifest = OciImageManifest::build(
        &layers,
        &config,
        Some(annotations).filter(|a| !a.is_empty()),
    );
    manifest.media_type = Some(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_owned());
    let oci = &inner.oci;
    oci.store_auth_if_needed(reference.resolve_registry(), &auth)
        .await;
    for (layer, descriptor) in layers.iter().zip(&manifest.layers) {
        oci.push_blob(&reference, layer.data.clone(), &descriptor.digest)
            .await
            .map_err(|e| oci_error(name, e))?;
    }
    oci.push_blob(&reference, config.data.clone(), &manifest.config.digest)
        .await
        .map_err(|e| oci_error(name, e))?;
    // Serialised here rather than by the client: its canonical JSON leaves
    // control characters unescaped, and registries refuse a manifest whose
    // annotations (a multi-line `usage`) then hold a raw newline.
    let body = serde_json::to_vec(&manifest).map_err(|e| FetchError::Other {
        url: name.to_owned(),
        reason: e.to_string(),
    })?;
    let content_type =
        hyper::header::HeaderValue::from_static(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE);
    let manifest_digest = crate::module_digest(&body);
    oci.push_manifest_raw(&reference, body, content_type)
        .await
        .map_err(|e| oci_error(name, e))?;
    Ok(format!(
        "{}/{}@sha256:{manifest_digest}",
        reference.registry(),
        reference.repository()
    ))
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::BoundedBlob;

    #[tokio::test]
    async fn a_blob_up_to_its_declared_size_is_kept_and_one_byte_more_is_refused() {
        let mut blob = BoundedBlob::new(8);
        blob.write_all(b"\0asm").await.unwrap();
        blob.write_all(b"\x01\0\0\0").await.unwrap();
        assert_eq!(blob.bytes, b"\0asm\x01\0\0\0");
        assert!(!blob.overflowed);
        let error = blob.write_all(b"!").await.unwrap_err();
        assert!(error
            .to_string()
            .contains("more bytes than the manifest declares"));
        assert!(blob.overflowed);
        assert_eq!(blob.bytes.len(), 8, "nothing past the limit is kept");
    }
}

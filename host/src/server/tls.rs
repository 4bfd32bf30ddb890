//! TLS from certificate and key files, reloaded when the files change, with
//! optional client-certificate verification.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        /// Displayed in the message, not chained: `{:#}` would print it twice.
        error: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Serves the certificate currently on disk.
#[derive(Debug)]
pub struct ReloadingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    state: RwLock<(Arc<CertifiedKey>, Vec<u8>)>,
}

impl ReloadingCertificate {
    /// Loads the pair once; fails if it is unusable.
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let (key, fingerprint) = load_pair(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            state: RwLock::new((key, fingerprint)),
        })
    }

    /// Reloads the pair if the files changed. A half-written or invalid pair
    /// is reported and the current certificate keeps serving.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let fingerprint = read_both(&self.cert_path, &self.key_path)?;
        if self.read().1 == fingerprint {
            return Ok(false);
        }
        let (key, fingerprint) = load_pair(&self.cert_path, &self.key_path)?;
        *self
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (key, fingerprint);
        Ok(true)
    }

    /// The current pair. Writers replace it in one assignment, so a poisoned
    /// lock still holds a whole pair.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, (Arc<CertifiedKey>, Vec<u8>)> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.read().0.clone())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_owned(),
        error,
    })
}

fn read_both(cert: &Path, key: &Path) -> Result<Vec<u8>, TlsError> {
    let mut both = read(cert)?;
    both.extend(read(key)?);
    Ok(both)
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<(Arc<CertifiedKey>, Vec<u8>), TlsError> {
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let pem_error = |path: &Path, reason: String| TlsError::Pem {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error(cert_path, "no certificate found".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| pem_error(key_path, e.to_string()))?;
    let signing_key =
        ring::sign::any_supported_type(&key).map_err(|e| pem_error(key_path, e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified
        .keys_match()
        .map_err(|e| pem_error(key_path, format!("does not match the certificate: {e}")))?;
    let mut fingerprint = cert_pem;
    fingerprint.extend(key_pem);
    Ok((Arc::new(certified), fingerprint))
}

/// The server configuration: TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN,
/// client certificates required when a client CA is given.
pub fn server_config(
    certificate: Arc<ReloadingCertificate>,
    client_ca: Option<&Path>,
) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(path) => {
            let pem = read(path)?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| TlsError::Pem {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
                roots.add(cert).map_err(|e| TlsError::Pem {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

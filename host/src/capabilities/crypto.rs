//! The `crypto` capability: `crypto/v1/is_certificate_trusted`, with
//! Kubewarden's request and answer shapes. A certificate is checked against
//! the chain it comes with (intermediates first, the root last, which is the
//! only trust anchor) or, without a chain, against the Mozilla roots, at the
//! time the request names or now. Any extended key usage is accepted.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, TrustAnchor, UnixTime};
use serde::{Deserialize, Serialize};
use wasmtime::component::{HasSelf, Linker};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};

use super::{message, payload_error, CapabilityCall};
use crate::bindings::{crypto, HostError};
use crate::component_host::HostState;

/// Kubewarden's `CertificateVerificationRequest`.
#[derive(Debug, Deserialize)]
struct Request {
    cert: Certificate,
    cert_chain: Option<Vec<Certificate>>,
    not_after: Option<String>,
}

/// A certificate as Kubewarden's SDK sends it: `data` is a JSON array of bytes.
#[derive(Debug, Deserialize)]
struct Certificate {
    encoding: Encoding,
    data: Vec<u8>,
}

#[derive(Debug, Deserialize)]
enum Encoding {
    Pem,
    Der,
}

/// Kubewarden's `CertificateVerificationResponse`.
#[derive(Debug, Serialize, PartialEq, Eq)]
struct Response {
    trusted: bool,
    reason: String,
}

impl Certificate {
    fn der(&self) -> Result<CertificateDer<'static>, HostError> {
        match self.encoding {
            Encoding::Der => Ok(CertificateDer::from(self.data.clone())),
            Encoding::Pem => CertificateDer::from_pem_slice(&self.data)
                .map_err(|e| HostError::Failed(format!("not a PEM certificate: {e}"))),
        }
    }
}

/// Accepts whatever extended key usages a certificate has.
struct AnyUsage;

impl ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _usages: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// Checks the certificate of `request` (JSON text); the answer as JSON text.
pub(crate) fn is_certificate_trusted(request: &[u8]) -> Result<String, HostError> {
    let request: Request = serde_json::from_slice(request).map_err(|e| {
        HostError::Failed(payload_error(
            CapabilityCall::CryptoIsCertificateTrusted,
            &e,
        ))
    })?;
    let answer = check(&request)?;
    serde_json::to_string(&answer).map_err(|e| HostError::Failed(e.to_string()))
}

fn check(request: &Request) -> Result<Response, HostError> {
    let time = match request.not_after.as_deref().filter(|t| !t.is_empty()) {
        Some(text) => {
            let at: jiff::Timestamp = text.parse().map_err(|e| {
                HostError::Failed(format!("not_after `{text}` is not an RFC 3339 time: {e}"))
            })?;
            let seconds = u64::try_from(at.as_second())
                .map_err(|_| HostError::Failed(format!("not_after `{text}` is before 1970")))?;
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds))
        }
        None => UnixTime::now(),
    };
    let end_entity_der = request.cert.der()?;
    let end_entity = EndEntityCert::try_from(&end_entity_der)
        .map_err(|e| HostError::Failed(format!("not an end-entity certificate: {e}")))?;
    let chain = match &request.cert_chain {
        Some(chain) => chain
            .iter()
            .map(Certificate::der)
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let (anchors, intermediates): (Vec<TrustAnchor<'_>>, &[CertificateDer<'_>]) =
        match chain.split_last() {
            Some((root, intermediates)) => {
                let anchor = webpki::anchor_from_trusted_cert(root)
                    .map_err(|e| HostError::Failed(format!("not a root certificate: {e}")))?;
                (vec![anchor], intermediates)
            }
            None => (webpki_roots::TLS_SERVER_ROOTS.to_vec(), &[]),
        };
    let verified = end_entity.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        time,
        AnyUsage,
        None,
        None,
    );
    let reason = match verified {
        Ok(_) => {
            return Ok(Response {
                trusted: true,
                reason: String::new(),
            })
        }
        Err(webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey) => {
            "Certificate is not trusted by the provided cert chain".to_owned()
        }
        Err(webpki::Error::CertExpired { .. }) => {
            "Certificate is being used after its expiration date".to_owned()
        }
        Err(webpki::Error::CertNotValidYet { .. }) => {
            "Certificate is being used before its validity date".to_owned()
        }
        Err(other) => format!("Certificate not trusted: {other}"),
    };
    Ok(Response {
        trusted: false,
        reason,
    })
}

impl crypto::Host for HostState {
    fn is_certificate_trusted(&mut self, request: String) -> Result<String, HostError> {
        self.check(CapabilityCall::CryptoIsCertificateTrusted)?;
        is_certificate_trusted(request.as_bytes())
    }
}

pub(super) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    crypto::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

pub(super) fn wapc(payload: &[u8]) -> Result<Vec<u8>, String> {
    is_certificate_trusted(payload)
        .map(String::into_bytes)
        .map_err(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn intermediate(
        name: &str,
        parent: &CertifiedIssuer<'static, KeyPair>,
    ) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), parent).unwrap()
    }

    /// A leaf valid from 2026 through 2099.
    fn leaf(issuer: &CertifiedIssuer<'static, KeyPair>) -> rcgen::Certificate {
        let mut params = CertificateParams::new(vec!["signer.example.com".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        params
            .signed_by(&KeyPair::generate().unwrap(), issuer)
            .unwrap()
    }

    fn pem(text: &str) -> serde_json::Value {
        serde_json::json!({"encoding": "Pem", "data": text.as_bytes()})
    }

    fn ask(request: serde_json::Value) -> Result<Response, HostError> {
        let answer = is_certificate_trusted(request.to_string().as_bytes())?;
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        Ok(Response {
            trusted: answer["trusted"].as_bool().unwrap(),
            reason: answer["reason"].as_str().unwrap().to_owned(),
        })
    }

    #[test]
    fn a_certificate_is_checked_against_its_chain_at_the_given_time() {
        let root = ca("root");
        let middle = intermediate("intermediate", &root);
        let cert = leaf(&middle);
        let chain = serde_json::json!([pem(&middle.pem()), pem(&root.pem())]);
        let at = |time: &str| {
            ask(serde_json::json!({"cert": pem(&cert.pem()), "cert_chain": chain, "not_after": time}))
                .unwrap()
        };
        assert_eq!(
            at("2027-06-01T00:00:00Z"),
            Response {
                trusted: true,
                reason: String::new()
            }
        );
        assert_eq!(
            at("2100-06-01T00:00:00Z").reason,
            "Certificate is being used after its expiration date"
        );
        assert_eq!(
            at("2025-06-01T00:00:00Z").reason,
            "Certificate is being used before its validity date"
        );
        // DER, and an empty time meaning now.
        let der = serde_json::json!({"encoding": "Der", "data": cert.der().to_vec()});
        let now = ask(serde_json::json!({"cert": der, "cert_chain": chain, "not_after": ""}));
        assert!(now.unwrap().trusted);
    }

    #[test]
    fn another_root_or_no_chain_is_not_trusted() {
        let root = ca("root");
        let cert = leaf(&root);
        let other = ca("other");
        let answer = ask(serde_json::json!({"cert": pem(&cert.pem()),
            "cert_chain": [pem(&other.pem())], "not_after": "2027-01-01T00:00:00Z"}))
        .unwrap();
        assert_eq!(
            answer,
            Response {
                trusted: false,
                reason: "Certificate is not trusted by the provided cert chain".into()
            }
        );
        // Without a chain the Mozilla roots decide, and none of them signed it.
        let answer = ask(
            serde_json::json!({"cert": pem(&cert.pem()), "cert_chain": null, "not_after": null}),
        )
        .unwrap();
        assert!(!answer.trusted, "{answer:?}");
    }

    #[test]
    fn malformed_input_is_a_host_error() {
        for request in [
            serde_json::json!({"cert": pem("not a certificate"), "cert_chain": null}),
            serde_json::json!({"cert": {"encoding": "Der", "data": [1, 2, 3]}, "cert_chain": null}),
            serde_json::json!({"cert": pem(&ca("root").pem()), "not_after": "yesterday"}),
            serde_json::json!({"certificate": "x"}),
        ] {
            assert!(
                matches!(ask(request.clone()), Err(HostError::Failed(_))),
                "{request}"
            );
        }
    }
}

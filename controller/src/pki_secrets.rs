//! How the certificates of [`crate::certs`] are kept in Secrets: the CA in
//! `policy-server-root-ca` (`ca.crt`, `ca.key`, `ca-bundle.crt`) and each
//! serving certificate in a `kubernetes.io/tls` Secret (`tls.crt`,
//! `tls.key`, and `ca.crt`: the CA that signed it). One place reads and
//! writes each layout.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use crate::certs::{Authority, Serving};

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const CA_BUNDLE: &str = "ca-bundle.crt";
const TLS_CERT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
/// In a serving Secret: the certificate of the CA that signed it.
const ISSUER: &str = "ca.crt";

/// One key of a Secret as text (PEM), if present and UTF-8.
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn data(entries: [(&str, &str); 3]) -> BTreeMap<String, ByteString> {
    entries
        .into_iter()
        .map(|(key, text)| (key.to_owned(), ByteString(text.as_bytes().to_vec())))
        .collect()
}

impl Authority {
    /// The CA stored in `secret`, if it holds one (the bundle may be missing).
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        Some(Self {
            cert_pem: secret_text(secret, CA_CERT)?,
            key_pem: secret_text(secret, CA_KEY)?,
            bundle_pem: secret_text(secret, CA_BUNDLE).unwrap_or_default(),
        })
    }

    /// The CA Secret's data.
    pub fn secret_data(&self) -> BTreeMap<String, ByteString> {
        data([
            (CA_CERT, &self.cert_pem),
            (CA_KEY, &self.key_pem),
            (CA_BUNDLE, &self.bundle_pem),
        ])
    }
}

impl Serving {
    /// The serving certificate stored in `secret`, and the certificate of
    /// the CA that issued it.
    pub fn from_secret(secret: &Secret) -> (Option<Self>, Option<String>) {
        let serving = match (secret_text(secret, TLS_CERT), secret_text(secret, TLS_KEY)) {
            (Some(cert_pem), Some(key_pem)) => Some(Self { cert_pem, key_pem }),
            _ => None,
        };
        (serving, secret_text(secret, ISSUER))
    }

    /// The TLS Secret's data, naming `issuer` as the signing CA.
    pub fn secret_data(&self, issuer: &Authority) -> BTreeMap<String, ByteString> {
        data([
            (TLS_CERT, &self.cert_pem),
            (TLS_KEY, &self.key_pem),
            (ISSUER, &issuer.cert_pem),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layout_reads_back_what_it_writes() {
        let ca = Authority {
            cert_pem: "CA".into(),
            key_pem: "KEY".into(),
            bundle_pem: "CA OLD".into(),
        };
        let secret = Secret {
            data: Some(ca.secret_data()),
            ..Secret::default()
        };
        assert_eq!(Authority::from_secret(&secret), Some(ca.clone()));
        let serving = Serving {
            cert_pem: "CERT".into(),
            key_pem: "TLS KEY".into(),
        };
        let secret = Secret {
            data: Some(serving.secret_data(&ca)),
            ..Secret::default()
        };
        assert_eq!(
            Serving::from_secret(&secret),
            (Some(serving), Some("CA".to_owned()))
        );
        assert_eq!(Authority::from_secret(&Secret::default()), None);
    }
}

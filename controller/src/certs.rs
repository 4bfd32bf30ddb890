//! The certificate authority the API server trusts for every policy-server,
//! and the serving certificates it signs.
//!
//! Renewal never breaks admission: a new CA is created before the old one
//! expires and both stay in the bundle (the webhooks' `caBundle`) until the
//! old one has expired, so a pod still serving a certificate of the old CA
//! keeps being trusted while the kubelet projects its new certificate.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

/// A certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading a certificate: {0}")]
    Parse(String),
    #[error("writing a certificate: {0}")]
    Io(String),
}

/// How long certificates live and when they are renewed.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub ca: Duration,
    pub serving: Duration,
    /// A certificate with less than this left is replaced.
    pub renew_before: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self {
            ca: Duration::from_secs(10 * 365 * DAY),
            serving: Duration::from_secs(365 * DAY),
            renew_before: Duration::from_secs(30 * DAY),
        }
    }
}

/// The CA: its certificate and key, and the bundle the API server trusts
/// (this CA plus any older one that has not expired yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub cert_pem: String,
    pub key_pem: String,
    pub bundle_pem: String,
}

/// A serving certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Parses a PEM certificate and reads from it (the parsed form borrows
/// the decoded PEM, so it cannot be returned).
fn read_certificate<T>(
    cert_pem: &str,
    read: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> Result<T, CertError>,
) -> Result<T, CertError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| CertError::Parse(e.to_string()))?;
    read(&cert)
}

/// When a PEM certificate expires.
pub fn not_after(cert_pem: &str) -> Result<OffsetDateTime, CertError> {
    read_certificate(cert_pem, |cert| {
        OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
            .map_err(|e| CertError::Parse(e.to_string()))
    })
}

fn due(cert_pem: &str, now: OffsetDateTime, lifetimes: &Lifetimes) -> bool {
    not_after(cert_pem).map_or(true, |end| end - now < lifetimes.renew_before)
}

fn validity(params: &mut CertificateParams, now: OffsetDateTime, lifetime: Duration) {
    // A minute of slack for clocks that are slightly behind.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + lifetime;
}

fn new_authority(now: OffsetDateTime, lifetimes: &Lifetimes) -> Result<Authority, CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Palisade policy-server CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, now, lifetimes.ca);
    let cert = params.self_signed(&key)?;
    Ok(Authority {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        bundle_pem: String::new(),
    })
}

/// Splits a PEM bundle into its certificates.
fn certificates(bundle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in bundle.lines() {
        current.push_str(line);
        current.push('\n');
        if line.starts_with("-----END CERTIFICATE-----") {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

/// Keeps the CA valid: returns the existing one unchanged when it has time
/// left, a new one otherwise (with the old one kept in the bundle while it
/// is still valid). `None` as input creates the first CA.
pub fn ensure_authority(
    existing: Option<&Authority>,
    now: OffsetDateTime,
    lifetimes: &Lifetimes,
) -> Result<Authority, CertError> {
    let current = match existing {
        Some(ca) if !due(&ca.cert_pem, now, lifetimes) => ca.clone(),
        _ => new_authority(now, lifetimes)?,
    };
    // The bundle: the current CA first, then every older CA still valid.
    let mut bundle = current.cert_pem.clone();
    let older = existing
        .map(|ca| {
            let mut all = certificates(&ca.bundle_pem);
            all.push(ca.cert_pem.clone());
            all
        })
        .unwrap_or_default();
    let mut seen = vec![current.cert_pem.trim().to_owned()];
    for cert in older {
        let still_valid = not_after(&cert).is_ok_and(|end| end > now);
        if still_valid && !seen.contains(&cert.trim().to_owned()) {
            seen.push(cert.trim().to_owned());
            bundle.push_str(&cert);
        }
    }
    Ok(Authority {
        bundle_pem: bundle,
        ..current
    })
}

/// The names a policy-server certificate must carry: its Service's DNS
/// names, plus `extra` (the host of an out-of-cluster URL; IPs become IP SANs).
pub fn serving_names(service: &str, namespace: &str, extra: Option<&str>) -> Vec<String> {
    let mut names = vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    names.extend(extra.map(str::to_owned));
    names
}

/// Whether a serving certificate must be (re)issued: missing, expiring,
/// signed by another CA, or for other names.
pub fn serving_is_current(
    serving: Option<&Serving>,
    issued_by: Option<&str>,
    ca: &Authority,
    names: &[String],
    now: OffsetDateTime,
    lifetimes: &Lifetimes,
) -> bool {
    let Some(serving) = serving else {
        return false;
    };
    if due(&serving.cert_pem, now, lifetimes)
        || issued_by.map(str::trim) != Some(ca.cert_pem.trim())
    {
        return false;
    }
    sans(&serving.cert_pem).is_ok_and(|have| {
        let mut want: Vec<String> = names.to_vec();
        want.sort();
        let mut have = have;
        have.sort();
        have == want
    })
}

fn sans(cert_pem: &str) -> Result<Vec<String>, CertError> {
    use x509_parser::extensions::GeneralName;
    read_certificate(cert_pem, |cert| {
        let names = cert
            .subject_alternative_name()
            .map_err(|e| CertError::Parse(e.to_string()))?
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                        GeneralName::IPAddress(bytes) => match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes)
                                .ok()
                                .map(|b| IpAddr::from(b).to_string()),
                            16 => <[u8; 16]>::try_from(*bytes)
                                .ok()
                                .map(|b| IpAddr::from(b).to_string()),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(names)
    })
}

/// Issues a serving certificate for `names`, signed by the CA.
pub fn issue_serving(
    ca: &Authority,
    names: &[String],
    now: OffsetDateTime,
    lifetimes: &Lifetimes,
) -> Result<Serving, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    // rcgen turns names that parse as IP addresses into IP SANs.
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params, now, lifetimes.serving);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Serving {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short() -> Lifetimes {
        Lifetimes {
            ca: Duration::from_secs(100 * 24 * 3600),
            serving: Duration::from_secs(50 * 24 * 3600),
            renew_before: Duration::from_secs(30 * 24 * 3600),
        }
    }

    fn days(n: i64) -> time::Duration {
        time::Duration::days(n)
    }

    #[test]
    fn a_ca_with_time_left_is_kept() {
        let now = OffsetDateTime::now_utc();
        let ca = ensure_authority(None, now, &short()).unwrap();
        assert_eq!(certificates(&ca.bundle_pem), vec![ca.cert_pem.clone()]);
        let again = ensure_authority(Some(&ca), now + days(60), &short()).unwrap();
        assert_eq!(again, ca);
    }

    #[test]
    fn an_expiring_ca_is_replaced_and_the_old_one_stays_in_the_bundle_until_it_expires() {
        let now = OffsetDateTime::now_utc();
        let old = ensure_authority(None, now, &short()).unwrap();
        let renewed = ensure_authority(Some(&old), now + days(75), &short()).unwrap();
        assert_ne!(renewed.cert_pem, old.cert_pem);
        assert_eq!(
            certificates(&renewed.bundle_pem),
            vec![renewed.cert_pem.clone(), old.cert_pem.clone()]
        );
        // Once the old CA has expired it leaves the bundle.
        let later = ensure_authority(Some(&renewed), now + days(101), &short()).unwrap();
        assert_eq!(later.cert_pem, renewed.cert_pem);
        assert_eq!(
            certificates(&later.bundle_pem),
            vec![renewed.cert_pem.clone()]
        );
    }

    #[test]
    fn serving_certificates_are_reissued_when_expiring_renamed_or_signed_by_another_ca() {
        let now = OffsetDateTime::now_utc();
        let ca = ensure_authority(None, now, &short()).unwrap();
        let names = serving_names("policy-server-default", "kubewarden", Some("127.0.0.1"));
        let serving = issue_serving(&ca, &names, now, &short()).unwrap();
        let current = |s: &Serving, at, ca: &Authority, names: &[String]| {
            serving_is_current(Some(s), Some(&ca.cert_pem), ca, names, at, &short())
        };
        assert!(current(&serving, now, &ca, &names));
        assert!(!current(&serving, now + days(25), &ca, &names));
        assert!(!current(&serving, now, &ca, &names[..2]));
        let other = ensure_authority(None, now, &short()).unwrap();
        assert!(!serving_is_current(
            Some(&serving),
            Some(&ca.cert_pem),
            &other,
            &names,
            now,
            &short()
        ));
        assert!(!serving_is_current(None, None, &ca, &names, now, &short()));
        assert_eq!(
            sans(&serving.cert_pem).unwrap().last().unwrap(),
            "127.0.0.1"
        );
    }

    #[test]
    fn serving_certificates_verify_against_the_bundle() {
        let now = OffsetDateTime::now_utc();
        let ca = ensure_authority(None, now, &short()).unwrap();
        let serving = issue_serving(&ca, &["example.test".to_owned()], now, &short()).unwrap();
        let (_, leaf) = x509_parser::pem::parse_x509_pem(serving.cert_pem.as_bytes()).unwrap();
        let (_, root) = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes()).unwrap();
        let leaf = leaf.parse_x509().unwrap();
        let root = root.parse_x509().unwrap();
        assert_eq!(leaf.issuer(), root.subject());
        leaf.verify_signature(Some(root.public_key())).unwrap();
    }
}

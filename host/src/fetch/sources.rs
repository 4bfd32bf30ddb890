//! Where modules may come from and how to authenticate: Kubewarden's
//! `sources.yml` (insecure sources, per-host certificate authorities) and a
//! docker `config.json` for registry credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::FetchError;

/// `sources.yml`: read by the policy-server, written by the controller from
/// a PolicyServer's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    /// Hosts (`host` or `host:port`) reached over plain HTTP or without
    /// certificate verification.
    #[serde(default)]
    pub insecure_sources: Vec<String>,
    /// Extra certificate authorities per host.
    #[serde(default)]
    pub source_authorities: BTreeMap<String, Vec<SourceAuthority>>,
}

/// A CA certificate, inline or in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SourceAuthority {
    Data { data: String },
    Path { path: PathBuf },
}

impl Sources {
    /// Reads `sources.yml`.
    pub fn from_file(path: &Path) -> Result<Self, FetchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FetchError::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a `sources.yml`; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, FetchError> {
        serde_yaml::from_str(text).map_err(|e| FetchError::Config(format!("{source_name}: {e}")))
    }

    /// Whether `host` (with its port, if any) is listed as insecure.
    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure_sources.iter().any(|h| h == host)
    }

    /// Every extra CA certificate, as PEM.
    pub fn ca_certificates(&self) -> Result<Vec<Vec<u8>>, FetchError> {
        let mut pems = Vec::new();
        for (host, authorities) in &self.source_authorities {
            for authority in authorities {
                pems.push(match authority {
                    SourceAuthority::Data { data } => data.clone().into_bytes(),
                    SourceAuthority::Path { path } => std::fs::read(path).map_err(|e| {
                        FetchError::Config(format!(
                            "certificate authority of {host} at {}: {e}",
                            path.display()
                        ))
                    })?,
                });
            }
        }
        Ok(pems)
    }
}

/// Registry credentials from a docker `config.json` (`auths` entries;
/// credential helpers are external programs and are not run).
#[derive(Debug, Clone, Default)]
pub struct DockerCredentials {
    auths: BTreeMap<String, (String, String)>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl DockerCredentials {
    /// Reads a docker `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, FetchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FetchError::Config(format!("{}: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a docker `config.json`; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, FetchError> {
        let config: DockerConfig = serde_json::from_str(text)
            .map_err(|e| FetchError::Config(format!("{source_name}: {e}")))?;
        let mut auths = BTreeMap::new();
        for (server, entry) in config.auths {
            let pair = match (entry.auth, entry.username, entry.password) {
                (Some(auth), _, _) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| {
                            FetchError::Config(format!("{}: auth of {server}: {e}", source_name))
                        })?;
                    let text = String::from_utf8_lossy(&decoded).into_owned();
                    let (user, pass) = text.split_once(':').ok_or_else(|| {
                        FetchError::Config(format!(
                            "{}: auth of {server} is not user:password",
                            source_name
                        ))
                    })?;
                    (user.to_owned(), pass.to_owned())
                }
                (None, Some(user), Some(pass)) => (user, pass),
                _ => continue,
            };
            auths.insert(normalize_server(&server), pair);
        }
        Ok(Self { auths })
    }

    /// The username and password for a registry host.
    pub fn for_registry(&self, registry: &str) -> Option<&(String, String)> {
        self.auths.get(&normalize_server(registry))
    }
}

/// `https://index.docker.io/v1/` and `docker.io` name the same registry.
fn normalize_server(server: &str) -> String {
    let host = server
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or(server);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubewarden_sources_yml() {
        let s: Sources = serde_yaml::from_str(
            "insecure_sources: [\"localhost:5000\"]\nsource_authorities:\n  \"r.example.com:5443\":\n    - type: Data\n      data: PEM\n",
        )
        .unwrap();
        assert!(s.is_insecure("localhost:5000"));
        assert!(!s.is_insecure("localhost"));
        assert_eq!(s.ca_certificates().unwrap(), vec![b"PEM".to_vec()]);
    }

    #[test]
    fn reads_docker_auths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &path,
            format!(r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{auth}"}}, "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}}}}}}"#),
        )
        .unwrap();
        let creds = DockerCredentials::from_file(&path).unwrap();
        assert_eq!(
            creds.for_registry("127.0.0.1:5000"),
            Some(&("alice".into(), "s3cret".into()))
        );
        assert_eq!(
            creds.for_registry("docker.io"),
            Some(&("bob".into(), "pw".into()))
        );
        assert_eq!(creds.for_registry("other"), None);
    }
}

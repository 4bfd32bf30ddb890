//! A policy-server started in-process on loopback, and HTTPS clients.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::paths::{fixture_path, policy_path};
use crate::pki::TestCa;
use palisade_host::server::{start, RunningServer, ServerOptions, TlsFiles};

/// Writes `policies.yml` with `{POLICIES}` replaced by the built policies' directory.
pub fn write_policies(dir: &Path, yaml: &str) -> PathBuf {
    let policies_dir = policy_path("pod-privileged").parent().unwrap().to_owned();
    let path = dir.join("policies.yml");
    let text = yaml.replace("{POLICIES}", &policies_dir.to_string_lossy());
    // Write then rename, as a ConfigMap update does: a reader never sees half a file.
    let tmp = dir.join(".policies.yml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A running server with its files.
pub struct TestServer {
    pub server: RunningServer,
    pub dir: tempfile::TempDir,
    pub ca: Option<TestCa>,
    pub base: String,
    pub probe: String,
}

/// Default options for a server on loopback with ephemeral ports.
pub fn options(dir: &Path, policies: PathBuf) -> ServerOptions {
    let mut options = ServerOptions::local(policies, dir);
    options.workers = 4;
    options.cache_dir = Some(dir.join("compiled"));
    options.load.memory_bytes = 64 << 20;
    options.watch_interval = Duration::from_millis(100);
    options.shutdown_grace = Duration::from_secs(10);
    options
}

/// Starts an HTTPS server (a fresh test CA) serving `yaml`; `adjust` may
/// change the options first.
pub async fn https_server(
    yaml: &str,
    adjust: impl FnOnce(&mut ServerOptions, &Path),
) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("palisade test CA");
    let (cert, key) = ca.leaf("policy-server");
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    let policies = write_policies(dir.path(), yaml);
    let mut opts = options(dir.path(), policies);
    opts.tls = Some(TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        client_ca: None,
    });
    adjust(&mut opts, dir.path());
    let server = start(opts).await.unwrap();
    let base = format!("https://127.0.0.1:{}", server.addr.port());
    let probe = format!("http://127.0.0.1:{}", server.readiness_addr.port());
    TestServer {
        server,
        dir,
        ca: Some(ca),
        base,
        probe,
    }
}

/// An HTTPS client trusting `ca_pem`.
pub fn client(ca_pem: &str) -> reqwest::Client {
    client_builder(ca_pem).build().unwrap()
}

pub fn client_builder(ca_pem: &str) -> reqwest::ClientBuilder {
    install_crypto();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .timeout(Duration::from_secs(30))
}

/// A plain client (HTTP, or HTTPS with no extra trust).
pub fn plain_client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The workspace's rustls provider (ring), as the binaries install it.
fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// POSTs a fixture file and returns (HTTP status, JSON body).
pub async fn post_fixture(
    client: &reqwest::Client,
    url: &str,
    fixture: &str,
) -> (u16, serde_json::Value) {
    let body = std::fs::read(fixture_path(fixture)).unwrap();
    post(client, url, body).await
}

pub async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let response = client.post(url).body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// `GET url` with [`plain_client`].
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    plain_client().get(url).send().await
}

/// The body of `GET url` (metrics, readiness), which must succeed.
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    get(url).await.unwrap().text().await.unwrap()
}

//! Fetching policy modules: `registry://` (and references without a
//! scheme) through oci-client, `https://`, `http://` for hosts listed as
//! insecure, and `file://`. One fetcher serves the policy-server, the CLI
//! and the controller, with a verified content-addressed store.

mod registry;
mod sources;
mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

pub use sources::{DockerCredentials, SourceAuthority, Sources};
use store::ModuleStore;

/// Kubewarden's media types for policy artifacts.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v1+json";
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// Default largest module accepted.
pub const DEFAULT_MAX_MODULE_BYTES: u64 = 64 << 20;

/// Why a module could not be fetched. Each case says what to fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("invalid module reference `{reference}`: {reason}")]
    Reference { reference: String, reason: String },
    #[error("`{scheme}://` is not a supported module scheme (use registry://, https://, http:// or file://)")]
    Scheme { scheme: String },
    #[error("{url}: plain HTTP is refused; list `{host}` in insecure_sources to allow it")]
    InsecureRefused { url: String, host: String },
    #[error("{0}: cannot resolve the host name")]
    UnknownHost(String),
    #[error("{0}: cannot connect")]
    Connect(String),
    #[error("{url}: TLS failure: {reason}")]
    Tls { url: String, reason: String },
    #[error("{url}: the server speaks plain HTTP, not HTTPS; if that is intended, list `{host}` in insecure_sources (a sources.yml passed with --sources-path)")]
    PlainHttpServer { url: String, host: String },
    #[error("{0}: unauthorized (401): the registry refused the credentials, or needs some; check the docker config file")]
    Unauthorized(String),
    #[error("{0}: forbidden (403): the credentials are valid but may not read this repository")]
    Forbidden(String),
    #[error("{0}: manifest not found: check the repository name and tag or digest")]
    NotFound(String),
    #[error("{reference}: not a wasm policy artifact: {reason}")]
    NotWasm { reference: String, reason: String },
    #[error("{reference}: the module is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        reference: String,
        size: u64,
        limit: u64,
    },
    #[error("{reference}: the registry sent content whose digest is {actual}, not {expected}")]
    DigestMismatch {
        reference: String,
        expected: String,
        actual: String,
    },
    #[error("{0}: file not found")]
    FileNotFound(String),
    #[error("fetching {url}: {reason}")]
    Other { url: String, reason: String },
    #[error("module store: {0}")]
    Store(String),
    #[error("fetcher configuration: {0}")]
    Config(String),
}

/// Where a module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// An OCI reference (`registry.example.com/policies/x:v1`, `...@sha256:...`).
    Registry(String),
    /// An `https://` or `http://` URL.
    Url(url::Url),
    /// A local file.
    File(PathBuf),
}

impl ModuleSource {
    /// Parses a module reference as Kubewarden writes them; no scheme means
    /// `registry://`.
    pub fn parse(reference: &str) -> Result<Self, FetchError> {
        let invalid = |reason: &str| FetchError::Reference {
            reference: reference.to_owned(),
            reason: reason.to_owned(),
        };
        match reference.split_once("://") {
            Some(("registry", rest)) => Ok(Self::Registry(rest.to_owned())),
            Some(("file", path)) if !path.is_empty() => Ok(Self::File(PathBuf::from(path))),
            Some(("file", _)) => Err(invalid("empty path")),
            Some(("https" | "http", _)) => url::Url::parse(reference)
                .map(Self::Url)
                .map_err(|e| invalid(&e.to_string())),
            Some((scheme, _)) => Err(FetchError::Scheme {
                scheme: scheme.to_owned(),
            }),
            None if reference.is_empty() => Err(invalid("empty reference")),
            // Kubewarden reads a reference without scheme as a registry
            // reference; a path is almost surely meant as a file.
            None if reference.starts_with('/') || reference.starts_with("./") => Err(invalid(
                &format!("a local file needs the file:// scheme: did you mean file://{reference}?"),
            )),
            None => Ok(Self::Registry(reference.to_owned())),
        }
    }
}

/// A fetched module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedModule {
    /// Where the module is on disk.
    pub path: PathBuf,
    /// Its SHA-256 (hex), when it went through the store.
    pub digest: Option<String>,
}

/// Fetcher settings.
#[derive(Debug, Clone, Default)]
pub struct FetcherOptions {
    /// The module store directory.
    pub store_dir: PathBuf,
    pub sources: Sources,
    pub credentials: DockerCredentials,
    /// Largest module accepted (default 64 MiB).
    pub max_module_bytes: Option<u64>,
}

impl FetcherOptions {
    /// Options from the files a process is pointed at (`sources.yml`, a
    /// docker `config.json`; either may be absent) and a size cap in MiB.
    pub fn from_files(
        store_dir: PathBuf,
        sources: Option<&Path>,
        docker_config: Option<&Path>,
        max_module_mib: u64,
    ) -> Result<Self, FetchError> {
        Ok(Self {
            store_dir,
            sources: sources
                .map(Sources::from_file)
                .transpose()?
                .unwrap_or_default(),
            credentials: docker_config
                .map(DockerCredentials::from_file)
                .transpose()?
                .unwrap_or_default(),
            max_module_bytes: Some(max_module_mib.saturating_mul(1 << 20)),
        })
    }
}

type Pending = Arc<OnceCell<Result<FetchedModule, FetchError>>>;

/// Fetches modules; concurrent fetches of one reference happen once.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: ModuleStore,
    sources: Sources,
    credentials: DockerCredentials,
    max_bytes: u64,
    http: reqwest::Client,
    oci: oci_client::Client,
    in_flight: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").finish_non_exhaustive()
    }
}

impl Fetcher {
    pub fn new(options: FetcherOptions) -> Result<Self, FetchError> {
        // One process-wide TLS provider (ring), chosen deliberately; a second
        // install is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cas = options.sources.ca_certificates()?;
        let mut certs = Vec::new();
        for pem in &cas {
            certs.extend(
                reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| FetchError::Config(format!("invalid CA certificate: {e}")))?,
            );
        }
        let http = match reqwest::Client::builder()
            .tls_certs_merge(certs.clone())
            .build()
        {
            Ok(http) => http,
            // A minimal container image may have no system trust store: a
            // policy-server that fetches only from its configured
            // authorities (or over plain HTTP) must still start.
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "no system trust roots; HTTPS sources are trusted through sourceAuthorities only");
                reqwest::Client::builder()
                    .tls_certs_only(certs)
                    .build()
                    .map_err(|e| FetchError::Config(format!("HTTP client: {}", error_chain(&e))))?
            }
        };
        let oci = registry::client(&options.sources, &cas);
        Ok(Self {
            inner: Arc::new(Inner {
                store: ModuleStore::new(&options.store_dir)?,
                sources: options.sources,
                credentials: options.credentials,
                max_bytes: options.max_module_bytes.unwrap_or(DEFAULT_MAX_MODULE_BYTES),
                http,
                oci,
                in_flight: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Fetches one module. Concurrent calls for the same reference share
    /// one download.
    pub async fn fetch(&self, reference: &str) -> Result<FetchedModule, FetchError> {
        let cell = {
            let mut in_flight = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            in_flight.entry(reference.to_owned()).or_default().clone()
        };
        let result = cell
            .get_or_init(|| async { self.fetch_uncached(reference).await })
            .await
            .clone();
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(reference);
        result
    }

    /// The manifest digest of `image` (`registry/repo:tag`, short names as
    /// Docker resolves them), with this fetcher's sources and credentials.
    pub async fn manifest_digest(&self, image: &str) -> Result<String, FetchError> {
        registry::manifest_digest(&self.inner, image).await
    }

    /// The manifest or image index of `image`, as JSON text.
    pub async fn manifest(&self, image: &str) -> Result<String, FetchError> {
        registry::manifest(&self.inner, image).await
    }

    /// `{"manifest", "digest", "config"}` of `image`.
    pub async fn manifest_and_config(&self, image: &str) -> Result<serde_json::Value, FetchError> {
        registry::manifest_and_config(&self.inner, image).await
    }

    /// Pushes a policy to a registry reference; returns the reference pinned
    /// to the pushed manifest's digest (`host/repo@sha256:...`).
    pub async fn push(&self, wasm: &[u8], reference: &str) -> Result<String, FetchError> {
        if !wasm.starts_with(b"\0asm") {
            return Err(FetchError::NotWasm {
                reference: reference.to_owned(),
                reason: "the file is not WebAssembly".into(),
            });
        }
        let metadata = crate::metadata::read_metadata(wasm).map_err(|e| FetchError::NotWasm {
            reference: reference.to_owned(),
            reason: e.to_string(),
        })?;
        let name = match ModuleSource::parse(reference)? {
            ModuleSource::Registry(name) => name,
            _ => {
                return Err(FetchError::Reference {
                    reference: reference.to_owned(),
                    reason: "push needs a registry reference".into(),
                })
            }
        };
        registry::push(&self.inner, wasm, &name, metadata.as_ref()).await
    }

    async fn fetch_uncached(&self, reference: &str) -> Result<FetchedModule, FetchError> {
        match ModuleSource::parse(reference)? {
            ModuleSource::File(path) => {
                if !path.exists() {
                    return Err(FetchError::FileNotFound(path.display().to_string()));
                }
                Ok(FetchedModule { path, digest: None })
            }
            ModuleSource::Url(url) => self.fetch_url(url).await,
            ModuleSource::Registry(name) => registry::pull(&self.inner, &name).await,
        }
    }

    async fn fetch_url(&self, url: url::Url) -> Result<FetchedModule, FetchError> {
        let host = host_port(&url);
        if url.scheme() == "http" && !self.inner.sources.is_insecure(&host) {
            return Err(FetchError::InsecureRefused {
                url: url.to_string(),
                host,
            });
        }
        let text = url.to_string();
        let response = self
            .inner
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| request_error(&text, &e))?;
        match response.status().as_u16() {
            200 => {}
            401 => return Err(FetchError::Unauthorized(text)),
            403 => return Err(FetchError::Forbidden(text)),
            404 => return Err(FetchError::NotFound(text)),
            code => {
                return Err(FetchError::Other {
                    url: text,
                    reason: format!("HTTP status {code}"),
                })
            }
        }
        if let Some(size) = response
            .content_length()
            .filter(|s| *s > self.inner.max_bytes)
        {
            return Err(FetchError::TooLarge {
                reference: text,
                size,
                limit: self.inner.max_bytes,
            });
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| request_error(&text, &e))?
        {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > self.inner.max_bytes {
                return Err(FetchError::TooLarge {
                    reference: text,
                    size: body.len() as u64,
                    limit: self.inner.max_bytes,
                });
            }
        }
        self.inner.store_module(&text, &body)
    }
}

impl Inner {
    /// Checks the wasm magic, then stores.
    fn store_module(&self, reference: &str, bytes: &[u8]) -> Result<FetchedModule, FetchError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(FetchError::NotWasm {
                reference: reference.to_owned(),
                reason: "the content does not start with the wasm magic bytes".into(),
            });
        }
        let (digest, path) = self.store.put(bytes)?;
        Ok(FetchedModule {
            path,
            digest: Some(digest),
        })
    }
}

/// `host` or `host:port`, as listed in `insecure_sources`.
fn host_port(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        _ => String::new(),
    }
}

/// The `host[:port]` of a URL or of a registry reference (`host/repo:tag`).
fn host_of(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(url) if url.has_host() => host_port(&url),
        _ => text
            .trim_start_matches("registry://")
            .split('/')
            .next()
            .unwrap_or(text)
            .to_owned(),
    }
}

/// Names the cause of a failed request by the types in its source chain:
/// a rustls error is a TLS failure (its text names the certificate problem),
/// a refused connection is a connection failure; a failed name lookup has
/// no type of its own in the resolver, so it is recognised by its text.
fn request_error(url: &str, error: &(dyn std::error::Error + 'static)) -> FetchError {
    let mut texts = Vec::new();
    // Walk the chain, also into the error an io::Error wraps (its
    // `source()` skips it).
    let mut pending: Vec<&(dyn std::error::Error + 'static)> = vec![error];
    while let Some(e) = pending.pop() {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            // A record that is not TLS at all: the server answered in HTTP.
            if matches!(
                tls,
                rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            ) {
                return FetchError::PlainHttpServer {
                    url: url.to_owned(),
                    host: host_of(url),
                };
            }
            return FetchError::Tls {
                url: url.to_owned(),
                reason: tls.to_string(),
            };
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return FetchError::Connect(url.to_owned());
            }
            if let Some(inner) = io.get_ref() {
                pending.push(inner);
            }
        }
        texts.push(e.to_string());
        if let Some(source) = e.source() {
            pending.push(source);
        }
    }
    let text = texts.join(": ");
    if text.contains("dns error") || text.contains("failed to lookup address") {
        FetchError::UnknownHost(url.to_owned())
    } else if text.contains("invalid peer certificate") {
        // Some TLS stacks report certificate failures only as text.
        FetchError::Tls {
            url: url.to_owned(),
            reason: texts.last().cloned().unwrap_or(text),
        }
    } else {
        FetchError::Other {
            url: url.to_owned(),
            reason: text,
        }
    }
}

/// Fetches every distinct reference in parallel, logging progress; returns
/// reference → result.
pub async fn fetch_all(
    fetcher: &Fetcher,
    references: impl IntoIterator<Item = String>,
) -> HashMap<String, Result<FetchedModule, FetchError>> {
    let mut unique: Vec<String> = references.into_iter().collect();
    unique.sort();
    unique.dedup();
    let total = unique.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let results = futures::future::join_all(unique.into_iter().map(|reference| {
        let done = &done;
        async move {
            let result = fetcher.fetch(&reference).await;
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            match &result {
                Ok(m) => tracing::info!(module = %reference, path = %m.path.display(), progress = format!("{n}/{total}"), "module fetched"),
                Err(e) => tracing::error!(module = %reference, error = %e, progress = format!("{n}/{total}"), "module fetch failed"),
            }
            (reference, result)
        }
    }))
    .await;
    results.into_iter().collect()
}

/// Reads a module given by reference or path for the CLI.
pub async fn fetch_to_path(fetcher: &Fetcher, reference: &str) -> Result<PathBuf, FetchError> {
    if Path::new(reference).exists() {
        return Ok(PathBuf::from(reference));
    }
    Ok(fetcher.fetch(reference).await?.path)
}

/// An error and its causes, one line (reqwest's own message is only
/// "builder error").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_like_kubewarden() {
        assert_eq!(
            ModuleSource::parse("registry://ghcr.io/k/p:v1").unwrap(),
            ModuleSource::Registry("ghcr.io/k/p:v1".into())
        );
        assert_eq!(
            ModuleSource::parse("ghcr.io/k/p:v1").unwrap(),
            ModuleSource::Registry("ghcr.io/k/p:v1".into())
        );
        assert_eq!(
            ModuleSource::parse("file:///a.wasm").unwrap(),
            ModuleSource::File("/a.wasm".into())
        );
        assert!(matches!(
            ModuleSource::parse("https://x/y.wasm").unwrap(),
            ModuleSource::Url(_)
        ));
        assert!(matches!(
            ModuleSource::parse("ftp://x"),
            Err(FetchError::Scheme { .. })
        ));
        assert!(ModuleSource::parse("").is_err());
        let path = ModuleSource::parse("/abs/p.wasm").unwrap_err().to_string();
        assert!(path.contains("did you mean file:///abs/p.wasm?"), "{path}");
    }
}

//! The policy-server: the HTTPS admission webhook the API server calls.
//!
//! Wire-compatible with Kubewarden's (paths, `policies.yml`, response
//! shapes, flags and `KUBEWARDEN_*` variables). Everything lives here so
//! that tests start it in-process on real sockets; the binary only parses
//! arguments and forwards signals.

mod args;
mod body;
pub mod config;
pub mod config_map;
mod connection;
pub mod expression;
mod http;
mod metrics;
pub mod policies;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use args::{main, ServerArgs};
pub use config::{ConfigError, PoliciesConfig, PolicyMode};
pub use config_map::ConfigMapRef;
pub use connection::ConnectionLimits;
pub use policies::{FetchedModules, LoadOptions, NativePolicy, PolicySet};
pub use tls::TlsError;

use self::connection::IdleTimeout;
use self::http::AppState;
use self::metrics::Metrics;
use self::tls::ReloadingCertificate;
use crate::fetch::{fetch_all, FetchError, Fetcher, FetcherOptions};
use crate::{CompileCache, EngineConfig, LoadError, PolicyEngine, PolicyLoader};

/// Certificate files for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by this CA (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub addr: SocketAddr,
    pub readiness_addr: SocketAddr,
    /// Concurrent evaluations.
    pub workers: usize,
    /// HTTPS when set; plain HTTP otherwise.
    pub tls: Option<TlsFiles>,
    pub policies_file: PathBuf,
    /// In a cluster: the ConfigMap the policies file is mounted from. The
    /// server starts from the file, then follows the ConfigMap through the
    /// API (with `load.kubernetes`'s client) instead of polling the file.
    pub policies_config_map: Option<ConfigMapRef>,
    /// Where precompiled policies are kept across restarts.
    pub cache_dir: Option<PathBuf>,
    /// How modules are fetched (store directory, sources, credentials, size limit).
    pub fetch: FetcherOptions,
    pub load: LoadOptions,
    pub always_accept_namespace: Option<String>,
    pub max_body_bytes: usize,
    /// How often the policies file and the certificate files are checked for changes.
    pub watch_interval: Duration,
    /// How long in-flight requests may take to finish after a shutdown request.
    pub shutdown_grace: Duration,
    /// Also count evaluations under Kubewarden's metric names and labels.
    pub kubewarden_metrics: bool,
    /// Limits on every webhook connection (timeouts, counts, sizes).
    pub connections: ConnectionLimits,
}

impl ServerOptions {
    /// A plain-HTTP server on 127.0.0.1 with ports the system chooses,
    /// serving `policies_file`, its downloaded and precompiled modules in
    /// `work_dir` (as `--policies-download-dir` lays them out); everything
    /// else at the policy-server's defaults. For tests, examples and
    /// fuzzing, which change what they need with struct update syntax.
    pub fn local(policies_file: PathBuf, work_dir: &Path) -> Self {
        Self {
            addr: ([127, 0, 0, 1], 0).into(),
            readiness_addr: ([127, 0, 0, 1], 0).into(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tls: None,
            policies_file,
            policies_config_map: None,
            cache_dir: Some(work_dir.join(".palisade-compiled")),
            fetch: FetcherOptions {
                store_dir: work_dir.join("modules"),
                ..FetcherOptions::default()
            },
            load: LoadOptions {
                default_timeout: crate::DEFAULT_TIMEOUT,
                memory_bytes: crate::DEFAULT_MEMORY_BYTES,
                continue_on_errors: false,
                kubernetes: None,
                oci: None,
            },
            always_accept_namespace: None,
            max_body_bytes: 3 << 20,
            watch_interval: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            kubewarden_metrics: false,
            connections: ConnectionLimits::default(),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        /// Displayed in the message, not chained: `{:#}` would print it twice.
        error: std::io::Error,
    },
    #[error("policy loading task failed: {0}")]
    Task(String),
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    /// The webhook address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    /// The readiness and metrics address actually bound.
    pub readiness_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    reload: Arc<Notify>,
    tasks: Vec<JoinHandle<()>>,
    state: Arc<AppState>,
}

impl RunningServer {
    /// Keeps answering for `delay` while reporting not ready and closing
    /// HTTP/1.1 connections after each response, then shuts down: the
    /// endpoints controller takes the pod out of its Service and clients
    /// move to the other replicas before this one stops accepting, so a
    /// rollout fails no request.
    pub async fn drain_and_shutdown(self, delay: Duration) {
        self.state.ready.store(false, Ordering::Release);
        self.state.draining.store(true, Ordering::Release);
        if !delay.is_zero() {
            tracing::info!(?delay, "draining: not ready, still answering");
            tokio::time::sleep(delay).await;
        }
        self.shutdown().await;
    }

    /// Stops accepting, lets in-flight requests finish, then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Reloads the policies file now (what SIGHUP does).
    pub fn reload(&self) {
        self.reload.notify_one();
    }
}

/// Loads the policies and starts serving.
pub async fn start(options: ServerOptions) -> Result<RunningServer, ServerError> {
    start_with(options, None).await
}

/// Starts serving `policies` instead of loading the policies file; the file
/// is still watched, and replaces the set when it changes.
pub async fn start_with_set(
    options: ServerOptions,
    policies: PolicySet,
) -> Result<RunningServer, ServerError> {
    start_with(options, Some(policies)).await
}

async fn start_with(
    mut options: ServerOptions,
    preloaded: Option<PolicySet>,
) -> Result<RunningServer, ServerError> {
    let engine = PolicyEngine::new(EngineConfig {
        max_concurrent_instances: u32::try_from(options.workers.saturating_mul(2).max(16))
            .unwrap_or(u32::MAX),
        ..EngineConfig::default()
    })?;
    let fetcher = Fetcher::new(options.fetch.clone())?;
    // Policies look images up with the server's own sources and credentials.
    options.load.oci.get_or_insert_with(|| {
        Arc::new(crate::OciAccess::new(
            fetcher.clone(),
            tokio::runtime::Handle::current(),
        ))
    });
    let loader = match &options.cache_dir {
        Some(dir) => PolicyLoader::with_cache(engine, CompileCache::new(dir)?),
        None => PolicyLoader::new(engine),
    };
    let state = Arc::new(AppState {
        policies: ArcSwap::from_pointee(PolicySet::default()),
        config_hash: ArcSwap::from_pointee(String::new()),
        metrics: Metrics::new(options.kubewarden_metrics),
        workers: Semaphore::new(options.workers.max(1)),
        max_body_bytes: options.max_body_bytes,
        body_read_timeout: options.connections.body_read_timeout,
        always_accept_namespace: options.always_accept_namespace.clone(),
        ready: AtomicBool::new(false),
        draining: AtomicBool::new(false),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    // Readiness first, so that the kubelet sees "not ready" while loading.
    let probe_listener = bind(options.readiness_addr).await?;
    let readiness_addr = local_addr(&probe_listener, options.readiness_addr)?;
    let probe_state = state.clone();
    tasks.push(tokio::spawn(serve(
        probe_listener,
        None,
        move |req| http::handle_probe(probe_state.clone(), req),
        shutdown_rx.clone(),
        options.shutdown_grace,
        ConnectionLimits::default(),
    )));

    let (set, policies_text) = match preloaded {
        // The text only tells the watcher what is already served; an
        // unreadable file means the next readable one replaces the set.
        Some(set) => {
            let text = std::fs::read_to_string(&options.policies_file).unwrap_or_else(|e| {
                tracing::warn!(path = %options.policies_file.display(), error = %e,
                    "the policies file cannot be read; the preloaded policies are served");
                String::new()
            });
            (set, text)
        }
        None => {
            let text = read_policies_file(&options).await?;
            let set = load_set(&options, &fetcher, &loader, &text).await?;
            (set, text)
        }
    };
    tracing::info!(policies = set.len(), "policies loaded");
    state.serve(set, &policies_text);
    state.ready.store(true, Ordering::Release);
    // The ConfigMap watch, when configured, replaces polling the file.
    let config_map = match &options.policies_config_map {
        None => None,
        Some(config_map) => {
            let Some(kubernetes) = &options.load.kubernetes else {
                return Err(ServerError::Config(ConfigError::Entry {
                    path: config_map.to_string(),
                    id: String::new(),
                    reason: "following a policies ConfigMap needs a Kubernetes connection".into(),
                }));
            };
            let (texts, receiver) = watch::channel(None);
            tracing::info!(%config_map, "following the policies ConfigMap");
            tasks.push(tokio::spawn(config_map::watch_policies(
                kubernetes.client().clone(),
                config_map.clone(),
                texts,
            )));
            Some(receiver)
        }
    };

    let certificate = match &options.tls {
        Some(files) => Some(Arc::new(ReloadingCertificate::new(
            &files.cert,
            &files.key,
        )?)),
        None => None,
    };
    let acceptor = match (&options.tls, &certificate) {
        (Some(files), Some(cert)) => Some(TlsAcceptor::from(Arc::new(tls::server_config(
            cert.clone(),
            files.client_ca.as_deref(),
        )?))),
        _ => None,
    };
    let listener = bind(options.addr).await?;
    let addr = local_addr(&listener, options.addr)?;
    let handler_state = state.clone();
    tasks.push(tokio::spawn(serve(
        listener,
        acceptor,
        move |req| http::handle(handler_state.clone(), req),
        shutdown_rx.clone(),
        options.shutdown_grace,
        options.connections.clone(),
    )));
    tracing::info!(%addr, %readiness_addr, tls = options.tls.is_some(), "policy-server listening");

    let reload = Arc::new(Notify::new());
    tasks.push(tokio::spawn(watch_changes(
        Reloader {
            options,
            fetcher,
            loader,
        },
        state.clone(),
        certificate,
        Policies {
            served: policies_text,
            config_map,
        },
        reload.clone(),
        shutdown_rx,
    )));
    Ok(RunningServer {
        addr,
        readiness_addr,
        shutdown,
        reload,
        tasks,
        state,
    })
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| ServerError::Bind { addr, error })
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, ServerError> {
    listener
        .local_addr()
        .map_err(|error| ServerError::Bind { addr, error })
}

async fn read_policies_file(options: &ServerOptions) -> Result<String, ConfigError> {
    let path = &options.policies_file;
    tokio::fs::read_to_string(path)
        .await
        .map_err(|error| ConfigError::Read {
            path: path.clone(),
            error,
        })
}

/// Parses the policies text, fetches every distinct module in parallel,
/// then loads the set off the runtime's threads.
async fn load_set(
    options: &ServerOptions,
    fetcher: &Fetcher,
    loader: &PolicyLoader,
    text: &str,
) -> Result<PolicySet, ServerError> {
    let source = match &options.policies_config_map {
        Some(config_map) => format!("ConfigMap {config_map}"),
        None => options.policies_file.display().to_string(),
    };
    let config = PoliciesConfig::parse(text, &source)?;
    load_policies(&config, fetcher, loader, &options.load).await
}

/// The hash of a policies text, as the server reports the configuration it
/// serves (readiness header, metric).
pub fn config_hash(text: &str) -> String {
    crate::module_digest(text.as_bytes())
}

/// Fetches every module of `config` and loads the policies (off the async
/// runtime): what the policy-server serves, and what the audit scanner
/// evaluates with.
pub async fn load_policies(
    config: &PoliciesConfig,
    fetcher: &Fetcher,
    loader: &PolicyLoader,
    options: &LoadOptions,
) -> Result<PolicySet, ServerError> {
    let modules = fetch_all(fetcher, config.modules())
        .await
        .into_iter()
        .map(|(reference, result)| (reference, result.map(|m| m.path).map_err(|e| e.to_string())))
        .collect();
    let (config, options, loader) = (config.clone(), options.clone(), loader.clone());
    tokio::task::spawn_blocking(move || Ok(PolicySet::load(&config, &modules, &loader, &options)?))
        .await
        .map_err(|e| ServerError::Task(e.to_string()))?
}

/// Accepts connections until shutdown, then waits (up to `grace`) for the
/// open ones to finish their requests. HTTP/1.1 and HTTP/2, over TLS when
/// an acceptor is given, within `limits`; other servers of the project (the
/// controller's admission webhook) reuse it.
pub async fn serve<F, Fut, B>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: F,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    limits: ConnectionLimits,
) where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = hyper::Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes, Error = Infallible> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let builder = Arc::new(connection_builder(&limits));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut refused_logged: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                // Over the limit: closed at once, so the client can go elsewhere.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    if refused_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(%peer, max_connections = limits.max_connections,
                            "connection limit reached: closing new connections");
                        refused_logged = Some(std::time::Instant::now());
                    }
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let stream = IdleTimeout::new(stream, limits.header_read_timeout, limits.idle_timeout);
                let watcher = graceful.watcher();
                let handler = handler.clone();
                let tls = tls.clone();
                let builder = builder.clone();
                let handshake_timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    let _slot = slot;
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let result = match tls {
                        Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        },
                        None => watcher.watch(builder.serve_connection(TokioIo::new(stream), service)).await,
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the shutdown grace period"
        );
    }
}

/// HTTP/1.1 and HTTP/2 with the limits that are theirs to enforce.
fn connection_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// What reloading the policies needs.
struct Reloader {
    options: ServerOptions,
    fetcher: Fetcher,
    loader: PolicyLoader,
}

/// The policies text served, and where new ones come from.
struct Policies {
    served: String,
    /// The ConfigMap watch's latest text; the file when none.
    config_map: Option<watch::Receiver<Option<String>>>,
}

impl Policies {
    /// A change of the ConfigMap's text (never, when the file is followed).
    async fn changed(&mut self) {
        let followed = match &mut self.config_map {
            Some(texts) => texts.changed().await.is_ok(),
            None => false,
        };
        if !followed {
            std::future::pending::<()>().await;
        }
    }

    /// The current text of the source.
    async fn current(&self, options: &ServerOptions) -> Result<String, String> {
        match &self.config_map {
            Some(texts) => texts
                .borrow()
                .clone()
                .ok_or_else(|| "the policies ConfigMap has not been read yet".to_owned()),
            None => read_policies_file(options).await.map_err(|e| e.to_string()),
        }
    }
}

/// Follows the policies (file or ConfigMap) and the certificate; reloads on
/// change or on request (SIGHUP). A new policy set that fails to load is
/// logged and the current one keeps serving.
async fn watch_changes(
    reloader: Reloader,
    state: Arc<AppState>,
    certificate: Option<Arc<ReloadingCertificate>>,
    mut policies: Policies,
    reload: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Reloader {
        options,
        fetcher,
        loader,
    } = reloader;
    let mut interval = tokio::time::interval(options.watch_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = interval.tick() => false,
            _ = policies.changed() => false,
            _ = reload.notified() => true,
            _ = shutdown.changed() => return,
        };
        if let Some(cert) = &certificate {
            match cert.reload_if_changed() {
                Ok(true) => tracing::info!("TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "cannot reload the TLS certificate; the current one keeps serving")
                }
            }
        }
        let current = match policies.current(&options).await {
            Ok(text) => text,
            Err(e) => {
                if forced {
                    tracing::error!(error = %e, "cannot read the policies");
                }
                continue;
            }
        };
        if !forced && current == policies.served {
            continue;
        }
        tracing::info!(forced, hash = %config_hash(&current), "reloading policies");
        match load_set(&options, &fetcher, &loader, &current).await {
            Ok(set) => {
                tracing::info!(policies = set.len(), "new policy set serving");
                state.serve(set, &current);
            }
            Err(e) => {
                tracing::error!(error = %e, "new policy set failed to load; the current one keeps serving");
            }
        }
        // Do not retry the same broken text every tick.
        policies.served = current;
    }
}

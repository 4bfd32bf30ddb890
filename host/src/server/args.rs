//! Command-line flags and `KUBEWARDEN_*` variables, as Kubewarden's
//! policy-server takes them, plus Palisade's own limits.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use super::{start, ConnectionLimits, LoadOptions, ServerOptions, TlsFiles};
use crate::fetch::FetcherOptions;
use crate::logs::LogFormat;

/// Palisade's admission webhook: serves the policies of a `policies.yml` to
/// the Kubernetes API server over HTTPS, evaluating each request in a sandbox.
#[derive(Debug, Parser)]
#[command(
    name = "policy-server",
    version,
    next_line_help = true,
    max_term_width = 80
)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(
        long = "addr",
        env = "KUBEWARDEN_BIND_ADDRESS",
        default_value = "0.0.0.0"
    )]
    pub address: IpAddr,
    /// Webhook port.
    #[arg(long, env = "KUBEWARDEN_PORT", default_value_t = 3000)]
    pub port: u16,
    /// Plain-HTTP port of `/readiness` and `/metrics`.
    #[arg(long, env = "KUBEWARDEN_READINESS_PROBE_PORT", default_value_t = 8081)]
    pub readiness_probe_port: u16,
    /// Concurrent evaluations (default: number of CPUs).
    #[arg(long, env = "KUBEWARDEN_WORKERS")]
    pub workers: Option<usize>,
    /// Serving certificate (PEM); plain HTTP when absent.
    #[arg(long, env = "KUBEWARDEN_CERT_FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, env = "KUBEWARDEN_KEY_FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM).
    #[arg(long, env = "KUBEWARDEN_CLIENT_CA_FILE", requires = "cert_file")]
    pub client_ca_file: Option<PathBuf>,
    /// The `policies.yml` file.
    #[arg(long, env = "KUBEWARDEN_POLICIES", default_value = "policies.yml")]
    pub policies: PathBuf,
    /// In a cluster, the ConfigMap (`namespace/name`, key `policies.yml`)
    /// the policies file is mounted from: the server starts from the file,
    /// then follows the ConfigMap through the API and reloads within a
    /// second of a change, instead of waiting for the kubelet to update the
    /// file. Needs `get`, `list` and `watch` on that ConfigMap.
    #[arg(
        long,
        env = "PALISADE_POLICIES_CONFIG_MAP",
        value_name = "NAMESPACE/NAME"
    )]
    pub policies_config_map: Option<super::ConfigMapRef>,
    /// Directory for downloaded and precompiled policies.
    #[arg(long, env = "KUBEWARDEN_POLICIES_DOWNLOAD_DIR", default_value = ".")]
    pub policies_download_dir: PathBuf,
    /// Kubewarden's `sources.yml`: insecure sources and certificate authorities.
    #[arg(long, env = "KUBEWARDEN_SOURCES_PATH")]
    pub sources_path: Option<PathBuf>,
    /// A docker `config.json` with registry credentials.
    #[arg(long, env = "KUBEWARDEN_DOCKER_CONFIG_JSON_PATH")]
    pub docker_config_json_path: Option<PathBuf>,
    /// Largest module accepted from a registry or URL, in MiB.
    #[arg(long, env = "PALISADE_MAX_MODULE_MIB", default_value_t = 64)]
    pub max_module_mib: u64,
    /// Default evaluation deadline, in seconds.
    #[arg(long, env = "KUBEWARDEN_POLICY_TIMEOUT", default_value_t = 2)]
    pub policy_timeout: u64,
    /// Log filter (`info`, `debug`, `palisade_host=debug`...).
    #[arg(long, env = "KUBEWARDEN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long = "log-fmt", env = "KUBEWARDEN_LOG_FMT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// No colours in text logs (they are already off when stderr is not a terminal).
    #[arg(long, env = "KUBEWARDEN_LOG_NO_COLOR")]
    pub log_no_color: bool,
    /// Also serve evaluation metrics under Kubewarden's names and labels
    /// (`kubewarden_policy_evaluations_total`...) on `/metrics`; Palisade's
    /// own are always served.
    #[arg(long, env = "KUBEWARDEN_ENABLE_METRICS")]
    pub enable_metrics: bool,
    /// Accepted for Kubewarden compatibility: without a reachable cluster the
    /// server always starts, and context-aware calls answer "not available".
    #[arg(long, env = "KUBEWARDEN_IGNORE_KUBERNETES_CONNECTION_FAILURE")]
    pub ignore_kubernetes_connection_failure: bool,
    /// Kubewarden's policy signature verification: not available in this
    /// version, so the server refuses to start rather than load unverified policies.
    #[arg(long, env = "KUBEWARDEN_VERIFICATION_CONFIG_PATH", hide = true)]
    pub verification_path: Option<PathBuf>,
    /// Accept every request from this namespace without evaluation (the engine's own).
    #[arg(
        long,
        env = "KUBEWARDEN_ALWAYS_ACCEPT_ADMISSION_REVIEWS_ON_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub always_accept_admission_reviews_on_namespace: Option<String>,
    /// Serve policies that fail to load (they reject with code 500) instead of exiting.
    #[arg(long, env = "KUBEWARDEN_CONTINUE_ON_ERRORS")]
    pub continue_on_errors: bool,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "PALISADE_MAX_REQUEST_BYTES", default_value_t = 3 << 20)]
    pub max_request_bytes: usize,
    /// Memory cap of every policy, in MiB.
    #[arg(long, env = "PALISADE_POLICY_MEMORY_MIB", default_value_t = 128)]
    pub policy_memory_mib: usize,
    /// How often the policies and certificate files are checked for changes, in milliseconds.
    #[arg(long, env = "PALISADE_WATCH_INTERVAL_MS", default_value_t = 2000)]
    pub watch_interval_ms: u64,
    /// How long in-flight requests may run after SIGTERM, in seconds.
    #[arg(long, env = "PALISADE_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,
    /// How long the server keeps answering after SIGTERM, reporting not
    /// ready, before it stops accepting, in seconds: the time for the API
    /// server to stop choosing this replica (0 stops at once).
    #[arg(long, env = "PALISADE_SHUTDOWN_DELAY_SECONDS", default_value_t = 5)]
    pub shutdown_delay_seconds: u64,
    /// Connections served at once; more are closed at once.
    #[arg(long, env = "PALISADE_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Time for a TLS handshake and an HTTP/1.1 request head, in seconds
    /// (it also ends idle HTTP/1.1 connections).
    #[arg(
        long,
        env = "PALISADE_HEADER_READ_TIMEOUT_SECONDS",
        default_value_t = 30
    )]
    pub header_read_timeout_seconds: u64,
    /// Time to receive a request body, in seconds (then 408).
    #[arg(long, env = "PALISADE_BODY_READ_TIMEOUT_SECONDS", default_value_t = 10)]
    pub body_read_timeout_seconds: u64,
    /// A connection silent for this long is closed, in seconds; above the
    /// API server's own 90 s, so that it closes first.
    #[arg(long, env = "PALISADE_IDLE_TIMEOUT_SECONDS", default_value_t = 120)]
    pub idle_timeout_seconds: u64,
    /// Largest request head, in bytes (431 above it).
    #[arg(long, env = "PALISADE_MAX_HEADER_BYTES", default_value_t = 64 << 10)]
    pub max_header_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(
        long,
        env = "PALISADE_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 256
    )]
    pub http2_max_concurrent_streams: u32,
}

impl ServerArgs {
    /// The server options these flags describe.
    pub fn options(&self) -> Result<ServerOptions, crate::fetch::FetchError> {
        let Self {
            address,
            port,
            readiness_probe_port,
            workers,
            cert_file,
            key_file,
            client_ca_file,
            policies,
            policies_config_map,
            policies_download_dir,
            policy_timeout,
            sources_path,
            docker_config_json_path,
            max_module_mib,
            log_level: _,
            log_format: _,
            log_no_color: _,
            enable_metrics,
            ignore_kubernetes_connection_failure: _,
            verification_path: _,
            always_accept_admission_reviews_on_namespace,
            continue_on_errors,
            max_request_bytes,
            policy_memory_mib,
            watch_interval_ms,
            shutdown_grace_seconds,
            shutdown_delay_seconds: _,
            max_connections,
            header_read_timeout_seconds,
            body_read_timeout_seconds,
            idle_timeout_seconds,
            max_header_bytes,
            http2_max_concurrent_streams,
        } = self;
        let tls = match (cert_file, key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: client_ca_file.clone(),
            }),
            _ => None,
        };
        let fetch = FetcherOptions::from_files(
            policies_download_dir.join("modules"),
            sources_path.as_deref(),
            docker_config_json_path.as_deref(),
            *max_module_mib,
        )?;
        Ok(ServerOptions {
            addr: SocketAddr::new(*address, *port),
            readiness_addr: SocketAddr::new(*address, *readiness_probe_port),
            workers: workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            tls,
            policies_file: policies.clone(),
            policies_config_map: policies_config_map.clone(),
            cache_dir: Some(policies_download_dir.join(".palisade-compiled")),
            fetch,
            load: LoadOptions {
                default_timeout: Duration::from_secs(*policy_timeout),
                memory_bytes: policy_memory_mib.saturating_mul(1 << 20),
                continue_on_errors: *continue_on_errors,
                kubernetes: None,
                oci: None,
            },
            always_accept_namespace: always_accept_admission_reviews_on_namespace.clone(),
            max_body_bytes: *max_request_bytes,
            watch_interval: Duration::from_millis((*watch_interval_ms).max(10)),
            shutdown_grace: Duration::from_secs(*shutdown_grace_seconds),
            kubewarden_metrics: *enable_metrics,
            connections: ConnectionLimits {
                max_connections: *max_connections,
                header_read_timeout: Duration::from_secs((*header_read_timeout_seconds).max(1)),
                body_read_timeout: Duration::from_secs((*body_read_timeout_seconds).max(1)),
                idle_timeout: Duration::from_secs((*idle_timeout_seconds).max(1)),
                max_header_bytes: *max_header_bytes,
                http2_max_concurrent_streams: *http2_max_concurrent_streams,
            },
        })
    }
}

/// Runs the policy-server until SIGTERM or SIGINT; SIGHUP reloads the policies.
pub fn main() -> ExitCode {
    let args = ServerArgs::parse();
    crate::logs::init(&args.log_level, args.log_format, !args.log_no_color);
    if let Some(path) = &args.verification_path {
        eprintln!(
            "error: --verification-path {}: policy signature verification is not available in this version; refusing to start rather than run policies unverified",
            path.display()
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let options = match args.options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let drain = Duration::from_secs(args.shutdown_delay_seconds);
    match runtime.block_on(run(options, drain)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Logs go to stderr: one line says it.
            tracing::error!(error = %format!("{e:#}"), "policy-server failed");
            ExitCode::FAILURE
        }
    }
}

/// The cluster the `kubernetes` capability reads: in a pod its service
/// account, elsewhere the kubeconfig `kubectl` would use. Without either,
/// context-aware calls answer "not available" and everything else works.
async fn kubernetes_access() -> Option<std::sync::Arc<crate::KubernetesAccess>> {
    let config = match kube::Config::infer().await {
        Ok(config) => config,
        Err(e) => {
            tracing::info!(reason = %e, "no Kubernetes configuration: context-aware calls are not available");
            return None;
        }
    };
    match crate::KubernetesAccess::from_config(config, tokio::runtime::Handle::current()) {
        Ok(access) => Some(std::sync::Arc::new(access)),
        Err(e) => {
            tracing::warn!(error = %e, "Kubernetes client not created: context-aware calls are not available");
            None
        }
    }
}

async fn run(mut options: ServerOptions, drain: Duration) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    options.load.kubernetes = kubernetes_access().await;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let server = start(options).await?;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading policies");
                server.reload();
            }
        }
    }
    tracing::info!("shutting down: draining, then finishing in-flight requests");
    server.drain_and_shutdown(drain).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_flag_defaults_are_the_library_defaults() {
        let args = ServerArgs::try_parse_from(["policy-server"]).unwrap();
        assert_eq!(
            args.options().unwrap().connections,
            ConnectionLimits::default()
        );
    }
}

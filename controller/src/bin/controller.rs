//! `controller`: reconciles ClusterAdmissionPolicies into policy-server
//! configuration and webhooks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use std::time::Duration;

use palisade_controller::admission::{self, AdmissionEndpoint};
use palisade_controller::policy::WebhookEndpoint;
use palisade_controller::reconcile::{run, Context};
use palisade_controller::settings::SettingsChecker;
use palisade_host::fetch::FetcherOptions;
use palisade_host::server::serve;
use palisade_host::server::tls::{server_config, ReloadingCertificate};

/// Palisade's controller.
#[derive(Debug, Parser)]
#[command(name = "controller", version, about)]
struct Args {
    /// The engine's namespace (policy-server ConfigMaps; excluded from cluster-wide webhooks).
    #[arg(long, env = "NAMESPACE", default_value = "kubewarden")]
    namespace: String,
    /// Out-of-cluster mode: register webhooks as `<URL>/validate/<id>` instead of the Service.
    #[arg(long, env = "PALISADE_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// PEM of the CA that signed the policy-servers' certificates (the webhooks' caBundle).
    #[arg(long, env = "PALISADE_CA_BUNDLE")]
    ca_bundle: PathBuf,
    /// Where fetched policy modules are kept.
    #[arg(
        long,
        env = "PALISADE_STORE_DIR",
        default_value = "/tmp/palisade-controller"
    )]
    store_dir: PathBuf,
    /// Serving certificate of the controller's own admission webhook (PEM);
    /// the webhook is served and registered only when it is given.
    #[arg(long, env = "PALISADE_ADMISSION_CERT", requires = "admission_key")]
    admission_cert: Option<PathBuf>,
    /// Its key (PEM).
    #[arg(long, env = "PALISADE_ADMISSION_KEY", requires = "admission_cert")]
    admission_key: Option<PathBuf>,
    /// Where the admission webhook listens.
    #[arg(long, env = "PALISADE_ADMISSION_ADDR", default_value = "0.0.0.0:8443")]
    admission_addr: std::net::SocketAddr,
    /// Out-of-cluster mode for the admission webhook: register it at this base URL
    /// instead of the `palisade-controller` Service.
    #[arg(long, env = "PALISADE_ADMISSION_URL")]
    admission_url: Option<String>,
    /// Log filter.
    #[arg(long, env = "PALISADE_LOG", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .try_init();
    match start(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(args: Args) -> anyhow::Result<()> {
    let Args {
        namespace,
        webhook_url,
        ca_bundle,
        store_dir,
        admission_cert,
        admission_key,
        admission_addr,
        admission_url,
        log_level: _,
    } = args;
    let client = kube::Client::try_default().await?;
    let endpoint = match webhook_url {
        Some(base) => WebhookEndpoint::Url { base },
        None => WebhookEndpoint::Service {
            namespace: namespace.clone(),
        },
    };
    let ca_bundle = std::fs::read(&ca_bundle)?;
    let checker = SettingsChecker::new(FetcherOptions {
        store_dir,
        ..FetcherOptions::default()
    })?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut webhook = None;
    if let (Some(cert), Some(key)) = (admission_cert, admission_key) {
        let certificate = ReloadingCertificate::new(&cert, &key)?;
        let acceptor =
            tokio_rustls::TlsAcceptor::from(Arc::new(server_config(Arc::new(certificate), None)?));
        let listener = tokio::net::TcpListener::bind(admission_addr).await?;
        let checker = Arc::new(checker.clone());
        webhook = Some(tokio::spawn(serve(
            listener,
            Some(acceptor),
            move |request| admission::handle(checker.clone(), request),
            stopped,
            Duration::from_secs(10),
        )));
        let endpoint = match admission_url {
            Some(url) => AdmissionEndpoint::Url(url),
            None => AdmissionEndpoint::Service {
                namespace: namespace.clone(),
                name: "palisade-controller".to_owned(),
            },
        };
        admission::register(&client, &endpoint, &std::fs::read(&cert)?).await?;
        tracing::info!(%admission_addr, "admission webhook for policy resources registered");
    }
    let context = Context {
        client,
        namespace,
        endpoint,
        ca_bundle,
        checker,
    };
    tokio::select! {
        () = run(Arc::new(context)) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    let _ = stop.send(true);
    if let Some(webhook) = webhook {
        let _ = webhook.await;
    }
    Ok(())
}

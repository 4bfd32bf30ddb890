//! `controller`: reconciles ClusterAdmissionPolicies into policy-server
//! configuration and webhooks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use palisade_controller::policy::WebhookEndpoint;
use palisade_controller::reconcile::{run, Context};
use palisade_controller::settings::SettingsChecker;
use palisade_host::fetch::FetcherOptions;

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
        log_level: _,
    } = args;
    let client = kube::Client::try_default().await?;
    let endpoint = match webhook_url {
        Some(base) => WebhookEndpoint::Url { base },
        None => WebhookEndpoint::Service {
            namespace: namespace.clone(),
        },
    };
    let context = Context {
        client,
        namespace,
        endpoint,
        ca_bundle: std::fs::read(&ca_bundle)?,
        checker: SettingsChecker::new(FetcherOptions {
            store_dir,
            ..FetcherOptions::default()
        })?,
    };
    tokio::select! {
        () = run(Arc::new(context)) => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("shutting down"),
    }
    Ok(())
}

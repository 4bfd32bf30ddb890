//! `controller`: reconciles the Kubewarden custom resources into
//! policy-servers and webhooks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use palisade_controller::admission::{self, OwnCertificate};
use palisade_controller::leader::{run_as_leader, Ended};
use palisade_controller::reconcile::{run, Context};
use palisade_controller::settings::SettingsChecker;
use palisade_controller::uninstall::{uninstall, Uninstall};
use palisade_controller::webhook::WebhookEndpoint;
use palisade_host::fetch::FetcherOptions;
use palisade_host::logs::LogFormat;
use palisade_host::server::tls::{server_config, ReloadingCertificate};
use palisade_host::server::{serve, ConnectionLimits};

/// Palisade's controller.
#[derive(Debug, Parser)]
#[command(name = "controller", version, about)]
struct Args {
    /// The engine's namespace: policy-server objects live here, and
    /// cluster-wide policies never see it.
    #[arg(long, env = "NAMESPACE", default_value = "kubewarden")]
    namespace: String,
    /// Out-of-cluster mode: register webhooks as `<URL>/validate/<id>`
    /// instead of the policy-server Service; `{policy-server}` in the URL is
    /// replaced by the PolicyServer's name, and the URL's host is added to
    /// the serving certificate.
    #[arg(long, env = "PALISADE_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// Where fetched policy modules are kept for settings validation.
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
    /// The controller issues its admission webhook's certificate itself,
    /// signed by the engine's CA, kept in this Secret and renewed before it
    /// expires; the webhook is registered with the CA bundle. Instead of
    /// `--admission-cert`/`--admission-key`.
    #[arg(
        long,
        env = "PALISADE_ADMISSION_CERTIFICATE_SECRET",
        conflicts_with = "admission_cert"
    )]
    admission_certificate_secret: Option<String>,
    /// Where the admission webhook listens.
    #[arg(long, env = "PALISADE_ADMISSION_ADDR", default_value = "0.0.0.0:8443")]
    admission_addr: std::net::SocketAddr,
    /// Out-of-cluster mode for the admission webhook: register it at this
    /// base URL instead of the `palisade-controller` Service.
    #[arg(long, env = "PALISADE_ADMISSION_URL")]
    admission_url: Option<String>,
    /// Where `/metrics` and `/healthz` are served (plain HTTP).
    #[arg(long, env = "PALISADE_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Run for leadership on a Lease so that only one replica reconciles.
    #[arg(long, env = "PALISADE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// This replica's name in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log filter.
    #[arg(long, env = "PALISADE_LOG", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, env = "PALISADE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Instead of reconciling: scale the controller's Deployment to zero,
    /// delete every webhook configuration Palisade registered, then the
    /// PolicyServers given by `--uninstall-policy-server` (the Helm chart's
    /// pre-delete hook).
    #[arg(long)]
    uninstall: bool,
    /// The controller's Deployment, for `--uninstall`.
    #[arg(long, default_value = "palisade-controller")]
    uninstall_deployment: String,
    /// A PolicyServer to delete with `--uninstall` (repeatable).
    #[arg(long)]
    uninstall_policy_server: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    palisade_host::logs::init(&args.log_level, args.log_format, true);
    if args.uninstall {
        return remove(args).await;
    }
    match start(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn remove(args: Args) -> ExitCode {
    let plan = Uninstall {
        namespace: args.namespace,
        deployment: args.uninstall_deployment,
        policy_servers: args.uninstall_policy_server,
    };
    let result = match kube::Client::try_default().await {
        Ok(client) => uninstall(&client, &plan).await.map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(removed) => {
            tracing::info!(
                webhooks = removed.webhooks.len(),
                policy_servers = removed.policy_servers.len(),
                "Palisade's webhooks and PolicyServers removed"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (what the kubelet sends) or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn start(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        namespace,
        webhook_url,
        store_dir,
        admission_cert,
        admission_key,
        admission_addr,
        admission_url,
        admission_certificate_secret,
        metrics_addr,
        leader_election,
        identity,
        log_level: _,
        log_format: _,
        uninstall: _,
        uninstall_deployment: _,
        uninstall_policy_server: _,
    } = args;
    let client = kube::Client::try_default().await?;
    let endpoint = WebhookEndpoint::new(webhook_url, &namespace);
    // Beside the module store, not in it.
    let own_dir = store_dir
        .parent()
        .unwrap_or(&store_dir)
        .join("palisade-admission-tls");
    let checker = SettingsChecker::new(FetcherOptions {
        store_dir,
        ..FetcherOptions::default()
    })?;
    let context = Arc::new(Context::new(
        client.clone(),
        namespace.clone(),
        endpoint,
        checker.clone(),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();

    let metrics = context.metrics.clone();
    let listener = tokio::net::TcpListener::bind(metrics_addr).await?;
    servers.push(tokio::spawn(serve(
        listener,
        None,
        move |request| palisade_controller::metrics::handle(metrics.clone(), request),
        stopped.clone(),
        Duration::from_secs(5),
        ConnectionLimits::default(),
    )));
    tracing::info!(%metrics_addr, "metrics served");

    // Every replica answers admission reviews; only the leader reconciles.
    let admission_endpoint = WebhookEndpoint::new(admission_url, &namespace);
    let own = admission_certificate_secret.map(|secret| OwnCertificate {
        secret,
        url_host: admission_endpoint.url_host(""),
        dir: own_dir,
    });
    let admission_tls = match (admission_cert, admission_key, &own) {
        (Some(cert), Some(key), _) => {
            let bundle = std::fs::read_to_string(&cert)?;
            Some((cert, key, bundle))
        }
        (_, _, Some(own)) => Some((own.cert_path(), own.key_path(), own.ensure(&context).await?)),
        _ => None,
    };
    if let Some((cert, key, bundle)) = admission_tls {
        let certificate = Arc::new(ReloadingCertificate::new(&cert, &key)?);
        let acceptor =
            tokio_rustls::TlsAcceptor::from(Arc::new(server_config(certificate.clone(), None)?));
        let listener = tokio::net::TcpListener::bind(admission_addr).await?;
        let reviewer = Arc::new(admission::Reviewer {
            checker,
            client: client.clone(),
        });
        servers.push(tokio::spawn(serve(
            listener,
            Some(acceptor),
            move |request| admission::handle(reviewer.clone(), request),
            stopped.clone(),
            Duration::from_secs(10),
            ConnectionLimits::default(),
        )));
        admission::register(&client, &admission_endpoint, bundle.as_bytes()).await?;
        tracing::info!(%admission_addr, "admission webhook for policy resources registered");
        if let Some(own) = own {
            servers.push(tokio::spawn(own.keep_current(
                context.clone(),
                admission_endpoint,
                certificate,
                bundle,
                stopped.clone(),
            )));
        }
    }

    let ended = if leader_election {
        let identity = identity
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("controller-{}", std::process::id()));
        run_as_leader(client, &namespace, &identity, shutdown_signal(), |stop| {
            run(context, stop)
        })
        .await?
    } else {
        run(context, shutdown_signal()).await;
        Ended::Shutdown
    };
    tracing::info!("reconcilers stopped");
    let _ = stop.send(true);
    for server in servers {
        let _ = server.await;
    }
    // A replica that lost the lease exits non-zero so that it restarts
    // cleanly as a follower.
    Ok(if ended == Ended::Lost {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

//! The audit scanner: one scan, then exit (run it from a CronJob).

use std::process::ExitCode;

use clap::Parser;
use palisade_audit::options::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    palisade_host::logs::init(&args.log_level, args.log_format, true);
    match run(&args).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the scan could not run");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let temporary = tempfile::tempdir()?;
    let store = args
        .store_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    if let Some(offline) = args.offline(store.clone()) {
        let reports = palisade_audit::offline::audit_manifests(&offline).await?;
        for report in &reports {
            println!(
                "{}",
                serde_json::json!({"scope": report.scope, "summary": report.summary, "results": report.results})
            );
        }
        let failures = palisade_audit::offline::failures(&reports);
        tracing::info!(objects = reports.len(), ?failures, "manifests audited");
        let violated = failures.values().any(|n| *n > 0);
        return Ok(if args.fail_on_violation && violated {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        });
    }
    let client = kube::Client::try_default().await?;
    palisade_audit::scan(client, &args.options(store)).await?;
    Ok(ExitCode::SUCCESS)
}

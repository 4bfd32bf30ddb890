//! The audit scanner: one scan, then exit (run it from a CronJob).

use std::process::ExitCode;

use clap::Parser;
use palisade_audit::options::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    palisade_host::logs::init(&args.log_level, args.log_format);
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the scan could not run");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir()?;
    let store = args
        .store_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    let client = kube::Client::try_default().await?;
    palisade_audit::scan(client, &args.options(store)).await?;
    Ok(())
}

//! `palisade run`.

use std::path::PathBuf;

use clap::Args;

use super::{read_request, PolicyArgs};

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// The AdmissionReview or AdmissionRequest (JSON or YAML; `-` for stdin).
    #[arg(long, short, visible_alias = "request-path")]
    request: PathBuf,
}

pub(super) fn run(args: &RunArgs) -> anyhow::Result<()> {
    let request = read_request(&args.request)?;
    let (policy, settings) = args.policy.load()?;
    let verdict = policy.validate(&request, &settings)?;
    let review = verdict.into_response(&request).into_review();
    super::print(&serde_json::to_string_pretty(&review)?)
}

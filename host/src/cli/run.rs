//! `palisade run`.

use std::path::PathBuf;

use clap::Args;

use super::{read_file, PolicyArgs};
use crate::PolicyRequest;

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// The AdmissionReview JSON file.
    #[arg(long, short)]
    request: PathBuf,
}

pub(super) fn run(args: &RunArgs) -> anyhow::Result<()> {
    let body = read_file(&args.request, "request")?;
    let request = PolicyRequest::from_review_json(&body)?;
    let (policy, settings) = args.policy.load()?;
    let verdict = policy.validate(&request, &settings)?;
    let review = verdict
        .into_response(request.uid(), request.object())
        .into_review();
    super::print(&serde_json::to_string_pretty(&review)?)
}

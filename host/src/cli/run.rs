//! `palisade run`.

use std::path::PathBuf;

use clap::Args;

use super::{read_input, read_request, PolicyArgs};

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// The AdmissionReview or AdmissionRequest (JSON or YAML; `-` for
    /// stdin); with `--raw`, the body of a raw request (`{"request": ...}`).
    #[arg(long, short, visible_alias = "request-path")]
    request: PathBuf,
    /// Evaluate a raw request, as `/validate_raw` does, and print its
    /// `{"response": ...}` answer.
    #[arg(long)]
    raw: bool,
}

pub(super) fn run(args: &RunArgs) -> anyhow::Result<()> {
    if args.raw {
        let body = serde_json::to_vec(&read_input(&args.request, "raw request")?)?;
        let request = crate::RawRequest::from_body(&body)?;
        let (policy, settings) = args.policy.load()?;
        let verdict = policy.validate_raw(&request, &settings)?;
        let answer = verdict.into_raw_response(&request).raw_review_json();
        let answer: serde_json::Value = serde_json::from_slice(&answer)?;
        return super::print(&serde_json::to_string_pretty(&answer)?);
    }
    let request = read_request(&args.request)?;
    let (policy, settings) = args.policy.load()?;
    let verdict = policy.validate(&request, &settings)?;
    let review = verdict.into_response(&request).into_review();
    super::print(&serde_json::to_string_pretty(&review)?)
}

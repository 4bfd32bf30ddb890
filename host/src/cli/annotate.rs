//! `palisade annotate`: embed metadata into a built policy.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::read_file;
use crate::metadata::{write_metadata, PolicyMetadata, PolicyType};
use crate::ModuleKind;

#[derive(Debug, Args)]
pub(super) struct AnnotateArgs {
    /// The built policy.
    policy: PathBuf,
    /// Metadata file (YAML or JSON, Kubewarden's `metadata.yml` shape).
    #[arg(long, short, visible_alias = "metadata-path")]
    metadata: PathBuf,
    /// Where to write the annotated policy (may be the input itself).
    #[arg(long, short, visible_alias = "output-path")]
    output: PathBuf,
}

pub(super) fn annotate(args: &AnnotateArgs) -> anyhow::Result<()> {
    let wasm = read_file(&args.policy, "policy")?;
    let text = std::fs::read_to_string(&args.metadata)
        .with_context(|| format!("cannot read metadata {}", args.metadata.display()))?;
    let metadata = PolicyMetadata::from_author_text(&text)
        .map_err(|e| anyhow::anyhow!("invalid metadata in {}: {e}", args.metadata.display()))?;
    if ModuleKind::detect(&wasm) == Some(ModuleKind::Component) {
        // A component's world says what it evaluates; metadata saying
        // otherwise would mislead every tool that reads it.
        let name = args.policy.display();
        match (super::inspect::exports_raw(&wasm), metadata.policy_type) {
            (true, PolicyType::Kubernetes) => anyhow::bail!(
                "{name} is a raw policy (a component of the raw-policy world) but its metadata says `policyType: kubernetes`: set `policyType: raw` and `rules: []`"
            ),
            (false, PolicyType::Raw) => anyhow::bail!(
                "{name} is a Kubernetes policy (a component of the policy world) but its metadata says `policyType: raw`"
            ),
            _ => {}
        }
    }
    let annotated = write_metadata(&wasm, &metadata)?;
    std::fs::write(&args.output, annotated)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(())
}

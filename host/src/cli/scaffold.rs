//! `palisade scaffold manifest`: a policy resource from a policy's metadata.

use std::path::Path;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::PolicyArgs;
use crate::scaffold::{manifest, ManifestInput, ManifestKind};

#[derive(Debug, Args)]
pub(super) struct ScaffoldArgs {
    #[command(subcommand)]
    what: Scaffold,
}

#[derive(Debug, Subcommand)]
enum Scaffold {
    /// Prints a ClusterAdmissionPolicy or AdmissionPolicy for a policy: rules,
    /// mutating and context-aware resources from its metadata, settings
    /// checked by the policy itself.
    Manifest(ManifestArgs),
}

#[derive(Debug, Args)]
struct ManifestArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// The resource to write.
    #[arg(
        long = "type",
        short = 't',
        value_enum,
        default_value = "ClusterAdmissionPolicy"
    )]
    kind: ManifestKind,
    /// The resource's name (default: the policy's title, else its file name).
    #[arg(long, visible_alias = "title")]
    name: Option<String>,
    /// The namespace of an AdmissionPolicy.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The PolicyServer that serves it.
    #[arg(long, default_value = "default")]
    policy_server: String,
}

pub(super) fn scaffold(args: &ScaffoldArgs) -> anyhow::Result<()> {
    let Scaffold::Manifest(args) = &args.what;
    let (policy, settings) = args.policy.load()?;
    let given = args.policy.policy.as_str();
    let metadata = policy.metadata().with_context(|| {
        format!("{given} has no metadata (its rules): annotate it first with `palisade annotate`")
    })?;
    let module = module_reference(given)?;
    let default_name = metadata
        .annotations
        .get("io.kubewarden.policy.title")
        .cloned()
        .unwrap_or_else(|| policy.id().to_owned());
    let name = args.name.clone().unwrap_or(default_name);
    let resource = manifest(
        &ManifestInput {
            kind: args.kind,
            name: &name,
            namespace: Some(&args.namespace),
            module: &module,
            settings: serde_json::from_str(&settings)?,
            policy_server: &args.policy_server,
        },
        metadata,
    );
    super::print(serde_yaml::to_string(&resource)?.trim_end())
}

/// The `module:` of the manifest: a local file as an absolute `file://`
/// URL, a reference without scheme as `registry://`.
fn module_reference(given: &str) -> anyhow::Result<String> {
    let path = Path::new(given);
    if path.is_file() {
        let absolute = path
            .canonicalize()
            .with_context(|| format!("cannot resolve {given}"))?;
        return Ok(format!("file://{}", absolute.display()));
    }
    Ok(if given.contains("://") {
        given.to_owned()
    } else {
        format!("registry://{given}")
    })
}

//! `palisade pull` and `palisade push`, and the fetch options every
//! command that takes a policy reference shares.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::read_file;
use crate::fetch::{Fetcher, FetcherOptions};

/// Where modules come from and where they are kept.
#[derive(Debug, Args)]
pub(super) struct FetchArgs {
    /// Module store (default: the user's cache directory).
    #[arg(long, env = "PALISADE_STORE_DIR")]
    store_dir: Option<PathBuf>,
    /// Kubewarden `sources.yml` (insecure sources, certificate authorities).
    #[arg(long, visible_alias = "sources-path")]
    sources: Option<PathBuf>,
    /// Docker `config.json` with registry credentials (default:
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` when present).
    #[arg(long, visible_alias = "docker-config-json-path")]
    docker_config: Option<PathBuf>,
    /// Largest module accepted, in MiB.
    #[arg(long, default_value_t = 64)]
    max_module_mib: u64,
}

impl FetchArgs {
    pub(super) fn fetcher(&self) -> anyhow::Result<Fetcher> {
        let Self {
            store_dir,
            sources,
            docker_config,
            max_module_mib,
        } = self;
        let store_dir = store_dir
            .clone()
            .or_else(|| super::cache_home().map(|c| c.join("palisade").join("modules")))
            .ok_or_else(|| anyhow::anyhow!("no module store: pass --store-dir"))?;
        let docker_config = docker_config.clone().or_else(default_docker_config);
        Ok(Fetcher::new(FetcherOptions::from_files(
            store_dir,
            sources.as_deref(),
            docker_config.as_deref(),
            *max_module_mib,
        )?)?)
    }

    /// A local path for `policy`: the file itself, or the fetched module.
    pub(super) fn resolve(&self, policy: &str) -> anyhow::Result<PathBuf> {
        if Path::new(policy).exists() || !looks_like_reference(policy) {
            return Ok(PathBuf::from(policy));
        }
        let fetcher = self.fetcher()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(crate::fetch::fetch_to_path(&fetcher, policy))?)
    }
}

/// A reference has a scheme or a registry host; a plain file name has neither.
fn looks_like_reference(text: &str) -> bool {
    text.contains("://")
        || text
            .split('/')
            .next()
            .is_some_and(|first| first.contains('.') || first.contains(':'))
            && text.contains('/')
}

fn default_docker_config() -> Option<PathBuf> {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME")?)
            .join(".docker")
            .join("config.json"),
    };
    path.exists().then_some(path)
}

#[derive(Debug, Args)]
pub(super) struct PullArgs {
    /// The reference (`registry://host/repo:tag`, `host/repo@sha256:...`, `https://...`).
    reference: String,
    /// Also copy the module here.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    fetch: FetchArgs,
}

pub(super) fn pull(args: &PullArgs) -> anyhow::Result<()> {
    let fetcher = args.fetch.fetcher()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let module = runtime.block_on(fetcher.fetch(&args.reference))?;
    if let Some(output) = &args.output {
        std::fs::copy(&module.path, output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        // The store keeps its files private; a copy asked for is the user's.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(output, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set the mode of {}", output.display()))?;
    }
    let digest = match module.digest {
        Some(digest) => digest,
        None => crate::module_digest(&read_file(&module.path, "fetched module")?),
    };
    super::print(&format!(
        "{}\nsha256: {digest}\npath: {}",
        args.reference,
        module.path.display()
    ))
}

#[derive(Debug, Args)]
pub(super) struct PushArgs {
    /// The policy module.
    policy: PathBuf,
    /// Where to push it (`registry://host/repo:tag` or `host/repo:tag`).
    reference: String,
    /// Push a module without metadata (it cannot declare its rules).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    fetch: FetchArgs,
}

pub(super) fn push(args: &PushArgs) -> anyhow::Result<()> {
    let wasm = read_file(&args.policy, "policy")?;
    if !args.force
        && crate::metadata::read_metadata(&wasm)
            .ok()
            .flatten()
            .is_none()
    {
        anyhow::bail!(
            "{} has no metadata: annotate it first (`palisade annotate {} --metadata metadata.yml -o <file>`), or pass --force",
            args.policy.display(),
            args.policy.display()
        );
    }
    let fetcher = args.fetch.fetcher()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pinned = runtime.block_on(fetcher.push(&wasm, &args.reference))?;
    super::print(&format!("pushed {}: {pinned}", args.policy.display()))
}

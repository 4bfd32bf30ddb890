//! The `palisade` command for policy authors: run, inspect, bench and
//! annotate policies. The binary only calls [`main`].

mod annotate;
mod bench;
mod fetch;
mod inspect;
mod run;

pub use bench::Percentiles;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::{
    CompileCache, EngineConfig, Grants, LoadedPolicy, PolicyConfig, PolicyEngine, PolicyLimits,
    PolicyLoader,
};

/// Palisade's command line for policy authors.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter for the CLI and the policy's own logs (`info`, `debug`...).
    #[arg(long, env = "PALISADE_LOG", default_value = "info", global = true)]
    log_level: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Evaluates one AdmissionReview and prints the AdmissionReview response.
    Run(run::RunArgs),
    /// Prints a policy's kind, metadata and imported capabilities.
    Inspect(inspect::InspectArgs),
    /// Evaluates one request many times and prints latency percentiles.
    Bench(bench::BenchArgs),
    /// Writes metadata (YAML or JSON) into a built policy.
    Annotate(annotate::AnnotateArgs),
    /// Fetches a policy into the module store.
    Pull(fetch::PullArgs),
    /// Pushes a policy to an OCI registry with Kubewarden's media types.
    Push(fetch::PushArgs),
}

/// How to load the policy: shared by the commands that evaluate.
#[derive(Debug, Args)]
struct PolicyArgs {
    /// The policy: a `.wasm` file or a reference (`registry://...`, `https://...`).
    policy: String,
    /// Settings: inline JSON, or a JSON/YAML file.
    #[arg(long, short)]
    settings: Option<String>,
    /// Host capabilities to grant, as in `hostCapabilities` (`net/*`, `*`).
    #[arg(long = "allow", value_name = "PATTERN")]
    allow: Vec<String>,
    /// Evaluation deadline in milliseconds.
    #[arg(long, default_value_t = 2000)]
    timeout_ms: u64,
    /// Memory cap in MiB.
    #[arg(long, default_value_t = 128)]
    memory_mib: usize,
    /// Directory for precompiled policies (default: the user's cache directory).
    #[arg(long, env = "PALISADE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    #[command(flatten)]
    fetch: fetch::FetchArgs,
}

impl PolicyArgs {
    fn load(&self) -> anyhow::Result<(LoadedPolicy, String)> {
        let Self {
            policy,
            settings,
            allow,
            timeout_ms,
            memory_mib,
            cache_dir,
            fetch,
        } = self;
        let policy = fetch.resolve(policy)?;
        let settings = read_settings(settings.as_deref())?;
        let engine = PolicyEngine::new(EngineConfig::default())?;
        let loader = match cache_dir.clone().or_else(default_cache_dir) {
            Some(dir) => PolicyLoader::with_cache(engine, CompileCache::new(dir)?),
            None => PolicyLoader::new(engine),
        };
        let config = PolicyConfig {
            id: policy
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "policy".into()),
            grants: Grants::new(allow.iter().cloned()),
            limits: PolicyLimits {
                timeout: Duration::from_millis(*timeout_ms),
                memory_bytes: memory_mib.saturating_mul(1 << 20),
            },
            ..PolicyConfig::new("")
        };
        let loaded = loader.load_file(&policy, config)?;
        loaded
            .validate_settings(&settings)
            .with_context(|| format!("settings {settings}"))?;
        Ok((loaded, settings))
    }
}

fn cache_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
}

fn default_cache_dir() -> Option<PathBuf> {
    Some(cache_home()?.join("palisade").join("compiled"))
}

/// Settings given inline or as a file, normalised to JSON text.
fn read_settings(arg: Option<&str>) -> anyhow::Result<String> {
    let Some(arg) = arg else {
        return Ok("{}".into());
    };
    let trimmed = arg.trim_start();
    let text = if trimmed.starts_with('{') || trimmed.starts_with('[') || !Path::new(arg).exists() {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("cannot read settings file {arg}"))?
    };
    let value: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(json_err) => serde_yaml::from_str(&text).map_err(|_| {
            anyhow::anyhow!("settings are neither JSON nor a readable YAML file: {json_err}")
        })?,
    };
    Ok(value.to_string())
}

/// Writes to stdout; a closed pipe (`palisade inspect x | head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn read_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// Runs the CLI with the process arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::logs::init(&cli.log_level, crate::logs::LogFormat::Text);
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Inspect(args) => inspect::inspect(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Annotate(args) => annotate::annotate(&args),
        Command::Pull(args) => fetch::pull(&args),
        Command::Push(args) => fetch::push(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

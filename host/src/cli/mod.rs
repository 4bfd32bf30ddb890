//! The `palisade` command for policy authors: run, inspect, bench and
//! annotate policies. The binary only calls [`main`].

mod annotate;
mod bench;
mod fetch;
mod inspect;
mod new;
mod run;
mod scaffold;

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
#[command(name = "palisade", version, about, max_term_width = 80)]
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
    /// Creates a policy project: an example policy with tests, metadata,
    /// settings and a request to run it on.
    New(new::NewArgs),
    /// Generates files for a policy (`manifest`: its policy resource).
    Scaffold(scaffold::ScaffoldArgs),
}

/// How to load the policy: shared by the commands that evaluate.
#[derive(Debug, Args)]
struct PolicyArgs {
    /// The policy: a `.wasm` file or a reference (`registry://...`, `https://...`).
    policy: String,
    /// Settings: a JSON/YAML file, or inline JSON/YAML.
    #[arg(long, short, conflicts_with_all = ["settings_json", "settings_path"])]
    settings: Option<String>,
    /// Settings as inline JSON (kwctl's spelling).
    #[arg(long, conflicts_with = "settings_path")]
    settings_json: Option<String>,
    /// Settings from a JSON or YAML file (kwctl's spelling).
    #[arg(long)]
    settings_path: Option<PathBuf>,
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
            settings_json,
            settings_path,
            allow,
            timeout_ms,
            memory_mib,
            cache_dir,
            fetch,
        } = self;
        let policy = fetch.resolve(policy)?;
        let settings = match (settings, settings_json, settings_path) {
            (_, Some(json), _) => serde_json::from_str::<serde_json::Value>(json)
                .map_err(|e| anyhow::anyhow!("--settings-json is not JSON: {e}"))?
                .to_string(),
            (_, _, Some(path)) => settings_file(path)?,
            (inline_or_path, None, None) => read_settings(inline_or_path.as_deref())?,
        };
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

/// `--settings`: a file when one exists at that path, else inline JSON or
/// YAML; normalised to JSON text. Inline settings are a mapping (or empty):
/// a lone word is a file name that does not exist, and is said so.
fn read_settings(arg: Option<&str>) -> anyhow::Result<String> {
    let Some(arg) = arg else {
        return Ok("{}".into());
    };
    if Path::new(arg).is_file() {
        return settings_file(Path::new(arg));
    }
    let value = json_or_yaml(arg.as_bytes())
        .map_err(|e| anyhow::anyhow!("settings are neither JSON nor YAML: {e}"))?;
    if value.is_string() || value.is_number() || value.is_boolean() {
        anyhow::bail!(
            "settings file {arg} does not exist (inline settings are a JSON or YAML mapping)"
        );
    }
    Ok(value.to_string())
}

fn settings_file(path: &Path) -> anyhow::Result<String> {
    let text = read_file(path, "settings file")?;
    let value = json_or_yaml(&text)
        .map_err(|e| anyhow::anyhow!("settings file {}: {e}", path.display()))?;
    Ok(value.to_string())
}

/// Parses JSON, or YAML when it is not JSON; the JSON error when neither.
fn json_or_yaml(text: &[u8]) -> anyhow::Result<serde_json::Value> {
    match serde_json::from_slice(text) {
        Ok(value) => Ok(value),
        Err(json_err) => serde_yaml::from_slice(text).map_err(|_| anyhow::anyhow!("{json_err}")),
    }
}

/// The request of `run` and `bench`: an AdmissionReview, or a bare
/// AdmissionRequest as kwctl accepts, in JSON or YAML; `-` reads stdin.
/// A JSON or YAML document from a file, or from stdin for `-`; `what` names
/// it in errors.
fn read_input(path: &Path, what: &str) -> anyhow::Result<serde_json::Value> {
    let text = if path == Path::new("-") {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)
            .with_context(|| format!("cannot read the {what} from stdin"))?;
        text
    } else {
        read_file(path, what)?
    };
    json_or_yaml(&text)
        .with_context(|| format!("{what} {} is neither JSON nor YAML", path.display()))
}

fn read_request(path: &Path) -> anyhow::Result<crate::PolicyRequest> {
    let name = path.display();
    let value = read_input(path, "request")?;
    let review = match &value {
        serde_json::Value::Object(fields) if fields.contains_key("request") => value,
        serde_json::Value::Object(fields)
            if fields.contains_key("uid") && fields.contains_key("operation") =>
        {
            serde_json::json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": value,
            })
        }
        _ => anyhow::bail!(
            "request {name} is neither an AdmissionReview (it has no `request`) nor an AdmissionRequest (it has no `uid` and `operation`)"
        ),
    };
    Ok(crate::PolicyRequest::from_review_json(
        &serde_json::to_vec(&review)?,
    )?)
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
    crate::logs::init(&cli.log_level, crate::logs::LogFormat::Text, true);
    let result = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Inspect(args) => inspect::inspect(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Annotate(args) => annotate::annotate(&args),
        Command::Pull(args) => fetch::pull(&args),
        Command::Push(args) => fetch::push(&args),
        Command::New(args) => new::new(&args),
        Command::Scaffold(args) => scaffold::scaffold(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! Evaluates every AdmissionReview fixture with every sample policy, with
//! the default settings embedded below, and prints one line per pair: the
//! `make demo` job. No cluster needed.
//!
//! Usage: `evaluate-fixtures <policy dir> <fixture dir>`

use std::path::PathBuf;

use anyhow::Context;

use palisade_host::{EngineConfig, PolicyConfig, PolicyEngine, PolicyLoader, PolicyRequest};

/// The embedded default configuration: policy file and settings.
const POLICIES: &[(&str, &str)] = &[
    ("pod-privileged", "{}"),
    ("required-labels", r#"{"labels": ["run"]}"#),
    (
        "allowed-registries",
        r#"{"registries": ["registry.example.com", "ghcr.io/example"]}"#,
    ),
    ("default-security-context", "{}"),
];

fn main() -> std::process::ExitCode {
    match evaluate_all() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn evaluate_all() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(policy_dir), Some(fixture_dir)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: evaluate-fixtures <policy dir> <fixture dir>");
    };
    let loader = PolicyLoader::new(PolicyEngine::new(EngineConfig::default())?);
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&fixture_dir)
        .with_context(|| {
            format!(
                "cannot read the fixtures directory {} (set FIXTURES=<directory of AdmissionReview JSON files>)",
                fixture_dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    anyhow::ensure!(
        !fixtures.is_empty(),
        "no AdmissionReview fixtures (*.json) in {}",
        fixture_dir.display()
    );
    fixtures.sort();
    for (name, settings) in POLICIES {
        let policy = loader.load_file(
            &policy_dir.join(format!("{name}.wasm")),
            PolicyConfig::new(*name),
        )?;
        policy.validate_settings(settings)?;
        println!("\n{name}  settings={settings}");
        for path in &fixtures {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let request = PolicyRequest::from_review_json(&bytes)
                .with_context(|| format!("{} is not an AdmissionReview", path.display()))?;
            let fixture = path
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default();
            let line = match policy.validate(&request, settings) {
                Ok(verdict) => {
                    let response = verdict.into_response(&request);
                    match (&response.status, response.decoded_patch()) {
                        (Some(status), _) => format!("rejected  {}", status.message),
                        (None, Some(patch)) => {
                            format!("mutated   {} patch operation(s)", patch.0.len())
                        }
                        (None, None) => "accepted".to_owned(),
                    }
                }
                Err(e) => format!("error     {e}"),
            };
            println!("  {fixture:<45} {line}");
        }
    }
    Ok(())
}

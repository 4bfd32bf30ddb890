//! Evaluates every AdmissionReview fixture with every sample policy, with
//! the default settings embedded below, and prints one line per pair: the
//! `make demo` job. No cluster needed.
//!
//! Usage: `evaluate-fixtures <policy dir> <fixture dir>`

use std::path::PathBuf;

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

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(policy_dir), Some(fixture_dir)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: evaluate-fixtures <policy dir> <fixture dir>");
    };
    let loader = PolicyLoader::new(PolicyEngine::new(EngineConfig::default())?);
    let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&fixture_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    fixtures.sort();
    for (name, settings) in POLICIES {
        let policy = loader.load_file(
            &policy_dir.join(format!("{name}.wasm")),
            PolicyConfig::new(*name),
        )?;
        policy.validate_settings(settings)?;
        println!("\n{name}  settings={settings}");
        for path in &fixtures {
            let request = PolicyRequest::from_review_json(&std::fs::read(path)?)?;
            let fixture = path
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default();
            let line = match policy.validate(&request, settings) {
                Ok(verdict) => {
                    let response = verdict.into_response(request.uid(), request.object());
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

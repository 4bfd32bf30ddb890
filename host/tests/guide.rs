//! The README's "Write your first policy", run as written: every command of
//! the block after `<!-- guide -->`, one by one, in a fresh directory, with
//! this build's `palisade` on PATH and cargo offline (the crates the
//! workspace built are all the new project needs). A README change that
//! breaks the guide fails here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap()
}

/// The lines of the first fenced block after `marker`.
fn block_after(text: &str, marker: &str) -> Vec<String> {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("no `{marker}` in the README"));
    let mut lines = text[start..].lines().skip_while(|l| !l.starts_with("```"));
    lines.next();
    lines
        .take_while(|l| !l.starts_with("```"))
        .map(str::to_owned)
        .collect()
}

/// Where the guide's project builds: a directory kept between runs, so that
/// only the first run compiles its dependencies.
fn project_target_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("readme-guide");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_readme_guide_runs_as_written() {
    let readme = readme();
    let commands: Vec<String> = block_after(&readme, "<!-- guide -->")
        .into_iter()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(commands[0].starts_with("palisade new "), "{commands:?}");

    let work = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_palisade")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cwd = work.path().to_owned();
    let mut outputs: Vec<(String, String)> = Vec::new();
    for command in &commands {
        if let Some(dir) = command.strip_prefix("cd ") {
            cwd = cwd.join(dir.trim());
            assert!(cwd.is_dir(), "`{command}`: no such directory");
            continue;
        }
        if command.starts_with("cargo ") && !cwd.join("target").exists() {
            std::os::unix::fs::symlink(project_target_dir(), cwd.join("target")).unwrap();
        }
        let started = Instant::now();
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", command])
            .current_dir(&cwd)
            .env("PATH", &path)
            .env_remove("CARGO_TARGET_DIR")
            .env("CARGO_NET_OFFLINE", "true")
            .env("PALISADE_CACHE_DIR", work.path().join(".compiled"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "`{command}` failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        println!("$ {command}   ({:.1?})", started.elapsed());
        outputs.push((command.clone(), stdout));
    }

    let project = work.path().join("my-policy");
    let readme_source = block_after(&readme, "`src/lib.rs`, as `palisade new` writes it:");
    let written = std::fs::read_to_string(project.join("src/lib.rs")).unwrap();
    assert_eq!(
        written.lines().collect::<Vec<_>>(),
        readme_source,
        "the README shows another src/lib.rs than `palisade new` writes"
    );

    let output_of = |prefix: &str| -> Vec<&str> {
        outputs
            .iter()
            .filter(|(c, _)| c.starts_with(prefix))
            .map(|(_, o)| o.as_str())
            .collect()
    };
    let runs = output_of("palisade run ");
    assert_eq!(runs.len(), 2, "{commands:?}");
    let verdict = |text: &str| -> serde_json::Value { serde_json::from_str(text).unwrap() };
    assert_eq!(verdict(runs[0])["response"]["allowed"], true, "{}", runs[0]);
    let rejected = verdict(runs[1]);
    assert_eq!(rejected["response"]["allowed"], false, "{}", runs[1]);
    assert_eq!(
        rejected["response"]["status"]["message"],
        "at most 2 replicas"
    );
    let inspected = output_of("palisade inspect ")[0];
    assert!(inspected.contains("kind:         component"), "{inspected}");
    assert!(
        inspected.contains("io.kubewarden.policy.title: my-policy"),
        "{inspected}"
    );
    assert!(output_of("palisade bench ")[0].contains("p99="));
    let manifest: serde_json::Value =
        serde_yaml::from_str(output_of("palisade scaffold manifest ")[0]).unwrap();
    assert_eq!(manifest["kind"], "ClusterAdmissionPolicy");
    assert_eq!(manifest["metadata"]["name"], "my-policy");
    assert_eq!(manifest["spec"]["settings"]["max_replicas"], 3);
    assert_eq!(
        manifest["spec"]["rules"][0]["resources"],
        serde_json::json!(["deployments"])
    );

    // From `palisade new` to the first verdict, tests aside.
    let to_first_verdict = commands
        .iter()
        .take_while(|c| !c.starts_with("palisade run "))
        .filter(|c| !c.starts_with("cargo test"))
        .count()
        + 1;
    println!("commands from `palisade new` to a verdict: {to_first_verdict}");
    assert!(to_first_verdict <= 5, "{commands:?}");
}

#[test]
fn new_refuses_bad_names_and_existing_directories() {
    let work = tempfile::tempdir().unwrap();
    let new = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(["new", name])
            .current_dir(work.path())
            .output()
            .unwrap()
    };
    let out = new("My Policy");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a policy name"));
    assert!(new("ok-policy").status.success());
    let again = new("ok-policy");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
}

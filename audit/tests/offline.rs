//! The offline mode, as a CI pipeline runs it: the `audit-scanner` binary
//! on a directory of manifests and a `policies.yml`, reports on stdout, the
//! exit status saying whether anything failed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use palisade_testkit as common;

fn run(dir: &std::path::Path, extra: &[&str]) -> (i32, Vec<serde_json::Value>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_audit-scanner"))
        .arg("--manifests")
        .arg(dir.join("manifests"))
        .arg("--policies-file")
        .arg(dir.join("policies.yml"))
        .arg("--store-dir")
        .arg(dir.join("store"))
        .args(extra)
        .output()
        .unwrap();
    let reports = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (
        output.status.code().unwrap(),
        reports,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn manifests_are_audited_without_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policies.yml"),
        format!(
            "privileged:\n  module: file://{}\nteam-label:\n  module: file://{}\n  settings: {{labels: [team]}}\n",
            common::policy_path("pod-privileged").display(),
            common::policy_path("required-labels").display()
        ),
    )
    .unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    // Two documents in one file, one in another; a file of another kind is ignored.
    std::fs::write(
        manifests.join("a.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: root, namespace: dev, labels: {team: a}}\nspec:\n  containers:\n  - {name: app, image: nginx, securityContext: {privileged: true}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: plain, namespace: dev}\nspec:\n  containers:\n  - {name: app, image: nginx}\n",
    )
    .unwrap();
    std::fs::write(
        manifests.join("b.json"),
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fine", "namespace": "dev", "labels": {"team": "b"}}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}}"#,
    )
    .unwrap();
    std::fs::write(manifests.join("notes.txt"), "not a manifest").unwrap();

    let (status, reports, stderr) = run(dir.path(), &[]);
    assert_eq!(status, 0, "{stderr}");
    let outcome = |name: &str, policy: &str| {
        let report = reports
            .iter()
            .find(|r| r["scope"]["name"] == name)
            .unwrap_or_else(|| panic!("no report for {name}: {reports:?}"));
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["policy"] == policy)
            .unwrap()["result"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(reports.len(), 3);
    assert_eq!(outcome("root", "privileged"), "fail");
    assert_eq!(outcome("root", "team-label"), "pass");
    assert_eq!(outcome("plain", "privileged"), "pass");
    assert_eq!(outcome("plain", "team-label"), "fail");
    assert_eq!(outcome("fine", "privileged"), "pass");
    assert_eq!(outcome("fine", "team-label"), "pass");

    // For a pipeline: a failure is the exit status.
    let (status, _, _) = run(dir.path(), &["--fail-on-violation"]);
    assert_eq!(status, 2);

    // A manifest that is not an object is an error naming the file.
    std::fs::write(manifests.join("c.yaml"), "- just\n- a list\n").unwrap();
    let (status, _, stderr) = run(dir.path(), &[]);
    assert_eq!(status, 1);
    assert!(
        stderr.contains("c.yaml") && stderr.contains("not a Kubernetes object"),
        "{stderr}"
    );
}

//! The `palisade` binary, as a policy author runs it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::process::{Command, Output};

use common::{fixture_path, policy_path};

fn palisade(args: &[&str]) -> Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .env("PALISADE_CACHE_DIR", cache.path())
        .env("PALISADE_LOG", "warn")
        .output()
        .unwrap()
}

fn ok_stdout(args: &[&str]) -> String {
    let out = palisade(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn failure_stderr(args: &[&str]) -> String {
    let out = palisade(args);
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn path(p: std::path::PathBuf) -> String {
    p.to_string_lossy().into_owned()
}

/// `palisade run <policy> <request flag> <fixture>`, its output parsed.
fn run_review(policy: &str, request_flag: &str, fixture: &str) -> serde_json::Value {
    let out = ok_stdout(&[
        "run",
        &path(policy_path(policy)),
        request_flag,
        &path(fixture_path(fixture)),
    ]);
    serde_json::from_str(&out).unwrap()
}

#[test]
fn run_prints_the_admission_review_response() {
    let review = run_review("pod-privileged", "--request", "pod-create-privileged.json");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(
        review["response"]["uid"],
        "61b212d3-f615-5e7b-b684-c60dbe71a3d4"
    );
}

#[test]
fn run_prints_the_patch_of_a_mutating_policy() {
    let review = run_review(
        "default-security-context",
        "-r",
        "pod-create-unprivileged.json",
    );
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    use base64::Engine as _;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(review["response"]["patch"].as_str().unwrap())
        .unwrap();
    let patch: serde_json::Value = serde_json::from_slice(&patch).unwrap();
    assert_eq!(
        patch,
        serde_json::json!([
            {"op": "add", "path": "/spec/containers/0/securityContext", "value": {"allowPrivilegeEscalation": false}},
            {"op": "add", "path": "/spec/securityContext/runAsNonRoot", "value": true},
        ])
    );
}

#[test]
fn run_takes_settings_inline_or_from_a_yaml_file() {
    let policy = path(policy_path("required-labels"));
    let request = path(fixture_path("pod-create-missing-labels.json"));
    let out = ok_stdout(&[
        "run",
        &policy,
        "-r",
        &request,
        "--settings",
        r#"{"labels":["run"]}"#,
    ]);
    assert!(out.contains("missing label `run`"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("settings.yaml");
    std::fs::write(&file, "labels:\n  - run\n").unwrap();
    let out = ok_stdout(&["run", &policy, "-r", &request, "--settings", &path(file)]);
    assert!(out.contains("missing label `run`"), "{out}");
}

#[test]
fn clear_errors() {
    let request = path(fixture_path("pod-delete.json"));
    let err = failure_stderr(&["run", "/nonexistent.wasm", "-r", &request]);
    assert!(
        err.contains("cannot read policy module /nonexistent.wasm"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let err = failure_stderr(&["run", &path(text), "-r", &request]);
    assert!(err.contains("is not a WebAssembly module"), "{err}");

    let core = dir.path().join("core.wasm");
    std::fs::write(&core, wat::parse_str("(module)").unwrap()).unwrap();
    let err = failure_stderr(&["run", &path(core), "-r", &request]);
    assert!(
        err.contains("core WebAssembly module but not a waPC policy"),
        "{err}"
    );

    let labels = path(policy_path("required-labels"));
    let err = failure_stderr(&[
        "run",
        &labels,
        "-r",
        &request,
        "--settings",
        "{\"labels\": [",
    ]);
    assert!(err.contains("settings are neither JSON"), "{err}");
    let err = failure_stderr(&[
        "run",
        &labels,
        "-r",
        &request,
        "--settings",
        r#"{"labels": []}"#,
    ]);
    assert!(err.contains("at least one required label"), "{err}");

    let err = failure_stderr(&["run", &labels, "-r", "/nonexistent.json"]);
    assert!(err.contains("cannot read request"), "{err}");
}

#[test]
fn run_raw_evaluates_a_raw_request_with_either_kind_of_policy() {
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("raw.json");
    std::fs::write(
        &request,
        r#"{"request": {"uid": "r-9", "user": "alice", "resource": "orders"}}"#,
    )
    .unwrap();
    let settings =
        r#"{"allowedUsers": ["alice"], "allowedActions": ["read"], "defaultAction": "read"}"#;
    let mut answers = Vec::new();
    for policy in ["raw-access", "raw-access-wapc"] {
        let out = ok_stdout(&[
            "run",
            &path(policy_path(policy)),
            "--raw",
            "-r",
            &path(request.clone()),
            "--settings-json",
            settings,
        ]);
        let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(answer["response"]["uid"], "r-9", "{policy}: {answer}");
        assert_eq!(answer["response"]["allowed"], true, "{policy}: {answer}");
        assert_eq!(
            answer["response"]["patchType"], "JSONPatch",
            "{policy}: {answer}"
        );
        answers.push(answer);
    }
    assert_eq!(answers[0], answers[1]);

    let err = failure_stderr(&[
        "run",
        &path(policy_path("pod-privileged")),
        "--raw",
        "-r",
        &path(request),
    ]);
    assert!(err.contains("it is a Kubernetes policy"), "{err}");
}

#[test]
fn inspect_shows_kind_capabilities_and_metadata() {
    let out = ok_stdout(&["inspect", &path(policy_path("pod-privileged"))]);
    assert!(
        out.contains("kind:         component (policy world"),
        "{out}"
    );
    assert!(out.contains("capabilities: none"), "{out}");
    assert!(
        out.contains("io.kubewarden.policy.title: pod-privileged"),
        "{out}"
    );
    let out = ok_stdout(&["inspect", &path(policy_path("pod-privileged-wapc-unknown"))]);
    assert!(out.contains("kind:         waPC (core module)"), "{out}");
    assert!(out.contains("executionMode: kubewarden-wapc"), "{out}");
    let out = ok_stdout(&["inspect", &path(policy_path("pod-privileged-wasi"))]);
    assert!(out.contains("kind:         wasi (core module)"), "{out}");
    let out = ok_stdout(&["inspect", &path(policy_path("raw-access"))]);
    assert!(
        out.contains("kind:         component (raw-policy world"),
        "{out}"
    );
    assert!(out.contains("policyType: raw"), "{out}");
    let out = ok_stdout(&["inspect", "--json", &path(policy_path("dns-lookup"))]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["capabilities"], serde_json::json!(["net"]));
    assert!(report["metadata"].is_null());
}

#[test]
fn annotate_writes_metadata_that_inspect_reads() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata.yml");
    std::fs::write(
        &metadata,
        "rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [CREATE]\nmutating: true\nannotations:\n  io.kubewarden.policy.title: renamed\n",
    )
    .unwrap();
    let out = dir.path().join("annotated.wasm");
    ok_stdout(&[
        "annotate",
        &path(policy_path("dns-lookup")),
        "--metadata",
        &path(metadata),
        "--output",
        &path(out.clone()),
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&ok_stdout(&["inspect", "--json", &path(out.clone())])).unwrap();
    assert_eq!(report["metadata"]["mutating"], true);
    assert_eq!(
        report["metadata"]["annotations"]["io.kubewarden.policy.title"],
        "renamed"
    );
    // Still a runnable policy.
    let run = ok_stdout(&[
        "run",
        &path(out),
        "--allow",
        "net/*",
        "-r",
        &path(fixture_path("pod-delete.json")),
    ]);
    assert!(run.contains("localhost resolves to"), "{run}");

    // Metadata that contradicts a component's world is refused.
    let err = failure_stderr(&[
        "annotate",
        &path(policy_path("raw-access")),
        "--metadata",
        &path(dir.path().join("metadata.yml")),
        "--output",
        &path(dir.path().join("raw.wasm")),
    ]);
    assert!(err.contains("set `policyType: raw`"), "{err}");
}

#[test]
fn bench_prints_percentiles() {
    let out = ok_stdout(&[
        "bench",
        &path(policy_path("pod-privileged")),
        "-r",
        &path(fixture_path("pod-create-privileged.json")),
        "--iterations",
        "200",
        "--warmup",
        "20",
    ]);
    assert!(out.contains("accepted=false iterations=200"), "{out}");
    assert!(out.contains("p50=") && out.contains("p99="), "{out}");
}

#[test]
fn push_pull_and_run_by_reference() {
    let registry = common::registry::Registry::start(Default::default());
    let work = tempfile::tempdir().unwrap();
    let sources = path(registry.write_sources(work.path()));
    let store = path(work.path().join("store"));
    let reference = format!("registry://{}/policies/pod-privileged:v1", registry.host);
    let pushed = ok_stdout(&[
        "push",
        &path(policy_path("pod-privileged")),
        &reference,
        "--sources",
        &sources,
        "--store-dir",
        &store,
    ]);
    // The pushed reference, pinned to its manifest: pasteable into a policy.
    let pinned = pushed.rsplit(' ').next().unwrap().trim();
    assert!(
        pinned.starts_with(&format!(
            "{}/policies/pod-privileged@sha256:",
            registry.host
        )),
        "{pushed}"
    );
    let inspected = ok_stdout(&[
        "inspect",
        &format!("registry://{pinned}"),
        "--sources-path",
        &sources,
        "--store-dir",
        &store,
    ]);
    assert!(
        inspected.contains("io.kubewarden.policy.title: pod-privileged"),
        "{inspected}"
    );
    // A module without metadata is refused unless forced, as kwctl does.
    let bare = failure_stderr(&[
        "push",
        &path(policy_path("dns-lookup")),
        &format!("{}/policies/bare:v1", registry.host),
        "--sources",
        &sources,
    ]);
    assert!(
        bare.contains("has no metadata") && bare.contains("--force"),
        "{bare}"
    );
    ok_stdout(&[
        "push",
        "--force",
        &path(policy_path("dns-lookup")),
        &format!("{}/policies/bare:v1", registry.host),
        "--sources",
        &sources,
        "--store-dir",
        &store,
    ]);
    let pulled = ok_stdout(&[
        "pull",
        &reference,
        "--sources",
        &sources,
        "--store-dir",
        &store,
    ]);
    assert!(pulled.contains("sha256: "), "{pulled}");
    let out = ok_stdout(&[
        "run",
        &reference,
        "--sources",
        &sources,
        "--store-dir",
        &store,
        "-r",
        &path(fixture_path("pod-create-privileged.json")),
    ]);
    assert!(out.contains("\"allowed\": false"), "{out}");
    let err = failure_stderr(&["pull", &reference, "--store-dir", &store]);
    assert!(
        err.contains("speaks plain HTTP") && err.contains("insecure_sources"),
        "plain HTTP registry without insecure_sources: {err}"
    );
    assert!(err.contains(&registry.host), "{err}");
    assert!(!err.contains("InvalidContentType"), "{err}");
}

#[test]
fn kwctl_spellings_and_request_shapes() {
    let policy = path(policy_path("required-labels"));
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("settings.yml");
    std::fs::write(&settings, "labels: [run]\n").unwrap();
    let review: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture_path("pod-create-missing-labels.json")).unwrap(),
    )
    .unwrap();
    // A bare AdmissionRequest, as kwctl and Kubewarden policies' test data
    // have it, in JSON and in YAML.
    let bare = dir.path().join("request.json");
    std::fs::write(&bare, review["request"].to_string()).unwrap();
    let yaml = dir.path().join("review.yaml");
    std::fs::write(&yaml, serde_yaml::to_string(&review).unwrap()).unwrap();
    for request in [bare, yaml] {
        for settings_args in [
            vec!["--settings-json", r#"{"labels": ["run"]}"#],
            vec!["--settings-path", settings.to_str().unwrap()],
        ] {
            let mut args = vec!["run", &policy, "--request-path"];
            let request = path(request.clone());
            args.push(&request);
            args.extend(settings_args);
            let out = ok_stdout(&args);
            assert!(out.contains("missing label `run`"), "{args:?}: {out}");
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["run", &path(policy_path("pod-privileged")), "-r", "-"])
        .env("PALISADE_CACHE_DIR", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        &std::fs::read(fixture_path("pod-create-privileged.json")).unwrap(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"allowed\": false"));
}

#[test]
fn mistakes_get_errors_that_say_what_is_wrong() {
    let labels = path(policy_path("required-labels"));
    let request = path(fixture_path("pod-delete.json"));
    // A settings file name with a typo is not inline YAML.
    let err = failure_stderr(&["run", &labels, "-r", &request, "-s", "./setings.yml"]);
    assert!(
        err.contains("settings file ./setings.yml does not exist"),
        "{err}"
    );
    let err = failure_stderr(&[
        "run",
        &labels,
        "-r",
        &request,
        "--settings-path",
        "/nonexistent.yml",
    ]);
    assert!(
        err.contains("cannot read settings file /nonexistent.yml"),
        "{err}"
    );
    // The OS error is said once.
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    let err = failure_stderr(&[
        "run",
        &labels,
        "-r",
        &request,
        "--settings-json",
        "labels: [a]",
    ]);
    assert!(err.contains("--settings-json is not JSON"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let not_a_request = dir.path().join("pod.json");
    std::fs::write(&not_a_request, r#"{"apiVersion": "v1", "kind": "Pod"}"#).unwrap();
    let err = failure_stderr(&["run", &labels, "-r", &path(not_a_request)]);
    assert!(
        err.contains("neither an AdmissionReview") && err.contains("nor an AdmissionRequest"),
        "{err}"
    );

    // A panicking policy: its message, on one line.
    let err = failure_stderr(&["run", &path(policy_path("panics")), "-r", &request]);
    assert!(
        err.contains("policy trapped: panicked at") && err.contains("index out of bounds"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // Metadata is checked as kwctl checks it.
    let metadata = dir.path().join("metadata.yml");
    let out = path(dir.path().join("out.wasm"));
    for (text, expected) in [
        (
            "rule:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [CREATE]\nmutating: false\n",
            "unknown field `rule`; did you mean `rules`?",
        ),
        (
            "rules:\n  - apiGroups: [\"\"]\n    apiVersions: [v1]\n    resources: [pods]\n    operations: [CRATE]\nmutating: false\n",
            "`CRATE` is not an operation",
        ),
    ] {
        std::fs::write(&metadata, text).unwrap();
        let err = failure_stderr(&[
            "annotate",
            &labels,
            "--metadata-path",
            &path(metadata.clone()),
            "--output-path",
            &out,
        ]);
        assert!(err.contains(expected), "{err}");
    }
    let store = path(dir.path().join("store"));
    let err = failure_stderr(&["pull", "127.0.0.1:9/Policies/x:v1", "--store-dir", &store]);
    assert!(err.contains("repository names are lowercase"), "{err}");
    let err = failure_stderr(&["bench", &labels, "-r", &request, "--iterations", "0"]);
    assert!(err.contains("--iterations"), "{err}");
}

//! The `policy-server` binary as a process: flags, signals, shutdown.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use common::pki::TestCa;
use common::server::{client, post_fixture, write_policies};

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

struct Process {
    child: Child,
    base: String,
    probe: String,
    ca: TestCa,
    _dir: tempfile::TempDir,
}

/// A test that fails before it stops its server does not leave it running.
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn(yaml: &str, extra_env: &[(&str, &str)]) -> Process {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("process test CA");
    let (cert, key) = ca.leaf("policy-server");
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    let policies = write_policies(dir.path(), yaml);
    let (port, probe_port) = (free_port(), free_port());
    // Configured the way the controller does it: environment variables.
    let mut command = Command::new(env!("CARGO_BIN_EXE_policy-server"));
    command
        .env("KUBEWARDEN_BIND_ADDRESS", "127.0.0.1")
        .env("KUBEWARDEN_PORT", port.to_string())
        .env("KUBEWARDEN_READINESS_PROBE_PORT", probe_port.to_string())
        .env("KUBEWARDEN_CERT_FILE", dir.path().join("tls.crt"))
        .env("KUBEWARDEN_KEY_FILE", dir.path().join("tls.key"))
        .env("KUBEWARDEN_POLICIES", &policies)
        .env("KUBEWARDEN_POLICIES_DOWNLOAD_DIR", dir.path())
        .env("KUBEWARDEN_LOG_FMT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap();
    let probe = format!("http://127.0.0.1:{probe_port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = common::server::get(format!("{probe}/readiness")).await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "policy-server never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Process {
        child,
        base: format!("https://127.0.0.1:{port}"),
        probe,
        ca,
        _dir: dir,
    }
}

const SLOW: &str = "slow:\n  module: file://{POLICIES}/endless-loop.wasm\n  timeoutEvalSeconds: 1\nprivileged:\n  module: file://{POLICIES}/pod-privileged.wasm\n";

/// `n` requests to the looping policy, sent at once.
fn ask_slow(
    c: &reqwest::Client,
    p: &Process,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(u16, serde_json::Value)>> {
    (0..n)
        .map(|_| {
            let c = c.clone();
            let url = format!("{}/validate/slow", p.base);
            tokio::spawn(
                async move { post_fixture(&c, &url, "pod-create-unprivileged.json").await },
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let mut p = spawn(SLOW, &[("KUBEWARDEN_WORKERS", "8")]).await;
    let c = client(&p.ca.pem());
    let in_flight = ask_slow(&c, &p, 8);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&p.child, "TERM");
    for request in in_flight {
        let (status, body) = request
            .await
            .expect("no connection error for a request in flight");
        assert_eq!(status, 200);
        assert!(body["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("time limit"));
    }
    let status = tokio::task::spawn_blocking(move || p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status}");
}

/// With more evaluations at their deadline in flight than there are CPUs,
/// the probes and other policies are still answered: no evaluation holds a
/// thread of the async runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_policies_leave_the_server_responsive() {
    let yaml = SLOW.replace("timeoutEvalSeconds: 1", "timeoutEvalSeconds: 4");
    let p = spawn(&yaml, &[("KUBEWARDEN_WORKERS", "64")]).await;
    let c = client(&p.ca.pem());
    let cpus = std::thread::available_parallelism().unwrap().get();
    let looping = ask_slow(&c, &p, cpus + 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = common::server::get(format!("{}/readiness", p.probe))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let (status, body) = post_fixture(
        &c,
        &format!("{}/validate/privileged", p.base),
        "pod-create-privileged.json",
    )
    .await;
    assert_eq!(
        (status, body["response"]["allowed"].clone()),
        (200, false.into())
    );
    assert!(
        looping.iter().all(|request| !request.is_finished()),
        "the looping evaluations were still running when the others were answered"
    );
    for request in looping {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200);
        assert!(
            body["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("time limit"),
            "{body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_json_logs_carry_the_request() {
    let mut p = spawn(SLOW, &[("KUBEWARDEN_ENABLE_METRICS", "true")]).await;
    let c = client(&p.ca.pem());
    let (_, body) = post_fixture(
        &c,
        &format!("{}/validate/privileged", p.base),
        "pod-create-privileged.json",
    )
    .await;
    assert_eq!(body["response"]["allowed"], false);
    signal(&p.child, "HUP");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, body) = post_fixture(
        &c,
        &format!("{}/validate/privileged", p.base),
        "pod-create-unprivileged.json",
    )
    .await;
    assert_eq!(
        body["response"]["allowed"], true,
        "still serving after the reload"
    );
    let metrics = common::server::get_text(format!("{}/metrics", p.probe)).await;
    assert!(metrics.contains(r#"policy_name="privileged""#));
    // Kubewarden's names and labels, for dashboards built for it.
    assert!(
        metrics.contains(r#"kubewarden_policy_evaluations_total{policy_name="privileged",policy_mode="protect",resource_kind="Pod",resource_request_operation="CREATE",accepted="false",mutated="false",request_origin="validate",resource_namespace="default",error_code="400"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("kubewarden_policy_evaluation_latency_milliseconds_bucket"),
        "{metrics}"
    );
    // Bucket bounds as typed, not float noise.
    assert!(metrics.contains(r#"le="0.0025""#), "{metrics}");
    assert!(!metrics.contains("00000000"), "{metrics}");
    signal(&p.child, "TERM");
    let output = tokio::task::spawn_blocking(move || {
        p.child.wait().unwrap();
        let mut logs = String::new();
        std::io::Read::read_to_string(p.child.stderr.as_mut().unwrap(), &mut logs).unwrap();
        logs
    })
    .await
    .unwrap();
    let evaluated = output
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "evaluated")
        .unwrap_or_else(|| panic!("no evaluation log line in:\n{output}"));
    assert_eq!(evaluated["uid"], "61b212d3-f615-5e7b-b684-c60dbe71a3d4");
    assert_eq!(evaluated["policy"], "privileged");
    assert_eq!(evaluated["allowed"], false);
    assert!(evaluated["latency_us"].as_u64().is_some());
    assert!(output.contains("SIGHUP: reloading policies"), "{output}");
    assert!(output.contains("new policy set serving"), "{output}");
}

#[test]
fn kubewarden_flags_help_and_startup_errors() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_policy-server"))
            .args(args)
            .env_remove("KUBEWARDEN_VERIFICATION_CONFIG_PATH")
            .output()
            .unwrap()
    };
    let help = run(&["--help"]);
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(help.starts_with("Palisade's admission webhook"), "{help}");
    for line in help.lines() {
        assert!(line.chars().count() <= 80, "wider than 80 columns: {line}");
    }
    for flag in [
        "--enable-metrics",
        "--log-no-color",
        "--ignore-kubernetes-connection-failure",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }

    // Signature verification is asked for but not available: no start.
    let out = run(&["--verification-path", "/etc/verification.yml"]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("refusing to start"), "{err}");

    // A missing policies file: said once, the OS error once.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("policies.yml");
    let out = run(&[
        "--addr",
        "127.0.0.1",
        "--port",
        &free_port().to_string(),
        "--readiness-probe-port",
        &free_port().to_string(),
        "--enable-metrics",
        "--log-no-color",
        "--policies",
        missing.to_str().unwrap(),
        "--policies-download-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    let failures: Vec<&str> = err.lines().filter(|l| l.contains("cannot read")).collect();
    assert_eq!(failures.len(), 1, "{err}");
    assert_eq!(failures[0].matches("os error 2").count(), 1, "{err}");
    assert!(!err.contains('\u{1b}'), "no colour codes: {err}");
}

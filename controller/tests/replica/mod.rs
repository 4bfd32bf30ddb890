//! The `controller` binary as a test runs it: one replica per process,
//! against a test API server, in out-of-cluster mode (webhooks registered
//! at an unused loopback URL), with its metrics on a loopback port.

// Each test file that includes this module uses a different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_testkit as common;

/// How to start one replica again.
#[derive(Clone)]
pub struct ReplicaSpec {
    pub identity: &'static str,
    kubeconfig: PathBuf,
    store: PathBuf,
    metrics_port: u16,
}

impl ReplicaSpec {
    pub fn new(server: &common::ApiServer, identity: &'static str, store: &Path) -> Self {
        Self {
            identity,
            kubeconfig: server.kubeconfig(),
            store: store.join(identity),
            metrics_port: common::free_port(),
        }
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.metrics_port)
    }

    fn spawn(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_controller"))
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args([
                "--namespace=kubewarden",
                "--webhook-url=https://127.0.0.1:9/{policy-server}",
                &format!("--metrics-addr=127.0.0.1:{}", self.metrics_port),
                &format!("--store-dir={}", self.store.display()),
                &format!("--identity={}", self.identity),
                "--log-level=info",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

/// One replica process; killed when dropped.
pub struct Replica {
    pub spec: ReplicaSpec,
    pub child: Child,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    pub fn start(server: &common::ApiServer, identity: &'static str, store: &Path) -> Self {
        let spec = ReplicaSpec::new(server, identity, store);
        let child = spec.spawn();
        Self { spec, child }
    }

    /// SIGTERM, as the kubelet sends it, and the exit status (30 s at most).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                self.spec.identity
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL: the process ends wherever it was, as on a lost node.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Two replicas, once one holds the lease: `(replicas, leader, follower)`
/// with the indices of the leader and the other one.
pub async fn start_pair(server: &common::ApiServer, store: &Path) -> ([Replica; 2], usize, usize) {
    let replicas = [
        Replica::start(server, "replica-a", store),
        Replica::start(server, "replica-b", store),
    ];
    let holder =
        common::lease_holder(&server.client(), "kubewarden", "palisade-controller", 30).await;
    let leader = replicas
        .iter()
        .position(|r| r.spec.identity == holder)
        .unwrap();
    (replicas, leader, 1 - leader)
}

/// A replica restarted whenever it exits, as the kubelet restarts a pod's
/// container (restartPolicy Always); it counts the restarts.
pub struct Supervised {
    stop: Arc<AtomicBool>,
    pub restarts: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Supervised {
    pub fn start(server: &common::ApiServer, identity: &'static str, store: &Path) -> Self {
        let spec = ReplicaSpec::new(server, identity, store);
        let child = Arc::new(Mutex::new(spec.spawn()));
        let stop = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, restarts) = (stop.clone(), restarts.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    {
                        let mut child = child.lock().unwrap();
                        if let Some(status) = child.try_wait().unwrap() {
                            eprintln!("{} exited with {status}: restarting it", spec.identity);
                            restarts.fetch_add(1, Ordering::SeqCst);
                            *child = spec.spawn();
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut child = child.lock().unwrap();
                let _ = child.kill();
                let _ = child.wait();
            })
        };
        Self {
            stop,
            restarts,
            thread: Some(thread),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sets PolicyServer `name` to `replicas` and waits until its Deployment
/// has them: a change reconciled by whichever replica leads now.
pub async fn scale_and_wait(client: &kube::Client, name: &str, replicas: i32) {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Api, Patch, PatchParams};
    let servers: Api<palisade_controller::crd::PolicyServer> = Api::all(client.clone());
    servers
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "kubewarden");
    let deployment = format!("policy-server-{name}");
    common::eventually(
        60,
        &format!("{deployment} to scale to {replicas}"),
        || async {
            let found = deployments.get_opt(&deployment).await.ok()??;
            (found.spec.replicas == Some(replicas)).then_some(())
        },
    )
    .await;
}

/// PolicyServer reconciliations counted by the replica's metrics (none when
/// they cannot be read).
pub async fn reconciled_policy_servers(replica: &ReplicaSpec) -> Option<f64> {
    let text = common::server::get(&replica.metrics_url())
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| {
                l.starts_with("palisade_controller_reconciliations_total{kind=\"PolicyServer\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

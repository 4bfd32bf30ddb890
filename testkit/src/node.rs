//! A real single-node cluster (`scripts/node.sh`): kubelet, containerd and
//! a control plane in their own network namespace, reached from the test
//! through relays on loopback. Pods really run, from the project's images.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::paths::tool_bin;

/// A fresh node, brought up for a test and taken down when the test is
/// done (a node somebody started by hand is never touched: the test fails
/// and says so).
pub struct Node {
    env: BTreeMap<String, String>,
    /// Held while the test uses the node: one node per machine, so one
    /// test on it at a time, whichever clone or process runs it.
    _lock: File,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

/// Runs a command (a project script, helm, kubectl); its output, stdout
/// then stderr, and a failure naming `what` with that output.
pub fn run(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{what} failed:\n{text}");
    text
}

impl Node {
    /// Brings the node up (waits for another test's node to be released
    /// first). Fails, never skips, when it cannot start, with the script's
    /// explanation.
    pub fn up() -> Self {
        let lock = File::create("/run/palisade-node.test.lock")
            .expect("the real-node tests need root (/run, network namespaces, mounts)");
        lock.lock().expect("cannot lock the real-node test lock");
        let bin_dir = tool_bin("kubelet")
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let node = |command: &str| {
            let mut node = Command::new(script("node.sh"));
            node.arg(command)
                .env("PALISADE_BIN_DIR", &bin_dir)
                .env("NODE_OWNER", "test");
            node
        };
        let up = node("status").output().is_ok_and(|o| o.status.success());
        if up {
            // A node a test left behind (killed before its teardown) is
            // replaced; one somebody started by hand is theirs.
            let owner = std::fs::read_to_string(node_dir().join("owner")).unwrap_or_default();
            assert_eq!(
                owner.trim(),
                "test",
                "a node started by hand is up: the real-node tests need a fresh one (make cluster-down)"
            );
            run(&mut node("down"), "scripts/node.sh down");
        }
        run(&mut node("up"), "scripts/node.sh up");
        let env_text = std::fs::read_to_string(node_dir().join("env"))
            .expect("scripts/node.sh up wrote no env file");
        let env = env_text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { env, _lock: lock }
    }

    /// A value `scripts/node.sh` recorded (`KUBECONFIG`, `NODE_IP`,
    /// `NODE_REGISTRY`, `NODE_REGISTRY_FROM_HOST`).
    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("the node's env file has no {key}"))
    }

    /// An admin client, through the relay on loopback.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.get("KUBECONFIG")).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// Builds the project's images from the release binaries next to the
    /// running test (`cargo test --release` built them), imports them into
    /// the node's containerd (`localhost/palisade/<name>:<version>`) and
    /// pushes them to the node's registry (`<NODE_REGISTRY>/palisade/...`,
    /// for pods that pull); the imported references.
    pub fn import_and_push_images(&self, names: &[&str]) -> Vec<String> {
        let exe = std::env::current_exe().unwrap();
        let bin_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from target/<profile>/deps");
        let out = tempfile::tempdir().unwrap();
        let built = run(
            Command::new(script("build-images.sh"))
                .arg(bin_dir)
                .arg(out.path())
                .args(names),
            "scripts/build-images.sh",
        );
        let mut references = Vec::new();
        for line in built.lines() {
            let mut fields = line.split_whitespace();
            let (Some(reference), Some(_digest), Some(tar)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            run(
                Command::new(script("node.sh")).args(["import", tar]),
                "scripts/node.sh import",
            );
            let pushed = reference.replacen(
                "localhost/",
                &format!("{}/", self.get("NODE_REGISTRY_FROM_HOST")),
                1,
            );
            run(
                Command::new(script("push-image.sh")).args([tar, &pushed, "--plain-http"]),
                "scripts/push-image.sh",
            );
            references.push(reference.to_owned());
        }
        assert_eq!(references.len(), names.len(), "images built: {built}");
        references
    }

    /// The end of a node daemon's log, for failure messages.
    pub fn log(&self, daemon: &str) -> String {
        let text = std::fs::read_to_string(node_dir().join("logs").join(format!("{daemon}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines
            .get(lines.len().saturating_sub(40)..)
            .unwrap_or_default()
            .join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new(script("node.sh")).arg("down").output();
    }
}

fn node_dir() -> PathBuf {
    std::env::var_os("NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/palisade-node"))
}

//! Where the tests find what `make test` built or installed. Each has one
//! environment variable (set by the Makefile) and one default.

use std::path::PathBuf;

/// The user's cache directory (`XDG_CACHE_HOME`, or `~/.cache`).
fn cache_home() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        })
}

fn existing(path: PathBuf, how: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {how}", path.display());
    path
}

/// A sample policy built by `make policies` (`PALISADE_POLICY_DIR`,
/// default `$CARGO_TARGET_DIR/policies`).
pub fn policy_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("PALISADE_POLICY_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("policies")))
        .unwrap_or_else(|| cache_home().join("palisade/target/policies"));
    existing(
        dir.join(format!("{name}.wasm")),
        "build the sample policies first with `make policies`",
    )
}

/// A fixture AdmissionReview (`FIXTURES`, default the repository's
/// `fixtures/admission`).
pub fn fixture_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/admission"));
    existing(dir.join(name), "set FIXTURES to the fixtures directory")
}

/// A tool the tests run (registry, etcd, kube-apiserver...), built by the
/// project's scripts into `PALISADE_BIN_DIR` (default
/// `~/.cache/palisade/bin`).
pub fn tool_bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("PALISADE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_home().join("palisade/bin"));
    existing(
        dir.join(name),
        "run scripts/ensure-go-tools.sh and scripts/ensure-kube.sh (make test does)",
    )
}

//! Loading: capability grants, bad modules, bad settings, the precompiled cache.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use common::{fixture, load, loader, policy_path};
use palisade_host::{
    CompileCache, CompileOrigin, EngineConfig, Grants, LoadError, PolicyConfig, PolicyEngine,
    PolicyLoader, SettingsError,
};

fn with_grants(name: &str, grants: Grants) -> PolicyConfig {
    let mut config = PolicyConfig::new(name);
    config.grants = grants;
    config
}

#[test]
fn an_ungranted_capability_import_fails_to_load_and_names_the_interface() {
    let err = loader()
        .load_file(&policy_path("dns-lookup"), PolicyConfig::new("dns-lookup"))
        .unwrap_err();
    assert!(
        matches!(err, LoadError::CapabilityNotGranted { ref interface, .. } if interface.starts_with("palisade:policy/net@")),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("palisade:policy/net@0.1.0"),
        "{err}"
    );
    // Granting another capability does not help.
    let err = loader()
        .load_file(
            &policy_path("dns-lookup"),
            with_grants("dns-lookup", Grants::new(["oci/*"])),
        )
        .unwrap_err();
    assert!(
        matches!(err, LoadError::CapabilityNotGranted { .. }),
        "{err:?}"
    );
}

#[test]
fn a_granted_capability_answers() {
    for grant in ["net/*", "net/v1/dns_lookup_host", "*"] {
        let policy = load(
            "dns-lookup",
            with_grants("dns-lookup", Grants::new([grant])),
        );
        let verdict = policy.validate(&fixture("pod-delete.json"), "{}").unwrap();
        assert!(verdict.accepted, "{grant}: {:?}", verdict.message);
        assert!(
            verdict
                .warnings
                .iter()
                .any(|w| w.contains("127.0.0.1") || w.contains("::1")),
            "{grant}: {:?}",
            verdict.warnings
        );
    }
}

#[test]
fn a_call_outside_the_granted_paths_gets_a_not_granted_error_value() {
    // The interface is linked (one of its calls is granted) but this call is not.
    let policy = load(
        "dns-lookup",
        with_grants("dns-lookup", Grants::new(["net/v2/something_else"])),
    );
    let verdict = policy.validate(&fixture("pod-delete.json"), "{}").unwrap();
    assert!(!verdict.accepted);
    assert!(verdict
        .message
        .unwrap()
        .contains("net/v1/dns_lookup_host` is not granted"));
}

/// The calls of `host-calls` that reach every capability import but `net`,
/// each through the SDK function for it.
fn every_call() -> serde_json::Value {
    serde_json::json!({"calls": [
        {"log": {"level": 2, "message": "hello", "fields": [["k", "v"]]}},
        {"get_resource": {"api_version": "v1", "kind": "Pod", "name": "p", "namespace": "default"}},
        {"list_resources": {"api_version": "v1", "kind": "Pod", "namespace": "default"}},
        {"list_resources": {"api_version": "v1", "kind": "Pod"}},
        {"can_i": "{}"},
        {"manifest_digest": "registry.example.com/app:1"},
        {"manifest": "registry.example.com/app:1"},
        {"verify": "{}"},
        {"is_certificate_trusted": "{}"},
    ]})
}

fn outcomes(grants: &[&str]) -> String {
    let policy = load(
        "host-calls",
        with_grants("host-calls", Grants::new(grants.to_vec())),
    );
    let verdict = policy
        .validate(&fixture("pod-delete.json"), &every_call().to_string())
        .unwrap();
    assert!(verdict.accepted, "{:?}", verdict.message);
    verdict.warnings.join("; ")
}

#[test]
fn every_sdk_capability_function_reaches_its_grant_check() {
    // Everything granted, no cluster and no registry backend here: each call
    // passes its grant check and answers "not available"; the certificate
    // check runs in the host and refuses the empty request.
    assert_eq!(
        outcomes(&["kubernetes/*", "oci/*", "crypto/*"]),
        "logged, not-available, not-available, not-available, not-available, not-available, \
         not-available, not-available, failed"
    );
    // One call per interface granted: the others are refused by path, list
    // by namespace and list across namespaces separately.
    assert_eq!(
        outcomes(&[
            "kubernetes/list_resources_all",
            "oci/v1/oci_manifest",
            "crypto/v1/is_certificate_trusted"
        ]),
        "logged, not-granted, not-granted, not-available, not-granted, not-granted, \
         not-available, not-granted, failed"
    );
}

#[test]
fn garbage_truncated_and_core_modules_are_clear_errors() {
    let err = loader()
        .load(b"this is not wasm", "garbage.wasm", PolicyConfig::new("g"))
        .unwrap_err();
    assert!(matches!(err, LoadError::NotWasm { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.wasm"));

    let full = std::fs::read(policy_path("pod-privileged")).unwrap();
    let truncated = &full[..full.len() / 2];
    let err = loader()
        .load(truncated, "truncated.wasm", PolicyConfig::new("t"))
        .unwrap_err();
    assert!(matches!(err, LoadError::InvalidModule { .. }), "{err:?}");

    let core = wat::parse_str("(module (func (export \"run\")))").unwrap();
    let err = loader()
        .load(&core, "core.wasm", PolicyConfig::new("c"))
        .unwrap_err();
    assert!(matches!(err, LoadError::NotAPolicy { .. }), "{err:?}");
    assert!(err.to_string().contains("cargo component build"), "{err}");

    let err = loader()
        .load_file("/nonexistent/policy.wasm".as_ref(), PolicyConfig::new("m"))
        .unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err:?}");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let other = wat::parse_str("(component (core module) )").unwrap();
    let err = loader()
        .load(&other, "other.wasm", PolicyConfig::new("o"))
        .unwrap_err();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{err:?}");
}

#[test]
fn settings_that_are_not_json_are_refused_before_the_policy_runs() {
    let policy = load("pod-privileged", PolicyConfig::new("pod-privileged"));
    for bad in ["{", "not json", "{\"a\": }"] {
        assert!(
            matches!(
                policy.validate_settings(bad),
                Err(SettingsError::NotJson(_))
            ),
            "{bad}"
        );
    }
    assert!(policy.validate_settings("{}").is_ok());
}

#[test]
fn a_second_start_uses_the_precompiled_cache_and_survives_a_damaged_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let path = policy_path("pod-privileged");
    let start = |name: &str| {
        // A new engine and loader each time, as after a restart.
        let engine = PolicyEngine::new(EngineConfig::default()).unwrap();
        let loader = PolicyLoader::with_cache(engine, CompileCache::new(dir.path()).unwrap());
        loader.load_file(&path, PolicyConfig::new(name)).unwrap()
    };
    let first = start("first");
    assert_eq!(first.compile_origin(), CompileOrigin::Compiled);
    let second = start("second");
    assert_eq!(
        second.compile_origin(),
        CompileOrigin::Cache,
        "compilation must be skipped"
    );
    assert!(
        second
            .validate(&fixture("pod-create-unprivileged.json"), "{}")
            .unwrap()
            .accepted
    );

    let artifacts: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    assert!(artifacts[0].to_string_lossy().contains(first.digest()));
    std::fs::write(&artifacts[0], b"damaged").unwrap();
    let third = start("third");
    assert_eq!(third.compile_origin(), CompileOrigin::Compiled);
    assert!(
        !third
            .validate(&fixture("pod-create-privileged.json"), "{}")
            .unwrap()
            .accepted
    );
    assert_eq!(
        start("fourth").compile_origin(),
        CompileOrigin::Cache,
        "the artifact was rewritten"
    );
}

#[test]
fn policies_of_one_set_share_the_code_of_a_module() {
    let engine = PolicyEngine::new(EngineConfig::default()).unwrap();
    let set = PolicyLoader::new(engine).sharing_code();
    let load = |name: &str, module: &str| {
        set.load_file(&policy_path(module), PolicyConfig::new(name))
            .unwrap()
    };
    let first = load("first", "pod-privileged");
    let second = load("second", "pod-privileged");
    let wapc = load("legacy", "pod-privileged-wapc-unknown");
    let legacy_again = load("legacy-again", "pod-privileged-wapc-unknown");
    assert_eq!(first.compile_origin(), CompileOrigin::Compiled);
    assert_eq!(second.compile_origin(), CompileOrigin::Shared);
    assert_eq!(wapc.compile_origin(), CompileOrigin::Compiled);
    assert_eq!(legacy_again.compile_origin(), CompileOrigin::Shared);
    // Shared code, separate policies: each evaluates on its own instances.
    for policy in [&first, &second, &wapc, &legacy_again] {
        assert!(
            !policy
                .validate(&fixture("pod-create-privileged.json"), "{}")
                .unwrap()
                .accepted
        );
    }
    // Another set shares nothing with this one.
    let other = PolicyLoader::new(PolicyEngine::new(EngineConfig::default()).unwrap())
        .sharing_code()
        .load_file(&policy_path("pod-privileged"), PolicyConfig::new("other"))
        .unwrap();
    assert_eq!(other.compile_origin(), CompileOrigin::Compiled);
}

#[test]
fn policies_loading_a_module_at_once_compile_it_once() {
    let engine = PolicyEngine::new(EngineConfig::default()).unwrap();
    let set = PolicyLoader::new(engine).sharing_code();
    let origins: Vec<CompileOrigin> = std::thread::scope(|scope| {
        let loads: Vec<_> = (0..6)
            .map(|n| {
                let set = &set;
                scope.spawn(move || {
                    set.load_file(
                        &policy_path("pod-privileged"),
                        PolicyConfig::new(format!("p{n}")),
                    )
                    .unwrap()
                    .compile_origin()
                })
            })
            .collect();
        loads.into_iter().map(|l| l.join().unwrap()).collect()
    });
    let compiled = origins
        .iter()
        .filter(|o| **o == CompileOrigin::Compiled)
        .count();
    assert_eq!(compiled, 1, "{origins:?}");
    assert!(origins
        .iter()
        .all(|o| matches!(o, CompileOrigin::Compiled | CompileOrigin::Shared)));
}

#[test]
fn a_component_asks_the_host_whether_a_certificate_is_trusted() {
    let root = common::pki::TestCa::new("root");
    let other = common::pki::TestCa::new("other");
    let (cert, _) = root.leaf("signer");
    let request = |chain: &str| {
        serde_json::json!({
            "cert": {"encoding": "Pem", "data": cert.as_bytes()},
            "cert_chain": [{"encoding": "Pem", "data": chain.as_bytes()}],
            "not_after": null,
        })
        .to_string()
    };
    let settings = serde_json::json!({"calls": [
        {"is_certificate_trusted": request(&root.pem())},
        {"is_certificate_trusted": request(&other.pem())},
    ]});
    let policy = load(
        "host-calls",
        with_grants(
            "host-calls",
            Grants::new(["kubernetes/can_i", "oci/v1/manifest_digest", "crypto/*"]),
        ),
    );
    let verdict = policy
        .validate(&fixture("pod-delete.json"), &settings.to_string())
        .unwrap();
    assert_eq!(verdict.warnings, ["ok trusted=true, ok trusted=false"]);
}

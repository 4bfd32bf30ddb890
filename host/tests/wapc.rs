//! Existing Kubewarden policies run unchanged: the legacy pod-privileged
//! built with the upstream SDK for wasm32-wasip1 and wasm32-unknown-unknown
//! (waPC), the WASI-mode one, and hand-written guests that abuse the ABI.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use common::{fixture, load, loader};
use palisade_host::{EvalError, Grants, PolicyConfig, PolicyKind, PolicyLimits, SettingsError};
use serde_json::json;

const WAPC_BUILDS: [&str; 2] = ["pod-privileged-wapc-wasip1", "pod-privileged-wapc-unknown"];

fn config(name: &str, grants: &[&str]) -> PolicyConfig {
    let mut c = PolicyConfig::new(name);
    c.grants = Grants::new(grants.iter().copied());
    c
}

#[test]
fn legacy_wapc_policy_gives_the_right_verdicts_from_both_targets() {
    for name in WAPC_BUILDS {
        let policy = load(name, PolicyConfig::new(name));
        assert_eq!(policy.kind(), PolicyKind::Wapc);
        assert_eq!(policy.protocol_version().unwrap().unwrap(), "v1");
        assert!(policy.metadata().unwrap().mutating);
        for (fixture_name, allowed) in [
            ("pod-create-privileged.json", false),
            ("pod-create-privileged-init-container.json", false),
            ("pod-update-add-privileged.json", false),
            ("pod-create-unprivileged.json", true),
            ("pod-delete.json", true),
            ("deployment-create.json", true),
            ("pod-create-large.json", true),
        ] {
            let verdict = policy.validate(&fixture(fixture_name), "{}").unwrap();
            assert_eq!(
                verdict.accepted, allowed,
                "{name} on {fixture_name}: {:?}",
                verdict.message
            );
        }
        let rejected = policy
            .validate(&fixture("pod-create-privileged.json"), "{}")
            .unwrap();
        assert_eq!(
            rejected.message.as_deref(),
            Some("privileged containers are not allowed: tools")
        );
    }
}

#[test]
fn legacy_wapc_mutation_becomes_the_expected_patch() {
    for name in WAPC_BUILDS {
        let policy = load(name, PolicyConfig::new(name));
        let settings = r#"{"add_label": {"key": "owner", "value": "team-a"}}"#;
        policy.validate_settings(settings).unwrap();
        let request = fixture("pod-create-unprivileged.json");
        let response = policy
            .validate(&request, settings)
            .unwrap()
            .into_response(&request);
        assert!(response.allowed);
        let patch = serde_json::to_value(response.decoded_patch().unwrap()).unwrap();
        assert_eq!(
            patch,
            json!([{"op": "add", "path": "/metadata/labels/owner", "value": "team-a"}]),
            "{name}"
        );
    }
}

#[test]
fn legacy_wapc_settings_validation() {
    for name in WAPC_BUILDS {
        let policy = load(name, PolicyConfig::new(name));
        assert!(policy.validate_settings("{}").is_ok());
        let err = policy
            .validate_settings(r#"{"add_label": {"key": "", "value": "x"}}"#)
            .unwrap_err();
        assert!(
            matches!(err, SettingsError::Rejected(ref m) if m.contains("add_label.key must not be empty")),
            "{err:?}"
        );
        let err = policy
            .validate_settings(r#"{"no_such_setting": 1}"#)
            .unwrap_err();
        assert!(
            matches!(err, SettingsError::Rejected(ref m) if m.contains("no_such_setting")),
            "{err:?}"
        );
    }
}

#[test]
fn host_capabilities_are_granted_or_refused() {
    let settings = r#"{"resolve": "localhost"}"#;
    let request = fixture("pod-delete.json");
    let refused = load("pod-privileged-wapc-wasip1", PolicyConfig::new("refused"));
    let warning = &refused.validate(&request, settings).unwrap().warnings[0];
    assert!(
        warning.contains("net/v1/dns_lookup_host") && warning.contains("not granted"),
        "{warning}"
    );

    let granted = load(
        "pod-privileged-wapc-wasip1",
        config("granted", &["net/v1/dns_lookup_host"]),
    );
    let warning = &granted.validate(&request, settings).unwrap().warnings[0];
    assert!(
        warning.starts_with("localhost resolves to") && warning.contains("127.0.0.1"),
        "{warning}"
    );
}

#[test]
fn wasi_mode_policy_gives_the_right_verdicts() {
    let policy = load("pod-privileged-wasi", PolicyConfig::new("wasi"));
    assert_eq!(policy.kind(), PolicyKind::Wasi);
    for (fixture_name, allowed) in [
        ("pod-create-privileged.json", false),
        ("pod-create-privileged-init-container.json", false),
        ("pod-create-unprivileged.json", true),
        ("pod-delete.json", true),
    ] {
        assert_eq!(
            policy
                .validate(&fixture(fixture_name), "{}")
                .unwrap()
                .accepted,
            allowed,
            "{fixture_name}"
        );
    }
    assert!(policy.validate_settings("{}").is_ok());
    let err = policy.validate_settings(r#"{"x": 1}"#).unwrap_err();
    assert!(
        matches!(err, SettingsError::Rejected(ref m) if m.contains("no settings")),
        "{err:?}"
    );
}

/// A waPC guest around `body`, run as `__guest_call`, with one page of memory.
fn guest(imports: &str, body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
            (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
            (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
            (import "wapc" "__host_call" (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
            (import "wapc" "__host_response" (func $host_response (param i32)))
            (import "wapc" "__host_response_len" (func $host_response_len (result i32)))
            (import "wapc" "__host_error" (func $host_error (param i32)))
            (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
            (import "wapc" "__console_log" (func $console_log (param i32 i32)))
            {imports}
            (memory (export "memory") 1)
            (data (i32.const 0) "kubewardentracinglog{{}}")
            (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
              {body}
              i32.const 1))"#
    ))
    .unwrap()
}

#[test]
fn guests_passing_bad_pointers_or_lengths_trap_cleanly() {
    let cases = [
        ("__guest_request op past the end", "(call $guest_request (i32.const 65530) (i32.const 0))"),
        ("__guest_request payload past the end", "(call $guest_request (i32.const 0) (i32.const -1))"),
        ("__guest_response negative length", "(call $guest_response (i32.const 0) (i32.const -1))"),
        ("__guest_response past the end", "(call $guest_response (i32.const 65000) (i32.const 1000))"),
        ("__guest_error negative length", "(call $guest_error (i32.const 0) (i32.const -2147483648))"),
        ("__guest_error negative pointer", "(call $guest_error (i32.const -1) (i32.const 4))"),
        ("__console_log negative length", "(call $console_log (i32.const 0) (i32.const -1))"),
        ("__console_log past the end", "(call $console_log (i32.const 65535) (i32.const 2))"),
        ("__host_call bad binding", "(drop (call $host_call (i32.const 0) (i32.const -1) (i32.const 10) (i32.const 7) (i32.const 17) (i32.const 3) (i32.const 20) (i32.const 2)))"),
        ("__host_call bad namespace", "(drop (call $host_call (i32.const 0) (i32.const 10) (i32.const 70000) (i32.const 7) (i32.const 17) (i32.const 3) (i32.const 20) (i32.const 2)))"),
        ("__host_call bad operation", "(drop (call $host_call (i32.const 0) (i32.const 10) (i32.const 10) (i32.const 7) (i32.const -5) (i32.const 3) (i32.const 20) (i32.const 2)))"),
        ("__host_call bad payload", "(drop (call $host_call (i32.const 0) (i32.const 10) (i32.const 10) (i32.const 7) (i32.const 17) (i32.const 3) (i32.const 20) (i32.const -1)))"),
        ("__host_response negative pointer", "(drop (call $host_call (i32.const 0) (i32.const 10) (i32.const 10) (i32.const 7) (i32.const 17) (i32.const 3) (i32.const 20) (i32.const 2))) (call $host_response (i32.const -1))"),
        ("__host_error past the end", "(drop (call $host_call (i32.const 0) (i32.const 3) (i32.const 10) (i32.const 7) (i32.const 17) (i32.const 3) (i32.const 20) (i32.const 2))) (call $host_error (i32.const 65535))"),
    ];
    let request = fixture("pod-create-unprivileged.json");
    for (name, body) in cases {
        let policy = loader()
            .load(&guest("", body), name, PolicyConfig::new(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let err = policy.validate(&request, "{}").unwrap_err();
        assert!(matches!(err, EvalError::Trap { .. }), "{name}: {err:?}");
        assert!(
            err.to_string().contains("outside the guest memory"),
            "{name}: {err}"
        );
    }
    // The host keeps serving.
    let healthy = load("pod-privileged-wapc-wasip1", PolicyConfig::new("healthy"));
    assert!(
        !healthy
            .validate(&fixture("pod-create-privileged.json"), "{}")
            .unwrap()
            .accepted
    );
}

#[test]
fn random_pointers_and_lengths_never_panic_the_host() {
    // A deterministic generator: the same inputs on every run.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        [
            0i32,
            1,
            4,
            65535,
            65536,
            -1,
            i32::MIN,
            i32::MAX,
            (state >> 33) as i32,
        ][(state % 9) as usize]
    };
    let request = fixture("pod-delete.json");
    let mut traps = 0;
    for round in 0..40 {
        let a: Vec<i32> = (0..8).map(|_| next()).collect();
        let body = format!(
            "(drop (call $host_call (i32.const {}) (i32.const {}) (i32.const {}) (i32.const {}) (i32.const {}) (i32.const {}) (i32.const {}) (i32.const {})))
             (call $host_error (i32.const {}))
             (call $guest_response (i32.const {}) (i32.const {}))",
            a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[0], a[1], a[2]
        );
        let policy = loader()
            .load(
                &guest("", &body),
                "fuzz",
                PolicyConfig::new(format!("fuzz-{round}")),
            )
            .unwrap();
        match policy.validate(&request, "{}") {
            Err(EvalError::Trap { .. }) => traps += 1,
            Err(EvalError::InvalidResponse(_)) => {}
            other => panic!("round {round} {a:?}: {other:?}"),
        }
    }
    assert!(traps > 20, "most random inputs are out of bounds: {traps}");
}

#[test]
fn limits_apply_to_core_modules() {
    let request = fixture("pod-create-unprivileged.json");
    let looping = guest("", "(loop $l (br $l))");
    let mut c = PolicyConfig::new("loop");
    c.limits = PolicyLimits {
        timeout: std::time::Duration::from_millis(50),
        ..PolicyLimits::default()
    };
    let policy = loader().load(&looping, "loop", c).unwrap();
    assert!(matches!(
        policy.validate(&request, "{}"),
        Err(EvalError::Timeout { .. })
    ));

    let growing = guest(
        "",
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))",
    );
    let mut c = PolicyConfig::new("grow");
    c.limits = PolicyLimits {
        memory_bytes: 8 << 20,
        ..PolicyLimits::default()
    };
    let policy = loader().load(&growing, "grow", c).unwrap();
    assert!(matches!(
        policy.validate(&request, "{}"),
        Err(EvalError::MemoryExhausted { .. })
    ));
}

#[test]
fn a_guest_error_is_a_policy_error_not_a_verdict() {
    let failing = guest(
        "",
        "(call $guest_error (i32.const 0) (i32.const 10)) (return (i32.const 0))",
    );
    let policy = loader()
        .load(&failing, "failing", PolicyConfig::new("failing"))
        .unwrap();
    let err = policy
        .validate(&fixture("pod-delete.json"), "{}")
        .unwrap_err();
    assert!(
        matches!(err, EvalError::PolicyError(ref m) if m.contains("kubewarden")),
        "{err:?}"
    );
}

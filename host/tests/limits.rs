//! The sandbox's limits, as behaviour: a looping policy is stopped at its
//! deadline, an allocating one at its memory cap, and the process goes on
//! serving.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::time::{Duration, Instant};

use common::{fixture, load, load_default};
use palisade_host::{EvalError, PolicyConfig, PolicyLimits};

/// Slack allowed past the deadline: one epoch tick (1 ms) plus thread
/// scheduling on a loaded two-core machine running tests in parallel.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

fn limited(name: &str, limits: PolicyLimits) -> palisade_host::LoadedPolicy {
    let mut config = PolicyConfig::new(name);
    config.limits = limits;
    load(name, config)
}

#[test]
fn endless_loop_is_interrupted_at_its_deadline_and_evaluation_goes_on() {
    let deadline = Duration::from_millis(50);
    let policy = limited(
        "endless-loop",
        PolicyLimits {
            timeout: deadline,
            ..PolicyLimits::default()
        },
    );
    let request = fixture("pod-create-unprivileged.json");
    for _ in 0..3 {
        let start = Instant::now();
        let err = policy.validate(&request, "{}").unwrap_err();
        let elapsed = start.elapsed();
        assert!(
            matches!(err, EvalError::Timeout { deadline: d } if d == deadline),
            "{err:?}"
        );
        assert!(elapsed >= deadline, "stopped early: {elapsed:?}");
        assert!(
            elapsed < deadline + DEADLINE_MARGIN,
            "stopped late: {elapsed:?}"
        );
        println!("endless-loop stopped after {elapsed:?} (deadline {deadline:?})");
    }
    let healthy = load_default("pod-privileged");
    assert!(healthy.validate(&request, "{}").unwrap().accepted);
}

#[test]
fn unbounded_allocation_is_stopped_at_the_cap() {
    let cap = 32 << 20;
    let policy = limited(
        "unbounded-alloc",
        PolicyLimits {
            memory_bytes: cap,
            ..PolicyLimits::default()
        },
    );
    let request = fixture("pod-create-unprivileged.json");
    for _ in 0..2 {
        let err = policy.validate(&request, "{}").unwrap_err();
        assert!(
            matches!(err, EvalError::MemoryExhausted { limit_bytes } if limit_bytes == cap),
            "{err:?}"
        );
    }
    let healthy = load_default("pod-privileged");
    assert!(
        !healthy
            .validate(&fixture("pod-create-privileged.json"), "{}")
            .unwrap()
            .accepted
    );
}

#[test]
fn a_memory_cap_below_the_initial_memory_fails_the_evaluation_cleanly() {
    let policy = limited(
        "pod-privileged",
        PolicyLimits {
            memory_bytes: 64 << 10,
            ..PolicyLimits::default()
        },
    );
    let err = policy
        .validate(&fixture("pod-create-unprivileged.json"), "{}")
        .unwrap_err();
    assert!(matches!(err, EvalError::MemoryExhausted { .. }), "{err:?}");
}

#[test]
fn a_large_object_fits_the_default_cap() {
    let policy = load_default("pod-privileged");
    let verdict = policy
        .validate(&fixture("pod-create-large.json"), "{}")
        .unwrap();
    assert!(verdict.accepted);
}

#[test]
fn instances_are_fresh_for_every_evaluation() {
    // The same loaded policy interleaves rejected and accepted requests: a
    // leaked state would show as a wrong verdict.
    let policy = load_default("pod-privileged");
    let bad = fixture("pod-create-privileged.json");
    let good = fixture("pod-create-unprivileged.json");
    for _ in 0..20 {
        assert!(!policy.validate(&bad, "{}").unwrap().accepted);
        assert!(policy.validate(&good, "{}").unwrap().accepted);
    }
}

#[test]
fn a_panic_is_answered_with_its_message_on_one_line() {
    let policy = load_default("panics");
    let err = policy
        .validate(&fixture("pod-create-unprivileged.json"), "{}")
        .unwrap_err();
    let EvalError::Trap { message, .. } = &err else {
        panic!("not a trap: {err:?}");
    };
    assert!(message.starts_with("panicked at "), "{message}");
    assert!(message.contains("src/lib.rs"), "{message}");
    assert!(message.contains("index out of bounds"), "{message}");
    assert!(!message.contains('\n'), "{message}");
    assert!(!message.contains("backtrace"), "{message}");
    println!("{err}");
}

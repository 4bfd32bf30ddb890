//! Per-evaluation latency of `pod-privileged` as a component (fresh
//! instance every time) next to the very same policy code compiled natively,
//! on the privileged and the unprivileged fixture. Prints figures; asserts
//! nothing about speed.
//!
//! Run with `make bench` (it builds the policies first).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use palisade_host::cli::Percentiles;
use palisade_host::{
    CompileCache, EngineConfig, PolicyConfig, PolicyEngine, PolicyLoader, PolicyRequest,
};

const ITERATIONS: usize = 20_000;
const WARMUP: usize = 2_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let policy_dir = std::env::var_os("PALISADE_POLICY_DIR")
        .map(PathBuf::from)
        .ok_or("PALISADE_POLICY_DIR is not set: run `make bench`")?;
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/admission");
    let cache = tempfile::tempdir()?;
    let loader = PolicyLoader::with_cache(
        PolicyEngine::new(EngineConfig::default())?,
        CompileCache::new(cache.path())?,
    );
    let policy = loader.load_file(
        &policy_dir.join("pod-privileged.wasm"),
        PolicyConfig::new("pod-privileged"),
    )?;

    println!("pod-privileged, {ITERATIONS} evaluations after {WARMUP} warm-up, one thread");
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9}",
        "case", "p50 µs", "p90 µs", "p99 µs", "mean µs"
    );
    for fixture in ["pod-create-privileged.json", "pod-create-unprivileged.json"] {
        let body = std::fs::read(fixtures.join(fixture))?;
        let request = PolicyRequest::from_review_json(&body)?;
        let wasm = measure(|| {
            policy
                .validate(&request, "{}")
                .map(|v| v.accepted)
                .unwrap_or(false)
        });
        print_row(&format!("component, fresh instance: {fixture}"), &wasm);

        let native_request =
            palisade_sdk::testing::request_from_review(std::str::from_utf8(&body)?)?;
        let native = measure(|| {
            palisade_sdk::dispatch::validate::<pod_privileged::PodPrivileged>(&native_request, "{}")
                .is_accepted()
        });
        print_row(&format!("native Rust, same code: {fixture}"), &native);
        println!(
            "{:<44} {:>9.1}x",
            "  component / native (p50)",
            wasm.p50.as_secs_f64() / native.p50.as_secs_f64().max(1e-12)
        );
    }
    Ok(())
}

fn measure(mut f: impl FnMut() -> bool) -> Percentiles {
    let mut sink = 0usize;
    for _ in 0..WARMUP {
        sink += usize::from(f());
    }
    let mut samples = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let start = Instant::now();
        sink += usize::from(std::hint::black_box(f()));
        samples.push(start.elapsed());
    }
    std::hint::black_box(sink);
    Percentiles::of(&mut samples)
}

fn print_row(name: &str, s: &Percentiles) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<44} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        us(s.p50),
        us(s.p90),
        us(s.p99),
        us(s.mean)
    );
}

//! `palisade bench`: per-evaluation latency, a fresh instance each time.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;

use super::{read_request, PolicyArgs};

#[derive(Debug, Args)]
pub(super) struct BenchArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// The AdmissionReview or AdmissionRequest (JSON or YAML; `-` for stdin).
    #[arg(long, short, visible_alias = "request-path")]
    request: PathBuf,
    /// Measured evaluations.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    iterations: u64,
    /// Evaluations before measuring.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
}

pub(super) fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    let request = read_request(&args.request)?;
    let (policy, settings) = args.policy.load()?;
    let verdict = policy.validate(&request, &settings)?;
    for _ in 0..args.warmup {
        policy.validate(&request, &settings)?;
    }
    let mut samples = Vec::with_capacity(usize::try_from(args.iterations).unwrap_or_default());
    for _ in 0..args.iterations {
        let start = Instant::now();
        policy.validate(&request, &settings)?;
        samples.push(start.elapsed());
    }
    let stats = Percentiles::of(&mut samples);
    super::print(&format!(
        "{} ({}) on {}: accepted={} iterations={}\n{stats}",
        args.policy.policy,
        policy.kind().as_str(),
        args.request.display(),
        verdict.accepted,
        samples.len()
    ))
}

/// Latency summary of a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

impl Percentiles {
    /// Sorts `samples` and summarises them.
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            let idx = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(idx).copied().unwrap_or_default()
        };
        let total: Duration = samples.iter().sum();
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: samples.last().copied().unwrap_or_default(),
            mean: total / u32::try_from(samples.len().max(1)).unwrap_or(u32::MAX),
        }
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        write!(
            f,
            "p50={:.1}µs p90={:.1}µs p99={:.1}µs max={:.1}µs mean={:.1}µs ({:.0} evaluations/s on one thread)",
            us(self.p50),
            us(self.p90),
            us(self.p99),
            us(self.max),
            us(self.mean),
            1.0 / self.mean.as_secs_f64().max(1e-12)
        )
    }
}

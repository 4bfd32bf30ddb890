//! Prometheus metrics, served as text on the readiness port's `/metrics`.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of every evaluation metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvaluationLabels {
    pub policy_name: String,
    pub policy_mode: String,
    pub request_operation: String,
    pub resource_kind: String,
    /// What the policy decided (before monitor mode forces an acceptance).
    pub accepted: String,
    pub mutated: String,
    /// `validate` or `audit`.
    pub request_origin: String,
    /// Empty when the policy decided; `timeout`, `trap`, `memory`... otherwise.
    pub error: String,
}

type HistogramFamily = Family<EvaluationLabels, Histogram, fn() -> Histogram>;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    evaluations: Family<EvaluationLabels, Counter>,
    latency: HistogramFamily,
}

fn latency_histogram() -> Histogram {
    // 10 µs to about 5 s.
    Histogram::new(exponential_buckets(0.000_01, 2.5, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("palisade");
        let evaluations = Family::<EvaluationLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "policy_evaluations",
            "Policy evaluations",
            evaluations.clone(),
        );
        registry.register(
            "policy_evaluation_latency_seconds",
            "Time to evaluate one request, parsing and post-processing included",
            latency.clone(),
        );
        Self {
            registry,
            evaluations,
            latency,
        }
    }
}

impl Metrics {
    /// Records one evaluation.
    pub fn record(&self, labels: &EvaluationLabels, elapsed: Duration) {
        self.evaluations.get_or_create(labels).inc();
        self.latency
            .get_or_create(labels)
            .observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

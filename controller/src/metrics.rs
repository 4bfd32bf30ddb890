//! The controller's Prometheus metrics, served on `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    kind: &'static str,
    /// `ok`, or the error kind.
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Phase {
    kind: &'static str,
    phase: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Reconciliation counts and latencies, and policy status transitions.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    reconciliations: Family<Outcome, Counter>,
    latency: Family<Kind, Histogram, fn() -> Histogram>,
    transitions: Family<Phase, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("palisade_controller");
        let reconciliations = Family::<Outcome, Counter>::default();
        let latency =
            Family::<Kind, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let transitions = Family::<Phase, Counter>::default();
        registry.register(
            "reconciliations",
            "Reconciliations by resource kind and result",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconciliation took",
            latency.clone(),
        );
        registry.register(
            "policy_status_transitions",
            "Policies entering a status phase",
            transitions.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciliations,
            latency,
            transitions,
        }
    }
}

impl Metrics {
    /// Counts one reconciliation.
    pub fn reconciled(&self, kind: &'static str, result: &'static str, took: Duration) {
        self.reconciliations
            .get_or_create(&Outcome { kind, result })
            .inc();
        self.latency
            .get_or_create(&Kind { kind })
            .observe(took.as_secs_f64());
    }

    /// Counts a policy entering `phase`.
    pub fn transition(&self, kind: &'static str, phase: &'static str) {
        self.transitions.get_or_create(&Phase { kind, phase }).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` and `/healthz` (plain HTTP, the metrics port).
pub async fn handle(
    metrics: Metrics,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, body) = match request.uri().path() {
        "/metrics" => (hyper::StatusCode::OK, metrics.encode()),
        "/healthz" => (hyper::StatusCode::OK, "ok".to_owned()),
        _ => (hyper::StatusCode::NOT_FOUND, "not found".to_owned()),
    };
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciliations_are_counted_by_kind_and_result() {
        let metrics = Metrics::default();
        metrics.reconciled("PolicyServer", "ok", Duration::from_millis(3));
        metrics.reconciled("PolicyServer", "ok", Duration::from_millis(3));
        metrics.transition("ClusterAdmissionPolicy", "active");
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"palisade_controller_reconciliations_total{kind="PolicyServer",result="ok"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"palisade_controller_policy_status_transitions_total{kind="ClusterAdmissionPolicy",phase="active"} 1"#), "{text}");
    }
}

//! Prometheus metrics, served as text on the readiness port's `/metrics`.
//!
//! Palisade's own (`palisade_*`, latency in seconds) are always there.
//! With `--enable-metrics` the same evaluations are also counted under
//! Kubewarden's names and labels (`kubewarden_policy_evaluations_total`,
//! `kubewarden_policy_evaluation_latency_milliseconds`), so dashboards built
//! for Kubewarden work unchanged; Kubewarden pushes these through OTLP,
//! here they are scraped like the rest.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of every evaluation metric. Only the policy and the kind are
/// allocated per request: every other value comes from a fixed vocabulary.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvaluationLabels {
    pub policy_name: String,
    pub policy_mode: &'static str,
    pub request_operation: &'static str,
    pub resource_kind: String,
    /// What the policy decided (before monitor mode forces an acceptance).
    pub accepted: bool,
    pub mutated: bool,
    /// `validate`, `audit` or `validate_raw`.
    pub request_origin: &'static str,
    /// Empty when the policy decided; `timeout`, `trap`, `memory`... otherwise.
    pub error: &'static str,
}

/// The label of the configuration-info metric.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigLabels {
    hash: String,
}

/// The labels Kubewarden's policy-server puts on its evaluation metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubewardenLabels {
    policy_name: String,
    policy_mode: &'static str,
    resource_kind: String,
    resource_request_operation: &'static str,
    accepted: bool,
    mutated: bool,
    request_origin: &'static str,
    resource_namespace: Option<String>,
    /// The rejection's status code, when it has one.
    error_code: Option<u16>,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `palisade_policies_config_info{hash}`: 1 for the configuration served.
    config: Family<ConfigLabels, prometheus_client::metrics::gauge::Gauge>,
    evaluations: Family<EvaluationLabels, Counter>,
    latency: HistogramFamily<EvaluationLabels>,
    kubewarden: Option<KubewardenMetrics>,
}

#[derive(Debug)]
struct KubewardenMetrics {
    evaluations: Family<KubewardenLabels, Counter>,
    latency: HistogramFamily<KubewardenLabels>,
}

/// Bucket bounds in seconds, written out so that the `le` labels read as
/// typed (computed powers print as `0.006103515625000001`).
const SECONDS_BUCKETS: [f64; 18] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// OpenTelemetry's default histogram bounds, which Kubewarden's millisecond
/// histogram has.
const MILLISECONDS_BUCKETS: [f64; 15] = [
    0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
    10000.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(SECONDS_BUCKETS)
}

fn milliseconds_histogram() -> Histogram {
    Histogram::new(MILLISECONDS_BUCKETS)
}

impl Metrics {
    /// Palisade's metrics, and Kubewarden's names as well when `kubewarden`.
    pub fn new(kubewarden: bool) -> Self {
        let mut registry = Registry::default();
        let evaluations = Family::<EvaluationLabels, Counter>::default();
        let latency: HistogramFamily<_> = Family::new_with_constructor(seconds_histogram);
        registry.register(
            "palisade_policy_evaluations",
            "Policy evaluations",
            evaluations.clone(),
        );
        registry.register(
            "palisade_policy_evaluation_latency_seconds",
            "Time to evaluate one request, parsing and post-processing included",
            latency.clone(),
        );
        let config = Family::<ConfigLabels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register(
            "palisade_policies_config_info",
            "The configuration served: 1 for the hash of its policies text",
            config.clone(),
        );
        let kubewarden = kubewarden.then(|| {
            let metrics = KubewardenMetrics {
                evaluations: Family::default(),
                latency: Family::new_with_constructor(milliseconds_histogram),
            };
            registry.register(
                "kubewarden_policy_evaluations",
                "Policy evaluations (Kubewarden's name and labels)",
                metrics.evaluations.clone(),
            );
            registry.register(
                "kubewarden_policy_evaluation_latency_milliseconds",
                "Policy evaluation latency in milliseconds (Kubewarden's name and labels)",
                metrics.latency.clone(),
            );
            metrics
        });
        Self {
            registry,
            config,
            evaluations,
            latency,
            kubewarden,
        }
    }

    /// Reports `hash` as the configuration served, and only it.
    pub fn set_config_hash(&self, hash: &str) {
        self.config.clear();
        self.config
            .get_or_create(&ConfigLabels {
                hash: hash.to_owned(),
            })
            .set(1);
    }

    /// Records one evaluation; under Kubewarden's names too when enabled,
    /// which also label the request's namespace and the rejection's code.
    pub fn record(
        &self,
        labels: EvaluationLabels,
        namespace: Option<&str>,
        error_code: Option<u16>,
        elapsed: Duration,
    ) {
        self.evaluations.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let Some(kubewarden) = &self.kubewarden else {
            return;
        };
        let EvaluationLabels {
            policy_name,
            policy_mode,
            request_operation,
            resource_kind,
            accepted,
            mutated,
            request_origin,
            error: _,
        } = labels;
        let labels = KubewardenLabels {
            policy_name,
            policy_mode,
            resource_kind,
            resource_request_operation: request_operation,
            accepted,
            mutated,
            request_origin,
            resource_namespace: namespace.map(str::to_owned),
            error_code,
        };
        kubewarden.evaluations.get_or_create(&labels).inc();
        kubewarden
            .latency
            .get_or_create(&labels)
            .observe(elapsed.as_millis() as f64);
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

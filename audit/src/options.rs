//! The scanner's command line: Kubewarden's flag names where they exist.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use palisade_host::logs::LogFormat;

use crate::reports::ReportKind;
use crate::scanner::ScanOptions;

/// Re-evaluates the resources already in the cluster with the active
/// policies and writes one report per resource.
#[derive(Debug, Parser)]
#[command(name = "audit-scanner", version, about)]
pub struct Args {
    /// Scan only this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Scan only cluster-scoped resources.
    #[arg(short = 'c', long)]
    pub cluster: bool,
    /// The engine's namespace (PolicyServer configuration; never scanned).
    #[arg(short = 'k', long, default_value = "kubewarden")]
    pub kubewarden_namespace: String,
    /// Namespaces not to scan (repeatable or comma-separated).
    #[arg(short = 'i', long, value_delimiter = ',')]
    pub ignore_namespaces: Vec<String>,
    /// Objects per LIST page.
    #[arg(long, default_value_t = 100)]
    pub page_size: u32,
    /// Report format.
    #[arg(long, value_enum, default_value_t = ReportKind::Openreports)]
    pub report_kind: ReportKind,
    /// Print each report as JSON on standard output.
    #[arg(short = 'o', long)]
    pub output_scan: bool,
    /// Never write or delete a report.
    #[arg(long)]
    pub disable_store: bool,
    /// Objects evaluated and written at once (one bound for the whole scan).
    #[arg(long, default_value_t = 16)]
    pub parallelism: usize,
    /// Deadline of one evaluation when the policy sets none, in seconds.
    #[arg(long, default_value_t = 10)]
    pub policy_timeout: u64,
    /// Where modules are fetched to (default: a temporary directory).
    #[arg(long)]
    pub store_dir: Option<PathBuf>,
    /// Offline: audit the manifests in this directory (or file) against
    /// `--policies-file` instead of a cluster, and print the reports.
    #[arg(long, requires = "policies_file")]
    pub manifests: Option<PathBuf>,
    /// Offline: the `policies.yml` to audit the manifests with.
    #[arg(long)]
    pub policies_file: Option<PathBuf>,
    /// Offline: `sources.yml` for fetching the policies' modules.
    #[arg(long)]
    pub sources_path: Option<PathBuf>,
    /// Offline: exit with status 2 when a result is `fail` or `error` (for CI pipelines).
    #[arg(long)]
    pub fail_on_violation: bool,
    /// Log filter (`info`, `debug`...).
    #[arg(short = 'l', long = "loglevel", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Args {
    /// The offline audit these flags describe, if `--manifests` is given.
    pub fn offline(&self, store_dir: PathBuf) -> Option<crate::offline::OfflineOptions> {
        Some(crate::offline::OfflineOptions {
            manifests: self.manifests.clone()?,
            policies_file: self.policies_file.clone()?,
            sources: self.sources_path.clone(),
            store_dir,
            policy_timeout: Duration::from_secs(self.policy_timeout.max(1)),
        })
    }

    /// The scan these flags describe, storing modules under `store_dir`.
    pub fn options(&self, store_dir: PathBuf) -> ScanOptions {
        if self.cluster && self.namespace.is_some() {
            tracing::warn!(
                "--cluster and --namespace together: only cluster-scoped resources are scanned"
            );
        }
        ScanOptions {
            namespace: self.namespace.clone().filter(|_| !self.cluster),
            cluster_only: self.cluster,
            engine_namespace: self.kubewarden_namespace.clone(),
            ignore_namespaces: self.ignore_namespaces.clone(),
            page_size: self.page_size.max(1),
            report_kind: self.report_kind,
            output_scan: self.output_scan,
            disable_store: self.disable_store,
            parallelism: self.parallelism.max(1),
            policy_timeout: Duration::from_secs(self.policy_timeout.max(1)),
            store_dir,
        }
    }
}

//! The report objects the scanner writes, one per audited resource, in the
//! two formats Kubewarden writes: OpenReports (`openreports.io/v1alpha1`
//! `Report` and `ClusterReport`, the default) and the older wgpolicy
//! (`wgpolicyk8s.io/v1alpha2` `PolicyReport` and `ClusterPolicyReport`).
//! Both have the same body at the root of the object (no `spec`); the CRDs
//! are generated from these types (`audit-crdgen`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Counts of the results of one report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Summary {
    #[serde(default)]
    pub pass: u32,
    #[serde(default)]
    pub fail: u32,
    #[serde(default)]
    pub warn: u32,
    #[serde(default)]
    pub error: u32,
    #[serde(default)]
    pub skip: u32,
}

/// The outcome of one policy on one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
    Warn,
    Error,
    Skip,
}

/// When a result was computed (`{seconds, nanos}`, as Kubernetes' Timestamp).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Timestamp {
    pub seconds: i64,
    #[serde(default)]
    pub nanos: i32,
}

/// One policy's result on the resource of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResult {
    /// `kubewarden`, so report readers (Policy Reporter) group them as Kubewarden's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The policy id (`clusterwide-<name>`, `namespaced-<ns>-<name>`...).
    pub policy: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// `critical`, `high`, `medium`, `low` or `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["critical", "high", "medium", "low", "info"]))]
    pub severity: Option<String>,
    pub result: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    #[serde(default)]
    pub scored: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl PolicyResult {
    /// The result without its timestamp: what decides whether a report
    /// changed (a report is rewritten only when it did).
    pub fn verdict(&self) -> Self {
        Self {
            timestamp: None,
            ..self.clone()
        }
    }
}

/// Declares one report kind: the same body, at the root of the object.
macro_rules! report_kind {
    ($body:ident, $kind:literal, $group:literal, $version:literal, $plural:literal $(, $namespaced:ident)?) => {
        #[doc = concat!("The body of a `", $kind, "` (`", $group, "/", $version, "`).")]
        #[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[kube(group = $group, version = $version, kind = $kind, plural = $plural, no_spec $(, $namespaced)?)]
        #[kube(
            printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".scope.kind","priority":1}"#,
            printcolumn = r#"{"name":"Name","type":"string","jsonPath":".scope.name","priority":1}"#,
            printcolumn = r#"{"name":"Pass","type":"integer","jsonPath":".summary.pass"}"#,
            printcolumn = r#"{"name":"Fail","type":"integer","jsonPath":".summary.fail"}"#,
            printcolumn = r#"{"name":"Error","type":"integer","jsonPath":".summary.error"}"#,
            printcolumn = r#"{"name":"Skip","type":"integer","jsonPath":".summary.skip"}"#,
            printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
        )]
        pub struct $body {
            /// The resource the results are about.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub scope: Option<ObjectReference>,
            #[serde(default)]
            pub summary: Summary,
            #[serde(default)]
            pub results: Vec<PolicyResult>,
        }

        impl From<&ReportBody> for $body {
            fn from(body: &ReportBody) -> Self {
                Self {
                    scope: Some(body.scope.clone()),
                    summary: body.summary.clone(),
                    results: body.results.clone(),
                }
            }
        }
    };
}

report_kind!(
    ReportFields,
    "Report",
    "openreports.io",
    "v1alpha1",
    "reports",
    namespaced
);
report_kind!(
    ClusterReportFields,
    "ClusterReport",
    "openreports.io",
    "v1alpha1",
    "clusterreports"
);
report_kind!(
    PolicyReportFields,
    "PolicyReport",
    "wgpolicyk8s.io",
    "v1alpha2",
    "policyreports",
    namespaced
);
report_kind!(
    ClusterPolicyReportFields,
    "ClusterPolicyReport",
    "wgpolicyk8s.io",
    "v1alpha2",
    "clusterpolicyreports"
);

/// Which report format the scanner writes (`--report-kind`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportKind {
    /// `openreports.io/v1alpha1` `Report` / `ClusterReport`.
    #[default]
    Openreports,
    /// `wgpolicyk8s.io/v1alpha2` `PolicyReport` / `ClusterPolicyReport`.
    Policyreport,
}

impl ReportKind {
    /// The resource of the reports of namespaced (or cluster-scoped) objects.
    pub fn resource(self, namespaced: bool) -> kube::discovery::ApiResource {
        use kube::discovery::ApiResource;
        match (self, namespaced) {
            (Self::Openreports, true) => ApiResource::erase::<Report>(&()),
            (Self::Openreports, false) => ApiResource::erase::<ClusterReport>(&()),
            (Self::Policyreport, true) => ApiResource::erase::<PolicyReport>(&()),
            (Self::Policyreport, false) => ApiResource::erase::<ClusterPolicyReport>(&()),
        }
    }
}

/// The report of one resource, whatever the format it is written in.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportBody {
    pub scope: ObjectReference,
    pub summary: Summary,
    pub results: Vec<PolicyResult>,
}

impl ReportBody {
    /// The report of `results` on the resource `scope`.
    pub fn new(scope: ObjectReference, mut results: Vec<PolicyResult>) -> Self {
        results.sort_by(|a, b| a.policy.cmp(&b.policy));
        let mut summary = Summary::default();
        for result in &results {
            let count = match result.result {
                Outcome::Pass => &mut summary.pass,
                Outcome::Fail => &mut summary.fail,
                Outcome::Warn => &mut summary.warn,
                Outcome::Error => &mut summary.error,
                Outcome::Skip => &mut summary.skip,
            };
            *count += 1;
        }
        Self {
            scope,
            summary,
            results,
        }
    }

    /// The report object in format `kind` (namespaced when the resource
    /// is), as JSON.
    pub fn to_json(
        &self,
        kind: ReportKind,
        metadata: ObjectMeta,
    ) -> serde_json::Result<serde_json::Value> {
        match (kind, self.scope.namespace.is_some()) {
            (ReportKind::Openreports, true) => serde_json::to_value(Report {
                metadata,
                spec: self.into(),
            }),
            (ReportKind::Openreports, false) => serde_json::to_value(ClusterReport {
                metadata,
                spec: self.into(),
            }),
            (ReportKind::Policyreport, true) => serde_json::to_value(PolicyReport {
                metadata,
                spec: self.into(),
            }),
            (ReportKind::Policyreport, false) => serde_json::to_value(ClusterPolicyReport {
                metadata,
                spec: self.into(),
            }),
        }
    }

    /// Whether a stored report says the same: the same resource and the
    /// same results, timestamps and the resource's version aside (a status
    /// update of the resource that changes no verdict rewrites nothing).
    pub fn same_as(&self, scope: Option<&ObjectReference>, results: &[PolicyResult]) -> bool {
        let verdicts = |r: &[PolicyResult]| r.iter().map(PolicyResult::verdict).collect::<Vec<_>>();
        let unversioned = |s: &ObjectReference| ObjectReference {
            resource_version: None,
            ..s.clone()
        };
        scope.map(unversioned) == Some(unversioned(&self.scope))
            && verdicts(results) == verdicts(&self.results)
    }
}

/// The label every report the scanner writes carries.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "kubewarden";
const VERSION_LABEL: &str = "kubewarden.io/policyreport-version";
const RUN_LABEL: &str = "kubewarden.io/audit-scanner-run-uid";

/// The metadata of the report of the resource `scope`: named by its UID,
/// owned by it (the garbage collector removes the report with it).
pub fn report_metadata(scope: &ObjectReference, run: &str) -> ObjectMeta {
    let uid = scope.uid.clone().unwrap_or_default();
    ObjectMeta {
        name: Some(uid.clone()),
        namespace: scope.namespace.clone(),
        labels: Some(BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            (VERSION_LABEL.to_owned(), "v2".to_owned()),
            (RUN_LABEL.to_owned(), run.to_owned()),
        ])),
        owner_references: Some(vec![OwnerReference {
            api_version: scope.api_version.clone().unwrap_or_default(),
            kind: scope.kind.clone().unwrap_or_default(),
            name: scope.name.clone().unwrap_or_default(),
            uid,
            controller: None,
            block_owner_deletion: None,
        }]),
        ..ObjectMeta::default()
    }
}

/// The four report CRDs as the committed `audit/crds/reports.yaml`.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    palisade_controller::crd::to_yaml(&crds(), "cargo run -p palisade-audit --bin audit-crdgen")
}

/// The four report CRDs, for `audit-crdgen` and the tests.
pub fn crds(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![
        Report::crd(),
        ClusterReport::crd(),
        PolicyReport::crd(),
        ClusterPolicyReport::crd(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(policy: &str, outcome: Outcome, seconds: i64) -> PolicyResult {
        PolicyResult {
            source: Some("kubewarden".into()),
            policy: policy.into(),
            rule: None,
            category: None,
            severity: None,
            result: outcome,
            message: None,
            timestamp: Some(Timestamp { seconds, nanos: 0 }),
            scored: true,
            resource_selector: None,
            properties: BTreeMap::new(),
        }
    }

    #[test]
    fn summary_counts_and_comparison_ignores_time() {
        let scope = ObjectReference {
            uid: Some("u".into()),
            ..ObjectReference::default()
        };
        let body = ReportBody::new(
            scope.clone(),
            vec![
                result("b", Outcome::Fail, 1),
                result("a", Outcome::Pass, 1),
                result("c", Outcome::Error, 1),
            ],
        );
        assert_eq!(
            (body.summary.pass, body.summary.fail, body.summary.error),
            (1, 1, 1)
        );
        assert_eq!(body.results[0].policy, "a", "results in policy order");
        let later: Vec<_> = body
            .results
            .iter()
            .map(|r| PolicyResult {
                timestamp: Some(Timestamp {
                    seconds: 99,
                    nanos: 0,
                }),
                ..r.clone()
            })
            .collect();
        assert!(body.same_as(Some(&scope), &later));
        let mut changed = later.clone();
        changed[1].result = Outcome::Pass;
        assert!(!body.same_as(Some(&scope), &changed));
    }

    #[test]
    fn committed_crds_are_up_to_date() {
        let generated = crds_yaml().unwrap();
        assert!(
            generated == include_str!("../crds/reports.yaml"),
            "audit/crds/reports.yaml is stale: run `make crds`"
        );
        assert!(
            generated == include_str!("../../charts/palisade/files/reports.yaml"),
            "charts/palisade/files/reports.yaml is stale: run `make crds`"
        );
    }

    #[test]
    fn reports_have_their_body_at_the_root() {
        let body = ReportBody::new(
            ObjectReference {
                uid: Some("u".into()),
                kind: Some("Pod".into()),
                ..ObjectReference::default()
            },
            vec![result("a", Outcome::Pass, 1)],
        );
        let report = Report {
            metadata: report_metadata(&body.scope, "run"),
            spec: ReportFields::from(&body),
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(json["summary"]["pass"], 1);
        assert_eq!(json["results"][0]["result"], "pass");
        assert_eq!(json["metadata"]["name"], "u");
        assert!(json.get("spec").is_none(), "{json}");
    }
}

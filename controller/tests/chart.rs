//! The Helm chart, rendered by the project's Helm without a cluster: lint,
//! the objects that matter (RBAC, security contexts, probes, hooks, CRD
//! retention, failure policies), the values schema, and the README's values
//! table. `real_node.rs` installs it for real.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::collections::BTreeSet;
use std::process::Command;

use serde::Deserialize as _;
use serde_yaml::Value;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/palisade");

fn helm(args: &[&str]) -> Result<String, String> {
    let output = Command::new(common::tool_bin("helm"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    }
}

/// The rendered objects (hooks included).
fn render(values: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "palisade", CHART, "--namespace", "kubewarden"];
    args.extend_from_slice(values);
    let text = helm(&args).unwrap_or_else(|e| panic!("helm template {values:?}: {e}"));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// `(apiGroup, resource, verb)` of every rule.
fn grants(role: &Value) -> BTreeSet<(&str, &str, &str)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_sequence().unwrap() {
        for group in rule["apiGroups"].as_sequence().unwrap() {
            for resource in rule["resources"].as_sequence().unwrap() {
                for verb in rule["verbs"].as_sequence().unwrap() {
                    out.insert((
                        group.as_str().unwrap(),
                        resource.as_str().unwrap(),
                        verb.as_str().unwrap(),
                    ));
                }
            }
        }
    }
    out
}

fn pod_spec(object: &Value) -> &Value {
    match object["kind"].as_str().unwrap() {
        "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &object["spec"]["template"]["spec"],
    }
}

#[test]
fn the_chart_lints_clean() {
    helm(&["lint", "--strict", CHART]).unwrap();
}

#[test]
fn the_controller_gets_exactly_the_permissions_it_uses() {
    let objects = render(&[]);
    let cluster = grants(find(&objects, "ClusterRole", "palisade-controller"));
    let namespaced = grants(find(&objects, "Role", "palisade-controller"));
    // Nothing of the namespace-bound kinds is granted cluster-wide.
    for &(_, resource, _) in &cluster {
        assert!(
            !["secrets", "configmaps", "deployments", "services", "leases"].contains(&resource),
            "{resource} granted cluster-wide"
        );
    }
    // No wildcard anywhere.
    for &(group, resource, verb) in cluster.iter().chain(&namespaced) {
        assert!(
            group != "*" && resource != "*" && verb != "*",
            "wildcard grant {group}/{resource}/{verb}"
        );
    }
    // What the reconcilers do (the real-node test fails without any of it).
    for needed in [
        ("policies.kubewarden.io", "policyservers", "watch"),
        (
            "policies.kubewarden.io",
            "clusteradmissionpolicies/status",
            "patch",
        ),
        (
            "policies.kubewarden.io",
            "admissionpolicygroups/finalizers",
            "update",
        ),
        (
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            "create",
        ),
        (
            "admissionregistration.k8s.io",
            "mutatingwebhookconfigurations",
            "deletecollection",
        ),
        ("events.k8s.io", "events", "create"),
    ] {
        assert!(cluster.contains(&needed), "missing {needed:?}");
    }
    for needed in [
        ("", "secrets", "create"),
        ("apps", "deployments", "patch"),
        ("policy", "poddisruptionbudgets", "delete"),
        ("coordination.k8s.io", "leases", "update"),
    ] {
        assert!(namespaced.contains(&needed), "missing {needed:?}");
    }
    // Policies cannot be created or deleted by the controller.
    assert!(!cluster
        .iter()
        .any(|&(g, r, v)| g == "policies.kubewarden.io"
            && r == "clusteradmissionpolicies"
            && (v == "create" || v == "delete")));
}

#[test]
fn every_container_is_hardened_and_the_controller_is_probed() {
    let objects = render(&[
        "--set",
        "recommendedPolicies.enabled=true",
        "--set",
        "recommendedPolicies.registry=r.test",
    ]);
    let workloads: Vec<&Value> = objects
        .iter()
        .filter(|o| ["Deployment", "CronJob", "Job"].contains(&o["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        workloads.len(),
        3,
        "controller, audit CronJob, uninstall Job"
    );
    for workload in workloads {
        let spec = pod_spec(workload);
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        for container in spec["containers"].as_sequence().unwrap() {
            let security = &container["securityContext"];
            let name = &container["name"];
            assert_eq!(security["readOnlyRootFilesystem"], true, "{name:?}");
            assert_eq!(security["allowPrivilegeEscalation"], false, "{name:?}");
            assert_eq!(security["runAsNonRoot"], true, "{name:?}");
            assert_eq!(security["capabilities"]["drop"][0], "ALL", "{name:?}");
            assert_eq!(
                security["seccompProfile"]["type"], "RuntimeDefault",
                "{name:?}"
            );
        }
    }
    let controller =
        &pod_spec(find(&objects, "Deployment", "palisade-controller"))["containers"][0];
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(controller[probe]["httpGet"]["path"], "/healthz", "{probe}");
    }
    // The policy-servers get the hardened context from the controller
    // (objects.rs); the chart does not override it.
    let server = find(&objects, "PolicyServer", "default");
    assert!(server["spec"].get("securityContexts").is_none());
}

#[test]
fn the_controllers_webhook_needs_no_certificate_from_helm() {
    let objects = render(&[]);
    let controller =
        &pod_spec(find(&objects, "Deployment", "palisade-controller"))["containers"][0];
    let args = serde_yaml::to_string(&controller["args"]).unwrap();
    assert!(args.contains("--admission-certificate-secret="), "{args}");
    find(&objects, "Service", "palisade-controller");
    // No certificate material anywhere in the rendered chart: the same
    // values render the same objects (nothing for Argo CD to see change).
    assert!(!objects.iter().any(|o| o["kind"] == "Secret"));
    assert_eq!(render(&[]), objects);

    let without = render(&["--set", "controller.admissionWebhook=false"]);
    assert!(!without
        .iter()
        .any(|o| o["kind"] == "Service" && o["metadata"]["name"] == "palisade-controller"));
}

#[test]
fn uninstall_removes_webhooks_first_and_crds_stay() {
    let objects = render(&[]);
    let job = find(&objects, "Job", "palisade-uninstall");
    assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "pre-delete");
    let args: Vec<&str> = pod_spec(job)["containers"][0]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--uninstall"), "{args:?}");
    assert!(
        args.contains(&"--uninstall-policy-server=default"),
        "{args:?}"
    );
    // Its account runs before it (lower weight) and may delete webhooks.
    let role = find(&objects, "ClusterRole", "palisade-uninstall");
    assert_eq!(
        role["metadata"]["annotations"]["helm.sh/hook-weight"],
        "-10"
    );
    assert!(grants(role).contains(&(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        "delete"
    )));
    // Report CRDs are templates, kept on uninstall; the policy CRDs are in
    // crds/, which Helm never deletes.
    let report_crds: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(report_crds.len(), 4);
    for crd in report_crds {
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
    }
    assert!(std::path::Path::new(CHART)
        .join("crds/policies.kubewarden.io.yaml")
        .exists());
}

#[test]
fn recommended_policies_fail_closed_only_in_protect_mode() {
    for (mode, failure) in [("protect", "Fail"), ("monitor", "Ignore")] {
        let mode_value = format!("recommendedPolicies.mode={mode}");
        let objects = render(&[
            "--set",
            "recommendedPolicies.enabled=true",
            "--set",
            "recommendedPolicies.registry=registry.test:5000",
            "--set",
            &mode_value,
        ]);
        let policy = find(&objects, "ClusterAdmissionPolicy", "no-privileged-pod");
        assert_eq!(policy["spec"]["failurePolicy"], failure);
        assert_eq!(policy["spec"]["mode"], mode);
        assert_eq!(
            policy["spec"]["module"],
            "registry://registry.test:5000/pod-privileged:v1"
        );
    }
}

#[test]
fn wrong_values_fail_with_the_path_of_the_value() {
    for (set, says) in [
        ("policyServer.replcas=2", "'replcas' not allowed"),
        (
            "auditScanner.reportKind=reports",
            "/auditScanner/reportKind",
        ),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        (
            "recommendedPolicies.enabled=true",
            "/recommendedPolicies/registry",
        ),
    ] {
        let error = helm(&["template", "palisade", CHART, "--set", set])
            .expect_err(&format!("{set} was accepted"));
        assert!(error.contains(says), "{set}: {error}");
    }
}

/// Every value of values.yaml has its row in the chart's README.
#[test]
fn the_readme_lists_every_value() {
    fn leaves(prefix: &str, value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Mapping(map) if !map.is_empty() && !prefix.ends_with("resources") => {
                for (key, child) in map {
                    let key = key.as_str().unwrap();
                    let path = if prefix.is_empty() {
                        key.to_owned()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(&path, child, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap())
            .unwrap();
    let readme = std::fs::read_to_string(format!("{CHART}/README.md")).unwrap();
    let mut paths = Vec::new();
    leaves("", &values, &mut paths);
    assert!(paths.len() > 30, "{paths:?}");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|p| !readme.contains(&format!("| `{p}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "values without a README row: {missing:?}"
    );
}

//! The WIT capability imports, called from a component guest
//! (sample-policies/test-only/host-calls) with fuzzed arguments: log
//! records, Kubernetes reads answered by a loopback API server whose status
//! and body are fuzzed too, SubjectAccessReviews, and the oci and crypto
//! calls. Every call must end as an answer or a host-error value: the guest
//! then accepts with one outcome per call. A trap, a missing outcome or a
//! host panic fails the target. `net` is left out: a lookup would leave the
//! machine.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::sync::{Arc, OnceLock};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use palisade_host::metadata::ContextAwareResource;
use palisade_host::{
    EngineConfig, Grants, KubernetesAccess, LoadedPolicy, PolicyConfig, PolicyEngine, PolicyLoader,
    PolicyRequest,
};
use serde_json::{json, Value};

#[derive(Arbitrary, Debug)]
enum Call {
    Log {
        level: u8,
        message: String,
        fields: Vec<(String, String)>,
    },
    GetResource {
        api_version: Kind,
        name: String,
        namespace: Option<String>,
    },
    ListResources {
        api_version: Kind,
        namespace: Option<String>,
        label_selector: Option<String>,
        field_selector: Option<String>,
    },
    CanI(String),
    ManifestDigest(String),
    Manifest(String),
    Verify(String),
    IsCertificateTrusted(String),
}

/// A kind the policy may read (so that the call reaches the API server) or
/// any other (refused before it).
#[derive(Arbitrary, Debug)]
enum Kind {
    Pod,
    Namespace,
    Deployment,
    Other(String, String),
}

impl Kind {
    fn api_version_and_kind(&self) -> (String, String) {
        match self {
            Self::Pod => ("v1".into(), "Pod".into()),
            Self::Namespace => ("v1".into(), "Namespace".into()),
            Self::Deployment => ("apps/v1".into(), "Deployment".into()),
            Self::Other(api_version, kind) => (api_version.clone(), kind.clone()),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    api_status: u16,
    api_body: String,
    calls: Vec<Call>,
}

impl Call {
    /// The guest's settings entry for this call.
    fn to_json(&self) -> Value {
        match self {
            Self::Log {
                level,
                message,
                fields,
            } => json!({"log": {"level": level, "message": message, "fields": fields}}),
            Self::GetResource {
                api_version,
                name,
                namespace,
            } => {
                let (api_version, kind) = api_version.api_version_and_kind();
                json!({"get_resource": {"api_version": api_version, "kind": kind, "name": name, "namespace": namespace}})
            }
            Self::ListResources {
                api_version,
                namespace,
                label_selector,
                field_selector,
            } => {
                let (api_version, kind) = api_version.api_version_and_kind();
                json!({"list_resources": {"api_version": api_version, "kind": kind, "namespace": namespace,
                    "label_selector": label_selector, "field_selector": field_selector}})
            }
            Self::CanI(review) => json!({"can_i": review}),
            Self::ManifestDigest(image) => json!({"manifest_digest": image}),
            Self::Manifest(image) => json!({"manifest": image}),
            Self::Verify(request) => json!({"verify": request}),
            Self::IsCertificateTrusted(request) => json!({"is_certificate_trusted": request}),
        }
    }
}

struct Setup {
    policy: LoadedPolicy,
    api_server: common::Peer,
    request: PolicyRequest,
    _runtime: tokio::runtime::Runtime,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::var("PALISADE_POLICY_DIR")
            .expect("PALISADE_POLICY_DIR names the built sample policies (make policies)");
        let path = std::path::Path::new(&dir).join("host-calls.wasm");
        let wasm = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (make policies builds it)", path.display()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let api_server = common::Peer::start();
        // As the policy-server builds its access to the cluster.
        let url = format!("http://{}", api_server.addr)
            .parse()
            .expect("a URL");
        let access =
            KubernetesAccess::from_config(kube::Config::new(url), runtime.handle().clone())
                .expect("a client");
        let mut config = PolicyConfig::new("host-calls");
        config.grants = Grants::new(["kubernetes/*", "oci/*", "crypto/*"]);
        config.kubernetes = Some(Arc::new(access));
        config.context_aware = [
            ("v1", "Pod"),
            ("v1", "Namespace"),
            ("apps/v1", "Deployment"),
        ]
        .into_iter()
        .map(|(api_version, kind)| ContextAwareResource {
            api_version: api_version.into(),
            kind: kind.into(),
        })
        .collect();
        let loader = PolicyLoader::new(PolicyEngine::new(EngineConfig::default()).expect("engine"));
        let policy = loader
            .load(&wasm, "host-calls.wasm", config)
            .expect("the guest loads");
        let request = PolicyRequest::from_review_json(include_bytes!(
            "../../fixtures/admission/pod-create-unprivileged.json"
        ))
        .expect("the fixture is a review");
        Setup {
            policy,
            api_server,
            request,
            _runtime: runtime,
        }
    })
}

fuzz_target!(|input: Input| {
    let setup = setup();
    let Input {
        api_status,
        api_body,
        calls,
    } = input;
    // Any final status; 1xx are not final answers.
    let status = 200 + api_status % 400;
    let body = api_body.into_bytes();
    setup.api_server.route(move |_path| common::Answer {
        status,
        content_type: "application/json".into(),
        headers: Vec::new(),
        body: body.clone(),
    });
    let settings = json!({"calls": calls.iter().map(Call::to_json).collect::<Vec<_>>()});
    let verdict = setup
        .policy
        .validate(&setup.request, &settings.to_string())
        .unwrap_or_else(|e| panic!("the guest must complete: {e}"));
    assert!(verdict.accepted, "{verdict:?}");
    let outcomes = verdict.warnings.first().map_or(0, |w| {
        if w.is_empty() {
            0
        } else {
            w.split(", ").count()
        }
    });
    assert_eq!(outcomes, calls.len(), "one outcome per call: {verdict:?}");
});

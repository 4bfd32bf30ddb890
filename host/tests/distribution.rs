//! Policy distribution against real servers on loopback: the CNCF
//! distribution registry (plain, TLS from a test CA, htpasswd auth) and an
//! HTTPS file server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use palisade_testkit as common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::pki::TestCa;
use common::registry::{docker_config, Registry, RegistryOptions};
use common::{fixture, loader, policy_path};
use palisade_host::fetch::{DockerCredentials, FetchError, Fetcher, FetcherOptions};
use palisade_host::PolicyConfig;

fn fetcher(store: &std::path::Path, sources: &str, docker: Option<&std::path::Path>) -> Fetcher {
    Fetcher::new(FetcherOptions {
        store_dir: store.to_owned(),
        sources: serde_yaml::from_str(sources).unwrap(),
        credentials: docker
            .map(|p| DockerCredentials::from_file(p).unwrap())
            .unwrap_or_default(),
        max_module_bytes: None,
    })
    .unwrap()
}

fn module() -> Vec<u8> {
    std::fs::read(policy_path("pod-privileged")).unwrap()
}

/// The OCI manifest the registry stores for `repository:tag`.
async fn stored_manifest(registry: &Registry, repository: &str, tag: &str) -> serde_json::Value {
    common::server::plain_client()
        .get(format!(
            "http://{}/v2/{repository}/manifests/{tag}",
            registry.host
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn assert_runs(path: &std::path::Path) {
    let policy = loader()
        .load_file(path, PolicyConfig::new("fetched"))
        .unwrap();
    assert!(
        !policy
            .validate(&fixture("pod-create-privileged.json"), "{}")
            .unwrap()
            .accepted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_by_tag_and_by_digest_and_run() {
    let registry = Registry::start(RegistryOptions::default());
    let store = tempfile::tempdir().unwrap();
    let f = fetcher(store.path(), &registry.sources_yaml(), None);
    let tag = format!("registry://{}/policies/pod-privileged:v1", registry.host);
    let pinned = f.push(&module(), &tag).await.unwrap();
    let (repository, manifest_digest) = pinned.split_once('@').unwrap();
    assert_eq!(
        repository,
        format!("{}/policies/pod-privileged", registry.host)
    );
    assert!(manifest_digest.starts_with("sha256:"), "{pinned}");

    let by_tag = f.fetch(&tag).await.unwrap();
    assert_eq!(
        by_tag.digest.as_deref(),
        Some(palisade_host::module_digest(&module()).as_str())
    );
    assert_runs(&by_tag.path);
    let by_digest = f
        .fetch(&format!(
            "{}/policies/pod-privileged@{manifest_digest}",
            registry.host
        ))
        .await
        .unwrap();
    assert_eq!(by_digest.path, by_tag.path);

    // The manifest carries Kubewarden's media types and the metadata annotations.
    let manifest = stored_manifest(&registry, "policies/pod-privileged", "v1").await;
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.wasm.content.layer.v1+wasm"
    );
    assert_eq!(
        manifest["annotations"]["io.kubewarden.policy.title"],
        "pod-privileged"
    );

    // Multi-line annotations (Kubewarden's `usage`) survive the push: the
    // manifest is standard JSON, with the newline escaped.
    let labels = std::fs::read(policy_path("required-labels")).unwrap();
    let labels_tag = format!("{}/policies/required-labels:v1", registry.host);
    f.push(&labels, &labels_tag).await.unwrap();
    let pulled = f.fetch(&labels_tag).await.unwrap();
    assert_eq!(std::fs::read(&pulled.path).unwrap(), labels);
    let manifest = stored_manifest(&registry, "policies/required-labels", "v1").await;
    let usage = manifest["annotations"]["io.kubewarden.policy.usage"]
        .as_str()
        .unwrap();
    assert!(usage.contains("settings:\n  labels:"), "{usage}");

    let missing = f
        .fetch(&format!("{}/policies/nope:v1", registry.host))
        .await
        .unwrap_err();
    assert!(matches!(missing, FetchError::NotFound(_)), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_registry_with_a_test_ca_and_htpasswd_auth() {
    let registry = Registry::start(RegistryOptions {
        tls: true,
        user: Some(("alice", "s3cret")),
    });
    let work = tempfile::tempdir().unwrap();
    let good = docker_config(work.path(), &registry.host, "alice", "s3cret");
    let bad = docker_config(work.path(), &registry.host, "alice", "wrong");
    let reference = format!("{}/policies/pod-privileged:v2", registry.host);

    let f = fetcher(
        &work.path().join("store"),
        &registry.sources_yaml(),
        Some(&good),
    );
    f.push(&module(), &reference).await.unwrap();
    let fetched = f.fetch(&reference).await.unwrap();
    assert_runs(&fetched.path);

    let wrong = fetcher(
        &work.path().join("store2"),
        &registry.sources_yaml(),
        Some(&bad),
    );
    let err = wrong.fetch(&reference).await.unwrap_err();
    assert!(matches!(err, FetchError::Unauthorized(_)), "{err:?}");
    assert!(err.to_string().contains("401"), "{err}");
    let anonymous = fetcher(&work.path().join("store3"), &registry.sources_yaml(), None);
    assert!(matches!(
        anonymous.fetch(&reference).await.unwrap_err(),
        FetchError::Unauthorized(_)
    ));

    // Without the CA the certificate is not trusted, and the error says so.
    let untrusting = fetcher(&work.path().join("store4"), "{}", Some(&good));
    let err = untrusting.fetch(&reference).await.unwrap_err();
    assert!(matches!(err, FetchError::Tls { .. }), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_pinned_modules_survive_the_registry_going_away_and_damage_is_repaired() {
    let registry = Registry::start(RegistryOptions::default());
    let store = tempfile::tempdir().unwrap();
    let sources = registry.sources_yaml();
    let f = fetcher(store.path(), &sources, None);
    let pinned = f
        .push(&module(), &format!("{}/policies/pinned:v1", registry.host))
        .await
        .unwrap();
    let first = f.fetch(&pinned).await.unwrap();
    let host = registry.host.clone();
    let dir = registry.stop();

    // Registry down: a new fetcher (a restart) still serves the pinned module.
    let again = fetcher(store.path(), &sources, None)
        .fetch(&pinned)
        .await
        .unwrap();
    assert_eq!(again.path, first.path);
    // A tag needs the registry.
    let err = fetcher(store.path(), &sources, None)
        .fetch(&format!("{host}/policies/pinned:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Connect(_)), "{err:?}");

    // Damage the stored module: it is detected and fetched again.
    std::fs::write(&first.path, b"\0asm tampered").unwrap();
    let port = host.rsplit(':').next().unwrap().parse().unwrap();
    let _registry = Registry::start_in(dir, RegistryOptions::default(), Some(port));
    let repaired = fetcher(store.path(), &sources, None)
        .fetch(&pinned)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&repaired.path).unwrap(), module());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_that_are_not_wasm_or_too_large_are_refused() {
    let registry = Registry::start(RegistryOptions::default());
    let store = tempfile::tempdir().unwrap();
    let sources = registry.sources_yaml();
    let f = fetcher(store.path(), &sources, None);
    // An image that is not a wasm artifact.
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    });
    let reference: oci_client::Reference =
        format!("{}/images/app:1", registry.host).parse().unwrap();
    let layer = oci_client::client::ImageLayer::oci_v1(b"not wasm".to_vec(), None);
    let config = oci_client::client::Config::oci_v1(b"{}".to_vec(), None);
    client
        .push(
            &reference,
            &[layer],
            config,
            &oci_client::secrets::RegistryAuth::Anonymous,
            None,
        )
        .await
        .unwrap();
    let err = f
        .fetch(&format!("{}/images/app:1", registry.host))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NotWasm { .. }), "{err:?}");

    f.push(&module(), &format!("{}/policies/big:v1", registry.host))
        .await
        .unwrap();
    let small = Fetcher::new(FetcherOptions {
        store_dir: store.path().join("small"),
        sources: serde_yaml::from_str(&sources).unwrap(),
        credentials: DockerCredentials::default(),
        max_module_bytes: Some(1024),
    })
    .unwrap();
    let err = small
        .fetch(&format!("{}/policies/big:v1", registry.host))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::TooLarge { limit: 1024, .. }),
        "{err:?}"
    );
}

/// A tiny file server on loopback, over TLS when a CA is given, counting requests.
async fn file_server(body: Vec<u8>, ca: Option<&TestCa>) -> (String, Arc<AtomicUsize>) {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let acceptor = ca.map(|ca| {
        let (cert, key) = ca.leaf("files");
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let body = body.clone();
            let counter = counter.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let body = body.clone();
                    async move {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(s), service).await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    (addr.to_string(), hits)
}

use rustls::pki_types::pem::PemObject;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_http_sources() {
    let ca = TestCa::new("files CA");
    let (https_host, hits) = file_server(module(), Some(&ca)).await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("ca.crt"), ca.pem()).unwrap();
    let sources = format!(
        "source_authorities:\n  \"{https_host}\":\n    - type: Path\n      path: {}\n",
        work.path().join("ca.crt").display()
    );
    let f = fetcher(&work.path().join("store"), &sources, None);
    let url = format!("https://{https_host}/pod-privileged.wasm");
    // Concurrent fetches of one module download it once.
    let results = futures::future::join_all((0..6).map(|_| f.fetch(&url))).await;
    for r in &results {
        assert_runs(&r.as_ref().unwrap().path);
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "one download for six concurrent fetches"
    );

    let untrusting = fetcher(&work.path().join("store2"), "{}", None);
    assert!(matches!(
        untrusting.fetch(&url).await.unwrap_err(),
        FetchError::Tls { .. }
    ));

    let (http_host, _) = file_server(module(), None).await;
    let plain = format!("http://{http_host}/pod-privileged.wasm");
    let err = f.fetch(&plain).await.unwrap_err();
    assert!(matches!(err, FetchError::InsecureRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("insecure_sources"), "{err}");
    let insecure = fetcher(
        &work.path().join("store3"),
        &format!("insecure_sources: [\"{http_host}\"]"),
        None,
    );
    assert_runs(&insecure.fetch(&plain).await.unwrap().path);

    let (garbage_host, _) = file_server(b"<html>not a module</html>".to_vec(), None).await;
    let garbage = fetcher(
        &work.path().join("store4"),
        &format!("insecure_sources: [\"{garbage_host}\"]"),
        None,
    );
    let err = garbage
        .fetch(&format!("http://{garbage_host}/x.wasm"))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NotWasm { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_server_starts_from_the_registry_and_restarts_without_it() {
    let registry = Registry::start(RegistryOptions::default());
    let work = tempfile::tempdir().unwrap();
    let sources = registry.sources_yaml();
    let f = fetcher(&work.path().join("push-store"), &sources, None);
    let pinned = format!(
        "registry://{}",
        f.push(
            &module(),
            &format!("registry://{}/policies/pod-privileged:v1", registry.host),
        )
        .await
        .unwrap()
    );
    let yaml = format!(
        "pinned:\n  module: {pinned}\nmonitor:\n  module: {pinned}\n  policyMode: monitor\n"
    );
    let policies = work.path().join("policies.yml");
    std::fs::write(&policies, yaml).unwrap();
    let options = || {
        let mut o = common::server::options(work.path(), policies.clone());
        o.fetch = FetcherOptions {
            store_dir: work.path().join("modules"),
            sources: serde_yaml::from_str(&sources).unwrap(),
            credentials: DockerCredentials::default(),
            max_module_bytes: None,
        };
        o
    };
    let check = |server: &palisade_host::server::RunningServer| {
        let url = format!("http://127.0.0.1:{}/validate/pinned", server.addr.port());
        async move {
            let (status, response) = common::server::post_fixture(
                &common::server::plain_client(),
                &url,
                "pod-create-privileged.json",
            )
            .await;
            assert_eq!(status, 200);
            assert_eq!(response["response"]["allowed"], false);
        }
    };
    let first = palisade_host::server::start(options()).await.unwrap();
    check(&first).await;
    first.shutdown().await;
    drop(registry.stop());
    let second = palisade_host::server::start(options()).await.unwrap();
    check(&second).await;
    second.shutdown().await;
}

/// The `oci` capability of a component, answered by the server's registry
/// client; one digest look-up per image for 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_look_images_up_through_the_servers_registry_client() {
    let registry = Registry::start(RegistryOptions::default());
    let store = tempfile::tempdir().unwrap();
    let f = fetcher(store.path(), &registry.sources_yaml(), None);
    let image = format!("{}/images/app:v1", registry.host);
    let pinned = f.push(&module(), &image).await.unwrap();
    let (_, digest) = pinned.split_once('@').unwrap();

    let mut config = PolicyConfig::new("look-ups");
    // host-calls imports kubernetes and crypto too: each needs a grant to link.
    config.grants = palisade_host::Grants::new(["oci/*", "kubernetes/can_i", "crypto/*"]);
    config.oci = Some(Arc::new(palisade_host::OciAccess::new(
        f.clone(),
        tokio::runtime::Handle::current(),
    )));
    let policy = Arc::new(
        loader()
            .load_file(&policy_path("host-calls"), config)
            .unwrap(),
    );
    let settings = serde_json::json!({"calls": [
        {"manifest_digest": image},
        {"manifest": image},
        {"manifest_digest": format!("{}/images/missing:v1", registry.host)},
        {"manifest_config": image},
    ]})
    .to_string();
    let ask = || {
        let (policy, settings) = (policy.clone(), settings.clone());
        // Host calls wait on the runtime: evaluate off it, as the server does.
        tokio::task::spawn_blocking(move || {
            policy
                .validate(&fixture("pod-delete.json"), &settings)
                .unwrap()
                .warnings
        })
    };
    let served = common::server::plain_client()
        .get(format!(
            "http://{}/v2/images/app/manifests/v1",
            registry.host
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let warnings = ask().await.unwrap();
    let outcomes: Vec<&str> = warnings[0].split(", ").collect();
    assert_eq!(outcomes[0], format!("ok {digest}"));
    // The manifest exactly as the registry serves it.
    assert_eq!(outcomes[1], format!("ok {}", served.len()));
    assert_eq!(outcomes[2], "failed");
    assert_eq!(outcomes[3], format!("ok {digest}"));

    // The tag moves; within 60 s the policy still gets the answer it had.
    let moved = f
        .push(
            &std::fs::read(policy_path("required-labels")).unwrap(),
            &image,
        )
        .await
        .unwrap();
    assert_ne!(moved, pinned);
    let warnings = ask().await.unwrap();
    assert!(
        warnings[0].starts_with(&format!("ok {digest}, ")),
        "{warnings:?}"
    );
}

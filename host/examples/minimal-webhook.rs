//! The benchmark's minimal limit: an admission webhook written directly on
//! hyper and serde_json with the privileged-container check of
//! `pod-privileged`, and nothing else: no policy set, no sandbox, no
//! logging, no metrics, no connection limits. `native-baseline-server`
//! shares the policy-server's request path and so hides its cost; the
//! policy-server's throughput as a share of this server's shows it.
//!
//! Usage: `minimal-webhook <port> <readiness port> [<cert> <key>]`

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Review {
    request: AdmissionRequest,
}

#[derive(Deserialize)]
struct AdmissionRequest {
    uid: String,
    kind: Kind,
    operation: String,
    #[serde(default)]
    object: Option<Pod>,
}

#[derive(Deserialize)]
struct Kind {
    kind: String,
}

#[derive(Deserialize)]
struct Pod {
    #[serde(default)]
    spec: PodSpec,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    init_containers: Vec<Container>,
    #[serde(default)]
    ephemeral_containers: Vec<Container>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    #[serde(default)]
    name: String,
    #[serde(default)]
    security_context: Option<SecurityContext>,
}

#[derive(Deserialize)]
struct SecurityContext {
    #[serde(default)]
    privileged: Option<bool>,
}

/// The names of the privileged containers (empty: admitted).
fn privileged(request: &AdmissionRequest) -> Vec<&str> {
    if request.kind.kind != "Pod" || !matches!(request.operation.as_str(), "CREATE" | "UPDATE") {
        return Vec::new();
    }
    let Some(pod) = &request.object else {
        return Vec::new();
    };
    let spec = &pod.spec;
    spec.containers
        .iter()
        .chain(&spec.init_containers)
        .chain(&spec.ephemeral_containers)
        .filter(|c| c.security_context.as_ref().and_then(|s| s.privileged) == Some(true))
        .map(|c| c.name.as_str())
        .collect()
}

fn answer(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let Ok(body) = request.into_body().collect().await else {
        return Ok(answer(StatusCode::BAD_REQUEST, Vec::new()));
    };
    let Ok(review) = serde_json::from_slice::<Review>(&body.to_bytes()) else {
        return Ok(answer(StatusCode::BAD_REQUEST, Vec::new()));
    };
    let request = &review.request;
    let names = privileged(request);
    let response = if names.is_empty() {
        json!({"uid": request.uid, "allowed": true})
    } else {
        json!({"uid": request.uid, "allowed": false, "status": {
            "message": format!("privileged containers are not allowed: {}", names.join(", ")),
            "code": 400,
        }})
    };
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    Ok(answer(
        StatusCode::OK,
        serde_json::to_vec(&review).unwrap_or_default(),
    ))
}

fn tls(cert: &str, key: &str) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args.first().map(|p| p.parse()).transpose()?.unwrap_or(3200);
    let probe: u16 = args.get(1).map(|p| p.parse()).transpose()?.unwrap_or(3201);
    let acceptor = match (args.get(2), args.get(3)) {
        (Some(cert), Some(key)) => Some(tls(cert, key)?),
        _ => None,
    };
    // Readiness for the benchmark script: any request on the probe port is answered 200.
    let probe = tokio::net::TcpListener::bind(("127.0.0.1", probe)).await?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = probe.accept().await {
            tokio::spawn(async move {
                let ready = hyper::service::service_fn(|_| async {
                    Ok::<_, Infallible>(answer(StatusCode::OK, Vec::new()))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), ready)
                    .await;
            });
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let service = hyper::service::service_fn(handle);
            let builder = auto::Builder::new(TokioExecutor::new());
            match acceptor {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
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
}

//! Request handling: routing, body limits, evaluation off the runtime's
//! threads, responses in the AdmissionReview shape, metrics and logs.
//!
//! Evaluations run on the blocking pool, not on the runtime's threads:
//! wasmtime-wasi's synchronous WASI functions (a guest writing to stderr,
//! every WASI call of a legacy policy) block on the ambient runtime, which
//! panics on a runtime thread; and a policy at its deadline would hold a
//! runtime thread for that long.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;

use super::body::{self, Answer, BodyError};
use super::metrics::{EvaluationLabels, Metrics};
use super::policies::{Endpoint, Outcome, PolicySet, ServedPolicy};
use crate::{AdmissionResponse, PolicyRequest, RawRequest};

/// Everything a request handler needs; shared by all connections.
#[derive(Debug)]
pub struct AppState {
    pub policies: ArcSwap<PolicySet>,
    /// The hash of the policies text being served ([`super::config_hash`]).
    pub config_hash: ArcSwap<String>,
    pub metrics: Metrics,
    /// Bounds concurrent evaluations to the number of workers.
    pub workers: Semaphore,
    pub max_body_bytes: usize,
    /// Time to receive a request's body.
    pub body_read_timeout: std::time::Duration,
    /// Requests from this namespace are accepted without evaluation.
    pub always_accept_namespace: Option<String>,
    /// Set once the first policy set is loaded; cleared when draining.
    pub ready: AtomicBool,
    /// Set on SIGTERM: the server still answers, reports not ready, and
    /// closes each HTTP/1.1 connection after its response, so that clients
    /// reconnect to the replicas that stay (HTTP/2 gets GOAWAY at shutdown).
    pub draining: AtomicBool,
}

impl AppState {
    /// Serves `set`, loaded from the policies `text`, from now on.
    pub fn serve(&self, set: PolicySet, text: &str) {
        let hash = super::config_hash(text);
        self.metrics.set_config_hash(&hash);
        self.policies.store(Arc::new(set));
        self.config_hash.store(Arc::new(hash));
    }
}

/// The readiness answer's header naming the configuration served.
pub const CONFIG_HASH_HEADER: &str = "palisade-config-hash";

type Body = Full<Bytes>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<Body> {
    let body = serde_json::json!({"error": message.to_string()}).to_string();
    reply(status, "application/json", body)
}

/// An AdmissionReview answer.
fn review(response: &AdmissionResponse) -> Response<Body> {
    reply(StatusCode::OK, "application/json", response.review_json())
}

/// Routes one request of the main (webhook) port.
pub async fn handle(state: Arc<AppState>, request: Request<Incoming>) -> Response<Answer> {
    let http1 = request.version() < hyper::Version::HTTP_2;
    let mut response = route(state.clone(), request).await;
    if http1 && state.draining.load(Ordering::Acquire) {
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn route(state: Arc<AppState>, request: Request<Incoming>) -> Response<Answer> {
    let (parts, mut body) = request.into_parts();
    let path = parts.uri.path();
    let route = path
        .strip_prefix("/validate/")
        .map(|id| (Route::Validate, id))
        .or_else(|| path.strip_prefix("/audit/").map(|id| (Route::Audit, id)))
        .or_else(|| {
            path.strip_prefix("/validate_raw/")
                .map(|id| (Route::Raw, id))
        });
    let Some((route, id)) = route else {
        let answer = error(StatusCode::NOT_FOUND, format!("no route for {path}"));
        return early(&state, body, answer).await;
    };
    if parts.method != Method::POST {
        let answer = error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        return early(&state, body, answer).await;
    }
    let id = id.to_owned();
    let Some(policy) = state.policies.load().get(&id) else {
        let answer = error(StatusCode::NOT_FOUND, format!("unknown policy: {id}"));
        return early(&state, body, answer).await;
    };
    let bytes = match body::read(&mut body, state.max_body_bytes, state.body_read_timeout).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => {
            let answer = error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {} bytes", state.max_body_bytes),
            );
            return early(&state, body, answer).await;
        }
        Err(BodyError::Timeout) => {
            // No second wait to drain a body that is not coming.
            let answer = error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    state.body_read_timeout.as_secs_f32()
                ),
            );
            return answer.map(|answer| Answer::holding(answer, body));
        }
        Err(BodyError::Read(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}"),
            )
            .map(Answer::from)
        }
    };
    evaluate(state, route, id, policy, bytes)
        .await
        .map(Answer::from)
}

/// Answers before the request body is read. The rest of the body is read
/// and discarded first while it keeps coming (bounded in size and time), so
/// the request is complete when the answer goes out; a body that stalls
/// (its client waits for the answer) stays open until the answer is sent,
/// so that HTTP/2 ends the stream with NO_ERROR after it rather than with
/// CANCEL, which would discard it.
async fn early(state: &AppState, mut body: Incoming, answer: Response<Body>) -> Response<Answer> {
    body::drain(&mut body, state.body_read_timeout).await;
    answer.map(|answer| Answer::holding(answer, body))
}

/// Evaluates a request whose body is read.
async fn evaluate(
    state: Arc<AppState>,
    route: Route,
    id: String,
    policy: Arc<ServedPolicy>,
    body: Bytes,
) -> Response<Body> {
    let endpoint = match route {
        Route::Validate => Endpoint::Validate,
        Route::Audit => Endpoint::Audit,
        Route::Raw => Endpoint::ValidateRaw,
    };
    let Ok(_permit) = state.workers.acquire().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down",
        );
    };
    let started = Instant::now();
    let worker_state = state.clone();
    let evaluation = tokio::task::spawn_blocking(move || {
        if endpoint == Endpoint::ValidateRaw {
            let request = RawRequest::from_body(&body)?;
            let outcome = policy.evaluate(&id, &request, endpoint);
            return Ok(Evaluated::Raw(request, id, outcome));
        }
        let request = PolicyRequest::from_review_json(&body)?;
        if let (Some(ns), Some(always)) =
            (request.namespace(), &worker_state.always_accept_namespace)
        {
            if ns == always {
                return Ok(Evaluated::Skipped(request));
            }
        }
        let outcome = policy.evaluate(&id, &request, endpoint);
        Ok::<_, crate::EvalError>(Evaluated::Admission(request, id, outcome))
    })
    .await;
    let evaluated = match evaluation {
        Ok(Ok(evaluated)) => evaluated,
        Ok(Err(e)) => return error(StatusCode::BAD_REQUEST, e),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("evaluation task failed: {e}"),
            )
        }
    };
    let elapsed = started.elapsed();
    match evaluated {
        Evaluated::Skipped(request) => review(&AdmissionResponse::accepted(request.uid())),
        Evaluated::Admission(request, id, outcome) => {
            let facts = RequestFacts {
                uid: request.uid(),
                namespace: request.namespace(),
                operation: request.operation(),
                kind: request.kind(),
            };
            record(&state, id, endpoint, facts, &outcome, elapsed);
            review(&outcome.response)
        }
        Evaluated::Raw(request, id, outcome) => {
            let facts = RequestFacts {
                uid: request.uid(),
                namespace: None,
                operation: "",
                kind: "",
            };
            record(&state, id, endpoint, facts, &outcome, elapsed);
            reply(
                StatusCode::OK,
                "application/json",
                outcome.response.raw_review_json(),
            )
        }
    }
}

/// What the blocking part of an evaluation hands back. Moved once per
/// request and never stored: boxing the large variants would only add an
/// allocation to every request.
#[allow(clippy::large_enum_variant)]
enum Evaluated {
    /// From the always-accepted namespace: no policy ran.
    Skipped(PolicyRequest),
    Admission(PolicyRequest, String, Outcome),
    Raw(RawRequest, String, Outcome),
}

/// What metrics and logs say of the request (empty for raw documents).
struct RequestFacts<'a> {
    uid: &'a str,
    namespace: Option<&'a str>,
    operation: &'static str,
    kind: &'a str,
}

/// Counts one evaluation and logs it.
fn record(
    state: &AppState,
    id: String,
    endpoint: Endpoint,
    request: RequestFacts<'_>,
    outcome: &Outcome,
    elapsed: std::time::Duration,
) {
    tracing::info!(
        uid = %request.uid,
        policy = %id,
        endpoint = endpoint.as_str(),
        mode = outcome.mode.as_str(),
        accepted = outcome.accepted,
        allowed = outcome.response.allowed,
        mutated = outcome.mutated,
        error = outcome.error.unwrap_or(""),
        latency_us = elapsed.as_micros() as u64,
        "evaluated"
    );
    let labels = EvaluationLabels {
        policy_name: id,
        policy_mode: outcome.mode.as_str(),
        request_operation: request.operation,
        resource_kind: request.kind.to_owned(),
        accepted: outcome.accepted,
        mutated: outcome.mutated,
        request_origin: endpoint.as_str(),
        error: outcome.error.unwrap_or_default(),
    };
    state.metrics.record(
        labels,
        request.namespace,
        outcome.response.status.as_ref().map(|s| s.code),
        elapsed,
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Validate,
    Audit,
    Raw,
}

/// Routes one request of the readiness port.
pub async fn handle_probe(state: Arc<AppState>, request: Request<Incoming>) -> Response<Body> {
    let ready = state.ready.load(Ordering::Acquire);
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/readiness") if ready => {
            let mut answer = reply(StatusCode::OK, "text/plain", "ready");
            if let Ok(hash) = hyper::header::HeaderValue::from_str(&state.config_hash.load()) {
                answer.headers_mut().insert(CONFIG_HASH_HEADER, hash);
            }
            answer
        }
        (&Method::GET, "/readiness") => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            if state.draining.load(Ordering::Acquire) {
                "draining"
            } else {
                "loading policies"
            },
        ),
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

//! Core-module policies, on the same engine, limits and capabilities as
//! components: Kubewarden's waPC protocol ([`wapc`]) and its `wasi`
//! execution mode ([`wasi_command`]). Existing policy binaries run unchanged.

mod wapc;
mod wasi_command;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use wasmtime::{InstancePre, Linker, Module, Store};

pub(crate) use wapc::AbiViolation;
use wapc::CoreState;

use crate::capabilities::PolicyContext;
use crate::error::{EvalError, LoadError, SettingsError};
use crate::limits::PolicyLimits;
use crate::{PolicyEngine, PolicyKind, Verdict};

/// A core-module policy ready to instantiate.
pub(crate) struct CoreRuntime {
    pre: InstancePre<CoreState>,
    /// [`PolicyKind::Wapc`] or [`PolicyKind::Wasi`].
    kind: PolicyKind,
}

impl CoreRuntime {
    pub(crate) fn new(
        engine: &wasmtime::Engine,
        module: &Module,
        kind: PolicyKind,
        policy: &str,
    ) -> Result<Self, LoadError> {
        let mut linker: Linker<CoreState> = Linker::new(engine);
        let engine_error = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut CoreState| &mut s.wasi)
            .map_err(engine_error)?;
        wapc::add_to_linker(&mut linker).map_err(engine_error)?;
        let pre = linker
            .instantiate_pre(module)
            .map_err(|e| LoadError::UnknownImport {
                policy: policy.to_owned(),
                import: format!("{e:#}"),
            })?;
        Ok(Self { pre, kind })
    }

    pub(crate) fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// Runs `operation` (waPC) or `command` (WASI) with `payload`.
    fn call(
        &self,
        env: &EvalEnv<'_>,
        operation: &str,
        command: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, EvalError> {
        if self.kind == PolicyKind::Wasi {
            wasi_command::run(&self.pre, env, command, payload)
        } else {
            wapc::guest_call(&self.pre, env, operation, payload)
        }
    }

    /// `validate` with Kubewarden's payload; the answer as a [`Verdict`].
    pub(crate) fn validate(
        &self,
        env: &EvalEnv<'_>,
        request_json: &str,
        settings: &str,
    ) -> Result<Verdict, EvalError> {
        let payload = format!(r#"{{"request":{request_json},"settings":{settings}}}"#).into_bytes();
        let answer = self.call(env, "validate", "validate", payload)?;
        let response: KubewardenResponse = serde_json::from_slice(&answer)
            .map_err(|e| EvalError::InvalidResponse(format!("not a ValidationResponse: {e}")))?;
        Ok(response.into())
    }

    /// `validate_settings` (`validate-settings` in WASI mode).
    pub(crate) fn validate_settings(
        &self,
        env: &EvalEnv<'_>,
        settings: &str,
    ) -> Result<(), SettingsError> {
        let payload = settings.as_bytes().to_vec();
        let answer = self.call(env, "validate_settings", "validate-settings", payload);
        // Kubewarden's SDKs answer settings they cannot even parse with a
        // guest error: for the operator that is an invalid-settings verdict.
        let answer = match answer {
            Err(EvalError::PolicyError(message)) => return Err(SettingsError::Rejected(message)),
            other => other?,
        };
        let response: SettingsResponse = serde_json::from_slice(&answer).map_err(|e| {
            SettingsError::Eval(EvalError::InvalidResponse(format!(
                "not a settings validation response: {e}"
            )))
        })?;
        if response.valid {
            Ok(())
        } else {
            Err(SettingsError::Rejected(
                response
                    .message
                    .unwrap_or_else(|| "settings are not valid".into()),
            ))
        }
    }

    /// The protocol version a waPC policy speaks (`"v1"`).
    pub(crate) fn protocol_version(&self, env: &EvalEnv<'_>) -> Result<String, EvalError> {
        let answer = wapc::guest_call(&self.pre, env, "protocol_version", Vec::new())?;
        serde_json::from_slice(&answer).map_err(|e| EvalError::InvalidResponse(e.to_string()))
    }
}

/// What one evaluation needs from the loaded policy: engine, limits, context.
pub(crate) struct EvalEnv<'a> {
    pub engine: &'a PolicyEngine,
    pub limits: PolicyLimits,
    pub context: &'a Arc<PolicyContext>,
}

impl EvalEnv<'_> {
    /// A store for one evaluation; `wasi` gets the stderr the host keeps.
    pub(super) fn store(&self, wasi: &mut wasmtime_wasi::WasiCtxBuilder) -> Store<CoreState> {
        let state = CoreState::new(
            self.context.clone(),
            self.limits.effective_memory_bytes(),
            wasi,
        );
        self.engine.store(state, self.limits.timeout)
    }

    pub(super) fn classify(&self, error: wasmtime::Error, store: &Store<CoreState>) -> EvalError {
        crate::policy::classify(error, self.limits, &store.data().stderr)
    }
}

/// Kubewarden's ValidationResponse (snake_case).
#[derive(Debug, Deserialize)]
struct KubewardenResponse {
    accepted: bool,
    message: Option<String>,
    code: Option<u16>,
    mutated_object: Option<serde_json::Value>,
    audit_annotations: Option<BTreeMap<String, String>>,
    warnings: Option<Vec<String>>,
}

impl From<KubewardenResponse> for Verdict {
    fn from(r: KubewardenResponse) -> Self {
        Verdict {
            accepted: r.accepted,
            message: r.message,
            code: r.code,
            mutated_object: r.mutated_object.filter(|o| !o.is_null()),
            warnings: r.warnings.unwrap_or_default(),
            audit_annotations: r.audit_annotations.unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct SettingsResponse {
    valid: bool,
    message: Option<String>,
}

//! Core-module policies: Kubewarden's waPC protocol and its `wasi`
//! execution mode, on the same engine, limits and capabilities as
//! components. Existing policy binaries run unchanged.

mod abi;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use wasmtime::{InstancePre, Linker, Module, Store};
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

pub(crate) use abi::AbiViolation;
use abi::CoreState;

use crate::capabilities::PolicyContext;
use crate::error::{EvalError, LoadError, SettingsError};
use crate::limits::PolicyLimits;
use crate::{PolicyEngine, Verdict};

/// Largest answer a WASI-mode policy may write to stdout.
const MAX_WASI_OUTPUT: usize = 16 << 20;

/// How a core module is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CoreMode {
    /// `__guest_call` with the waPC protocol.
    Wapc,
    /// A WASI command: argv, stdin, stdout.
    Wasi,
}

/// A core-module policy ready to instantiate.
pub(crate) struct CoreRuntime {
    pre: InstancePre<CoreState>,
    mode: CoreMode,
}

impl CoreRuntime {
    pub(crate) fn new(
        engine: &wasmtime::Engine,
        module: &Module,
        mode: CoreMode,
        policy: &str,
    ) -> Result<Self, LoadError> {
        let mut linker: Linker<CoreState> = Linker::new(engine);
        let engine_error = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut CoreState| &mut s.wasi)
            .map_err(engine_error)?;
        abi::add_to_linker(&mut linker).map_err(engine_error)?;
        let pre = linker
            .instantiate_pre(module)
            .map_err(|e| LoadError::UnknownImport {
                policy: policy.to_owned(),
                import: format!("{e:#}"),
            })?;
        Ok(Self { pre, mode })
    }

    pub(crate) fn mode(&self) -> CoreMode {
        self.mode
    }

    /// `validate` with Kubewarden's payload; the answer as a [`Verdict`].
    pub(crate) fn validate(
        &self,
        run: &Runner<'_>,
        request_json: &str,
        settings: &str,
    ) -> Result<Verdict, EvalError> {
        let payload = format!(r#"{{"request":{request_json},"settings":{settings}}}"#).into_bytes();
        let answer = match self.mode {
            CoreMode::Wapc => self.guest_call(run, "validate", payload)?,
            CoreMode::Wasi => self.wasi_command(run, "validate", payload)?,
        };
        let response: KubewardenResponse = serde_json::from_slice(&answer)
            .map_err(|e| EvalError::InvalidResponse(format!("not a ValidationResponse: {e}")))?;
        Ok(response.into())
    }

    /// `validate_settings` (`validate-settings` in WASI mode).
    pub(crate) fn validate_settings(
        &self,
        run: &Runner<'_>,
        settings: &str,
    ) -> Result<(), SettingsError> {
        let payload = settings.as_bytes().to_vec();
        let answer = match self.mode {
            CoreMode::Wapc => self.guest_call(run, "validate_settings", payload),
            CoreMode::Wasi => self.wasi_command(run, "validate-settings", payload),
        };
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
    pub(crate) fn protocol_version(&self, run: &Runner<'_>) -> Result<String, EvalError> {
        let answer = self.guest_call(run, "protocol_version", Vec::new())?;
        serde_json::from_slice(&answer).map_err(|e| EvalError::InvalidResponse(e.to_string()))
    }

    fn guest_call(
        &self,
        run: &Runner<'_>,
        operation: &str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, EvalError> {
        let payload_len = i32::try_from(payload.len())
            .map_err(|_| EvalError::InvalidRequest("the payload exceeds 2 GiB".into()))?;
        let operation_len = i32::try_from(operation.len()).unwrap_or(i32::MAX);
        let mut store = run.store(WasiCtxBuilder::new().build_p1());
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| run.classify(e))?;
        // Reactors initialise their runtime in `_initialize`; waPC guests
        // register their functions in `wapc_init` (or `_start`).
        for init in ["_initialize", "_start", "wapc_init"] {
            if let Ok(f) = instance.get_typed_func::<(), ()>(&mut store, init) {
                if let Err(e) = f.call(&mut store, ()) {
                    if e.downcast_ref::<I32Exit>().map(|x| x.0) != Some(0) {
                        return Err(run.classify(e));
                    }
                }
            }
        }
        let call = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "__guest_call")
            .map_err(|e| EvalError::Runtime(format!("`__guest_call`: {e:#}")))?;
        store.data_mut().exchange.operation = operation.as_bytes().to_vec();
        store.data_mut().exchange.payload = payload;
        let ok = call
            .call(&mut store, (operation_len, payload_len))
            .map_err(|e| run.classify(e))?;
        let exchange = &mut store.data_mut().exchange;
        if ok == 1 {
            Ok(exchange.response.take().unwrap_or_default())
        } else {
            let error = exchange.error.take().unwrap_or_default();
            Err(EvalError::PolicyError(format!(
                "{operation}: {}",
                String::from_utf8_lossy(&error)
            )))
        }
    }

    fn wasi_command(
        &self,
        run: &Runner<'_>,
        command: &str,
        input: Vec<u8>,
    ) -> Result<Vec<u8>, EvalError> {
        let stdout = MemoryOutputPipe::new(MAX_WASI_OUTPUT);
        let stderr = MemoryOutputPipe::new(64 << 10);
        let wasi = WasiCtxBuilder::new()
            .args(&["policy.wasm", command])
            .stdin(MemoryInputPipe::new(input))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .build_p1();
        let mut store = run.store(wasi);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| run.classify(e))?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(|e| {
                EvalError::Runtime(format!("a WASI policy must export `_start`: {e:#}"))
            })?;
        if let Err(e) = start.call(&mut store, ()) {
            match e.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => {}
                Some(I32Exit(code)) => {
                    return Err(EvalError::PolicyError(format!(
                        "{command} exited with status {code}: {}",
                        String::from_utf8_lossy(&stderr.contents())
                    )))
                }
                None => return Err(run.classify(e)),
            }
        }
        Ok(stdout.contents().to_vec())
    }
}

/// What one evaluation needs from the loaded policy: engine, limits, context.
pub(crate) struct Runner<'a> {
    pub engine: &'a PolicyEngine,
    pub limits: PolicyLimits,
    pub context: &'a Arc<PolicyContext>,
}

impl Runner<'_> {
    fn store(&self, wasi: wasmtime_wasi::p1::WasiP1Ctx) -> Store<CoreState> {
        let state = CoreState::new(
            self.context.clone(),
            self.limits.effective_memory_bytes(),
            wasi,
        );
        self.engine.store(state, self.limits.timeout)
    }

    fn classify(&self, error: wasmtime::Error) -> EvalError {
        crate::policy::classify(error, self.limits)
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

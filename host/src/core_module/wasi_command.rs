//! Kubewarden's `wasi` execution mode: the policy is a WASI command run with
//! argv `validate` or `validate-settings`, the payload on stdin and its
//! answer on stdout.

use wasmtime::InstancePre;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::wapc::CoreState;
use super::EvalEnv;
use crate::error::EvalError;

/// Largest answer a WASI-mode policy may write to stdout.
const MAX_WASI_OUTPUT: usize = 16 << 20;

/// Runs `command` with `input` on stdin in a fresh instance; its stdout.
pub(super) fn run(
    pre: &InstancePre<CoreState>,
    env: &EvalEnv<'_>,
    command: &str,
    input: Vec<u8>,
) -> Result<Vec<u8>, EvalError> {
    let stdout = MemoryOutputPipe::new(MAX_WASI_OUTPUT);
    let mut store = env.store(
        WasiCtxBuilder::new()
            .args(&["policy.wasm", command])
            .stdin(MemoryInputPipe::new(input))
            .stdout(stdout.clone()),
    );
    let instance = pre
        .instantiate(&mut store)
        .map_err(|e| env.classify(e, &store))?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|e| EvalError::Runtime(format!("a WASI policy must export `_start`: {e:#}")))?;
    if let Err(e) = start.call(&mut store, ()) {
        match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(0)) => {}
            Some(I32Exit(code)) => {
                return Err(EvalError::PolicyError(format!(
                    "{command} exited with status {code}: {}",
                    store.data().stderr.text().trim()
                )))
            }
            None => return Err(env.classify(e, &store)),
        }
    }
    Ok(stdout.contents().to_vec())
}

//! Kubewarden's waPC protocol: the host imports (`wapc` module) and the
//! guest call, implemented on wasmtime.
//!
//! Every pointer and length the guest passes is checked against its memory:
//! lengths are unsigned 32-bit values (a negative `i32` is a huge length), so
//! a bad one fails the bounds check and traps; the host never allocates a
//! guest-chosen size beyond what the guest's own memory holds.

use std::sync::Arc;

use wasmtime::{Caller, Extern, InstancePre, Linker, Memory};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::EvalEnv;
use crate::capabilities::{self, PolicyContext};
use crate::error::EvalError;
use crate::guest_output::StderrTail;
use crate::limits::MemoryLimiter;

/// Raised by a host import when the guest breaks the ABI; it traps the call.
#[derive(Debug, thiserror::Error)]
#[error("waPC guest broke the host ABI: {0}")]
pub(crate) struct AbiViolation(pub String);

/// The data of one core-module evaluation.
pub(crate) struct CoreState {
    pub wasi: WasiP1Ctx,
    /// What the guest wrote to stderr: explains its traps.
    pub stderr: StderrTail,
    limiter: MemoryLimiter,
    pub context: Arc<PolicyContext>,
    pub exchange: Exchange,
}

impl crate::limits::Limited for CoreState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

/// What the host and the guest hand each other during one `__guest_call`.
#[derive(Debug, Default)]
pub(crate) struct Exchange {
    pub operation: Vec<u8>,
    pub payload: Vec<u8>,
    pub response: Option<Vec<u8>>,
    pub error: Option<Vec<u8>>,
    host_response: Vec<u8>,
    host_error: Vec<u8>,
}

impl CoreState {
    pub(crate) fn new(
        context: Arc<PolicyContext>,
        memory_cap: usize,
        wasi: &mut WasiCtxBuilder,
    ) -> Self {
        let stderr = StderrTail::default();
        Self {
            wasi: wasi.stderr(stderr.clone()).build_p1(),
            stderr,
            limiter: MemoryLimiter::new(memory_cap),
            context,
            exchange: Exchange::default(),
        }
    }
}

fn violation(message: impl Into<String>) -> wasmtime::Error {
    wasmtime::Error::new(AbiViolation(message.into()))
}

fn memory(caller: &mut Caller<'_, CoreState>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(violation("the module exports no `memory`")),
    }
}

fn range(ptr: i32, len: usize, memory_size: usize) -> wasmtime::Result<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    start
        .checked_add(len)
        .filter(|end| *end <= memory_size)
        .map(|end| start..end)
        .ok_or_else(|| {
            violation(format!(
                "range {start}+{len} is outside the guest memory of {memory_size} bytes"
            ))
        })
}

fn read(caller: &mut Caller<'_, CoreState>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller)?;
    let data = memory.data(&caller);
    let range = range(ptr, len as u32 as usize, data.len())?;
    Ok(data.get(range).map(<[u8]>::to_vec).unwrap_or_default())
}

fn read_str(caller: &mut Caller<'_, CoreState>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    String::from_utf8(read(caller, ptr, len)?)
        .map_err(|_| violation("a host call name is not UTF-8"))
}

fn write(caller: &mut Caller<'_, CoreState>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let memory = memory(caller)?;
    let data = memory.data_mut(caller);
    let range = range(ptr, bytes.len(), data.len())?;
    if let Some(target) = data.get_mut(range) {
        target.copy_from_slice(bytes);
    }
    Ok(())
}

fn length(bytes: &[u8]) -> i32 {
    i32::try_from(bytes.len()).unwrap_or(i32::MAX)
}

/// Adds the `wapc` imports.
pub(crate) fn add_to_linker(linker: &mut Linker<CoreState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "wapc",
        "__guest_request",
        |mut caller: Caller<'_, CoreState>, op_ptr: i32, ptr: i32| {
            let operation = caller.data().exchange.operation.clone();
            let payload = caller.data().exchange.payload.clone();
            write(&mut caller, op_ptr, &operation)?;
            write(&mut caller, ptr, &payload)
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__guest_response",
        |mut caller: Caller<'_, CoreState>, ptr: i32, len: i32| {
            let bytes = read(&mut caller, ptr, len)?;
            caller.data_mut().exchange.response = Some(bytes);
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__guest_error",
        |mut caller: Caller<'_, CoreState>, ptr: i32, len: i32| {
            let bytes = read(&mut caller, ptr, len)?;
            caller.data_mut().exchange.error = Some(bytes);
            Ok(())
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_call",
        |mut caller: Caller<'_, CoreState>,
         bd_ptr: i32,
         bd_len: i32,
         ns_ptr: i32,
         ns_len: i32,
         op_ptr: i32,
         op_len: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i32> {
            let binding = read_str(&mut caller, bd_ptr, bd_len)?;
            let namespace = read_str(&mut caller, ns_ptr, ns_len)?;
            let operation = read_str(&mut caller, op_ptr, op_len)?;
            let payload = read(&mut caller, ptr, len)?;
            let context = caller.data().context.clone();
            let answer =
                capabilities::answer_wapc(&context, &binding, &namespace, &operation, &payload);
            let exchange = &mut caller.data_mut().exchange;
            Ok(match answer {
                Ok(bytes) => {
                    exchange.host_response = bytes;
                    exchange.host_error.clear();
                    1
                }
                Err(message) => {
                    exchange.host_error = message.into_bytes();
                    exchange.host_response.clear();
                    0
                }
            })
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_response",
        |mut caller: Caller<'_, CoreState>, ptr: i32| {
            let bytes = std::mem::take(&mut caller.data_mut().exchange.host_response);
            let result = write(&mut caller, ptr, &bytes);
            caller.data_mut().exchange.host_response = bytes;
            result
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_response_len",
        |caller: Caller<'_, CoreState>| length(&caller.data().exchange.host_response),
    )?;
    linker.func_wrap(
        "wapc",
        "__host_error",
        |mut caller: Caller<'_, CoreState>, ptr: i32| {
            let bytes = std::mem::take(&mut caller.data_mut().exchange.host_error);
            let result = write(&mut caller, ptr, &bytes);
            caller.data_mut().exchange.host_error = bytes;
            result
        },
    )?;
    linker.func_wrap(
        "wapc",
        "__host_error_len",
        |caller: Caller<'_, CoreState>| length(&caller.data().exchange.host_error),
    )?;
    linker.func_wrap(
        "wapc",
        "__console_log",
        |mut caller: Caller<'_, CoreState>, ptr: i32, len: i32| {
            let bytes = read(&mut caller, ptr, len)?;
            capabilities::log::console(&caller.data().context.policy_id, &bytes);
            Ok(())
        },
    )?;
    Ok(())
}

/// Calls `operation` with `payload` in a fresh instance; the guest's
/// response, or its error as [`EvalError::PolicyError`].
pub(super) fn guest_call(
    pre: &InstancePre<CoreState>,
    env: &EvalEnv<'_>,
    operation: &str,
    payload: Vec<u8>,
) -> Result<Vec<u8>, EvalError> {
    let payload_len = i32::try_from(payload.len())
        .map_err(|_| EvalError::InvalidRequest("the payload exceeds 2 GiB".into()))?;
    let operation_len = i32::try_from(operation.len()).unwrap_or(i32::MAX);
    let mut store = env.store(&mut WasiCtxBuilder::new());
    let instance = pre
        .instantiate(&mut store)
        .map_err(|e| env.classify(e, &store))?;
    // Reactors initialise their runtime in `_initialize`; waPC guests
    // register their functions in `wapc_init` (or `_start`).
    for init in ["_initialize", "_start", "wapc_init"] {
        if let Ok(f) = instance.get_typed_func::<(), ()>(&mut store, init) {
            if let Err(e) = f.call(&mut store, ()) {
                if e.downcast_ref::<I32Exit>().map(|x| x.0) != Some(0) {
                    return Err(env.classify(e, &store));
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
        .map_err(|e| env.classify(e, &store))?;
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

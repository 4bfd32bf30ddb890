//! On-disk cache of precompiled policies.
//!
//! Compiling a policy takes hundreds of milliseconds; loading its
//! precompiled artifact takes about a millisecond. Artifacts are keyed by the
//! module's SHA-256 and by the engine's compatibility hash (wasmtime version
//! and every setting that affects code generation), so an upgrade or a
//! configuration change never loads an incompatible artifact.
//!
//! Loading an artifact maps native code into the process: the cache
//! directory must be writable only by the process that owns it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Module};

use crate::error::LoadError;

/// Where a loaded policy's code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileOrigin {
    /// Compiled from the module in this process.
    Compiled,
    /// Loaded from a precompiled artifact on disk.
    Cache,
    /// Already loaded for another policy with the same module (see
    /// [`crate::PolicyLoader::sharing_code`]).
    Shared,
}

/// Compiled code already loaded, by module digest: the policies of one set
/// that use the same module share one copy of its machine code. Policies
/// load in parallel, so each digest has a slot of its own: the first loader
/// compiles while the others of that digest wait for it, and loaders of
/// other digests go on.
#[derive(Debug, Default)]
pub(crate) struct SharedCode {
    components: Mutex<HashMap<String, CodeSlot<Component>>>,
    modules: Mutex<HashMap<String, CodeSlot<Module>>>,
}

/// The code of one digest, once some loader has it.
pub(crate) type CodeSlot<T> = Arc<Mutex<Option<T>>>;

impl SharedCode {
    /// The slot of `digest` in `slots`, created empty when new.
    pub(crate) fn slot<T>(
        slots: &Mutex<HashMap<String, CodeSlot<T>>>,
        digest: &str,
    ) -> CodeSlot<T> {
        let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(digest.to_owned()).or_default().clone()
    }
}

/// A directory of precompiled artifacts.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// Uses (and creates when missing) `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, LoadError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|error| LoadError::Cache {
            path: dir.clone(),
            error,
        })?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the artifact for a module digest on this engine.
    pub fn artifact_path(&self, engine: &Engine, module_digest: &str) -> PathBuf {
        let mut hasher = Sha256Hasher::default();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex::encode(hasher.0.finalize());
        let engine_key = engine_key.get(..16).unwrap_or(&engine_key);
        self.dir.join(format!("{module_digest}-{engine_key}.cwasm"))
    }

    /// Loads the compiled form of `wasm` (a component or a core module)
    /// from the cache, or compiles it and stores the artifact. A damaged
    /// artifact is recompiled and replaced.
    pub(crate) fn load<T: Compiled>(
        &self,
        engine: &Engine,
        wasm: &[u8],
        module_digest: &str,
    ) -> Result<(T, CompileOrigin), wasmtime::Error> {
        let path = self.artifact_path(engine, module_digest);
        if path.exists() {
            match std::fs::read(&path)
                .map_err(wasmtime::Error::from)
                .and_then(|bytes| T::deserialize(engine, &bytes))
            {
                Ok(compiled) => return Ok((compiled, CompileOrigin::Cache)),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "discarding an unusable precompiled artifact"
                ),
            }
        }
        let compiled = T::compile(engine, wasm)?;
        if let Err(e) = self.store(&path, &compiled.serialize()?) {
            // A read-only or full disk costs a recompilation next time, not an outage.
            tracing::warn!(path = %path.display(), error = %e, "cannot store precompiled artifact");
        }
        Ok((compiled, CompileOrigin::Compiled))
    }

    fn store(&self, path: &Path, bytes: &[u8]) -> Result<(), wasmtime::Error> {
        // Write then rename, so that a concurrent reader never sees half a file.
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// Code wasmtime compiles: components and core modules.
pub(crate) trait Compiled: Sized + Clone {
    fn compile(engine: &Engine, wasm: &[u8]) -> Result<Self, wasmtime::Error>;
    fn serialize(&self) -> Result<Vec<u8>, wasmtime::Error>;
    /// Artifacts are read into memory rather than mapped: a mapped file
    /// truncated or rewritten in place would crash the process (SIGBUS).
    fn deserialize(engine: &Engine, bytes: &[u8]) -> Result<Self, wasmtime::Error>;
    /// Where code of this type is shared.
    fn shared(code: &SharedCode) -> &Mutex<HashMap<String, CodeSlot<Self>>>;
}

// SAFETY (both `deserialize`s): the artifact was written by
// `CompileCache::store` of a process with the same engine configuration
// (the file name carries the module digest and the engine's compatibility
// hash, and wasmtime checks its own header), in a directory that only this
// process's owner may write.
#[allow(unsafe_code)]
impl Compiled for Component {
    fn compile(engine: &Engine, wasm: &[u8]) -> Result<Self, wasmtime::Error> {
        Component::new(engine, wasm)
    }
    fn serialize(&self) -> Result<Vec<u8>, wasmtime::Error> {
        Component::serialize(self)
    }
    fn deserialize(engine: &Engine, bytes: &[u8]) -> Result<Self, wasmtime::Error> {
        unsafe { Component::deserialize(engine, bytes) }
    }
    fn shared(code: &SharedCode) -> &Mutex<HashMap<String, CodeSlot<Self>>> {
        &code.components
    }
}

#[allow(unsafe_code)]
impl Compiled for Module {
    fn compile(engine: &Engine, wasm: &[u8]) -> Result<Self, wasmtime::Error> {
        Module::new(engine, wasm)
    }
    fn serialize(&self) -> Result<Vec<u8>, wasmtime::Error> {
        Module::serialize(self)
    }
    fn deserialize(engine: &Engine, bytes: &[u8]) -> Result<Self, wasmtime::Error> {
        unsafe { Module::deserialize(engine, bytes) }
    }
    fn shared(code: &SharedCode) -> &Mutex<HashMap<String, CodeSlot<Self>>> {
        &code.modules
    }
}

/// SHA-256 hex digest of a module: its identity everywhere in Palisade.
pub fn module_digest(wasm: &[u8]) -> String {
    hex::encode(Sha256::digest(wasm))
}

/// Feeds a `Hash` value into SHA-256, for a key that is stable across
/// processes (std's `DefaultHasher` is not).
#[derive(Default)]
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
        u64::from_le_bytes(first)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

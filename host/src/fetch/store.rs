//! The content-addressed module store: a module lives at
//! `sha256/<digest>.wasm`, is verified against its digest whenever it is
//! read, and is written atomically. Registry manifests that were resolved
//! by digest are remembered (`manifests/<digest>`) so that a digest-pinned
//! reference is served without the network once its module is stored.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::FetchError;
use crate::module_digest;

#[derive(Debug, Clone)]
pub(crate) struct ModuleStore {
    dir: PathBuf,
}

impl ModuleStore {
    pub(crate) fn new(dir: &Path) -> Result<Self, FetchError> {
        for sub in ["sha256", "manifests"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| FetchError::Store(format!("{}: {e}", dir.display())))?;
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn module_path(&self, digest: &str) -> PathBuf {
        self.dir.join("sha256").join(format!("{digest}.wasm"))
    }

    /// The stored module with this SHA-256 (hex), if present and intact. A
    /// damaged file is removed so that the caller fetches it again.
    pub(crate) fn get(&self, digest: &str) -> Option<PathBuf> {
        let path = self.module_path(digest);
        let bytes = std::fs::read(&path).ok()?;
        if module_digest(&bytes) == digest {
            return Some(path);
        }
        tracing::warn!(path = %path.display(), "stored module does not match its digest; fetching it again");
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Stores a module; returns its digest and path.
    pub(crate) fn put(&self, bytes: &[u8]) -> Result<(String, PathBuf), FetchError> {
        let digest = module_digest(bytes);
        let path = self.module_path(&digest);
        let store_error = |e: std::io::Error| FetchError::Store(format!("{}: {e}", path.display()));
        let mut tmp =
            tempfile::NamedTempFile::new_in(self.dir.join("sha256")).map_err(store_error)?;
        tmp.write_all(bytes).map_err(store_error)?;
        tmp.as_file().sync_all().map_err(store_error)?;
        tmp.persist(&path).map_err(|e| store_error(e.error))?;
        Ok((digest, path))
    }

    /// The module digest recorded for a manifest digest (`sha256:...`).
    pub(crate) fn manifest_layer(&self, manifest_digest: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.manifest_path(manifest_digest)).ok()?;
        Some(text.trim().to_owned()).filter(|d| d.len() == 64)
    }

    pub(crate) fn remember_manifest(
        &self,
        manifest_digest: &str,
        module_digest: &str,
    ) -> Result<(), FetchError> {
        std::fs::write(self.manifest_path(manifest_digest), module_digest)
            .map_err(|e| FetchError::Store(format!("manifest {manifest_digest}: {e}")))
    }

    fn manifest_path(&self, manifest_digest: &str) -> PathBuf {
        self.dir
            .join("manifests")
            .join(manifest_digest.replace(':', "-"))
    }
}

//! Compiled plugins on disk, keyed by the SHA-256 of the component, so a restart or a reload back
//! to a known version skips Cranelift.
//!
//! Safety: `Component::deserialize_file` trusts its input to be wasmtime's own output. Only this
//! module writes the cache directory, and it writes each file under a temporary name and renames
//! it into place, so a reader never sees a partial file. wasmtime itself refuses artifacts from
//! another version or configuration; such a file is then recompiled and replaced.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The cache, or `None` for no caching.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: Option<PathBuf>,
}

/// How a component was obtained, for logs and measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Compiled,
}

impl Source {
    /// As `/api/plugins` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Compiled => "compiled",
        }
    }
}

impl Cache {
    pub fn new(dir: &Path) -> Cache {
        Cache { dir: (!dir.as_os_str().is_empty()).then(|| dir.to_owned()) }
    }

    /// The content hash that names a component in the cache.
    pub fn key(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The component of `bytes`, from the cache when it is there. CPU-heavy on a miss: call it off
    /// the async runtime's threads.
    pub fn load(&self, engine: &Engine, bytes: &[u8], key: &str) -> Result<(Component, Source), String> {
        let Some(dir) = &self.dir else {
            return Component::new(engine, bytes).map(|c| (c, Source::Compiled)).map_err(|e| format!("{e:?}"));
        };
        let path = dir.join(format!("{key}.cwasm"));
        if path.is_file() {
            // SAFETY: see the module docs: the file was written by `store` below, whole.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, Source::Cache)),
                Err(error) => tracing::info!(path = %path.display(), %error, "recompiling a stale cache entry"),
            }
        }
        let component = Component::new(engine, bytes).map_err(|e| format!("{e:?}"))?;
        if let Err(error) = store(dir, &path, &component) {
            tracing::warn!(dir = %dir.display(), %error, "cannot write the plugin cache; continuing without it");
        }
        Ok((component, Source::Compiled))
    }
}

fn store(dir: &Path, path: &Path, component: &Component) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    std::fs::create_dir_all(dir)?;
    let partial = path.with_extension(format!("{}.partial", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}
